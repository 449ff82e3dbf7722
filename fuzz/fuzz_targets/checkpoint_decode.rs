//! The `checkpoint_decode` fuzz target: the property is `checks::checkpoint_decode` (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::checkpoint_decode(data));

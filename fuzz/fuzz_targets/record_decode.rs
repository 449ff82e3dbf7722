//! The `record_decode` fuzz target: the property is `checks::record_decode` (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::record_decode(data));

//! The `lease_decode` fuzz target: the property is `checks::lease_decode` (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::lease_decode(data));

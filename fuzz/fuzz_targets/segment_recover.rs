//! The `segment_recover` fuzz target: the property is `checks::segment_recover` (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::segment_recover(data));

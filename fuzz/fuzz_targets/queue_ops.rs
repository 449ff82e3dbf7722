//! The `queue_ops` fuzz target: the property is `checks::queue_ops` (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::queue_ops(data));

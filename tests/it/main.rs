//! durq's integration tests through the public API, as one test binary: the
//! library, its dependencies and the shared harness (`../common/`) are
//! compiled and linked once for all of them, instead of once per file (the
//! 25 binaries this replaced took about twice its CPU time to build). Each
//! former file is a module, so a test's name starts with its file's:
//! `cargo test --release --test it power_loss::` runs one file's tests.
//!
//! `damage_matrix.rs` stays a binary of its own: it measures allocations
//! with a global allocator, which would count every other test's too.
//!
//! The crash tests' children are this binary started again on the `child`
//! test of the spawning module (`common::procs::spawn`).

#[path = "../common/mod.rs"]
mod common;

mod api;
mod async_api;
mod bad_input;
mod commit_modes;
mod concurrency;
mod corruption;
mod crash_consumer;
mod crash_producer;
mod creation;
mod directory_sync;
mod disk_use;
mod format_version_1;
mod full_disk;
mod fuzz_regressions;
mod groups;
mod inspect;
mod io_faults;
mod mappings;
mod model;
mod multi_process;
mod observe;
mod power_loss;
mod recovery;
mod retention;
mod retention_limits;

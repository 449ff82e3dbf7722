//! The `durq` command's integration tests, as one test binary: the CLI's
//! dependencies and the shared harness (`../common/`) are compiled and
//! linked once for all of them, instead of once per file (the 12 binaries
//! this replaced took about 2.7 times its CPU time to build). Each former
//! file is a module, so a test's name starts with its file's:
//! `cargo test --release -p durq-cli --test it nats::` runs one file's
//! tests.
//!
//! The tests run the `durq` binary (`CARGO_BIN_EXE_durq`), never this one,
//! and set no process-wide state (environment, panic hook), so they share
//! this process under `cargo test` as they did their own.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod cli;
mod fencing;
mod gc;
mod groups_cli;
mod inspect;
mod logging;
mod nats;
mod progress;
mod snapshots;
mod tail;
mod watch;

//! durq-nats against real `nats-server` processes, as one test binary: one
//! compile and link of the NATS client's code instead of one per file. The
//! conformance suite (`../conformance/`, run on both backends) is a module
//! of it too rather than a binary of its own: a second binary compiled the
//! same client and harness again (a third more CPU time for the two).
//!
//! `.ci/install-nats` first, then `cargo test --release -p durq-nats`; one
//! file's tests: `cargo test --release -p durq-nats --test integration slot::`,
//! the conformance suite's: `… --test integration conformance::`.

mod atomic_batch;
mod cluster;
mod common;
#[path = "../conformance/mod.rs"]
mod conformance;
mod connect;
mod consumer;
mod dead_letter;
mod harness;
mod mark;
mod migrate;
mod producer;
mod queue;
mod queue_stat;
mod reader;
mod server_faults;
mod slot;

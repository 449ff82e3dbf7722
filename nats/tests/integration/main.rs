//! durq-nats against real `nats-server` processes, as one test binary (one
//! link of the NATS client instead of one per file).
//!
//! `.ci/install-nats` first, then `cargo test --release -p durq-nats`; one
//! file's tests: `cargo test --release -p durq-nats --test integration slot::`.

mod cluster;
mod common;
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
mod slot;

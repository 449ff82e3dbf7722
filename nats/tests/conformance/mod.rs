//! The conformance suite: the consumer contract, written once and run
//! against every backend. Application code written against the local queue
//! must compile against the NATS one by changing the open call; this suite
//! checks that it also *behaves* the same.
//!
//! Each backend is a folder (`local/`, `nats/`) whose `mod.rs` says how to
//! get a place for queues (a directory, a server), how to open a queue by
//! its spec (a path, a `nats://` URL), and the timings in which the two
//! differ (a dead local member is noticed at once, a dead NATS member after
//! its lease). Each then compiles `suite/` inside itself, so the same test
//! code is type-checked and run once per backend, under its name:
//! `conformance::local::suite::kill::…`, `conformance::nats::suite::kill::…`.
//!
//! Tests that need a member to die or hang run it as a child process: this
//! very binary, started again on its `conformance::<backend>::suite::child`
//! entry (`procs.rs`), SIGKILLed or SIGSTOPped for real.
//!
//! A module of the `integration` test binary (its `main.rs` says why):
//! `cargo test --release -p durq-nats --test integration conformance::`
//! (the NATS side starts its own `nats-server`: run `.ci/install-nats`
//! once).

mod local;
mod nats;
mod procs;
#[path = "../../../tests/common/rng.rs"]
mod rng;

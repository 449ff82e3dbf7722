//! The consumer contract, once for every backend: compiled inside each
//! backend's module (`super`), whose `Queue`, `Place`, `create`, `open` and
//! timings it uses. Nothing here names a backend: a test that passes on one
//! and fails on the other is a difference in the contract.
//!
//! - `kill`: consumer processes SIGKILLed mid-batch lose no acknowledged
//!   message, and the batch in flight is delivered again;
//! - `takeover`: a SIGKILLed member's partition is taken over from its
//!   checkpoint;
//! - `fencing`: a SIGSTOPped member that wakes after its lease expired has
//!   its commit refused with `Fenced`, and nothing is lost;
//! - `order`: each partition in offset order, each key in send order;
//! - `retries`: `Verdict`s, `max_deliveries` and the dead-letter queue;
//! - `manual`: `poll` and `Delivery::commit`;
//! - `asynchronous`: `send_async` and `process_async`.

mod asynchronous;
mod fencing;
mod kill;
mod manual;
mod member;
mod order;
mod retries;
mod takeover;

use std::time::{Duration, Instant};

use super as backend;
use crate::conformance::procs;

/// The group every test consumes with.
const GROUP: &str = "work";

/// The entry of this binary's children: this module's `child` test.
fn child_entry() -> String {
    let (_crate, path) = module_path!().split_once("::").expect("a module path below the crate");
    format!("{path}::child")
}

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("member") => member::run(),
        Some("holder") => fencing::run_holder(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// Joins `group`, waiting out a `GroupBusy` that is only the echo of a
/// member that just left (a child spawned by another test meanwhile holds
/// copies of this process's descriptors until it execs; see the local
/// queue's tests/common).
fn join(queue: &backend::Queue, options: durq::ConsumerOptions) -> durq::Result<backend::Consumer> {
    let deadline = Instant::now() + procs::PATIENCE;
    loop {
        match queue.consumer_with(GROUP, options.clone()) {
            Err(durq::Error::GroupBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            joined => return joined,
        }
    }
}

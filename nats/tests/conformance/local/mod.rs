//! The local backend: a queue is a directory; its spec is the path.
//!
//! Timing: a member that dies is noticed at once (the kernel releases its
//! locks) and its slots are taken at the next membership check of a live
//! member (`rebalance_interval`, 20 ms); a member that hangs (SIGSTOP) keeps
//! its locks and is taken over once its lease has expired.

use std::time::Duration;

use durq::Options;
pub use durq::{Consumer, Delivery, Message, Queue};

/// The backend's name, in the suite's reports.
pub const NAME: &str = "local";

/// The lease of the suite's members where a takeover of a hung one is the
/// point: short, so the tests are quick, and long enough that a live member
/// on a loaded machine keeps its slots.
pub const LEASE: Duration = Duration::from_millis(500);

/// What a live member waits for before it takes over a SIGKILLed one.
pub const DEAD_MEMBER_TAKEN_OVER: &str = "at once (the kernel released its locks)";

/// Where one test's queues live: a temporary directory of its own.
pub struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    pub fn new() -> Place {
        Place { dir: tempfile::tempdir().expect("tempdir") }
    }

    /// The spec of the queue `name` here: its directory.
    pub fn spec(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A file for a test's own records (what its members processed).
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Creates the queue at `spec` with `options`.
pub fn create(spec: &str, options: Options) -> Queue {
    Queue::open_with(spec, options).unwrap_or_else(|e| panic!("create {spec}: {e}"))
}

/// Opens the existing queue at `spec` (in a member process).
pub fn open(spec: &str) -> durq::Result<Queue> {
    Queue::open_existing(spec)
}

// The same suite in every backend, on purpose: that is the conformance.
#[allow(clippy::duplicate_mod)]
#[path = "../suite/mod.rs"]
mod suite;

//! The NATS backend: a queue is a set of JetStream streams on a server;
//! its spec is `nats://127.0.0.1:PORT/QUEUE`.
//!
//! Timing: a member that dies or hangs is taken over only once its lease
//! has expired (the server cannot see a client process die), so the
//! suite's members take a 1 s lease, the takeover target of issue 14.
//!
//! The tests of one binary share one server while any of them runs (the
//! last to finish stops it); each test's queues get names of their own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::common::NatsServer;
pub use durq::Message;
use durq::Options;
pub use durq_nats::{Consumer, Delivery, Queue};

/// The backend's name, in the suite's reports.
pub const NAME: &str = "NATS";

/// The lease of the suite's members where a takeover is the point: the
/// issue's target, takeover within 2 s with a 1 s lease.
pub const LEASE: Duration = Duration::from_secs(1);

/// What a live member waits for before it takes over a SIGKILLed one.
pub const DEAD_MEMBER_TAKEN_OVER: &str = "after its lease (1 s) expired";

/// Where one test's queues live: the shared server, under names of this
/// test's own, and a temporary directory for the test's own files.
pub struct Place {
    server: Arc<NatsServer>,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Place {
    pub fn new() -> Place {
        static SERVER: Mutex<Weak<NatsServer>> = Mutex::new(Weak::new());
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = {
            let mut shared = SERVER.lock().expect("the server lock");
            shared.upgrade().unwrap_or_else(|| {
                let started = Arc::new(NatsServer::start_blocking());
                *shared = Arc::downgrade(&started);
                started
            })
        };
        let prefix = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Place { server, prefix, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// The spec of the queue `name` here: its URL.
    pub fn spec(&self, name: &str) -> String {
        format!("{}/{}_{name}", self.server.url(), self.prefix)
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
    Queue::open(spec)
}

// The same suite in every backend, on purpose: that is the conformance.
#[allow(clippy::duplicate_mod)]
#[path = "../suite/mod.rs"]
mod suite;

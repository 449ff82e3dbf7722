//! The shared harness of the integration tests: temp queues, and a way to
//! drain a group into a list of payloads.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use durq::{Consumer, Options, Queue};

/// A fresh queue in its own temp dir, with small segments so tests roll them.
pub struct TestQueue {
    pub dir: tempfile::TempDir,
    pub queue: Queue,
}

impl TestQueue {
    pub fn new(options: Options) -> TestQueue {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open_with(dir.path().join("q"), options).expect("open queue");
        TestQueue { dir, queue }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("q")
    }
}

/// Small segments (64 KiB) so a few hundred records roll several of them.
pub fn small() -> Options {
    Options::default().segment_bytes(64 << 10).record_bytes_max(16 << 10)
}

/// Processes everything currently visible and returns the payloads in order.
pub fn drain(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let n = consumer
            .process_timeout(Duration::from_millis(50), |batch| {
                out.extend(batch.iter().map(|m| m.payload().to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
        if n == 0 {
            return out;
        }
    }
}

/// Path of the single segment file with the lowest base offset of partition `p`.
pub fn segments(queue_dir: &Path, p: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(queue_dir.join(format!("p{p:04}"))).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

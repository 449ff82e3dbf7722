//! queue-file (a ring-buffer FIFO file, Tape's format). W1/W5 with
//! `sync_writes(false)` + `skip_write_header_on_add(true)` and `sync_all()`
//! at the end (the crate's documented fast path); W2 `add` with its default
//! `sync_writes(true)`; W3 `add_n` of 100; W4 reads 1,000 with `iter()` and
//! commits with `remove_n(1000)` (a synced header write). `QueueFile` is
//! neither `Send` nor `Sync`, so it has no concurrent producers (W6).

use std::path::Path;
use std::time::Instant;

use queue_file::QueueFile;

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, payload, stamp};

pub struct QueueFilePeer;

impl System for QueueFilePeer {
    fn name(&self) -> String {
        "queue-file".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let path = dir.join("q.qf");
        let mut buf = payload(w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let mut q = QueueFile::open(&path)?;
                q.set_sync_writes(false);
                q.set_skip_write_header_on_add(true);
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    q.add(&buf)?;
                    n += 1;
                }
                q.sync_all()?;
                Ok(Outcome::done(n, start).with_note(
                    "`add` with `sync_writes(false)`, `skip_write_header_on_add(true)`; `sync_all()` at the end",
                ))
            }
            Kind::EachDurable => {
                let mut q = QueueFile::open(&path)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    stamp(&mut buf, n);
                    q.add(&buf)?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("`add` with `sync_writes(true)` (the default)"))
            }
            Kind::Batches(size) => {
                let mut q = QueueFile::open(&path)?;
                let mut batch = vec![buf.clone(); size];
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    for (i, m) in batch.iter_mut().enumerate() {
                        stamp(m, n + i as u64);
                    }
                    q.add_n(&batch)?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("`add_n` of 100 with `sync_writes(true)`"))
            }
            Kind::Consume { batch } => {
                let mut q = QueueFile::open(&path)?;
                q.set_sync_writes(false);
                let mut chunk = vec![buf.clone(); 1000];
                let mut n = 0;
                while n < w.messages {
                    let k = (w.messages - n).min(chunk.len() as u64) as usize;
                    for (i, m) in chunk[..k].iter_mut().enumerate() {
                        stamp(m, n + i as u64);
                    }
                    q.add_n(&chunk[..k])?;
                    n += k as u64;
                }
                q.sync_all()?;
                q.set_sync_writes(true);
                // Zeroing consumed records is a privacy feature, not durability.
                q.set_overwrite_on_remove(false);
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let (mut seen, mut bytes) = (0u64, 0usize);
                while seen < w.messages && !deadline.passed() {
                    let mut k = 0;
                    for m in q.iter().take(batch) {
                        bytes += m.len();
                        k += 1;
                    }
                    q.remove_n(k)?;
                    seen += k as u64;
                }
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "queue-file consumed the wrong bytes");
                Ok(out.with_note(&format!(
                    "`iter().take({batch})`, then `remove_n({batch})` with `sync_writes(true)`, `overwrite_on_remove(false)`"
                )))
            }
            Kind::Concurrent { .. } => {
                Ok(Outcome::Skip("`QueueFile` is neither `Send` nor `Sync`: one thread only".into()))
            }
        }
    }
}

//! durq through its public API, mapped as the issue asks:
//! W1/W5 `Buffered` + `flush()` at the end; W2 `Sync`, one `send` at a time;
//! W3 `Sync` with `send_batch` of 100; W4 `process` with `max_batch(1000)`
//! (one synced checkpoint per batch); W6 `Sync` from 32 threads; W7
//! `process` with `max_batch(1)` (one synced checkpoint per message).
//!
//! A second row, "durq, commit Interval(10 ms)", runs the consume workloads
//! (W4, W7) with the consumer's `commit(Durability::Interval(10 ms))`: each
//! commit stores the position in the checkpoint's mapping, a background
//! thread syncs it every 10 ms, and `flush()` makes the last one durable
//! before the clock stops. The producer workloads are the `durq` row's.

use std::path::Path;
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Options, Queue};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

/// durq, its consumer committing as `commit` says.
pub struct Durq {
    pub commit: Durability,
}

impl Durq {
    /// The `durq` row: every workload, the consumer's default `Sync` commit.
    pub const SYNC: Durq = Durq { commit: Durability::Sync };
    /// The consume workloads again, with `commit(Interval(10 ms))`.
    pub const INTERVAL_10_MS: Durq = Durq { commit: Durability::Interval(Duration::from_millis(10)) };
}

fn open(dir: &Path, durability: Durability) -> Result<Queue> {
    Ok(Queue::open_with(dir.join("q"), Options::default().durability(durability))?)
}

impl System for Durq {
    fn name(&self) -> String {
        match self.commit {
            Durability::Sync => "durq".into(),
            _ => "durq, commit Interval(10 ms)".into(),
        }
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        if self.commit != Durability::Sync && !matches!(w.kind, Kind::Consume { .. }) {
            return Ok(Outcome::Skip("a consumer commit mode: the producer side is the `durq` row".into()));
        }
        match w.kind {
            Kind::SyncAtEnd => {
                let q = open(dir, Durability::Buffered)?;
                let p = q.producer();
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    p.send(&buf)?;
                    n += 1;
                }
                p.flush()?;
                Ok(Outcome::done(n, start).with_note("`Buffered`, `flush()` at the end"))
            }
            Kind::EachDurable => {
                let q = open(dir, Durability::Sync)?;
                let p = q.producer();
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    stamp(&mut buf, n);
                    p.send(&buf)?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("`Sync`, one `send` at a time"))
            }
            Kind::Batches(size) => {
                let q = open(dir, Durability::Sync)?;
                let p = q.producer();
                let mut batch = vec![buf.clone(); size];
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    for (i, m) in batch.iter_mut().enumerate() {
                        stamp(m, n + i as u64);
                    }
                    p.send_batch(&batch)?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("`Sync`, `send_batch` of 100"))
            }
            Kind::Consume { batch } => {
                let q = open(dir, Durability::Buffered)?;
                let p = q.producer();
                let mut chunk = vec![buf.clone(); 1000];
                let mut n = 0;
                while n < w.messages {
                    let k = (w.messages - n).min(chunk.len() as u64) as usize;
                    for (i, m) in chunk[..k].iter_mut().enumerate() {
                        stamp(m, n + i as u64);
                    }
                    p.send_batch(&chunk[..k])?;
                    n += k as u64;
                }
                p.flush()?;
                // `Sync` (the `durq` row): the checkpoint is on stable
                // storage before `process` returns. `Interval`: stored at
                // once, synced in the background, and by `flush` at the end.
                let options = ConsumerOptions::default().max_batch(batch).commit(self.commit);
                let mut consumer = q.consumer_with("bench", options)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut seen = 0u64;
                let mut bytes = 0usize;
                while seen < w.messages && !deadline.passed() {
                    seen += consumer.process(|msgs| {
                        bytes += msgs.iter().map(|m| m.payload().len()).sum::<usize>();
                        Ok::<(), std::io::Error>(())
                    })? as u64;
                }
                consumer.flush()?;
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "durq consumed the wrong bytes");
                let note = match self.commit {
                    Durability::Sync => format!(
                        "`process` with `max_batch({batch})`, default `Sync` commit: a synced checkpoint (msync) {}",
                        crate::common::per_commit(batch)
                    ),
                    _ => format!(
                        "`process` with `max_batch({batch})`, `commit(Interval(10 ms))`: the position stored {}, \
                         synced every 10 ms and by `flush()` before the clock stops",
                        crate::common::per_commit(batch)
                    ),
                };
                Ok(out.with_note(&note))
            }
            Kind::Concurrent { threads } => {
                let q = open(dir, Durability::Sync)?;
                let p = q.producer();
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok((p.clone(), buf.clone())),
                    |(p, buf), t, i| {
                        stamp(buf, (t as u64) << 32 | i);
                        p.send(&*buf)?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("`Sync`, one `Producer` cloned to every thread: group commit"))
            }
        }
    }
}

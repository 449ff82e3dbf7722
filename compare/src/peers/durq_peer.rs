//! durq through its public API, mapped as the issue asks:
//! W1/W5 `Buffered` + `flush()` at the end; W2 `Sync`, one `send` at a time;
//! W3 `Sync` with `send_batch` of 100; W4 `process` with `max_batch(1000)`
//! (one synced checkpoint per batch); W6 `Sync` from 32 threads; W7
//! `process` with `max_batch(1)` (one synced checkpoint per message).

use std::path::Path;
use std::time::Instant;

use durq::{ConsumerOptions, Durability, Options, Queue};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

pub struct Durq;

fn open(dir: &Path, durability: Durability) -> Result<Queue> {
    Ok(Queue::open_with(dir.join("q"), Options::default().durability(durability))?)
}

impl System for Durq {
    fn name(&self) -> String {
        "durq".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
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
                // The consumer's commit is left at its default, `Sync`: the
                // checkpoint is on stable storage before `process` returns.
                // Other commit modes, when durq has them, are further rows
                // of their own, each a variant of this system.
                let mut consumer = q.consumer_with("bench", ConsumerOptions::default().max_batch(batch))?;
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
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "durq consumed the wrong bytes");
                Ok(out.with_note(&format!(
                    "`process` with `max_batch({batch})`, default `Sync` commit: a synced checkpoint (msync) {}",
                    crate::common::per_commit(batch)
                )))
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

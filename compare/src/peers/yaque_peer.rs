//! yaque: `Sender::try_send` (one `write(2)` per message). yaque never calls
//! fsync, so no workload that needs a message durable before the next step
//! can be done with it. For the "one sync at the end" workloads the bench
//! fdatasyncs yaque's files itself after the run (and the directory), so the
//! row pays for the same durability as the others; the table marks it.
//!
//! W7 (a commit per message) is run to show the shape of yaque's
//! one-at-a-time consumer, and marked not durable: `try_recv`, then
//! `RecvGuard::commit`, with the receiver saving its position to its state
//! file after every message (`save_every_nth(Some(1))`), a write with no
//! fsync. W4 is not run: with no durable commit there is nothing to compare
//! a batch of 1,000 with that W7 does not already show.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, payload, stamp};

pub struct Yaque;

/// fdatasyncs every file under `dir`, then the directory itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_data()?;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl System for Yaque {
    fn name(&self) -> String {
        "yaque".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        match w.kind {
            Kind::SyncAtEnd => {
                let base = dir.join("q");
                let mut sender = yaque::Sender::open(&base)?;
                let mut buf = payload(w.payload);
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    sender.try_send(&buf).map_err(|e| format!("yaque: {e:?}"))?;
                    n += 1;
                }
                drop(sender);
                sync_tree(&base)?;
                Ok(Outcome::done(n, start).with_note(
                    "† `try_send` per message; yaque has no sync call, the bench fdatasyncs its files at the end",
                ))
            }
            Kind::EachDurable | Kind::Batches(_) | Kind::Concurrent { .. } => {
                Ok(Outcome::Skip("no fsync: yaque never makes a send durable".into()))
            }
            Kind::Consume { batch: 1 } => consume_each(w, dir),
            Kind::Consume { .. } => Ok(Outcome::Skip("no fsync: yaque's commit is not durable".into())),
        }
    }
}

fn consume_each(w: &Workload, dir: &Path) -> Result<Outcome> {
    let base = dir.join("q");
    let mut sender = yaque::Sender::open(&base)?;
    let mut buf = payload(w.payload);
    for n in 0..w.messages {
        stamp(&mut buf, n);
        sender.try_send(&buf).map_err(|e| format!("yaque: {e:?}"))?;
    }
    drop(sender);
    sync_tree(&base)?;
    let mut receiver = yaque::ReceiverBuilder::default().save_every_nth(Some(1)).open(&base)?;
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < w.messages && !deadline.passed() {
        let guard = receiver.try_recv().map_err(|e| format!("yaque: {e:?}"))?;
        bytes += guard.len();
        guard.commit()?;
        seen += 1;
    }
    let out = Outcome::done(seen, start);
    assert_eq!(bytes as u64, seen * w.payload as u64, "yaque consumed the wrong bytes");
    Ok(out
        .with_note("`try_recv`, then `commit()`, position saved after every message (`save_every_nth(Some(1))`), never fsynced")
        .not_durable())
}

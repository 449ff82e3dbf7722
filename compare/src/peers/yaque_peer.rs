//! yaque: `Sender::try_send` (one `write(2)` per message). yaque never calls
//! fsync, so no workload that needs a message durable before the next step
//! can be done with it. For the "one sync at the end" workloads the bench
//! fdatasyncs yaque's files itself after the run (and the directory), so the
//! row pays for the same durability as the others; the table marks it.

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
            Kind::Consume { .. } => Ok(Outcome::Skip("no fsync: yaque's commit is not durable".into())),
        }
    }
}

//! okaywal, a group-commit write-ahead log: an entry is one or more chunks,
//! and `EntryWriter::commit` returns only after an `fdatasync` that covers
//! the entry; committers that arrive while a sync runs share the next one.
//! There is no commit without a sync, so every workload maps its sync unit
//! to one entry, a chunk per message: one entry per message (W2, W6), per
//! batch of 100 (W3), or for the whole run (W1/W5, all or nothing: a crash
//! before the commit loses the whole entry, where durq keeps what it wrote).
//!
//! The log is configured as a queue's log must be: it is never checkpointed
//! (`checkpoint_after_bytes(u64::MAX)`), because a checkpoint hands the
//! entries to the application and then recycles the file. Segments are
//! preallocated at 64 MiB (durq's segment size; the default is 1 MiB), which
//! okaywal does by writing zeros when it opens the log, without syncing
//! them; the bench syncs them before the clock starts (setup, not timed, as
//! durq's reservation of its first segment at open is not), so the first
//! commit does not write 64 MiB of zeros. Past 64 MiB the file grows by
//! plain writes.
//!
//! okaywal has no consumer: a reader addresses a chunk by the `LogPosition`
//! its write returned (`read_at`, which opens the segment file per chunk;
//! okaywal's sequential reader is only reachable through recovery). So W4/W7
//! keep the positions of the preloaded chunks in memory, as an application's
//! index would, read each through `read_at` with its CRC checked, and commit
//! the consumer's position as an 8-byte entry of the same log.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use okaywal::{Configuration, LogPosition, LogVoid, WriteAheadLog};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

pub struct Okaywal;

/// durq's segment size.
const PREALLOCATE_BYTES: u32 = 64 << 20;

fn open(dir: &Path) -> Result<WriteAheadLog> {
    let path = dir.join("wal");
    let wal = Configuration::default_for(&path)
        .preallocate_bytes(PREALLOCATE_BYTES)
        .checkpoint_after_bytes(u64::MAX)
        .open(LogVoid)?;
    for entry in std::fs::read_dir(&path)? {
        File::open(entry?.path())?.sync_data()?;
    }
    File::open(&path)?.sync_all()?;
    Ok(wal)
}

/// Appends `count` messages as one committed entry: one chunk each.
fn commit_entry(wal: &WriteAheadLog, buf: &mut [u8], first: u64, count: u64) -> Result<Vec<LogPosition>> {
    let mut entry = wal.begin_entry()?;
    let mut positions = Vec::with_capacity(count as usize);
    for i in first..first + count {
        stamp(buf, i);
        positions.push(entry.write_chunk(buf)?.position);
    }
    entry.commit()?;
    Ok(positions)
}

impl System for Okaywal {
    fn name(&self) -> String {
        "okaywal".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let wal = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut entry = wal.begin_entry()?;
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    entry.write_chunk(&buf)?;
                    n += 1;
                }
                entry.commit()?;
                Ok(Outcome::done(n, start).with_note(
                    "† one entry for the whole run, a chunk per message, `commit()` at the end; \
                     all or nothing: a crash before the commit loses the whole run",
                ))
            }
            Kind::EachDurable => {
                let wal = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    commit_entry(&wal, &mut buf, n, 1)?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("an entry per message, `commit()` (fdatasync) each"))
            }
            Kind::Batches(size) => {
                let wal = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    commit_entry(&wal, &mut buf, n, size as u64)?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("an entry of 100 chunks per `commit()`"))
            }
            Kind::Consume { batch } => consume(w, dir, batch, &mut buf),
            Kind::Concurrent { threads } => {
                let wal = open(dir)?;
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok(buf.clone()),
                    |buf, t, i| {
                        commit_entry(&wal, buf, (t as u64) << 32 | i, 1)?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("one log shared by the threads; an entry per message, `commit()`: group commit"))
            }
        }
    }
}

fn consume(w: &Workload, dir: &Path, batch: usize, buf: &mut [u8]) -> Result<Outcome> {
    let wal = open(dir)?;
    let mut positions = Vec::with_capacity(w.messages as usize);
    let mut n = 0;
    while n < w.messages {
        let k = (w.messages - n).min(1000);
        positions.extend(commit_entry(&wal, buf, n, k)?);
        n += k;
    }
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let (mut seen, mut bytes) = (0usize, 0usize);
    let mut body = Vec::with_capacity(w.payload);
    while seen < positions.len() && !deadline.passed() {
        for &position in positions[seen..].iter().take(batch) {
            let mut chunk = wal.read_at(position)?;
            body.clear();
            chunk.read_to_end(&mut body)?;
            if !chunk.crc_is_valid()? {
                return Err(format!("okaywal: bad CRC in chunk {}", seen).into());
            }
            bytes += body.len();
            seen += 1;
        }
        let mut entry = wal.begin_entry()?;
        entry.write_chunk(&(seen as u64).to_le_bytes())?;
        entry.commit()?;
    }
    let out = Outcome::done(seen as u64, start);
    assert_eq!(bytes, seen * w.payload, "okaywal consumed the wrong bytes");
    let per = crate::common::per_commit(batch);
    Ok(out.with_note(&format!(
        "† `read_at` of each chunk by its position, CRC checked, the position committed as an 8-byte entry \
         {per}; okaywal has no consumer: the bench keeps the chunks' positions in memory from the writes"
    )))
}

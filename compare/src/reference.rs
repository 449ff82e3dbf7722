//! The machine's own limits, measured in the same run: what no queue on it
//! can beat.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Outcome, Result};

pub struct Reference {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&Path, Scale) -> Result<Outcome>,
}

/// How much work each reference does (smaller under `--quick`).
#[derive(Clone, Copy)]
pub struct Scale {
    pub syncs: u64,
    pub cap: Duration,
    pub write_bytes: u64,
    pub copy_bytes: u64,
}

pub fn all() -> Vec<Reference> {
    vec![
        Reference {
            name: "fdatasync rate",
            what: "`pwrite` of 100 B into a preallocated, synced file + `fdatasync`, one after another: \
                   the ceiling for one durable message per sync (W2)",
            run: fdatasync_rate,
        },
        Reference {
            name: "batch of 100 + fdatasync",
            what: "`pwrite` of 100 framed 100 B messages (13,600 B) into a preallocated, synced file + \
                   `fdatasync`, one batch after another: the ceiling for W3, where a sync carries 100 \
                   messages' bytes, not one",
            run: batch_sync_rate,
        },
        Reference {
            name: "sequential write + fdatasync",
            what: "`write(2)` of 1 MiB blocks to a new file, one `fdatasync` at the end: \
                   the ceiling for W1/W5, in 100 B payloads per second",
            run: write_bandwidth,
        },
        Reference {
            name: "memcpy bandwidth",
            what: "`copy_from_slice` of a 64 MiB buffer, repeated: \
                   moving bytes in memory, in 100 B payloads per second",
            run: memcpy_bandwidth,
        },
    ]
}

/// Messages of 100 B that `bytes` would carry.
fn as_messages(bytes: u64) -> u64 {
    bytes / 100
}

fn fdatasync_rate(dir: &Path, scale: Scale) -> Result<Outcome> {
    let path = dir.join("synced");
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let size = (scale.syncs * 100).max(1 << 20);
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        f.write_all(&zeros)?;
        written += zeros.len() as u64;
    }
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    let record = [7u8; 100];
    let start = Instant::now();
    let mut n = 0;
    while n < scale.syncs && start.elapsed() < scale.cap {
        f.write_all_at(&record, n * 100)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(Outcome::done(n, start))
}

/// Bytes of 100 messages of 100 B in 136-byte frames (durq's framing; the
/// other systems' is similar).
const BATCH_BYTES: u64 = 100 * 136;

fn batch_sync_rate(dir: &Path, scale: Scale) -> Result<Outcome> {
    let path = dir.join("batches");
    let batches = scale.syncs;
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < batches * BATCH_BYTES {
        f.write_all(&zeros)?;
        written += zeros.len() as u64;
    }
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    let batch = vec![7u8; BATCH_BYTES as usize];
    let start = Instant::now();
    let mut n = 0;
    while n < batches && start.elapsed() < scale.cap {
        f.write_all_at(&batch, n * BATCH_BYTES)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(Outcome::done(n * 100, start))
}

fn write_bandwidth(dir: &Path, scale: Scale) -> Result<Outcome> {
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("stream"))?;
    let block = crate::common::payload(1 << 20);
    let start = Instant::now();
    let mut written = 0;
    while written < scale.write_bytes {
        f.write_all(&block)?;
        written += block.len() as u64;
    }
    f.sync_data()?;
    Ok(Outcome::done(as_messages(written), start))
}

fn memcpy_bandwidth(_dir: &Path, scale: Scale) -> Result<Outcome> {
    let src = crate::common::payload(64 << 20);
    let mut dst = vec![1u8; 64 << 20];
    // Warm both buffers so the measurement is the copy, not page faults.
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut copied = 0;
    while copied < scale.copy_bytes {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copied += src.len() as u64;
    }
    Ok(Outcome::done(as_messages(copied), start))
}

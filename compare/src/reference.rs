//! The machine's own limits, measured in the same run: what no queue on it
//! can beat. Each workload has a bare-I/O reference that moves the same
//! bytes through the same kind of I/O with nothing else (no checksum, no
//! index, no bookkeeping), run beside the systems in every repetition; two
//! machine-wide references (streaming writes, copying memory) close the
//! table.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Deadline, Kind, Outcome, Result, Workload, concurrent, per_thread, stamp};

/// The name of every workload's bare-I/O row.
pub const BARE: &str = "bare I/O";

/// A workload's bare-I/O reference.
pub struct Bare {
    /// What it does, for the notes under the table.
    pub what: &'static str,
    pub run: fn(&Workload, &Path) -> Result<Outcome>,
}

/// The bare-I/O reference for workloads of this kind.
pub fn bare(kind: Kind) -> Bare {
    match kind {
        Kind::SyncAtEnd => Bare {
            what: "the workload's frames (durq's size, `align8(32 + payload)`: 136 B or 1,056 B, a length word \
                   and the payload) copied into a shared mapping of a `posix_fallocate`d file, one `msync` at \
                   the end; the reservation and the `mmap` with `MAP_POPULATE` (every page faulted in ahead, \
                   as durq's prefault thread does beside the sender) are setup, not timed",
            run: mmap_msync,
        },
        Kind::EachDurable => Bare {
            what: "`pwrite` of one 136 B frame into a preallocated, synced file + `fdatasync`, one after \
                   another: the raw fdatasync rate",
            run: pwrite_sync_each,
        },
        Kind::Batches(_) => Bare {
            what: "`pwrite` of a batch's 100 frames (13,600 B) into a preallocated, synced file + \
                   `fdatasync`, one batch after another",
            run: pwrite_sync_batches,
        },
        Kind::Consume { .. } => Bare {
            what: "`pread` of each batch's frames from a synced file in the page cache, then `pwrite` of an \
                   8-byte cursor + `fdatasync` of the cursor file per commit (per 1,000 in W4; per message \
                   in W7, where this is the raw fdatasync rate)",
            run: read_commit,
        },
        Kind::Concurrent { .. } => Bare {
            what: "the threads `pwrite` 136 B frames one after another into a preallocated, synced file \
                   (under a mutex), and each waits for an `fdatasync` that covers its frame: one thread \
                   syncs for everyone written so far while the others wait (group commit)",
            run: group_commit,
        },
    }
}

/// durq's frame for a payload of `payload` bytes.
fn frame_bytes(payload: usize) -> usize {
    (32 + payload).next_multiple_of(8)
}

/// A file of `bytes` written zeros, synced with its directory: blocks
/// already allocated and written, so a sync of data into it writes only
/// the data.
fn zeroed_file(dir: &Path, name: &str, bytes: u64) -> Result<File> {
    let mut f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join(name))?;
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes.max(1) {
        f.write_all(&zeros)?;
        written += zeros.len() as u64;
    }
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

fn mmap_msync(w: &Workload, dir: &Path) -> Result<Outcome> {
    let frame = frame_bytes(w.payload);
    let bytes = w.messages as usize * frame;
    let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("mapped"))?;
    // SAFETY: `f` is an open, writable descriptor for the whole call.
    let err = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, bytes as libc::off_t) };
    if err != 0 {
        return Err(format!(
            "posix_fallocate of {}: {}",
            dir.join("mapped").display(),
            std::io::Error::from_raw_os_error(err)
        )
        .into());
    }
    File::open(dir)?.sync_all()?;
    // SAFETY: the file was just created in this measurement's own temporary
    // directory and reserved to `bytes`; nothing else opens it, and it is
    // neither truncated nor removed while mapped (the map is dropped first).
    let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&f)? };
    let mut payload = crate::common::payload(w.payload);
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
        stamp(&mut payload, n);
        let at = n as usize * frame;
        map[at..at + 4].copy_from_slice(&(w.payload as u32).to_le_bytes());
        map[at + 32..at + 32 + w.payload].copy_from_slice(&payload);
        n += 1;
    }
    map.flush()?;
    Ok(Outcome::done(n, start))
}

fn pwrite_sync_each(w: &Workload, dir: &Path) -> Result<Outcome> {
    let frame = frame_bytes(w.payload) as u64;
    let f = zeroed_file(dir, "synced", w.messages * frame)?;
    let record = vec![7u8; frame as usize];
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < w.messages && !deadline.passed() {
        f.write_all_at(&record, n * frame)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(Outcome::done(n, start))
}

fn pwrite_sync_batches(w: &Workload, dir: &Path) -> Result<Outcome> {
    let Kind::Batches(size) = w.kind else { unreachable!("the batch reference runs batch workloads") };
    let batch_bytes = (size * frame_bytes(w.payload)) as u64;
    let batches = w.messages.div_ceil(size as u64);
    let f = zeroed_file(dir, "batches", batches * batch_bytes)?;
    let batch = vec![7u8; batch_bytes as usize];
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < batches && !deadline.passed() {
        f.write_all_at(&batch, n * batch_bytes)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(Outcome::done(n * size as u64, start))
}

fn read_commit(w: &Workload, dir: &Path) -> Result<Outcome> {
    let Kind::Consume { batch } = w.kind else { unreachable!("the consume reference runs consume workloads") };
    let frame = frame_bytes(w.payload);
    let mut data = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("log"))?;
    let chunk = vec![7u8; 1000 * frame];
    let mut written = 0;
    while written < w.messages {
        let k = (w.messages - written).min(1000);
        data.write_all(&chunk[..k as usize * frame])?;
        written += k;
    }
    data.sync_all()?;
    let cursor = zeroed_file(dir, "cursor", 8)?;
    let mut buf = vec![0u8; batch * frame];
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let mut seen = 0u64;
    while seen < w.messages && !deadline.passed() {
        let k = (w.messages - seen).min(batch as u64) as usize;
        data.read_exact_at(&mut buf[..k * frame], seen * frame as u64)?;
        seen += k as u64;
        cursor.write_all_at(&seen.to_le_bytes(), 0)?;
        cursor.sync_data()?;
    }
    Ok(Outcome::done(seen, start))
}

/// Where the group-commit reference's file stands.
struct Log {
    /// Bytes written (each frame written whole before this moves past it).
    written: u64,
    /// Bytes a finished `fdatasync` covers.
    synced: u64,
    /// A thread is in `fdatasync` now.
    syncing: bool,
    /// An `fdatasync` failed: no one retries it (what it left unwritten is
    /// unknown), every waiter fails too.
    failed: bool,
}

fn group_commit(w: &Workload, dir: &Path) -> Result<Outcome> {
    let Kind::Concurrent { threads } = w.kind else { unreachable!("the group reference runs concurrent workloads") };
    let frame = frame_bytes(w.payload) as u64;
    let f = zeroed_file(dir, "group", w.messages * frame)?;
    let log = Mutex::new(Log { written: 0, synced: 0, syncing: false, failed: false });
    let synced = Condvar::new();
    let record = vec![7u8; frame as usize];
    concurrent(
        threads,
        per_thread(w.messages, threads),
        w.cap,
        |_| Ok(()),
        |_, _, _| {
            let mut s = log.lock().expect("a reference thread panicked");
            f.write_all_at(&record, s.written)?;
            s.written += frame;
            let mine = s.written;
            while s.synced < mine {
                if s.failed {
                    return Err("group commit: another thread's fdatasync failed".into());
                }
                if s.syncing {
                    s = synced.wait(s).expect("a reference thread panicked");
                    continue;
                }
                s.syncing = true;
                let target = s.written;
                drop(s);
                let result = f.sync_data();
                s = log.lock().expect("a reference thread panicked");
                s.syncing = false;
                s.failed = result.is_err();
                synced.notify_all();
                result?;
                s.synced = target;
            }
            Ok(())
        },
    )
}

/// A machine-wide reference: not tied to one workload.
pub struct Reference {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&Path, Scale) -> Result<Outcome>,
}

/// How much work each machine-wide reference does (smaller under `--quick`).
#[derive(Clone, Copy)]
pub struct Scale {
    pub write_bytes: u64,
    pub copy_bytes: u64,
    pub cap: Duration,
}

pub fn machine_wide() -> Vec<Reference> {
    vec![
        Reference {
            name: "sequential write + fdatasync",
            what: "`write(2)` of 1 MiB blocks to a new file, one `fdatasync` at the end: \
                   streaming to the disk, in 100 B payloads per second",
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

fn write_bandwidth(dir: &Path, scale: Scale) -> Result<Outcome> {
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("stream"))?;
    let block = crate::common::payload(1 << 20);
    let start = Instant::now();
    let mut written = 0;
    while written < scale.write_bytes && start.elapsed() < scale.cap {
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
    while copied < scale.copy_bytes && start.elapsed() < scale.cap {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copied += src.len() as u64;
    }
    Ok(Outcome::done(as_messages(copied), start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_durqs_size() {
        assert_eq!(frame_bytes(100), 136);
        assert_eq!(frame_bytes(1024), 1056);
    }

    /// Every bare reference does the workload's whole count when it has
    /// the time, and the group commit leaves every frame on disk.
    #[test]
    fn bare_references_do_the_whole_workload() {
        let kinds = [
            Kind::SyncAtEnd,
            Kind::EachDurable,
            Kind::Batches(10),
            Kind::Consume { batch: 7 },
            Kind::Concurrent { threads: 4 },
        ];
        for kind in kinds {
            let w = Workload {
                id: "T",
                title: String::new(),
                kind,
                messages: 60,
                payload: 100,
                cap: Duration::from_secs(60),
            };
            let dir = tempfile::tempdir().unwrap();
            match (bare(kind).run)(&w, dir.path()).unwrap() {
                Outcome::Done { messages, .. } => assert_eq!(messages, 60, "{kind:?}"),
                Outcome::Skip(why) => panic!("{kind:?} skipped: {why}"),
            }
        }
    }
}

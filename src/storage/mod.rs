//! Everything durq does to the file system, in one place.
//!
//! **Invariant:** no other module calls `std::fs` write operations, `sync_*`,
//! `fallocate`, locks, maps or futexes directly. Every durability step has a
//! name here, so a reader can audit which calls make what durable, and every
//! effect on the file system runs through [`effect`] as one [`Op`], which the
//! simulated disk (`sim`, tests only: the `simulation` feature) counts, fails
//! on demand, and uses to tell what a power cut would keep.
//!
//! - [`mmap`]: file mappings, the only place that hands out raw pointers into
//!   shared memory, with the contract that keeps readers from faulting.
//! - [`shm`]: cross-process synchronisation inside a shared mapping: a robust
//!   process-shared mutex and futex wait/wake.
//! - [`lock_table`]: who holds a `flock`, read from the kernel without
//!   taking one.
//! - [`exits`]: waiting for other processes to exit (pidfds).

// The one module allowed the direct calls clippy.toml lists for the rest
// of the library (the invariant above, checked).
#![allow(clippy::disallowed_methods)]

pub(crate) mod exits;
pub(crate) mod lock_table;
pub(crate) mod mmap;
pub(crate) mod shm;
#[cfg(feature = "simulation")]
pub mod sim;

/// One effect on the file system, named for the simulated disk. Stores into
/// a mapping are not operations: the simulation finds them by comparing
/// files with what was last synced.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "simulation"), allow(dead_code))] // only the simulation reads them
pub(crate) enum Op<'a> {
    Create(&'a Path),
    CreateDir(&'a Path),
    Reserve(&'a Path),
    Write(&'a Path),
    SyncFile(&'a Path),
    /// msync of `len` bytes at `pos`.
    SyncRange(&'a Path, usize, usize),
    SyncDir(&'a Path),
    Rename(&'a Path, &'a Path),
    Remove(&'a Path),
    RemoveTree(&'a Path),
    Lock(&'a Path),
}

impl Op<'_> {
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    fn path(&self) -> &Path {
        match *self {
            Op::Create(p)
            | Op::CreateDir(p)
            | Op::Reserve(p)
            | Op::Write(p)
            | Op::SyncFile(p)
            | Op::SyncRange(p, ..)
            | Op::SyncDir(p)
            | Op::Rename(p, _)
            | Op::Remove(p)
            | Op::RemoveTree(p)
            | Op::Lock(p) => p,
        }
    }
}

/// Runs `f`, the system call(s) behind `op`. Under simulation the disk may
/// fail it instead, and learns its effect afterwards.
#[cfg_attr(not(feature = "simulation"), allow(unused_variables))]
#[inline]
fn effect<T>(op: Op<'_>, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    #[cfg(feature = "simulation")]
    let _in_flight = sim::before(&op)?;
    let out = f()?;
    #[cfg(feature = "simulation")]
    sim::after(&op);
    Ok(out)
}

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// Creates `dir` and any missing parents, then fsyncs every directory whose
/// entries changed, so the new directories survive a power loss.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    // An empty path is the working directory, which exists.
    while !cur.as_os_str().is_empty() && !cur.exists() {
        missing.push(cur);
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    // From the top down: a child entry is only reachable once its parent is
    // durable.
    for (made, d) in missing.iter().rev().enumerate() {
        if let Err(e) = create_one_dir_durable(d) {
            // Later calls take an existing directory for a durable one (see
            // `create_one_dir_durable`): the parents made here go too, those
            // still empty (another process may be using one by now).
            for undo in missing.iter().rev().take(made).rev() {
                remove_empty_dir(undo);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Creates `dir` in its parent, which must exist (as `std::fs::create_dir`,
/// where [`create_dir_durable`] is `create_dir_all`), then fsyncs both. A
/// missing parent is an `Io` error (`NotFound`): the caller chose the place,
/// and a typo above it must not become a new tree.
pub(crate) fn create_child_dir_durable(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    create_one_dir_durable(dir)
}

/// Creates `d`, whose parent exists, then syncs the parent that gained its
/// entry and `d` itself.
fn create_one_dir_durable(d: &Path) -> Result<()> {
    let made_here = effect(Op::CreateDir(d), || match std::fs::create_dir(d) {
        // Another process made it first: just as good.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        other => other.map(|()| true),
    })
    .map_err(|e| Error::io("create directory", d, e))?;
    sync_dir(parent_dir(d)).and_then(|()| sync_dir(d)).inspect_err(|_| {
        // Later calls take an existing directory for a durable one, so one
        // whose entry may not be durable must not stay behind: the next
        // attempt creates and syncs it afresh. Only a directory made here,
        // and only while still empty: another process may already have
        // filled it (it saw it exist), and its files are not ours to remove.
        if made_here {
            remove_empty_dir(d);
        }
    })
}

/// Removes `d` if it is an empty directory; anything else stays, silently:
/// this only undoes a creation that could not be made durable.
fn remove_empty_dir(d: &Path) {
    let _ = effect(Op::Remove(d), || std::fs::remove_dir(d));
}

/// The directory holding `path`; `.` for a bare relative name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, making the creation, rename or removal of its entries
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    effect(Op::SyncDir(dir), || f.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Opens an existing file for reading and writing.
pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io("open", path, e))
}

/// Creates a file that must not exist yet, gives it its full length
/// `len_bytes` (sparse: no blocks yet), reserves blocks for its first
/// `reserve_bytes`, writes `contents` at its start, and makes the file and
/// its directory entry durable (fdatasync of the file, fsync of the
/// directory).
pub(crate) fn create_durable(path: &Path, contents: &[u8], len_bytes: u64, reserve_bytes: u64) -> Result<File> {
    let file = effect(Op::Create(path), || OpenOptions::new().read(true).write(true).create_new(true).open(path))
        .map_err(|e| Error::io("create", path, e))?;
    let filled = (|| {
        size_and_reserve(&file, path, len_bytes, reserve_bytes)?;
        effect(Op::Write(path), || file.write_all_at(contents, 0)).map_err(|e| Error::io("write", path, e))?;
        effect(Op::SyncFile(path), || file.sync_all()).map_err(|e| Error::io("fsync", path, e))?;
        sync_dir(parent_dir(path))
    })();
    if let Err(e) = filled {
        // Nothing depends on the half-made file yet: remove it, so the next
        // attempt (a full disk may have room again) can create it afresh.
        let _ = remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Grows `file` to `len_bytes` if it is shorter (`ftruncate`: the new part
/// is a hole, with no blocks), never shrinking it, and reserves blocks for
/// its first `reserve_bytes` (see [`reserve`]). One [`Op::Reserve`]: both
/// steps give the file room, neither writes a byte.
pub(crate) fn size_and_reserve(file: &File, path: &Path, len_bytes: u64, reserve_bytes: u64) -> Result<()> {
    effect(Op::Reserve(path), || {
        fallocate(file, 0..reserve_bytes)?;
        // Only grow, never shrink: rule 1 of the mmap contract.
        if file.metadata()?.len() < len_bytes {
            file.set_len(len_bytes)?;
        }
        Ok(())
    })
    .map_err(|e| Error::io("reserve space (fallocate)", path, e))
}

/// Reserves disk blocks for the bytes `range` of `file` (`posix_fallocate`,
/// which keeps what is written there and extends a shorter file), so that a
/// later store into a mapping of them never needs a block the disk no
/// longer has: such a store would fault (SIGBUS) instead of failing. Fails
/// with ENOSPC ([`Error::is_no_space`]) when the disk is full; some of the
/// range may then be reserved, which is harmless.
pub(crate) fn reserve(file: &File, path: &Path, range: std::ops::Range<u64>) -> Result<()> {
    effect(Op::Reserve(path), || fallocate(file, range)).map_err(|e| Error::io("reserve space (fallocate)", path, e))
}

/// Gives the blocks of the bytes `range` of `file` back to the disk
/// (`FALLOC_FL_PUNCH_HOLE`, keeping the file's length): after a
/// [`reserve`] that failed for want of space, which on ext4 keeps what it
/// allocated before it ran out. Only for bytes that hold nothing and that
/// nobody stores into: beyond a segment's reserved watermark. They read as
/// zeros before and after. Best effort: a file system that cannot punch
/// holes only keeps the space.
pub(crate) fn release(file: &File, path: &Path, range: std::ops::Range<u64>) {
    if range.is_empty() {
        return;
    }
    let _ = effect(Op::Reserve(path), || {
        let (pos, len) = (range.start as libc::off_t, (range.end - range.start) as libc::off_t);
        // SAFETY: fallocate only reads its integer arguments; the
        // descriptor is owned by `file`, which outlives the call.
        let rc = unsafe {
            libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, pos, len)
        };
        if rc != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    });
}

fn fallocate(file: &File, range: std::ops::Range<u64>) -> std::io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let (pos, len) = (range.start as libc::off_t, (range.end - range.start) as libc::off_t);
    // SAFETY: posix_fallocate only reads its integer arguments; the
    // descriptor is owned by `file`, which outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), pos, len) };
    if rc != 0 { Err(std::io::Error::from_raw_os_error(rc)) } else { Ok(()) }
}

/// Where the data of `file` ends as far as the file system knows: every
/// byte from there to `len` lies in a hole, or in reserved blocks never
/// written and not in the page cache, and reads as zero (`SEEK_DATA` and
/// `SEEK_HOLE`). `len` when the file system cannot tell, on any error, or
/// when the data lies in more than a few pieces: the answer only lets a
/// reader skip bytes, so every doubt means "read them". It reads no data
/// and changes nothing: not an [`Op`]. (It moves the descriptor's offset,
/// which durq never uses: it reads and writes at explicit positions.)
pub(crate) fn data_end(file: &File, len: u64) -> u64 {
    const MAX_PIECES: usize = 64;
    let fd = file.as_raw_fd();
    let seek = |pos: u64, whence: libc::c_int| -> std::io::Result<u64> {
        let pos = libc::off_t::try_from(pos).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: lseek only reads its integer arguments; the descriptor is
        // owned by `file`, which outlives the call.
        let at = unsafe { libc::lseek(fd, pos, whence) };
        u64::try_from(at).map_err(|_| std::io::Error::last_os_error())
    };
    let (mut pos, mut end) = (0, 0);
    for _ in 0..MAX_PIECES {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(data) if data < len => data,
            // No data from `pos` on.
            Ok(_) => return end,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return end,
            Err(_) => return len,
        };
        match seek(data, libc::SEEK_HOLE) {
            Ok(hole) if hole < len => (pos, end) = (hole, hole),
            _ => return len,
        }
    }
    len
}

/// Starts writing the dirty pages of `pos..pos + len` of `file` to the disk
/// and returns without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`), so that a later sync of the range has less to
/// do. It makes nothing durable: it waits for no write and flushes no cache.
/// A write that fails later is reported by the next sync of the file.
///
/// Not an [`Op`]: the simulated disk already takes every byte not yet synced
/// to be on the disk or not, torn or whole, so an early start of its
/// writeback changes no power-cut image it can build, and no durability
/// step depends on it.
pub(crate) fn start_writeback(file: &File, path: &Path, pos: u64, len: u64) -> Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is owned by `file`, which outlives the call.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), pos as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        return Err(Error::io("start writeback (sync_file_range)", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Writes `bytes` at `pos` and fdatasyncs the file: the one way small
/// metadata files (checkpoints, leases) are made durable.
pub(crate) fn write_durable_at(file: &File, path: &Path, pos: u64, bytes: &[u8]) -> Result<()> {
    write_at(file, path, pos, bytes)?;
    effect(Op::SyncFile(path), || file.sync_data()).map_err(|e| Error::io("fdatasync", path, e))
}

/// Writes `bytes` at `pos` without a sync: for state that must survive a
/// crash of this process (the page cache keeps it), not a power loss.
pub(crate) fn write_at(file: &File, path: &Path, pos: u64, bytes: &[u8]) -> Result<()> {
    effect(Op::Write(path), || file.write_all_at(bytes, pos)).map_err(|e| Error::io("write", path, e))
}

/// Creates an empty file at `path` unless something exists there. Returns
/// false if it existed: an atomic test-and-set on a name.
pub(crate) fn create_new_empty(path: &Path) -> Result<bool> {
    match effect(Op::Create(path), || OpenOptions::new().write(true).create_new(true).open(path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("create", path, e)),
    }
}

/// Reads up to `buf.len()` bytes at `pos`, returning how many were read (short
/// only at end of file).
pub(crate) fn read_at(file: &File, path: &Path, pos: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(done)
}

/// Reads a small file whose format has a fixed size, but at most
/// `expected + 1` bytes of it: one byte too many is enough for its decoder
/// to refuse it, and a file grown by someone else (a hostile local user can
/// make a sparse file of any size) never makes durq allocate or read more.
pub(crate) fn read_small(path: &Path, expected: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(expected + 1);
    File::open(path)?.take(expected as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Outcome of trying to take a file lock.
pub(crate) enum Locked {
    Yes,
    HeldElsewhere,
}

/// Opens (creating if needed) a lock file and tries to take an exclusive
/// `flock` on it without blocking. The kernel releases the lock the moment the
/// holder dies, however it dies.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<(File, Locked)> {
    let file = open_lock_file(path)?;
    let locked = try_lock(&file, path)?;
    Ok((file, locked))
}

/// Like [`try_lock_exclusive`], for a file that must already exist: `None`
/// if it does not.
pub(crate) fn try_lock_existing(path: &Path) -> Result<Option<(File, Locked)>> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open lock file", path, e)),
    };
    let locked = try_lock(&file, path)?;
    Ok(Some((file, locked)))
}

/// Opens (creating if needed) a lock file and blocks until it holds an
/// exclusive `flock` on it.
pub(crate) fn lock_exclusive(path: &Path) -> Result<File> {
    let file = open_lock_file(path)?;
    effect(Op::Lock(path), || file.lock()).map_err(|e| Error::io("lock", path, e))?;
    Ok(file)
}

/// Like [`lock_exclusive`], for a lock file that is normally there: opened
/// without creating it, so that a full disk cannot refuse it; created only
/// if it is missing.
pub(crate) fn lock_exclusive_existing(path: &Path) -> Result<File> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return lock_exclusive(path),
        Err(e) => return Err(Error::io("open lock file", path, e)),
    };
    effect(Op::Lock(path), || file.lock()).map_err(|e| Error::io("lock", path, e))?;
    Ok(file)
}

fn open_lock_file(path: &Path) -> Result<File> {
    effect(Op::Create(path), || OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path))
        .map_err(|e| Error::io("open lock file", path, e))
}

/// Tries to take an exclusive `flock` on the open lock file `file` (at
/// `path`), without blocking.
pub(crate) fn try_lock(file: &File, path: &Path) -> Result<Locked> {
    let attempt = effect(Op::Lock(path), || match file.try_lock() {
        Ok(()) => Ok(Locked::Yes),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Locked::HeldElsewhere),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    });
    attempt.map_err(|e| Error::io("lock", path, e))
}

/// Turns the caller's lock on `file` into a shared one.
pub(crate) fn lock_shared(file: &File, path: &Path) -> Result<()> {
    effect(Op::Lock(path), || file.lock_shared()).map_err(|e| Error::io("lock (shared)", path, e))
}

/// Lists the names in `dir`.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes a file; one that is already gone counts as removed.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match effect(Op::Remove(path), || std::fs::remove_file(path)) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Removes the directory `dir` and everything in it; the caller syncs
/// its parent.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    effect(Op::RemoveTree(dir), || std::fs::remove_dir_all(dir)).map_err(|e| Error::io("remove directory", dir, e))
}

/// Renames `from` to `to` (same directory) and fsyncs the directory.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    effect(Op::Rename(from, to), || std::fs::rename(from, to)).map_err(|e| Error::io("rename", from, e))?;
    sync_dir(parent_dir(to))
}

/// Makes `bytes` the whole contents of `file`, not synced: writes them at
/// the start, then cuts the file to their length, so a longer file (left
/// by someone else) does not keep its tail. Never for a mapped file (mmap
/// contract: a mapped file never shrinks).
pub(crate) fn overwrite(file: &File, path: &Path, bytes: &[u8]) -> Result<()> {
    write_at(file, path, 0, bytes)?;
    effect(Op::Write(path), || file.set_len(bytes.len() as u64)).map_err(|e| Error::io("truncate", path, e))
}

/// Writes a new file at `path` (which must not exist) with `contents` and
/// fdatasyncs it; the caller publishes it.
pub(crate) fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let f = effect(Op::Create(path), || OpenOptions::new().write(true).create_new(true).open(path))
        .map_err(|e| Error::io("create", path, e))?;
    write_at(&f, path, 0, contents)?;
    effect(Op::SyncFile(path), || f.sync_data()).map_err(|e| Error::io("fdatasync", path, e))
}

/// Milliseconds since the Unix epoch from the kernel's coarse clock: a few
/// nanoseconds instead of a few tens, at the price of a resolution of one
/// scheduler tick (1 to 4 ms). Record timestamps are for humans and
/// retention, where a tick does not matter. Every Linux durq runs on has
/// this clock; were it refused (a seccomp filter), the exact one answers.
pub(crate) fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the local `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return now_ms();
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): a few
/// nanoseconds a read instead of a few tens, behind the exact clock by up
/// to [`coarse_monotonic_tick`]. `None` if it is refused (a seccomp
/// filter): the caller reads the exact clock.
pub(crate) fn coarse_monotonic() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the local `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The resolution of [`coarse_monotonic`] (one scheduler tick, 1 to 4 ms).
pub(crate) fn coarse_monotonic_tick() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_getres writes one timespec into the local `ts`.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// 16 random bytes from the kernel (`getrandom`), for the id of a member
/// of the group at `for_dir` (named in the error).
pub(crate) fn random_id(for_dir: &Path) -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    fill_random(&mut id, |buf| {
        // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    })
    .map_err(|e| Error::io("getrandom", for_dir, e))?;
    Ok(id)
}

/// Fills `buf` from `source`, which fills a prefix of what it is given and
/// says how much. A call interrupted by a signal (EINTR) is retried; any
/// other failure (a kernel without `getrandom`, a seccomp filter that
/// refuses it), or a source that gives nothing, is returned: retrying
/// those would loop for ever.
fn fill_random(buf: &mut [u8], mut source: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match source(&mut buf[filled..]) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the random source gave no bytes")),
            Ok(n) => filled += n.min(buf.len() - filled),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`), or
/// zeros where it cannot be read.
pub(crate) fn boot_id() -> [u8; 16] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0);
    }
    id
}

/// This host's name, or an empty string where it cannot be read.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Whether something exists at `path` (following a symbolic link, as
/// `Path::exists` does), asked without reading its attributes.
///
/// A `stat` that asks for a file's timestamps makes the file system give the
/// file's next change a fine-grained, so always new, time (multigrain
/// timestamps: ext4, XFS and tmpfs since Linux 6.13). A holder that checked
/// its own checkpoint file that way after every commit changed its times at
/// every commit, and every commit's msync also wrote the file's inode: on ext4
/// a second disk write per commit (`perf` showed `ext4_write_inode` under
/// `msync`; a bare `pwrite` + `fdatasync` loop, which never asks, writes its
/// inode only when the coarse clock ticks).
pub(crate) fn exists(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: faccessat only reads the NUL-terminated path, which lives
    // until the call returns.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::F_OK, 0) == 0 }
}

/// Milliseconds since the Unix epoch, exact (for heartbeats).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_random_source_is_an_error_and_an_interrupted_one_is_retried() {
        let mut buf = [0u8; 16];
        let mut calls = 0;
        let e = fill_random(&mut buf, |_| {
            calls += 1;
            Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
        })
        .unwrap_err();
        assert_eq!((e.raw_os_error(), calls), (Some(libc::ENOSYS), 1), "asked once, not for ever");
        assert!(fill_random(&mut buf, |_| Ok(0)).is_err(), "a source that gives nothing is no source");
        let mut answers = vec![Ok(5), Err(std::io::Error::from_raw_os_error(libc::EINTR)), Ok(11)].into_iter();
        fill_random(&mut buf, |part| {
            let answer = answers.next().unwrap();
            if let Ok(n) = answer {
                part[..n].fill(7);
            }
            answer
        })
        .unwrap();
        assert_eq!(buf, [7; 16], "filled across a short read and an EINTR");
        let id = random_id(Path::new("g")).unwrap();
        assert_ne!(id, random_id(Path::new("g")).unwrap());
    }

    #[test]
    fn data_end_never_cuts_off_data_and_skips_reserved_space() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let len: u64 = 4 << 20;
        reserve(&file, &path, 0..len).unwrap();
        let empty = data_end(&file, len);
        write_at(&file, &path, 0, &[1; 100]).unwrap();
        write_at(&file, &path, 300_000, &[2; 10]).unwrap();
        let end = data_end(&file, len);
        assert!(end >= 300_010 && end <= len, "data ends at 300,010, told {end}");
        let mut rest = vec![0xff; (len - end) as usize];
        read_at(&file, &path, end, &mut rest).unwrap();
        assert!(rest.iter().all(|&b| b == 0), "a byte after {end} is not zero");
        // ext4, XFS and tmpfs report never-written reserved blocks as holes;
        // a file system that cannot tell answers `len`, which is also sound.
        eprintln!("data_end: reserved only {empty}, with data {end} of {len}");
    }
}

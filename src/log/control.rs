//! The control file, `durq.ctl`: the live state every process that has the
//! queue open shares through one `MAP_SHARED` mapping.
//!
//! It is coordination state, not data: nothing in it must survive a reboot.
//! The first process to open the queue when no other process has it open
//! (it wins an exclusive `flock` on the file) rebuilds it from the segments
//! (recovery) and initialises its mutexes; every later opener takes a shared
//! `flock` and uses it as it is. The kernel drops the locks of dead
//! processes, so after a reboot or after every user crashed, the next opener
//! always rebuilds it.
//!
//! ```text
//! offset              size  field
//! 0                   8     magic b"DURQCTL\0" (written last by the initialiser)
//! 8                   4     partitions
//! 64                  4     notify_seq   futex word: bumped when records become visible
//! 68                  4     sleepers     1 once a consumer announced it will sleep
//! 4096 + 256 * p      64    append mutex of partition p (robust, process-shared)
//!   + 64              8     next_offset        offset the next record gets
//!   + 72              8     tail_segment_base  base offset of the segment being appended to
//!   + 80              8     tail_pos           byte position of the next frame in it
//!   + 88              8     visible            readers deliver offsets below this
//!   + 96              8     durable            offsets below this are synced
//!   + 104             8     first_offset       earliest retained offset
//!   + 112             8     prev_segment_base  base offset of the segment before the tail
//!   + 120             8     tail_reserved      bytes of the tail segment, from byte 0, with blocks reserved
//! ```
//!
//! **Invariant:** `visible <= next_offset`, `durable <= next_offset`; under
//! `Sync` and `Interval`, `visible <= durable` (no phantom reads). Only the
//! holder of a partition's mutex changes `next_offset`, `tail_segment_base`,
//! `tail_pos`, `prev_segment_base` and `tail_reserved`; `visible`, `durable`
//! and `first_offset` (raised by retention, which holds no mutex) only grow
//! (`fetch_max`). `durable >= prev_segment_base`: at most one sealed
//! segment, the one before the tail, may hold records that are not durable.
//! `tail_pos <= tail_reserved`, and the tail segment has blocks for at least
//! its first `tail_reserved` bytes: the watermark is raised only after the
//! `fallocate` returned, and frames are stored only below it (see
//! `reservation.rs`). [`PartitionControl`] is the only way to these words
//! in this process: its methods pick the memory orderings and assert these
//! rules, so no caller can store a watermark backwards.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER_BYTES;
use crate::storage::lock_table::LockTable;
use crate::storage::mmap::{MappedFile, ReadOnlyMap};
use crate::storage::shm::{self, Acquired, MutexGuard, SHARED_MUTEX_BYTES, SharedMutex};
use crate::storage::{self, Locked};

pub use crate::layout::{CONTROL_FILE, OPEN_LOCK_FILE};

const MAGIC: [u8; 8] = *b"DURQCTL\0";
const PARTITIONS_AT: usize = 8;
const NOTIFY_SEQ_AT: usize = 64;
const SLEEPERS_AT: usize = 68;
const BLOCKS_AT: usize = 4096;
const BLOCK_BYTES: usize = 256;
const MUTEX_AT: usize = 0;
const NEXT_OFFSET_AT: usize = SHARED_MUTEX_BYTES;
const TAIL_SEGMENT_AT: usize = NEXT_OFFSET_AT + 8;
const TAIL_POS_AT: usize = TAIL_SEGMENT_AT + 8;
const VISIBLE_AT: usize = TAIL_POS_AT + 8;
const DURABLE_AT: usize = VISIBLE_AT + 8;
const FIRST_OFFSET_AT: usize = DURABLE_AT + 8;
const PREV_SEGMENT_AT: usize = FIRST_OFFSET_AT + 8;
const TAIL_RESERVED_AT: usize = PREV_SEGMENT_AT + 8;
const _: () = assert!(TAIL_RESERVED_AT + 8 <= BLOCK_BYTES);

/// Where a partition's log ends, as recovery found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Earliest retained offset.
    pub first_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Base offset of the last segment.
    pub segment_base: u64,
    /// Byte position of the next frame in the last segment.
    pub pos: u64,
    /// Base offset of the segment before the last (the last one's own if it
    /// is the only one).
    pub prev_segment_base: u64,
    /// Bytes of the last segment, from byte 0, whose blocks are reserved.
    pub reserved: u64,
}

/// One partition's shared state. Its methods own the memory orderings and
/// check the invariants of the module docs: a watermark is only raised
/// (`fetch_max`), never past what it may cover, and the tail only moves
/// forward. A broken invariant here is a bug of ours that would have
/// readers borrow unwritten bytes, a header claim unsynced records, or a
/// store reach a page without a block, so the checks are `assert!`s, kept
/// in release builds (one or two loads of words the caller just touched).
pub(crate) struct PartitionControl<'a> {
    mutex: SharedMutex,
    next_offset: &'a AtomicU64,
    tail_segment_base: &'a AtomicU64,
    tail_pos: &'a AtomicU64,
    visible: &'a AtomicU64,
    durable: &'a AtomicU64,
    first_offset: &'a AtomicU64,
    prev_segment_base: &'a AtomicU64,
    tail_reserved: &'a AtomicU64,
}

impl PartitionControl<'_> {
    /// Takes the append mutex (see [`SharedMutex::lock`]): every method
    /// below that says "under the mutex" needs it held.
    pub(crate) fn lock(&self) -> std::io::Result<(MutexGuard<'_>, Acquired)> {
        self.mutex.lock()
    }

    /// True if `guard` holds this partition's append mutex.
    pub(crate) fn is_locked_by(&self, guard: &MutexGuard<'_>) -> bool {
        guard.holds(&self.mutex)
    }

    /// The offset the next record gets: every record below it is written
    /// and published.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// The base offset of the segment being appended to (under the mutex).
    pub(crate) fn tail_segment_base(&self) -> u64 {
        self.tail_segment_base.load(Ordering::Relaxed)
    }

    /// The byte position of the next frame in the tail segment (under the
    /// mutex).
    pub(crate) fn tail_pos(&self) -> usize {
        self.tail_pos.load(Ordering::Relaxed) as usize
    }

    /// Bytes of the tail segment, from byte 0, that have blocks reserved
    /// (under the mutex).
    pub(crate) fn tail_reserved(&self) -> usize {
        self.tail_reserved.load(Ordering::Relaxed) as usize
    }

    /// The base offset of the segment before the tail. Read without the
    /// mutex by retention, which removes only segments before it.
    pub(crate) fn prev_segment_base(&self) -> u64 {
        self.prev_segment_base.load(Ordering::Acquire)
    }

    /// Offsets below this are synced.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Readers deliver offsets below this. `SeqCst`, as every access to it:
    /// the wake-up handshake in [`ControlFile::wait_until`] relies on it.
    pub(crate) fn visible(&self) -> u64 {
        self.visible.load(Ordering::SeqCst)
    }

    /// The earliest retained offset.
    pub(crate) fn first_offset(&self) -> u64 {
        self.first_offset.load(Ordering::Acquire)
    }

    /// Publishes frames written into the tail segment (under the mutex): the
    /// next frame goes at `pos`, the next record gets `next_offset`.
    /// Readers may rely on every record below `next_offset` once this
    /// returns, so the tail never moves back, and frames were stored only
    /// where blocks are reserved.
    pub(crate) fn publish_tail(&self, pos: usize, next_offset: u64) {
        let (old_pos, old_next) = (self.tail_pos(), self.next_offset.load(Ordering::Relaxed));
        assert!(
            next_offset >= old_next && pos >= old_pos,
            "tail moving back from offset {old_next} at byte {old_pos} to {next_offset} at {pos}"
        );
        let reserved = self.tail_reserved();
        assert!(pos <= reserved, "frames stored up to byte {pos}, blocks reserved up to {reserved}");
        self.tail_pos.store(pos as u64, Ordering::Relaxed);
        self.next_offset.store(next_offset, Ordering::Release);
    }

    /// Makes the segment starting at `base`, the next offset, the tail, with
    /// its first `reserved` bytes reserved; `prev_base` is the one it follows
    /// (a roll, under the mutex). Every record before `prev_base` must be
    /// durable: at most one sealed segment waits for its sync.
    pub(crate) fn start_segment(&self, base: u64, prev_base: u64, reserved: usize) {
        let next = self.next_offset.load(Ordering::Relaxed);
        assert_eq!(base, next, "a new segment starts at the next offset");
        let durable = self.durable();
        assert!(durable >= prev_base, "rolling past segment {prev_base} while records from {durable} are not durable");
        self.prev_segment_base.store(prev_base, Ordering::Relaxed);
        self.tail_segment_base.store(base, Ordering::Relaxed);
        self.tail_pos.store(SEGMENT_HEADER_BYTES as u64, Ordering::Relaxed);
        self.tail_reserved.store(reserved as u64, Ordering::Relaxed);
    }

    /// Raises the tail segment's reserved watermark to `reserved`, after its
    /// `fallocate` returned (under the mutex).
    pub(crate) fn raise_tail_reserved(&self, reserved: usize) {
        let old = self.tail_reserved();
        assert!(reserved >= old, "reserved watermark lowered from {old} to {reserved}");
        self.tail_reserved.store(reserved as u64, Ordering::Relaxed);
    }

    /// Publishes a tail found by recovery (the caller holds the mutex or is
    /// the only process with the queue open). What recovery found is the
    /// truth: no check against the tail it replaces.
    pub(crate) fn set_tail(&self, tail: &Tail) {
        self.tail_segment_base.store(tail.segment_base, Ordering::Relaxed);
        self.tail_pos.store(tail.pos, Ordering::Relaxed);
        // Retention raises it without the mutex, and may have since this
        // tail was read: it only grows.
        self.first_offset.fetch_max(tail.first_offset, Ordering::SeqCst);
        self.prev_segment_base.store(tail.prev_segment_base, Ordering::Relaxed);
        self.tail_reserved.store(tail.reserved, Ordering::Relaxed);
        self.next_offset.store(tail.next_offset, Ordering::Release);
    }

    /// Records that every record below `to` is synced. Never lowers the
    /// watermark (syncs of several threads and processes finish in any
    /// order), and never raises it past the published tail.
    pub(crate) fn raise_durable(&self, to: u64) {
        let next = self.next_offset();
        assert!(to <= next, "durable raised to {to}, past the next offset {next}");
        self.durable.fetch_max(to, Ordering::SeqCst);
    }

    /// Lets readers see the records below `to`, which are synced (`Sync`
    /// and `Interval`: no phantom reads). Never lowers the watermark.
    pub(crate) fn raise_visible_synced(&self, to: u64) {
        let durable = self.durable();
        assert!(to <= durable, "visible raised to {to}, past the durable watermark {durable}");
        self.visible.fetch_max(to, Ordering::SeqCst);
    }

    /// Lets readers see the records below `to` as soon as they are written
    /// (`Buffered`). Never lowers the watermark, and never raises it past
    /// the published tail: a reader borrows the bytes of every frame below
    /// it (mmap contract rule 2).
    pub(crate) fn raise_visible_written(&self, to: u64) {
        let next = self.next_offset();
        assert!(to <= next, "visible raised to {to}, past the next offset {next}");
        self.visible.fetch_max(to, Ordering::SeqCst);
    }

    /// Raises the earliest retained offset to `to` (retention, without the
    /// mutex; concurrent passes race harmlessly). Never lowers it.
    pub(crate) fn raise_first_offset(&self, to: u64) {
        debug_assert!(to <= self.next_offset(), "first offset raised to {to}, past the next offset");
        self.first_offset.fetch_max(to, Ordering::SeqCst);
    }
}

/// The mapped control file. Holds a shared `flock` on it for as long as it
/// lives, which is how openers know whether anyone else has the queue open.
pub(crate) struct ControlFile {
    map: MappedFile,
    path: PathBuf,
    _lock: File,
    partitions: u32,
}

/// Whether this process must rebuild the shared state.
pub(crate) enum Opened {
    /// No other process has the queue open: run recovery, then
    /// [`ControlFile::init`].
    Alone(ControlFile),
    /// Others have it open; the shared state is live.
    Joined(ControlFile),
}

impl ControlFile {
    fn bytes_for(partitions: u32) -> u64 {
        (BLOCKS_AT + BLOCK_BYTES * partitions as usize) as u64
    }

    /// Opens the control file of the queue at `dir`. The caller holds the
    /// open lock, so no other process is between these steps.
    pub(crate) fn open(dir: &Path, partitions: u32) -> Result<Opened> {
        let path = dir.join(CONTROL_FILE);
        let (file, locked) = storage::try_lock_exclusive(&path)?;
        let len = Self::bytes_for(partitions);
        let alone = matches!(locked, Locked::Yes);
        if alone {
            // Only grow, never shrink: rule 1 of the mmap contract.
            storage::reserve(&file, &path, 0..len)?;
        }
        let map = MappedFile::map(&file, &path, len)?;
        storage::lock_shared(&file, &path)?;
        let control = ControlFile { map, path: path.clone(), _lock: file, partitions };
        if alone {
            Ok(Opened::Alone(control))
        } else {
            // SAFETY: the magic is written once by the initialiser, which
            // finished before releasing the open lock that we now hold.
            let header = unsafe { control.map.bytes(0, 12) };
            if header[..8] != MAGIC || header[PARTITIONS_AT..12] != partitions.to_le_bytes() {
                return Err(Error::corrupt(path, 0, None, "control file of a live queue is not initialised"));
            }
            Ok(Opened::Joined(control))
        }
    }

    /// Rebuilds the shared state from recovered tails and initialises the
    /// mutexes. Under [`Opened::Alone`] only.
    pub(crate) fn init(&self, tails: &[Tail]) -> Result<()> {
        assert_eq!(tails.len(), self.partitions as usize);
        // SAFETY: this process is the only one with the queue open (it won
        // the exclusive flock), so nothing else maps these bytes.
        unsafe {
            self.map.zero(0, self.map.len());
            self.map.write(PARTITIONS_AT, &self.partitions.to_le_bytes());
        }
        for (p, tail) in tails.iter().enumerate() {
            let block = BLOCKS_AT + BLOCK_BYTES * p;
            // SAFETY: as above, no other process uses the mutex; the block is
            // 8-byte aligned (page-aligned map + multiple-of-256 offset).
            unsafe { SharedMutex::init(self.map.ptr_at(block + MUTEX_AT)) }
                .map_err(|e| Error::io("init shared mutex", self.path(), e))?;
            let c = self.partition(p as u32);
            c.set_tail(tail);
            // Recovery synced everything it kept, so all of it is durable.
            c.raise_durable(tail.next_offset);
            c.raise_visible_synced(tail.next_offset);
        }
        // SAFETY: as above.
        unsafe { self.map.write(0, &MAGIC) };
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn atomic64(&self, at: usize) -> &AtomicU64 {
        let ptr = self.map.ptr_at(at);
        assert_eq!(ptr as usize % 8, 0);
        // SAFETY: aligned (checked), inside the mapping, which lives as long
        // as `self`; every process accesses these bytes only atomically.
        unsafe { AtomicU64::from_ptr(ptr.cast()) }
    }

    fn atomic32(&self, at: usize) -> &AtomicU32 {
        let ptr = self.map.ptr_at(at);
        assert_eq!(ptr as usize % 4, 0);
        // SAFETY: as for atomic64.
        unsafe { AtomicU32::from_ptr(ptr.cast()) }
    }

    /// Partition `p`'s shared state.
    pub(crate) fn partition(&self, p: u32) -> PartitionControl<'_> {
        assert!(p < self.partitions, "partition {p} of {}", self.partitions);
        let block = BLOCKS_AT + BLOCK_BYTES * p as usize;
        PartitionControl {
            // SAFETY: initialised by `init` in this boot (the magic check in
            // `open`, or this process ran `init`); the mapping outlives the
            // returned value, which borrows `self`.
            mutex: unsafe { SharedMutex::from_raw(self.map.ptr_at(block + MUTEX_AT)) },
            next_offset: self.atomic64(block + NEXT_OFFSET_AT),
            tail_segment_base: self.atomic64(block + TAIL_SEGMENT_AT),
            tail_pos: self.atomic64(block + TAIL_POS_AT),
            visible: self.atomic64(block + VISIBLE_AT),
            durable: self.atomic64(block + DURABLE_AT),
            first_offset: self.atomic64(block + FIRST_OFFSET_AT),
            prev_segment_base: self.atomic64(block + PREV_SEGMENT_AT),
            tail_reserved: self.atomic64(block + TAIL_RESERVED_AT),
        }
    }

    fn notify_seq(&self) -> &AtomicU32 {
        self.atomic32(NOTIFY_SEQ_AT)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.atomic32(SLEEPERS_AT)
    }

    /// Wakes consumers in every process after `visible` grew. The caller
    /// stored the new `visible` with `SeqCst` before calling. Costs one load
    /// unless somebody announced it is going to sleep (a `SeqCst` load after
    /// that store is all the handshake in `wait_until` needs; the swap only
    /// picks which producer wakes); a sleeper that died is woken once and
    /// forgotten, so a crash never leaves the producers paying a system call
    /// per record.
    pub(crate) fn notify(&self) {
        let sleepers = self.sleepers();
        if sleepers.load(Ordering::SeqCst) != 0 && sleepers.swap(0, Ordering::SeqCst) != 0 {
            self.notify_seq().fetch_add(1, Ordering::SeqCst);
            shm::futex_wake_all(self.notify_seq());
        }
    }

    /// Sleeps until `ready()` holds or `timeout` passes, without spinning.
    /// Returns `ready()`'s last answer.
    ///
    /// No lost wake-up: a sleeper announces itself (`sleepers = 1`), reads
    /// `notify_seq`, then checks `ready()`; a producer stores `visible`,
    /// then takes the announcement and bumps `notify_seq`. All `SeqCst`:
    /// either the producer sees the announcement and bumps the word (the
    /// futex wait returns at once), or its `visible` store came first and
    /// `ready()` sees it.
    pub(crate) fn wait_until(&self, timeout: Option<Duration>, mut ready: impl FnMut() -> bool) -> bool {
        // Insurance against a producer that died between publishing records
        // and waking us: never sleep longer than this before re-checking.
        const RECHECK: Duration = Duration::from_millis(100);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            self.sleepers().store(1, Ordering::SeqCst);
            let seq = self.notify_seq().load(Ordering::SeqCst);
            if ready() {
                return true;
            }
            let sleep = match deadline {
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(RECHECK),
                    _ => return false,
                },
                None => RECHECK,
            };
            shm::futex_wait(self.notify_seq(), seq, Some(sleep));
        }
    }
}

/// One partition's offsets as the live shared state holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveOffsets {
    /// Earliest retained offset.
    pub(crate) first_offset: u64,
    /// Offset the next record gets.
    pub(crate) next_offset: u64,
}

/// Every partition's offsets in the control file of the queue at `dir`, if
/// some process has the queue open (it holds a `flock` on the file, as
/// `locks` says), read through a read-only mapping: no lock, no write, no
/// recovery, and read access is enough. `None` when no process has the
/// queue open, or the file was never initialised (the queue's first opener
/// is creating it).
///
/// The first opener after everybody closed the queue locks the file before
/// it recovers and initialises it; while it does (milliseconds), the words
/// read here are those the last run left.
pub(crate) fn observe(dir: &Path, partitions: u32, locks: &LockTable) -> Result<Option<Vec<LiveOffsets>>> {
    let path = dir.join(CONTROL_FILE);
    if !locks.held(&path)? {
        return Ok(None);
    }
    let file = match File::open(&path) {
        Ok(file) => file,
        // Closed by its last user since the lock table was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let len = ControlFile::bytes_for(partitions);
    if file.metadata().map_err(|e| Error::io("stat", &path, e))?.len() < len {
        return Ok(None);
    }
    let map = ReadOnlyMap::map(&file, &path, len)?;
    let count = map.load_word(PARTITIONS_AT);
    if map.load_word(0) != MAGIC || count[..4] != partitions.to_le_bytes() {
        return Ok(None);
    }
    let word = |at: usize| u64::from_ne_bytes(map.load_word(at));
    Ok(Some(
        (0..partitions as usize)
            .map(|p| {
                let block = BLOCKS_AT + BLOCK_BYTES * p;
                LiveOffsets { first_offset: word(block + FIRST_OFFSET_AT), next_offset: word(block + NEXT_OFFSET_AT) }
            })
            .collect(),
    ))
}

/// Opens the lock file that serialises opening the queue at `dir`, and
/// blocks until it holds it. Retention's floor lock is the same lock
/// (`retention::lock_floor`).
pub(crate) fn lock_for_open(dir: &Path) -> Result<File> {
    storage::lock_exclusive(&dir.join(OPEN_LOCK_FILE))
}

/// True for the names of the control and open-lock files.
pub(crate) fn is_runtime_file(name: &str) -> bool {
    name == CONTROL_FILE || name == OPEN_LOCK_FILE
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A control file of one partition, alone, initialised with records
    /// 0..100 written and durable, in a segment starting at 0 whose first
    /// MiB has blocks.
    fn control(dir: &Path) -> ControlFile {
        let Opened::Alone(control) = ControlFile::open(dir, 1).unwrap() else { panic!("a fresh directory is ours") };
        let tail =
            Tail { first_offset: 0, next_offset: 100, segment_base: 0, pos: 4096, prev_segment_base: 0, reserved: MIB };
        control.init(&[tail]).unwrap();
        control
    }

    /// Runs `f`, which must panic (a broken invariant), and returns the
    /// panic's message.
    fn refused(f: impl FnOnce()) -> String {
        let panic = catch_unwind(AssertUnwindSafe(f)).expect_err("a broken invariant was accepted");
        panic.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn watermarks_are_raised_never_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        c.publish_tail(8192, 120);
        c.raise_durable(110);
        c.raise_durable(105);
        assert_eq!(c.durable(), 110, "a sync that finishes late does not lower durable");
        c.raise_visible_synced(110);
        c.raise_visible_synced(101);
        assert_eq!(c.visible(), 110);
        c.raise_visible_written(120);
        c.raise_visible_written(115);
        assert_eq!(c.visible(), 120);
        c.raise_first_offset(50);
        c.raise_first_offset(10);
        assert_eq!(c.first_offset(), 50, "a late retention pass does not lower first_offset");
    }

    #[test]
    fn visible_never_passes_the_published_tail() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        let message = refused(|| c.raise_visible_written(101));
        assert!(message.contains("past the next offset 100"), "{message}");
        assert_eq!(c.visible(), 100, "nothing was raised");
    }

    #[test]
    fn visible_never_passes_durable_where_readers_see_synced_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        c.publish_tail(8192, 120);
        let message = refused(|| c.raise_visible_synced(101));
        assert!(message.contains("past the durable watermark 100"), "{message}");
        assert_eq!(c.visible(), 100);
    }

    #[test]
    fn durable_never_passes_the_published_tail() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        let message = refused(|| c.raise_durable(101));
        assert!(message.contains("past the next offset 100"), "{message}");
        assert_eq!(c.durable(), 100);
    }

    #[test]
    fn the_tail_never_moves_back_nor_past_the_reserved_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        let message = refused(|| c.publish_tail(4096, 99));
        assert!(message.contains("tail moving back"), "{message}");
        let message = refused(|| c.publish_tail(MIB as usize + 8, 101));
        assert!(message.contains("blocks reserved up to"), "{message}");
        let message = refused(|| c.raise_tail_reserved(4096));
        assert!(message.contains("reserved watermark lowered"), "{message}");
        assert_eq!((c.tail_pos(), c.next_offset(), c.tail_reserved()), (4096, 100, MIB as usize));
    }

    #[test]
    fn a_roll_starts_the_next_segment_at_the_next_offset_with_at_most_one_pending() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path());
        let c = control.partition(0);
        let message = refused(|| c.start_segment(90, 0, MIB as usize));
        assert!(message.contains("starts at the next offset"), "{message}");
        c.publish_tail(8192, 150);
        c.start_segment(150, 0, MIB as usize);
        c.publish_tail(8192, 200);
        // Records 100.. of segment 0 were never synced: a second roll now
        // would leave two segments pending.
        let message = refused(|| c.start_segment(200, 150, MIB as usize));
        assert!(message.contains("not durable"), "{message}");
        c.raise_durable(150);
        c.start_segment(200, 150, MIB as usize);
        assert_eq!((c.tail_segment_base(), c.prev_segment_base(), c.tail_pos()), (200, 150, SEGMENT_HEADER_BYTES));
    }
}

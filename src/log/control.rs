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
//! `reservation.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::storage::lock_table::LockTable;
use crate::storage::mmap::{MappedFile, ReadOnlyMap};
use crate::storage::shm::{self, SHARED_MUTEX_BYTES, SharedMutex};
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

/// One partition's shared state.
pub(crate) struct PartitionControl<'a> {
    pub(crate) mutex: SharedMutex,
    pub(crate) next_offset: &'a AtomicU64,
    pub(crate) tail_segment_base: &'a AtomicU64,
    pub(crate) tail_pos: &'a AtomicU64,
    pub(crate) visible: &'a AtomicU64,
    pub(crate) durable: &'a AtomicU64,
    pub(crate) first_offset: &'a AtomicU64,
    pub(crate) prev_segment_base: &'a AtomicU64,
    pub(crate) tail_reserved: &'a AtomicU64,
}

impl PartitionControl<'_> {
    /// Publishes a tail found by recovery (the caller holds the mutex or is
    /// the only process with the queue open).
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
            c.durable.store(tail.next_offset, Ordering::Release);
            c.visible.store(tail.next_offset, Ordering::Release);
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

/// Opens the lock file that serialises opening the queue at `dir`.
pub(crate) fn lock_for_open(dir: &Path) -> Result<File> {
    storage::lock_exclusive(&dir.join(OPEN_LOCK_FILE))
}

/// True for the names of the control and open-lock files.
pub(crate) fn is_runtime_file(name: &str) -> bool {
    name == CONTROL_FILE || name == OPEN_LOCK_FILE
}

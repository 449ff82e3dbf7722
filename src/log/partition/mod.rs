//! A partition: one totally ordered log of records, numbered by dense `u64`
//! offsets from 0, stored as a sequence of segments.
//!
//! Appends from every thread of every process go through the partition's
//! robust append mutex in the control file; the tail (`next_offset`,
//! `tail_segment_base`, `tail_pos`) is published there after the frames are
//! written. Durability is a second step: `sync_to` makes every frame below a
//! target durable with one msync shared by all waiting threads (group
//! commit), then raises the shared `durable` (and, unless the queue is
//! `Buffered`, `visible`) watermark.
//!
//! **Invariant:** every segment but the last two is synced in full, and so is
//! the one before the last once `durable` reaches the last one's base. Under
//! `Sync` a roll syncs the old segment before it creates the next; under
//! `Buffered` and `Interval` it leaves it to the sealer thread (`sealer.rs`),
//! but first seals the segment before it if that is still pending. So
//! recovery only ever has to scan the last two segments, and a sync has to
//! cover the tail segment and, while it is pending, the one before it.
//!
//! The partition's work is split by concern, one file each:
//!
//! - `append`: writing records at the tail, and reserving disk space ahead
//!   of the writer.
//! - `sync`: group commit: making the tail durable and raising the shared
//!   watermarks.
//! - `roll`: starting a new segment when the tail is full, and sealing
//!   (syncing in full) the one left behind.
//! - `read`: cursors and validated spans of frames for readers.
//! - `retire`: what retention may remove, and removing it.
//! - `recover`: rebuilding the tail from the segments after a crash.
//!
//! This file holds the partition itself, the append mutex and the tail
//! segment it guards, the segment mappings, and the partition directory.

mod append;
mod read;
mod recover;
mod retire;
mod roll;
mod sync;

pub(crate) use read::{FrameRef, ReadCursor, Span};
pub(crate) use recover::{Crash, recover};

use std::cell::UnsafeCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::log::control::{ControlFile, PartitionControl, Tail};
use crate::log::prefault::Prefaulter;
use crate::log::record;
use crate::log::reservation::ReserveAhead;
use crate::log::salt::Salt;
use crate::log::sealer::Sealer;
use crate::log::segment::{self, Segment};
use crate::log::segment_cache::SegmentCache;
use crate::observe::Counters;
use crate::options::QueueConfig;
use crate::storage::{self, shm::Acquired, shm::MutexGuard};

use sync::SyncState;

/// One record to append.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: &'a [u8],
}

impl Record<'_> {
    /// Its key and payload bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.payload.len()
    }

    fn frame_bytes(&self) -> usize {
        record::frame_bytes(self.key.map_or(0, <[u8]>::len), self.payload.len())
    }
}

pub use crate::layout::partition_dir_name as dir_name;

/// A partition of an open queue.
pub(crate) struct Partition {
    /// This partition, for the sealer jobs a roll hands out.
    me: Weak<Partition>,
    pub(crate) id: u32,
    pub(crate) dir: PathBuf,
    config: QueueConfig,
    /// How far ahead of the writer segment space is reserved.
    reserve_ahead: ReserveAhead,
    control: Arc<ControlFile>,
    /// The segments this process has mapped; the ones it has passed are
    /// unmapped (see `segment_cache`).
    segments: Mutex<SegmentCache>,
    /// The segment this process last appended to, so the hot path does not
    /// look it up; checked against the shared tail under the append mutex,
    /// which also guards it (see [`Appending`]).
    tail_segment: TailCache,
    sync: Mutex<SyncState>,
    sync_done: Condvar,
    /// Wakes a sync's leader that holds it back for more callers
    /// (`sync::Gathering`).
    gathered: Condvar,
    stop: Arc<FailStop>,
    prefaulter: Prefaulter,
    sealer: Arc<Sealer>,
    /// Set by a roll in this process: retention has something to look at.
    rolled: AtomicBool,
    /// Async senders waiting for a sync (`asynchronous::durable`).
    #[cfg(feature = "tokio")]
    pub(crate) durable_waiters: crate::asynchronous::DurableWaiters,
    /// The queue's counters: syncs are counted here (`observe`).
    counters: Arc<Counters>,
}

impl Partition {
    #[expect(
        clippy::too_many_arguments,
        reason = "the queue-wide handles every partition shares, each its own concern"
    )]
    pub(crate) fn new(
        queue_dir: &Path,
        id: u32,
        config: QueueConfig,
        control: Arc<ControlFile>,
        stop: Arc<FailStop>,
        prefaulter: Prefaulter,
        sealer: Arc<Sealer>,
        counters: Arc<Counters>,
    ) -> Arc<Partition> {
        Arc::new_cyclic(|me| Partition {
            me: me.clone(),
            id,
            dir: queue_dir.join(dir_name(id)),
            config,
            reserve_ahead: ReserveAhead::new(config.segment_bytes),
            control,
            segments: Mutex::new(SegmentCache::default()),
            tail_segment: TailCache(UnsafeCell::new(None)),
            sync: Mutex::new(SyncState { in_progress: false, synced: None, gathering: Default::default() }),
            sync_done: Condvar::new(),
            gathered: Condvar::new(),
            stop,
            prefaulter,
            sealer,
            rolled: AtomicBool::new(false),
            #[cfg(feature = "tokio")]
            durable_waiters: crate::asynchronous::DurableWaiters::default(),
            counters,
        })
    }

    pub(crate) fn shared(&self) -> PartitionControl<'_> {
        self.control.partition(self.id)
    }

    /// The offset the next record will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.shared().next_offset()
    }

    /// Readers deliver offsets below this.
    pub(crate) fn visible(&self) -> u64 {
        self.shared().visible()
    }

    /// The earliest retained offset.
    pub(crate) fn first_offset(&self) -> u64 {
        self.shared().first_offset()
    }

    /// Takes the append mutex; if its last holder died holding it, first
    /// rebuilds the tail from the segment, as recovery does at open.
    fn lock_tail<'c>(&'c self, c: &'c PartitionControl<'_>) -> Result<Appending<'c>> {
        let (guard, acquired) = c.lock().map_err(|e| Error::io("lock append mutex", &self.dir, e))?;
        if acquired == Acquired::OwnerDied {
            // Rule 3 of the mmap contract: we hold the mutex, and recovery
            // only zeroes bytes beyond the frames it keeps, which include every
            // published frame.
            // The page cache holds every byte the dead holder wrote: no
            // evidence from outside the log is needed to vouch for it.
            let tail = recover(&self.dir, self.id, &self.config, Crash::ProcessDeath, None)?;
            let tail = Tail { first_offset: c.first_offset(), ..tail };
            c.set_tail(&tail);
            self.publish_durable(c, tail.next_offset);
            if self.config.durability.readers_see_unsynced() {
                c.raise_visible_written(tail.next_offset);
                self.control.notify();
            }
            guard.mark_consistent().map_err(|e| Error::io("repair append mutex", &self.dir, e))?;
        }
        // SAFETY: every access to the cache goes through an `Appending`,
        // made only here, right after this thread took this partition's
        // append mutex, and unlocking it when dropped. The mutex is not
        // recursive, so while it lives no other `Appending`, hence no other
        // reference to the cache, exists on any thread, this one included
        // (a second `lock_tail` blocks).
        let cache = unsafe { &mut *self.tail_segment.0.get() };
        Ok(Appending { cache, guard })
    }

    /// The tail segment starting at `base`, from the cache (refilled if it
    /// holds another one).
    fn cached_tail<'a>(&self, cache: &'a mut Option<Arc<Segment>>, base: u64) -> Result<&'a Arc<Segment>> {
        let seg = match cache.take() {
            Some(seg) if seg.base_offset == base => seg,
            stale => self.segment(base).inspect_err(|_| *cache = stale)?,
        };
        Ok(cache.insert(seg))
    }

    /// The segment starting at `base`: the mapping this process already
    /// has, or a new one if it has none (it never had one, or unmapped it
    /// after passing it).
    pub(crate) fn segment(&self, base: u64) -> Result<Arc<Segment>> {
        if let Some(seg) = self.segments.lock().get(base) {
            return Ok(seg);
        }
        // Mapped without the lock held; if another thread mapped the same
        // segment meanwhile, its mapping is kept and this one dropped.
        let seg = Arc::new(Segment::open(&self.dir, self.id, base, self.config.segment_bytes)?);
        Ok(self.segments.lock().insert(seg))
    }

    /// Base offsets of the segment files on disk, in order.
    pub(crate) fn segment_bases(&self) -> Result<Vec<u64>> {
        segment_bases(&self.dir)
    }
}

/// This process's cached tail segment: a cell that only the holder of the
/// partition's append mutex touches, through [`Appending`], so that an
/// append takes no lock but that mutex.
struct TailCache(UnsafeCell<Option<Arc<Segment>>>);

// SAFETY: the cell is only reached through `Partition::lock_tail`, while the
// calling thread holds the partition's append mutex, which excludes every
// other thread (see there).
unsafe impl Sync for TailCache {}

/// The append mutex, held, and the cached tail segment it guards.
struct Appending<'c> {
    cache: &'c mut Option<Arc<Segment>>,
    /// Unlocks the mutex when dropped; lent out as the proof that it is
    /// held (see [`roll::AppendMutex`]).
    guard: MutexGuard<'c>,
}

/// Base offsets of the segment files in a partition directory, in order.
pub(crate) fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for name in storage::list_dir(dir)? {
        match segment::parse_file_name(&name) {
            Some(base) => bases.push(base),
            None => return Err(Error::corrupt(dir.join(&name), 0, None, "unexpected file in a partition directory")),
        }
    }
    Ok(bases)
}

/// [`segment_bases`] of a partition of an existing queue, which has at
/// least one: a missing directory, or one without a segment file, is
/// damage.
pub(crate) fn existing_segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let bases = segment_bases(dir).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::corrupt(dir, 0, None, "partition directory is missing")
        }
        e => e,
    })?;
    if bases.is_empty() {
        return Err(Error::corrupt(dir, 0, None, "partition has no segment file"));
    }
    Ok(bases)
}

/// Creates partition `id`'s directory with an empty first segment (queue
/// creation, before the meta file is published). Tolerates the leftovers of
/// a creation that crashed.
pub(crate) fn create(queue_dir: &Path, id: u32, config: &QueueConfig) -> Result<()> {
    let dir = queue_dir.join(dir_name(id));
    storage::create_dir_durable(&dir)?;
    if segment_bases(&dir)?.is_empty() {
        let reserved = ReserveAhead::new(config.segment_bytes).at_creation();
        Segment::create(&dir, id, 0, config.segment_bytes, 0, reserved, Salt::UNSALTED)?;
    }
    Ok(())
}

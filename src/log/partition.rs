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

use std::cell::UnsafeCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::log::control::{ControlFile, PartitionControl, Tail};
use crate::log::prefault::Prefaulter;
use crate::log::record::{self, Decoded, FrameMeta, KEY_BYTES_MAX};
use crate::log::recovery::{self, Evidence, LastFile, Sealed};
use crate::log::reservation::ReserveAhead;
use crate::log::sealer::{SealJob, Sealer};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, Segment};
use crate::log::segment_cache::SegmentCache;
use crate::options::{Durability, QueueConfig};
use crate::storage::{self, shm::Acquired, shm::MutexGuard};

/// One record to append.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: &'a [u8],
}

impl Record<'_> {
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
    stop: Arc<FailStop>,
    prefaulter: Prefaulter,
    sealer: Arc<Sealer>,
    /// Set by a roll in this process: retention has something to look at.
    rolled: AtomicBool,
}

impl Partition {
    pub(crate) fn new(
        queue_dir: &Path,
        id: u32,
        config: QueueConfig,
        control: Arc<ControlFile>,
        stop: Arc<FailStop>,
        prefaulter: Prefaulter,
        sealer: Arc<Sealer>,
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
            sync: Mutex::new(SyncState { in_progress: false, synced: None }),
            sync_done: Condvar::new(),
            stop,
            prefaulter,
            sealer,
            rolled: AtomicBool::new(false),
        })
    }

    pub(crate) fn shared(&self) -> PartitionControl<'_> {
        self.control.partition(self.id)
    }

    /// Appends `records` contiguously and returns the offset of the first.
    /// The records are written and published, not yet durable: see
    /// [`Partition::sync_to`]. A batch that fits one segment goes into one
    /// segment and is atomic: readers see it whole or not at all, and if the
    /// writer dies half way, recovery removes the part it wrote (frames carry
    /// a "batch continues" flag). A batch larger than a segment is split at
    /// segment boundaries, and only its last part is atomic.
    ///
    /// A roll or a reservation that finds the disk full calls `reclaim`
    /// (retention: it returns how many segments it removed) and, if it
    /// removed any, tries once more; otherwise the error is the caller's.
    pub(crate) fn append(&self, records: &[Record<'_>], reclaim: &dyn Fn() -> usize) -> Result<u64> {
        self.stop.check()?;
        let max = self.config.record_bytes_max;
        for r in records {
            let key_len = r.key.map_or(0, <[u8]>::len);
            if key_len > KEY_BYTES_MAX {
                return Err(Error::KeyTooLarge { bytes: key_len, max: KEY_BYTES_MAX });
            }
            if key_len + r.payload.len() > max as usize {
                return Err(Error::RecordTooLarge { bytes: key_len + r.payload.len(), max });
            }
        }
        let timestamp_ms = storage::coarse_now_ms();
        let c = self.shared();
        let tail = self.lock_tail(&c)?;
        let first = c.next_offset.load(Ordering::Relaxed);
        if u64::MAX - first < records.len() as u64 {
            // Only damage or a hostile file puts a log near 2^64 records;
            // offsets must never wrap around to ones in use.
            return Err(Error::corrupt(&self.dir, 0, Some(first), "the partition's offsets are used up"));
        }
        let mut next = first;
        let mut pos = c.tail_pos.load(Ordering::Relaxed) as usize;
        let tail_base = c.tail_segment_base.load(Ordering::Relaxed);
        let new_to_us = tail.cache.as_ref().is_none_or(|seg| seg.base_offset != tail_base);
        let mut seg = self.cached_tail(tail.cache, tail_base)?;
        if new_to_us {
            self.prefaulter.starting_at(seg, pos, c.tail_reserved.load(Ordering::Relaxed) as usize);
        }
        let total: usize = records.iter().map(Record::frame_bytes).sum();
        if total > seg.len() - pos && total <= seg.len() - SEGMENT_HEADER_BYTES {
            *tail.cache = Some(self.roll(&c, seg, pos, next, reclaim)?);
            seg = tail.cache.as_ref().expect("just rolled");
            pos = SEGMENT_HEADER_BYTES;
        }
        // Space for every frame that goes into this segment, before the
        // first store: a full disk fails the send here, with nothing
        // written.
        self.reserve_for(&c, seg, pos + total.min(seg.len() - pos), reclaim)?;
        let durable = c.durable.load(Ordering::Acquire);
        let start_pos = pos;
        for (i, r) in records.iter().enumerate() {
            let len = r.frame_bytes();
            if len > seg.len() - pos {
                c.tail_pos.store(pos as u64, Ordering::Relaxed);
                c.next_offset.store(next, Ordering::Release);
                *tail.cache = Some(self.roll(&c, seg, pos, next, reclaim)?);
                seg = tail.cache.as_ref().expect("just rolled");
                pos = SEGMENT_HEADER_BYTES;
                // A batch larger than a segment: the part written so far is
                // published, the rest needs space in the new segment.
                let rest: usize = records[i..].iter().map(Record::frame_bytes).sum();
                self.reserve_for(&c, seg, pos + rest.min(seg.len() - pos), reclaim)?;
            }
            let durable_lag = u32::try_from(next - durable.min(next)).unwrap_or(u32::MAX);
            let batch_continues = i + 1 < records.len();
            let meta = FrameMeta { offset: next, timestamp_ms, durable_lag, batch_continues };
            let header = record::encode_header(meta, r.key, r.payload);
            let key = r.key.unwrap_or(&[]);
            let pad = record::padding(key.len(), r.payload.len());
            // SAFETY: we hold the append mutex (`tail`) and `pos` is the
            // published tail or beyond it (mmap contract rule 2); the frame
            // fits the segment and its space is reserved (checked above,
            // rule 1).
            let written = unsafe { seg.write_frame(pos, [&header, key, r.payload, pad]) };
            assert_eq!(written, len, "frame of {len} bytes written as {written}");
            pos += len;
            next += 1;
        }
        c.tail_pos.store(pos as u64, Ordering::Relaxed);
        c.next_offset.store(next, Ordering::Release);
        self.sealer.after_append(seg, start_pos, pos);
        if self.config.durability.readers_see_unsynced() {
            c.visible.store(next, Ordering::SeqCst);
            self.control.notify();
        }
        Ok(first)
    }

    /// Blocks until every record below `target` is durable. One caller
    /// syncs while the others wait for it (group commit); a sync covers
    /// everything published when it starts, from any process.
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        let c = self.shared();
        loop {
            self.stop.check()?;
            if c.durable.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            let mut state = self.sync.lock();
            if state.in_progress {
                self.sync_done.wait(&mut state);
                continue;
            }
            state.in_progress = true;
            let synced = state.synced;
            drop(state);
            let result = self.sync_tail(&c, synced);
            let mut state = self.sync.lock();
            state.in_progress = false;
            if let Ok(now_synced) = result {
                state.synced = Some(now_synced);
            }
            drop(state);
            self.sync_done.notify_all();
            result?;
        }
    }

    /// The offset the next record will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.shared().next_offset.load(Ordering::Acquire)
    }

    /// Readers deliver offsets below this.
    pub(crate) fn visible(&self) -> u64 {
        self.shared().visible.load(Ordering::SeqCst)
    }

    /// The earliest retained offset.
    pub(crate) fn first_offset(&self) -> u64 {
        self.shared().first_offset.load(Ordering::Acquire)
    }

    /// Syncs the tail segment up to the published tail, starting where this
    /// process's previous sync of the same segment ended (`synced`: segment
    /// base and byte position). Everything before that was covered by that
    /// sync, and everything after it is what may still be dirty. Returns the
    /// new `synced`. Once the tail is past the first page, the header's page
    /// (with `synced_end`) is left to the next roll, the close, or the
    /// kernel's writeback: syncing it every time would write two pages per
    /// sync, which costs a sixth of the single-message rate on this disk.
    fn sync_tail(&self, c: &PartitionControl<'_>, synced: Option<(u64, usize)>) -> Result<(u64, usize)> {
        let (seg, pos, next, prev_base) = {
            let tail = self.lock_tail(c)?;
            let seg = self.cached_tail(tail.cache, c.tail_segment_base.load(Ordering::Relaxed))?.clone();
            let prev_base = c.prev_segment_base.load(Ordering::Relaxed);
            (seg, c.tail_pos.load(Ordering::Relaxed) as usize, c.next_offset.load(Ordering::Relaxed), prev_base)
        };
        if c.durable.load(Ordering::Acquire) < seg.base_offset {
            // The segment before the tail still waits for a sealer (ours, or
            // that of a process that died): its records were sent before any
            // in the tail. Its last frame's position is not known here, so the
            // whole file is synced; pages past it are clean or zeros.
            let prev = self.segment(prev_base)?;
            self.seal(c, &prev, prev.len(), seg.base_offset, false)?;
        }
        let from = match synced {
            Some((base, synced_pos)) if base == seg.base_offset => synced_pos.min(pos),
            _ => SEGMENT_HEADER_BYTES,
        };
        seg.sync_tail(from, pos).map_err(|e| self.stop.stop(e))?;
        self.publish_durable(c, next);
        // Record the proof in the segment header, under the mutex that
        // serialises its writers; it reaches the disk with the next sync.
        let _tail = self.lock_tail(c)?;
        if c.tail_segment_base.load(Ordering::Relaxed) == seg.base_offset {
            // SAFETY: we hold the append mutex, and the sync above covering
            // every record below `durable` has returned.
            unsafe { seg.set_synced_end(c.durable.load(Ordering::Acquire)) };
        }
        Ok((seg.base_offset, pos))
    }

    /// On close: if this process synced anything, makes the tail segment's
    /// header (its `synced_end`) durable, so a producer that went quiet
    /// leaves its last batch provable.
    pub(crate) fn close(&self) -> Result<()> {
        if self.sync.lock().synced.is_none() || self.stop.check().is_err() {
            return Ok(());
        }
        let c = self.shared();
        let seg = {
            let tail = self.lock_tail(&c)?;
            self.cached_tail(tail.cache, c.tail_segment_base.load(Ordering::Relaxed))?.clone()
        };
        seg.sync(0, SEGMENT_HEADER_BYTES)
    }

    fn publish_durable(&self, c: &PartitionControl<'_>, next: u64) {
        c.durable.fetch_max(next, Ordering::SeqCst);
        if !self.config.durability.readers_see_unsynced() {
            c.visible.fetch_max(next, Ordering::SeqCst);
            self.control.notify();
        }
    }

    /// Makes sure the tail segment `seg` has blocks for its bytes below
    /// `end` before the caller stores frames there, and reserves ahead of
    /// the writer as `reservation.rs` says. One comparison when the space is
    /// there already; else an `fallocate` ([`ReserveAhead::reserve`]: the
    /// chunks the frames need, and the lead when the disk has room for it),
    /// and the prefault thread is asked to fault in what it reserved. When
    /// not even the frames' chunks fit, the send fails with ENOSPC
    /// ([`Error::is_no_space`]), with nothing written. That is not a failed
    /// sync: the handle goes on, and a later send succeeds once there is
    /// room. As a roll does, a reservation that finds the disk full first
    /// calls `reclaim` (segments every group has passed may be what fills
    /// it) and, if that removed any, tries once more. Called with the append
    /// mutex held, so the watermark it raises is the one every process's
    /// writer checks.
    fn reserve_for(
        &self,
        c: &PartitionControl<'_>,
        seg: &Arc<Segment>,
        end: usize,
        reclaim: &dyn Fn() -> usize,
    ) -> Result<()> {
        let reserved = c.tail_reserved.load(Ordering::Relaxed) as usize;
        let wanted = self.reserve_ahead.for_writer_at(end);
        if wanted <= reserved {
            return Ok(());
        }
        let reserve = || {
            self.reserve_ahead.reserve(seg, reserved, end).inspect_err(|e| {
                if e.is_no_space() {
                    // Not even the frames' chunks fitted: give back what
                    // the failed call kept of them (nothing is stored past
                    // the watermark).
                    seg.release(reserved, self.reserve_ahead.needed_for(end));
                }
            })
        };
        let now = match reserve() {
            Err(e) if e.is_no_space() && reclaim() > 0 => reserve()?,
            reserved_now => reserved_now?,
        };
        if now == reserved {
            return Ok(());
        }
        c.tail_reserved.store(now as u64, Ordering::Relaxed);
        self.prefaulter.reserved(seg, reserved, now);
        Ok(())
    }

    /// Seals the full segment `old` and starts a new one at offset `next`.
    /// Called with the append mutex held and the tail published up to
    /// `pos`/`next`.
    ///
    /// Under `Sync` the old segment is synced here, before the new one
    /// exists, as it always was: every send waits for a sync anyway. Under
    /// `Buffered` and `Interval` nothing was promised for its records before
    /// a flush, so the sealer thread syncs it while appends go on; the new
    /// segment's header then claims only what was durable at the roll, and
    /// recovery checks the old one for a torn tail until its own header
    /// proves it synced. At most one segment is ever left pending: if the
    /// one before `old` still is (the sealer fell a whole segment behind),
    /// it is sealed here first.
    ///
    /// If the disk is too full for the new segment, `reclaim` runs (see
    /// [`Partition::append`]), under the append mutex: other appenders wait
    /// for it as for the roll. Nothing above has to be undone for the second
    /// attempt, which finds the same state as the first.
    fn roll(
        &self,
        c: &PartitionControl<'_>,
        old: &Arc<Segment>,
        pos: usize,
        next: u64,
        reclaim: &dyn Fn() -> usize,
    ) -> Result<Arc<Segment>> {
        if c.durable.load(Ordering::Acquire) < old.base_offset {
            let prev = self.segment(c.prev_segment_base.load(Ordering::Relaxed))?;
            self.seal(c, &prev, prev.len(), old.base_offset, true)?;
        }
        if self.config.durability == Durability::Sync {
            old.sync(SEGMENT_HEADER_BYTES, pos).map_err(|e| self.stop.stop(e))?;
            self.publish_durable(c, next);
        }
        let durable = c.durable.load(Ordering::Acquire);
        let reserved = self.reserve_ahead.after_roll();
        let create = || Segment::create(&self.dir, self.id, next, self.config.segment_bytes, durable, reserved);
        // Segments every group has passed may be what fills the disk.
        let seg = match create() {
            Err(e) if e.is_no_space() && reclaim() > 0 => create()?,
            created => created?,
        };
        let seg = Arc::new(seg);
        // The first chunk now, on this thread: the writer is about to need
        // it. The rest of the reserved lead on the prefault thread.
        let first = self.reserve_ahead.at_creation();
        seg.prefault(0, first);
        self.prefaulter.reserved(&seg, first, reserved);
        let seg = self.segments.lock().insert(seg);
        c.prev_segment_base.store(old.base_offset, Ordering::Relaxed);
        c.tail_segment_base.store(next, Ordering::Relaxed);
        c.tail_pos.store(SEGMENT_HEADER_BYTES as u64, Ordering::Relaxed);
        c.tail_reserved.store(reserved as u64, Ordering::Relaxed);
        self.rolled.store(true, Ordering::Relaxed);
        if durable < next {
            let partition = self.me.upgrade().expect("a partition that appends is alive");
            let job = SealJob { partition, segment_base: old.base_offset, end_pos: pos, next_base: next };
            if !self.sealer.submit(job) {
                self.seal(c, old, pos, next, true)?;
            }
        }
        Ok(seg)
    }

    /// Makes the sealed segment `seg` durable: syncs its bytes up to `end`
    /// (past its last frame), records in its header that every record below
    /// `next_base` (where the next segment begins) is synced, syncs that
    /// proof, and only then raises `durable` to `next_base`, so no record of
    /// it is acknowledged before recovery can tell that it was synced. Every
    /// record before `seg` must already be durable. `locked`: the caller
    /// holds the append mutex. A failure stops the handle (fail-stop).
    fn seal(&self, c: &PartitionControl<'_>, seg: &Segment, end: usize, next_base: u64, locked: bool) -> Result<()> {
        self.stop.check()?;
        let durable = c.durable.load(Ordering::Acquire);
        if durable >= next_base {
            return Ok(());
        }
        assert!(
            durable >= seg.base_offset,
            "partition {}: sealing segment {} while records from {durable} before it are not durable",
            self.id,
            seg.base_offset
        );
        let stop = |e| self.stop.stop(e);
        seg.sync_sealed(end).map_err(stop)?;
        let guard = if locked { None } else { Some(self.lock_tail(c).map_err(stop)?) };
        // SAFETY: we hold the append mutex (the caller's, or `guard`); the
        // sync covering every record of `seg` returned, and every record
        // before it was durable.
        unsafe { seg.set_synced_end(next_base) };
        drop(guard);
        seg.sync(0, SEGMENT_HEADER_BYTES).map_err(stop)?;
        self.publish_durable(c, next_base);
        Ok(())
    }

    /// The sealer thread's half of a roll (see [`Partition::roll`]): seals
    /// the segment starting at `base` unless a flush or a later roll has
    /// already. The job names the segment instead of holding its mapping, so
    /// a job the sealer reaches late keeps no segment mapped that the
    /// partition's cache has let go (see `segment_cache`). A failure stops
    /// the handle: the next send or flush reports it.
    pub(crate) fn finish_seal(&self, base: u64, end: usize, next_base: u64) {
        let c = self.shared();
        if c.durable.load(Ordering::Acquire) >= next_base {
            return;
        }
        let sealed = self.segment(base).and_then(|seg| self.seal(&c, &seg, end, next_base, false));
        // Sealed by another thread meanwhile (and maybe removed by retention
        // since, so it could not be mapped): nothing failed.
        if let Err(e) = sealed
            && c.durable.load(Ordering::Acquire) < next_base
        {
            self.stop.stop(e);
        }
    }

    /// True once after each roll by this process.
    pub(crate) fn take_rolled(&self) -> bool {
        self.rolled.load(Ordering::Relaxed) && self.rolled.swap(false, Ordering::Relaxed)
    }

    /// The segments whose records all lie below `floor` (those before the
    /// segment holding it), except the last two, which stay whatever was
    /// processed (see `retention`); and the base of the first segment kept.
    /// Every segment before the last two is synced in full (`durable` is
    /// at least `prev_segment_base`), so none holds a record a flush may
    /// still have to sync.
    pub(crate) fn passed_segments(&self, floor: u64) -> Result<(Vec<u64>, u64)> {
        let floor = floor.min(self.shared().prev_segment_base.load(Ordering::Acquire));
        let mut bases = self.segment_bases()?;
        let keep_from = bases.iter().rposition(|&b| b <= floor).unwrap_or(0);
        let first_kept = bases.get(keep_from).copied().unwrap_or(floor);
        bases.truncate(keep_from);
        Ok((bases, first_kept))
    }

    /// Raises the earliest retained offset to `first` (never lowers it):
    /// readers no longer look below it.
    pub(crate) fn raise_first_offset(&self, first: u64) {
        self.shared().first_offset.fetch_max(first, Ordering::SeqCst);
    }

    /// Removes the segment files starting at `bases`, which lie below
    /// `first_offset`, and makes their removal durable. A process that still
    /// maps one keeps its pages (mmap contract rule 1); the disk space comes
    /// back once no process maps it.
    pub(crate) fn remove_segments(&self, bases: &[u64]) -> Result<()> {
        for &base in bases {
            assert!(
                base < self.first_offset(),
                "removing segment {base} at or past first offset {}",
                self.first_offset()
            );
            self.segments.lock().remove(base);
            storage::remove_file(&self.dir.join(segment::file_name(base)))?;
        }
        storage::sync_dir(&self.dir)
    }

    /// Takes the append mutex; if its last holder died holding it, first
    /// rebuilds the tail from the segment, as recovery does at open.
    fn lock_tail<'c>(&'c self, c: &'c PartitionControl<'_>) -> Result<Appending<'c>> {
        let (guard, acquired) = c.mutex.lock().map_err(|e| Error::io("lock append mutex", &self.dir, e))?;
        if acquired == Acquired::OwnerDied {
            // Rule 3 of the mmap contract: we hold the mutex, and recovery
            // only zeroes bytes beyond the frames it keeps, which include every
            // published frame.
            // The page cache holds every byte the dead holder wrote: no
            // evidence from outside the log is needed to vouch for it.
            let tail = recover(&self.dir, self.id, &self.config, Crash::ProcessDeath, None)?;
            let tail = Tail { first_offset: c.first_offset.load(Ordering::Relaxed), ..tail };
            c.set_tail(&tail);
            self.publish_durable(c, tail.next_offset);
            if self.config.durability.readers_see_unsynced() {
                c.visible.fetch_max(tail.next_offset, Ordering::SeqCst);
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
        Ok(Appending { cache, _guard: guard })
    }

    /// The tail segment starting at `base`, from the cache (refilled if it
    /// holds another one).
    fn cached_tail<'a>(&self, cache: &'a mut Option<Arc<Segment>>, base: u64) -> Result<&'a Arc<Segment>> {
        if cache.as_ref().is_none_or(|seg| seg.base_offset != base) {
            *cache = Some(self.segment(base)?);
        }
        Ok(cache.as_ref().expect("filled above"))
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

    /// A cursor positioned at `offset`, which must be retained and at most
    /// `next_offset`. Hops over the records before it by their headers
    /// alone: a group does not need records it already processed to be
    /// intact, so damage there does not stop it (a damaged header is stepped
    /// over by finding the next valid frame, as recovery does).
    pub(crate) fn cursor_at(&self, offset: u64) -> Result<ReadCursor> {
        let bases = self.segment_bases()?;
        let Some(&base) = bases.iter().rev().find(|&&b| b <= offset) else {
            return Err(Error::corrupt(&self.dir, 0, Some(offset), "no segment holds this offset"));
        };
        let segment = self.segment(base)?;
        let max = self.config.record_bytes_max;
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut at = base;
        while at < offset {
            // SAFETY: `at < offset <= next_offset`: the frame is published.
            match unsafe { segment.header_at(pos, max) } {
                Ok(Some((found, len))) if found == at => {
                    pos += len;
                    at += 1;
                }
                _ => {
                    (pos, at) = resync(&segment, pos, at, offset, max).ok_or_else(|| {
                        Error::corrupt(
                            &segment.path,
                            pos as u64,
                            Some(at),
                            format!("damaged record, and no valid record up to offset {offset} follows it"),
                        )
                    })?;
                }
            }
        }
        Ok(ReadCursor { next_offset: offset, segment, pos })
    }

    /// Validates up to `max` frames from `cursor` that are below `visible`,
    /// within one segment, without moving the cursor (the caller commits the
    /// span). Moves the cursor to the next segment when the current one is
    /// used up. Returns an empty span when nothing is visible. The first
    /// frame that fails validation is an error; frames before it are
    /// returned first.
    pub(crate) fn read_span(&self, cursor: &mut ReadCursor, visible: u64, max: usize) -> Result<Span> {
        let record_bytes_max = self.config.record_bytes_max;
        let mut frames = Vec::with_capacity(max.min(visible.saturating_sub(cursor.next_offset) as usize));
        let mut pos = cursor.pos;
        let mut offset = cursor.next_offset;
        while frames.len() < max && offset < visible {
            let seg = &cursor.segment;
            // SAFETY: `offset < visible`: the frame holding `offset` is
            // published (mmap contract rule 2).
            match unsafe { seg.frame_at(pos, record_bytes_max) } {
                Decoded::Frame(f) if f.meta.offset == offset => {
                    let payload_at = pos + record::FRAME_HEADER_BYTES + f.key.map_or(0, <[u8]>::len);
                    frames.push(FrameRef {
                        offset,
                        end_pos: pos + f.len,
                        timestamp_ms: f.meta.timestamp_ms,
                        key: f.key.map(|k| (pos + record::FRAME_HEADER_BYTES, k.len())),
                        payload: (payload_at, f.payload.len()),
                    });
                    pos += f.len;
                    offset += 1;
                }
                Decoded::Zero if frames.is_empty() && pos > SEGMENT_HEADER_BYTES => {
                    // This segment is used up; the record lives in the next.
                    cursor.segment = self.next_segment(seg, pos, offset)?;
                    cursor.pos = SEGMENT_HEADER_BYTES;
                    pos = SEGMENT_HEADER_BYTES;
                }
                Decoded::Zero if !frames.is_empty() => break,
                found if !frames.is_empty() => {
                    // Deliver the good frames; the next call reports this one.
                    let _ = found;
                    break;
                }
                Decoded::Frame(f) => {
                    return Err(Error::corrupt(
                        &seg.path,
                        pos as u64,
                        Some(offset),
                        format!("frame carries offset {}", f.meta.offset),
                    ));
                }
                Decoded::Zero => {
                    return Err(Error::corrupt(
                        &seg.path,
                        pos as u64,
                        Some(offset),
                        "zeros where a visible record must be",
                    ));
                }
                Decoded::Invalid(i) => return Err(Error::corrupt(&seg.path, pos as u64, Some(offset), i.to_string())),
            }
        }
        Ok(Span { segment: cursor.segment.clone(), frames, end_pos: pos, end_offset: offset })
    }

    /// The segment that starts at `offset`, after `seg` ended at `pos`. If
    /// there is none, the zeros at `pos` are where record `offset` should be.
    fn next_segment(&self, seg: &Segment, pos: usize, offset: u64) -> Result<Arc<Segment>> {
        self.segment(offset).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::corrupt(
                &seg.path,
                pos as u64,
                Some(offset),
                format!(
                    "zeros where record {offset} must be, and no segment file {} follows",
                    segment::file_name(offset)
                ),
            ),
            e => e,
        })
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
    _guard: MutexGuard<'c>,
}

/// This process's group-commit state for one partition.
struct SyncState {
    /// A sync is running; others wait for it.
    in_progress: bool,
    /// Where this process's last sync ended: segment base, byte position.
    synced: Option<(u64, usize)>,
}

/// Where a reader is in a partition.
pub(crate) struct ReadCursor {
    pub(crate) next_offset: u64,
    segment: Arc<Segment>,
    pos: usize,
}

impl ReadCursor {
    /// Moves the cursor past the first `count` frames of `span`, which the
    /// consumer committed.
    pub(crate) fn advance(&mut self, span: &Span, count: usize) {
        assert!(count <= span.frames.len(), "advancing {count} frames through a span of {}", span.frames.len());
        if count == 0 {
            return;
        }
        let last = &span.frames[count - 1];
        self.segment = span.segment.clone();
        self.pos = last.end_pos;
        self.next_offset = last.offset + 1;
    }
}

/// Validated frames of one segment, ready to be handed out as messages.
pub(crate) struct Span {
    segment: Arc<Segment>,
    pub(crate) frames: Vec<FrameRef>,
    end_pos: usize,
    pub(crate) end_offset: u64,
}

/// Where one validated frame's parts are in its segment.
pub(crate) struct FrameRef {
    pub(crate) offset: u64,
    end_pos: usize,
    pub(crate) timestamp_ms: u64,
    pub(crate) key: Option<(usize, usize)>,
    pub(crate) payload: (usize, usize),
}

impl Span {
    /// The segment file this span's frames are in, for errors that name the
    /// place of a frame: a part's position is its byte position in it.
    pub(crate) fn file(&self) -> &Path {
        &self.segment.path
    }

    /// Borrows the bytes of a part of one of this span's frames.
    pub(crate) fn bytes(&self, (pos, len): (usize, usize)) -> &[u8] {
        assert!(pos + len <= self.end_pos, "part {pos}+{len} outside span ending at {}", self.end_pos);
        // SAFETY: the span's frames were validated below the visible
        // watermark, so they are published and never written again (mmap
        // contract rule 2); the span holds the segment's mapping alive.
        unsafe { self.segment.published(pos, pos + len) }
    }
}

/// Finds, after a damaged frame at `pos` where offset `at` was expected, the
/// next frame that passes its checksum with an offset in `at + 1..=target`.
fn resync(segment: &Segment, pos: usize, at: u64, target: u64, record_bytes_max: u32) -> Option<(usize, u64)> {
    let mut probe = pos + record::FRAME_ALIGN;
    while probe + record::FRAME_HEADER_BYTES <= segment.len() {
        // SAFETY: touches unpublished bytes only if published frames before
        // `target` are damaged; bounded by the mapping, torn bytes fail the
        // checksum (mmap contract rule 5 covers damage made by others).
        if let Decoded::Frame(f) = unsafe { segment.frame_at(probe, record_bytes_max) }
            && f.meta.offset > at
            && f.meta.offset <= target
        {
            return Some((probe, f.meta.offset));
        }
        probe += record::FRAME_ALIGN;
    }
    None
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
        Segment::create(&dir, id, 0, config.segment_bytes, 0, reserved)?;
    }
    Ok(())
}

/// What recovery must assume happened before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// The opener is alone with the queue: the machine may have lost power,
    /// so any byte that was not synced may be lost or torn.
    PowerLoss,
    /// The holder of the append mutex died while other processes use the
    /// queue: the page cache still holds every byte it wrote, and only its
    /// last append may be unfinished.
    ProcessDeath,
}

/// Rebuilds the tail of partition `id` from its last two segments,
/// repairing a torn tail (see `recovery`), and makes everything it keeps
/// durable. The caller is the only process with the queue open
/// ([`Crash::PowerLoss`]), or holds the append mutex after its previous
/// holder died ([`Crash::ProcessDeath`]). `evidence` (files outside the log,
/// see `group::evidence`) proves records that the log must still hold; it
/// changes no verdict, it refuses a log that ends before it. Every verdict
/// is reached before any byte of the log is zeroed, cut or rewritten, so a
/// refused open leaves the log as it was (a last segment file cut short and
/// accepted by row 7 has been grown back to its size with zeros, which is
/// what it means anyway).
pub(crate) fn recover(
    dir: &Path,
    id: u32,
    config: &QueueConfig,
    crash: Crash,
    evidence: Option<&Evidence>,
) -> Result<Tail> {
    let bases = existing_segment_bases(dir)?;
    let (first, last) = (bases[0], bases[bases.len() - 1]);
    let reserve_ahead = ReserveAhead::new(config.segment_bytes);
    // Judged as found, before it is grown back or its header rewritten
    // (recovery rows 5 to 7 in docs/FORMAT.md).
    let (seg, found) =
        Segment::open_for_recovery(dir, last, config.segment_bytes, reserve_ahead.at_creation(), |path, found| {
            recovery::check_last_file(found, path, id, last, config.segment_bytes, evidence)
        })?;
    let prev_base = bases.len().checked_sub(2).map_or(last, |i| bases[i]);
    let sealed = if prev_base != last { judge_sealed(dir, id, config, crash, prev_base, &seg)? } else { None };
    if let Some((prev, Sealed::Cut(cut))) = sealed {
        recovery::check_end(cut.next_offset, evidence, &prev.path, cut.tail_pos)?;
        let reserved = cut_sealed(dir, config, &prev, &cut, &seg)?;
        return Ok(Tail {
            first_offset: first,
            next_offset: cut.next_offset,
            segment_base: prev_base,
            pos: cut.tail_pos as u64,
            prev_segment_base: bases.len().checked_sub(3).map_or(prev_base, |i| bases[i]),
            reserved: reserved as u64,
        });
    }
    // SAFETY: recovery's caller is alone or holds the append mutex (see
    // above), so nothing writes this segment while we read it.
    let whole = unsafe { seg.published(0, seg.len()) };
    // A lost or damaged `synced_end` proves nothing: fall back to the base.
    let synced_end = match found {
        LastFile::Whole => segment::decode_synced_end(whole).unwrap_or(last),
        LastFile::HeaderLost | LastFile::NeverWritten => last,
    };
    let scan = recovery::scan_known_zeros(whole, last, config.record_bytes_max, synced_end, seg.data_end());
    recovery::check_end(scan.next_offset, evidence, &seg.path, scan.tail_pos)?;
    if let Some((prev, _)) = sealed {
        keep_sealed(&prev, last)?;
    }
    // Blocks for everything recovery keeps or zeroes, before any store, and
    // the writer's lead after it if the disk has room: a power cut may have
    // kept a segment's bytes but not the reservation of the blocks around
    // them. Reserving again what has blocks takes no space, so a queue on a
    // full disk still opens, to be read and to free space by retention.
    let stored_end = scan.torn.map_or(scan.tail_pos, |torn| torn.to.max(scan.tail_pos));
    let reserved = reserve_ahead.reserve(&seg, 0, stored_end)?;
    if found != LastFile::Whole {
        // The rewritten header claims every record before this segment
        // synced, which `keep_sealed` (or an earlier proof) made true.
        // SAFETY: as above; no reader can reach a segment without a header.
        // The header's chunk has blocks (`open_for_recovery` reserved it).
        unsafe { seg.rewrite_header(id, config.segment_bytes) };
        seg.sync(0, SEGMENT_HEADER_BYTES)?;
    }
    if let Some(torn) = scan.torn {
        // SAFETY: as above; the torn bytes lie beyond every frame we keep,
        // and have blocks (reserved above: mmap contract rule 1).
        unsafe { seg.zero(torn.from, torn.to) };
        seg.sync(torn.from, torn.to)?;
    }
    seg.sync(SEGMENT_HEADER_BYTES, scan.tail_pos)?;
    Ok(Tail {
        first_offset: first,
        next_offset: scan.next_offset,
        segment_base: last,
        pos: scan.tail_pos as u64,
        prev_segment_base: prev_base,
        reserved: reserved as u64,
    })
}

/// Judges the segment before the last (`prev_base`), which a roll under
/// `Buffered` or `Interval` may have left unsynced when the crash came (see
/// `recovery::check_sealed`): `None` when a proof says it was synced, else
/// the segment and whether to keep it ([`keep_sealed`]) or cut the log
/// inside it ([`cut_sealed`]). Changes nothing. After a process death
/// nothing is lost from the page cache, so the segment is not walked, only
/// kept.
fn judge_sealed(
    dir: &Path,
    id: u32,
    config: &QueueConfig,
    crash: Crash,
    prev_base: u64,
    last: &Segment,
) -> Result<Option<(Segment, Sealed)>> {
    // SAFETY: as in `recover`: nothing writes these segments meanwhile.
    let last_bytes = unsafe { last.published(0, last.len()) };
    if segment::decode_synced_end(last_bytes).is_some_and(|end| end >= last.base_offset) {
        return Ok(None);
    }
    let prev = Segment::open(dir, id, prev_base, config.segment_bytes)?;
    // SAFETY: as above.
    let prev_bytes = unsafe { prev.published(0, prev.len()) };
    let (max, base) = (config.record_bytes_max, last.base_offset);
    let verdict = match crash {
        Crash::PowerLoss => recovery::check_sealed(prev_bytes, prev_base, last_bytes, base, max),
        Crash::ProcessDeath if recovery::proven_sealed(prev_bytes, last_bytes, base) => Sealed::Proven,
        Crash::ProcessDeath => Sealed::Kept,
    };
    Ok(match verdict {
        Sealed::Proven => None,
        verdict => Some((prev, verdict)),
    })
}

/// Keeps the segment before the last whole: syncs it in full, then records
/// in its header that every record before the last segment (starting at
/// `last_base`) is synced, and syncs that proof.
fn keep_sealed(prev: &Segment, last_base: u64) -> Result<()> {
    prev.sync(0, prev.len())?;
    // SAFETY: as in `recover`; every record of `prev` was just synced, and
    // every segment before it was synced before it was sealed.
    unsafe { prev.set_synced_end(last_base) };
    prev.sync(0, SEGMENT_HEADER_BYTES)
}

/// Cuts the log inside the segment before the last, where `cut` ends it:
/// reserves blocks for what it keeps or zeroes and the writer's lead (the
/// log goes on in this segment), zeroes its torn bytes, syncs what it
/// keeps, records the new end in its header, and removes the last segment,
/// whose records follow the hole. Returns how much of `prev`, now the
/// tail, is reserved.
fn cut_sealed(dir: &Path, config: &QueueConfig, prev: &Segment, cut: &recovery::Scan, last: &Segment) -> Result<usize> {
    let end = cut.torn.map_or(cut.tail_pos, |torn| torn.to.max(cut.tail_pos));
    let reserved = ReserveAhead::new(config.segment_bytes).reserve(prev, 0, end)?;
    if let Some(torn) = cut.torn {
        // SAFETY: as in `recover`; the torn bytes lie beyond every frame we
        // keep, and no reader was handed them: only a process alone with
        // the queue cuts (never after a process death). They have blocks
        // (reserved above: mmap contract rule 1).
        unsafe { prev.zero(torn.from, torn.to) };
    }
    prev.sync(0, end)?;
    // SAFETY: as above; every record of `prev` below the cut was just
    // synced, and every segment before it was synced before it was sealed.
    unsafe { prev.set_synced_end(cut.next_offset) };
    prev.sync(0, SEGMENT_HEADER_BYTES)?;
    storage::remove_file(&last.path)?;
    storage::sync_dir(dir)?;
    Ok(reserved)
}

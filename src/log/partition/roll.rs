//! Rolling: starting a new segment when the tail one is full, and sealing
//! the one left behind (syncing it in full and recording the proof in its
//! header), on the spot or on the sealer thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::log::control::PartitionControl;
use crate::log::sealer::{SealJob, SealTarget};
use crate::log::segment::{SEGMENT_HEADER_BYTES, Segment};
use crate::options::Durability;
use crate::storage::shm::MutexGuard;

use super::Partition;

/// Whether the caller of [`Partition::seal`] holds the partition's append
/// mutex, which the store of the seal's proof into the header needs.
pub(super) enum AppendMutex<'g, 'c> {
    /// The caller holds it (a roll): its guard is the proof.
    Held(&'g MutexGuard<'c>),
    /// The caller does not (a flush, the sealer thread): `seal` takes it for
    /// the store only, not for the syncs.
    NotHeld,
}

impl Partition {
    /// Seals the full segment `old` and starts a new one at offset `next`.
    /// Called with the append mutex held and the tail published up to
    /// `pos`/`next`.
    ///
    /// Under `Sync` the old segment is synced here, before the new one
    /// exists: every send waits for a sync anyway. Under
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
    pub(super) fn roll(
        &self,
        c: &PartitionControl<'_>,
        held: &MutexGuard<'_>,
        old: &Arc<Segment>,
        pos: usize,
        next: u64,
        reclaim: &dyn Fn() -> usize,
    ) -> Result<Arc<Segment>> {
        if c.durable() < old.base_offset {
            let prev = self.segment(c.prev_segment_base())?;
            self.seal(c, &prev, prev.len(), old.base_offset, AppendMutex::Held(held))?;
        }
        if self.config.durability == Durability::Sync {
            old.sync(SEGMENT_HEADER_BYTES, pos).map_err(|e| self.stop.stop(e))?;
            self.publish_durable(c, next);
        }
        let durable = c.durable();
        let reserved = self.reserve_ahead.after_roll();
        let create =
            || Segment::create(&self.dir, self.id, next, self.config.segment_bytes, durable, reserved, old.salt());
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
        c.start_segment(next, old.base_offset, reserved);
        self.rolled.store(true, Ordering::Relaxed);
        if durable < next {
            // `me` upgrades while anyone can call `roll`; had it not, sealing
            // here would be as correct, only slower.
            let submitted = self.me.upgrade().is_some_and(|partition| {
                let partition: Arc<dyn SealTarget> = partition;
                self.sealer.submit(SealJob { partition, segment_base: old.base_offset, end_pos: pos, next_base: next })
            });
            if !submitted {
                self.seal(c, old, pos, next, AppendMutex::Held(held))?;
            }
        }
        Ok(seg)
    }

    /// Makes the sealed segment `seg` durable: syncs its bytes up to `end`
    /// (past its last frame), records in its header that every record below
    /// `next_base` (where the next segment begins) is synced, syncs that
    /// proof, and only then raises `durable` to `next_base`, so no record of
    /// it is acknowledged before recovery can tell that it was synced. Every
    /// record before `seg` must already be durable. The store of the proof
    /// needs the append mutex: `mutex` says whether the caller holds it. A
    /// failure stops the handle (fail-stop).
    pub(super) fn seal(
        &self,
        c: &PartitionControl<'_>,
        seg: &Segment,
        end: usize,
        next_base: u64,
        mutex: AppendMutex<'_, '_>,
    ) -> Result<()> {
        self.stop.check()?;
        let durable = c.durable();
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
        let guard = match mutex {
            AppendMutex::Held(held) => {
                assert!(c.is_locked_by(held), "partition {}: sealing under another partition's mutex", self.id);
                None
            }
            AppendMutex::NotHeld => Some(self.lock_tail(c).map_err(stop)?),
        };
        // SAFETY: we hold the append mutex (the caller's, or `guard`); the
        // sync covering every record of `seg` returned, and every record
        // before it was durable.
        unsafe { seg.set_synced_end(next_base) };
        drop(guard);
        seg.sync(0, SEGMENT_HEADER_BYTES).map_err(stop)?;
        self.publish_durable(c, next_base);
        Ok(())
    }
}

impl SealTarget for Partition {
    /// The sealer thread's half of a roll (see [`Partition::roll`]): seals
    /// the segment starting at `base` unless a flush or a later roll has
    /// already. The job names the segment instead of holding its mapping, so
    /// a job the sealer reaches late keeps no segment mapped that the
    /// partition's cache has let go (see `segment_cache`). A failure stops
    /// the handle: the next send or flush reports it.
    fn finish_seal(&self, base: u64, end: usize, next_base: u64) {
        let c = self.shared();
        if c.durable() >= next_base {
            return;
        }
        let sealed = self.segment(base).and_then(|seg| self.seal(&c, &seg, end, next_base, AppendMutex::NotHeld));
        // Sealed by another thread meanwhile (and maybe removed by retention
        // since, so it could not be mapped): nothing failed.
        if let Err(e) = sealed
            && c.durable() < next_base
        {
            self.stop.stop(e);
        }
    }
}

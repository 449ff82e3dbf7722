//! Group commit: making a partition's records durable with one sync shared
//! by every waiting thread, and raising the shared `durable` and `visible`
//! watermarks after it.

use std::time::Instant;

use crate::error::Result;
use crate::log::control::PartitionControl;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::observe;

use super::Partition;
use super::roll::AppendMutex;

impl Partition {
    /// Blocks until every record below `target` is durable. One caller
    /// syncs while the others wait for it (group commit); a sync covers
    /// everything published when it starts, from any process.
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        let c = self.shared();
        loop {
            self.stop.check()?;
            if self.durable_covers(&c, target) {
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
            // Async senders share this sync with the blocking ones.
            #[cfg(feature = "tokio")]
            self.durable_waiters.wake(if self.stop.is_stopped() { u64::MAX } else { c.durable() });
            result?;
        }
    }

    /// Whether every record below `target` is durable now; the fail-stop
    /// error once a sync of this partition failed (for async senders, which
    /// wait for a sync without taking part in it).
    #[cfg(feature = "tokio")]
    pub(crate) fn is_durable_to(&self, target: u64) -> Result<bool> {
        self.stop.check()?;
        Ok(self.durable_covers(&self.shared(), target))
    }

    /// Whether every record below `target` is durable; if so, also makes
    /// sure readers see them. The process whose sync covered them raises
    /// `durable`, then `visible`: killed between the two, it would leave
    /// records that this caller is about to acknowledge invisible to every
    /// consumer until some later sync, so the caller raises `visible` too
    /// (a `fetch_max`: nothing when it is there already).
    fn durable_covers(&self, c: &PartitionControl<'_>, target: u64) -> bool {
        let durable = c.durable();
        if durable < target {
            return false;
        }
        if !self.config.durability.readers_see_unsynced() && c.visible() < durable {
            c.raise_visible_synced(durable);
            self.control.notify();
        }
        true
    }

    /// Syncs the tail segment up to the published tail, starting where this
    /// process's previous sync of the same segment ended (`synced`: segment
    /// base and byte position). Everything before that was covered by that
    /// sync, and everything after it is what may still be dirty. Returns the
    /// new `synced`. Once the tail is past the first page, the header's page
    /// (with `synced_end`) is left to the next roll, the close, or the
    /// kernel's writeback: syncing it every time would write two pages per
    /// sync instead of one, a cost every single-message send would pay.
    fn sync_tail(&self, c: &PartitionControl<'_>, synced: Option<(u64, usize)>) -> Result<(u64, usize)> {
        let (seg, pos, next, prev_base) = {
            let tail = self.lock_tail(c)?;
            let seg = self.cached_tail(tail.cache, c.tail_segment_base())?.clone();
            (seg, c.tail_pos(), c.next_offset(), c.prev_segment_base())
        };
        if c.durable() < seg.base_offset {
            // The segment before the tail still waits for a sealer (ours, or
            // that of a process that died): its records were sent before any
            // in the tail. Its last frame's position is not known here, so the
            // whole file is synced; pages past it are clean or zeros.
            let prev = self.segment(prev_base)?;
            self.seal(c, &prev, prev.len(), seg.base_offset, AppendMutex::NotHeld)?;
        }
        let from = match synced {
            Some((base, synced_pos)) if base == seg.base_offset => synced_pos.min(pos),
            _ => SEGMENT_HEADER_BYTES,
        };
        let (durable_before, started) = (c.durable(), Instant::now());
        seg.sync_tail(from, pos).map_err(|e| self.stop.stop(observe::sync_failed(e)))?;
        observe::synced(&self.counters, self.id, next.saturating_sub(durable_before), started.elapsed());
        self.publish_durable(c, next);
        // Record the proof in the segment header, under the mutex that
        // serialises its writers; it reaches the disk with the next sync.
        let _tail = self.lock_tail(c)?;
        if c.tail_segment_base() == seg.base_offset {
            // SAFETY: we hold the append mutex, and the sync above covering
            // every record below `durable` has returned.
            unsafe { seg.set_synced_end(c.durable()) };
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
            self.cached_tail(tail.cache, c.tail_segment_base())?.clone()
        };
        seg.sync(0, SEGMENT_HEADER_BYTES)
    }

    pub(super) fn publish_durable(&self, c: &PartitionControl<'_>, next: u64) {
        c.raise_durable(next);
        if !self.config.durability.readers_see_unsynced() {
            c.raise_visible_synced(next);
            self.control.notify();
        }
    }
}

/// This process's group-commit state for one partition.
pub(super) struct SyncState {
    /// A sync is running; others wait for it.
    pub(super) in_progress: bool,
    /// Where this process's last sync ended: segment base, byte position.
    pub(super) synced: Option<(u64, usize)>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Durability, Options, Queue};

    #[test]
    fn a_sender_covered_by_another_processs_sync_makes_its_records_visible() {
        let tmp = tempfile::tempdir().unwrap();
        // `Interval` of an hour: a send appends and returns, nothing syncs
        // it during the test.
        let hourly = Options::default().durability(Durability::Interval(Duration::from_secs(3600)));
        let queue = Queue::open_with(tmp.path().join("q"), hourly).unwrap();
        queue.producer().send(b"acknowledged").unwrap();
        let p = &queue.inner.partitions[0];
        let c = p.shared();
        // What a syncer in another process leaves when it is killed between
        // raising `durable` and raising `visible`.
        c.raise_durable(1);
        assert_eq!(c.visible(), 0);
        // A sender waiting for record 0 finds it durable: before it
        // acknowledges it, consumers must be able to see it.
        p.sync_to(1).unwrap();
        assert_eq!(c.visible(), 1, "an acknowledged record stayed invisible to consumers");
    }
}

//! Group commit: making a partition's records durable with one sync shared
//! by every waiting thread, and raising the shared `durable` and `visible`
//! watermarks after it.
//!
//! A sync acknowledges every record written before it started. Senders
//! that write while it runs wait for the next one, and so do the senders it
//! acknowledges once they come back with their next record. If the next
//! sync started the moment the last one ended, it would find only the first
//! group: with many senders looping on durable sends, the two groups would
//! take turns, each sync carrying half of them (32 senders on 2 cores: 17
//! records per sync; docs/BENCHMARKS.md, "A group-commit round"). So the
//! next sync's leader first waits, for at most [`GATHER_MAX`], until as many
//! callers have come as the last round had (the ones it acknowledged and
//! the ones it left waiting): see [`Gathering`].

use std::time::{Duration, Instant};

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
        let mut counted = false;
        loop {
            self.stop.check()?;
            if self.durable_covers(&c, target) {
                return Ok(());
            }
            let mut state = self.sync.lock();
            if !counted {
                counted = true;
                if state.gathering.join() {
                    self.gathered.notify_one();
                }
            }
            if state.in_progress {
                self.sync_done.wait(&mut state);
                continue;
            }
            state.in_progress = true;
            if state.gathering.should_hold() {
                // Woken by the caller that completes the group, or at the
                // deadline: whoever is there by then is in this sync.
                let deadline = Instant::now() + GATHER_MAX;
                state.gathering.holding = true;
                while state.gathering.should_hold() && !self.gathered.wait_until(&mut state, deadline).timed_out() {}
                state.gathering.holding = false;
            }
            state.gathering.start();
            let synced = state.synced;
            drop(state);
            let result = self.sync_tail(&c, synced);
            let mut state = self.sync.lock();
            state.in_progress = false;
            state.gathering.end();
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
    /// Who the next sync waits for.
    pub(super) gathering: Gathering,
}

/// The longest a sync's leader holds it back for the callers the last
/// round had. Waiting pays while they come back sooner than a sync takes:
/// each would otherwise wait for the sync that starts without it, then for
/// the next. A sync took 50 µs to 4 ms on the test machine, and 32 senders
/// on 2 cores came back within 120–190 µs (median, per round); a sender
/// that stopped sending costs the next sync this much once, after which
/// the group is counted without it.
const GATHER_MAX: Duration = Duration::from_micros(200);

/// Counts the callers of [`Partition::sync_to`] in this process, so that a
/// sync's leader can wait until the round is as full as the last one was.
/// Only callers that found their records not yet durable are counted, each
/// once per call, and only in this process: another process's senders run
/// their own group commit, and nothing here would tell the leader they came.
#[derive(Default)]
pub(super) struct Gathering {
    /// Callers counted so far (a running count).
    joined: u64,
    /// `joined` when the running (or last) sync started: the callers
    /// counted before it are covered by it.
    at_start: u64,
    /// `at_start` of the sync before that one.
    at_previous_start: u64,
    /// Callers the next sync waits for: all those of the last round, those
    /// it covered and those that came while it ran.
    expected: u64,
    /// A leader is waiting for callers (`should_hold`).
    holding: bool,
}

impl Gathering {
    /// Counts a caller; true if a leader is holding its sync back and this
    /// caller completes the group.
    fn join(&mut self) -> bool {
        self.joined += 1;
        self.holding && !self.should_hold()
    }

    /// Whether fewer callers came since the last sync started than the last
    /// round had.
    fn should_hold(&self) -> bool {
        self.joined - self.at_start < self.expected
    }

    /// A sync starts: it covers every caller counted so far.
    fn start(&mut self) {
        self.at_previous_start = self.at_start;
        self.at_start = self.joined;
    }

    /// The sync ended: the next one waits for as many callers as this
    /// round had, the ones it covered and the ones that came meanwhile.
    fn end(&mut self) {
        self.expected = self.joined - self.at_previous_start;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Gathering;
    use crate::{Durability, Options, Queue};

    /// One round: the leader is there, `others` come before it starts its
    /// sync (while it holds it back, if it does), `during` come while the
    /// sync runs. Returns whether the leader held its sync back, and
    /// whether the caller that completed the group would have woken it.
    fn round(g: &mut Gathering, others: u64, during: u64) -> (bool, bool) {
        g.join();
        let held = g.should_hold();
        g.holding = held;
        let mut woken = false;
        for _ in 0..others {
            woken |= g.join();
        }
        g.holding = false;
        g.start();
        for _ in 0..during {
            g.join();
        }
        g.end();
        (held, woken)
    }

    /// 32 senders looping on durable sends: the first sync finds one, the
    /// other 31 come while it runs. Without holding the next sync back for
    /// the one it acknowledged, the two groups would take turns for good
    /// (1 and 31, or 16 and 16 once the scheduler mixes them). The second
    /// sync waits for it and carries all 32, and so does every later one.
    #[test]
    fn a_sync_waits_for_every_caller_of_the_round_before() {
        let mut g = Gathering::default();
        assert_eq!(round(&mut g, 0, 31), (false, false), "nothing to wait for before the first sync");
        // The 31 are there (counted while the first sync ran), the leader
        // one of them.
        assert!(g.should_hold(), "31 of 32 came: the sync waits for the one the last sync acknowledged");
        g.holding = true;
        assert!(g.join(), "the 32nd caller wakes the leader");
        assert!(!g.should_hold());
        g.holding = false;
        g.start();
        g.end();
        for _ in 0..10 {
            assert_eq!(round(&mut g, 31, 0), (true, true), "each round waits for all 32 and the 32nd wakes it");
        }
    }

    /// A single sender (W2) is the whole round: it never waits for anyone.
    #[test]
    fn a_lone_sender_never_holds_its_sync() {
        let mut g = Gathering::default();
        for _ in 0..100 {
            assert_eq!(round(&mut g, 0, 0), (false, false));
        }
    }

    /// Two senders, then one stops: the next sync waits for it (until
    /// `GATHER_MAX`, the caller's deadline), and the one after that no
    /// longer does.
    #[test]
    fn a_sender_that_stopped_is_waited_for_once() {
        let mut g = Gathering::default();
        round(&mut g, 1, 0);
        assert_eq!(round(&mut g, 1, 0), (true, true));
        assert_eq!(round(&mut g, 0, 0), (true, false), "the round of two waits for the missing sender");
        assert_eq!(round(&mut g, 0, 0), (false, false), "then the round is one sender");
    }

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

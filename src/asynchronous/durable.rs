//! Async senders waiting for group commit.
//!
//! Under `Sync` durability a record must be synced before its send returns.
//! A blocking sender joins the group commit in `Partition::sync_to` on its
//! own thread; an async sender must not hold a runtime worker through a
//! sync, so it leaves its waker here and returns `Pending`. Two things wake
//! it:
//! - every sync that finishes in `sync_to`, whoever ran it (a blocking
//!   sender, a consumer's commit, the `Interval` flusher, this module's
//!   syncer), wakes the waiters it covers: blocking and async senders share
//!   the same syncs;
//! - so that an async sender never depends on someone else syncing, each
//!   partition has a syncer thread, started by the first async wait and
//!   parked on a condition variable while no async sender waits, which calls
//!   `sync_to` for the highest offset asked for. Senders that arrive while
//!   it syncs are covered by its next round, or by another thread's sync.
//!
//! No lost wake-up: a waiter registers under the lock and then reads the
//! durable watermark again; a sync raises the watermark before it takes
//! the lock to wake.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::log::partition::Partition;

/// One partition's async senders waiting for a sync, and its syncer thread.
#[derive(Default)]
pub(crate) struct DurableWaiters {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    asked: Condvar,
}

#[derive(Default)]
struct State {
    /// Wakers, each with the offset below which its sender needs everything
    /// durable.
    waiters: Vec<(u64, Waker)>,
    /// The highest such offset asked of the syncer.
    wanted: u64,
    /// The highest offset the syncer has synced to (or tried).
    served: u64,
    /// Sync rounds the syncer has started.
    rounds: u64,
    /// The last round that failed without stopping the partition (a
    /// fail-stop is seen by every waiter through the partition itself): its
    /// number, its target and the error.
    failed: Option<(u64, u64, String)>,
    syncer_started: bool,
    /// The partition is gone: the syncer exits.
    closed: bool,
}

impl DurableWaiters {
    /// Wakes every waiter whose records below its offset are covered by
    /// `up_to` (the durable watermark; `u64::MAX` once the partition stopped).
    pub(crate) fn wake(&self, up_to: u64) {
        let woken: Vec<Waker> = {
            let mut state = self.shared.state.lock();
            if state.waiters.is_empty() {
                return;
            }
            let (covered, waiting) = std::mem::take(&mut state.waiters).into_iter().partition(|(t, _)| *t <= up_to);
            state.waiters = waiting;
            covered.into_iter().map(|(_, w)| w).collect()
        };
        for waker in woken {
            waker.wake();
        }
    }
}

impl Drop for DurableWaiters {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.asked.notify_all();
    }
}

/// Resolves once every record of `partition` below `target` is durable, or
/// with the error that stopped the sync.
pub(crate) struct Durable<'a> {
    partition: &'a Arc<Partition>,
    target: u64,
    /// Sync rounds started before this future first registered: only later
    /// rounds can have failed for it.
    registered_after: Option<u64>,
}

impl<'a> Durable<'a> {
    pub(crate) fn new(partition: &'a Arc<Partition>, target: u64) -> Durable<'a> {
        Durable { partition, target, registered_after: None }
    }
}

impl Future for Durable<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let p = this.partition;
        if p.is_durable_to(this.target)? {
            return Poll::Ready(Ok(()));
        }
        let shared = &p.durable_waiters.shared;
        {
            let mut state = shared.state.lock();
            if let (Some(after), Some((round, target, error))) = (this.registered_after, &state.failed)
                && *round > after
                && *target >= this.target
            {
                let error = std::io::Error::other(error.clone());
                return Poll::Ready(Err(Error::io("sync for an async sender", &p.dir, error)));
            }
            this.registered_after.get_or_insert(state.rounds);
            state.waiters.push((this.target, cx.waker().clone()));
            state.wanted = state.wanted.max(this.target);
            if !state.syncer_started {
                let (shared, partition) = (shared.clone(), Arc::downgrade(p));
                std::thread::Builder::new()
                    .name(format!("durq-async-sync-{}", p.id))
                    .spawn(move || run_syncer(&shared, &partition))
                    .map_err(|e| Error::io("start the async syncer thread of", &p.dir, e))?;
                state.syncer_started = true;
            }
        }
        shared.asked.notify_one();
        // A sync that finished between the first look and the registration
        // woke nobody: look again.
        if p.is_durable_to(this.target)? {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// The syncer: syncs to the highest offset an async sender waits for, until
/// the partition is gone. It holds the partition only while it syncs, so it
/// never keeps a closed queue open.
fn run_syncer(shared: &Shared, partition: &Weak<Partition>) {
    loop {
        let (round, target) = {
            let mut state = shared.state.lock();
            while state.wanted <= state.served && !state.closed {
                shared.asked.wait(&mut state);
            }
            if state.closed {
                return;
            }
            state.served = state.wanted;
            state.rounds += 1;
            (state.rounds, state.wanted)
        };
        let Some(p) = partition.upgrade() else { return };
        let result = p.sync_to(target);
        let up_to = match (result, p.is_durable_to(0)) {
            (_, Err(_)) => u64::MAX,
            (Ok(()), Ok(_)) => p.shared().durable(),
            (Err(e), Ok(_)) => {
                // Not a fail-stop (that is seen through the partition): the
                // waiters of this round get the error, as a blocking sender
                // would, and the next sender asks again.
                shared.state.lock().failed = Some((round, target, e.to_string()));
                target
            }
        };
        p.durable_waiters.wake(up_to);
    }
}

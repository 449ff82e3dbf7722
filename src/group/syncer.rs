//! The background sync of `commit(Durability::Interval(d))`: one thread per
//! consumer (a member), shared by every slot it holds.
//!
//! Under `Interval` a commit only stores the new position into the shared
//! mapping of the slot's checkpoint file (`Checkpoint::store`), where a
//! crash of the process cannot lose it. Every `d` this thread makes the
//! stored positions of the member's slots durable (`Checkpoint::sync`: one
//! msync of the file's first page per slot that moved), so a power cut
//! takes back at most what was committed in the last `d` (plus one sync's
//! time). The consumer's commits go on while a sync is in flight: the sync
//! takes the state to write under the lock every store takes, and writes
//! and msyncs it outside that lock (`HeldFile::write_synced`). A sync that
//! finds the slot taken over marks it fenced, and the member's next commit
//! there fails with `Error::Fenced`.
//!
//! A failed sync is never retried (`fail_stop.rs`): it stops the consumer,
//! whose next call reports it, and this thread syncs nothing more.
//!
//! The thread holds the checkpoints weakly: a slot given back (synced first,
//! `SlotHold::release`) or lost to a newer holder is let go here too.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::group::checkpoint::Syncable;

/// The running thread; stopped (after one last pass) on drop.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// The checkpoints of the slots the member holds.
    slots: Mutex<Vec<Syncable>>,
    /// Set to stop the thread.
    stop: Mutex<bool>,
    wake: Condvar,
    /// The consumer's: a failed sync stops it.
    stopped: Arc<FailStop>,
}

impl Syncer {
    /// Starts the thread that syncs every `every` for the member of the
    /// group at `group_dir` (named in an error if the system refuses a
    /// thread); a failed sync stops `stopped`.
    pub(crate) fn start(every: Duration, stopped: Arc<FailStop>, group_dir: &Path) -> Result<Syncer> {
        let shared =
            Arc::new(Shared { slots: Mutex::new(Vec::new()), stop: Mutex::new(false), wake: Condvar::new(), stopped });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("durq-commit-sync".into())
            .spawn(move || run(&thread_shared, every))
            .map_err(|e| Error::io("start the commit sync thread of", group_dir, e))?;
        Ok(Syncer { shared, thread: Some(thread) })
    }

    /// From now on, syncs the checkpoints of exactly these slots.
    pub(crate) fn track(&self, slots: Vec<Syncable>) {
        *self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner) = slots;
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // A panic on the thread (a broken invariant) was reported there.
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, every: Duration) {
    let mut stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        stop = shared.wake.wait_timeout_while(stop, every, |s| !*s).unwrap_or_else(PoisonError::into_inner).0;
        drop(stop);
        sync_all(shared);
        stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
        if *stop || shared.stopped.is_stopped() {
            return;
        }
    }
}

/// One pass: syncs every tracked slot whose position moved.
fn sync_all(shared: &Shared) {
    let slots = shared.slots.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for slot in slots {
        if shared.stopped.is_stopped() {
            return;
        }
        let Some(file) = slot.upgrade() else { continue };
        let result = file.sync();
        match result {
            // Fenced: the file remembers it, for the member's next commit.
            Ok(()) | Err(Error::Fenced { .. }) => {}
            Err(e) => {
                shared.stopped.stop(e);
            }
        }
    }
}

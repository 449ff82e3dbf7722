//! Waking a member the moment another member's process exits, so that it
//! takes a dead member's slots over at once rather than at its next scan.
//!
//! A member notices a dead one by scanning the member files, every
//! `rebalance_interval` (20 ms by default): after a SIGKILL that wait was,
//! on average, half the interval, most of a takeover's time. So each
//! consumer also runs a thread that waits on a pidfd of every other process
//! with a member in the group (`storage::exits`). When one exits, the
//! thread raises a flag and wakes the consumer's wait (the queue's futex,
//! whose waiters check the flag too), and the consumer scans at once.
//!
//! It is a hint, never a judgement: liveness is still the member file's
//! lock, read by the scan. A process id that names another process (reused,
//! or from another pid namespace) or a kernel without pidfds leaves the
//! scan's period as the bound, as before; a spurious wake costs one scan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::storage::exits::{self, Bell, Opened, ProcessHandle};

/// The watching thread; stopped on drop.
pub(crate) struct ExitWatch {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// The processes to watch, and whether to stop.
    watched: Mutex<Watched>,
    /// Rung when `watched` changed.
    bell: Bell,
    /// A watched process exited since the consumer last looked.
    exited: AtomicBool,
}

#[derive(Default)]
struct Watched {
    pids: BTreeSet<u32>,
    stop: bool,
}

impl ExitWatch {
    /// Starts the thread; `wake` wakes the consumer's wait once the flag is
    /// raised. The group's directory names an error (no thread, no
    /// eventfd).
    pub(crate) fn start(wake: impl Fn() + Send + 'static, group_dir: &Path) -> Result<ExitWatch> {
        let bell = Bell::new().map_err(|e| Error::io("create the exit watch's eventfd for", group_dir, e))?;
        let shared = Arc::new(Shared { watched: Mutex::default(), bell, exited: AtomicBool::new(false) });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("durq-exit-watch".into())
            // It only polls: a small stack.
            .stack_size(64 << 10)
            .spawn(move || run(&thread_shared, wake))
            .map_err(|e| Error::io("start the exit watch thread of", group_dir, e))?;
        Ok(ExitWatch { shared, thread: Some(thread) })
    }

    /// From now on, watches exactly these processes.
    pub(crate) fn watch(&self, pids: BTreeSet<u32>) {
        let mut watched = self.shared.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if watched.pids != pids {
            watched.pids = pids;
            self.shared.bell.ring();
        }
    }

    /// Whether a watched process exited since [`ExitWatch::take_exited`]
    /// last answered yes.
    pub(crate) fn exited(&self) -> bool {
        self.shared.exited.load(Ordering::SeqCst)
    }

    /// [`ExitWatch::exited`] for a thread that waits on the consumer's
    /// behalf (`process_async`'s companion).
    #[cfg(feature = "tokio")]
    pub(crate) fn signal(&self) -> ExitSignal {
        ExitSignal(self.shared.clone())
    }

    /// As [`ExitWatch::exited`], and lowers the flag.
    pub(crate) fn take_exited(&self) -> bool {
        // A load first: the consumer asks once per batch.
        self.exited() && self.shared.exited.swap(false, Ordering::SeqCst)
    }
}

/// Tells another thread whether a watched process exited.
#[cfg(feature = "tokio")]
pub(crate) struct ExitSignal(Arc<Shared>);

#[cfg(feature = "tokio")]
impl ExitSignal {
    /// As [`ExitWatch::exited`].
    pub(crate) fn exited(&self) -> bool {
        self.0.exited.load(Ordering::SeqCst)
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.shared.watched.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.shared.bell.ring();
        if let Some(t) = self.thread.take() {
            // A panic on the thread (a broken invariant) was reported there.
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, wake: impl Fn()) {
    let mut handles: BTreeMap<u32, ProcessHandle> = BTreeMap::new();
    // Processes seen to exit, not watched again while the consumer still
    // lists them (a zombie's pidfd stays readable).
    let mut gone: BTreeSet<u32> = BTreeSet::new();
    loop {
        let pids = {
            let watched = shared.watched.lock().unwrap_or_else(PoisonError::into_inner);
            if watched.stop {
                return;
            }
            watched.pids.clone()
        };
        handles.retain(|pid, _| pids.contains(pid));
        gone.retain(|pid| pids.contains(pid));
        let mut exited = false;
        let new: Vec<u32> =
            pids.iter().copied().filter(|pid| !handles.contains_key(pid) && !gone.contains(pid)).collect();
        for pid in new {
            match ProcessHandle::open(pid) {
                Opened::Running(handle) => {
                    handles.insert(pid, handle);
                }
                // Died between the consumer's scan and now.
                Opened::Gone => {
                    gone.insert(pid);
                    exited = true;
                }
                Opened::Unwatchable => {
                    gone.insert(pid);
                }
            }
        }
        if !exited {
            let (pids, waiting): (Vec<u32>, Vec<&ProcessHandle>) = handles.iter().map(|(&p, h)| (p, h)).unzip();
            let Ok(done) = exits::wait_for_exit(&waiting, &shared.bell) else {
                // poll itself failed: the scans alone find the dead.
                return;
            };
            for i in &done {
                gone.insert(pids[*i]);
            }
            handles.retain(|pid, _| !gone.contains(pid));
            exited = !done.is_empty();
        }
        if exited {
            shared.exited.store(true, Ordering::SeqCst);
            wake();
        }
    }
}

//! An async consumer's companion thread: it does the two things an async
//! consumer must neither do on a runtime worker nor leave to the runtime.
//!
//! - **Waiting for records.** It parks on the control file's futex
//!   (`ControlFile::wait_until`, the very wait a blocking consumer does on
//!   its own thread) and wakes the consumer's task through a
//!   `tokio::sync::Notify`. Nothing polls: the thread sleeps until a
//!   producer in any process makes records visible, or until the wait's
//!   timeout (the next rebalance, or the end of a retry's backoff).
//! - **Heartbeats while a batch is awaited.** A blocking consumer heartbeats
//!   between batches, and a closure that runs past the lease timeout makes
//!   it hung: its slots are taken over. An awaited batch may wait on I/O
//!   that long, and a busy runtime may not poll it for a while, so while a
//!   batch is in the caller's hands this thread rewrites the member's and
//!   its slots' leases every rebalance interval. A batch in progress never
//!   loses its slots for want of a poll; a future that never resolves keeps
//!   them while the process lives (drop it, e.g. with a timeout, and the
//!   batch is delivered again).
//!
//! One thread per consumer, started by its first `process_async` and joined
//! when the consumer drops.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::group::exit_watch::ExitSignal;
use crate::group::membership::Pulse;
use crate::log::control::ControlFile;
use crate::log::partition::Partition;

/// The handle a consumer keeps on its companion thread.
pub(crate) struct Companion {
    jobs: Option<Sender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A wait for records: the partitions held and the offset each must pass.
pub(crate) struct Wait {
    pub(crate) watch: Vec<(Arc<Partition>, u64)>,
    pub(crate) timeout: Duration,
    /// Another member's process exited: the consumer scans at once.
    pub(crate) exits: ExitSignal,
}

#[derive(Default)]
struct Heartbeats {
    /// The last batch's heartbeats, kept (with their open files) for the
    /// next batch of the same slots.
    pulse: Option<Pulse>,
    /// A batch is in the caller's hands: beat.
    active: bool,
    /// The thread beats on a timer (it was sent [`Job::Beat`] and has not
    /// found the heartbeats inactive at a tick since). Batches that follow
    /// each other closely then cost the thread no wake-up each.
    ticking: bool,
}

enum Job {
    Wait(Wait),
    /// Start heartbeating the pulse now set, every this often.
    Beat(Duration),
}

struct Shared {
    control: Arc<ControlFile>,
    /// Notified when a wait ends (records, or its timeout).
    woken: Notify,
    /// The heartbeats, behind a lock so that ending a batch is synchronous:
    /// once [`Companion::end_heartbeats`] returns, no heartbeat can rewrite
    /// a lease the consumer then gives back.
    heartbeats: Mutex<Heartbeats>,
    /// The thread is in a wait (a new job must cut it short).
    waiting: AtomicBool,
    closing: AtomicBool,
}

impl Companion {
    /// Starts the companion of a consumer of the queue at `dir`, whose
    /// control file is `control`.
    pub(crate) fn start(dir: &Path, control: Arc<ControlFile>) -> Result<Companion> {
        let shared = Arc::new(Shared {
            control,
            woken: Notify::new(),
            heartbeats: Mutex::new(Heartbeats::default()),
            waiting: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let (jobs, received) = crossbeam_channel::unbounded();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("durq-async-consumer".into())
                .spawn(move || run(&shared, &received))
                .map_err(|e| Error::io("start the async consumer thread of", dir, e))?
        };
        Ok(Companion { jobs: Some(jobs), shared, thread: Some(thread) })
    }

    /// Waits, off the runtime, until a watched partition has a record past
    /// its offset or the timeout passes. May return early (a stale wake-up):
    /// the caller looks again.
    pub(crate) async fn wait(&self, wait: Wait) {
        let woken = self.shared.woken.notified();
        self.send(Job::Wait(wait));
        woken.await;
    }

    /// Beats the pulse `make` returns (given the previous one, to reuse)
    /// every `interval` until [`Companion::end_heartbeats`].
    pub(crate) fn start_heartbeats(
        &self,
        make: impl FnOnce(Option<Pulse>) -> Result<Pulse>,
        interval: Duration,
    ) -> Result<()> {
        let mut heartbeats = self.shared.heartbeats.lock();
        heartbeats.pulse = Some(make(heartbeats.pulse.take())?);
        heartbeats.active = true;
        if !heartbeats.ticking {
            heartbeats.ticking = true;
            self.send(Job::Beat(interval));
        }
        Ok(())
    }

    /// Stops the heartbeats; none runs after this returns.
    pub(crate) fn end_heartbeats(&self) {
        self.shared.heartbeats.lock().active = false;
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread only exits once `jobs` is dropped.
            let _ = jobs.send(job);
        }
        if self.shared.waiting.load(Ordering::SeqCst) {
            // A wait of a dropped `process_async` future is still running:
            // cut it short (its sleeper announcement makes this a wake).
            self.shared.control.notify();
        }
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        drop(self.jobs.take());
        self.shared.control.notify();
        if let Some(thread) = self.thread.take() {
            // Prompt: the thread's waits end on the notify above, and it
            // holds the queue's control file, which must be closed with the
            // consumer.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, jobs: &Receiver<Job>) {
    let mut beat_every: Option<Duration> = None;
    let mut next_beat = Instant::now();
    loop {
        let job = match beat_every {
            Some(_) => jobs.recv_deadline(next_beat),
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match job {
            Ok(Job::Wait(wait)) => {
                shared.waiting.store(true, Ordering::SeqCst);
                shared.control.wait_until(Some(wait.timeout), || {
                    shared.closing.load(Ordering::SeqCst)
                        || !jobs.is_empty()
                        || wait.exits.exited()
                        || wait.watch.iter().any(|(p, offset)| *offset < p.visible())
                });
                shared.waiting.store(false, Ordering::SeqCst);
                shared.woken.notify_one();
            }
            Ok(Job::Beat(every)) => {
                beat_every = Some(every);
                next_beat = Instant::now() + every;
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut heartbeats = shared.heartbeats.lock();
                match (&heartbeats.pulse, heartbeats.active, beat_every) {
                    (Some(pulse), true, Some(every)) => {
                        // A failed heartbeat is what a blocking consumer's
                        // would be: the leases age, and the commit finds out
                        // whether the slots were taken over.
                        let _ = pulse.beat();
                        next_beat = Instant::now() + every;
                    }
                    _ => {
                        heartbeats.ticking = false;
                        beat_every = None;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

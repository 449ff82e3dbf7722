//! Syncing full segments in the background, under `Buffered` and `Interval`.
//!
//! A roll used to msync the whole old segment (64 MiB by default) before it
//! created the next one, under the append mutex: measured here, that was
//! about a third of the time of a run of `Buffered` sends. Neither mode
//! promises anything about a record before a flush, so the roll now hands
//! the old segment to this thread and goes on; the thread syncs it, records
//! the proof in its header and raises the durable watermark
//! (`Partition::seal`). A flush that finds the segment still pending syncs
//! it itself, and a roll never leaves two segments pending: it first seals
//! the previous one. Recovery checks the segment before the last for a torn
//! tail unless a header proves it synced (`recovery::check_sealed`).
//!
//! The thread is stopped, after it finished every segment handed to it, when
//! the queue handle is dropped, so a clean close leaves every proof on disk.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::log::partition::Partition;
use crate::log::segment::Segment;

/// A full segment to seal: its partition, the segment, where its last frame
/// ends, and the base offset of the segment after it.
pub(crate) struct SealJob {
    pub(crate) partition: Arc<Partition>,
    pub(crate) segment: Arc<Segment>,
    pub(crate) end_pos: usize,
    pub(crate) next_base: u64,
}

/// The background thread of one queue handle.
pub(crate) struct Sealer {
    running: Mutex<Option<(Sender<SealJob>, JoinHandle<()>)>>,
}

impl Sealer {
    /// No thread: every roll seals its segment itself (`Sync`, where each
    /// send waits for a sync anyway).
    pub(crate) fn none() -> Sealer {
        Sealer { running: Mutex::new(None) }
    }

    pub(crate) fn start() -> Sealer {
        let (jobs, pending) = crossbeam_channel::unbounded::<SealJob>();
        let thread = std::thread::Builder::new()
            .name("durq-sealer".into())
            .spawn(move || {
                for job in pending {
                    job.partition.finish_seal(&job.segment, job.end_pos, job.next_base);
                }
            })
            .expect("spawning the sealer thread");
        Sealer { running: Mutex::new(Some((jobs, thread))) }
    }

    /// Hands `job` to the thread, or gives it back once the thread has
    /// stopped (the caller then seals the segment itself).
    pub(crate) fn submit(&self, job: SealJob) -> Result<(), SealJob> {
        match &*self.running.lock() {
            Some((jobs, _)) => jobs.send(job).map_err(|e| e.into_inner()),
            None => Err(job),
        }
    }

    /// Lets the thread finish every job handed to it, then stops it.
    pub(crate) fn finish(&self) {
        let running = self.running.lock().take();
        if let Some((jobs, thread)) = running {
            drop(jobs);
            let _ = thread.join();
        }
    }
}

//! Syncing full segments in the background, under `Buffered` and `Interval`.
//!
//! Neither mode promises anything about a record before a flush, so a roll
//! does not sync the full segment it leaves (64 MiB by default) under the
//! append mutex, where every sender would wait for it: it hands the segment
//! to this thread and goes on. The thread syncs it, records the proof in its
//! header and raises the durable watermark (`Partition::seal`). A flush that finds the segment still pending syncs
//! it itself, and a roll never leaves two segments pending: it first seals
//! the previous one. Recovery checks the segment before the last for a torn
//! tail unless a header proves it synced (`recovery::check_sealed`).
//!
//! The same thread writes behind the appender: each time the tail of a
//! segment passes a multiple of [`WRITE_BEHIND_BYTES`], it starts the
//! writeback of the stretch just finished (`Segment::start_writeback`), so the
//! disk works while appends go on, and the sync that seals the segment, or a
//! flush, finds little left to write.
//!
//! The thread is stopped, after it finished every job handed to it, when the
//! queue handle is dropped, so a clean close leaves every proof on disk.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::log::segment::Segment;

/// Bytes of a segment the appender leaves behind before their writeback is
/// started.
pub(crate) const WRITE_BEHIND_BYTES: usize = 2 << 20;

/// What a seal job is for: the partition whose roll left a segment to
/// seal. A trait, so that this thread knows nothing of a partition but how
/// to finish a seal (`Partition` implements it).
pub(crate) trait SealTarget: Send + Sync {
    /// Seals the segment starting at `segment_base`, whose last frame ends
    /// at `end_pos`, and which the segment starting at `next_base` follows,
    /// unless that was done already. A failure stops the handle.
    fn finish_seal(&self, segment_base: u64, end_pos: usize, next_base: u64);
}

/// A full segment to seal: its partition, the segment's base offset, where
/// its last frame ends, and the base offset of the segment after it.
pub(crate) struct SealJob {
    pub(crate) partition: Arc<dyn SealTarget>,
    pub(crate) segment_base: u64,
    pub(crate) end_pos: usize,
    pub(crate) next_base: u64,
}

enum Job {
    Seal(SealJob),
    /// Start the writeback of `from..to` of a segment.
    WriteBehind {
        segment: Arc<Segment>,
        from: usize,
        to: usize,
    },
}

/// The background thread of one queue handle.
pub(crate) struct Sealer {
    running: Mutex<Option<(Sender<Job>, JoinHandle<()>)>>,
}

impl Sealer {
    /// No thread: every roll seals its segment itself (`Sync`, where each
    /// send waits for a sync anyway).
    pub(crate) fn none() -> Sealer {
        Sealer { running: Mutex::new(None) }
    }

    /// Starts the thread for the queue at `dir`; a failure it meets stops
    /// the handle through `stop`. Fails if the thread cannot be spawned.
    pub(crate) fn start(dir: &Path, stop: Arc<FailStop>) -> Result<Sealer> {
        let (jobs, pending) = crossbeam_channel::unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name("durq-sealer".into())
            .spawn(move || {
                for job in pending {
                    match job {
                        Job::Seal(s) => s.partition.finish_seal(s.segment_base, s.end_pos, s.next_base),
                        // A failed writeback is a failed sync of the log: the
                        // handle stops at once. The next sync of the segment
                        // need not report it: sync_file_range returns its own
                        // submission errors, and that sync may run on a later
                        // mapping and descriptor (the cache unmaps passed
                        // segments).
                        Job::WriteBehind { segment, from, to } => {
                            if let Err(e) = segment.start_writeback(from, to) {
                                stop.stop(e);
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn thread", dir, e))?;
        Ok(Sealer { running: Mutex::new(Some((jobs, thread))) })
    }

    /// Hands `job` to the thread; false if there is none, or it has
    /// stopped (the caller then seals the segment itself).
    pub(crate) fn submit(&self, job: SealJob) -> bool {
        match &*self.running.lock() {
            Some((jobs, _)) => jobs.send(Job::Seal(job)).is_ok(),
            None => false,
        }
    }

    /// Called after an append moved the tail of `segment` from `old_pos` to
    /// `new_pos`: if that passed a multiple of [`WRITE_BEHIND_BYTES`], asks
    /// for the writeback of the whole stretches it finished. Without a
    /// thread (`Sync`, where every send syncs) it does nothing.
    pub(crate) fn after_append(&self, segment: &Arc<Segment>, old_pos: usize, new_pos: usize) {
        let from = old_pos / WRITE_BEHIND_BYTES * WRITE_BEHIND_BYTES;
        let to = new_pos / WRITE_BEHIND_BYTES * WRITE_BEHIND_BYTES;
        if from < to
            && let Some((jobs, _)) = &*self.running.lock()
        {
            let _ = jobs.send(Job::WriteBehind { segment: segment.clone(), from, to });
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

//! Faulting in segment pages ahead of the writer, on another thread.
//!
//! The first store into each page of a fresh segment costs a page fault in
//! which the kernel allocates a page-cache page and zeroes it, a large part
//! of a `Buffered` send's cost (docs/BENCHMARKS.md). The append path
//! therefore asks this background thread, whenever it reserves more of a
//! segment ahead of the writer (once per chunk the writer enters, see
//! `reservation.rs`), to fault in what it reserved with
//! `MADV_POPULATE_WRITE`, so the writer finds its pages ready. The hint never
//! changes a byte of the file. It never touches a page beyond the reserved
//! part: faulting a page in for writing makes the file system give it a
//! block, which is what the reservation must do first (a page it could not
//! get a block for would fault with SIGBUS).
//!
//! Under `Durability::Sync` the thread instead writes each chunk's zeros to
//! the disk before the writer gets there ([`AheadOfWriter::WriteZeros`]).
//! A segment's blocks are reserved with `posix_fallocate`, which on ext4 (and
//! XFS) leaves them *unwritten* extents: the first sync that writes a block
//! must also write the metadata that converts its extent (a journal commit, or,
//! on a file system without a journal, the inode's extent block). With one
//! small sync per batch, every sync would meet fresh blocks and pay that
//! extra disk request (docs/BENCHMARKS.md, W3). Written ahead, a chunk's
//! conversion is committed by one sync per chunk instead. The writeback makes no promise and changes no byte:
//! it is not a durability step, and the simulated disk need not see it.
//! The pages are not faulted in again after it: under `Sync` the writer
//! writes its frames with `pwrite` (`Segment::write_frames`), and a page
//! faulted in for writing would count its whole folio dirty again, zeros
//! the next small sync would write once more. They stay in the page cache,
//! so the writer's `pwrite` of a part of a block reads nothing back.

use std::path::Path;
use std::sync::{Arc, Weak};

use crossbeam_channel::{Sender, TrySendError};

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::log::segment::Segment;

/// Bytes faulted in per request, at most.
pub(crate) const PREFAULT_BYTES: usize = 1 << 20;

/// One request: fault in `start..end` of a segment. The segment is held
/// weakly: a request still queued when the writer has rolled past its
/// segment (and every reader has left it) must not keep that segment mapped,
/// since a handle's mappings are bounded (`segment_cache`); such a request
/// is skipped, as nobody will write those pages through this handle.
type Request = (Weak<Segment>, usize, usize);

/// Hands prefault requests to the background thread; the thread ends when
/// every clone is dropped.
#[derive(Clone)]
pub(crate) struct Prefaulter {
    requests: Sender<Request>,
}

/// The background thread, joined on drop. Its owner must drop every
/// [`Prefaulter`] first (they are what keeps the thread going): the queue
/// handle keeps it as its last field, after the partitions.
pub(crate) struct PrefaultThread(Option<std::thread::JoinHandle<()>>);

impl Drop for PrefaultThread {
    fn drop(&mut self) {
        // Joined, not left detached: a closed queue leaves no thread behind
        // holding segment mappings (and no thread-local state for a leak
        // checker to report at exit).
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// What the thread does with a chunk ahead of the writer.
pub(crate) enum AheadOfWriter {
    /// Faults its pages in.
    FaultIn,
    /// Faults its pages in (which gives them page-cache pages and marks
    /// them dirty) and starts writing their zeros to the disk. A failed
    /// writeback stops the handle through the [`FailStop`], as any failed
    /// write of the log does.
    WriteZeros(Arc<FailStop>),
}

impl Prefaulter {
    /// Starts the thread for the queue at `dir`. Fails if the thread cannot
    /// be spawned.
    pub(crate) fn start(dir: &Path, ahead: AheadOfWriter) -> Result<(Prefaulter, PrefaultThread)> {
        // A few requests in flight are plenty: the writer asks once per chunk.
        let (requests, pending) = crossbeam_channel::bounded::<Request>(8);
        let thread = std::thread::Builder::new()
            .name("durq-prefault".into())
            .spawn(move || {
                for (segment, start, end) in pending {
                    let Some(segment) = segment.upgrade() else { continue };
                    segment.prefault(start, end);
                    if let AheadOfWriter::WriteZeros(stop) = &ahead
                        && let Err(e) = segment.start_writeback(start, end)
                    {
                        stop.stop(e);
                    }
                }
            })
            .map_err(|e| Error::io("spawn thread", dir, e))?;
        Ok((Prefaulter { requests }, PrefaultThread(Some(thread))))
    }

    /// The writer of this process starts on `segment` at `pos`: at its
    /// first append into a segment it did not write before. Asks for what
    /// is reserved after `pos`'s request (the reservation's lead, a few
    /// MiB); the rest is asked for as it is reserved.
    pub(crate) fn starting_at(&self, segment: &Arc<Segment>, pos: usize, reserved: usize) {
        self.reserved(segment, (pos / PREFAULT_BYTES + 1) * PREFAULT_BYTES, reserved);
    }

    /// The writer just reserved `from..to` of `segment`: asks for it, in
    /// requests of at most [`PREFAULT_BYTES`].
    pub(crate) fn reserved(&self, segment: &Arc<Segment>, from: usize, to: usize) {
        let to = to.min(segment.len());
        let mut start = from;
        while start < to {
            let end = ((start / PREFAULT_BYTES + 1) * PREFAULT_BYTES).min(to);
            // Never blocks; a request that does not fit is dropped (the
            // pages then fault in the ordinary way).
            match self.requests.try_send((Arc::downgrade(segment), start, end)) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::salt::Salt;

    /// Mappings of files under `dir` in this process.
    fn mapped_under(dir: &Path) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().filter(|l| l.split_whitespace().nth(5).is_some_and(|p| Path::new(p).starts_with(dir))).count()
    }

    #[test]
    fn a_queued_request_does_not_keep_a_segment_the_writer_left_mapped() {
        let dir = tempfile::tempdir().unwrap();
        // No thread takes the requests: they stay queued, as behind a busy
        // prefault thread.
        let (requests, pending) = crossbeam_channel::bounded::<Request>(8);
        let prefaulter = Prefaulter { requests };
        let segment = Arc::new(Segment::create(dir.path(), 0, 0, 4 << 20, 0, 4 << 20, Salt::UNSALTED).unwrap());
        prefaulter.reserved(&segment, 0, 3 << 20);
        assert_eq!(pending.len(), 3, "one request per MiB reserved");
        assert_eq!(mapped_under(dir.path()), 1);
        drop(segment);
        assert_eq!(mapped_under(dir.path()), 0, "the queued requests released the mapping");
        assert!(pending.try_iter().all(|(segment, _, _)| segment.upgrade().is_none()));
    }
}

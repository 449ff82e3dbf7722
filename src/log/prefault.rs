//! Faulting in segment pages ahead of the writer, on another thread.
//!
//! The first store into each page of a fresh segment costs a page fault in
//! which the kernel allocates a page-cache page and zeroes it; measured here,
//! that was over a third of the time of a `Buffered` send. The append path
//! therefore asks this background thread, whenever its tail enters a new
//! chunk, to fault in the *next* chunk with `MADV_POPULATE_WRITE`, so the
//! writer finds its pages ready. The hint never changes a byte of the file.
//!
//! Under `Durability::Sync` the thread also writes each chunk's zeros to the
//! disk before the writer gets there ([`AheadOfWriter::FaultInAndWriteZeros`]).
//! A segment's blocks are reserved with `posix_fallocate`, which on ext4 (and
//! XFS) leaves them *unwritten* extents: the first sync that writes a block
//! must also write the metadata that converts its extent (a journal commit, or,
//! on a file system without a journal as on our bench machines, the inode's
//! extent block). With one small sync per batch, every sync met fresh blocks
//! and paid that extra disk request, about half again the sync's cost
//! (measured: 3.0 disk write requests per 100-record batch instead of 2.0;
//! docs/BENCHMARKS.md). Written ahead, a chunk's conversion is committed by one
//! sync per chunk instead. The writeback makes no promise and changes no byte:
//! it is not a durability step, and the simulated disk need not see it.

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::fail_stop::FailStop;
use crate::log::segment::Segment;

/// Bytes faulted in per request.
pub(crate) const PREFAULT_BYTES: usize = 1 << 20;

/// How many chunks past the writer's the thread keeps faulted in.
const CHUNKS_AHEAD: usize = 4;

/// Hands prefault requests to the background thread; the thread ends when
/// every clone is dropped.
#[derive(Clone)]
pub(crate) struct Prefaulter {
    requests: Sender<(Arc<Segment>, usize)>,
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
    /// Faults its pages in, starts writing their zeros to the disk, and
    /// faults them in again (the writeback write-protected them). A failed
    /// writeback stops the handle through the [`FailStop`], as any failed
    /// write of the log does.
    FaultInAndWriteZeros(Arc<FailStop>),
}

impl Prefaulter {
    pub(crate) fn start(ahead: AheadOfWriter) -> (Prefaulter, PrefaultThread) {
        // A few requests in flight are plenty: the writer asks once per chunk.
        let (requests, pending) = crossbeam_channel::bounded::<(Arc<Segment>, usize)>(8);
        let thread = std::thread::Builder::new()
            .name("durq-prefault".into())
            .spawn(move || {
                for (segment, chunk) in pending {
                    let end = chunk + PREFAULT_BYTES;
                    segment.prefault(chunk, end);
                    if let AheadOfWriter::FaultInAndWriteZeros(stop) = &ahead {
                        match segment.start_writeback(chunk, end) {
                            Ok(()) => segment.prefault(chunk, end),
                            Err(e) => {
                                stop.stop(e);
                            }
                        }
                    }
                }
            })
            .expect("spawning the prefault thread");
        (Prefaulter { requests }, PrefaultThread(Some(thread)))
    }

    /// The writer of this process starts on `segment` at `pos`: after a
    /// roll, or at its first append into a segment this process did not
    /// write before. Asks for the [`CHUNKS_AHEAD`] chunks after `pos`'s.
    pub(crate) fn starting_at(&self, segment: &Arc<Segment>, pos: usize) {
        let chunk = pos / PREFAULT_BYTES;
        self.request(segment, chunk + 1..=chunk + CHUNKS_AHEAD);
    }

    /// Called after an append moved the tail from `old_pos` to `new_pos`:
    /// for each chunk it entered, asks for the one [`CHUNKS_AHEAD`] past it
    /// (the ones before were asked for already).
    pub(crate) fn after_append(&self, segment: &Arc<Segment>, old_pos: usize, new_pos: usize) {
        let (old_chunk, new_chunk) = (old_pos / PREFAULT_BYTES, new_pos / PREFAULT_BYTES);
        if new_chunk > old_chunk {
            self.request(segment, (old_chunk + CHUNKS_AHEAD + 1).max(new_chunk + 1)..=new_chunk + CHUNKS_AHEAD);
        }
    }

    /// Never blocks; a request that does not fit is dropped (the pages then
    /// fault in the ordinary way).
    fn request(&self, segment: &Arc<Segment>, chunks: std::ops::RangeInclusive<usize>) {
        for chunk in chunks {
            if chunk * PREFAULT_BYTES >= segment.len() {
                break;
            }
            match self.requests.try_send((segment.clone(), chunk * PREFAULT_BYTES)) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

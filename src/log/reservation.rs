//! How much of a segment's disk space is reserved, as its writer goes.
//!
//! A segment file has its full length from its creation, but only a part of
//! it has blocks: the part below the tail segment's *reserved* watermark
//! (`tail_reserved` in the control file), which `posix_fallocate` gave
//! blocks before any store went there. A store into a mapped page without a
//! block makes the file system allocate one, and on a full disk the kernel
//! answers with SIGBUS, which durq could not turn into an error: so the
//! writer reserves before it stores, and a full disk is an error of the
//! `send` that needed the space (mmap contract rule 1).
//!
//! Reserving a whole segment at once would make a new queue take a whole
//! segment (64 MiB by default) per partition before its first message.
//! Instead, a segment is reserved in
//! chunks, a few ahead of the writer, the lead growing with what the
//! segment holds:
//!
//! - a new queue's segment: its first chunk only, so a small queue takes a
//!   few MiB;
//! - while the writer is in chunk `k`: chunks `0..=k + min(k, 2)`, so a
//!   segment never has more reserved than twice what it holds plus a
//!   chunk, and a busy one stays two chunks ahead;
//! - a segment made by a roll: its first three chunks at once, since its
//!   partition just filled a whole segment.
//!
//! A chunk is the largest folio the page cache may keep the file in (2 MiB
//! with 4 KiB pages; `mmap::largest_folio_bytes`), and every reservation
//! ends on a chunk boundary or at the end of the segment: the first store
//! into a page makes ext4 and XFS find blocks for the page's whole folio, so
//! a folio that reached past the reserved part would make that store fault
//! on a full disk. For the same reason, when the disk has no room for the
//! lead, the writer falls back to the chunks its frames need, not less,
//! and gives back what the failed `fallocate` kept.
//!
//! A reservation is one `fallocate` under the append mutex, once per chunk
//! the writer enters; a send that stays inside reserved space pays one
//! comparison. The prefault thread faults in each reserved range as it is
//! reserved, and never a page beyond it (`prefault.rs`).

use crate::error::Result;
use crate::log::segment::Segment;
use crate::storage::mmap;

/// How many chunks the reservation runs ahead of a busy writer.
const CHUNKS_AHEAD: usize = 2;

/// The reservation policy for the segments of one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReserveAhead {
    segment_bytes: usize,
    chunk_shift: u32,
}

impl ReserveAhead {
    pub(crate) fn new(segment_bytes: u64) -> ReserveAhead {
        ReserveAhead::with_chunk(segment_bytes, mmap::largest_folio_bytes())
    }

    #[expect(clippy::expect_used, reason = "durq builds for 64-bit targets only (storage/mmap.rs)")]
    fn with_chunk(segment_bytes: u64, chunk_bytes: usize) -> ReserveAhead {
        assert!(chunk_bytes.is_power_of_two(), "chunks of {chunk_bytes} bytes");
        let segment_bytes = usize::try_from(segment_bytes).expect("segment sizes are bounded by SEGMENT_BYTES_MAX");
        // A power of two, so the hot path divides by shifting.
        ReserveAhead { segment_bytes, chunk_shift: chunk_bytes.trailing_zeros() }
    }

    fn chunks(&self, n: usize) -> usize {
        (n << self.chunk_shift).min(self.segment_bytes)
    }

    /// What a new queue's segment reserves: its first chunk.
    pub(crate) fn at_creation(&self) -> usize {
        self.chunks(1)
    }

    /// What a segment made by a roll reserves: the first chunk and the full
    /// lead after it.
    pub(crate) fn after_roll(&self) -> usize {
        self.chunks(1 + CHUNKS_AHEAD)
    }

    /// How much of the segment should be reserved (from byte 0) before the
    /// writer stores frames up to `end`: at least `end`, plus the lead.
    #[inline]
    pub(crate) fn for_writer_at(&self, end: usize) -> usize {
        let chunk = end.saturating_sub(1) >> self.chunk_shift;
        self.chunks(chunk + 1 + chunk.min(CHUNKS_AHEAD))
    }

    /// The least that must be reserved before the writer stores frames up
    /// to `end`: the chunks they touch.
    pub(crate) fn needed_for(&self, end: usize) -> usize {
        self.chunks(end.div_ceil(1 << self.chunk_shift))
    }

    /// Reserves the blocks of `seg` from byte `from` on that stores up to
    /// `end` need, and the lead after them when the disk has room for it:
    /// up to [`for_writer_at`], else up to [`needed_for`] only. Returns how
    /// far the segment now has blocks (`from` itself when the lead did not
    /// fit and the needed chunks were there already). When even those do
    /// not fit, ENOSPC ([`Error::is_no_space`](crate::Error::is_no_space)).
    /// The lead that did not fit is given back: a failed `fallocate` may
    /// keep what it allocated before the disk ran out (ext4 does), and the
    /// last free space must not sit idle here while other files, and
    /// durq's own checkpoints, run out.
    ///
    /// [`for_writer_at`]: ReserveAhead::for_writer_at
    /// [`needed_for`]: ReserveAhead::needed_for
    pub(crate) fn reserve(&self, seg: &Segment, from: usize, end: usize) -> Result<usize> {
        let (needed, wanted) = (self.needed_for(end), self.for_writer_at(end));
        match seg.reserve(from, wanted) {
            Ok(()) => return Ok(wanted),
            // No lead to do without (the end of the segment is near).
            Err(e) if !e.is_no_space() || needed == wanted => return Err(e),
            // Past the chunks `end` needs: nothing is stored there.
            Err(_) => seg.release(needed.max(from), wanted),
        }
        if needed <= from {
            return Ok(from);
        }
        seg.reserve(from, needed)?;
        Ok(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_default_segment_reserves_its_first_chunk_then_runs_up_to_two_chunks_ahead() {
        let r = ReserveAhead::with_chunk(64 << 20, 2 * MIB);
        assert_eq!(r.at_creation(), 2 * MIB);
        assert_eq!(r.after_roll(), 6 * MIB);
        assert_eq!(r.for_writer_at(64), 2 * MIB, "a small queue keeps its first chunk");
        assert_eq!(r.for_writer_at(2 * MIB), 2 * MIB, "the end of the first chunk is still in it");
        assert_eq!(r.for_writer_at(2 * MIB + 1), 6 * MIB);
        assert_eq!(r.for_writer_at(4 * MIB + 1), 10 * MIB);
        assert_eq!(r.for_writer_at(20 * MIB + 1), 26 * MIB, "two chunks ahead");
        assert_eq!(r.for_writer_at(62 * MIB), 64 * MIB, "never past the end");
        assert_eq!(r.needed_for(20 * MIB + 1), 22 * MIB);
        assert_eq!(r.needed_for(63 * MIB + 1), 64 * MIB);
    }

    #[test]
    fn reservations_cover_the_writer_end_on_folio_boundaries_and_grow_with_it() {
        let folio = mmap::largest_folio_bytes();
        assert!(folio.is_power_of_two() && folio >= 64 << 10, "{folio}");
        for segment_bytes in [64 << 10, 68 << 10, 1 << 20, 8 << 20, 64 << 20, 100 << 20, 1 << 30] {
            let r = ReserveAhead::new(segment_bytes);
            let len = segment_bytes as usize;
            assert!(r.at_creation() <= r.after_roll() && r.after_roll() <= len);
            let mut last = 0;
            for end in (64..=len).step_by(4096 * 3).chain([len]) {
                let (reserved, needed) = (r.for_writer_at(end), r.needed_for(end));
                assert!(end <= needed && needed <= reserved && reserved <= len, "{len}: {end} -> {needed}, {reserved}");
                assert!(reserved <= 2 * end + folio, "{len}: {end} -> {reserved}: at most twice what is written");
                assert!(reserved >= last, "{len}: shrank at {end}");
                for bound in [reserved, needed] {
                    assert!(bound % folio == 0 || bound == len, "{len}: {end} -> {bound}: splits a folio");
                }
                last = reserved;
            }
        }
    }
}

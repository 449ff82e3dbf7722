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
//! Reserving a whole segment at once made a new queue of 4 partitions take
//! 256 MiB before its first message. Instead, a segment is reserved in
//! chunks (1 MiB, or a sixteenth of a smaller segment), a few ahead of the
//! writer, the lead growing with what the segment holds:
//!
//! - a new queue's segment: its first chunk only, so a small queue takes a
//!   few MiB;
//! - while the writer is in chunk `k`: chunks `0..=k + min(k, 4)`, so a
//!   segment never has more reserved than twice what it holds plus a
//!   chunk, and a busy one stays four chunks ahead;
//! - a segment made by a roll: its first five chunks at once, since its
//!   partition just filled a whole segment.
//!
//! A reservation is one `fallocate` under the append mutex, once per chunk
//! the writer enters; a send that stays inside reserved space pays one
//! comparison. The prefault thread faults in each reserved range as it is
//! reserved, and never a page beyond it (`prefault.rs`).

/// The largest reservation chunk; also the prefault thread's unit.
const CHUNK_BYTES_MAX: usize = 1 << 20;
/// The smallest chunk: a page (stores dirty whole pages).
const CHUNK_BYTES_MIN: usize = PAGE_BYTES;
/// A segment is reserved in at least this many chunks.
const CHUNKS_PER_SEGMENT_MIN: usize = 16;
/// How many chunks the reservation runs ahead of a busy writer; the
/// prefault thread faults in as much past a writer new to a segment.
pub(crate) const CHUNKS_AHEAD: usize = 4;
/// Reservations are made in whole pages.
pub(crate) const PAGE_BYTES: usize = 4096;

/// The reservation policy for the segments of one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReserveAhead {
    segment_bytes: usize,
    chunk_shift: u32,
}

impl ReserveAhead {
    pub(crate) fn new(segment_bytes: u64) -> ReserveAhead {
        let segment_bytes = usize::try_from(segment_bytes).expect("segment sizes are bounded by SEGMENT_BYTES_MAX");
        let chunk = (segment_bytes / CHUNKS_PER_SEGMENT_MIN).clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX);
        // A power of two, so the hot path divides by shifting.
        let chunk_shift = usize::BITS - 1 - chunk.leading_zeros();
        ReserveAhead { segment_bytes, chunk_shift }
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

    /// How much of the segment must be reserved (from byte 0) before the
    /// writer stores frames up to `end`: at least `end`, plus the lead.
    #[inline]
    pub(crate) fn for_writer_at(&self, end: usize) -> usize {
        let chunk = end.saturating_sub(1) >> self.chunk_shift;
        self.chunks(chunk + 1 + chunk.min(CHUNKS_AHEAD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_default_segment_reserves_its_first_mib_then_runs_up_to_four_chunks_ahead() {
        let r = ReserveAhead::new(64 << 20);
        assert_eq!(r.at_creation(), MIB);
        assert_eq!(r.after_roll(), 5 * MIB);
        assert_eq!(r.for_writer_at(64), MIB, "a small queue keeps its first chunk");
        assert_eq!(r.for_writer_at(MIB), MIB, "the end of the first chunk is still in it");
        assert_eq!(r.for_writer_at(MIB + 1), 3 * MIB);
        assert_eq!(r.for_writer_at(3 * MIB + 1), 7 * MIB);
        assert_eq!(r.for_writer_at(10 * MIB + 1), 15 * MIB, "four chunks ahead");
        assert_eq!(r.for_writer_at(62 * MIB), 64 * MIB, "never past the end");
        assert_eq!(r.for_writer_at(64 * MIB), 64 * MIB);
    }

    #[test]
    fn reservations_cover_the_writer_and_grow_with_it() {
        for segment_bytes in [64 << 10, 68 << 10, 1 << 20, 8 << 20, 64 << 20, 1 << 30] {
            let r = ReserveAhead::new(segment_bytes);
            let len = segment_bytes as usize;
            let chunk = 1 << r.chunk_shift;
            assert!((CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk) && len / chunk >= 16, "{len}: chunk {chunk}");
            assert!(r.at_creation() <= r.after_roll() && r.after_roll() <= len);
            let mut last = 0;
            for end in (64..=len).step_by(PAGE_BYTES / 2).chain([len]) {
                let reserved = r.for_writer_at(end);
                assert!(reserved >= end && reserved <= len, "{len}: {end} -> {reserved}");
                assert!(reserved <= 2 * end + chunk, "{len}: {end} -> {reserved}: at most twice what is written");
                assert!(reserved >= last, "{len}: shrank at {end}");
                assert_eq!(reserved % PAGE_BYTES, 0, "{len}: {end} -> {reserved}: whole pages");
                last = reserved;
            }
        }
    }
}

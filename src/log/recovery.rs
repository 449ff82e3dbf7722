//! Finding where a segment's log really ends, after any crash.
//!
//! Only the last two segments of a partition can have a torn tail: under
//! `Buffered` and `Interval` a roll leaves the full segment to be synced in
//! the background, but a segment is always synced in full before the one
//! after the next is created (see `partition::roll`). So the segment before
//! the last is checked first ([`check_sealed`]), then the last one.
//!
//! Recovery walks a segment's frames from the header, expecting offsets in
//! order, and stops at the first position `p` where the expected frame is
//! not found. What it does next is decided by this table (tests:
//! `recovery_row_*`):
//!
//! | # | state at `p`                                                     | verdict    | action                                 |
//! |---|------------------------------------------------------------------|------------|----------------------------------------|
//! | 1 | zero header, zeros to the end of the segment, and `synced_end` not past `p` | `Clean` | none: the tail is `p`               |
//! | 2 | fewer than a header's bytes left, all zero                       | `Clean`    | none: the segment is full              |
//! | 3a | the walk ends inside a batch: its last valid frame says the batch continues | `Torn` | cut back to the end of the last whole batch: zero from there, sync |
//! | 3 | anything else (torn header, bad magic, bad length, bad checksum (a frame of another salt included), wrong offset, zero header with bytes after it), and nothing proves the record at `p` durable | `Torn`     | zero `p` .. last non-zero byte, sync; tail is `p`; but if a synced record lies ahead, or the walk already crossed row-4 damage, keep every byte instead (as row 4) |
//! | 4 | as row 3, but the record at `p` is proven durable: the segment header's `synced_end` is past it, or a later valid frame's watermark (`offset - durable_lag`) is; or as row 1 with `synced_end` past `p` (synced records lost to zeros or a cut) | `Damaged`  | keep every byte; reading `p` fails with `Error::Corrupt`; the walk resumes at the first later valid frame, or, if none, after the last non-zero byte (and at least a header's room for each lost record) with the next offset at `synced_end` |
//!
//! Frames are checked under the segment's salt (`salt.rs`): a frame of
//! another segment, or of an earlier life of the file, is bytes that are
//! not a record, here and in the look-ahead for proof past damage.
//!
//! Row 3 is safe: a record is acknowledged only after a sync; every frame
//! written after that sync carries a watermark past it, and the header's
//! `synced_end` is raised after it. If nothing proves the record at `p`
//! durable, nothing from `p` on was acknowledged, so dropping it loses
//! nothing that was promised. Row 4 is the other side: acknowledged data was
//! damaged after the fact (bit rot, a stray write); durq refuses to deliver
//! it, refuses to repair it away, and never reuses its offsets.
//!
//! One case stays open: `synced_end` reaches the disk only with a later sync
//! or the kernel's writeback, so damage to the very last synced batch,
//! combined with a power loss before its `synced_end` was written back, is
//! taken for a torn tail. And since a `synced_end` that fails its checksum
//! proves nothing (a power cut may have torn its unsynced update), bit rot
//! on the field plus damage to the records only it proved synced is taken
//! for a torn tail too, in either of the last two segments. (Unless a
//! group's checkpoint or a dead letter proves records past the cut: then the
//! open is refused, see below.)
//!
//! The last segment's file has its own rows, applied before the walk
//! ([`check_last_file`]): a file of which nothing was written (all zeros, or
//! a torn header over zeros at full size) is a creation cut short by a power
//! cut and gets its header rewritten, unless [`Evidence`] from outside the
//! log proves that records reached it: then acknowledged records were lost
//! with it, and the open fails with `Error::Corrupt`. A header of zeros over
//! records is rewritten and the records walked; a non-zero header that fails
//! validation, or a file cut short inside its header, fails the open.
//!
//! [`Evidence`] never changes what recovery does to the log: it can only
//! refuse the outcome. A log that, recovered from its own bytes, ends before
//! the evidence fails the open ([`check_end`]): a queue is never silently
//! rewound, and no offset that evidence proves is ever reused. (A file
//! outside the log may be the wrong one, a checkpoint copied from another
//! queue: acting on it, marking records lost that never existed, would be a
//! repair no one could undo.)
//!
//! The segment before the last ([`check_sealed`]) is not walked at all when a
//! header proves it was synced in full (its own `synced_end`, or the last
//! one's, reaches the last segment's base). Otherwise it may have been cut
//! off by a power loss before its background sync, and is walked with every
//! proof known (both headers, and the watermarks of the last segment's
//! frames). It ends either where the last segment begins (or as a batch that
//! goes on there), or, like any tail, in one of the rows above: a torn end
//! (row 3, or zeros where its last records should be) that nothing proves
//! durable **cuts the log there**: its torn bytes are zeroed and the last
//! segment, whose records follow a hole and were never acknowledged either,
//! is removed. Damage proven durable (row 4) or a hole where records are
//! proven durable keeps every byte of both segments.

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::record::{self, Decoded, FRAME_ALIGN, FRAME_HEADER_BYTES, Invalid};
use crate::log::salt::Salt;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};

/// What a file outside a partition's log proves about it (gathered by
/// `group::evidence`): every record below `end` existed and was synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Every record of the partition below this offset existed.
    pub end: u64,
    /// The file that says so, and how, for messages.
    pub source: String,
}

/// The verdict on the last segment's file as found, before its walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastFile {
    /// Its header is whole: walk it (grown back to its full size with zeros
    /// first, if the file was cut after its header's proof).
    Whole,
    /// A header of zeros with bytes after it, at full size: rewrite the
    /// header, then walk them like any damage.
    HeaderLost,
    /// Nothing of it was written, and nothing proves that a record reached
    /// it: a creation cut short by a power cut. Rewrite its header.
    NeverWritten,
}

/// What the walk of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Byte position just after the last valid frame of the log's chain.
    pub tail_pos: usize,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Whether bytes after the tail must be zeroed (row 3).
    pub torn: Option<Torn>,
    /// Damaged acknowledged records inside the segment (row 4).
    pub damaged: Vec<Damage>,
    /// The highest durable watermark (`offset - durable_lag`) that a frame of
    /// the walk carries: every record of the partition below it was synced
    /// before that frame was written.
    pub watermark: u64,
}

/// The verdict on the segment before the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// A header proves it was synced in full; it was not walked.
    Proven,
    /// It ends where the last segment begins, or the damage in it is proven
    /// durable: every byte stays.
    Kept,
    /// Its end is torn and nothing proves the records lost durable: the log
    /// ends inside it, at `tail_pos` / `next_offset` (zeroing `torn`, if
    /// any), and the last segment goes.
    Cut(Scan),
}

/// A torn tail to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// First byte to zero (the tail).
    pub from: usize,
    /// One past the last non-zero byte.
    pub to: usize,
    /// What was found at `from`.
    pub reason: Found,
    /// The offset after the last valid frame of the walk: past the tail
    /// when an unfinished batch was cut off.
    pub walked_to: u64,
}

/// Acknowledged data that fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Byte position of the damaged frame.
    pub pos: usize,
    /// The offset expected there.
    pub offset: u64,
    /// What was found.
    pub reason: Found,
    /// Position of the next valid frame, where the walk resumed.
    pub resumed_at: usize,
}

/// What was found where a frame was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Bytes that do not decode as a frame.
    Invalid(Invalid),
    /// A valid frame carrying another offset than the expected one.
    WrongOffset(u64),
    /// A zero header with non-zero bytes after it.
    Hole,
    /// Whole frames of a batch whose last frame was never written.
    UnfinishedBatch,
    /// Zeros to the end of the segment where the header's `synced_end`
    /// says synced records are.
    Missing,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Invalid(i) => i.fmt(f),
            Found::WrongOffset(o) => write!(f, "frame carries offset {o}"),
            Found::Hole => f.write_str("zeros followed by data"),
            Found::UnfinishedBatch => f.write_str("a batch whose writer stopped before its last record"),
            Found::Missing => f.write_str("zeros where synced records must be"),
        }
    }
}

/// Walks the frames of a whole segment (`seg`, header included) whose first
/// record has offset `base_offset` and whose frames are checksummed with
/// `salt`, and classifies what follows the last valid frame; records below
/// `synced_end` are known to have been synced. A frame of another salt is
/// no frame here: bytes that are not a record of this segment.
/// Pure: reads `seg` only, never out of bounds, O(segment size).
pub fn scan(seg: &[u8], base_offset: u64, record_bytes_max: u32, synced_end: u64, salt: Salt) -> Scan {
    scan_known_zeros(seg, base_offset, record_bytes_max, synced_end, seg.len(), salt)
}

/// [`scan`], told that every byte of `seg` from `zeros_from` on is zero, so
/// that it need not read them: the file system reports that range as a hole
/// (`storage::data_end`). Reading the never-written end of a segment would
/// cost a page-cache page zeroed by the kernel for every 4 KiB, most of an
/// open's time for a mostly empty segment. Gives exactly what
/// [`scan`] gives whenever the promise holds (the `segment_recover` fuzz
/// target checks that).
pub fn scan_known_zeros(
    seg: &[u8],
    base_offset: u64,
    record_bytes_max: u32,
    synced_end: u64,
    zeros_from: usize,
    salt: Salt,
) -> Scan {
    let mut pos = SEGMENT_HEADER_BYTES.min(seg.len());
    let mut next = base_offset;
    let mut damaged = Vec::new();
    // Where the last whole batch ends: a batch whose writer died before its
    // last frame is cut back to here.
    let mut whole = (pos, next);
    let mut watermark = 0;
    loop {
        let found = match record::decode(&seg[pos..], record_bytes_max, salt) {
            // The last offset there is, u64::MAX, would leave no offset
            // for the next record: a frame claiming it is not part of any
            // log durq writes (only a hostile file has one).
            Decoded::Frame(f) if f.meta.offset == next && next < u64::MAX => {
                watermark = watermark.max(f.meta.offset.saturating_sub(u64::from(f.meta.durable_lag)));
                pos += f.len;
                next += 1;
                if !f.meta.batch_continues {
                    whole = (pos, next);
                }
                continue;
            }
            Decoded::Frame(f) => Found::WrongOffset(f.meta.offset),
            Decoded::Zero | Decoded::Invalid(Invalid::Truncated) => {
                let to = last_nonzero_end(seg, pos, zeros_from);
                // Zeros to the end are where the log ends, unless the header
                // says records from here on were synced: then acknowledged
                // records were lost to zeros (a lost write, a cut file). That
                // is damage (row 4), not an end whose offsets the next append
                // would reuse. A segment with no room left cannot hold them.
                let synced_missing = next < synced_end && pos + FRAME_HEADER_BYTES <= seg.len();
                if to == pos && !synced_missing {
                    if whole.0 == pos {
                        return Scan { tail_pos: pos, next_offset: next, torn: None, damaged, watermark };
                    }
                    let torn = Torn { from: whole.0, to, reason: Found::UnfinishedBatch, walked_to: next };
                    return Scan { tail_pos: whole.0, next_offset: whole.1, torn: Some(torn), damaged, watermark };
                }
                if to == pos { Found::Missing } else { Found::Hole }
            }
            Decoded::Invalid(i) => Found::Invalid(i),
        };
        let (resume, proven_by_frames) = find_resume(seg, pos, next, record_bytes_max, zeros_from, salt);
        if !(proven_by_frames || next < synced_end) {
            let to = last_nonzero_end(seg, pos, zeros_from);
            // Zeroing must never destroy a record known to be synced: none
            // lies ahead here, since `next` is at or past `synced_end` and
            // every record ahead has a higher offset. Keep every byte
            // instead when the walk already crossed proven damage (past that
            // point it cannot tell records from bytes inside a damaged one,
            // and readers stop at the first damage anyway): appends go after
            // it all, with offsets past `next` (and so past `synced_end`).
            if !damaged.is_empty() {
                let after = to.next_multiple_of(FRAME_ALIGN).min(seg.len());
                damaged.push(Damage { pos, offset: next, reason: found, resumed_at: after });
                return Scan { tail_pos: after, next_offset: next.saturating_add(1), torn: None, damaged, watermark };
            }
            let reason = if whole.0 < pos { Found::UnfinishedBatch } else { found };
            let torn = Torn { from: whole.0, to, reason, walked_to: next };
            return Scan { tail_pos: whole.0, next_offset: whole.1, torn: Some(torn), damaged, watermark };
        }
        match resume {
            Some(resume) => {
                damaged.push(Damage { pos, offset: next, reason: found, resumed_at: resume.pos });
                pos = resume.pos;
                next = resume.offset;
                // Batch boundaries across damage cannot be known: resume as
                // if a batch starts here.
                whole = (pos, next);
            }
            None => {
                // Acknowledged records up to `synced_end` are damaged and
                // nothing valid follows: keep their bytes, append after them,
                // and never reuse their offsets. Leave at least a header's
                // room for each of them (when they were lost to zeros there
                // are no bytes to keep): a later walk looks for the record
                // that follows them no nearer than that (see `find_resume`).
                let lost = synced_end.saturating_sub(next).saturating_mul(FRAME_HEADER_BYTES as u64);
                let room = pos.saturating_add(usize::try_from(lost).unwrap_or(usize::MAX));
                let after = last_nonzero_end(seg, pos, zeros_from).max(room).min(seg.len());
                let after = after.next_multiple_of(FRAME_ALIGN).min(seg.len());
                damaged.push(Damage { pos, offset: next, reason: found, resumed_at: after });
                return Scan {
                    tail_pos: after,
                    next_offset: synced_end.max(next.saturating_add(1)),
                    torn: None,
                    damaged,
                    watermark,
                };
            }
        }
    }
}

/// Judges the last segment's file (`found`: its bytes as they are on disk,
/// shorter than `segment_bytes` if the file was cut), knowing that every
/// record below `evidence` existed. Pure, like [`scan`].
///
/// A segment's creation reserves the whole file (one metadata operation)
/// before it writes the header, and no record is written before the header
/// is durable: a power cut during it leaves nothing but zeros (often an
/// empty file), or, at full size, a header torn over zeros. That is a
/// creation cut short, unless evidence proves a record at or past the
/// segment's base: then the segment held acknowledged records, and losing
/// it whole is damage, never repaired away. A file cut short (shorter, not
/// empty) is damage too: it is walked if its header and the proof of what
/// it synced (`synced_end`, bytes 40..52) survived the cut, and refused if
/// the cut took them (what it held can no longer be known).
pub fn check_last_file(
    found: &[u8],
    path: &Path,
    partition: u32,
    base_offset: u64,
    segment_bytes: u64,
    evidence: Option<&Evidence>,
) -> Result<LastFile> {
    let cut = (found.len() as u64) < segment_bytes;
    let header = &found[..SEGMENT_HEADER_BYTES.min(found.len())];
    let header_zero = all_zero(header);
    let rest = found.get(SEGMENT_HEADER_BYTES..).unwrap_or(&[]);
    // Only a header that is not whole can have been cut short; the rest is
    // read only then.
    let never_written = (header_zero || !cut && !segment::header_is_written(found)) && all_zero(rest);
    if never_written {
        if let Some(e) = evidence.filter(|e| e.end > base_offset) {
            return Err(Error::corrupt(
                path,
                0,
                Some(base_offset),
                format!(
                    "nothing of this segment is left ({} bytes, no header, no record), but {} proves that records {base_offset}..{} existed: acknowledged records were lost with it (a creation cut short holds none)",
                    found.len(),
                    e.source,
                    e.end
                ),
            ));
        }
        return Ok(LastFile::NeverWritten);
    }
    if header_zero && !cut {
        return Ok(LastFile::HeaderLost);
    }
    segment::check_header(found, path, partition, base_offset, segment_bytes)?;
    if cut && segment::decode_synced_end(found).is_none() {
        return Err(Error::corrupt(
            path,
            0,
            None,
            format!(
                "segment file cut to {} bytes, inside its header: the proof of what it synced is gone, so the acknowledged records it held cannot be known",
                found.len()
            ),
        ));
    }
    Ok(LastFile::Whole)
}

/// Fails when a partition's log, as recovered from its own bytes, ends (at
/// offset `next_offset`, byte `tail_pos` of segment file `file`) before
/// `evidence` proves records existed: going on would reuse their offsets.
/// Pure, like [`scan`].
pub fn check_end(next_offset: u64, evidence: Option<&Evidence>, file: &Path, tail_pos: usize) -> Result<()> {
    match evidence {
        Some(e) if e.end > next_offset => Err(Error::corrupt(
            file,
            tail_pos as u64,
            Some(next_offset),
            format!(
                "the log ends at offset {next_offset}, but {} proves that records up to {} existed: acknowledged records were lost (or that file is not this queue's)",
                e.source,
                e.end - 1
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether a header proves that the segment before the last (`prev`, whole
/// or just its header) was synced in full: its own `synced_end`, or the
/// last segment's (`last`, starting at `last_base`), reaches `last_base`.
pub fn proven_sealed(prev: &[u8], last: &[u8], last_base: u64) -> bool {
    [prev, last].into_iter().filter_map(segment::decode_synced_end).any(|end| end >= last_base)
}

/// Decides what recovery does with the segment before the last (`prev`,
/// whole, header included, first record `prev_base`), which the last segment
/// (`last`, whole, first record `last_base`) follows. Pure, like [`scan`].
pub fn check_sealed(prev: &[u8], prev_base: u64, last: &[u8], last_base: u64, record_bytes_max: u32) -> Sealed {
    if proven_sealed(prev, last, last_base) {
        return Sealed::Proven;
    }
    // A `synced_end` that fails its checksum proves nothing, here as in the
    // last segment: it is rewritten in place without a sync (a flush raises
    // it, sealing sets it), so a power cut tears it as easily as any unsynced
    // write. It is left out, never taken for a lost proof of records that
    // were never acknowledged.
    let headers = [prev, last].into_iter().filter_map(segment::decode_synced_end).max().unwrap_or(0);
    let salt_of = |seg, base| segment_salt(seg, base, record_bytes_max, seg.len()).unwrap_or(Salt::UNSALTED);
    let frames = scan(last, last_base, record_bytes_max, last_base, salt_of(last, last_base)).watermark;
    // Records below `proven` were synced; none of `prev` is at `last_base`.
    let proven = headers.max(frames).min(last_base);
    let s = scan(prev, prev_base, record_bytes_max, proven, salt_of(prev, prev_base));
    // A batch larger than what was left of `prev` goes on in the next
    // segment: its frames here are whole.
    let goes_on_in_last = s.torn.is_some_and(|t| t.reason == Found::UnfinishedBatch && t.walked_to == last_base);
    let complete = s.torn.is_none() && s.next_offset >= last_base;
    // `scan` keeps every byte (no `torn`) past proven damage, zeros where
    // proven records belong included (row 4); a segment with no room left
    // for them ends clean, short of them: a proven loss too.
    let proven_loss = s.torn.is_none() && (!s.damaged.is_empty() || s.next_offset < proven);
    if complete || goes_on_in_last || proven_loss { Sealed::Kept } else { Sealed::Cut(s) }
}

/// The salt of the frames of a segment (`seg`, whole, first record
/// `base_offset`, zeros from `zeros_from` on): its header's, or, when its
/// header is not whole (lost to zeros, row 5z), the salt that the first
/// plausible frame was written with (a frame-shaped header with zero
/// padding and an offset it could carry there, see `find_resume`),
/// found from its bytes and checksum ([`record::salt_of`]). `None` when
/// neither is there: then no frame of the segment validates under any salt.
/// Pure, like [`scan`].
pub fn segment_salt(seg: &[u8], base_offset: u64, record_bytes_max: u32, zeros_from: usize) -> Option<Salt> {
    if segment::header_is_whole(seg) {
        return segment::header_salt(seg);
    }
    let mut at = SEGMENT_HEADER_BYTES;
    while at + FRAME_HEADER_BYTES <= seg.len() && at < zeros_from {
        if all_zero(&seg[at..at + FRAME_HEADER_BYTES]) {
            // As in `find_resume`: hop over a run of zeros whole.
            let run_end = first_nonzero(seg, at + FRAME_HEADER_BYTES);
            at = (run_end + 1).saturating_sub(FRAME_HEADER_BYTES).next_multiple_of(FRAME_ALIGN).max(at + FRAME_ALIGN);
            continue;
        }
        let most = base_offset.saturating_add(((at - SEGMENT_HEADER_BYTES) / FRAME_HEADER_BYTES) as u64);
        if let Ok(Some((offset, _))) = record::peek_header(&seg[at..], record_bytes_max)
            && (base_offset..=most).contains(&offset)
            && let Some(salt) = record::salt_of(&seg[at..], record_bytes_max)
        {
            return Some(salt);
        }
        at += FRAME_ALIGN;
    }
    None
}

struct Resume {
    pos: usize,
    offset: u64,
}

/// Looks after `pos` for valid frames: returns the first one with an
/// offset past `expected` (where a walk can resume), and whether any of
/// them says the record `expected` was durable when it was written.
///
/// Only plausible frames count: every record takes at least a header's
/// bytes, so a frame `n` bytes after `pos` can carry at most offset
/// `expected + n / 32`. A frame inside a damaged record's payload, or a
/// stray one with a wild offset, cannot hijack the walk that way.
fn find_resume(
    seg: &[u8],
    pos: usize,
    expected: u64,
    record_bytes_max: u32,
    zeros_from: usize,
    salt: Salt,
) -> (Option<Resume>, bool) {
    let mut resume = None;
    let mut at = pos + FRAME_ALIGN;
    // No frame starts in the zeros: a header of zeros is no frame.
    while at + FRAME_HEADER_BYTES <= seg.len() && at < zeros_from {
        if all_zero(&seg[at..at + FRAME_HEADER_BYTES]) {
            // Hop over the whole run of zeros (after a torn tail, usually
            // the rest of the segment) instead of decoding every aligned
            // position in it: every header inside the run is zeros, so the
            // first possible frame's header ends past the run.
            let run_end = first_nonzero(seg, at + FRAME_HEADER_BYTES);
            at = (run_end + 1).saturating_sub(FRAME_HEADER_BYTES).next_multiple_of(FRAME_ALIGN).max(at + FRAME_ALIGN);
            continue;
        }
        let most = expected.saturating_add(((at - pos) / FRAME_HEADER_BYTES) as u64);
        if let Decoded::Frame(f) = record::decode(&seg[at..], record_bytes_max, salt)
            && f.meta.offset > expected
            && f.meta.offset <= most
        {
            resume.get_or_insert(Resume { pos: at, offset: f.meta.offset });
            let durable_then = f.meta.offset.saturating_sub(u64::from(f.meta.durable_lag));
            if durable_then > expected {
                return (resume, true);
            }
        }
        at += FRAME_ALIGN;
    }
    (resume, false)
}

/// True if every byte of `bytes` is zero; branch-free per byte, so the
/// compiler vectorises it over whole blocks.
fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// The position of the first non-zero byte of `seg` at or after `from`
/// (`seg.len()` if there is none), a block at a time.
fn first_nonzero(seg: &[u8], from: usize) -> usize {
    const BLOCK: usize = 4096;
    let mut start = from.min(seg.len());
    while start < seg.len() {
        let block = &seg[start..(start + BLOCK).min(seg.len())];
        // The vectorised test first: `position` goes a byte at a time.
        if !all_zero(block)
            && let Some(at) = block.iter().position(|&b| b != 0)
        {
            return start + at;
        }
        start += block.len();
    }
    seg.len()
}

/// The end of the last non-zero byte of `seg` at or after `from` (`from` if
/// there is none), knowing that the bytes from `zeros_from` on are zero.
fn last_nonzero_end(seg: &[u8], from: usize, zeros_from: usize) -> usize {
    const BLOCK: usize = 4096;
    let mut end = zeros_from.clamp(from, seg.len());
    while end > from {
        let start = end.saturating_sub(BLOCK).max(from);
        let block = &seg[start..end];
        if !all_zero(block)
            && let Some(last) = block.iter().rposition(|&b| b != 0)
        {
            return start + last + 1;
        }
        end = start;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::FrameMeta;

    const MAX: u32 = 1 << 16;
    const SALT: Salt = Salt::new(0x5a17_c0de);

    /// A segment image with `n` records; record `i` claims the durable
    /// watermark `durable(i)`.
    fn segment(n: u64, durable: impl Fn(u64) -> u64) -> (Vec<u8>, Vec<usize>) {
        let mut seg = vec![0u8; 8192];
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut starts = Vec::new();
        for i in 0..n {
            let meta = FrameMeta {
                offset: 100 + i,
                timestamp_ms: 1,
                durable_lag: (100 + i - durable(i)) as u32,
                batch_continues: false,
            };
            let frame = record::encode(meta, None, format!("message {i}").as_bytes(), SALT);
            starts.push(pos);
            seg[pos..pos + frame.len()].copy_from_slice(&frame);
            pos += frame.len();
        }
        starts.push(pos);
        (seg, starts)
    }

    #[test]
    fn recovery_row_1_clean_end() {
        let (seg, starts) = segment(5, |_| 100);
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn, scan.damaged), (starts[5], 105, None, vec![]));
    }

    #[test]
    fn recovery_row_1_empty_segment() {
        let seg = vec![0u8; 4096];
        let scan = super::scan(&seg, 7, MAX, 7, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn), (SEGMENT_HEADER_BYTES, 7, None));
    }

    #[test]
    fn recovery_row_2_full_segment() {
        let (mut seg, starts) = segment(3, |_| 100);
        seg.truncate(starts[3] + FRAME_HEADER_BYTES - 8);
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn), (starts[3], 103, None));
        // A `synced_end` past its records (the next segment's, after a
        // seal) claims nothing about a segment that has no room left.
        let scan = super::scan(&seg, 100, MAX, 110, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn, scan.damaged), (starts[3], 103, None, vec![]));
    }

    #[test]
    fn recovery_row_3_torn_tail_at_every_byte_of_the_last_record() {
        let (full, starts) = segment(4, |i| 100 + i);
        for cut in starts[3]..starts[4] {
            let mut seg = full.clone();
            seg[cut..].fill(0);
            if seg == full {
                continue; // the cut fell in the frame's zero padding
            }
            let scan = super::scan(&seg, 100, MAX, 100, SALT);
            assert_eq!((scan.tail_pos, scan.next_offset), (starts[3], 103), "cut at {cut}");
            assert!(scan.damaged.is_empty());
            match scan.torn {
                None => assert_eq!(cut, starts[3], "only a cut at the frame start leaves no bytes"),
                Some(t) => assert_eq!((t.from, t.to <= cut), (starts[3], true)),
            }
        }
    }

    #[test]
    fn recovery_row_3_garbage_and_holes_after_unacknowledged_records() {
        // Records 102 and 103 were never synced (every watermark <= 102), so
        // damage at 102 with 103 intact behind it is a torn tail.
        let (mut seg, starts) = segment(4, |i| (100 + i).min(102));
        seg[starts[2] + 40] ^= 0xff;
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        let torn = scan.torn.expect("torn");
        assert_eq!((scan.tail_pos, scan.next_offset, torn.from), (starts[2], 102, starts[2]));
        assert!(torn.to > starts[3] && torn.to <= starts[4], "zeroing reaches the last written byte");
        assert_eq!(torn.reason, Found::Invalid(Invalid::BadChecksum));

        let (mut seg, starts) = segment(4, |_| 100);
        seg[starts[1]..starts[2]].fill(0);
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!(scan.torn.map(|t| t.reason), Some(Found::Hole));
        assert_eq!(scan.next_offset, 101);
    }

    #[test]
    fn recovery_row_3_wrong_offset_is_torn() {
        let (mut seg, starts) = segment(3, |_| 100);
        let stale = record::encode(
            FrameMeta { offset: 7, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
            None,
            b"message 2",
            SALT,
        );
        seg[starts[2]..starts[2] + stale.len()].copy_from_slice(&stale);
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!(scan.torn.map(|t| t.reason), Some(Found::WrongOffset(7)));
    }

    #[test]
    fn recovery_row_4_damage_before_acknowledged_data_is_kept_and_reported() {
        // Record 104 says everything below 104 was durable: damage at 101 hit
        // acknowledged data.
        let (mut seg, starts) = segment(5, |i| 100 + i);
        seg[starts[1] + 33] ^= 1;
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!(scan.torn, None);
        assert_eq!((scan.tail_pos, scan.next_offset), (starts[5], 105));
        assert_eq!(
            scan.damaged,
            vec![Damage {
                pos: starts[1],
                offset: 101,
                reason: Found::Invalid(Invalid::BadChecksum),
                resumed_at: starts[2]
            }]
        );
    }

    #[test]
    fn recovery_row_4_the_walk_resumes_after_a_long_run_of_zeros_and_a_hint_changes_nothing() {
        // 100 intact, 101 damaged, then 40 KB of zeros (a hole in the file),
        // then 102 and 103 at an aligned position that is no multiple of the
        // scan's 4 KiB blocks; 103 says 102 was durable, so the damage hit
        // acknowledged data and the walk must find 102 across the zeros.
        let frame = |i: u64, durable: u64| {
            let meta =
                FrameMeta { offset: i, timestamp_ms: 1, durable_lag: (i - durable) as u32, batch_continues: false };
            record::encode(meta, None, format!("message {i}").as_bytes(), SALT)
        };
        let mut seg = vec![0u8; 64 << 10];
        let mut pos = SEGMENT_HEADER_BYTES;
        for (i, durable) in [(100, 100), (101, 101)] {
            let f = frame(i, durable);
            seg[pos..pos + f.len()].copy_from_slice(&f);
            pos += f.len();
        }
        let damaged_at = pos - frame(101, 101).len();
        seg[damaged_at + 20] ^= 0x40;
        let resume = (pos + 40_000).next_multiple_of(FRAME_ALIGN);
        assert_ne!(resume % 64, 0);
        let mut at = resume;
        for (i, durable) in [(102, 102), (103, 103)] {
            let f = frame(i, durable);
            seg[at..at + f.len()].copy_from_slice(&f);
            at += f.len();
        }
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!(scan.torn, None);
        assert_eq!((scan.tail_pos, scan.next_offset), (at, 104));
        assert_eq!(
            scan.damaged,
            vec![Damage {
                pos: damaged_at,
                offset: 101,
                reason: Found::Invalid(Invalid::BadChecksum),
                resumed_at: resume
            }]
        );
        for zeros_from in [at, at.next_multiple_of(4096), seg.len()] {
            assert_eq!(super::scan_known_zeros(&seg, 100, MAX, 100, zeros_from, SALT), scan, "zeros from {zeros_from}");
        }
    }

    #[test]
    fn recovery_told_where_the_zeros_begin_looks_for_no_frame_there() {
        // Record 101 is damaged and ends where the file system says the
        // zeros begin. A frame there (which the promise rules out, so only
        // a scan that looks where it was told not to would see it) would
        // prove 101 acknowledged; the scan must take 101 for a torn tail.
        let (mut seg, starts) = segment(2, |_| 100);
        seg[starts[1] + 33] ^= 0x01;
        let proof = record::encode(
            FrameMeta { offset: 102, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
            None,
            b"past the zeros",
            SALT,
        );
        seg[starts[2]..starts[2] + proof.len()].copy_from_slice(&proof);
        let scan = super::scan_known_zeros(&seg, 100, MAX, 100, starts[2], SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.damaged), (starts[1], 101, vec![]));
        assert_eq!(scan.torn.map(|t| (t.from, t.reason)), Some((starts[1], Found::Invalid(Invalid::BadChecksum))));
    }

    #[test]
    fn recovery_row_3a_a_batch_cut_short_is_removed_whole() {
        // Records 100..=102 are whole; 103 and 104 begin a batch whose last
        // frame was never written.
        let mut seg = vec![0u8; 8192];
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut starts = Vec::new();
        for i in 0..5u64 {
            let meta = FrameMeta { offset: 100 + i, timestamp_ms: 1, durable_lag: 0, batch_continues: i >= 3 };
            let frame = record::encode(meta, None, b"payload", SALT);
            starts.push(pos);
            seg[pos..pos + frame.len()].copy_from_slice(&frame);
            pos += frame.len();
        }
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset), (starts[3], 103));
        assert_eq!(scan.torn.map(|t| (t.from, t.to, t.reason)), Some((starts[3], pos, Found::UnfinishedBatch)));
        // Garbage after the unfinished batch, in the header that would come
        // next or after a header of zeros: the cut still goes back to the
        // batch's first frame, and says why (`check_sealed` keeps a batch
        // that goes on in the next segment only for this reason).
        for garbage_at in [pos + 5, pos + 40] {
            let mut seg = seg.clone();
            seg[garbage_at] = 0x99;
            let scan = super::scan(&seg, 100, MAX, 100, SALT);
            assert_eq!((scan.tail_pos, scan.next_offset), (starts[3], 103), "garbage at {garbage_at}");
            let torn = scan.torn.expect("torn");
            assert_eq!((torn.from, torn.to, torn.reason), (starts[3], garbage_at + 1, Found::UnfinishedBatch));
            assert_eq!(torn.walked_to, 105, "the walk went through the whole frames of the batch");
        }
    }

    #[test]
    fn recovery_row_3_bytes_that_cancel_out_under_xor_are_garbage_not_zeros() {
        // Two equal bytes after a clean end: an XOR of the block would call
        // them zeros and take the tail for a clean end (row 1), leaving
        // garbage that the next appends would have to write over.
        let (mut seg, starts) = segment(3, |_| 100);
        let garbage_at = starts[3] + 40;
        seg[garbage_at..garbage_at + 2].copy_from_slice(&[0x99, 0x99]);
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset), (starts[3], 103));
        let torn = Torn { from: starts[3], to: garbage_at + 2, reason: Found::Hole, walked_to: 103 };
        assert_eq!(scan.torn, Some(torn));
    }

    #[test]
    fn recovery_row_3_a_frame_claiming_an_offset_too_far_ahead_is_no_place_to_resume() {
        // Record 100 fills most of the first page; record 101 is damaged and
        // carries, 40 bytes past its start, a valid frame claiming offset
        // 121 with every record below it durable (a payload that holds a
        // frame, or a stray write). 40 bytes hold one record, not twenty:
        // that frame is neither where the walk resumes nor a proof that 101
        // was acknowledged, and 102 and 103 prove nothing either, so 101 on
        // is a torn tail. Kept in fuzz/regressions/segment_recover too.
        let (seg, starts) = planted_frame_too_far_ahead();
        let scan = super::scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.damaged), (starts[1], 101, vec![]));
        let torn = scan.torn.expect("torn");
        assert_eq!((torn.from, torn.reason), (starts[1], Found::Invalid(Invalid::BadChecksum)));
        assert!(torn.to > starts[3] && torn.to <= starts[4], "zeroing reaches the last written byte");
    }

    /// The segment of the test above: records 100..=103 (starting at
    /// `starts`), record 101 damaged, with a frame claiming offset 121
    /// planted 40 bytes into it.
    fn planted_frame_too_far_ahead() -> (Vec<u8>, Vec<usize>) {
        let frame = |offset: u64, durable: u64, payload: &[u8]| {
            let meta =
                FrameMeta { offset, timestamp_ms: 1, durable_lag: (offset - durable) as u32, batch_continues: false };
            record::encode(meta, None, payload, SALT)
        };
        let planted = frame(121, 121, b"planted");
        let carrier = [&[b'.'; 8][..], &planted, &[b'.'; 16]].concat();
        let payloads = [vec![b'a'; 3968], carrier, b"message 2".to_vec(), b"message 3".to_vec()];
        let mut seg = vec![0u8; 8192];
        let mut starts = vec![SEGMENT_HEADER_BYTES];
        for (i, payload) in payloads.iter().enumerate() {
            let f = frame(100 + i as u64, 100, payload);
            let at = starts[i];
            seg[at..at + f.len()].copy_from_slice(&f);
            starts.push(at + f.len());
        }
        assert_eq!(&seg[starts[1] + 40..starts[1] + 80], &planted[..]);
        seg[starts[1] + 16] ^= 0x01;
        (seg, starts)
    }

    #[test]
    fn recovery_never_zeroes_a_record_below_synced_end() {
        // Frames that prove nothing (every watermark 100), damage to any
        // record or a cut at any record, and every `synced_end`: whatever
        // the header says was synced stays, whole and walked or kept as
        // damage, and its offsets are never reused.
        let (full, starts) = segment(5, |_| 100);
        // (Records lost to zeros leave no bytes to keep: the walk leaves a
        // header's room for each, see row 4.)
        type Damage = fn(&mut [u8], usize);
        let damages: [(&str, Damage, bool); 3] = [
            ("flipped byte", |seg, at| seg[at + 33] ^= 0x08, true),
            ("zeroed header", |seg, at| seg[at..at + FRAME_HEADER_BYTES].fill(0), true),
            ("zeros from there", |seg, at| seg[at..].fill(0), false),
        ];
        for (what, damage, bytes_left) in damages {
            for record in 0..5 {
                for synced_end in 100..=105u64 {
                    let mut seg = full.clone();
                    damage(&mut seg, starts[record]);
                    let scan = super::scan(&seg, 100, MAX, synced_end, SALT);
                    let synced_bytes_end = starts[(synced_end - 100) as usize];
                    let case = format!("{what} at record {}, synced_end {synced_end}: {scan:?}", 100 + record);
                    if let Some(torn) = scan.torn {
                        assert!(torn.from >= synced_bytes_end, "{case}");
                    }
                    assert!(scan.next_offset >= synced_end, "{case}");
                    assert!(scan.tail_pos >= synced_bytes_end || !bytes_left, "{case}");
                }
            }
        }
    }

    #[test]
    fn recovery_row_4_damage_to_the_last_synced_batch_is_proven_by_synced_end() {
        // Records 103 and 104 were one batch, synced (synced_end = 105), and
        // nothing was written after them: only the header can prove them.
        let (mut seg, starts) = segment(5, |i| (100 + i).min(103));
        seg[starts[3] + 40] ^= 1;
        let torn = super::scan(&seg, 100, MAX, 103, SALT);
        assert!(torn.torn.is_some(), "without proof it is a torn tail");
        let scan = super::scan(&seg, 100, MAX, 105, SALT);
        assert_eq!(scan.torn, None);
        assert_eq!((scan.tail_pos, scan.next_offset), (starts[5], 105), "record 104 is kept");
        assert_eq!(scan.damaged.iter().map(|d| d.offset).collect::<Vec<_>>(), [103]);
        // Damage to the very last record: nothing follows, offsets are not reused.
        let (mut seg, starts) = segment(5, |i| (100 + i).min(104));
        seg[starts[4] + 33] ^= 1;
        let scan = super::scan(&seg, 100, MAX, 105, SALT);
        assert_eq!(scan.torn, None);
        assert_eq!(scan.next_offset, 105);
        assert!(scan.tail_pos >= starts[5] - 8 && scan.tail_pos.is_multiple_of(8));
    }

    /// The segment before the last for [`check_sealed`]: records `100..105`
    /// (record `i` claiming the watermark `durable(i)`), a header whose
    /// `synced_end` is `synced_end`; and the last segment, starting at 105,
    /// with one record claiming the watermark `last_watermark` and a header
    /// claiming `last_synced_end`.
    fn sealed_pair(
        durable: impl Fn(u64) -> u64,
        synced_end: u64,
        last_watermark: u64,
        last_synced_end: u64,
    ) -> (Vec<u8>, Vec<usize>, Vec<u8>) {
        let (mut prev, starts) = segment(5, durable);
        prev[..SEGMENT_HEADER_BYTES].copy_from_slice(&segment::encode_header_synced_to(0, 100, 8192, synced_end, SALT));
        let (mut last, _) = segment(0, |_| 0);
        last[..SEGMENT_HEADER_BYTES].copy_from_slice(&segment::encode_header_synced_to(
            0,
            105,
            8192,
            last_synced_end,
            SALT,
        ));
        let meta = FrameMeta {
            offset: 105,
            timestamp_ms: 1,
            durable_lag: (105 - last_watermark) as u32,
            batch_continues: false,
        };
        let frame = record::encode(meta, None, b"next segment", SALT);
        last[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + frame.len()].copy_from_slice(&frame);
        (prev, starts, last)
    }

    fn cut(verdict: Sealed) -> Scan {
        match verdict {
            Sealed::Cut(scan) => scan,
            other => panic!("expected a cut, got {other:?}"),
        }
    }

    #[test]
    fn recovery_sealed_a_header_proof_means_the_segment_is_not_walked() {
        // Its own proof, or the last segment's: garbage in it stays unseen.
        for (synced_end, last_synced_end) in [(105, 100), (100, 105), (100, 107)] {
            let (mut prev, starts, last) = sealed_pair(|_| 100, synced_end, 100, last_synced_end);
            prev[starts[2]..].fill(0x5a);
            assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Proven);
        }
    }

    #[test]
    fn recovery_sealed_a_complete_unproven_segment_is_kept() {
        let (prev, _, last) = sealed_pair(|_| 100, 100, 100, 100);
        assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Kept);
    }

    #[test]
    fn recovery_sealed_zeros_where_its_last_records_belong_cut_the_log() {
        // The pages of records 103 and 104 never reached the disk.
        let (mut prev, starts, last) = sealed_pair(|_| 100, 100, 100, 100);
        prev[starts[3]..].fill(0);
        let scan = cut(check_sealed(&prev, 100, &last, 105, MAX));
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn), (starts[3], 103, None));
    }

    #[test]
    fn recovery_sealed_a_torn_record_cuts_the_log_before_it() {
        let (mut prev, starts, last) = sealed_pair(|_| 100, 100, 100, 100);
        prev[starts[4] + 40] ^= 0x10;
        let scan = cut(check_sealed(&prev, 100, &last, 105, MAX));
        assert_eq!((scan.tail_pos, scan.next_offset), (starts[4], 104));
        let torn = scan.torn.expect("bytes to zero");
        assert_eq!(torn.from, starts[4]);
        assert!(torn.to > starts[4] + 40 && torn.to <= starts[5], "zeroing reaches the last written byte");
    }

    #[test]
    fn recovery_sealed_frames_of_the_last_segment_prove_damage_acknowledged() {
        // Record 105, in the last segment, was written when everything below
        // 105 was durable: damage at 102 is damage to acknowledged data.
        let (mut prev, starts, last) = sealed_pair(|_| 100, 100, 105, 100);
        prev[starts[2] + 40] ^= 0x10;
        assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Kept);
        // Zeros where proven records belong are kept too: readers report them.
        let (mut prev, starts, last) = sealed_pair(|_| 100, 100, 104, 100);
        prev[starts[3]..].fill(0);
        assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Kept);
        // A watermark below the damage proves nothing about it.
        let (mut prev, starts, last) = sealed_pair(|_| 100, 100, 102, 100);
        prev[starts[2] + 40] ^= 0x10;
        assert_eq!(cut(check_sealed(&prev, 100, &last, 105, MAX)).next_offset, 102);
    }

    #[test]
    fn recovery_sealed_a_torn_proof_in_either_header_proves_nothing() {
        // A power cut while a flush's or a seal's new `synced_end` was being
        // written leaves the field failing its checksum: no proof, and the
        // torn tail is cut as if the field held the base.
        for torn in [0usize, 1] {
            let (mut prev, starts, mut last) = sealed_pair(|_| 100, 100, 100, 100);
            prev[starts[3]..].fill(0);
            let proof = if torn == 0 { &mut prev } else { &mut last };
            proof[44] ^= 0x5a;
            proof[49] ^= 0x3c;
            assert_eq!(cut(check_sealed(&prev, 100, &last, 105, MAX)).next_offset, 103, "header {torn}");
        }
        // Nor did a last segment whose creation was cut short hold one.
        let (mut prev, starts, mut last) = sealed_pair(|_| 100, 100, 100, 100);
        prev[starts[3]..].fill(0);
        last.fill(0);
        assert_eq!(cut(check_sealed(&prev, 100, &last, 105, MAX)).next_offset, 103);
    }

    #[test]
    fn recovery_sealed_a_batch_that_goes_on_in_the_last_segment_is_kept() {
        let mut prev = vec![0u8; 8192];
        let mut pos = SEGMENT_HEADER_BYTES;
        for i in 0..5u64 {
            let meta = FrameMeta { offset: 100 + i, timestamp_ms: 1, durable_lag: 0, batch_continues: i >= 3 };
            let frame = record::encode(meta, None, b"payload", SALT);
            prev[pos..pos + frame.len()].copy_from_slice(&frame);
            pos += frame.len();
        }
        let (_, _, last) = sealed_pair(|_| 100, 100, 100, 100);
        assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Kept);
        // Not when records of the batch are missing before the next segment.
        assert!(matches!(check_sealed(&prev, 100, &last, 106, MAX), Sealed::Cut(_)));
        // A stray byte after its frames (in the header that would come next,
        // or after a header of zeros) does not make them a torn end.
        for stray_at in [pos + 5, pos + 40] {
            let mut prev = prev.clone();
            prev[stray_at] = 0x99;
            assert_eq!(check_sealed(&prev, 100, &last, 105, MAX), Sealed::Kept, "stray byte at {stray_at}");
        }
    }

    #[test]
    fn recovery_sealed_a_full_segment_short_of_proven_records_is_kept() {
        // The segment before the last holds 100..=104 and has no room left;
        // the last one starts at 107, so 105 and 106 are nowhere. If a frame
        // of the last segment proves them synced, that is a loss to report,
        // not a torn end to cut; if it proves only what is there, the log
        // is cut after 104 (and the last segment goes).
        let (mut prev, starts) = segment(5, |_| 100);
        prev[..SEGMENT_HEADER_BYTES].copy_from_slice(&segment::encode_header_synced_to(0, 100, 8192, 100, SALT));
        prev.truncate(starts[5] + FRAME_HEADER_BYTES - 8);
        let last = |watermark: u64| {
            let mut last = vec![0u8; 8192];
            last[..SEGMENT_HEADER_BYTES].copy_from_slice(&segment::encode_header_synced_to(0, 107, 8192, 100, SALT));
            let meta = FrameMeta {
                offset: 107,
                timestamp_ms: 1,
                durable_lag: (107 - watermark) as u32,
                batch_continues: false,
            };
            let frame = record::encode(meta, None, b"next segment", SALT);
            last[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + frame.len()].copy_from_slice(&frame);
            last
        };
        assert_eq!(check_sealed(&prev, 100, &last(107), 107, MAX), Sealed::Kept);
        let scan = cut(check_sealed(&prev, 100, &last(105), 107, MAX));
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn), (starts[5], 105, None));
    }

    #[test]
    fn recovery_row_4_synced_records_lost_to_zeros_are_damage_not_a_clean_end() {
        // Records 103 and 104 were synced (synced_end = 105), then their
        // frames became zeros to the end of the segment (a lost write, a
        // file cut at a frame boundary). Taken for row 1, their offsets
        // would be reused by the next appends.
        let (mut seg, starts) = segment(5, |i| 100 + i);
        seg[starts[3]..].fill(0);
        let scan = super::scan(&seg, 100, MAX, 105, SALT);
        assert_eq!(scan.torn, None);
        let room = starts[3] + 2 * FRAME_HEADER_BYTES;
        assert_eq!((scan.tail_pos, scan.next_offset), (room, 105), "the lost records' offsets are never reused");
        assert_eq!(
            scan.damaged,
            vec![Damage { pos: starts[3], offset: 103, reason: Found::Missing, resumed_at: room }]
        );
        // A frame appended there later is where a walk finds the record
        // after the lost ones, and proves them acknowledged.
        let next = record::encode(
            FrameMeta { offset: 105, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
            None,
            b"after the loss",
            SALT,
        );
        seg[room..room + next.len()].copy_from_slice(&next);
        let scan = super::scan(&seg, 100, MAX, 106, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn), (room + next.len(), 106, None));
        assert_eq!(scan.damaged.iter().map(|d| (d.offset, d.resumed_at)).collect::<Vec<_>>(), [(103, room)]);
        // Without the header's proof, zeros to the end are the end (row 1).
        let (mut seg, starts) = segment(5, |i| 100 + i);
        seg[starts[3]..].fill(0);
        let scan = super::scan(&seg, 100, MAX, 103, SALT);
        assert_eq!((scan.tail_pos, scan.next_offset, scan.torn, scan.damaged), (starts[3], 103, None, vec![]));
    }

    #[test]
    fn recovery_table_is_exhaustive_over_single_byte_damage() {
        // Every single-byte change anywhere in a small log lands in some row,
        // never panics, and never yields a record that fails its checksum.
        let (full, starts) = segment(3, |i| 100 + i);
        for pos in SEGMENT_HEADER_BYTES..starts[3] + 16 {
            for value in [0x00, 0xff, 0x5a] {
                let mut seg = full.clone();
                seg[pos] = value;
                let scan = super::scan(&seg, 100, MAX, 100, SALT);
                assert!(scan.next_offset >= 100 && scan.next_offset <= 103);
                let damaged_before_tail = scan.damaged.iter().all(|d| d.pos < scan.tail_pos);
                assert!(damaged_before_tail);
            }
        }
    }

    /// A last segment of `SEGMENT` bytes starting at 100 with five records,
    /// as a cleanly closed `Sync` queue leaves it (`synced_end` 105).
    const SEGMENT: u64 = 8192;
    /// Where a version-2 header's last field, the salt and its checksum,
    /// ends (`synced_end` and its checksum end at 52, before it).
    const SYNCED_END_FIELD_END: usize = 60;

    fn last_segment() -> Vec<u8> {
        let (mut seg, _) = segment(5, |i| 100 + i);
        seg[..SEGMENT_HEADER_BYTES].copy_from_slice(&segment::encode_header_synced_to(0, 100, SEGMENT, 105, SALT));
        seg
    }

    fn evidence(end: u64) -> Evidence {
        Evidence { end, source: format!("group g's checkpoint (at offset {end})") }
    }

    fn judge(found: &[u8], evidence: Option<&Evidence>) -> Result<LastFile> {
        check_last_file(found, Path::new("p0000/100.seg"), 0, 100, SEGMENT, evidence)
    }

    #[test]
    fn recovery_row_5_a_segment_of_which_nothing_was_written_is_a_creation_cut_short_unless_evidence_says_otherwise() {
        let header = segment::encode_header(0, 100, SEGMENT, SALT);
        let mut torn = vec![0u8; SEGMENT as usize];
        torn[..20].copy_from_slice(&header[..20]);
        // What a power cut during the creation leaves: an empty file, the
        // reserved file of zeros, a header torn over zeros.
        for found in [vec![], vec![0u8; SEGMENT as usize], torn] {
            let len = found.len();
            assert_eq!(judge(&found, None).unwrap(), LastFile::NeverWritten, "{len} bytes");
            // A checkpoint at the base proves only the records before it.
            assert_eq!(judge(&found, Some(&evidence(100))).unwrap(), LastFile::NeverWritten, "{len} bytes");
            match judge(&found, Some(&evidence(101))) {
                Err(Error::Corrupt { file, position, offset, reason }) => {
                    assert_eq!((file.to_str(), position, offset), (Some("p0000/100.seg"), 0, Some(100)));
                    assert!(reason.contains("group g's checkpoint (at offset 101)"), "{reason}");
                }
                other => panic!("{len} bytes, a record proven at the base: {other:?}"),
            }
        }
    }

    #[test]
    fn recovery_row_7h_a_last_segment_cut_inside_its_header_is_refused_whatever_the_evidence() {
        let seg = last_segment();
        // 0..36: the fixed part torn; 36..52: the fixed part whole, the
        // proof of what was synced gone; 52..60: the frames' salt gone.
        for cut in 1..SYNCED_END_FIELD_END {
            match judge(&seg[..cut], None) {
                Err(Error::Corrupt { position: 0, .. }) => {}
                other => panic!("cut to {cut} bytes: {other:?}"),
            }
        }
        // Row 7: from byte 52 the header proves what was synced, and the walk
        // of the file grown back with zeros finds the lost records (row 4).
        assert_eq!(judge(&seg[..SYNCED_END_FIELD_END], None).unwrap(), LastFile::Whole);
        let mut grown = seg[..SYNCED_END_FIELD_END].to_vec();
        grown.resize(SEGMENT as usize, 0);
        let scan = scan(&grown, 100, MAX, segment::decode_synced_end(&grown).unwrap(), SALT);
        assert_eq!((scan.next_offset, scan.damaged[0].reason), (105, Found::Missing));
    }

    #[test]
    fn recovery_row_5z_a_header_of_zeros_in_front_of_records_is_rewritten_and_they_are_walked() {
        let mut seg = last_segment();
        seg[..SEGMENT_HEADER_BYTES].fill(0);
        assert_eq!(judge(&seg, None).unwrap(), LastFile::HeaderLost);
        assert_eq!(judge(&seg, Some(&evidence(105))).unwrap(), LastFile::HeaderLost);
        // Cut short as well: damage that no header's proof measures any more.
        assert!(matches!(judge(&seg[..4096], None), Err(Error::Corrupt { .. })));
        assert_eq!(judge(&last_segment(), Some(&evidence(105))).unwrap(), LastFile::Whole);
    }

    #[test]
    fn recovery_evidence_refuses_a_log_that_ends_before_it_and_changes_no_verdict() {
        // Records 103 and 104 lost to zeros, and nothing in the segment
        // proves them: a clean end at 103. Evidence does not make the walk
        // keep them (it might be wrong): it refuses that end.
        let (mut seg, starts) = segment(5, |i| (100 + i).min(102));
        seg[starts[3]..].fill(0);
        let s = scan(&seg, 100, MAX, 100, SALT);
        assert_eq!((s.next_offset, s.tail_pos), (103, starts[3]));
        let path = Path::new("p0000/100.seg");
        for end in [100, 103] {
            assert!(check_end(s.next_offset, Some(&evidence(end)), path, s.tail_pos).is_ok(), "evidence {end}");
        }
        assert!(check_end(s.next_offset, None, path, s.tail_pos).is_ok());
        match check_end(s.next_offset, Some(&evidence(105)), path, s.tail_pos) {
            Err(Error::Corrupt { file, position, offset, reason }) => {
                assert_eq!((file.as_path(), position, offset), (path, starts[3] as u64, Some(103)));
                assert!(
                    reason.contains("group g's checkpoint (at offset 105)") && reason.contains("up to 104"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

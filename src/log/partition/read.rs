//! Reading a partition: cursors positioned at an offset, and spans of
//! frames validated below the visible watermark, borrowed from the mapping.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::record::{self, Decoded};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, Segment};

use super::Partition;

impl Partition {
    /// A cursor at `offset`, or at the earliest retained record if
    /// retention removed `offset` (before or while the cursor is made).
    pub(crate) fn cursor_from(&self, offset: u64) -> Result<ReadCursor> {
        loop {
            let first = self.first_offset();
            match self.cursor_at(offset.max(first)) {
                Err(_) if self.first_offset() > first => continue,
                result => return result,
            }
        }
    }

    /// [`Partition::read_span`] for a reader retention limits may pass: a
    /// cursor below the earliest retained offset (its records were removed
    /// before or during the read) first moves to the first kept record.
    pub(crate) fn read_span_retained(&self, cursor: &mut ReadCursor, visible: u64, max: usize) -> Result<Span> {
        loop {
            if cursor.next_offset < self.first_offset() {
                *cursor = self.cursor_from(cursor.next_offset)?;
            }
            match self.read_span(cursor, visible, max) {
                Err(_) if cursor.next_offset < self.first_offset() => continue,
                result => return result,
            }
        }
    }

    /// A cursor positioned at `offset`, which must be retained and at most
    /// `next_offset`. Hops over the records before it by their headers
    /// alone: a group does not need records it already processed to be
    /// intact, so damage there does not stop it (a damaged header is stepped
    /// over by finding the next valid frame, as recovery does).
    pub(crate) fn cursor_at(&self, offset: u64) -> Result<ReadCursor> {
        let bases = self.segment_bases()?;
        let Some(&base) = bases.iter().rev().find(|&&b| b <= offset) else {
            return Err(Error::corrupt(&self.dir, 0, Some(offset), "no segment holds this offset"));
        };
        let segment = self.segment(base)?;
        let max = self.config.record_bytes_max;
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut at = base;
        while at < offset {
            // SAFETY: `at < offset <= next_offset`: the frame is published.
            match unsafe { segment.header_at(pos, max) } {
                Ok(Some((found, len))) if found == at => {
                    pos += len;
                    at += 1;
                }
                _ => {
                    (pos, at) = resync(&segment, pos, at, offset, max).ok_or_else(|| {
                        Error::corrupt(
                            &segment.path,
                            pos as u64,
                            Some(at),
                            format!("damaged record, and no valid record up to offset {offset} follows it"),
                        )
                    })?;
                }
            }
        }
        Ok(ReadCursor { next_offset: offset, segment, pos })
    }

    /// Validates up to `max` frames from `cursor` that are below `visible`,
    /// within one segment, without moving the cursor (the caller commits the
    /// span). Moves the cursor to the next segment when the current one is
    /// used up. Returns an empty span when nothing is visible. The first
    /// frame that fails validation is an error; frames before it are
    /// returned first.
    pub(crate) fn read_span(&self, cursor: &mut ReadCursor, visible: u64, max: usize) -> Result<Span> {
        let record_bytes_max = self.config.record_bytes_max;
        let mut frames = Vec::with_capacity(max.min(visible.saturating_sub(cursor.next_offset) as usize));
        let mut pos = cursor.pos;
        let mut offset = cursor.next_offset;
        while frames.len() < max && offset < visible {
            let seg = &cursor.segment;
            // SAFETY: `offset < visible`: the frame holding `offset` is
            // published (mmap contract rule 2).
            match unsafe { seg.frame_at(pos, record_bytes_max) } {
                Decoded::Frame(f) if f.meta.offset == offset => {
                    let payload_at = pos + record::FRAME_HEADER_BYTES + f.key.map_or(0, <[u8]>::len);
                    frames.push(FrameRef {
                        offset,
                        end_pos: pos + f.len,
                        timestamp_ms: f.meta.timestamp_ms,
                        key: f.key.map(|k| (pos + record::FRAME_HEADER_BYTES, k.len())),
                        payload: (payload_at, f.payload.len()),
                    });
                    pos += f.len;
                    offset += 1;
                }
                Decoded::Zero if frames.is_empty() && pos > SEGMENT_HEADER_BYTES => {
                    // This segment is used up; the record lives in the next.
                    cursor.segment = self.next_segment(seg, pos, offset)?;
                    cursor.pos = SEGMENT_HEADER_BYTES;
                    pos = SEGMENT_HEADER_BYTES;
                }
                Decoded::Zero if !frames.is_empty() => break,
                found if !frames.is_empty() => {
                    // Deliver the good frames; the next call reports this one.
                    let _ = found;
                    break;
                }
                Decoded::Frame(f) => {
                    return Err(Error::corrupt(
                        &seg.path,
                        pos as u64,
                        Some(offset),
                        format!("frame carries offset {}", f.meta.offset),
                    ));
                }
                Decoded::Zero => {
                    return Err(Error::corrupt(
                        &seg.path,
                        pos as u64,
                        Some(offset),
                        "zeros where a visible record must be",
                    ));
                }
                Decoded::Invalid(i) => return Err(Error::corrupt(&seg.path, pos as u64, Some(offset), i.to_string())),
            }
        }
        Ok(Span { segment: cursor.segment.clone(), frames, end_pos: pos, end_offset: offset })
    }

    /// The segment that starts at `offset`, after `seg` ended at `pos`. If
    /// there is none, the zeros at `pos` are where record `offset` should be.
    fn next_segment(&self, seg: &Segment, pos: usize, offset: u64) -> Result<Arc<Segment>> {
        self.segment(offset).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::corrupt(
                &seg.path,
                pos as u64,
                Some(offset),
                format!(
                    "zeros where record {offset} must be, and no segment file {} follows",
                    segment::file_name(offset)
                ),
            ),
            e => e,
        })
    }
}

/// Where a reader is in a partition. A clone reads ahead without moving
/// the reader (the consumer's read-ahead during a `Sync` commit).
#[derive(Clone)]
pub(crate) struct ReadCursor {
    pub(crate) next_offset: u64,
    segment: Arc<Segment>,
    pos: usize,
}

impl ReadCursor {
    /// Moves the cursor past the first `count` frames of `span`, which the
    /// consumer committed.
    pub(crate) fn advance(&mut self, span: &Span, count: usize) {
        assert!(count <= span.frames.len(), "advancing {count} frames through a span of {}", span.frames.len());
        if count == 0 {
            return;
        }
        let last = &span.frames[count - 1];
        self.segment = span.segment.clone();
        self.pos = last.end_pos;
        self.next_offset = last.offset + 1;
    }
}

/// Validated frames of one segment, ready to be handed out as messages. A
/// clone shares the segment's mapping (the async API's owned batches).
#[derive(Clone)]
pub(crate) struct Span {
    segment: Arc<Segment>,
    pub(crate) frames: Vec<FrameRef>,
    end_pos: usize,
    pub(crate) end_offset: u64,
}

/// Where one validated frame's parts are in its segment.
#[derive(Clone)]
pub(crate) struct FrameRef {
    pub(crate) offset: u64,
    end_pos: usize,
    pub(crate) timestamp_ms: u64,
    pub(crate) key: Option<(usize, usize)>,
    pub(crate) payload: (usize, usize),
}

impl Span {
    /// The segment file this span's frames are in, for errors that name the
    /// place of a frame: a part's position is its byte position in it.
    pub(crate) fn file(&self) -> &Path {
        &self.segment.path
    }

    /// Borrows the bytes of a part of one of this span's frames.
    pub(crate) fn bytes(&self, (pos, len): (usize, usize)) -> &[u8] {
        assert!(pos + len <= self.end_pos, "part {pos}+{len} outside span ending at {}", self.end_pos);
        // SAFETY: the span's frames were validated below the visible
        // watermark, so they are published and never written again (mmap
        // contract rule 2); the span holds the segment's mapping alive.
        unsafe { self.segment.published(pos, pos + len) }
    }
}

/// Finds, after a damaged frame at `pos` where offset `at` was expected, the
/// next frame that passes its checksum with an offset in `at + 1..=target`.
fn resync(segment: &Segment, pos: usize, at: u64, target: u64, record_bytes_max: u32) -> Option<(usize, u64)> {
    let mut probe = pos + record::FRAME_ALIGN;
    while probe + record::FRAME_HEADER_BYTES <= segment.len() {
        // SAFETY: touches unpublished bytes only if published frames before
        // `target` are damaged; bounded by the mapping, torn bytes fail the
        // checksum (mmap contract rule 5 covers damage made by others).
        if let Decoded::Frame(f) = unsafe { segment.frame_at(probe, record_bytes_max) }
            && f.meta.offset > at
            && f.meta.offset <= target
        {
            return Some((probe, f.meta.offset));
        }
        probe += record::FRAME_ALIGN;
    }
    None
}

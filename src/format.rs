//! The numbers the on-disk format is built from, at the bottom of the crate:
//! the version every file header carries, and the sizes of the fixed parts
//! of a segment and of a frame (docs/FORMAT.md).
//!
//! The layouts themselves live with their codecs (`meta.rs`,
//! `log/segment.rs`, `log/record.rs`), which derive their field offsets from
//! these and re-export them; the options (`options.rs`) derive from them
//! what fits one segment. Kept here, below all of those, so that none of
//! them imports another for a number.

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Bytes of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Frames start at, and are padded to, multiples of this many bytes.
pub const FRAME_ALIGN: usize = 8;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGN), "the first frame is aligned");

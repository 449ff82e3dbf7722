//! A segment: one fixed-size, memory-mapped file of a partition's log.
//!
//! ```text
//! offset size field
//!  0     8    magic          b"DURQSEG\0"
//!  8     4    version        FORMAT_VERSION
//! 12     4    partition      the partition this segment belongs to
//! 16     8    base_offset    offset of the first record in this segment
//! 24     8    segment_bytes  the file's size
//! 32    28    reserved       zeros
//! 60     4    crc32          CRC32 of bytes 0..60
//! 64     -    frames, back to back, then zeros to the end of the file
//! ```
//!
//! A segment is named by its base offset, `{base_offset:020}.seg`, so a
//! directory listing sorts segments in log order. It is created at its full
//! size with its blocks reserved, and fsynced together with its directory
//! before any record is written into it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::record::{self, Decoded, Invalid};
use crate::meta::FORMAT_VERSION;
use crate::storage::{self, mmap::MappedFile};

/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
const MAGIC: [u8; 8] = *b"DURQSEG\0";
const VERSION_AT: usize = 8;
const PARTITION_AT: usize = 12;
const BASE_AT: usize = 16;
const SIZE_AT: usize = 24;
const CRC_AT: usize = 60;
const _: () = assert!(CRC_AT + 4 == SEGMENT_HEADER_BYTES);
const SUFFIX: &str = ".seg";

/// The file name of the segment starting at `base_offset`.
pub fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{SUFFIX}")
}

/// The base offset named by a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Encodes a segment header.
pub fn encode_header(partition: u32, base_offset: u64, segment_bytes: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..VERSION_AT].copy_from_slice(&MAGIC);
    h[VERSION_AT..PARTITION_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[PARTITION_AT..BASE_AT].copy_from_slice(&partition.to_le_bytes());
    h[BASE_AT..SIZE_AT].copy_from_slice(&base_offset.to_le_bytes());
    h[SIZE_AT..SIZE_AT + 8].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&h[..CRC_AT]);
    h[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header against what the file's name and place say it
/// must be.
pub fn check_header(bytes: &[u8], path: &Path, partition: u32, base_offset: u64, segment_bytes: u64) -> Result<()> {
    let bad = |reason: String| Err(Error::corrupt(path, 0, None, format!("segment header: {reason}")));
    let Some(h) = bytes.get(..SEGMENT_HEADER_BYTES) else {
        return bad(format!("file is only {} bytes", bytes.len()));
    };
    if h[..VERSION_AT] != MAGIC {
        return bad("bad magic".into());
    }
    let crc = u32::from_le_bytes(h[CRC_AT..].try_into().expect("4 bytes"));
    if crc32fast::hash(&h[..CRC_AT]) != crc {
        return bad("checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[VERSION_AT..PARTITION_AT].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported: FORMAT_VERSION });
    }
    if *h != encode_header(partition, base_offset, segment_bytes) {
        return bad(format!("expected partition {partition}, base offset {base_offset}, size {segment_bytes}"));
    }
    Ok(())
}

/// A mapped segment file.
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) path: PathBuf,
    map: MappedFile,
}

impl Segment {
    /// Creates a new, empty segment: reserved at full size, header written,
    /// file and directory fsynced. Fails if the file exists.
    pub(crate) fn create(dir: &Path, partition: u32, base_offset: u64, segment_bytes: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let header = encode_header(partition, base_offset, segment_bytes);
        let file = storage::create_durable(&path, &header, segment_bytes)?;
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        Ok(Segment { base_offset, path, map })
    }

    /// Maps an existing segment and checks its header.
    pub(crate) fn open(dir: &Path, partition: u32, base_offset: u64, segment_bytes: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let file = storage::open_rw(&path)?;
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        let segment = Segment { base_offset, path, map };
        check_header(segment.header(), &segment.path, partition, base_offset, segment_bytes)?;
        Ok(segment)
    }

    /// Maps an existing segment file whose header has not been checked, for
    /// recovery only. Grows the file back to its full size (and re-reserves
    /// it) if a crash during creation left it short.
    pub(crate) fn open_for_recovery(dir: &Path, base_offset: u64, segment_bytes: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let file = storage::open_rw(&path)?;
        storage::reserve(&file, &path, segment_bytes)?;
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        Ok(Segment { base_offset, path, map })
    }

    fn header(&self) -> &[u8] {
        // SAFETY: the header is written once, before the segment is published,
        // and never again (mmap contract rule 2).
        unsafe { self.map.bytes(0, SEGMENT_HEADER_BYTES) }
    }

    /// The segment's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Borrows the published bytes `pos..end`.
    ///
    /// # Safety
    /// `end` is at most the partition's published tail in this segment (or
    /// the caller is recovery, the only process with the queue open).
    pub(crate) unsafe fn published(&self, pos: usize, end: usize) -> &[u8] {
        // SAFETY: forwarded contract: the range is below the published tail.
        unsafe { self.map.bytes(pos, end - pos) }
    }

    /// Decodes the frame at `pos`, borrowing exactly its bytes. A position
    /// with no room left for a header reads as [`Decoded::Zero`]: the end of
    /// the segment.
    ///
    /// # Safety
    /// The frame at `pos` is published: the caller read a `visible`
    /// watermark above the offset it expects there. If the bytes there are
    /// damaged, the borrowed length is still bounded by the mapping and the
    /// checksum rejects the frame.
    pub(crate) unsafe fn frame_at(&self, pos: usize, record_bytes_max: u32) -> Decoded<'_> {
        if pos + record::FRAME_HEADER_BYTES > self.len() {
            return Decoded::Zero;
        }
        // SAFETY: forwarded contract: the header of a published frame.
        let header = unsafe { self.published(pos, pos + record::FRAME_HEADER_BYTES) };
        match record::frame_len(header, record_bytes_max) {
            Ok(None) => Decoded::Zero,
            Err(invalid) => Decoded::Invalid(invalid),
            Ok(Some(len)) if len > self.len() - pos => Decoded::Invalid(record::Invalid::BadLength),
            // SAFETY: forwarded contract: the whole published frame.
            Ok(Some(len)) => record::decode(unsafe { self.published(pos, pos + len) }, record_bytes_max),
        }
    }

    /// Reads the offset and length of the frame at `pos` from its header
    /// alone (no checksum): for hopping over records already consumed.
    /// `Ok(None)` at a zero header or where no header fits.
    ///
    /// # Safety
    /// As [`Segment::frame_at`]: the frame at `pos` is published.
    pub(crate) unsafe fn header_at(&self, pos: usize, record_bytes_max: u32) -> Result<Option<(u64, usize)>, Invalid> {
        if pos + record::FRAME_HEADER_BYTES > self.len() {
            return Ok(None);
        }
        // SAFETY: forwarded contract: the header of a published frame.
        record::peek_header(unsafe { self.published(pos, pos + record::FRAME_HEADER_BYTES) }, record_bytes_max)
    }

    /// Writes one frame at `pos`: `header` (with a zero checksum field),
    /// key, payload and padding back to back, then checksums the written
    /// bytes and fills in the checksum field. Returns the frame's length.
    ///
    /// # Safety
    /// The caller holds the partition's append mutex and `pos` is at or
    /// beyond the published tail (mmap contract rule 2).
    pub(crate) unsafe fn write_frame(&self, pos: usize, parts: [&[u8]; 4]) -> usize {
        let mut end = pos;
        for part in parts {
            // SAFETY: forwarded contract; the range is unpublished.
            unsafe { self.map.write(end, part) };
            end += part.len();
        }
        // SAFETY: forwarded contract: we just wrote these unpublished bytes
        // and hold the only right to write them.
        let crc = record::checksum(unsafe { self.map.bytes(pos, end - pos) });
        // SAFETY: as above.
        unsafe { self.map.write(pos, &crc) };
        end - pos
    }

    /// Writes the segment header (recovery of a segment whose creation was
    /// cut short).
    ///
    /// # Safety
    /// The caller is the only writer of this segment and no reader can reach
    /// it yet.
    pub(crate) unsafe fn rewrite_header(&self, partition: u32, segment_bytes: u64) {
        let header = encode_header(partition, self.base_offset, segment_bytes);
        // SAFETY: forwarded contract.
        unsafe { self.map.write(0, &header) };
    }

    /// Zeroes `pos..end`.
    ///
    /// # Safety
    /// As [`Segment::write_parts`]: the range is unpublished.
    pub(crate) unsafe fn zero(&self, pos: usize, end: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.map.zero(pos, end - pos) }
    }

    /// Faults in the pages of `pos..end` ahead of the writer.
    pub(crate) fn prefault(&self, pos: usize, end: usize) {
        self.map.prefault(pos, end.saturating_sub(pos))
    }

    /// Makes `pos..end` durable.
    pub(crate) fn sync(&self, pos: usize, end: usize) -> Result<()> {
        self.map.sync_range(&self.path, pos, end - pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_sort_in_log_order_and_round_trip() {
        let names: Vec<String> = [0u64, 9, 10, 1_000_000, u64::MAX].iter().map(|&b| file_name(b)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (name, base) in names.iter().zip([0u64, 9, 10, 1_000_000, u64::MAX]) {
            assert_eq!(parse_file_name(name), Some(base));
        }
        for bad in ["0.seg", "0000000000000000000a.seg", "00000000000000000000.log", "x"] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_header_golden_bytes_and_checks() {
        let h = encode_header(3, 1000, 65536);
        assert_eq!(&h[..8], b"DURQSEG\0");
        assert_eq!(h[8..12], FORMAT_VERSION.to_le_bytes());
        assert_eq!(h[12..16], 3u32.to_le_bytes());
        assert_eq!(h[16..24], 1000u64.to_le_bytes());
        assert_eq!(h[24..32], 65536u64.to_le_bytes());
        assert!(h[32..60].iter().all(|&b| b == 0));
        assert_eq!(h[60..], crc32fast::hash(&h[..60]).to_le_bytes());
        let p = Path::new("x.seg");
        check_header(&h, p, 3, 1000, 65536).unwrap();
        assert!(matches!(check_header(&h, p, 4, 1000, 65536), Err(Error::Corrupt { .. })));
        let mut flipped = h;
        flipped[20] ^= 1;
        assert!(matches!(check_header(&flipped, p, 3, 1000, 65536), Err(Error::Corrupt { .. })));
    }
}

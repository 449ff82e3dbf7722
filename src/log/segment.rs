//! A segment: one fixed-size, memory-mapped file of a partition's log.
//!
//! ```text
//! offset size field
//!  0     8    magic          b"DURQSEG\0"
//!  8     4    version        SEGMENT_VERSION (2; 1 is still read)
//! 12     4    partition      the partition this segment belongs to
//! 16     8    base_offset    offset of the first record in this segment
//! 24     8    segment_bytes  the file's size
//! 32     4    crc32          CRC32 of bytes 0..32 (the fixed part)
//! 36     4    reserved       zeros
//! 40     8    synced_end     every record of this segment below this offset
//!                            was synced (raised after each sync)
//! 48     4    synced_crc     CRC32 of bytes 40..48
//! 52     4    salt           version 2: seeds every frame's checksum
//!                            (non-zero, random); version 1: zeros
//! 56     4    salt_crc       version 2: CRC32 of bytes 52..56; version 1: zeros
//! 60     4    reserved       zeros
//! 64     -    frames, back to back, then zeros to the end of the file
//! ```
//!
//! The salt (`salt.rs`) makes a frame valid in one segment only: a frame
//! written into another segment, or into an earlier life of this file,
//! fails its checksum here. It lies outside the fixed part, with a checksum
//! of its own, so that bytes 0..36 mean what they meant in version 1: a
//! build that knows only version 1 finds a whole header and refuses the
//! segment as `Error::UnsupportedVersion`, instead of as damage. A
//! version-1 segment's frames are read unsalted ([`Salt::UNSALTED`]).
//!
//! A segment is named by its base offset, `{base_offset:020}.seg`, so a
//! directory listing sorts segments in log order. It is created at its full
//! size, sparse, with blocks reserved for its first part only (more are
//! reserved ahead of the writer as it goes: `reservation.rs`), and fsynced
//! together with its directory before any record is written into it.
//!
//! `synced_end` says that every record of the partition below it was synced,
//! in this segment and in every segment before it. It is written into the
//! mapping *after* a sync returned, and reaches the disk with the next sync
//! of the header's page, the close, or the kernel's writeback. A new segment
//! is created with the partition's durable watermark at that moment, and a
//! sealed segment gets its own end once it is synced in full (see
//! `partition::seal`). It lets recovery prove that damage to the last synced
//! records is damage to acknowledged data, which frames alone cannot prove
//! for the last batch, and tells it whether the segment before the last was
//! synced (see `recovery.rs`). A stale value only proves less; it never
//! claims a record that was not synced.
//!
//! Each process syncs a segment through one mapping, one sync at a time
//! (`Segment::sync`): after a failed msync the kernel reports the error to
//! one caller only, so a second thread that synced the same file at the same
//! moment could see success for pages that were lost. The first failure is
//! remembered and every later sync of the segment in this process fails.

use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::codec;
use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::log::record::{self, Decoded, Invalid};
use crate::log::salt::{Salt, SaltedCrc};
use crate::storage::{self, mmap::MappedFile};

pub use crate::format::SEGMENT_HEADER_BYTES;
const MAGIC: [u8; 8] = *b"DURQSEG\0";
const VERSION_AT: usize = 8;
const PARTITION_AT: usize = 12;
const BASE_AT: usize = 16;
const SIZE_AT: usize = 24;
const CRC_AT: usize = 32;
const SYNCED_END_AT: usize = 40;
const SYNCED_CRC_AT: usize = 48;
const SALT_AT: usize = SYNCED_CRC_AT + 4;
const SALT_CRC_AT: usize = SALT_AT + 4;
const _: () = assert!(SALT_CRC_AT + 4 <= SEGMENT_HEADER_BYTES);
/// The segment format this build writes: frames salted.
pub const SEGMENT_VERSION: u32 = 2;
/// The segment format before the salt, which this build still reads (and
/// writes only to rewrite a lost header of such a segment in place).
pub const SEGMENT_VERSION_UNSALTED: u32 = 1;
pub use crate::layout::{parse_segment_file_name as parse_file_name, segment_file_name as file_name};

/// Encodes a segment header, with `synced_end` at the base offset: every
/// record before this segment was synced, none of its own yet. Version 2
/// with `salt`, or version 1 if it is [`Salt::UNSALTED`].
pub fn encode_header(partition: u32, base_offset: u64, segment_bytes: u64, salt: Salt) -> [u8; SEGMENT_HEADER_BYTES] {
    encode_header_synced_to(partition, base_offset, segment_bytes, base_offset, salt)
}

/// Encodes a segment header claiming that every record below `synced_end`
/// was synced (at most `base_offset` for a new segment: a roll that left the
/// previous segment to be synced in the background claims less).
pub fn encode_header_synced_to(
    partition: u32,
    base_offset: u64,
    segment_bytes: u64,
    synced_end: u64,
    salt: Salt,
) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    let version = if salt == Salt::UNSALTED { SEGMENT_VERSION_UNSALTED } else { SEGMENT_VERSION };
    h[..VERSION_AT].copy_from_slice(&MAGIC);
    h[VERSION_AT..PARTITION_AT].copy_from_slice(&version.to_le_bytes());
    h[PARTITION_AT..BASE_AT].copy_from_slice(&partition.to_le_bytes());
    h[BASE_AT..SIZE_AT].copy_from_slice(&base_offset.to_le_bytes());
    h[SIZE_AT..CRC_AT].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&h[..CRC_AT]);
    h[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    h[SYNCED_END_AT..SYNCED_CRC_AT + 4].copy_from_slice(&encode_synced_end(synced_end));
    if salt != Salt::UNSALTED {
        let value = salt.get().to_le_bytes();
        h[SALT_AT..SALT_CRC_AT].copy_from_slice(&value);
        h[SALT_CRC_AT..SALT_CRC_AT + 4].copy_from_slice(&crc32fast::hash(&value).to_le_bytes());
    }
    h
}

/// The 12 bytes of the `synced_end` field and its checksum.
fn encode_synced_end(synced_end: u64) -> [u8; 12] {
    let value = synced_end.to_le_bytes();
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&value);
    b[8..].copy_from_slice(&crc32fast::hash(&value).to_le_bytes());
    b
}

/// The `synced_end` a header claims, or `None` if the field is damaged.
pub fn decode_synced_end(header: &[u8]) -> Option<u64> {
    let field = header.get(SYNCED_END_AT..SYNCED_CRC_AT + 4)?;
    let crc = codec::u32_at(field, 8);
    (crc32fast::hash(&field[..8]) == crc).then(|| codec::u64_at(field, 0))
}

/// The `segment_bytes` a whole header (see [`header_is_whole`]) was
/// written with: what a queue without its meta file still tells of its
/// options.
pub fn header_segment_bytes(header: &[u8]) -> Option<u64> {
    header_is_whole(header).then(|| codec::u64_at(header, SIZE_AT))
}

/// True if `bytes` start with a complete header (magic and checksum
/// intact), whichever segment it describes: what a creation cut short by a
/// power cut cannot leave.
pub fn header_is_whole(bytes: &[u8]) -> bool {
    bytes.get(..CRC_AT + 4).is_some_and(|h| {
        h[..VERSION_AT] == MAGIC && crc32fast::hash(&h[..CRC_AT]).to_le_bytes() == h[CRC_AT..CRC_AT + 4]
    })
}

/// The salt of the frames of the segment whose header starts `bytes`, if
/// that header is whole and of a version this build reads: unsalted for
/// version 1, the salt field for version 2 (`None` if that is damaged).
pub fn header_salt(bytes: &[u8]) -> Option<Salt> {
    if !header_is_whole(bytes) {
        return None;
    }
    match codec::u32_at(bytes, VERSION_AT) {
        SEGMENT_VERSION_UNSALTED => Some(Salt::UNSALTED),
        SEGMENT_VERSION => decode_salt(bytes),
        _ => None,
    }
}

/// True if `bytes` start with a header a segment's creation wrote whole:
/// [`header_is_whole`], and for version 2 a salt field that passes its
/// checksum too (the header is one write, inside one sector).
pub fn header_is_written(bytes: &[u8]) -> bool {
    header_is_whole(bytes) && (codec::u32_at(bytes, VERSION_AT) != SEGMENT_VERSION || decode_salt(bytes).is_some())
}

/// Checks a segment header against what the file's name and place say it
/// must be, and returns the salt of its frames.
pub fn check_header(bytes: &[u8], path: &Path, partition: u32, base_offset: u64, segment_bytes: u64) -> Result<Salt> {
    let bad = |reason: String| Err(Error::corrupt(path, 0, None, format!("segment header: {reason}")));
    let Some(h) = bytes.get(..CRC_AT + 4) else {
        return bad(format!("file is only {} bytes", bytes.len()));
    };
    if h[..VERSION_AT] != MAGIC {
        return bad("bad magic".into());
    }
    let crc = codec::u32_at(h, CRC_AT);
    if crc32fast::hash(&h[..CRC_AT]) != crc {
        return bad("checksum mismatch".into());
    }
    let version = codec::u32_at(h, VERSION_AT);
    if version != SEGMENT_VERSION && version != SEGMENT_VERSION_UNSALTED {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported: SEGMENT_VERSION });
    }
    let found = (codec::u32_at(h, PARTITION_AT), codec::u64_at(h, BASE_AT), codec::u64_at(h, SIZE_AT));
    if found != (partition, base_offset, segment_bytes) {
        return bad(format!("expected partition {partition}, base offset {base_offset}, size {segment_bytes}"));
    }
    if version == SEGMENT_VERSION_UNSALTED {
        return Ok(Salt::UNSALTED);
    }
    match decode_salt(bytes) {
        Some(salt) => Ok(salt),
        None if bytes.len() < SALT_CRC_AT + 4 => bad(format!("file cut to {} bytes, inside its salt", bytes.len())),
        None => bad("the frames' salt is damaged (checksum mismatch, or zero)".into()),
    }
}

/// The salt a version-2 header's salt field holds, or `None` if the field
/// is missing, fails its checksum, or holds zero (no version-2 segment has
/// salt zero: its frames would validate as unsalted ones).
fn decode_salt(header: &[u8]) -> Option<Salt> {
    let field = header.get(SALT_AT..SALT_CRC_AT + 4)?;
    let salt = Salt::new(codec::u32_at(field, 0));
    (crc32fast::hash(&field[..4]) == codec::u32_at(field, 4) && salt != Salt::UNSALTED).then_some(salt)
}

/// A mapped segment file.
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) path: PathBuf,
    map: MappedFile,
    /// What its frames' checksums are seeded with (from its header), and
    /// the hasher that checks them.
    crc: SaltedCrc,
    /// Kept open for [`Segment::start_writeback`], [`Segment::reserve`] and
    /// [`Segment::release`].
    file: File,
    syncs: Mutex<Syncs>,
}

/// What this process's syncs of a segment did.
#[derive(Default)]
struct Syncs {
    /// A sync failed: the state of the file on disk is unknown.
    failed: FailStop,
    /// The sealed segment was synced in full.
    sealed: bool,
}

impl Segment {
    fn new(base_offset: u64, path: PathBuf, map: MappedFile, file: File, salt: Salt) -> Segment {
        Segment { base_offset, path, map, crc: SaltedCrc::new(salt), file, syncs: Mutex::new(Syncs::default()) }
    }

    /// Creates a new, empty segment: full size (sparse), blocks reserved
    /// for its first `reserved` bytes, header written (claiming
    /// `synced_end`, see [`encode_header_synced_to`], with a fresh salt
    /// other than `previous`, the salt of the segment before it), file and
    /// directory fsynced. Fails if the file exists.
    pub(crate) fn create(
        dir: &Path,
        partition: u32,
        base_offset: u64,
        segment_bytes: u64,
        synced_end: u64,
        reserved: usize,
        previous: Salt,
    ) -> Result<Segment> {
        assert!(synced_end <= base_offset, "new segment {base_offset} claims records up to {synced_end} synced");
        assert!(reserved >= SEGMENT_HEADER_BYTES, "the header's block is reserved with the file");
        let path = dir.join(file_name(base_offset));
        let salt = Salt::fresh(previous);
        let header = encode_header_synced_to(partition, base_offset, segment_bytes, synced_end, salt);
        let file = storage::create_durable(&path, &header, segment_bytes, reserved as u64)?;
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        Ok(Segment::new(base_offset, path, map, file, salt))
    }

    /// Maps an existing segment and checks its header.
    pub(crate) fn open(dir: &Path, partition: u32, base_offset: u64, segment_bytes: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset));
        let file = storage::open_rw(&path)?;
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        let mut segment = Segment::new(base_offset, path, map, file, Salt::UNSALTED);
        let salt = check_header(&segment.header(), &segment.path, partition, base_offset, segment_bytes)?;
        segment.crc = SaltedCrc::new(salt);
        Ok(segment)
    }

    /// Maps an existing segment file whose header has not been checked, for
    /// recovery only, once `judge` accepted the file as it was found (its
    /// bytes, fewer than `segment_bytes` if it was cut; see
    /// `recovery::check_last_file`): a refused file is left as it is. Grows
    /// the file back to its full size if it was short, and reserves its
    /// first `reserved` bytes (the header's chunk), which a power cut may
    /// have left without blocks. Its salt is its header's if that holds a
    /// valid one, else unsalted until recovery rewrites the header
    /// ([`Segment::rewrite_header`]).
    pub(crate) fn open_for_recovery<T>(
        dir: &Path,
        base_offset: u64,
        segment_bytes: u64,
        reserved: usize,
        judge: impl FnOnce(&Path, &[u8]) -> Result<T>,
    ) -> Result<(Segment, T)> {
        let path = dir.join(file_name(base_offset));
        let file = storage::open_rw(&path)?;
        let found_len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        if found_len < segment_bytes {
            // Mapped at the length it has: a mapping past a file's end faults.
            let found = match found_len {
                0 => None,
                len => Some(MappedFile::map(&file, &path, len)?),
            };
            // SAFETY: recovery's caller is alone with the queue or holds the
            // append mutex, so nothing writes the file while it is judged.
            let verdict = judge(&path, found.as_ref().map_or(&[], |m| unsafe { m.bytes(0, m.len()) }))?;
            drop(found);
            storage::size_and_reserve(&file, &path, segment_bytes, reserved as u64)?;
            let map = MappedFile::map(&file, &path, segment_bytes)?;
            let salt = Segment::recovered_salt(&map);
            return Ok((Segment::new(base_offset, path, map, file, salt), verdict));
        }
        let map = MappedFile::map(&file, &path, segment_bytes)?;
        // SAFETY: recovery's caller is alone with the queue or holds the
        // append mutex, so nothing writes the segment while it is judged.
        let verdict = judge(&path, unsafe { map.bytes(0, map.len()) })?;
        storage::size_and_reserve(&file, &path, segment_bytes, reserved as u64)?;
        let salt = Segment::recovered_salt(&map);
        Ok((Segment::new(base_offset, path, map, file, salt), verdict))
    }

    /// The salt in the header of a segment that recovery maps.
    fn recovered_salt(map: &MappedFile) -> Salt {
        // SAFETY: as in `open_for_recovery`: nothing writes the file now.
        header_salt(unsafe { map.bytes(0, SEGMENT_HEADER_BYTES) }).unwrap_or(Salt::UNSALTED)
    }

    /// A copy of the header without its `synced_end` field, which other
    /// processes may be writing.
    fn header(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        // SAFETY: the fixed part of the header and the salt are written
        // once, before the segment is published, and never again (mmap
        // contract rule 2); the `synced_end` field between them is not
        // borrowed here.
        unsafe {
            header[..SYNCED_END_AT].copy_from_slice(self.map.bytes(0, SYNCED_END_AT));
            header[SALT_AT..].copy_from_slice(self.map.bytes(SALT_AT, SEGMENT_HEADER_BYTES - SALT_AT));
        }
        header
    }

    /// What this segment's frames' checksums are seeded with.
    pub(crate) fn salt(&self) -> Salt {
        self.crc.salt()
    }

    /// Records that every record of this segment below `synced_end` is on
    /// stable storage (see the module docs).
    ///
    /// # Safety
    /// The caller holds the partition's append mutex (the only writers of
    /// this field) and a sync covering those records has returned.
    pub(crate) unsafe fn set_synced_end(&self, synced_end: u64) {
        // SAFETY: forwarded contract; readers borrow only the fixed part of
        // the header, and recovery reads this field only while alone or
        // under the append mutex.
        unsafe { self.map.write(SYNCED_END_AT, &encode_synced_end(synced_end)) }
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
        // The header is parsed once: the frame's length bounds the bytes
        // borrowed next, and the same parse checks the whole frame.
        match record::parse_header(header, self.len() - pos, record_bytes_max) {
            Ok(None) => Decoded::Zero,
            Err(invalid) => Decoded::Invalid(invalid),
            Ok(Some(h)) => {
                // SAFETY: forwarded contract: the whole published frame
                // (`parse_header` bounded its length by the mapping's end).
                let frame = unsafe { self.published(pos, pos + h.len) };
                record::decode_parsed(frame, h, |bytes| self.crc.checksum(bytes))
            }
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
        let crc = record::checksum(unsafe { self.map.bytes(pos, end - pos) }, self.crc.salt());
        // SAFETY: as above.
        unsafe { self.map.write(pos, &crc) };
        end - pos
    }

    /// Writes whole, checksummed frames at `pos` with `pwrite`, not through
    /// the mapping: how the writer appends under `Durability::Sync`. A store
    /// into a mapped page makes the file system count its whole folio dirty
    /// (ext4 and XFS keep files in folios of up to 2 MiB), and the next sync
    /// writes all of it; a `pwrite` dirties only the blocks it writes, so a
    /// small sync writes about the batch. The page cache is the one copy
    /// every mapping sees, so readers find the frames as if stored.
    ///
    /// A failed write is the send's error, not a reason to stop the handle:
    /// it wrote at most a part of `frames` past the published tail, never
    /// the last frame whole (a write that got all bytes out succeeded), so
    /// what it left is a torn frame or a batch whose last frame is missing,
    /// which no reader reaches (it is not published) and recovery cuts
    /// (docs/FORMAT.md, rows 3 and 3a), and the next append overwrites.
    ///
    /// # Safety
    /// As [`Segment::write_frame`]: the caller holds the partition's append
    /// mutex and `pos` is at or beyond the published tail (mmap contract
    /// rule 2), and the range has blocks reserved (rule 1).
    pub(crate) unsafe fn write_frames(&self, pos: usize, frames: &[u8]) -> Result<()> {
        assert!(
            pos <= self.len() && frames.len() <= self.len() - pos,
            "write {pos}+{} beyond segment of {}",
            frames.len(),
            self.len()
        );
        if frames.is_empty() {
            return Ok(());
        }
        storage::write_at(&self.file, &self.path, pos as u64, frames)
    }

    /// Writes the segment header with `salt` (recovery of a segment whose
    /// creation was cut short: a fresh salt; or whose header was lost: the
    /// salt its frames were found to carry), which its frames are read with
    /// from now on.
    ///
    /// # Safety
    /// The caller is the only writer of this segment and no reader can reach
    /// it yet.
    pub(crate) unsafe fn rewrite_header(&mut self, partition: u32, segment_bytes: u64, salt: Salt) {
        self.crc = SaltedCrc::new(salt);
        let header = encode_header(partition, self.base_offset, segment_bytes, salt);
        // SAFETY: forwarded contract.
        unsafe { self.map.write(0, &header) };
    }

    /// Zeroes `pos..end`.
    ///
    /// # Safety
    /// As [`Segment::write_frame`]: the range is unpublished.
    pub(crate) unsafe fn zero(&self, pos: usize, end: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.map.zero(pos, end - pos) }
    }

    /// Reserves blocks for the bytes `from..to` (see `storage::reserve`),
    /// before anything is stored there. Idempotent: bytes that have blocks
    /// keep them, and what they hold.
    pub(crate) fn reserve(&self, from: usize, to: usize) -> Result<()> {
        storage::reserve(&self.file, &self.path, from as u64..to.min(self.len()) as u64)
    }

    /// Gives back the blocks of `from..to` (see `storage::release`), which
    /// must lie beyond the reserved watermark.
    pub(crate) fn release(&self, from: usize, to: usize) {
        storage::release(&self.file, &self.path, from as u64..to.min(self.len()) as u64)
    }

    /// Where this segment's data ends as far as the file system knows:
    /// every byte from there on reads as zero (see `storage::data_end`).
    pub(crate) fn data_end(&self) -> usize {
        storage::data_end(&self.file, self.len() as u64) as usize
    }

    /// Faults in the pages of `pos..end` ahead of the writer.
    pub(crate) fn prefault(&self, pos: usize, end: usize) {
        self.map.prefault(pos, end.saturating_sub(pos))
    }

    /// Makes `pos..end` of the tail segment durable, where `end` is the
    /// published tail: first drops this process's page-table entries for the
    /// whole pages of the range below the tail's page, which the writer has
    /// left behind for good (as [`Segment::sync_sealed`] does, so the sync
    /// need not interrupt other CPUs once per page to write-protect them).
    pub(crate) fn sync_tail(&self, pos: usize, end: usize) -> Result<()> {
        const PAGE: usize = 4096;
        let (first_page, tail_page) = (pos / PAGE * PAGE, end / PAGE * PAGE);
        if tail_page > first_page {
            self.map.drop_page_table_entries(first_page, tail_page - first_page);
        }
        self.sync(pos, end)
    }

    /// Makes `pos..end` durable. Fails for good once a sync of this segment
    /// failed in this process (see the module docs).
    pub(crate) fn sync(&self, pos: usize, end: usize) -> Result<()> {
        let mut syncs = self.syncs.lock();
        self.sync_locked(&mut syncs, pos, end)
    }

    /// Makes the bytes `0..end` of a sealed segment durable (`end` at or past
    /// its last frame), once per process: later calls return at once, or
    /// wait for a sync of it in progress on another thread and share its
    /// outcome.
    pub(crate) fn sync_sealed(&self, end: usize) -> Result<()> {
        let mut syncs = self.syncs.lock();
        if syncs.sealed && !syncs.failed.is_stopped() {
            return Ok(());
        }
        // The writer has left this segment: without its page-table entries
        // the writeback need not interrupt the writer's CPU once per page.
        self.map.drop_page_table_entries(0, end);
        self.sync_locked(&mut syncs, 0, end)?;
        syncs.sealed = true;
        Ok(())
    }

    /// Starts writing `pos..end` to the disk without waiting (see
    /// `storage::start_writeback`): a stretch the writer has left behind for
    /// good, so that the sync that makes it durable later finds less to write
    /// (`sealer.rs`), or one ahead of the writer, to write its zeros before
    /// records need them (`prefault.rs`). Drops the range's page-table
    /// entries first, as [`Segment::sync_sealed`] does. Should the writer
    /// reach the range meanwhile, its store into a page under writeback
    /// dirties the page again, and the sync covering the store writes it.
    pub(crate) fn start_writeback(&self, pos: usize, end: usize) -> Result<()> {
        let end = end.min(self.len());
        if pos >= end {
            return Ok(());
        }
        self.map.drop_page_table_entries(pos, end - pos);
        storage::start_writeback(&self.file, &self.path, pos as u64, (end - pos) as u64)
    }

    fn sync_locked(&self, syncs: &mut Syncs, pos: usize, end: usize) -> Result<()> {
        syncs.failed.check()?;
        self.map.sync_range(&self.path, pos, end - pos).map_err(|e| syncs.failed.stop(e))
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

    const SALT: Salt = Salt::new(0x5a17_c0de);

    #[test]
    fn segment_header_golden_bytes_and_checks() {
        let h = encode_header(3, 1000, 65536, SALT);
        assert_eq!(&h[..8], b"DURQSEG\0");
        assert_eq!(h[8..12], 2u32.to_le_bytes(), "version 2: salted");
        assert_eq!(h[12..16], 3u32.to_le_bytes());
        assert_eq!(h[16..24], 1000u64.to_le_bytes());
        assert_eq!(h[24..32], 65536u64.to_le_bytes());
        assert_eq!(h[32..36], crc32fast::hash(&h[..32]).to_le_bytes());
        assert_eq!(h[40..48], 1000u64.to_le_bytes(), "nothing synced yet");
        assert_eq!(h[48..52], crc32fast::hash(&h[40..48]).to_le_bytes());
        assert_eq!(h[52..56], 0x5a17_c0de_u32.to_le_bytes());
        assert_eq!(h[56..60], crc32fast::hash(&h[52..56]).to_le_bytes());
        assert!(h[36..40].iter().chain(&h[60..]).all(|&b| b == 0));
        assert_eq!(decode_synced_end(&h), Some(1000));
        let mut damaged = h;
        damaged[44] ^= 1;
        assert_eq!(decode_synced_end(&damaged), None);
        let p = Path::new("x.seg");
        assert_eq!(check_header(&h, p, 3, 1000, 65536).unwrap(), SALT);
        assert!(matches!(check_header(&h, p, 4, 1000, 65536), Err(Error::Corrupt { .. })));
        let mut flipped = h;
        flipped[20] ^= 1;
        assert!(matches!(check_header(&flipped, p, 3, 1000, 65536), Err(Error::Corrupt { .. })));
        // A damaged salt would make every frame fail: it is header damage.
        let mut salt_flipped = h;
        salt_flipped[53] ^= 1;
        assert!(matches!(check_header(&salt_flipped, p, 3, 1000, 65536), Err(Error::Corrupt { .. })));
        assert!(matches!(check_header(&h[..58], p, 3, 1000, 65536), Err(Error::Corrupt { .. })));
        // Salt zero with a valid checksum is no version-2 salt either.
        let mut zero_salt = h;
        zero_salt[52..56].fill(0);
        let crc = crc32fast::hash(&zero_salt[52..56]);
        zero_salt[56..60].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(check_header(&zero_salt, p, 3, 1000, 65536), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn segment_header_version_1_golden_bytes_still_read_unsalted() {
        // The header every segment had before the salt: bytes 52..64 zero.
        let h = encode_header(3, 1000, 65536, Salt::UNSALTED);
        let mut v1 = [0u8; SEGMENT_HEADER_BYTES];
        v1[..8].copy_from_slice(b"DURQSEG\0");
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1[12..16].copy_from_slice(&3u32.to_le_bytes());
        v1[16..24].copy_from_slice(&1000u64.to_le_bytes());
        v1[24..32].copy_from_slice(&65536u64.to_le_bytes());
        let crc = crc32fast::hash(&v1[..32]);
        v1[32..36].copy_from_slice(&crc.to_le_bytes());
        v1[40..48].copy_from_slice(&1000u64.to_le_bytes());
        let crc = crc32fast::hash(&v1[40..48]);
        v1[48..52].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(h, v1);
        assert_eq!(check_header(&v1, Path::new("x.seg"), 3, 1000, 65536).unwrap(), Salt::UNSALTED);
        // A version this build does not know is refused as such.
        let mut v3 = v1;
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&v3[..32]);
        v3[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&v3, Path::new("x.seg"), 3, 1000, 65536),
            Err(Error::UnsupportedVersion { found: 3, supported: 2, .. })
        ));
    }

    #[test]
    fn a_header_is_whole_by_its_fixed_part_and_checksum_alone() {
        // What a power cut during creation cannot leave: the fixed part and
        // its checksum (36 bytes), whatever follows.
        let h = encode_header(3, 1000, 65536, SALT);
        assert!(header_is_whole(&h) && header_is_whole(&h[..CRC_AT + 4]));
        assert!(!header_is_whole(&h[..CRC_AT + 3]), "cut inside the checksum");
        let mut flipped = h;
        flipped[20] ^= 1;
        assert!(!header_is_whole(&flipped));
        assert!(!header_is_whole(&[0; SEGMENT_HEADER_BYTES]));
    }
}

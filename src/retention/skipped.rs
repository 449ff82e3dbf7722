//! The skip record of a group, `groups/<group>/skipped`: what the queue's
//! retention limits removed before the group processed it, per partition.
//!
//! A limit (`Retention::max_bytes`, `max_age`) removes segments whatever
//! the groups have processed. Before a pass raises `first_offset` or
//! removes a file, it records here, for each group whose position lies
//! below the first record it keeps, how many records the group loses and
//! which; only once that is durable does it go on. So a crash or a power
//! loss at any point leaves either the records or the record of their
//! loss, never neither. A crash between the two may leave a skip recorded
//! for records that were then delivered after all: the record errs on the
//! loud side.
//!
//! ```text
//! a copy, at 0 and at COPY_HEADER_BYTES + ENTRY_BYTES * partitions:
//! offset size field
//!  0     8    magic       b"DURQSKIP"
//!  8     4    version     FORMAT_VERSION
//! 12     4    partitions  the number of entries
//! 16     8    generation  one more at every update; the newest valid copy is in force
//! 24     4    crc32       CRC32 of the copy without this field
//! 28     4    reserved    zeros
//! 32   32×P   entries     one per partition:
//!                           0  8  count      records skipped in all
//!                           8  8  last_from  the last skipped range: first offset
//!                          16  8  last_to    … and the offset after its last
//!                          24  8  last_ms    when it was recorded, ms since the Unix epoch
//! ```
//!
//! While a limit is set, every pass first gives each group's file its full
//! size with blocks reserved (`prepare`), so that recording a loss on a
//! disk that filled since needs no new block.
//!
//! An update (under an exclusive `flock` on the file, tried as the failures
//! record's is, since it runs under a partition's append mutex) writes the
//! copy that is not in force and fdatasyncs it, then fsyncs the group's
//! directory (the file's name, the first time). A write torn by a power
//! loss leaves the other copy in force; a copy of zeros (a file made but
//! never written) is the empty record. Both copies damaged is
//! `Error::Corrupt` naming the file: a pass then removes nothing, and
//! `stat` says why.

use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{Error, Result};
use crate::meta::FORMAT_VERSION;
use crate::storage;

use super::failures;

pub use crate::layout::SKIPPED_FILE;

const MAGIC: [u8; 8] = *b"DURQSKIP";
const VERSION_AT: usize = 8;
const PARTITIONS_AT: usize = 12;
const GENERATION_AT: usize = 16;
const CRC_AT: usize = 24;
const RESERVED_AT: usize = 28;
/// Bytes of a copy before its entries.
pub const COPY_HEADER_BYTES: usize = 32;
/// Bytes of one partition's entry.
pub const ENTRY_BYTES: usize = 32;
const _: () = assert!(CRC_AT + 4 == RESERVED_AT && RESERVED_AT + 4 == COPY_HEADER_BYTES);

/// What retention limits removed before a group processed it, in one
/// partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionSkips {
    /// Records skipped in all.
    pub count: u64,
    /// The last skipped range, `last_from..last_to` (empty if none).
    pub last_from: u64,
    /// The end of the last skipped range (exclusive).
    pub last_to: u64,
    /// When the last skip was recorded, ms since the Unix epoch (0 if none).
    pub last_ms: u64,
}

/// A group's skip record: one entry per partition, and its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipRecord {
    /// One more at every update.
    pub generation: u64,
    /// Indexed by partition.
    pub entries: Vec<RetentionSkips>,
}

/// The record's path inside the group directory `group_dir`.
pub fn path(group_dir: &Path) -> PathBuf {
    group_dir.join(SKIPPED_FILE)
}

/// Bytes of one copy for a queue of `partitions`.
pub fn copy_bytes(partitions: u32) -> usize {
    COPY_HEADER_BYTES + ENTRY_BYTES * partitions as usize
}

/// Encodes one copy of `record`.
pub fn encode_copy(record: &SkipRecord) -> Vec<u8> {
    let mut b = vec![0u8; copy_bytes(record.entries.len() as u32)];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..PARTITIONS_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[PARTITIONS_AT..GENERATION_AT].copy_from_slice(&(record.entries.len() as u32).to_le_bytes());
    b[GENERATION_AT..CRC_AT].copy_from_slice(&record.generation.to_le_bytes());
    for (e, at) in record.entries.iter().zip((COPY_HEADER_BYTES..).step_by(ENTRY_BYTES)) {
        b[at..at + 8].copy_from_slice(&e.count.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&e.last_from.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&e.last_to.to_le_bytes());
        b[at + 24..at + 32].copy_from_slice(&e.last_ms.to_le_bytes());
    }
    let crc = checksum(&b);
    b[CRC_AT..RESERVED_AT].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why a copy cannot be used, with the offset in the copy.
fn decode_copy(b: &[u8], partitions: u32) -> std::result::Result<Option<SkipRecord>, (usize, String)> {
    if b.iter().all(|&x| x == 0) {
        // Never written: the empty record.
        return Ok(None);
    }
    if b[..VERSION_AT] != MAGIC {
        return Err((0, "bad magic".into()));
    }
    if checksum(b) != codec::u32_at(b, CRC_AT) {
        return Err((CRC_AT, "checksum mismatch".into()));
    }
    let version = codec::u32_at(b, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err((VERSION_AT, format!("version {version}, this build reads {FORMAT_VERSION}")));
    }
    let stored = codec::u32_at(b, PARTITIONS_AT);
    if stored != partitions {
        return Err((PARTITIONS_AT, format!("{stored} partitions, the queue has {partitions}")));
    }
    let entries = (COPY_HEADER_BYTES..b.len())
        .step_by(ENTRY_BYTES)
        .map(|at| RetentionSkips {
            count: codec::u64_at(b, at),
            last_from: codec::u64_at(b, at + 8),
            last_to: codec::u64_at(b, at + 16),
            last_ms: codec::u64_at(b, at + 24),
        })
        .collect();
    Ok(Some(SkipRecord { generation: codec::u64_at(b, GENERATION_AT), entries }))
}

/// Decodes the record file's bytes `b` (read from `path`) for a queue of
/// `partitions`: the newest valid copy; the empty record for a file never
/// written; `Error::Corrupt` if no copy is valid and one was written.
pub fn decode(b: &[u8], partitions: u32, path: &Path) -> Result<SkipRecord> {
    let size = copy_bytes(partitions);
    let mut whole = b.to_vec();
    // A file shorter than two copies holds zeros (never written) past its end.
    whole.resize(2 * size, 0);
    let empty = SkipRecord { generation: 0, entries: vec![RetentionSkips::default(); partitions as usize] };
    let first = decode_copy(&whole[..size], partitions);
    let second = decode_copy(&whole[size..], partitions);
    match (first, second) {
        (Ok(a), Ok(b)) => Ok([a, b].into_iter().flatten().max_by_key(|r| r.generation).unwrap_or(empty)),
        (Ok(a), Err(_)) => Ok(a.unwrap_or(empty)),
        (Err(_), Ok(b)) => Ok(b.unwrap_or(empty)),
        (Err((at, reason)), Err(_)) => {
            Err(Error::corrupt(path, at as u64, None, format!("retention skip record: no valid copy ({reason})")))
        }
    }
}

/// CRC32 of a copy without its checksum field.
fn checksum(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..CRC_AT]);
    h.update(&b[RESERVED_AT..]);
    h.finalize()
}

/// The skip record of the group at `group_dir` in a queue of `partitions`:
/// the empty record if retention never skipped anything of it.
pub fn read(group_dir: &Path, partitions: u32) -> Result<SkipRecord> {
    let path = path(group_dir);
    match storage::read_small(&path, 2 * copy_bytes(partitions)) {
        Ok(bytes) => decode(&bytes, partitions, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => decode(&[], partitions, &path),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// Gives the record of the group at `group_dir` (in a queue of
/// `partitions`) its full size, with its blocks reserved, durably, unless it
/// has it: every limited pass does this for every group, so that when a
/// full disk later makes a limit remove unprocessed records, recording the
/// loss overwrites blocks the file already has instead of needing new ones
/// the disk no longer has. Rewrites the bytes it finds (under the lock, the
/// same bytes), zero-padded, and fdatasyncs them with the new length.
pub(crate) fn prepare(group_dir: &Path, partitions: u32) -> Result<()> {
    let path = path(group_dir);
    let full = 2 * copy_bytes(partitions);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= full as u64) || !group_dir.is_dir() {
        return Ok(());
    }
    let file = match failures::lock(&path) {
        Ok(file) => file,
        // Deleted since it was listed.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    storage::size_and_reserve(&file, &path, full as u64, full as u64)?;
    let mut bytes = vec![0; full];
    storage::read_at(&file, &path, 0, &mut bytes)?;
    storage::write_durable_at(&file, &path, 0, &bytes)?;
    storage::sync_dir(group_dir)
}

/// Records durably that the group at `group_dir`, whose position in
/// `partition` is `from`, loses the records below `to` there. What an
/// earlier skip already covers is not counted again (a pass that crashed
/// after recording is repeated by the next one). Returns the range newly
/// recorded, `None` if there was none, or if the group was deleted
/// meanwhile (its directory is gone, and with it what it could lose).
pub(crate) fn record(
    group_dir: &Path,
    partitions: u32,
    partition: u32,
    from: u64,
    to: u64,
) -> Result<Option<std::ops::Range<u64>>> {
    let path = path(group_dir);
    if !group_dir.is_dir() {
        return Ok(None);
    }
    let file = match failures::lock(&path) {
        Ok(file) => file,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = copy_bytes(partitions);
    let mut bytes = vec![0; 2 * size];
    let n = storage::read_at(&file, &path, 0, &mut bytes)?;
    let mut record = decode(&bytes[..n], partitions, &path)?;
    let entry = &mut record.entries[partition as usize];
    let from = from.max(entry.last_to);
    if from >= to {
        return Ok(None);
    }
    let continues = entry.count > 0 && entry.last_to == from;
    *entry = RetentionSkips {
        count: entry.count + (to - from),
        last_from: if continues { entry.last_from } else { from },
        last_to: to,
        last_ms: storage::now_ms(),
    };
    record.generation += 1;
    // The copy not in force: a torn write leaves the one that is.
    let at = if record.generation % 2 == 1 { 0 } else { size };
    storage::write_durable_at(&file, &path, at as u64, &encode_copy(&record))?;
    storage::sync_dir(group_dir)?;
    Ok(Some(from..to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SkipRecord {
        SkipRecord {
            generation: 5,
            entries: vec![
                RetentionSkips::default(),
                RetentionSkips { count: 300, last_from: 100, last_to: 400, last_ms: 1_795_827_723_000 },
            ],
        }
    }

    #[test]
    fn skip_record_golden_bytes_round_trip() {
        let b = encode_copy(&sample());
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..8], b"DURQSKIP");
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[12..16], 2u32.to_le_bytes());
        assert_eq!(b[16..24], 5u64.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[..24]);
        crc.update(&b[28..]);
        assert_eq!(b[24..28], crc.finalize().to_le_bytes());
        assert!(b[28..64].iter().all(|&x| x == 0), "reserved, and partition 0's empty entry");
        assert_eq!(b[64..72], 300u64.to_le_bytes());
        assert_eq!(b[72..80], 100u64.to_le_bytes());
        assert_eq!(b[80..88], 400u64.to_le_bytes());
        assert_eq!(b[88..96], 1_795_827_723_000u64.to_le_bytes());
        let mut file = vec![0; 96];
        file.extend_from_slice(&b);
        assert_eq!(decode(&file, 2, Path::new("s")).unwrap(), sample());
    }

    #[test]
    fn the_newest_valid_copy_wins_and_a_torn_one_falls_back() {
        let p = Path::new("s");
        let older = SkipRecord { generation: 4, ..sample() };
        let mut file = encode_copy(&sample());
        file.extend_from_slice(&encode_copy(&older));
        assert_eq!(decode(&file, 2, p).unwrap().generation, 5);
        file[70] ^= 1;
        assert_eq!(decode(&file, 2, p).unwrap().generation, 4, "a torn newer copy leaves the older in force");
        assert_eq!(decode(&[], 2, p).unwrap().entries, vec![RetentionSkips::default(); 2], "never written");
        let mut torn_first = encode_copy(&sample());
        torn_first[40] ^= 1;
        assert_eq!(decode(&torn_first, 2, p).unwrap().generation, 0, "first write torn: empty");
    }

    #[test]
    fn both_copies_damaged_or_another_partition_count_is_corrupt_not_empty() {
        let p = Path::new("s");
        let mut file = encode_copy(&sample());
        file.extend_from_slice(&encode_copy(&sample()));
        file[20] ^= 1;
        file[96 + 20] ^= 1;
        assert!(matches!(decode(&file, 2, p), Err(Error::Corrupt { .. })));
        let one = encode_copy(&sample());
        assert!(matches!(decode(&[one.clone(), one].concat(), 3, p), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn records_count_each_record_once_and_survive_rereading() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        assert_eq!(record(g, 2, 1, 10, 50).unwrap(), Some(10..50));
        assert_eq!(record(g, 2, 1, 10, 50).unwrap(), None, "a repeated pass counts nothing twice");
        assert_eq!(record(g, 2, 1, 10, 80).unwrap(), Some(50..80));
        let e = read(g, 2).unwrap().entries[1];
        assert_eq!((e.count, e.last_from, e.last_to), (70, 10, 80), "a continued range grows");
        assert_eq!(record(g, 2, 1, 100, 120).unwrap(), Some(100..120));
        let e = read(g, 2).unwrap().entries[1];
        assert_eq!((e.count, e.last_from, e.last_to), (90, 100, 120));
        assert_eq!(read(g, 2).unwrap().entries[0], RetentionSkips::default());
        assert_eq!(record(&g.join("deleted"), 2, 0, 0, 5).unwrap(), None, "a deleted group loses nothing");
    }

    #[test]
    fn prepare_gives_the_file_its_full_size_and_keeps_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        prepare(g, 2).unwrap();
        assert_eq!(std::fs::metadata(path(g)).unwrap().len(), 2 * 96);
        assert_eq!(read(g, 2).unwrap().generation, 0, "zeros: the empty record");
        std::fs::remove_file(path(g)).unwrap();
        record(g, 2, 1, 3, 9).unwrap();
        assert_eq!(std::fs::metadata(path(g)).unwrap().len(), 96, "the first copy only");
        prepare(g, 2).unwrap();
        assert_eq!(std::fs::metadata(path(g)).unwrap().len(), 2 * 96);
        assert_eq!(read(g, 2).unwrap().entries[1].count, 6);
        record(g, 2, 1, 9, 12).unwrap();
        assert_eq!(read(g, 2).unwrap().entries[1].count, 9);
    }
}

//! The checkpoint file: a group's durable read position in one partition.
//!
//! Crash-atomic without rename, the bbolt way: the file holds two fixed
//! copies, each a complete checkpoint with its own checksum. A commit
//! overwrites the *older* copy and fdatasyncs; a torn or lost write can only
//! damage the copy being written, and the other one still holds the previous
//! commit. Open validates each copy (magic → checksum → version → partition)
//! and takes the valid copy with the higher generation.
//!
//! ```text
//! copy at byte 0 and at byte 512 (separate disk sectors), 64 bytes each:
//! offset size field
//!  0     8    magic        b"DURQCKPT"
//!  8     4    version      FORMAT_VERSION
//! 12     4    partition
//! 16     8    generation   +1 per commit; the higher valid copy wins
//! 24     8    epoch        fencing token of the committer (0 until leases)
//! 32     8    next_offset  the first record not yet processed
//! 40    20    reserved     zeros
//! 60     4    crc32        CRC32 of bytes 0..60 of the copy
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::meta::FORMAT_VERSION;
use crate::storage;

/// Bytes of one copy.
pub const COPY_BYTES: usize = 64;
/// Where the second copy starts.
pub const SECOND_COPY_AT: usize = 512;
/// Bytes of the whole file.
pub const FILE_BYTES: usize = SECOND_COPY_AT + COPY_BYTES;

const MAGIC: [u8; 8] = *b"DURQCKPT";
const VERSION_AT: usize = 8;
const PARTITION_AT: usize = 12;
const GENERATION_AT: usize = 16;
const EPOCH_AT: usize = 24;
const NEXT_OFFSET_AT: usize = 32;
const CRC_AT: usize = 60;
const _: () = assert!(CRC_AT + 4 == COPY_BYTES);

/// The name of the checkpoint file of partition `p`.
pub fn file_name(partition: u32) -> String {
    format!("p{partition:04}.ckpt")
}

/// One checkpoint copy's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointState {
    /// The partition it belongs to.
    pub partition: u32,
    /// Higher is newer.
    pub generation: u64,
    /// The committer's fencing epoch.
    pub epoch: u64,
    /// The first offset not yet processed by the group.
    pub next_offset: u64,
}

/// Encodes one copy.
pub fn encode_copy(s: &CheckpointState) -> [u8; COPY_BYTES] {
    let mut b = [0u8; COPY_BYTES];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..PARTITION_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[PARTITION_AT..GENERATION_AT].copy_from_slice(&s.partition.to_le_bytes());
    b[GENERATION_AT..EPOCH_AT].copy_from_slice(&s.generation.to_le_bytes());
    b[EPOCH_AT..NEXT_OFFSET_AT].copy_from_slice(&s.epoch.to_le_bytes());
    b[NEXT_OFFSET_AT..NEXT_OFFSET_AT + 8].copy_from_slice(&s.next_offset.to_le_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why a copy was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// Missing or cut short.
    Truncated,
    /// Not a checkpoint copy (or never written).
    BadMagic,
    /// The checksum does not match.
    BadChecksum,
    /// Written by another format version.
    Version(u32),
    /// It belongs to another partition.
    WrongPartition(u32),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Truncated => f.write_str("copy cut short"),
            CopyError::BadMagic => f.write_str("bad magic"),
            CopyError::BadChecksum => f.write_str("checksum mismatch"),
            CopyError::Version(v) => write!(f, "format version {v}"),
            CopyError::WrongPartition(p) => write!(f, "belongs to partition {p}"),
        }
    }
}

/// Decodes one copy, checking magic, then checksum, then version, then the
/// partition it must belong to.
pub fn decode_copy(b: &[u8], partition: u32) -> Result<CheckpointState, CopyError> {
    let b = b.get(..COPY_BYTES).ok_or(CopyError::Truncated)?;
    if b[..VERSION_AT] != MAGIC {
        return Err(CopyError::BadMagic);
    }
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if crc32fast::hash(&b[..CRC_AT]) != le32(CRC_AT) {
        return Err(CopyError::BadChecksum);
    }
    if le32(VERSION_AT) != FORMAT_VERSION {
        return Err(CopyError::Version(le32(VERSION_AT)));
    }
    if le32(PARTITION_AT) != partition {
        return Err(CopyError::WrongPartition(le32(PARTITION_AT)));
    }
    Ok(CheckpointState {
        partition,
        generation: le64(GENERATION_AT),
        epoch: le64(EPOCH_AT),
        next_offset: le64(NEXT_OFFSET_AT),
    })
}

/// Picks the checkpoint in force from a whole file's bytes: the valid copy
/// with the higher generation. Both copies invalid is `Error::Corrupt`,
/// never a silent reset.
pub fn decode_file(bytes: &[u8], partition: u32, path: &Path) -> Result<CheckpointState> {
    let first = decode_copy(bytes, partition);
    let second = decode_copy(bytes.get(SECOND_COPY_AT..).unwrap_or(&[]), partition);
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err(Error::corrupt(
            path,
            0,
            None,
            format!("both checkpoint copies are invalid (copy at 0: {a}; copy at {SECOND_COPY_AT}: {b})"),
        )),
    }
}

/// An open checkpoint file.
pub(crate) struct Checkpoint {
    file: File,
    path: PathBuf,
    state: CheckpointState,
}

impl Checkpoint {
    /// Opens the checkpoint of `partition` in `group_dir`, creating it at
    /// `initial_offset` if it does not exist. A new file is written to a
    /// temporary name and published with a link, so it is never seen half
    /// written.
    pub(crate) fn open_or_create(group_dir: &Path, partition: u32, initial_offset: u64) -> Result<Checkpoint> {
        let path = group_dir.join(file_name(partition));
        if !path.exists() {
            let state = CheckpointState { partition, generation: 1, epoch: 0, next_offset: initial_offset };
            let mut bytes = vec![0u8; FILE_BYTES];
            bytes[..COPY_BYTES].copy_from_slice(&encode_copy(&state));
            let tmp = group_dir.join(format!("{}.tmp.{}", file_name(partition), std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            storage::write_new_file(&tmp, &bytes)?;
            storage::publish_new(&tmp, &path)?;
        }
        let file = storage::open_rw(&path)?;
        let mut bytes = vec![0u8; FILE_BYTES];
        let n = storage::read_at(&file, &path, 0, &mut bytes)?;
        let state = decode_file(&bytes[..n], partition, &path)?;
        Ok(Checkpoint { file, path, state })
    }

    /// Reads the checkpoint in force without opening it for writing.
    pub fn read(path: &Path, partition: u32) -> Result<CheckpointState> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        decode_file(&bytes, partition, path)
    }

    /// The checkpoint in force.
    pub(crate) fn state(&self) -> CheckpointState {
        self.state
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records `next_offset`: overwrites the older copy and
    /// fdatasyncs. On error the in-memory state is unchanged, and the caller
    /// must stop committing (a retried fdatasync proves nothing).
    pub(crate) fn commit(&mut self, next_offset: u64) -> Result<()> {
        assert!(
            next_offset >= self.state.next_offset,
            "checkpoint moving backwards: {} -> {next_offset} in {}",
            self.state.next_offset,
            self.path.display()
        );
        let state = CheckpointState { generation: self.state.generation + 1, next_offset, ..self.state };
        // Copies alternate by generation: odd at 0, even at 512, so the copy
        // written is always the one not holding the current state.
        let at = if state.generation % 2 == 1 { 0 } else { SECOND_COPY_AT as u64 };
        storage::write_durable_at(&self.file, &self.path, at, &encode_copy(&state))?;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u64, next_offset: u64) -> CheckpointState {
        CheckpointState { partition: 2, generation, epoch: 0, next_offset }
    }

    fn file(a: Option<CheckpointState>, b: Option<CheckpointState>) -> Vec<u8> {
        let mut bytes = vec![0u8; FILE_BYTES];
        if let Some(a) = a {
            bytes[..COPY_BYTES].copy_from_slice(&encode_copy(&a));
        }
        if let Some(b) = b {
            bytes[SECOND_COPY_AT..].copy_from_slice(&encode_copy(&b));
        }
        bytes
    }

    #[test]
    fn checkpoint_golden_bytes() {
        let b = encode_copy(&CheckpointState { partition: 2, generation: 3, epoch: 4, next_offset: 5 });
        assert_eq!(&b[..8], b"DURQCKPT");
        assert_eq!(b[8..12], FORMAT_VERSION.to_le_bytes());
        assert_eq!(b[12..16], 2u32.to_le_bytes());
        assert_eq!(b[16..24], 3u64.to_le_bytes());
        assert_eq!(b[24..32], 4u64.to_le_bytes());
        assert_eq!(b[32..40], 5u64.to_le_bytes());
        assert_eq!(b[60..], crc32fast::hash(&b[..60]).to_le_bytes());
    }

    #[test]
    fn checkpoint_newest_valid_copy_wins() {
        let p = Path::new("c");
        assert_eq!(decode_file(&file(Some(state(3, 30)), Some(state(4, 40))), 2, p).unwrap().next_offset, 40);
        assert_eq!(decode_file(&file(Some(state(5, 50)), Some(state(4, 40))), 2, p).unwrap().next_offset, 50);
    }

    #[test]
    fn checkpoint_torn_newer_copy_falls_back_to_older() {
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        bytes[SECOND_COPY_AT + 35] ^= 0x10;
        assert_eq!(decode_file(&bytes, 2, Path::new("c")).unwrap().next_offset, 30);
        let bytes = file(Some(state(3, 30)), None);
        assert_eq!(decode_file(&bytes, 2, Path::new("c")).unwrap().next_offset, 30);
    }

    #[test]
    fn checkpoint_both_copies_corrupt_is_an_error_not_a_reset() {
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        bytes[20] ^= 1;
        bytes[SECOND_COPY_AT + 20] ^= 1;
        assert!(matches!(decode_file(&bytes, 2, Path::new("c")), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_file(&bytes[..100], 2, Path::new("c")), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_file(&[], 2, Path::new("c")), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn checkpoint_of_another_partition_is_rejected() {
        let bytes = file(Some(state(3, 30)), None);
        assert!(matches!(decode_file(&bytes, 1, Path::new("c")), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn checkpoint_commits_alternate_copies_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoint::open_or_create(dir.path(), 2, 0).unwrap();
        for next in [5, 9, 9, 20] {
            c.commit(next).unwrap();
            let reread = Checkpoint::read(c.path(), 2).unwrap();
            assert_eq!(reread, c.state());
        }
        let reopened = Checkpoint::open_or_create(dir.path(), 2, 0).unwrap();
        assert_eq!((reopened.state().next_offset, reopened.state().generation), (20, 5));
    }
}

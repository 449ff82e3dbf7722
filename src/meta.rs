//! The meta file, `durq.meta`: what makes a directory a durq queue.
//!
//! ```text
//! offset size field
//!  0     8    magic             b"DURQMETA"
//!  8     4    version           FORMAT_VERSION
//! 12     4    partitions
//! 16     8    segment_bytes
//! 24     4    record_bytes_max
//! 28     4    durability        0 = sync, 1 = interval, 2 = buffered
//! 32     8    interval_ms       the flush interval (0 unless interval)
//! 40     8    retention_bytes   most segment bytes per partition (0 = unlimited)
//! 48     8    retention_age_ms  longest a segment is kept, ms (0 = unlimited)
//! 56     4    reserved          zeros
//! 60     4    crc32             CRC32 of bytes 0..60
//! ```
//!
//! The retention limits took reserved bytes that every earlier meta file
//! holds as zeros, which read as unlimited: a queue made before them opens
//! as it always did, with no change of version.
//!
//! The file is written to a temporary name, fdatasynced, renamed into place,
//! and the directory is fsynced, by a process holding the queue's open lock
//! (creation, a change of durability or retention). Checks run in the order magic →
//! checksum → version, so a foreign file is reported as foreign, not as a
//! newer version.

use std::path::Path;
use std::time::Duration;

use crate::codec;
use crate::error::{Error, Result};
use crate::options::{Durability, QueueConfig, Retention};
use crate::storage;

pub use crate::format::FORMAT_VERSION;
pub use crate::layout::META_FILE;
/// Bytes of the meta file.
pub const META_BYTES: usize = 64;

const MAGIC: [u8; 8] = *b"DURQMETA";
const VERSION_AT: usize = 8;
const PARTITIONS_AT: usize = 12;
const SEGMENT_BYTES_AT: usize = 16;
const RECORD_BYTES_MAX_AT: usize = 24;
const DURABILITY_AT: usize = 28;
const INTERVAL_MS_AT: usize = 32;
const RETENTION_BYTES_AT: usize = 40;
const RETENTION_AGE_MS_AT: usize = 48;
const RESERVED_AT: usize = 56;
const CRC_AT: usize = 60;
const _: () = assert!(CRC_AT + 4 == META_BYTES);

/// Encodes a queue's configuration as meta file bytes.
pub fn encode(config: &QueueConfig) -> [u8; META_BYTES] {
    let (kind, interval_ms) = match config.durability {
        Durability::Sync => (0u32, 0u64),
        Durability::Interval(d) => (1, d.as_millis() as u64),
        Durability::Buffered => (2, 0),
    };
    let mut b = [0u8; META_BYTES];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..PARTITIONS_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[PARTITIONS_AT..SEGMENT_BYTES_AT].copy_from_slice(&config.partitions.to_le_bytes());
    b[SEGMENT_BYTES_AT..RECORD_BYTES_MAX_AT].copy_from_slice(&config.segment_bytes.to_le_bytes());
    b[RECORD_BYTES_MAX_AT..DURABILITY_AT].copy_from_slice(&config.record_bytes_max.to_le_bytes());
    b[DURABILITY_AT..INTERVAL_MS_AT].copy_from_slice(&kind.to_le_bytes());
    b[INTERVAL_MS_AT..RETENTION_BYTES_AT].copy_from_slice(&interval_ms.to_le_bytes());
    let retention_bytes = config.retention.max_bytes.unwrap_or(0);
    b[RETENTION_BYTES_AT..RETENTION_AGE_MS_AT].copy_from_slice(&retention_bytes.to_le_bytes());
    let retention_age_ms = config.retention.max_age.map_or(0, |a| a.as_millis() as u64);
    b[RETENTION_AGE_MS_AT..RESERVED_AT].copy_from_slice(&retention_age_ms.to_le_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and validates meta file bytes read from `path`.
pub fn decode(bytes: &[u8], path: &Path) -> Result<QueueConfig> {
    let not_queue = |reason: String| Error::NotAQueue { path: path.into(), reason };
    let corrupt = |position: usize, reason: &str| Error::corrupt(path, position as u64, None, reason);
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(not_queue(format!("{} does not start with the durq magic", path.display())));
    }
    if bytes.len() != META_BYTES {
        return Err(corrupt(bytes.len(), &format!("meta file is {} bytes, expected {META_BYTES}", bytes.len())));
    }
    if crc32fast::hash(&bytes[..CRC_AT]) != codec::u32_at(bytes, CRC_AT) {
        return Err(corrupt(CRC_AT, "meta file checksum mismatch"));
    }
    let version = codec::u32_at(bytes, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported: FORMAT_VERSION });
    }
    let durability = match (codec::u32_at(bytes, DURABILITY_AT), codec::u64_at(bytes, INTERVAL_MS_AT)) {
        (0, 0) => Durability::Sync,
        (1, ms) => Durability::Interval(Duration::from_millis(ms)),
        (2, 0) => Durability::Buffered,
        _ => return Err(corrupt(DURABILITY_AT, "unknown durability")),
    };
    // Zero is unlimited: what every meta file made before the limits holds.
    let retention = Retention {
        max_bytes: Some(codec::u64_at(bytes, RETENTION_BYTES_AT)).filter(|&b| b != 0),
        max_age: Some(codec::u64_at(bytes, RETENTION_AGE_MS_AT)).filter(|&ms| ms != 0).map(Duration::from_millis),
    };
    let config = QueueConfig {
        partitions: codec::u32_at(bytes, PARTITIONS_AT),
        durability,
        segment_bytes: codec::u64_at(bytes, SEGMENT_BYTES_AT),
        record_bytes_max: codec::u32_at(bytes, RECORD_BYTES_MAX_AT),
        retention,
    };
    config.validate().map_err(|e| corrupt(0, &format!("stored options are invalid: {e}")))?;
    Ok(config)
}

/// Reads and validates the meta file of the queue at `dir`.
pub fn read(dir: &Path) -> Result<QueueConfig> {
    let path = dir.join(META_FILE);
    let bytes = storage::read_small(&path, META_BYTES).map_err(|e| Error::io("read", &path, e))?;
    decode(&bytes, &path)
}

/// Writes the meta file of the queue at `dir` for `config`, atomically:
/// written to a temporary name, fdatasynced, renamed over any old one, the
/// directory fsynced. The caller holds the open lock, and for a change of
/// options has made sure no process has the queue open.
pub fn write(dir: &Path, config: &QueueConfig) -> Result<()> {
    let tmp = dir.join(crate::layout::meta_tmp_name(std::process::id()));
    let _ = storage::remove_file(&tmp);
    storage::write_new_file(&tmp, &encode(config))?;
    storage::rename(&tmp, &dir.join(META_FILE))
}

/// True for the leftovers of a [`write()`] that crashed before its rename.
pub fn is_unpublished_tmp(name: &str) -> bool {
    crate::layout::is_meta_tmp_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_golden_bytes_round_trip() {
        let config = QueueConfig {
            partitions: 4,
            durability: Durability::Interval(Duration::from_millis(25)),
            segment_bytes: 1 << 20,
            record_bytes_max: 4096,
            retention: Retention { max_bytes: Some(3 << 20), max_age: Some(Duration::from_secs(7200)) },
        };
        let b = encode(&config);
        assert_eq!(&b[..8], b"DURQMETA");
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[12..16], 4u32.to_le_bytes());
        assert_eq!(b[16..24], (1u64 << 20).to_le_bytes());
        assert_eq!(b[24..28], 4096u32.to_le_bytes());
        assert_eq!(b[28..32], 1u32.to_le_bytes());
        assert_eq!(b[32..40], 25u64.to_le_bytes());
        assert_eq!(b[40..48], (3u64 << 20).to_le_bytes());
        assert_eq!(b[48..56], 7_200_000u64.to_le_bytes());
        assert!(b[56..60].iter().all(|&x| x == 0));
        assert_eq!(decode(&b, Path::new("m")).unwrap(), config);
    }

    /// The bytes of a meta file written before the retention limits
    /// (4 partitions, interval 25 ms, 1 MiB segments, 4096-byte records):
    /// it must keep opening, with no limit.
    const META_BEFORE_RETENTION_LIMITS: [u8; META_BYTES] = [
        0x44, 0x55, 0x52, 0x51, 0x4d, 0x45, 0x54, 0x41, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, //
        0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd1, 0x1c, 0xa5, 0xf2,
    ];

    #[test]
    fn a_meta_file_from_before_the_retention_limits_opens_unlimited() {
        let config = decode(&META_BEFORE_RETENTION_LIMITS, Path::new("m")).unwrap();
        assert_eq!(config.retention, Retention::UNLIMITED);
        assert_eq!((config.partitions, config.segment_bytes, config.record_bytes_max), (4, 1 << 20, 4096));
        assert_eq!(config.durability, Durability::Interval(Duration::from_millis(25)));
        assert_eq!(encode(&config), META_BEFORE_RETENTION_LIMITS, "an unlimited queue writes the same bytes");
    }

    #[test]
    fn meta_foreign_truncated_newer_and_damaged_are_refused() {
        let b = encode(&crate::Options::default().resolve().unwrap());
        let p = Path::new("m");
        assert!(matches!(decode(b"hello world", p), Err(Error::NotAQueue { .. })));
        assert!(matches!(decode(&b[..40], p), Err(Error::Corrupt { .. })));
        let mut flipped = b;
        flipped[13] ^= 4;
        assert!(matches!(decode(&flipped, p), Err(Error::Corrupt { .. })));
        let mut newer = b;
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&newer[..60]);
        newer[60..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&newer, p), Err(Error::UnsupportedVersion { found: 2, .. })));
    }
}

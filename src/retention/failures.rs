//! The retention failures record, `durq.retention`: how many retention
//! passes failed, and the last one's error, for `durq stat`.
//!
//! Retention runs where nobody waits for its answer: after a roll, and
//! before a roll retries on a full disk. A failure there must not fail the
//! send (its record is stored, or it fails for lack of space anyway), yet
//! an unseen one lets passed segments pile up until the disk is full. So every failure is counted here, in a file
//! beside the meta file, where `stat` reads it whether or not any process
//! has the queue open (`durq.ctl` is rebuilt by every first opener).
//!
//! ```text
//! offset size field
//!  0     8    magic        b"DURQRETF"
//!  8     4    version      FORMAT_VERSION
//! 12     4    partition    the partition of the last failure
//! 16     8    failures     retention passes that failed since the file was made
//! 24     8    last_ms      when the last one failed, ms since the Unix epoch
//! 32     4    message_len  bytes of `message`, at most MESSAGE_BYTES_MAX
//! 36     4    crc32        CRC32 of bytes 0..36 and 40..512
//! 40   472    message      the last failure's error, UTF-8, zero-padded
//! ```
//!
//! A process updates it under an exclusive `flock` on the file itself (read,
//! count one more, write the whole record back and cut the file to it), so
//! failures in several processes at once are all counted, and a file longer
//! than the record (damage, a stranger's write) reads well again after the
//! next failure. The lock is tried, never waited for: the update runs under
//! a partition's append mutex on the full-disk path, and a process that
//! hangs holding the lock must not stall that partition's producers; after
//! [`LOCK_TRIES`] tries, the failure goes unrecorded and the caller prints
//! it instead. It is not synced: it is a report, and
//! survives a crash of the process, not necessarily a power loss, after
//! which a torn record reads as unreadable (stat says so) and the next
//! failure starts the count again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec;
use crate::error::{Error, Result};
use crate::meta::FORMAT_VERSION;
use crate::storage;

pub use crate::layout::FAILURES_FILE;
/// Bytes of the record (the whole file).
pub const FAILURES_BYTES: usize = 512;
/// Longest message kept; a longer error is cut at a character boundary.
pub const MESSAGE_BYTES_MAX: usize = FAILURES_BYTES - MESSAGE_AT;
/// Tries at the lock, [`LOCK_RETRY_PAUSE`] apart: a holder keeps it for one
/// read and one write of 512 bytes, so only a hung one outlasts them.
pub const LOCK_TRIES: u32 = 20;
/// The pause between two tries at the lock.
pub const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(1);
const MAGIC: [u8; 8] = *b"DURQRETF";
const VERSION_AT: usize = 8;
const PARTITION_AT: usize = 12;
const FAILURES_AT: usize = 16;
const LAST_MS_AT: usize = 24;
const MESSAGE_LEN_AT: usize = 32;
const CRC_AT: usize = 36;
const MESSAGE_AT: usize = 40;
const _: () = assert!(MESSAGE_LEN_AT + 4 == CRC_AT && CRC_AT + 4 == MESSAGE_AT);

/// Retention passes that failed, and the last one's error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionFailures {
    /// Failed passes, over every partition and process, since the record
    /// was made.
    pub count: u64,
    /// When the last one failed, ms since the Unix epoch.
    pub last_ms: u64,
    /// The partition it failed in.
    pub partition: u32,
    /// Its error, cut to [`MESSAGE_BYTES_MAX`] bytes.
    pub last_error: String,
}

/// The record's path inside the queue directory `queue_dir`.
pub fn path(queue_dir: &Path) -> PathBuf {
    queue_dir.join(FAILURES_FILE)
}

/// Encodes a record; a message longer than [`MESSAGE_BYTES_MAX`] is cut at
/// a character boundary.
pub fn encode(f: &RetentionFailures) -> [u8; FAILURES_BYTES] {
    let mut cut = f.last_error.len().min(MESSAGE_BYTES_MAX);
    while !f.last_error.is_char_boundary(cut) {
        cut -= 1;
    }
    let message = &f.last_error.as_bytes()[..cut];
    let mut b = [0u8; FAILURES_BYTES];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..PARTITION_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[PARTITION_AT..FAILURES_AT].copy_from_slice(&f.partition.to_le_bytes());
    b[FAILURES_AT..LAST_MS_AT].copy_from_slice(&f.count.to_le_bytes());
    b[LAST_MS_AT..MESSAGE_LEN_AT].copy_from_slice(&f.last_ms.to_le_bytes());
    b[MESSAGE_LEN_AT..CRC_AT].copy_from_slice(&(message.len() as u32).to_le_bytes());
    b[MESSAGE_AT..MESSAGE_AT + message.len()].copy_from_slice(message);
    let crc = checksum(&b);
    b[CRC_AT..MESSAGE_AT].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a record read from `path`; a damaged one is `Error::Corrupt`.
pub fn decode(b: &[u8], path: &Path) -> Result<RetentionFailures> {
    let bad = |at: usize, reason: &str| {
        Err(Error::corrupt(path, at as u64, None, format!("retention failures record: {reason}")))
    };
    if b.len() != FAILURES_BYTES {
        return bad(0, &format!("{} bytes, not {FAILURES_BYTES}", b.len()));
    }
    if b[..VERSION_AT] != MAGIC {
        return bad(0, "bad magic");
    }
    if checksum(b) != codec::u32_at(b, CRC_AT) {
        return bad(CRC_AT, "checksum mismatch");
    }
    let version = codec::u32_at(b, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported: FORMAT_VERSION });
    }
    let len = codec::u32_at(b, MESSAGE_LEN_AT) as usize;
    if len > MESSAGE_BYTES_MAX {
        return bad(MESSAGE_LEN_AT, &format!("message of {len} bytes, more than {MESSAGE_BYTES_MAX}"));
    }
    let Ok(last_error) = String::from_utf8(b[MESSAGE_AT..MESSAGE_AT + len].to_vec()) else {
        return bad(MESSAGE_AT, "message is not UTF-8");
    };
    Ok(RetentionFailures {
        count: codec::u64_at(b, FAILURES_AT),
        last_ms: codec::u64_at(b, LAST_MS_AT),
        partition: codec::u32_at(b, PARTITION_AT),
        last_error,
    })
}

/// CRC32 of the record without its checksum field.
fn checksum(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..CRC_AT]);
    h.update(&b[MESSAGE_AT..]);
    h.finalize()
}

/// The record of the queue at `queue_dir`: `None` if no retention pass
/// ever failed there (no file, or one a failing process created but did
/// not get to fill).
pub fn read(queue_dir: &Path) -> Result<Option<RetentionFailures>> {
    let path = path(queue_dir);
    match storage::read_small(&path, FAILURES_BYTES) {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// Counts one more failure, `error`, of retention in `partition`.
pub(crate) fn record(queue_dir: &Path, partition: u32, error: &Error) -> Result<()> {
    let path = path(queue_dir);
    // Held until the record is written back: a failure in another process
    // meanwhile is counted after this one, not instead of it.
    let file = lock(&path)?;
    let mut bytes = vec![0; FAILURES_BYTES + 1];
    let n = storage::read_at(&file, &path, 0, &mut bytes)?;
    // A record torn by a power cut has lost its count: it starts again.
    let count = if n == 0 { 0 } else { decode(&bytes[..n], &path).map_or(0, |f| f.count) };
    let updated =
        RetentionFailures { count: count + 1, last_ms: storage::now_ms(), partition, last_error: error.to_string() };
    storage::overwrite(&file, &path, &encode(&updated))
}

/// Takes the exclusive lock on the record at `path`, trying [`LOCK_TRIES`]
/// times; a lock still held elsewhere after that is `EWOULDBLOCK`. The
/// skip records are locked the same way, for the same reason.
pub(super) fn lock(path: &Path) -> Result<std::fs::File> {
    for _ in 1..LOCK_TRIES {
        match storage::try_lock_exclusive(path)? {
            (file, storage::Locked::Yes) => return Ok(file),
            (_, storage::Locked::HeldElsewhere) => std::thread::sleep(LOCK_RETRY_PAUSE),
        }
    }
    match storage::try_lock_exclusive(path)? {
        (file, storage::Locked::Yes) => Ok(file),
        (_, storage::Locked::HeldElsewhere) => {
            Err(Error::io("lock", path, std::io::Error::from_raw_os_error(libc::EWOULDBLOCK)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RetentionFailures {
        RetentionFailures {
            count: 3,
            last_ms: 1_795_827_723_000,
            partition: 2,
            last_error: "remove q/p0002/00000000000000000000.seg: Is a directory (os error 21)".into(),
        }
    }

    #[test]
    fn retention_failures_golden_bytes_round_trip() {
        let f = sample();
        let b = encode(&f);
        assert_eq!(&b[..8], b"DURQRETF");
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[12..16], 2u32.to_le_bytes());
        assert_eq!(b[16..24], 3u64.to_le_bytes());
        assert_eq!(b[24..32], 1_795_827_723_000u64.to_le_bytes());
        assert_eq!(b[32..36], (f.last_error.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[..36]);
        crc.update(&b[40..]);
        assert_eq!(b[36..40], crc.finalize().to_le_bytes());
        assert_eq!(&b[40..40 + f.last_error.len()], f.last_error.as_bytes());
        assert!(b[40 + f.last_error.len()..].iter().all(|&x| x == 0));
        assert_eq!(decode(&b, Path::new("r")).unwrap(), f);
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let f = RetentionFailures { last_error: "é".repeat(MESSAGE_BYTES_MAX), ..sample() };
        let back = decode(&encode(&f), Path::new("r")).unwrap();
        assert_eq!(back.last_error, "é".repeat(MESSAGE_BYTES_MAX / 2));
    }

    #[test]
    fn a_torn_or_foreign_record_is_corrupt_not_a_panic() {
        let b = encode(&sample());
        let p = Path::new("r");
        assert!(matches!(decode(&b[..100], p), Err(Error::Corrupt { .. })));
        assert!(matches!(decode(&[0; FAILURES_BYTES], p), Err(Error::Corrupt { .. })));
        for at in [12, 20, 37, 45, 511] {
            let mut flipped = b;
            flipped[at] ^= 1;
            assert!(matches!(decode(&flipped, p), Err(Error::Corrupt { .. })), "byte {at}");
        }
    }

    #[test]
    fn failures_are_counted_across_records_and_a_torn_record_starts_again() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path()).unwrap(), None);
        std::fs::write(path(tmp.path()), b"").unwrap();
        assert_eq!(read(tmp.path()).unwrap(), None, "created by a failing process that died before writing");
        let err = |what: &str| Error::corrupt("x", 7, None, what);
        record(tmp.path(), 1, &err("first")).unwrap();
        record(tmp.path(), 0, &err("second")).unwrap();
        let f = read(tmp.path()).unwrap().unwrap();
        assert_eq!((f.count, f.partition), (2, 0));
        assert!(f.last_error.contains("second"), "{}", f.last_error);
        std::fs::write(path(tmp.path()), [7u8; 40]).unwrap();
        assert!(read(tmp.path()).is_err());
        record(tmp.path(), 0, &err("third")).unwrap();
        assert_eq!(read(tmp.path()).unwrap().unwrap().count, 1);
    }

    #[test]
    fn a_record_longer_than_its_size_reads_well_after_the_next_failure() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(path(tmp.path()), [7u8; FAILURES_BYTES + 100]).unwrap();
        assert!(read(tmp.path()).is_err());
        record(tmp.path(), 3, &Error::corrupt("x", 7, None, "after the damage")).unwrap();
        let f = read(tmp.path()).unwrap().expect("a record");
        assert_eq!((f.count, f.partition), (1, 3));
        assert_eq!(std::fs::metadata(path(tmp.path())).unwrap().len(), FAILURES_BYTES as u64);
    }

    #[test]
    fn a_record_locked_elsewhere_is_not_waited_for_and_stays_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Error::corrupt("x", 7, None, "a failure");
        record(tmp.path(), 0, &err).unwrap();
        // A hung holder: a lock on another open file description of it.
        let holder = std::fs::File::open(path(tmp.path())).unwrap();
        holder.lock().unwrap();
        match record(tmp.path(), 1, &err) {
            Err(Error::Io { op: "lock", source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EWOULDBLOCK)),
            other => panic!("the update must give up on a held lock: {other:?}"),
        }
        assert_eq!(read(tmp.path()).unwrap().unwrap().count, 1);
        drop(holder);
        record(tmp.path(), 1, &err).unwrap();
        assert_eq!(read(tmp.path()).unwrap().unwrap().count, 2);
    }
}

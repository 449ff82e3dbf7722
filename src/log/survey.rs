//! Where a partition's log ends as the next open will find it, found
//! without changing anything: for `stat` of a queue that no process has
//! open, and for `verify`'s judgement of checkpoints.
//!
//! It reads the last segment, and the one before it unless a header proves
//! that one synced, with plain reads: no mapping, no lock, no write access.
//! It takes the decisions that recovery takes at an open alone with the
//! queue (`partition::recover` after a possible power loss), in the same
//! order and through the same functions (`segment::check_header`,
//! `segment::creation_cut_short`, `recovery::check_sealed`,
//! `recovery::scan_known_zeros`), and where recovery would change a byte it
//! says in words what it would do instead. A change to the order of those
//! decisions in `partition::recover` must be made here too:
//! `tests/it/inspect.rs` checks, over many damaged queues, that the end found
//! here is the one the next open recovers to, and that a repair is
//! announced exactly when the open changes a byte.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::partition;
use crate::log::recovery::{self, Evidence, LastFile, Sealed};
use crate::log::salt::Salt;
use crate::log::segment;
use crate::options::QueueConfig;
use crate::storage;

/// What a read-only look at a partition's segment files finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Survey {
    /// Earliest retained offset: the first segment's base.
    pub(crate) first_offset: u64,
    /// The offset the next record gets once the next open has recovered.
    pub(crate) next_offset: u64,
    /// Segment files on disk now.
    pub(crate) segments: usize,
    /// What the next open's recovery will repair, in words, in the order it
    /// will; empty when it will change nothing.
    pub(crate) repairs: Vec<String>,
}

/// Surveys partition `id`, whose directory is `dir`.
/// `evidence`: what the groups prove the log holds (`group::evidence`), as
/// recovery is given it: a log that would recover to an end before it is
/// `Error::Corrupt`, as the next open would find.
pub(crate) fn survey(dir: &Path, id: u32, config: &QueueConfig, evidence: Option<&Evidence>) -> Result<Survey> {
    let bases = partition::existing_segment_bases(dir)?;
    let (first, last) = (bases[0], bases[bases.len() - 1]);
    let last_path = dir.join(segment::file_name(last));
    let last_file = read_segment(&last_path, config.segment_bytes)?;
    let whole = &last_file.bytes;
    let found = &whole[..last_file.len.min(config.segment_bytes) as usize];
    let judged = recovery::check_last_file(found, &last_path, id, last, config.segment_bytes, evidence)?;
    let mut repairs = Vec::new();
    let named = |base: u64| segment::file_name(base);
    let proven_by_last = segment::decode_synced_end(whole).is_some_and(|end| end >= last);
    if let Some(&prev) = bases.len().checked_sub(2).and_then(|i| bases.get(i))
        && !proven_by_last
    {
        let prev_path = dir.join(named(prev));
        let prev_file = read_segment(&prev_path, config.segment_bytes)?;
        if prev_file.len < config.segment_bytes {
            // Recovery maps it at full size, which it refuses for a short file.
            let len = prev_file.len;
            return Err(Error::corrupt(
                &prev_path,
                len,
                None,
                format!("file is {len} bytes, expected at least {}", config.segment_bytes),
            ));
        }
        segment::check_header(&prev_file.bytes, &prev_path, id, prev, config.segment_bytes)?;
        match recovery::check_sealed(&prev_file.bytes, prev, whole, last, config.record_bytes_max) {
            Sealed::Proven => {}
            Sealed::Kept => repairs.push(format!(
                "{}: the segment before the last was never proven synced; the next open syncs it and records that",
                named(prev)
            )),
            Sealed::Cut(scan) => {
                recovery::check_end(scan.next_offset, evidence, &prev_path, scan.tail_pos)?;
                repairs.push(format!(
                    "{}: unsynced end at byte {} (offset {}), and nothing proves its records acknowledged; the next open cuts the log there and removes {}",
                    named(prev),
                    scan.tail_pos,
                    scan.next_offset,
                    named(last)
                ));
                return Ok(Survey {
                    first_offset: first,
                    next_offset: scan.next_offset,
                    segments: bases.len(),
                    repairs,
                });
            }
        }
    }
    if last_file.len < config.segment_bytes {
        repairs.push(format!(
            "{}: {} bytes instead of {}; the next open grows it back",
            named(last),
            last_file.len,
            config.segment_bytes
        ));
    }
    match judged {
        LastFile::Whole => {}
        LastFile::NeverWritten => {
            repairs.push(format!("{}: its creation was cut short; the next open rewrites its header", named(last)))
        }
        LastFile::HeaderLost => {
            repairs.push(format!("{}: its header is zeros; the next open rewrites its header", named(last)))
        }
    }
    // Recovery rewrites a lost header with `synced_end` at the base, which
    // is also what a lost one proves.
    let synced_end = match judged {
        LastFile::Whole => segment::decode_synced_end(whole).unwrap_or(last),
        LastFile::HeaderLost | LastFile::NeverWritten => last,
    };
    let (max, zeros_from) = (config.record_bytes_max, last_file.zeros_from);
    // Where recovery finds no salt it gives the rewritten header a fresh
    // one; no frame validates under either, so the walk is the same.
    let salt = recovery::segment_salt(whole, last, max, zeros_from).unwrap_or(Salt::UNSALTED);
    let scan = recovery::scan_known_zeros(whole, last, max, synced_end, zeros_from, salt);
    recovery::check_end(scan.next_offset, evidence, &last_path, scan.tail_pos)?;
    if let Some(torn) = scan.torn {
        repairs.push(format!(
            "{}: torn tail at byte {} (offset {}): {}; the next open zeroes it",
            named(last),
            torn.from,
            scan.next_offset,
            torn.reason
        ));
    }
    Ok(Survey { first_offset: first, next_offset: scan.next_offset, segments: bases.len(), repairs })
}

/// A segment file as recovery sees it through a full-size mapping.
struct SegmentFile {
    /// Its first `segment_bytes`; zeros past the end of a shorter file.
    bytes: Vec<u8>,
    /// Every byte from here on is zero.
    zeros_from: usize,
    /// The file's length.
    len: u64,
}

/// Reads a segment file read-only. Bytes past where the file system says
/// its data ends are not read (they are zeros, see `storage::data_end`), so
/// a mostly empty 64 MiB segment costs what its data costs; the buffer's
/// untouched zero pages cost nothing.
fn read_segment(path: &Path, segment_bytes: u64) -> Result<SegmentFile> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let size = usize::try_from(segment_bytes).map_err(|_| {
        Error::corrupt(path, 0, None, format!("a segment of {segment_bytes} bytes does not fit this host's memory"))
    })?;
    let mut bytes = vec![0; size];
    let data_end = storage::data_end(&file, len.min(segment_bytes)) as usize;
    let zeros_from = storage::read_at(&file, path, 0, &mut bytes[..data_end])?;
    Ok(SegmentFile { bytes, zeros_from, len })
}

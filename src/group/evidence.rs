//! What a queue's groups prove about how far each partition's log reached.
//!
//! Recovery judges a partition's end from its own segments; where their
//! bytes are gone (a last segment emptied, cut, or missing) they cannot say
//! whether records were lost with them. Two kinds of files outside the log
//! can, and each is trusted exactly as far as durq's own writes make it true:
//!
//! - a group's checkpoint in force at `next_offset = n`: a commit makes the
//!   log durable up to what it commits before it writes the checkpoint
//!   (`Consumer::commit`), and so does a reset (`Queue::reset_group`); so
//!   every record below `n` existed and was synced;
//! - a dead letter of original offset `o`, in the last segment of the
//!   group's dead-letter queue: the log is made durable past a record before
//!   it goes there (`Consumer::dead_letter`), so record `o` existed and was
//!   synced. (A group reset back to earlier records leaves its checkpoint
//!   behind its dead letters.)
//!
//! The control file proves nothing. It is never synced and carries no
//! checksum, so after a power cut its `durable` watermark may hold bytes no
//! process wrote (the simulated disk's `Garbage` images do exactly that), and
//! trusting it would refuse intact queues. A checkpoint or dead letter that
//! cannot be read proves nothing either (the group reports it when it
//! joins). Evidence never changes what recovery does to the log: it only
//! refuses a log that ends before it (`recovery::check_end`).
//!
//! Gathering reads, per group, one small checkpoint file and lease per
//! partition and the dead-letter queue's last segment up to where its data
//! ends (a few KiB for a handful of dead letters).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::group::{self, Committed, dead_letter};
use crate::log::partition;
use crate::log::record::{self, Decoded};
use crate::log::recovery::{self, Evidence};
use crate::log::salt::Salt;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::{layout, meta, storage};

/// For each of the `partitions` of the queue at `queue_dir`, the strongest
/// evidence its groups hold of records in that partition (`None`: none).
/// Fails only when the groups directory cannot be listed.
pub fn gather(queue_dir: &Path, partitions: u32) -> Result<Vec<Option<Evidence>>> {
    let mut best: Vec<Option<Evidence>> = vec![None; partitions as usize];
    for group in group::list(queue_dir)?.groups {
        let name = group.name();
        for (p, best) in (0..partitions).zip(best.iter_mut()) {
            if let Ok(Committed::At { epoch, next_offset }) = group.committed(p) {
                raise(best, next_offset, || {
                    let file = group.checkpoint_path(p, epoch);
                    format!("group {name}'s checkpoint {} (at offset {next_offset})", file.display())
                });
            }
        }
        if let Some((file, letters)) = last_dead_letters(group.dead_letter_queue().dir()) {
            for (p, offset) in letters.into_iter().filter(|&(p, _)| p < partitions) {
                raise(&mut best[p as usize], offset.saturating_add(1), || {
                    format!("group {name}'s dead letter of offset {offset} in {}", file.display())
                });
            }
        }
    }
    Ok(best)
}

/// Keeps in `best` the evidence that proves the most.
fn raise(best: &mut Option<Evidence>, end: u64, source: impl FnOnce() -> String) {
    if best.as_ref().is_none_or(|b| end > b.end) {
        *best = Some(Evidence { end, source: source() });
    }
}

/// The dead letters (original partition and offset) of the last segment of
/// the dead-letter queue at `dlq_dir`, with that segment's path: its valid
/// frames from the first on, up to the first that is not. `None` when there
/// is no such queue or it cannot be read.
fn last_dead_letters(dlq_dir: &Path) -> Option<(PathBuf, Vec<(u32, u64)>)> {
    let config = meta::read(dlq_dir).ok()?;
    let pdir = dlq_dir.join(layout::partition_dir_name(0));
    let base = *partition::segment_bases(&pdir).ok()?.last()?;
    let path = pdir.join(layout::segment_file_name(base));
    let file = File::open(&path).ok()?;
    let len = file.metadata().ok()?.len().min(config.segment_bytes);
    // Bytes past the file system's data end are zeros: no frame there.
    let mut bytes = vec![0; storage::data_end(&file, len) as usize];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let max = config.record_bytes_max;
    // No salt to be found: no frame validates under any.
    let salt = recovery::segment_salt(&bytes, base, max, bytes.len()).unwrap_or(Salt::UNSALTED);
    let mut letters = Vec::new();
    let (mut pos, mut expected) = (SEGMENT_HEADER_BYTES, base);
    while let Some(Decoded::Frame(f)) = bytes.get(pos..).map(|rest| record::decode(rest, max, salt)) {
        if f.meta.offset != expected {
            break;
        }
        if let Ok(letter) = dead_letter::decode(f.payload) {
            letters.push((letter.partition, letter.offset));
        }
        let Some(next) = expected.checked_add(1) else { break };
        (pos, expected) = (pos + f.len, next);
    }
    Some((path, letters))
}

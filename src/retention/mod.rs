//! Retention: removing segments every consumer group has finished with.
//!
//! A group registers when its first consumer opens (its directory appears
//! under `groups/`) and unregisters with `durq group delete`. A sealed
//! segment is removed only when every registered group's checkpoint in that
//! partition is past all of its records; a group that has never taken the
//! slot keeps everything (it will start at the earliest record). With no
//! group registered, nothing is removed: a durable queue keeps what nobody
//! has read. Entries of `groups/` that are not groups are ignored.
//!
//! A pass runs, in every partition, after a producer rolled a segment; when
//! a roll finds the disk full (the roll then tries once more if the pass
//! removed anything, so a full disk frees itself as soon as the groups have
//! passed old segments, in whichever partition they lie);
//! and on demand (`Queue::reclaim`, `durq gc`). Only the last waits for
//! its answer: the others count a failure in [`failures`], for `durq stat`,
//! instead of failing the send that ran them.
//!
//! **Invariant:** the last two segments of a partition (the tail and the one
//! before it, as the shared control state names them) are never removed.
//! They are the only ones a roll, a background seal or a recovery after a
//! process death touches, and every segment before them is synced in full,
//! so a pass needs no lock against any of those, in this process or
//! another. Passes may run at once: removing a removed file succeeds, and
//! `first_offset` only grows.
//!
//! Against readers: `first_offset` is raised before any file goes, so no
//! reader looks for a removed segment; a process that still maps one keeps
//! its pages (mmap contract rule 1). A group that registers while a pass
//! runs starts at the `first_offset` it reads after creating its directory;
//! the pass therefore looks at the groups again after raising
//! `first_offset`, and keeps the files if a group below it appeared.

pub mod failures;

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::group::{self, Committed};
use crate::log::partition::Partition;

/// What decides how far retention may go in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionLimit {
    /// No group is registered: a durable queue keeps what nobody has read.
    NoGroup,
    /// This group has not taken the partition's slot yet; it will start at
    /// the earliest record, so every record stays.
    NotStarted(String),
    /// Every group has processed every record below `offset`; `group` is
    /// the one furthest behind.
    Processed {
        /// The lowest committed offset over the groups.
        offset: u64,
        /// A group at that offset.
        group: String,
    },
}

/// What a retention pass did in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaimed {
    /// The partition.
    pub partition: u32,
    /// Segment files removed.
    pub segments_removed: usize,
    /// Their size in bytes.
    pub bytes_removed: u64,
    /// Segment files left.
    pub segments_kept: usize,
    /// The earliest retained offset after the pass.
    pub first_offset: u64,
    /// How far the groups let retention go.
    pub limit: RetentionLimit,
}

/// How far the registered groups let retention go in partition `p`.
fn limit_in(queue_dir: &Path, p: u32) -> Result<RetentionLimit> {
    let mut limit = RetentionLimit::NoGroup;
    for group in group::list(queue_dir)?.groups {
        let offset = match group.committed_durably(p)? {
            Committed::At { next_offset, .. } => next_offset,
            Committed::NotStarted => return Ok(RetentionLimit::NotStarted(group.name().to_owned())),
        };
        if !matches!(limit, RetentionLimit::Processed { offset: lowest, .. } if lowest <= offset) {
            limit = RetentionLimit::Processed { offset, group: group.name().to_owned() };
        }
    }
    Ok(limit)
}

/// Removes the segments of `partition`, of the queue at `queue_dir` whose
/// segments are `segment_bytes` long, that every group has passed.
pub(crate) fn run(queue_dir: &Path, segment_bytes: u64, partition: &Partition) -> Result<Reclaimed> {
    let mut limit = limit_in(queue_dir, partition.id)?;
    let mut removed = 0;
    if let RetentionLimit::Processed { offset, .. } = limit {
        let (passed, first_kept) = partition.passed_segments(offset)?;
        if !passed.is_empty() {
            partition.raise_first_offset(first_kept);
            limit = limit_in(queue_dir, partition.id)?;
            if matches!(limit, RetentionLimit::Processed { offset, .. } if offset >= first_kept) {
                partition.remove_segments(&passed)?;
                removed = passed.len();
            }
        }
    }
    Ok(Reclaimed {
        partition: partition.id,
        segments_removed: removed,
        bytes_removed: removed as u64 * segment_bytes,
        segments_kept: partition.segment_bases()?.len(),
        first_offset: partition.first_offset(),
        limit,
    })
}

/// Runs a pass in every partition of the queue at `queue_dir` (with
/// segments of `segment_bytes`), for a
/// caller that does not wait for its answer; a failure is counted in the
/// failures record. Returns the number of segments removed. Every
/// partition, not only the one that rolled: the disk is shared, and with
/// keyed traffic the partition that fills it may never roll again. Passes
/// take no lock, so this may run under any partition's append mutex.
pub(crate) fn run_unattended(queue_dir: &Path, segment_bytes: u64, partitions: &[Arc<Partition>]) -> usize {
    partitions.iter().map(|p| run_unattended_in(queue_dir, segment_bytes, p)).sum()
}

fn run_unattended_in(queue_dir: &Path, segment_bytes: u64, partition: &Partition) -> usize {
    match run(queue_dir, segment_bytes, partition) {
        Ok(reclaimed) => reclaimed.segments_removed,
        Err(error) => {
            if let Err(unrecorded) = failures::record(queue_dir, partition.id, &error) {
                // The disk refuses even a 512-byte overwrite. This is the
                // one message durq prints: nothing else would ever tell the
                // operator that retention stopped.
                eprintln!(
                    "durq: warning: retention in partition {} of {} failed ({error}), and so did counting it ({unrecorded})",
                    partition.id,
                    queue_dir.display()
                );
            }
            0
        }
    }
}

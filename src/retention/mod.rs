//! Retention: removing segments every consumer group has finished with,
//! and those the queue's limits let go.
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
//! another.
//!
//! **The floor lock.** A pass decides from the groups' positions how far
//! `first_offset` may go, then raises it and removes files. Two writes can
//! put a group's position below the new `first_offset` while it decides: a
//! group that registers (it starts at the `first_offset` it reads) and a
//! reset (it writes a position at or past the `first_offset` it reads).
//! Each is a look-then-write, as the pass is; so all three run under one
//! lock of the queue ([`lock_floor`]), and a pass looks at the groups once.
//! Without it, a pass that looked before such a write raised
//! `first_offset` past a position the group still needed: a member's take
//! then moved the group up to it, silently past records still on disk.
//! Passes of one queue therefore run one at a time, in every process;
//! removing a removed file succeeds, and `first_offset` only grows. A pass
//! after a roll waits for the lock at most [`UNATTENDED_PATIENCE`], then
//! counts itself failed: a process stopped while it holds the lock never
//! stalls other processes' sends.
//!
//! Against readers: `first_offset` is raised before any file goes, so no
//! reader looks for a removed segment; a process that still maps one keeps
//! its pages (mmap contract rule 1).
//!
//! **Limits** (`Retention`, in the meta file; unlimited by default) move
//! the floor up past what the groups processed: a segment beyond
//! `max_bytes` or older than `max_age` goes whoever still needs it, by the
//! same rules (whole segments, never the last two, so never a record that
//! is not durable). Every group below the new `first_offset` has its loss
//! recorded in its skip record ([`skipped`]) before `first_offset` is
//! raised; a failure to record stops the pass with nothing removed. The group resumes at the first kept record: a
//! member taking the slot moves a checkpoint below `first_offset` up to it,
//! and a holder whose next record was removed reads on from there. Without
//! limits, nothing here changes: a full disk fails sends, it never removes
//! what a group has not processed.

pub mod failures;
pub mod skipped;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::group::{self, Committed};
use crate::log::control;
use crate::log::partition::Partition;
use crate::observe;
use crate::storage;

/// Records removed by retention before someone got to them: a group's loss
/// to a retention limit ([`GroupSkipped`]), or what a [`crate::Reader`]
/// could not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The partition.
    pub partition: u32,
    /// The first record not read.
    pub from: u64,
    /// The first record after them (the earliest retained one).
    pub to: u64,
}

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
    /// `Some(first_offset)` when the queue's retention limits, not the
    /// groups, decided how far retention has gone (in this pass or an
    /// earlier one).
    pub limited_to: Option<u64>,
    /// The groups that lost records they had not processed to the limits,
    /// and which (recorded durably before anything was removed).
    pub skipped: Vec<GroupSkipped>,
}

/// Records a retention limit removed before a group processed them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSkipped {
    /// The group.
    pub group: String,
    /// The partition and the offsets it lost.
    pub skipped: Skipped,
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
/// segments are `segment_bytes` long, that every group has passed, or that
/// the queue's retention limits let go (see [`skipped`] for what a group
/// loses to a limit, and the order that keeps it recorded).
pub(crate) fn run(queue_dir: &Path, segment_bytes: u64, partition: &Partition) -> Result<Reclaimed> {
    let floor_lock = lock_floor(queue_dir)?;
    run_locked(queue_dir, segment_bytes, partition, floor_lock)
}

/// [`run`], under the floor lock, which it lets go when done.
fn run_locked(queue_dir: &Path, segment_bytes: u64, partition: &Partition, _floor_lock: File) -> Result<Reclaimed> {
    let limit = limit_in(queue_dir, partition.id)?;
    let processed = match limit {
        RetentionLimit::Processed { offset, .. } => offset,
        RetentionLimit::NoGroup | RetentionLimit::NotStarted(_) => 0,
    };
    let floor = partition.limit_floor(storage::now_ms())?;
    if partition.is_limited() {
        for group in group::list(queue_dir)?.groups {
            // Room for a loss to come. Failing here (a full disk) fails
            // nothing: the record that needs the room meets the error again
            // and stops the pass before anything is removed.
            let _ = skipped::prepare(group.dir(), partition.partitions());
        }
    }
    let mut removed = 0;
    let mut skipped = Vec::new();
    let (passed, first_kept) = partition.passed_segments(processed.max(floor))?;
    if !passed.is_empty() {
        if first_kept > processed {
            // Before readers are turned away: recorded, then lost.
            skipped = record_skips(queue_dir, partition, first_kept)?;
        }
        partition.raise_first_offset(first_kept);
        partition.remove_segments(&passed)?;
        removed = passed.len();
        observe::retention_removed(queue_dir, partition.id, removed, segment_bytes, first_kept);
    }
    let first_offset = partition.first_offset();
    let limited_to = (partition.is_limited() && first_offset > processed).then_some(first_offset);
    Ok(Reclaimed {
        partition: partition.id,
        segments_removed: removed,
        bytes_removed: removed as u64 * segment_bytes,
        segments_kept: partition.segment_bases()?.len(),
        first_offset,
        limit,
        limited_to,
        skipped,
    })
}

/// Takes the floor lock of the queue at `queue_dir` (see the module docs),
/// blocking until it holds it; released when the returned file is dropped.
/// It is the queue's open lock (`durq.lock`, see `log::control`): an opener
/// holds it for milliseconds, or for a whole recovery only when no process
/// has the queue open (so no pass can be waiting). Opening it needs no new
/// file, so a full disk cannot refuse it when a pass is needed most. No
/// holder waits for an append mutex, so a send may take it under its
/// partition's append mutex.
pub(crate) fn lock_floor(queue_dir: &Path) -> Result<File> {
    storage::lock_exclusive_existing(&queue_dir.join(control::OPEN_LOCK_FILE))
}

/// As [`lock_floor`], for a pass nobody waits for: it gives up after
/// [`UNATTENDED_PATIENCE`] with an error naming the lock file, which
/// the pass's caller counts as a failed pass (`durq stat` shows it). A
/// holder keeps the lock for milliseconds; only one that is stopped
/// (SIGSTOP, a debugger, a frozen machine) outlasts the patience, and it
/// must not stall every other process's sends at their rolls.
fn lock_floor_unattended(queue_dir: &Path) -> Result<File> {
    let path = queue_dir.join(control::OPEN_LOCK_FILE);
    let deadline = Instant::now() + UNATTENDED_PATIENCE;
    loop {
        match storage::try_lock_existing(&path)? {
            Some((file, storage::Locked::Yes)) => return Ok(file),
            Some((_, storage::Locked::HeldElsewhere)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Some((_, storage::Locked::HeldElsewhere)) => {
                let held = std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "held elsewhere for over {} ms, so this pass was skipped (is a process that has the queue \
                         open stopped?)",
                        UNATTENDED_PATIENCE.as_millis()
                    ),
                );
                return Err(Error::io("lock", &path, held));
            }
            // Removed (by an operator): nobody holds a lock on the new one.
            None => return lock_floor(queue_dir),
        }
    }
}

/// How long a pass nobody waits for tries for the floor lock.
pub const UNATTENDED_PATIENCE: Duration = Duration::from_secs(1);

/// Records, for every group of the queue at `queue_dir` whose position in
/// `partition` lies below `first_kept`, that it loses the records up to
/// there (a group that has not started loses those from the earliest
/// retained on). Returns the groups and ranges newly recorded.
fn record_skips(queue_dir: &Path, partition: &Partition, first_kept: u64) -> Result<Vec<GroupSkipped>> {
    let mut recorded = Vec::new();
    for group in group::list(queue_dir)?.groups {
        let from = group.committed(partition.id)?.next_offset_or(partition.first_offset());
        if from >= first_kept {
            continue;
        }
        let partitions = partition.partitions();
        if let Some(range) = skipped::record(group.dir(), partitions, partition.id, from, first_kept)? {
            observe::retention_skipped(queue_dir, group.name(), partition.id, range.start, range.end);
            recorded.push(GroupSkipped {
                group: group.name().to_owned(),
                skipped: Skipped { partition: partition.id, from: range.start, to: range.end },
            });
        }
    }
    Ok(recorded)
}

/// Runs a pass in every partition of the queue at `queue_dir` (with
/// segments of `segment_bytes`), for a
/// caller that does not wait for its answer; a failure is counted in the
/// failures record. Returns the number of segments removed. Every
/// partition, not only the one that rolled: the disk is shared, and with
/// keyed traffic the partition that fills it may never roll again. A pass
/// takes no lock but the floor lock, and waits for it at most
/// [`UNATTENDED_PATIENCE`], so this may run under any partition's append
/// mutex.
pub(crate) fn run_unattended(queue_dir: &Path, segment_bytes: u64, partitions: &[Arc<Partition>]) -> usize {
    partitions.iter().map(|p| run_unattended_in(queue_dir, segment_bytes, p)).sum()
}

fn run_unattended_in(queue_dir: &Path, segment_bytes: u64, partition: &Partition) -> usize {
    let pass = lock_floor_unattended(queue_dir).and_then(|lock| run_locked(queue_dir, segment_bytes, partition, lock));
    match pass {
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

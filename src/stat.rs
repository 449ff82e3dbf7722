//! What a queue holds: offsets, segments, and each group's members, slots,
//! position, lag and dead letters, found without changing anything.
//!
//! `stat` never writes, never recovers and takes no lock, so a user who may
//! only read the queue's directory can look at it, and looking changes
//! neither the queue nor how its users see each other:
//!
//! - Whether some process has the queue open comes from the kernel's table
//!   of file locks (`storage::lock_table`): each such process holds a
//!   `flock` on `durq.ctl`. Trying that lock to find out would make an
//!   opener that comes at the same moment take the queue for live and skip
//!   recovery.
//! - Open: the offsets are the live ones, read from `durq.ctl` through a
//!   read-only mapping (`control::observe`).
//! - Not open: the offsets are those the next open will recover to
//!   (`log::survey`, which reads the last segments), and a partition that
//!   the next open will repair (a torn tail after a crash, say) says so in
//!   [`PartitionStat::needs_recovery`]; `stat` leaves it as it is.
//! - Members are alive, hung or dead by the same lock table
//!   (`member::observe`); a dead member's file is left for its group.
//! - A slot whose checkpoint cannot be used is reported damaged, and a
//!   dead-letter queue that cannot be read says why; the rest of the queue
//!   is still shown. Entries of `groups/` that are not groups are noted once
//!   and ignored.
//!
//! While processes use the queue, each number is read once, in turn: the
//! snapshot is not atomic.

use std::path::Path;

use crate::error::{Error, Result};
use crate::group::dead_letter::DeadLetterQueue;
use crate::group::{self, Committed, Group, checkpoint, evidence};
use crate::log::{control, partition, survey};
use crate::meta;
use crate::options::QueueConfig;
use crate::queue::Queue;
use crate::retention::{failures, skipped};
use crate::storage::lock_table::LockTable;

pub use crate::group::lease::Lease;
pub use crate::group::member::{Liveness, MemberInfo};
/// How `durq stat` writes a member id (its file name in `members/`).
pub use crate::layout::member_hex;
pub use crate::retention::failures::RetentionFailures;
pub use crate::retention::skipped::RetentionSkips;

/// A snapshot of a queue.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueStat {
    /// The queue's options.
    pub config: QueueConfig,
    /// One entry per partition.
    pub partitions: Vec<PartitionStat>,
    /// One entry per consumer group, by name.
    pub groups: Vec<GroupStat>,
    /// Whether some process had the queue open: the offsets are then its
    /// live ones; otherwise those the next open will find.
    pub open: bool,
    /// Worth knowing, but not part of the queue: entries of `groups/` that
    /// are not consumer groups, which durq ignores.
    pub notes: Vec<String>,
    /// Retention passes that failed, and the last one's error (`None`:
    /// none ever did), or why the record of them cannot be read.
    pub retention_failures: std::result::Result<Option<RetentionFailures>, String>,
}

/// A snapshot of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStat {
    /// The partition's number.
    pub partition: u32,
    /// Earliest retained offset.
    pub first_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// What the next open's recovery will repair, in words (a torn tail
    /// after a crash, say), when no process has the queue open; `None` when
    /// it will change nothing, or the queue is open (its processes
    /// recovered it and repair what their own crashes leave).
    pub needs_recovery: Option<String>,
}

/// A snapshot of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStat {
    /// The group's name.
    pub name: String,
    /// Committed offset (next to process) per partition; `None` where the
    /// slot is damaged (see [`SlotStat::damaged`]).
    pub committed: Vec<Option<u64>>,
    /// Records not yet processed, per partition; `None` where the slot is
    /// damaged.
    pub lag: Vec<Option<u64>>,
    /// Its members, alive, hung or dead.
    pub members: Vec<MemberInfo>,
    /// One entry per slot (partition).
    pub slots: Vec<SlotStat>,
    /// Records in its dead-letter queue not yet replayed, or why its
    /// dead-letter queue cannot be read (`durq verify` says more).
    pub dead_letters: std::result::Result<u64, String>,
}

/// A snapshot of one slot of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotStat {
    /// The slot's partition.
    pub slot: u32,
    /// The epoch of the checkpoint in force (0 if never taken); for a
    /// damaged slot, that of its newest checkpoint file.
    pub epoch: u64,
    /// The lease record, or why it cannot be read.
    pub lease: std::result::Result<Lease, String>,
    /// The holder's state.
    pub holder: Holder,
    /// Why the group's position in this partition cannot be used: every
    /// copy of its checkpoint is damaged, or it lies past the end of the
    /// log. No member can take the slot until [`Queue::reset_group`]
    /// (`durq group reset`) gives it a new position.
    pub damaged: Option<String>,
    /// Records the queue's retention limits removed before the group
    /// processed them here, and the last such range; or why the group's
    /// skip record cannot be read.
    pub skipped: std::result::Result<RetentionSkips, String>,
}

/// Who holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Nobody ever took it, or its lease cannot be read.
    Nobody,
    /// Its last holder gave it back.
    Released,
    /// Held by a member in this state.
    Member(Liveness),
}

/// A snapshot of the queue at `dir`, which must exist; changes nothing (see
/// the module docs).
pub fn stat(dir: &Path) -> Result<QueueStat> {
    if !dir.join(meta::META_FILE).exists() {
        return Err(Error::NotAQueue { path: dir.into(), reason: format!("it has no {}", meta::META_FILE) });
    }
    let config = meta::read(dir)?;
    let locks = LockTable::read()?;
    let (open, partitions) = partitions(dir, &config, &locks)?;
    let listing = group::list(dir)?;
    let mut groups = Vec::new();
    for group in &listing.groups {
        groups.push(group_stat(group, &partitions, open, &locks)?);
    }
    let notes = listing.stray_notes(dir);
    let retention_failures = failures::read(dir).map_err(|e| e.to_string());
    Ok(QueueStat { config, partitions, groups, open, notes, retention_failures })
}

impl Queue {
    /// A snapshot of the queue's partitions and groups: [`stat`] of its
    /// directory.
    pub fn stat(&self) -> Result<QueueStat> {
        stat(self.path())
    }
}

/// Every partition of the queue at `dir`, and whether some process has the
/// queue open.
fn partitions(dir: &Path, config: &QueueConfig, locks: &LockTable) -> Result<(bool, Vec<PartitionStat>)> {
    let live = control::observe(dir, config.partitions, locks)?;
    // What the groups prove the log holds, as the next open judges it.
    let evidence = if live.is_none() { evidence::gather(dir, config.partitions)? } else { Vec::new() };
    let mut partitions = Vec::new();
    for p in 0..config.partitions {
        let pdir = dir.join(partition::dir_name(p));
        let (first_offset, next_offset, segments, needs_recovery) = match &live {
            Some(live) => {
                let o = live[p as usize];
                (o.first_offset, o.next_offset, partition::segment_bases(&pdir)?.len(), None)
            }
            None => {
                let s = survey::survey(&pdir, p, config, evidence[p as usize].as_ref())?;
                (s.first_offset, s.next_offset, s.segments, (!s.repairs.is_empty()).then(|| s.repairs.join("; ")))
            }
        };
        let bytes = segments as u64 * config.segment_bytes;
        partitions.push(PartitionStat { partition: p, first_offset, next_offset, segments, bytes, needs_recovery });
    }
    Ok((live.is_some(), partitions))
}

/// One group; `open`: the partitions' ends are live (and may have moved
/// since they were read, so a checkpoint past them proves nothing).
fn group_stat(group: &Group, partitions: &[PartitionStat], open: bool, locks: &LockTable) -> Result<GroupStat> {
    let members = group.observe_members(locks)?;
    let skips = match skipped::read(group.dir(), partitions.len() as u32) {
        Ok(record) => Ok(record.entries),
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    let (mut committed, mut lag, mut slots) = (Vec::new(), Vec::new(), Vec::new());
    for p in partitions {
        let (epoch, position) = match group.committed(p.partition) {
            // A slot nobody took yet has processed nothing.
            Ok(Committed::NotStarted) => (0, Ok(p.first_offset)),
            Ok(Committed::At { epoch, next_offset }) if !open && next_offset > p.next_offset => {
                let why = format!(
                    "{}: checkpoint at offset {next_offset} is past the end of the log ({})",
                    group.checkpoint_path(p.partition, epoch).display(),
                    p.next_offset
                );
                (epoch, Err(why))
            }
            Ok(Committed::At { epoch, next_offset }) => (epoch, Ok(next_offset)),
            Err(e @ Error::Corrupt { .. }) => {
                let newest = checkpoint::epochs(&group.slot_dir(p.partition))?.last().copied().unwrap_or(0);
                (newest, Err(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        committed.push(position.as_ref().ok().copied());
        lag.push(position.as_ref().ok().map(|&c| p.next_offset.saturating_sub(c)));
        let lease = group.lease(p.partition)?.map_err(|e| e.to_string());
        let holder = match &lease {
            Err(_) => Holder::Nobody,
            Ok(l) if l.is_released() => Holder::Released,
            Ok(l) => Holder::Member(members.iter().find(|m| m.id == l.member).map_or(Liveness::Dead, |m| m.liveness)),
        };
        let skipped = skips.as_ref().map(|e| e[p.partition as usize]).map_err(Clone::clone);
        slots.push(SlotStat { slot: p.partition, epoch, lease, holder, damaged: position.err(), skipped });
    }
    let dead_letters = dead_letters(&group.dead_letter_queue(), locks)?;
    Ok(GroupStat { name: group.name().to_owned(), committed, lag, members, slots, dead_letters })
}

/// Records in a group's dead-letter queue past its replay group's
/// position, or why its dead-letter queue cannot be read.
fn dead_letters(dlq: &DeadLetterQueue, locks: &LockTable) -> Result<std::result::Result<u64, String>> {
    if !dlq.exists() {
        return Ok(Ok(0));
    }
    let count = || -> Result<u64> {
        let (_, partitions) = partitions(dlq.dir(), &meta::read(dlq.dir())?, locks)?;
        let Some(log) = partitions.first() else { return Ok(0) };
        Ok(log.next_offset.saturating_sub(dlq.replayed()?.next_offset_or(log.first_offset)))
    };
    match count() {
        Ok(n) => Ok(Ok(n)),
        Err(e @ (Error::Corrupt { .. } | Error::NotAQueue { .. } | Error::UnsupportedVersion { .. })) => {
            Ok(Err(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

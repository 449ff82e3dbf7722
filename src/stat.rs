//! What a queue holds: offsets, segments, and each group's members, slots,
//! position, lag and dead letters.

use std::path::Path;

use crate::error::Result;
use crate::group::lease::Lease;
use crate::group::member::{self, Liveness, MemberInfo};
use crate::group::{self, GROUPS_DIR, dead_letter, slot};
use crate::options::QueueConfig;
use crate::queue::Queue;
use crate::retention::failures::{self, RetentionFailures};

/// A snapshot of a queue.
#[derive(Debug, Clone)]
pub struct QueueStat {
    /// The queue's options.
    pub config: QueueConfig,
    /// One entry per partition.
    pub partitions: Vec<PartitionStat>,
    /// One entry per consumer group, by name.
    pub groups: Vec<GroupStat>,
    /// Retention passes that failed, and the last one's error (`None`:
    /// none ever did), or why the record of them cannot be read.
    pub retention_failures: std::result::Result<Option<RetentionFailures>, String>,
}

/// A snapshot of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// A snapshot of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStat {
    /// The group's name.
    pub name: String,
    /// Committed offset (next to process) per partition.
    pub committed: Vec<u64>,
    /// Records not yet processed, per partition.
    pub lag: Vec<u64>,
    /// Its members, alive, hung or dead.
    pub members: Vec<MemberInfo>,
    /// One entry per slot (partition).
    pub slots: Vec<SlotStat>,
    /// Records in its dead-letter queue not yet replayed.
    pub dead_letters: u64,
}

/// A snapshot of one slot of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStat {
    /// The slot's partition.
    pub slot: u32,
    /// The epoch of the checkpoint in force (0 if never taken).
    pub epoch: u64,
    /// The lease record, or why it cannot be read.
    pub lease: std::result::Result<Lease, String>,
    /// The holder's state.
    pub holder: Holder,
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

impl Queue {
    /// A snapshot of the queue's partitions and groups.
    pub fn stat(&self) -> Result<QueueStat> {
        let inner = &self.inner;
        let mut partitions = Vec::new();
        for p in &inner.partitions {
            let segments = p.segment_bases()?.len();
            partitions.push(PartitionStat {
                partition: p.id,
                first_offset: p.first_offset(),
                next_offset: p.next_offset(),
                segments,
                bytes: segments as u64 * inner.config.segment_bytes,
            });
        }
        let groups_dir = inner.dir.join(GROUPS_DIR);
        let mut groups = Vec::new();
        for name in group::list(&groups_dir)?.0 {
            groups.push(group_stat(&groups_dir.join(&name), name, &partitions)?);
        }
        let retention_failures = failures::read(&inner.dir).map_err(|e| e.to_string());
        Ok(QueueStat { config: inner.config, partitions, groups, retention_failures })
    }
}

fn group_stat(dir: &Path, name: String, partitions: &[PartitionStat]) -> Result<GroupStat> {
    let members = member::scan(dir, false)?;
    let mut committed = Vec::new();
    let mut slots = Vec::new();
    for p in partitions {
        let slot_dir = slot::dir(dir, p.partition);
        // A slot nobody took yet has processed nothing.
        let (epoch, next) = slot::checkpoint_in_force(&slot_dir, p.partition)?
            .map_or((0, p.first_offset), |(e, st)| (e, st.next_offset));
        committed.push(next);
        let lease = slot::read_lease(&slot_dir, p.partition)?.map_err(|e| e.to_string());
        let holder = match &lease {
            Err(_) => Holder::Nobody,
            Ok(l) if l.is_released() => Holder::Released,
            Ok(l) => Holder::Member(members.iter().find(|m| m.id == l.member).map_or(Liveness::Dead, |m| m.liveness)),
        };
        slots.push(SlotStat { slot: p.partition, epoch, lease, holder });
    }
    let lag = committed.iter().zip(partitions).map(|(&c, p)| p.next_offset.saturating_sub(c)).collect();
    Ok(GroupStat { name, committed, lag, members, slots, dead_letters: dead_letters(dir)? })
}

/// Records in a group's dead-letter queue past its replay group's position.
fn dead_letters(group_dir: &Path) -> Result<u64> {
    let dlq = group_dir.join(dead_letter::DLQ_DIR);
    if !dlq.join(crate::meta::META_FILE).exists() {
        return Ok(0);
    }
    let queue = Queue::open_existing(&dlq)?;
    let (_, next) = queue.offsets(0);
    let replay_slot = slot::dir(&dlq.join(GROUPS_DIR).join(dead_letter::REPLAY_GROUP), 0);
    let replayed = slot::checkpoint_in_force(&replay_slot, 0)?.map_or(0, |(_, st)| st.next_offset);
    Ok(next.saturating_sub(replayed))
}

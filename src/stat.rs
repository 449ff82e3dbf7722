//! What a queue holds: offsets, segments, and each group's position and lag.

use crate::error::{Error, Result};
use crate::group::GROUPS_DIR;
use crate::group::checkpoint::{self, Checkpoint};
use crate::options::QueueConfig;
use crate::queue::Queue;
use crate::storage;

/// A snapshot of a queue.
#[derive(Debug, Clone)]
pub struct QueueStat {
    /// The queue's options.
    pub config: QueueConfig,
    /// One entry per partition.
    pub partitions: Vec<PartitionStat>,
    /// One entry per consumer group, by name.
    pub groups: Vec<GroupStat>,
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
        let names = if groups_dir.exists() { storage::list_dir(&groups_dir)? } else { Vec::new() };
        for name in names {
            let dir = groups_dir.join(&name);
            let mut committed = Vec::new();
            for p in &partitions {
                let path = dir.join(checkpoint::file_name(p.partition));
                let next = match Checkpoint::read(&path, p.partition) {
                    Ok(state) => state.next_offset,
                    // A group whose member has not created this file yet has
                    // processed nothing of the partition.
                    Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => p.first_offset,
                    Err(e) => return Err(e),
                };
                committed.push(next);
            }
            let lag = committed.iter().zip(&partitions).map(|(&c, p)| p.next_offset.saturating_sub(c)).collect();
            groups.push(GroupStat { name, committed, lag });
        }
        Ok(QueueStat { config: inner.config, partitions, groups })
    }
}

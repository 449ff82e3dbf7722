//! Retention: removing segments every consumer group has finished with.
//!
//! A group registers when its first consumer opens (its directory appears
//! under `groups/`) and unregisters with `durq group delete`. A sealed
//! segment is removed only when every registered group's checkpoint in that
//! partition is past all of its records; a group that has never taken the
//! slot keeps everything (it will start at the earliest record). With no
//! group registered, nothing is removed: a durable queue keeps what nobody
//! has read. The check runs after a producer rolled a segment, so it costs
//! nothing on the append path.

use std::path::Path;

use crate::error::Result;
use crate::group::{GROUPS_DIR, slot};
use crate::log::partition::Partition;
use crate::storage;

/// The lowest committed offset over every registered group in partition
/// `p`, or `None` if no group is registered or one has not started there.
pub(crate) fn floor(queue_dir: &Path, p: u32) -> Result<Option<u64>> {
    let groups_dir = queue_dir.join(GROUPS_DIR);
    if !groups_dir.is_dir() {
        return Ok(None);
    }
    let mut floor: Option<u64> = None;
    for group in storage::list_dir(&groups_dir)? {
        match slot::checkpoint_in_force(&slot::dir(&groups_dir.join(group), p), p)? {
            Some((_, state)) => floor = Some(floor.map_or(state.next_offset, |f| f.min(state.next_offset))),
            None => return Ok(None),
        }
    }
    Ok(floor)
}

/// Removes the segments of `partition` that every group has passed.
pub(crate) fn run(queue_dir: &Path, partition: &Partition) -> Result<usize> {
    match floor(queue_dir, partition.id)? {
        Some(floor) => partition.remove_segments_below(floor),
        None => Ok(0),
    }
}

//! Consumer groups: members, slots, leases, checkpoints, dead letters.
//!
//! A group lives in `groups/<name>/` inside the queue directory:
//!
//! ```text
//! groups/<name>/members/<id>.member     one per live member: flock + heartbeat
//! groups/<name>/slot-NNNN/lease          who holds partition NNNN, with which epoch
//! groups/<name>/slot-NNNN/<epoch>.ckpt   the group's position, one file per epoch
//! groups/<name>/dlq/                     the dead-letter queue (a durq queue)
//! ```
//!
//! - [`name`]: what a group may be called.
//! - [`member`]: joining, heartbeats, who is alive.
//! - [`assignment`]: which member should hold which slot.
//! - [`lease`]: the lease record.
//! - [`slot`]: taking, holding and giving back a slot; the fencing protocol.
//! - [`checkpoint`]: per-epoch, two-copy checkpoint files.
//! - [`dead_letter`]: the dead-letter envelope.
//!
//! Anything else in `groups/` (an operator's notes, a `.DS_Store`) is not a
//! group: [`list`] sets it apart, so it stops neither retention nor
//! inspection.

use std::path::Path;

use crate::error::Result;
use crate::storage;

pub mod assignment;
pub mod checkpoint;
pub mod dead_letter;
pub mod lease;
pub mod member;
pub mod name;
pub mod slot;

/// The folder of all groups inside a queue directory.
pub const GROUPS_DIR: &str = "groups";

/// The groups in `groups_dir` and, apart, the entries there that are not
/// groups, both sorted. A group is a directory whose name is a valid group
/// name ([`name::validate`]); a missing `groups_dir` holds no group.
pub fn list(groups_dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    if !groups_dir.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (groups, stray) = storage::list_dir(groups_dir)?
        .into_iter()
        .partition(|entry| name::validate(entry).is_ok() && groups_dir.join(entry).is_dir());
    Ok((groups, stray))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_with_group_names_are_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let groups = tmp.path().join(GROUPS_DIR);
        assert_eq!(list(&groups).unwrap(), (vec![], vec![]), "no groups directory, no group");
        for dir in ["orders", "b.v2", ".hidden", "sp ace"] {
            std::fs::create_dir_all(groups.join(dir)).unwrap();
        }
        for file in ["notes.txt", ".DS_Store"] {
            std::fs::write(groups.join(file), b"x").unwrap();
        }
        let (groups, stray) = list(&groups).unwrap();
        assert_eq!(groups, ["b.v2", "orders"]);
        assert_eq!(stray, [".DS_Store", ".hidden", "notes.txt", "sp ace"]);
    }
}

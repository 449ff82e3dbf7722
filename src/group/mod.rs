//! Consumer groups: their names and their durable read positions.
//!
//! A group lives in `groups/<name>/` inside the queue directory: one
//! checkpoint file per partition, and the lock file its member holds.

pub mod checkpoint;
pub mod name;

/// The folder of all groups inside a queue directory.
pub const GROUPS_DIR: &str = "groups";
/// The lock file held by a group's live member.
pub const MEMBER_LOCK_FILE: &str = "member.lock";

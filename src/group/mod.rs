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
//! - [`evidence`]: what checkpoints and dead letters prove about how far
//!   each partition's log reached (for recovery and verify).

pub mod assignment;
pub mod checkpoint;
pub mod dead_letter;
pub mod evidence;
pub mod lease;
pub mod member;
pub mod name;
pub mod slot;

/// The folder of all groups inside a queue directory.
pub const GROUPS_DIR: &str = "groups";

//! The commit log: partitions of segments of CRC-framed records.
//!
//! - [`record`]: the frame codec.
//! - [`salt`]: the per-segment seed of every frame's checksum.
//! - [`segment`]: one mapped segment file and its header.
//! - [`recovery`]: where a segment's log ends after a crash (a decision table).
//!
//! Private to the crate:
//!
//! - `segment_cache`: which segments stay mapped, so passed ones are unmapped.
//! - `control`: the shared, mapped state of a live queue.
//! - `partition`: one partition, a file per concern: appends, group commit,
//!   rolls and seals, validated reads, retention's removals, recovery I/O.
//! - `reservation`: how much of a segment's disk space is reserved ahead of
//!   the writer.
//! - `prefault`: faulting in segment pages ahead of the writer.
//! - `sealer`: syncing full segments in the background.
//! - `survey`: where a partition's log ends, found read-only, and what the
//!   next open will repair.

pub mod record;
pub mod recovery;
pub mod salt;
pub mod segment;

pub(crate) mod control;
pub(crate) mod partition;
pub(crate) mod prefault;
pub(crate) mod reservation;
pub(crate) mod sealer;
pub(crate) mod segment_cache;
pub(crate) mod survey;

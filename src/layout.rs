//! Every file and folder name of a queue directory, and the functions that
//! build and parse them: the one place that knows what the directory looks
//! like (docs/FORMAT.md, "Files").
//!
//! ```text
//! DIR/durq.meta                                  options, fixed at creation (meta.rs)
//! DIR/durq.meta.tmp.<pid>                        a meta file being written, before its rename
//! DIR/durq.ctl                                   live shared state, rebuilt by the first opener (log/control.rs)
//! DIR/durq.lock                                  serialises opening (and so recovery), and retention against new positions
//! DIR/durq.retention                             failed retention passes (retention/failures.rs)
//! DIR/p0000/<base:020>.seg                       partition 0's segments (log/segment.rs)
//! DIR/groups/<group>/members/<id>.member         one per live member (group/member.rs)
//! DIR/groups/<group>/members/.<id>.joining       a member file before it is named
//! DIR/groups/<group>/slot-0000/lease             who holds partition 0 (group/lease.rs)
//! DIR/groups/<group>/slot-0000/<epoch:020>.ckpt  the group's position, one file per epoch (group/checkpoint.rs)
//! DIR/groups/<group>/skipped                     what retention limits removed unprocessed (retention/skipped.rs)
//! DIR/groups/<group>/dlq/                        the dead-letter queue, a queue of its own
//! DIR/groups/<group>/dlq/groups/replay/          the group whose position marks what was replayed
//! ```
//!
//! Every name is part of the on-disk format: a change here is a change of
//! format, and `tests` below pins their bytes.

use std::path::{Path, PathBuf};

/// The meta file's name inside a queue directory.
pub const META_FILE: &str = "durq.meta";
/// The control file's name inside a queue directory.
pub const CONTROL_FILE: &str = "durq.ctl";
/// The lock file that serialises opening (and so recovery), and retention
/// passes against registrations and resets (`retention::lock_floor`).
pub const OPEN_LOCK_FILE: &str = "durq.lock";
/// The retention failures record's name inside a queue directory.
pub const FAILURES_FILE: &str = "durq.retention";
/// The folder of all groups inside a queue directory.
pub const GROUPS_DIR: &str = "groups";
/// The folder of member files inside a group's directory.
pub const MEMBERS_DIR: &str = "members";
/// The retention skip record's name inside a group's directory.
pub const SKIPPED_FILE: &str = "skipped";
/// The lease file's name inside a slot directory.
pub const LEASE_FILE: &str = "lease";
/// The dead-letter queue's folder inside a group's directory.
pub const DLQ_DIR: &str = "dlq";
/// The group of a dead-letter queue whose position marks what was
/// replayed: dead letters before it are gone from the queue's point of view.
pub const REPLAY_GROUP: &str = "replay";

const META_TMP_PREFIX: &str = "durq.meta.tmp.";
const SEGMENT_SUFFIX: &str = ".seg";
const CHECKPOINT_SUFFIX: &str = ".ckpt";
const MEMBER_SUFFIX: &str = ".member";
const JOINING_SUFFIX: &str = ".joining";
const _: () = assert!(META_TMP_PREFIX.len() == META_FILE.len() + ".tmp.".len());

/// The temporary name process `pid` writes a new meta file under.
pub fn meta_tmp_name(pid: u32) -> String {
    format!("{META_TMP_PREFIX}{pid}")
}

/// True for a meta file's temporary name ([`meta_tmp_name`]).
pub fn is_meta_tmp_name(name: &str) -> bool {
    name.starts_with(META_TMP_PREFIX)
}

/// The directory name of partition `id`.
pub fn partition_dir_name(id: u32) -> String {
    format!("p{id:04}")
}

/// The partition a directory name names, if it is one ([`partition_dir_name`]).
pub fn parse_partition_dir_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('p')?;
    (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The file name of the segment starting at `base_offset`.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{SEGMENT_SUFFIX}")
}

/// The base offset named by a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_20_digits(name.strip_suffix(SEGMENT_SUFFIX)?)
}

/// The directory of group `name` inside the queue directory `queue_dir`.
pub fn group_dir(queue_dir: &Path, name: &str) -> PathBuf {
    queue_dir.join(GROUPS_DIR).join(name)
}

/// The directory of `slot` inside a group's directory.
pub fn slot_dir(group_dir: &Path, slot: u32) -> PathBuf {
    group_dir.join(format!("slot-{slot:04}"))
}

/// The name of the checkpoint file of `epoch`.
pub fn checkpoint_file_name(epoch: u64) -> String {
    format!("{epoch:020}{CHECKPOINT_SUFFIX}")
}

/// The epoch named by a checkpoint file name, if it is one.
pub fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    parse_20_digits(name.strip_suffix(CHECKPOINT_SUFFIX)?)
}

/// The name of the file of member `id`.
pub fn member_file_name(id: &[u8; 16]) -> String {
    format!("{}{MEMBER_SUFFIX}", member_hex(id))
}

/// The member a member file name names, if it is one.
pub fn parse_member_file_name(name: &str) -> Option<[u8; 16]> {
    let hex = name.strip_suffix(MEMBER_SUFFIX)?;
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The name member `id`'s file has while it joins, before its rename to
/// [`member_file_name`]: a dot-name, which no scan takes for a member.
pub fn member_joining_name(id: &[u8; 16]) -> String {
    format!(".{}{JOINING_SUFFIX}", member_hex(id))
}

/// A member id as 32 hex digits.
pub fn member_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly 20 ASCII digits, as a `u64`.
fn parse_20_digits(digits: &str) -> Option<u64> {
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_keeps_its_bytes() {
        assert_eq!(
            [META_FILE, CONTROL_FILE, OPEN_LOCK_FILE, FAILURES_FILE, GROUPS_DIR, MEMBERS_DIR, LEASE_FILE, DLQ_DIR],
            ["durq.meta", "durq.ctl", "durq.lock", "durq.retention", "groups", "members", "lease", "dlq"]
        );
        assert_eq!((REPLAY_GROUP, SKIPPED_FILE), ("replay", "skipped"));
        assert_eq!(meta_tmp_name(42), "durq.meta.tmp.42");
        assert_eq!(partition_dir_name(3), "p0003");
        assert_eq!(segment_file_name(7), "00000000000000000007.seg");
        assert_eq!(checkpoint_file_name(9), "00000000000000000009.ckpt");
        assert_eq!(slot_dir(Path::new("g"), 12), Path::new("g/slot-0012"));
        assert_eq!(group_dir(Path::new("q"), "orders"), Path::new("q/groups/orders"));
        let id = [0xab; 16];
        assert_eq!(member_file_name(&id), format!("{}.member", "ab".repeat(16)));
        assert_eq!(member_joining_name(&id), format!(".{}.joining", "ab".repeat(16)));
    }

    #[test]
    fn names_parse_back_and_strangers_do_not() {
        assert!(is_meta_tmp_name(&meta_tmp_name(1)) && !is_meta_tmp_name(META_FILE));
        assert_eq!(parse_partition_dir_name(&partition_dir_name(17)), Some(17));
        for stranger in ["p12", "p00001", "q0001", "p00a1"] {
            assert_eq!(parse_partition_dir_name(stranger), None, "{stranger}");
        }
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_checkpoint_file_name(&checkpoint_file_name(5)), Some(5));
        for stranger in ["0.seg", "0000000000000000000a.seg", "00000000000000000000.log", "42.ckpt", "lease"] {
            assert_eq!((parse_segment_file_name(stranger), parse_checkpoint_file_name(stranger)), (None, None));
        }
        let id = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(parse_member_file_name(&member_file_name(&id)), Some(id));
        assert_eq!(parse_member_file_name(&member_joining_name(&id)), None);
        assert_eq!(parse_member_file_name("xyz.member"), None);
    }
}

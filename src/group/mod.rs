//! Consumer groups: members, slots, leases, checkpoints, dead letters.
//!
//! A group lives in `groups/<name>/` inside the queue directory:
//!
//! ```text
//! groups/<name>/members/<id>.member     one per live member: flock + heartbeat
//! groups/<name>/slot-NNNN/lease          who holds partition NNNN, with which epoch
//! groups/<name>/slot-NNNN/<epoch>.ckpt   the group's position, one file per epoch
//! groups/<name>/dlq/                     the dead-letter queue (a durq queue)
//! groups/<name>/skipped                  what retention limits removed unprocessed (retention/skipped.rs)
//! ```
//!
//! (`layout.rs` defines every name.) `Group` is the one way into a group's
//! directory and protocol, for its members (the consumer), its operators
//! (reset, delete), retention and inspection alike.
//!
//! - [`name`]: what a group may be called.
//! - [`member`]: joining, heartbeats, who is alive.
//! - [`assignment`]: which member should hold which slot.
//! - [`lease`]: the lease record.
//! - [`slot`]: taking, holding and giving back a slot; the fencing protocol.
//! - `membership`: a member's share of the slots: rebalancing.
//! - [`checkpoint`]: per-epoch, two-copy checkpoint files.
//! - `syncer`: the background sync of `commit(Interval)`.
//! - `exit_watch`: waking a member when another member's process exits.
//! - [`dead_letter`]: the dead-letter envelope.
//! - [`evidence`]: what checkpoints and dead letters prove about how far
//!   each partition's log reached (for recovery and verify).
//!
//! Anything else in `groups/` (a `notes.txt`, a `.DS_Store`) is not a group:
//! `list` sets it apart, and inspection notes it once and ignores it.

pub mod assignment;
pub mod checkpoint;
pub mod dead_letter;
pub mod evidence;
pub(crate) mod exit_watch;
pub mod lease;
pub mod member;
pub(crate) mod membership;
pub mod name;
pub mod slot;
pub(crate) mod syncer;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::group::dead_letter::DeadLetterQueue;
use crate::group::lease::{Lease, LeaseError, MemberId};
use crate::group::member::{Liveness, Member, MemberInfo};
use crate::group::slot::{SlotHold, Taker};
use crate::layout;
use crate::storage;
use crate::storage::lock_table::LockTable;

pub use crate::layout::GROUPS_DIR;

/// One consumer group of a queue: its directory, and every step of its
/// protocol that touches it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    name: String,
    dir: PathBuf,
}

/// A group's committed position in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// No member ever took the slot: the group will start at the earliest
    /// retained record.
    NotStarted,
    /// The checkpoint in force is the file of `epoch`: the group processed
    /// every record below `next_offset`.
    At { epoch: u64, next_offset: u64 },
}

impl Committed {
    /// The next offset the group processes, `first_offset` (the earliest
    /// retained) for a group that has not started.
    pub(crate) fn next_offset_or(self, first_offset: u64) -> u64 {
        match self {
            Committed::NotStarted => first_offset,
            Committed::At { next_offset, .. } => next_offset,
        }
    }
}

impl Group {
    /// Group `name` of the queue at `queue_dir`, whether or not it exists;
    /// `name` must be a group's name.
    pub(crate) fn named(queue_dir: &Path, name: &str) -> Result<Group> {
        name::validate(name)?;
        Ok(Group::listed(queue_dir, name))
    }

    /// Group `name` of the queue at `queue_dir`, which must exist.
    pub(crate) fn existing(queue_dir: &Path, name: &str) -> Result<Group> {
        let group = Group::named(queue_dir, name)?;
        if !group.dir.is_dir() {
            return Err(Error::InvalidOption { option: "group", reason: format!("no group {name:?} in this queue") });
        }
        Ok(group)
    }

    /// Registers the group if it was not (makes its directory, durably):
    /// from now on it holds back retention. The caller holds the floor lock
    /// (`retention::lock_floor`): a pass that looked at the groups before
    /// the directory appeared must have raised the earliest retained offset
    /// before the group reads it to start there.
    pub(crate) fn register(&self) -> Result<()> {
        storage::create_dir_durable(&self.dir)
    }

    /// A group whose name needs no validation: found by [`list`], or one
    /// of durq's own (a dead-letter queue's replay group).
    fn listed(queue_dir: &Path, name: &str) -> Group {
        Group { name: name.to_owned(), dir: layout::group_dir(queue_dir, name) }
    }

    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The group's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the group's slot of partition `p`.
    pub(crate) fn slot_dir(&self, p: u32) -> PathBuf {
        layout::slot_dir(&self.dir, p)
    }

    /// The checkpoint file of `epoch` in the slot of partition `p`.
    pub(crate) fn checkpoint_path(&self, p: u32, epoch: u64) -> PathBuf {
        self.slot_dir(p).join(layout::checkpoint_file_name(epoch))
    }

    /// The lease record of the slot of partition `p`, or why it cannot be
    /// used.
    pub(crate) fn lease(&self, p: u32) -> Result<std::result::Result<Lease, LeaseError>> {
        slot::read_lease(&self.slot_dir(p), p)
    }

    /// The group's committed position in partition `p`: the checkpoint in
    /// force (`Error::Corrupt` if it is damaged, never a silent fall-back).
    pub(crate) fn committed(&self, p: u32) -> Result<Committed> {
        Ok(match slot::checkpoint_in_force(&self.slot_dir(p), p)? {
            Some((epoch, state)) => Committed::At { epoch, next_offset: state.next_offset },
            None => Committed::NotStarted,
        })
    }

    /// The group's position in partition `p` as a power cut now would
    /// leave it: the newest *synced* copy of the checkpoint in force. Under
    /// `commit(Interval)` and `commit(Buffered)` a member's stored position
    /// runs ahead of it; retention goes by this one, so that it never frees
    /// records the group could need again after a power cut.
    pub(crate) fn committed_durably(&self, p: u32) -> Result<Committed> {
        Ok(match slot::synced_checkpoint_in_force(&self.slot_dir(p), p)? {
            Some((epoch, state)) => Committed::At { epoch, next_offset: state.next_offset },
            None => Committed::NotStarted,
        })
    }

    /// Joins the group as a new member that declares itself hung after
    /// `timeout_ms` without a heartbeat.
    pub(crate) fn join(&self, timeout_ms: u64) -> Result<Member> {
        Member::join(&self.dir, timeout_ms)
    }

    /// The group's members, alive, hung or dead; the files of dead ones are
    /// removed.
    pub(crate) fn members(&self) -> Result<Vec<MemberInfo>> {
        member::scan_and_reap(&self.dir)
    }

    /// The group's members as an observer that may only read sees them
    /// (`stat`): liveness from the kernel's lock table, nothing removed.
    pub(crate) fn observe_members(&self, locks: &LockTable) -> Result<Vec<MemberInfo>> {
        member::observe(&self.dir, locks)
    }

    /// `Error::GroupBusy` naming a member file if the group has a member
    /// that is not dead: an operation from outside would fight it.
    pub(crate) fn ensure_no_member(&self) -> Result<()> {
        match self.members()?.iter().find(|m| m.liveness != Liveness::Dead) {
            Some(m) => Err(Error::GroupBusy { group: self.name.clone(), lock: member::path(&self.dir, &m.id) }),
            None => Ok(()),
        }
    }

    /// Takes the slot of partition `p` for `member` if it may (see
    /// `slot.rs`); `alive`: the members alive at the last scan;
    /// `initial_offset`: the earliest retained offset, where a slot without
    /// a checkpoint starts and one with a checkpoint below it resumes;
    /// `end_offset`: the partition's next offset.
    pub(crate) fn take(
        &self,
        p: u32,
        member: &Member,
        alive: &[MemberId],
        initial_offset: u64,
        end_offset: u64,
    ) -> Result<Option<SlotHold>> {
        slot::take(&self.dir, p, Taker::Member { member, alive, initial_offset, end_offset })
    }

    /// Moves the group's position in partition `p` to `target` by taking
    /// the slot at a new epoch, as a member would, and giving it back at
    /// once. The caller holds the floor lock (`retention::lock_floor`) and
    /// read `target` at or past the earliest retained offset under it.
    /// Returns the position written. `Error::GroupBusy` if a member is
    /// taking or holds the slot: the caller found none alive, so one joined
    /// since.
    pub(crate) fn force_epoch(&self, p: u32, target: u64) -> Result<u64> {
        match slot::take(&self.dir, p, Taker::Reset { target })? {
            Some(hold) => Ok(hold.checkpoint.state().next_offset),
            None => Err(Error::GroupBusy { group: self.name.clone(), lock: self.slot_dir(p) }),
        }
    }

    /// Deletes the group (positions, leases, dead letters), durably: it no
    /// longer holds back retention.
    pub(crate) fn delete(self) -> Result<()> {
        storage::remove_tree(&self.dir)?;
        storage::sync_dir(storage::parent_dir(&self.dir))
    }

    /// The group's dead-letter queue.
    pub(crate) fn dead_letter_queue(&self) -> DeadLetterQueue {
        DeadLetterQueue::of(&self.dir)
    }
}

/// The entries of a queue's `groups/` folder.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The consumer groups: directories with a group's name.
    pub(crate) groups: Vec<Group>,
    /// Everything else, by name: not durq's, and ignored.
    pub(crate) strays: Vec<String>,
}

impl Listing {
    /// One note per stray entry of the `groups/` folder of the queue at
    /// `queue_dir`, for inspection to report.
    pub(crate) fn stray_notes(&self, queue_dir: &std::path::Path) -> Vec<String> {
        let dir = queue_dir.join(GROUPS_DIR);
        self.strays.iter().map(|s| format!("{}: not a consumer group; ignored", dir.join(s).display())).collect()
    }
}

/// Lists the groups of the queue at `queue_dir`, apart from the stray
/// entries beside them. No `groups/` folder: no groups. An entry that cannot
/// be examined is an error, never a stray: retention would otherwise free
/// segments a real group still needs.
pub(crate) fn list(queue_dir: &std::path::Path) -> crate::Result<Listing> {
    let dir = queue_dir.join(GROUPS_DIR);
    if !is_dir(&dir)?.unwrap_or(false) {
        return Ok(Listing::default());
    }
    let mut listing = Listing::default();
    for entry in crate::storage::list_dir(&dir)? {
        let is_group = name::validate(&entry).is_ok();
        match is_dir(&dir.join(&entry))? {
            // Deleted since the listing (`durq group delete`): gone.
            None => {}
            Some(true) if is_group => listing.groups.push(Group::listed(queue_dir, &entry)),
            Some(_) => listing.strays.push(entry),
        }
    }
    Ok(listing)
}

/// Whether `path` is a directory (following symbolic links); `None` if
/// there is nothing there.
fn is_dir(path: &std::path::Path) -> crate::Result<Option<bool>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.is_dir())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::io("stat", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_entries_of_the_groups_folder_are_set_apart_from_groups() {
        let dir = tempfile::tempdir().unwrap();
        let listing = list(dir.path()).unwrap();
        assert!(listing.groups.is_empty() && listing.strays.is_empty(), "no groups folder");
        let groups = dir.path().join(GROUPS_DIR);
        for d in ["orders", "b.2", ".hidden", "sp ace"] {
            std::fs::create_dir_all(groups.join(d)).unwrap();
        }
        for f in ["notes.txt", ".DS_Store"] {
            std::fs::write(groups.join(f), b"x").unwrap();
        }
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.groups.iter().map(Group::name).collect::<Vec<_>>(), ["b.2", "orders"]);
        assert_eq!(listing.strays, [".DS_Store", ".hidden", "notes.txt", "sp ace"]);
    }

    #[test]
    fn an_entry_that_cannot_be_examined_is_an_error_not_a_stray() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path().join(GROUPS_DIR);
        std::fs::create_dir_all(groups.join("orders")).unwrap();
        // A symbolic link to itself: stat fails with ELOOP.
        std::os::unix::fs::symlink(groups.join("looping"), groups.join("looping")).unwrap();
        match list(dir.path()) {
            Err(crate::Error::Io { path, .. }) => assert_eq!(path, groups.join("looping")),
            other => panic!("an unexaminable entry must fail the listing: {other:?}"),
        }
    }
}

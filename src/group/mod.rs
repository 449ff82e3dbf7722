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
//!
//! Anything else in `groups/` (a `notes.txt`, a `.DS_Store`) is not a group:
//! `list` sets it apart, and inspection notes it once and ignores it.

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

/// The entries of a queue's `groups/` folder.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The consumer groups: directories with a group's name.
    pub(crate) groups: Vec<String>,
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
            Some(true) if is_group => listing.groups.push(entry),
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
        assert_eq!(list(dir.path()).unwrap(), Listing::default(), "no groups folder");
        let groups = dir.path().join(GROUPS_DIR);
        for d in ["orders", "b.2", ".hidden", "sp ace"] {
            std::fs::create_dir_all(groups.join(d)).unwrap();
        }
        for f in ["notes.txt", ".DS_Store"] {
            std::fs::write(groups.join(f), b"x").unwrap();
        }
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.groups, ["b.2", "orders"]);
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

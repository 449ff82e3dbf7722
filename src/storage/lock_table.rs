//! Who holds a `flock` on a file, read from the kernel's table of locks
//! (`/proc/locks`) instead of by trying to take one.
//!
//! durq's liveness signals are locks: every process with a queue open holds
//! a shared `flock` on its `durq.ctl`, and every group member an exclusive
//! one on its member file. An observer that tried a lock to read such a
//! signal would change it for everybody else while it held the lock: an
//! opener that finds `durq.ctl` locked takes the queue for live and skips
//! recovery, and a dead member's file, locked for a moment by an observer,
//! looks alive to the member about to take over its slots. Reading the
//! table changes nothing, needs no write access to the file, and sees the
//! locks of every process, in any PID namespace.
//!
//! A lock is named in the table by the device and inode of its file, which
//! the observer compares with what `stat` says of the path. Some file
//! systems hide locks from that comparison: a btrfs subvolume, whose files
//! `stat` reports on an anonymous device the table does not use; overlayfs,
//! where the lock is on the upper file system's inode; NFS, where `flock`
//! is emulated by POSIX byte-range locks, which the table need not list as
//! `FLOCK`. There every file looks unlocked: `stat` shows a live queue as
//! not open (its ends surveyed from the segments, its members as dead),
//! and is still read-only: it changes nothing either way.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Where the kernel lists the file locks held on the system.
const LOCK_TABLE: &str = "/proc/locks";

/// The files some process held a `flock` on (shared or exclusive) when the
/// table was read, by `(major, minor, inode)`.
pub(crate) struct LockTable {
    held: HashSet<(u32, u32, u64)>,
}

impl LockTable {
    /// Reads the kernel's table.
    pub(crate) fn read() -> Result<LockTable> {
        let path = Path::new(LOCK_TABLE);
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Ok(LockTable { held: text.lines().filter_map(parse_line).collect() })
    }

    /// Whether some process holds a `flock` on the file at `path`; false
    /// when there is no such file.
    pub(crate) fn held(&self, path: &Path) -> Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(self.held.contains(&(libc::major(m.dev()), libc::minor(m.dev()), m.ino()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }
}

/// The file of a granted `flock` in one line of the table:
///
/// ```text
/// 2: FLOCK  ADVISORY  WRITE 8526 fe:00:10011176 0 EOF
/// 2: -> FLOCK  ADVISORY  WRITE 8530 fe:00:10011176 0 EOF
/// ```
///
/// The second line is a process waiting for that lock: it holds nothing.
/// The device's major and minor numbers are in hex, the inode in decimal.
fn parse_line(line: &str) -> Option<(u32, u32, u64)> {
    let mut fields = line.split_whitespace().skip(1);
    if fields.next()? != "FLOCK" {
        return None;
    }
    // ADVISORY, READ or WRITE, the holder's pid, then the file.
    let mut file = fields.nth(3)?.split(':');
    let major = u32::from_str_radix(file.next()?, 16).ok()?;
    let minor = u32::from_str_radix(file.next()?, 16).ok()?;
    let inode = file.next()?.parse().ok()?;
    Some((major, minor, inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_lines_are_parsed_and_waiters_and_other_locks_ignored() {
        assert_eq!(parse_line("1: FLOCK  ADVISORY  READ 13246 fe:00:10011042 0 EOF"), Some((0xfe, 0, 10_011_042)));
        assert_eq!(parse_line("2: FLOCK  ADVISORY  WRITE 0 103:0a:77 0 EOF"), Some((0x103, 0xa, 77)));
        assert_eq!(parse_line("2: -> FLOCK  ADVISORY  WRITE 8530 fe:00:10011176 0 EOF"), None);
        assert_eq!(parse_line("3: POSIX  ADVISORY  WRITE 700 fe:00:5 0 EOF"), None);
        assert_eq!(parse_line("4: OFDLCK ADVISORY  READ  -1 00:06:9 0 EOF"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn a_flock_shows_in_the_table_while_it_is_held_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let held = |path: &Path| LockTable::read().unwrap().held(path).unwrap();
        assert!(!held(&path));
        file.lock_shared().unwrap();
        assert!(held(&path), "shared");
        file.unlock().unwrap();
        assert!(!held(&path));
        file.lock().unwrap();
        assert!(held(&path), "exclusive");
        drop(file);
        assert!(!held(&path), "released with the file");
        assert!(!held(&dir.path().join("missing")));
    }
}

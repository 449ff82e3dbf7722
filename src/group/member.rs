//! Group members: who is in a group, and who is alive.
//!
//! Each member (one `Consumer`) has a file `members/<id>.member` that it
//! holds an exclusive `flock` on for its whole life and rewrites as its
//! heartbeat (a lease record with slot `MEMBER_SLOT`, see `lease.rs`). The
//! file is locked *before* it gets its name (created under a dot-name, then
//! renamed), so a member file whose lock is free always belongs to a dead
//! process: the kernel releases the locks of a process the moment it dies.
//!
//! - **Alive:** locked, heartbeat younger than `lease_timeout`.
//! - **Hung:** locked, heartbeat older (stopped, or stuck in a closure).
//! - **Dead:** lock free. Whoever sees it removes the file.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::group::lease::{self, Lease, MemberId, NOBODY};
use crate::layout;
use crate::storage::lock_table::LockTable;
use crate::storage::{self, Locked};

pub use crate::layout::MEMBERS_DIR;
/// The slot number in a member file's lease record.
pub const MEMBER_SLOT: u32 = u32::MAX;

/// Whether a member is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process lives and its heartbeat is fresh.
    Alive,
    /// Its process lives but its heartbeat is older than the lease timeout.
    Hung,
    /// Its process is gone.
    Dead,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Hung => "hung",
            Liveness::Dead => "dead",
        })
    }
}

/// What one member file says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The member's id.
    pub id: MemberId,
    /// Its process id (0 if its file is unreadable).
    pub pid: u32,
    /// Its last heartbeat, ms since the Unix epoch (0 if unreadable).
    pub heartbeat_ms: u64,
    /// Whether it is alive.
    pub liveness: Liveness,
}

/// Who this process is, as a lease record names it: read once, since the
/// boot id and host name come from files.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pid: u32,
    boot_id: [u8; 16],
    host: String,
}

impl Process {
    pub(crate) fn this() -> Process {
        Process { pid: std::process::id(), boot_id: storage::boot_id(), host: storage::host_name() }
    }

    /// A lease record written by this process for `slot` and `epoch`, held
    /// by `member` ([`NOBODY`]: released), with a heartbeat of now.
    pub(crate) fn lease(&self, slot: u32, epoch: u64, member: MemberId, timeout_ms: u64) -> Lease {
        Lease {
            slot,
            epoch,
            member,
            pid: self.pid,
            boot_id: self.boot_id,
            heartbeat_ms: storage::now_ms(),
            host: self.host.clone(),
            timeout_ms,
        }
    }
}

/// This process's membership in a group; leaves the group on drop.
pub(crate) struct Member {
    pub(crate) id: MemberId,
    path: PathBuf,
    file: File,
    process: Process,
    timeout_ms: u64,
}

impl Member {
    /// Joins the group at `group_dir` under a fresh random id, declaring
    /// itself hung if it ever goes `timeout_ms` without a heartbeat.
    pub(crate) fn join(group_dir: &Path, timeout_ms: u64) -> Result<Member> {
        let dir = group_dir.join(MEMBERS_DIR);
        storage::create_dir_durable(&dir)?;
        let id = storage::random_id(&dir)?;
        let joining = dir.join(layout::member_joining_name(&id));
        let (file, locked) = storage::try_lock_exclusive(&joining)?;
        if matches!(locked, Locked::HeldElsewhere) {
            // 128 random bits do not collide: someone else made this file.
            let held = std::io::Error::from_raw_os_error(libc::EWOULDBLOCK);
            return Err(Error::io("lock a new member file", joining, held));
        }
        let member = Member { id, path: path(group_dir, &id), file, process: Process::this(), timeout_ms };
        member.heartbeat()?;
        storage::rename(&joining, &member.path)?;
        Ok(member)
    }

    /// A lease record for `slot` and `epoch` held by this member, with a
    /// heartbeat of now.
    pub(crate) fn lease(&self, slot: u32, epoch: u64) -> Lease {
        self.process.lease(slot, epoch, self.id, self.timeout_ms)
    }

    /// The record of this member giving `slot` back at `epoch`.
    pub(crate) fn released_lease(&self, slot: u32, epoch: u64) -> Lease {
        self.process.lease(slot, epoch, NOBODY, self.timeout_ms)
    }

    /// Rewrites this member's file with a fresh heartbeat.
    pub(crate) fn heartbeat(&self) -> Result<()> {
        storage::write_at(&self.file, &self.path, 0, &lease::encode(&self.lease(MEMBER_SLOT, 0)))
    }
}

/// A member's heartbeat that another thread can run while the member's
/// owner is busy (the async API keeps an awaited batch's leases fresh this
/// way): its own handle on the member file.
#[cfg(feature = "tokio")]
pub(crate) struct MemberPulse {
    lease: Lease,
    path: PathBuf,
    file: File,
}

#[cfg(feature = "tokio")]
impl Member {
    /// This member's heartbeat, for another thread.
    pub(crate) fn pulse(&self) -> Result<MemberPulse> {
        let file = storage::open_rw(&self.path)?;
        Ok(MemberPulse { lease: self.lease(MEMBER_SLOT, 0), path: self.path.clone(), file })
    }
}

#[cfg(feature = "tokio")]
impl MemberPulse {
    /// Rewrites the member file with a fresh heartbeat, as
    /// [`Member::heartbeat`] does.
    pub(crate) fn beat(&self) -> Result<()> {
        let lease = Lease { heartbeat_ms: storage::now_ms(), ..self.lease.clone() };
        storage::write_at(&self.file, &self.path, 0, &lease::encode(&lease))
    }

    /// A lease record for `slot` and `epoch` held by this member, with a
    /// heartbeat of now.
    pub(crate) fn lease(&self, slot: u32, epoch: u64) -> Lease {
        Lease { slot, epoch, heartbeat_ms: storage::now_ms(), ..self.lease.clone() }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Leaving: others see the member gone at their next scan. If the
        // removal fails, the file's lock is released with `self.file` anyway,
        // and the next scan removes it.
        let _ = storage::remove_file(&self.path);
    }
}

/// Whether member `id` of the group at `group_dir` is alive right now (its
/// member file exists, is locked, and its heartbeat is fresh), hung (locked,
/// its heartbeat stale) or dead (no file, or no lock on it). Checked
/// directly when a scan is older than the question (a member may have
/// joined since).
pub(crate) fn liveness(group_dir: &Path, id: &MemberId) -> Result<Liveness> {
    let path = path(group_dir, id);
    let Some((file, Locked::HeldElsewhere)) = storage::try_lock_existing(&path)? else { return Ok(Liveness::Dead) };
    let mut bytes = [0u8; lease::LEASE_BYTES];
    let n = storage::read_at(&file, &path, 0, &mut bytes)?;
    // A locked file not yet readable belongs to a member still joining.
    Ok(match lease::decode(&bytes[..n], MEMBER_SLOT) {
        Ok(r) if r.is_stale(storage::now_ms()) => Liveness::Hung,
        _ => Liveness::Alive,
    })
}

/// The file of member `id` of the group at `group_dir`.
pub(crate) fn path(group_dir: &Path, id: &MemberId) -> PathBuf {
    group_dir.join(MEMBERS_DIR).join(layout::member_file_name(id))
}

/// Reads every member file of the group at `group_dir`, removing those of
/// dead members. Each member is judged hung by its own declared timeout.
pub(crate) fn scan_and_reap(group_dir: &Path) -> Result<Vec<MemberInfo>> {
    let now = storage::now_ms();
    let mut members = Vec::new();
    for (id, path) in member_files(group_dir)? {
        // Never create it: a member that left between the listing and now
        // is simply gone.
        let Some((file, locked)) = storage::try_lock_existing(&path)? else { continue };
        let mut bytes = [0u8; lease::LEASE_BYTES];
        let n = storage::read_at(&file, &path, 0, &mut bytes)?;
        let member = judge(id, matches!(locked, Locked::HeldElsewhere), &bytes[..n], now);
        if member.liveness == Liveness::Dead {
            let _ = storage::remove_file(&path);
        }
        members.push(member);
    }
    Ok(members)
}

/// [`scan_and_reap`] for an observer that may only read (`stat`): whether a member's
/// file is locked comes from the kernel's lock table (`locks`), so nothing
/// is locked, written or removed, and a dead member's file stays for the
/// group's next scan to remove.
pub(crate) fn observe(group_dir: &Path, locks: &LockTable) -> Result<Vec<MemberInfo>> {
    let now = storage::now_ms();
    let mut members = Vec::new();
    for (id, path) in member_files(group_dir)? {
        let bytes = match storage::read_small(&path, lease::LEASE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(crate::Error::io("read", &path, e)),
        };
        members.push(judge(id, locks.held(&path)?, &bytes, now));
    }
    Ok(members)
}

/// The id and path of every member file of the group at `group_dir`.
fn member_files(group_dir: &Path) -> Result<Vec<(MemberId, PathBuf)>> {
    let dir = group_dir.join(MEMBERS_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let names = storage::list_dir(&dir)?;
    Ok(names.iter().filter_map(|name| Some((layout::parse_member_file_name(name)?, dir.join(name)))).collect())
}

/// What a member file's `bytes` say, given whether another process holds
/// its lock.
fn judge(id: MemberId, locked_elsewhere: bool, bytes: &[u8], now_ms: u64) -> MemberInfo {
    let record = lease::decode(bytes, MEMBER_SLOT).ok();
    let liveness = match &record {
        _ if !locked_elsewhere => Liveness::Dead,
        Some(r) if r.is_stale(now_ms) => Liveness::Hung,
        // A live process whose file cannot be read yet (it is being
        // written) counts as alive: its lock says so.
        _ => Liveness::Alive,
    };
    MemberInfo {
        id,
        pid: record.as_ref().map_or(0, |r| r.pid),
        heartbeat_ms: record.as_ref().map_or(0, |r| r.heartbeat_ms),
        liveness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_alive_while_joined_and_gone_after_leaving() {
        let dir = tempfile::tempdir().unwrap();
        let a = Member::join(dir.path(), 10_000).unwrap();
        let b = Member::join(dir.path(), 10_000).unwrap();
        let seen = scan_and_reap(dir.path()).unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|m| m.liveness == Liveness::Alive && m.pid == std::process::id()));
        drop(b);
        let seen = scan_and_reap(dir.path()).unwrap();
        assert_eq!(seen.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a.id]);
    }

    #[test]
    fn a_locked_member_whose_heartbeat_is_stale_is_hung_not_dead() {
        // A takeover names what its predecessor was: a member whose process
        // still holds its file's lock is hung however old its heartbeat
        // (the event once said "dead" when the member file went stale
        // before the slot's lease did).
        let dir = tempfile::tempdir().unwrap();
        let fresh = Member::join(dir.path(), 60_000).unwrap();
        let stale = Member::join(dir.path(), 1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(liveness(dir.path(), &fresh.id).unwrap(), Liveness::Alive);
        assert_eq!(liveness(dir.path(), &stale.id).unwrap(), Liveness::Hung);
        let id = stale.id;
        drop(stale);
        assert_eq!(liveness(dir.path(), &id).unwrap(), Liveness::Dead, "gone");
    }

    #[test]
    fn a_member_file_whose_lock_is_free_is_dead_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let a = Member::join(dir.path(), 10_000).unwrap();
        // Simulate a dead process: the file stays, its lock goes.
        let kept = dir.path().join("kept");
        std::fs::copy(&a.path, &kept).unwrap();
        let path = a.path.clone();
        drop(a);
        std::fs::rename(&kept, &path).unwrap();
        let seen = scan_and_reap(dir.path()).unwrap();
        assert_eq!(seen.iter().map(|m| m.liveness).collect::<Vec<_>>(), vec![Liveness::Dead]);
        assert!(!path.exists(), "the dead member's file was removed");
    }

    #[test]
    fn an_observer_tells_alive_from_dead_by_the_lock_table_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = Member::join(dir.path(), 10_000).unwrap();
        let seen = observe(dir.path(), &LockTable::read().unwrap()).unwrap();
        assert_eq!(seen.iter().map(|m| (m.id, m.liveness)).collect::<Vec<_>>(), vec![(a.id, Liveness::Alive)]);
        // A dead process's file: the lock gone, the file left behind.
        let kept = dir.path().join("kept");
        std::fs::copy(&a.path, &kept).unwrap();
        let path = a.path.clone();
        drop(a);
        std::fs::rename(&kept, &path).unwrap();
        let seen = observe(dir.path(), &LockTable::read().unwrap()).unwrap();
        assert_eq!(seen.iter().map(|m| m.liveness).collect::<Vec<_>>(), vec![Liveness::Dead]);
        assert!(path.exists(), "an observer removes nothing");
    }

    #[test]
    fn a_member_with_an_old_heartbeat_is_hung() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Member::join(dir.path(), 10).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let seen = scan_and_reap(dir.path()).unwrap();
        assert_eq!(seen[0].liveness, Liveness::Hung);
    }
}

//! Slots: taking, holding and giving back one partition of a group.
//!
//! A slot's directory `slot-NNNN/` holds its lease file and its checkpoint
//! files (one per epoch, see `checkpoint.rs`).
//!
//! **Taking a slot**, in this order; each step is safe if the taker dies
//! right after it:
//! 1. Open the lease and try its `flock`. The slot may be taken if the lease
//!    is released, never written, or names a member that is not alive (its
//!    member file is unlocked: dead) or whose heartbeat is older than the
//!    lease timeout (hung). A lease that cannot be read may be taken only if
//!    its lock is free. *Dies here:* nothing changed.
//! 2. Claim epoch `E + 1`, where `E` is the highest epoch in the lease or in
//!    the checkpoint file names, by creating `E+1.ckpt` exclusively. Another
//!    taker that lost the race stops. *Dies here:* an empty claim remains;
//!    readers skip it, the next taker claims `E + 2`.
//! 3. Read the newest valid checkpoint (older epoch) and write its position
//!    into the claimed file, both copies, fdatasync, directory fsync. Reading
//!    *after* claiming is what makes fencing airtight: the old holder's
//!    commit either landed before this read (and is carried over) or checks
//!    for `E+1.ckpt` after writing, finds it, and reports `Fenced`.
//!    *Dies here:* the claimed file is the checkpoint in force, at the same
//!    position as before.
//! 4. Write the lease (member, epoch, pid, boot id, host, heartbeat); a
//!    member's without a sync, a reset's with an fdatasync. *Dies here:*
//!    the member file's lock frees at once; the next taker claims `E + 2`.
//! 5. Remove checkpoint files of older epochs (a fenced zombie still writing
//!    to one writes into an unlinked file).
//!
//! So a member's take syncs twice (step 3), both before it reads a record:
//! its checkpoint is durable, under a durable name, before anything it
//! processes can be committed. Its lease needs no sync. It says who holds
//! the slot, which a power cut ends anyway; a lease that a power cut takes
//! back to an older epoch, or leaves unreadable, only makes the next taker
//! claim one epoch further; and it is written after step 3's syncs, so it
//! never names an epoch whose file a power cut could leave empty. Its epoch
//! also tells a later damaged newest file from an unfilled claim
//! ([`checkpoint::latest`]): until writeback stores it, such a file is
//! skipped instead of reported, and the position in force falls back to an
//! older epoch's, which a member's take never passes (it carries the
//! position over, or moves it forwards to the first retained record): a
//! redelivery. A reset may move the position backwards, so falling back
//! past it could skip records: a reset's lease is synced.
//!
//! A member whose position in force lies below the partition's earliest
//! retained offset (a retention limit removed records the group had not
//! processed, and recorded the skip first) writes that offset instead in
//! step 3: the group resumes at the first kept record, never at 0.
//!
//! A reset (`Queue::reset_group`) takes a slot by these same steps, for no
//! member: it writes the position it was given instead of the one in force,
//! and a released lease, so the next member takes the slot at once.
//!
//! **Holding:** heartbeats rewrite the lease (no sync: liveness only) after
//! checking for fencing. **Giving back** (rebalance, close) happens only at
//! a batch boundary, after the batch was committed and its position synced
//! (under `commit(Interval)` and `commit(Buffered)` a commit is only
//! stored until then): the lease is rewritten
//! as released and its lock dropped, so the next holder starts exactly where
//! this one stopped and a graceful rebalance redelivers nothing.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::group::checkpoint::{self, Checkpoint, CheckpointState};
use crate::group::lease::{self, Lease, LeaseError, MemberId, NOBODY};
#[cfg(feature = "tokio")]
use crate::group::member::MemberPulse;
use crate::group::member::{self, Liveness, Member, Process};
use crate::observe;
use crate::storage::{self, Locked};

pub use crate::layout::{LEASE_FILE, slot_dir as dir};

/// Reads a slot's lease record.
pub fn read_lease(slot_dir: &Path, slot: u32) -> Result<Result<Lease, LeaseError>> {
    let path = slot_dir.join(LEASE_FILE);
    match storage::read_small(&path, lease::LEASE_BYTES) {
        Ok(bytes) => Ok(lease::decode(&bytes, slot)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Err(LeaseError::Missing)),
        Err(e) => Err(crate::Error::io("read", &path, e)),
    }
}

/// The checkpoint in force in a slot (see [`checkpoint::latest`]), judged
/// against the slot's lease; `None` if the slot was never taken.
pub fn checkpoint_in_force(slot_dir: &Path, slot: u32) -> Result<Option<(u64, CheckpointState)>> {
    if !slot_dir.is_dir() {
        return Ok(None);
    }
    let leased_epoch = read_lease(slot_dir, slot)?.map_or(0, |l| l.epoch);
    checkpoint::latest(slot_dir, slot, leased_epoch)
}

/// As [`checkpoint_in_force`], but its newest synced state
/// ([`checkpoint::latest_synced`]).
pub fn synced_checkpoint_in_force(slot_dir: &Path, slot: u32) -> Result<Option<(u64, CheckpointState)>> {
    if !slot_dir.is_dir() {
        return Ok(None);
    }
    let leased_epoch = read_lease(slot_dir, slot)?.map_or(0, |l| l.epoch);
    checkpoint::latest_synced(slot_dir, slot, leased_epoch)
}

/// Who takes a slot, and what it writes there.
pub(crate) enum Taker<'a> {
    /// A member, to consume: it carries the position in force over.
    Member {
        member: &'a Member,
        /// The members alive at the last scan.
        alive: &'a [MemberId],
        /// The partition's earliest retained offset: where a slot without
        /// any checkpoint starts, and where one whose checkpoint lies below
        /// it (retention limits removed records the group had not
        /// processed) resumes.
        initial_offset: u64,
        /// The partition's next offset, past which no checkpoint may point.
        end_offset: u64,
    },
    /// A reset, by a process that found no live member: it moves the
    /// position to `target` (at or past the earliest retained offset, read
    /// under the floor lock the caller holds) and leaves the slot released.
    Reset { target: u64 },
}

/// A slot this member holds.
pub(crate) struct SlotHold {
    pub(crate) slot: u32,
    pub(crate) epoch: u64,
    lease_path: PathBuf,
    lease_file: File,
    lease_locked: bool,
    pub(crate) checkpoint: Checkpoint,
    /// Whom it was taken from (reported by `observe::slot_taken`).
    pub(crate) predecessor: Predecessor,
}

/// Who held a slot before it was taken.
#[derive(Debug, Clone)]
pub(crate) enum Predecessor {
    /// Nobody: never taken, released, or a lease nobody holds the lock of.
    Nobody,
    /// The taker itself (its lease survived, e.g. a retake after an error).
    Itself,
    /// A member whose heartbeat (its slot's lease, or its member file) is
    /// older than its lease timeout: hung, or dead and not yet seen so.
    Stale(Lease),
    /// A member that is not alive (its member file is unlocked).
    Dead(Lease),
}

impl Predecessor {
    /// The member the slot was taken over from, as the takeover event
    /// names it; `None` when nobody else held it.
    pub(crate) fn taken_over(&self) -> Option<observe::OldHolder<'_>> {
        let (was, lease) = match self {
            Predecessor::Dead(lease) => ("dead", lease),
            Predecessor::Stale(lease) => ("hung", lease),
            Predecessor::Nobody | Predecessor::Itself => return None,
        };
        Some(observe::OldHolder {
            was,
            member: &lease.member,
            pid: lease.pid,
            host: &lease.host,
            epoch: lease.epoch,
            heartbeat_ms: lease.heartbeat_ms,
        })
    }
}

/// Takes `slot` of the group at `group_dir` for `taker` if it may be taken
/// (see the module docs); `None` if not, now. A damaged or impossible
/// checkpoint is an error for a member, found before anything is changed; a
/// reset replaces it.
pub(crate) fn take(group_dir: &Path, slot: u32, taker: Taker<'_>) -> Result<Option<SlotHold>> {
    let slot_dir = dir(group_dir, slot);
    storage::create_dir_durable(&slot_dir)?;
    // Opened (created if missing) before the claim, so that the claimed
    // file's directory fsync makes the lease's name durable too.
    let lease_path = slot_dir.join(LEASE_FILE);
    let (lease_file, locked) = storage::try_lock_exclusive(&lease_path)?;
    let lease_locked = matches!(locked, Locked::Yes);
    let lease = read_lease(&slot_dir, slot)?;
    let predecessor = match &lease {
        Ok(l) if l.is_released() => Some(Predecessor::Nobody),
        Ok(l) if matches!(taker, Taker::Member { member, .. } if l.member == member.id) => Some(Predecessor::Itself),
        Ok(l) if l.is_stale(storage::now_ms()) => Some(Predecessor::Stale(l.clone())),
        // `alive` is a snapshot: a member that joined after it holds its
        // slots as rightfully as the others. Ask its member file.
        Ok(l) => {
            // Its member file may be stale before the slot's lease is (the
            // two are written at different times): that holder is hung, not
            // dead, and the takeover event must say so.
            let seen_alive = matches!(taker, Taker::Member { alive, .. } if alive.contains(&l.member));
            match if seen_alive { Liveness::Alive } else { member::liveness(group_dir, &l.member)? } {
                Liveness::Alive => None,
                Liveness::Hung => Some(Predecessor::Stale(l.clone())),
                Liveness::Dead => Some(Predecessor::Dead(l.clone())),
            }
        }
        Err(_) => lease_locked.then_some(Predecessor::Nobody),
    };
    let Some(predecessor) = predecessor else { return Ok(None) };
    let leased_epoch = lease.as_ref().map_or(0, |l| l.epoch);
    if let Taker::Member { end_offset, .. } = taker
        && let Some((epoch, state)) = checkpoint::latest(&slot_dir, slot, leased_epoch)?
        && state.next_offset > end_offset
    {
        return Err(crate::Error::corrupt(
            slot_dir.join(checkpoint::file_name(epoch)),
            0,
            Some(state.next_offset),
            format!("checkpoint is past the end of partition {slot} (next offset {end_offset})"),
        ));
    }
    let newest_claim = checkpoint::epochs(&slot_dir)?.last().copied().unwrap_or(0);
    if newest_claim > leased_epoch && !lease_locked && claim_is_fresh(&slot_dir, newest_claim, &lease) {
        // Another member claimed past the lease and holds the lease's lock:
        // it is between steps 2 and 4 of its take. Let it finish.
        return Ok(None);
    }
    // Exactly one past what we saw: if anyone claims in between, our claim
    // fails (instead of fencing them).
    let epoch = newest_claim.max(leased_epoch) + 1;
    if !checkpoint::claim(&slot_dir, epoch)? {
        return Ok(None);
    }
    // A reset may move the position back, behind older epochs' files that
    // a power cut could bring back: its lease, which tells a later damaged
    // newest file from an unfilled claim, is synced (see the module docs).
    let lease_durable = matches!(taker, Taker::Reset { .. });
    let (checkpoint, lease) = match taker {
        Taker::Member { member, initial_offset, .. } => {
            let state = match checkpoint::latest(&slot_dir, slot, leased_epoch)? {
                // Retention limits removed records the group had not
                // processed (recorded in its skip record before they
                // went): it resumes at the first kept record.
                Some((_, state)) if state.next_offset < initial_offset => {
                    CheckpointState::at(slot, epoch, initial_offset)
                }
                Some((_, state)) => state,
                None => CheckpointState::at(slot, epoch, initial_offset),
            };
            (Checkpoint::write_claimed(&slot_dir, epoch, state)?, member.lease(slot, epoch))
        }
        Taker::Reset { target } => {
            let checkpoint = Checkpoint::write_claimed(&slot_dir, epoch, CheckpointState::at(slot, epoch, target))?;
            // Released at the new epoch: the next member takes the slot at
            // once, and claims past this epoch.
            (checkpoint, Process::this().lease(slot, epoch, NOBODY, 0))
        }
    };
    if lease_durable {
        storage::write_durable_at(&lease_file, &lease_path, 0, &lease::encode(&lease))?;
    } else {
        storage::write_at(&lease_file, &lease_path, 0, &lease::encode(&lease))?;
    }
    for old in checkpoint::epochs(&slot_dir)?.into_iter().filter(|&e| e < epoch) {
        let _ = storage::remove_file(&slot_dir.join(checkpoint::file_name(old)));
    }
    Ok(Some(SlotHold { slot, epoch, lease_path, lease_file, lease_locked, checkpoint, predecessor }))
}

/// Whether the claim of `epoch`, past the slot's `lease`, is younger than a
/// lease timeout: its taker may still be at work. An older one was left by
/// a taker that died half way.
fn claim_is_fresh(slot_dir: &Path, epoch: u64, lease: &Result<Lease, LeaseError>) -> bool {
    let timeout_ms = lease.as_ref().map_or(crate::options::LEASE_TIMEOUT_DEFAULT.as_millis() as u64, |l| l.timeout_ms);
    let claim = slot_dir.join(checkpoint::file_name(epoch));
    let age_ms = std::fs::metadata(&claim)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(u64::MAX, |d| d.as_millis() as u64);
    age_ms <= timeout_ms
}

impl SlotHold {
    /// Refreshes the lease's heartbeat, after checking this member was not
    /// fenced; retakes the lease's lock if a fenced predecessor let it go.
    pub(crate) fn heartbeat(&mut self, member: &Member) -> Result<()> {
        self.checkpoint.check_not_fenced()?;
        storage::write_at(&self.lease_file, &self.lease_path, 0, &lease::encode(&member.lease(self.slot, self.epoch)))?;
        if !self.lease_locked {
            // Still held elsewhere, or refused: the next heartbeat tries
            // again. The lock only speeds up a takeover after our death.
            self.lease_locked = matches!(storage::try_lock(&self.lease_file, &self.lease_path), Ok(Locked::Yes));
        }
        Ok(())
    }

    /// This slot's heartbeat, for another thread: see [`SlotPulse`].
    #[cfg(feature = "tokio")]
    pub(crate) fn pulse(&self) -> Result<SlotPulse> {
        let slot_dir = storage::parent_dir(&self.lease_path);
        Ok(SlotPulse {
            slot: self.slot,
            epoch: self.epoch,
            lease_file: storage::open_rw(&self.lease_path)?,
            lease_path: self.lease_path.clone(),
            claimed_path: slot_dir.join(checkpoint::file_name(self.epoch)),
            next_claim_path: slot_dir.join(checkpoint::file_name(self.epoch + 1)),
        })
    }

    /// Gives the slot back at a batch boundary: makes a stored position
    /// durable first (`commit(Interval)`, `commit(Buffered)`), then marks
    /// the lease released so the next holder need not wait, then drops the
    /// lock. A slot whose position could not be synced is not released:
    /// its lease still names this member, and it is taken over (from the
    /// position in the page cache, which the taker syncs) once the member
    /// is gone or hung.
    pub(crate) fn release(self, member: &Member) -> Result<()> {
        match self.checkpoint.sync() {
            Ok(()) => {}
            // Not ours any more: nothing to give back.
            Err(crate::Error::Fenced { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        if self.checkpoint.check_not_fenced().is_ok() {
            let released = member.released_lease(self.slot, self.epoch);
            storage::write_at(&self.lease_file, &self.lease_path, 0, &lease::encode(&released))?;
        }
        Ok(())
    }
}

/// A held slot's heartbeat that another thread can run while the holder is
/// busy (the async API keeps an awaited batch's slots this way): its own
/// handle on the lease file, and the checkpoint file names that tell a
/// fenced holder.
#[cfg(feature = "tokio")]
pub(crate) struct SlotPulse {
    slot: u32,
    epoch: u64,
    lease_path: PathBuf,
    lease_file: File,
    claimed_path: PathBuf,
    next_claim_path: PathBuf,
}

#[cfg(feature = "tokio")]
impl SlotPulse {
    /// The slot and the epoch it is held at.
    pub(crate) fn held(&self) -> (u32, u64) {
        (self.slot, self.epoch)
    }

    /// Rewrites the lease with a fresh heartbeat, as [`SlotHold::heartbeat`]
    /// does, unless the holder was fenced (a newer epoch is claimed, or this
    /// one's file is gone): the new holder's lease is left alone, and the
    /// holder's commit reports the fencing.
    pub(crate) fn beat(&self, member: &MemberPulse) -> Result<()> {
        if storage::exists(&self.next_claim_path) || !storage::exists(&self.claimed_path) {
            return Ok(());
        }
        storage::write_at(&self.lease_file, &self.lease_path, 0, &lease::encode(&member.lease(self.slot, self.epoch)))
    }
}

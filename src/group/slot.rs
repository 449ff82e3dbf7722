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
//! 4. Write the lease (member, epoch, pid, boot id, host, heartbeat),
//!    fdatasync. *Dies here:* the member file's lock frees at once; the next
//!    taker claims `E + 2`.
//! 5. Remove checkpoint files of older epochs (a fenced zombie still writing
//!    to one writes into an unlinked file).
//!
//! **Holding:** heartbeats rewrite the lease (no sync: liveness only) after
//! checking for fencing. **Giving back** (rebalance, close) happens only at
//! a batch boundary, after the batch was committed: the lease is rewritten
//! as released and its lock dropped, so the next holder starts exactly where
//! this one stopped and a graceful rebalance redelivers nothing.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::group::checkpoint::{self, Checkpoint, CheckpointState};
use crate::group::lease::{self, Lease, LeaseError, MemberId};
use crate::group::member::{self, Member};
use crate::storage::{self, Locked};

/// The lease file's name inside a slot directory.
pub const LEASE_FILE: &str = "lease";

/// The directory of `slot` inside a group's directory.
pub fn dir(group_dir: &Path, slot: u32) -> PathBuf {
    group_dir.join(format!("slot-{slot:04}"))
}

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

/// A slot this member holds.
pub(crate) struct SlotHold {
    pub(crate) slot: u32,
    pub(crate) epoch: u64,
    lease_path: PathBuf,
    lease_file: File,
    lease_locked: bool,
    pub(crate) checkpoint: Checkpoint,
}

/// Takes `slot` for `member` if it may be taken (see the module docs).
/// `alive` lists the members currently alive; `initial_offset` is where a
/// slot without any checkpoint starts; `end_offset` is the partition's next
/// offset, past which no checkpoint may point. A damaged or impossible
/// checkpoint is an error, found before anything is changed.
pub(crate) fn try_take(
    group_dir: &Path,
    slot: u32,
    member: &Member,
    alive: &[MemberId],
    initial_offset: u64,
    end_offset: u64,
) -> Result<Option<SlotHold>> {
    let slot_dir = dir(group_dir, slot);
    storage::create_dir_durable(&slot_dir)?;
    let lease_path = slot_dir.join(LEASE_FILE);
    let (lease_file, locked) = storage::try_lock_exclusive(&lease_path)?;
    let lease_locked = matches!(locked, Locked::Yes);
    let lease = read_lease(&slot_dir, slot)?;
    let takeable = match &lease {
        Ok(l) if l.is_released() || l.member == member.id => true,
        Ok(l) if l.is_stale(storage::now_ms()) => true,
        // `alive` is a snapshot: a member that joined after it holds its
        // slots as rightfully as the others. Ask its member file.
        Ok(l) => !alive.contains(&l.member) && !member::is_alive(group_dir, &l.member)?,
        Err(_) => lease_locked,
    };
    if !takeable {
        return Ok(None);
    }
    let leased_epoch = lease.as_ref().map_or(0, |l| l.epoch);
    if let Some((epoch, state)) = checkpoint::latest(&slot_dir, slot, leased_epoch)?
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
    if newest_claim > leased_epoch && !lease_locked {
        // Another member claimed past the lease and holds the lease's lock:
        // it is between steps 2 and 4 of its take. Let it finish, unless its
        // claim is older than a lease timeout (it died half way).
        let timeout_ms =
            lease.as_ref().map_or(crate::options::LEASE_TIMEOUT_DEFAULT.as_millis() as u64, |l| l.timeout_ms);
        let claim = slot_dir.join(checkpoint::file_name(newest_claim));
        let age_ms = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(u64::MAX, |d| d.as_millis() as u64);
        if age_ms <= timeout_ms {
            return Ok(None);
        }
    }
    // Exactly one past what we saw: if anyone claims in between, our claim
    // fails (instead of fencing them).
    let epoch = newest_claim.max(leased_epoch) + 1;
    if !checkpoint::claim(&slot_dir, epoch)? {
        return Ok(None);
    }
    let state = match checkpoint::latest(&slot_dir, slot, leased_epoch)? {
        Some((_, state)) => state,
        None => CheckpointState {
            partition: slot,
            generation: 0,
            epoch,
            next_offset: initial_offset,
            delivered_end: initial_offset,
            attempts: 0,
            range_attempts: 0,
        },
    };
    let checkpoint = Checkpoint::write_claimed(&slot_dir, epoch, state)?;
    storage::write_durable_at(&lease_file, &lease_path, 0, &lease::encode(&member.lease(slot, epoch)))?;
    for old in checkpoint::epochs(&slot_dir)?.into_iter().filter(|&e| e < epoch) {
        let _ = storage::remove_file(&slot_dir.join(checkpoint::file_name(old)));
    }
    Ok(Some(SlotHold { slot, epoch, lease_path, lease_file, lease_locked, checkpoint }))
}

impl SlotHold {
    /// Refreshes the lease's heartbeat, after checking this member was not
    /// fenced; retakes the lease's lock if a fenced predecessor let it go.
    pub(crate) fn heartbeat(&mut self, member: &Member) -> Result<()> {
        self.checkpoint.check_not_fenced()?;
        storage::write_at(&self.lease_file, &self.lease_path, 0, &lease::encode(&member.lease(self.slot, self.epoch)))?;
        if !self.lease_locked {
            self.lease_locked = self.lease_file.try_lock().is_ok();
        }
        Ok(())
    }

    /// Gives the slot back at a batch boundary: marks the lease released so
    /// the next holder need not wait, then drops the lock.
    pub(crate) fn release(self, member: &Member) -> Result<()> {
        if self.checkpoint.check_not_fenced().is_ok() {
            let released = Lease { member: [0; 16], ..member.lease(self.slot, self.epoch) };
            storage::write_at(&self.lease_file, &self.lease_path, 0, &lease::encode(&released))?;
        }
        Ok(())
    }
}

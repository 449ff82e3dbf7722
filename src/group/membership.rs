//! A member's share of its group's slots, kept fair as members come and go
//! (rebalancing).
//!
//! Between batches and while it waits, a member scans the member files
//! (locked and fresh: alive; locked and stale: hung; unlocked: dead, and
//! removed), reads who holds each slot, and computes the fair, sticky
//! assignment (`assignment.rs`). It gives back the slots that are no longer
//! its own (only between batches, after committing: a graceful rebalance
//! redelivers nothing), heartbeats the ones it keeps, forgets those it was
//! fenced from, and takes the ones that are its own now.
//!
//! Each held slot carries the caller's state for it (`R`: the consumer's
//! read cursor and retry schedule), made when the slot is taken and
//! dropped with it, so the two can never disagree about which slots are
//! held.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::group::checkpoint::CheckpointState;
use crate::group::lease::MemberId;
#[cfg(feature = "tokio")]
use crate::group::member::MemberPulse;
use crate::group::member::{Liveness, Member};
use crate::group::slot::SlotHold;
#[cfg(feature = "tokio")]
use crate::group::slot::SlotPulse;
use crate::group::{Group, assignment};
use crate::observe::{self, Counters, FencedAt};

/// A slot this member holds, and the caller's state for it.
pub(crate) struct Held<R> {
    pub(crate) hold: SlotHold,
    pub(crate) state: R,
}

/// This process's member of a group and the slots it holds; gives them
/// back and leaves the group on drop.
pub(crate) struct Membership<R> {
    group: Group,
    member: Member,
    partitions: u32,
    held: BTreeMap<u32, Held<R>>,
    /// The queue's counters, for takeovers and fencing.
    counters: Arc<Counters>,
    /// The processes of the other members not found dead at the last scan
    /// (this process left out): those whose exit could free slots.
    others: BTreeSet<u32>,
}

impl<R> Membership<R> {
    /// Joins `group`, of a queue of `partitions` partitions, holding no
    /// slot yet; see [`Member::join`] for `timeout_ms`. Slots taken, given
    /// back and fenced are reported to `counters` (`observe`).
    pub(crate) fn join(
        group: Group,
        partitions: u32,
        timeout_ms: u64,
        counters: Arc<Counters>,
    ) -> Result<Membership<R>> {
        let member = group.join(timeout_ms)?;
        Ok(Membership { group, member, partitions, held: BTreeMap::new(), counters, others: BTreeSet::new() })
    }

    /// The group.
    pub(crate) fn group(&self) -> &Group {
        &self.group
    }

    /// The slots held, by partition.
    pub(crate) fn held(&self) -> &BTreeMap<u32, Held<R>> {
        &self.held
    }

    /// The processes of the other members alive or hung at the last scan,
    /// this one's left out.
    pub(crate) fn other_processes(&self) -> &BTreeSet<u32> {
        &self.others
    }

    /// The slot of partition `p`, if held.
    pub(crate) fn get_mut(&mut self, p: u32) -> Option<&mut Held<R>> {
        self.held.get_mut(&p)
    }

    /// As [`Membership::get_mut`], with the group beside it: what reports
    /// the slot's events by the group's name.
    pub(crate) fn get_mut_in_group(&mut self, p: u32) -> Option<(&Group, &mut Held<R>)> {
        self.held.get_mut(&p).map(|h| (&self.group, h))
    }

    /// Lets go of the slot of partition `p` without touching its files:
    /// another member took it over (this one was fenced).
    pub(crate) fn forget(&mut self, p: u32) {
        self.held.remove(&p);
    }

    /// Heartbeats, and makes the slots held match this member's fair share:
    /// gives back those that are no longer its own, forgets those it was
    /// fenced from, and takes its own. `bounds(p)`: partition `p`'s first
    /// retained and next offsets, for a take; `start(p, checkpoint)`: the
    /// caller's state for a slot just taken at `checkpoint`. If `start`
    /// fails, the slot is dropped (its lease still names this member, which
    /// takes it again at the next rebalance) and the error returned.
    pub(crate) fn rebalance(
        &mut self,
        bounds: impl Fn(u32) -> (u64, u64),
        mut start: impl FnMut(u32, &CheckpointState) -> Result<R>,
    ) -> Result<()> {
        self.member.heartbeat()?;
        let members = self.group.members()?;
        let this_process = std::process::id();
        self.others = members
            .iter()
            .filter(|m| m.liveness != Liveness::Dead && m.id != self.member.id && m.pid != 0 && m.pid != this_process)
            .map(|m| m.pid)
            .collect();
        let mut alive: Vec<MemberId> = members.iter().filter(|m| m.liveness == Liveness::Alive).map(|m| m.id).collect();
        if !alive.contains(&self.member.id) {
            // We are running this very code: whatever our file said, we live.
            alive.push(self.member.id);
        }
        let holders = self.holders(&alive)?;
        let mine: Vec<u32> = assignment::assign(&alive, &holders)
            .iter()
            .enumerate()
            .filter(|(_, owner)| owner.as_ref() == Some(&self.member.id))
            .map(|(s, _)| s as u32)
            .collect();
        let given_back: Vec<u32> = self.held.keys().copied().filter(|s| !mine.contains(s)).collect();
        for s in given_back {
            if let Some(held) = self.held.remove(&s) {
                let epoch = held.hold.epoch;
                held.hold.release(&self.member)?;
                observe::slot_released(self.group.name(), s, epoch);
            }
        }
        let mut fenced = Vec::new();
        for (&s, held) in &mut self.held {
            match held.hold.heartbeat(&self.member) {
                Ok(()) => {}
                Err(Error::Fenced { .. }) => fenced.push(s),
                Err(e) => return Err(e),
            }
        }
        for s in fenced {
            if let Some(held) = self.held.remove(&s) {
                observe::fenced(&self.counters, self.group.name(), s, held.hold.epoch, FencedAt::Heartbeat);
            }
        }
        for s in mine {
            if self.held.contains_key(&s) {
                continue;
            }
            let (first_offset, next_offset) = bounds(s);
            let started = Instant::now();
            // A new group starts at the earliest retained record: a durable
            // queue's consumer must see what was sent before it first ran.
            let Some(hold) = self.group.take(s, &self.member, &alive, first_offset, next_offset)? else { continue };
            observe::slot_taken(
                &self.counters,
                self.group.name(),
                s,
                hold.epoch,
                hold.predecessor.taken_over(),
                started.elapsed(),
            );
            let state = start(s, &hold.checkpoint.state())?;
            self.held.insert(s, Held { hold, state });
        }
        Ok(())
    }

    /// The heartbeat of this member and of every slot it holds, for a
    /// thread that keeps them fresh while the owner awaits a batch. Reuses
    /// `previous` (and its open files) if it is for the slots held now.
    #[cfg(feature = "tokio")]
    pub(crate) fn pulse(&self, previous: Option<Pulse>) -> Result<Pulse> {
        let held = || self.held.values().map(|h| (h.hold.slot, h.hold.epoch));
        if let Some(previous) = previous
            && previous.slots.iter().map(SlotPulse::held).eq(held())
        {
            return Ok(previous);
        }
        let member = self.member.pulse()?;
        let slots = self.held.values().map(|h| h.hold.pulse()).collect::<Result<_>>()?;
        Ok(Pulse { member, slots })
    }

    /// Who holds each slot now, as far as assignment is concerned: this
    /// member for the slots it holds, otherwise the live member its lease
    /// names.
    fn holders(&self, alive: &[MemberId]) -> Result<Vec<Option<MemberId>>> {
        (0..self.partitions)
            .map(|s| {
                if self.held.contains_key(&s) {
                    return Ok(Some(self.member.id));
                }
                let lease = self.group.lease(s)?;
                Ok(lease.ok().map(|l| l.member).filter(|m| *m != self.member.id && alive.contains(m)))
            })
            .collect()
    }
}

/// A member's and its slots' heartbeats, made by [`Membership::pulse`].
#[cfg(feature = "tokio")]
pub(crate) struct Pulse {
    member: MemberPulse,
    slots: Vec<SlotPulse>,
}

#[cfg(feature = "tokio")]
impl Pulse {
    /// One heartbeat of the member and of each slot.
    pub(crate) fn beat(&self) -> Result<()> {
        self.member.beat()?;
        self.slots.iter().try_for_each(|s| s.beat(&self.member))
    }
}

impl<R> Drop for Membership<R> {
    fn drop(&mut self) {
        // Leave gracefully: give every slot back so the others need not wait
        // for a timeout. Errors do not matter here: our locks go with us.
        for (s, held) in std::mem::take(&mut self.held) {
            let epoch = held.hold.epoch;
            if held.hold.release(&self.member).is_ok() {
                observe::slot_released(self.group.name(), s, epoch);
            }
        }
    }
}

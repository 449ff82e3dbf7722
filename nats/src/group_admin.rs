//! Administering a group as library calls (what `durq group` and `durq dlq`
//! need): reset, delete, list groups, list and replay dead letters.
//!
//! **Idle means no key changes.** A reset or a delete needs a group with no
//! live member. On NATS nothing is locked by a live process, so a group is
//! idle when its member keys and held slots stop changing: if any exists,
//! the call watches their revisions for the longest lease timeout the
//! members wrote (their member keys carry it), and a change is
//! [`durq::Error::GroupBusy`]. Keys of members found dead are removed. A
//! group whose members all left cleanly (their keys deleted, slots released)
//! is idle at once. The writes that follow are compare-and-sets on the
//! revisions watched, so a member that joins meanwhile makes the call fail
//! busy rather than be overwritten.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::kv;
use durq::{DeadLetter, ResetTo};
use futures_util::StreamExt;

use crate::dead_letter;
use crate::error::Error;
use crate::group_names::{MEMBER_KEY_PREFIX, group_bucket, group_of_stream, slot_key};
use crate::reader::Cursor;
use crate::record;
use crate::shared::Shared;
use crate::slot::{SlotState, Slots};

/// The lease assumed for a slot whose holder left no member key: durq's
/// default lease timeout.
const UNKNOWN_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Margin over the longest lease before a group counts as idle, for the
/// members' heartbeat scheduling.
const IDLE_MARGIN: Duration = Duration::from_millis(100);

impl crate::Queue {
    /// Moves group `group` to `to` in every partition ([`ResetTo::Offset`]
    /// clamped to what the stream holds). The group must exist and have no
    /// live member (see the module's documentation: this may wait one lease
    /// timeout for the keys of members that died). Returns the new position
    /// per partition.
    ///
    /// # Errors
    /// [`durq::Error::InvalidOption`] for a group that does not exist;
    /// [`durq::Error::GroupBusy`] while a member is alive;
    /// [`durq::Error::Engine`].
    pub fn reset_group(&self, group: &str, to: ResetTo) -> durq::Result<Vec<u64>> {
        let shared = self.shared();
        shared.block_on(async {
            let slots = existing(&shared, group).await?;
            let states = ensure_idle(&shared, &slots, group).await?;
            let mut positions = Vec::with_capacity(states.len());
            for (p, state) in states.iter().enumerate() {
                let target = target(&shared, p as u32, to).await?;
                let key = slot_key(p as u32);
                match slots.reset(&key, state.as_ref(), target).await {
                    Ok(()) => positions.push(target),
                    Err(Error::SlotChanged { .. }) => return Err(busy(&shared, group, &slots, &key)),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(positions)
        })
    }

    /// Deletes group `group`: its positions, its member keys and its dead
    /// letters. It must have no live member.
    ///
    /// # Errors
    /// As [`crate::Queue::reset_group`].
    pub fn delete_group(&self, group: &str) -> durq::Result<()> {
        let shared = self.shared();
        shared.block_on(async {
            let slots = existing(&shared, group).await?;
            ensure_idle(&shared, &slots, group).await?;
            dead_letter::delete(&shared, group).await?;
            // The slots' bucket last: while it exists the group does, and a
            // delete cut short can be asked again.
            for bucket in [slots.marks_bucket(), slots.bucket()] {
                shared
                    .client
                    .jetstream()
                    .delete_key_value(bucket)
                    .await
                    .map_err(|e| Error::engine(format!("delete bucket {bucket}"), e))?;
            }
            Ok(())
        })
    }

    /// The names of this queue's groups.
    ///
    /// # Errors
    /// [`durq::Error::Engine`] if the streams cannot be listed.
    pub fn groups(&self) -> durq::Result<Vec<String>> {
        let shared = self.shared();
        shared.block_on(async {
            let mut names = shared.client.jetstream().stream_names();
            let mut groups = Vec::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(|e| Error::engine("list streams", e))?;
                groups.extend(group_of_stream(&shared.url.name, &name).map(str::to_owned));
            }
            groups.sort();
            Ok(groups)
        })
    }

    /// The dead letters of `group` not yet replayed, oldest first, up to
    /// `max`.
    ///
    /// # Errors
    /// [`durq::Error::Engine`] if the dead-letter stream cannot be read or
    /// holds a message durq did not write.
    pub fn dead_letters(&self, group: &str, max: usize) -> durq::Result<Vec<DeadLetter>> {
        group_bucket(self.name(), group)?;
        let shared = self.shared();
        shared.block_on(dead_letter::list(&shared, group, max))
    }

    /// Sends every dead letter of `group` back into this queue (with its
    /// original key), and removes each from the dead-letter stream only after
    /// its re-send was acknowledged. Returns how many were replayed.
    ///
    /// # Errors
    /// As [`crate::Queue::dead_letters`], and the producer's.
    pub fn replay_dead_letters(&self, group: &str) -> durq::Result<u64> {
        group_bucket(self.name(), group)?;
        dead_letter::replay(&self.shared(), &self.producer(), group)
    }
}

/// The slots of an existing group.
async fn existing(shared: &Shared, group: &str) -> durq::Result<Slots> {
    let bucket = group_bucket(&shared.url.name, group)?;
    if shared.client.jetstream().get_key_value(&bucket).await.is_err() {
        return Err(durq::Error::InvalidOption {
            option: "group",
            reason: format!("no group {group:?} in queue {}", shared.url),
        });
    }
    Ok(Slots::open(&shared.client, &bucket, usize::from(shared.meta.replicas)).await?)
}

/// Waits until no key of a member changes for the longest lease (if any
/// member key or held slot exists), removes the dead members' keys, and
/// returns every slot's state as last read.
async fn ensure_idle(shared: &Shared, slots: &Slots, group: &str) -> durq::Result<Vec<Option<SlotState>>> {
    let first = look(shared, slots).await?;
    if first.members.is_empty() && first.states.iter().all(|s| s.as_ref().is_none_or(|s| s.holder().is_none())) {
        return Ok(first.states);
    }
    let longest = first.members.iter().map(|(_, _, lease)| *lease).max().unwrap_or(UNKNOWN_LEASE_TIMEOUT);
    tokio::time::sleep(longest + IDLE_MARGIN).await;
    let second = look(shared, slots).await?;
    for (key, revision, _) in &second.members {
        if first.members.iter().all(|(k, r, _)| k != key || r != revision) {
            return Err(busy(shared, group, slots, key));
        }
    }
    for (p, (before, after)) in first.states.iter().zip(&second.states).enumerate() {
        if before.as_ref().map(SlotState::revision) != after.as_ref().map(SlotState::revision) {
            return Err(busy(shared, group, slots, &slot_key(p as u32)));
        }
    }
    for (key, revision, _) in &second.members {
        // Dead: its key is removed, unless it just changed (then the slots'
        // compare-and-sets that follow find the member).
        let _ = slots.store().delete_expect_revision(key, Some(*revision)).await;
    }
    Ok(second.states)
}

/// A group's keys at one moment.
struct Look {
    /// Member keys: key, revision, the member's lease timeout.
    members: Vec<(String, u64, Duration)>,
    /// Every slot's state (`None`: never written).
    states: Vec<Option<SlotState>>,
}

async fn look(shared: &Shared, slots: &Slots) -> durq::Result<Look> {
    let store = slots.store();
    let mut keys = store.keys().await.map_err(|e| Error::engine(format!("list keys of {}", slots.bucket()), e))?;
    let mut members = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| Error::engine(format!("list keys of {}", slots.bucket()), e))?;
        if !key.starts_with(MEMBER_KEY_PREFIX) {
            continue;
        }
        let entry = store.entry(&key).await.map_err(|e| Error::engine(format!("read {}/{key}", slots.bucket()), e))?;
        if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
            let lease = entry
                .value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(UNKNOWN_LEASE_TIMEOUT, |b| Duration::from_millis(u64::from_le_bytes(b)));
            members.push((key, entry.revision, lease));
        }
    }
    let mut states = Vec::with_capacity(shared.meta.partitions as usize);
    for p in 0..shared.meta.partitions {
        states.push(slots.read(&slot_key(p)).await?);
    }
    Ok(Look { members, states })
}

fn busy(shared: &Shared, group: &str, slots: &Slots, key: &str) -> durq::Error {
    durq::Error::GroupBusy {
        group: group.to_owned(),
        lock: PathBuf::from(format!("{}: {}/{key}", shared.url, slots.bucket())),
    }
}

/// The offset `to` means in partition `partition` now.
async fn target(shared: &Shared, partition: u32, to: ResetTo) -> durq::Result<u64> {
    let name = record::stream_name(&shared.url.name, partition);
    let mut stream = shared
        .client
        .jetstream()
        .get_stream(&name)
        .await
        .map_err(|e| Error::engine(format!("look up stream {name}"), e))?;
    let state = stream.info().await.map_err(|e| Error::engine(format!("read the state of {name}"), e))?.state.clone();
    // Offsets: the first stored record's, and the next to be written.
    let next = state.last_sequence;
    let first = state.first_sequence.saturating_sub(1).min(next);
    Ok(match to {
        ResetTo::Earliest => first,
        ResetTo::Latest => next,
        ResetTo::Offset(offset) => offset.clamp(first, next),
        ResetTo::Time(time) => {
            let last_before = match stream.get_raw_message(state.last_sequence.max(1)).await {
                Ok(last) => {
                    let last_ms = last.time.unix_timestamp_nanos() / 1_000_000;
                    let asked_ms = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i128);
                    last_ms < asked_ms
                }
                Err(_) => true,
            };
            if last_before {
                next
            } else {
                // A record at or after the time exists: the cursor's first.
                let mut cursor = Cursor::open(&shared.client, &shared.url.name, partition, to).await?;
                cursor.wait().await?;
                cursor.take_ready(1).await?.first().map_or(next, |r| r.position.offset)
            }
        }
    })
}

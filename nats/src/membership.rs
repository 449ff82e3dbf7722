//! A consumer group's members on NATS: who is in the group, who holds which
//! slot, and who is alive, as one member sees it.
//!
//! A group is one key-value bucket (named in `group_names.rs`): a key per
//! slot (`slot.rs`) and a key per member, whose value is the member's lease timeout (u64 LE milliseconds).
//!
//! **Liveness without clocks compared.** No kernel lock is freed when a
//! remote member dies, so dead and hung look the same: a member is alive
//! while its keys keep changing. A member rewrites its member key and every
//! slot it holds every `lease_timeout / 3` ([`Membership::heartbeat`]); the
//! others watch the whole bucket (one watch, pushed by the server) and note,
//! on their *own* monotonic clock, when each key last changed. A key
//! unchanged for its member's lease timeout (the one that member announced
//! in its member key, so members with different leases judge each other
//! by the promise each made) belongs to a member presumed dead: its member
//! no longer counts in the assignment, and its slots may be taken over (by
//! compare-and-set, so a member that was only slow is fenced). No two
//! hosts' clocks are ever compared. A key first seen counts as changed
//! then, so a member that just started waits a full lease before it
//! presumes anybody dead.
//!
//! **A batch out too long stops the heartbeats** of the slots: a closure
//! that runs past `lease_timeout` loses its slots, as on the local queue,
//! where the lease timeout must exceed the longest batch. A stopped process
//! (SIGSTOP, a VM pause) stops heartbeating with it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use durq::internals::group::lease::MemberId;
use futures_util::StreamExt;

use crate::error::Error;
use crate::group_names::{MEMBER_KEY_PREFIX, member_key, slot_key};
use crate::member_stat::lease_of;
use crate::slot::{Lease, Progress, SlotState, Slots};

/// Pause before watching the bucket again after the watch ended (a server
/// restart, a lost connection).
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// What one member of a group shares with its background task.
pub(crate) struct Membership {
    pub(crate) slots: Slots,
    pub(crate) member: MemberId,
    /// The member's id as slots name it (hex of `member`).
    pub(crate) holder: String,
    pub(crate) lease_timeout: Duration,
    view: Mutex<View>,
    /// The slots this member holds. A tokio mutex: a write to a slot is held
    /// across the request, so a heartbeat and a commit never race.
    pub(crate) leases: tokio::sync::Mutex<BTreeMap<u32, Lease>>,
    /// Since when a batch is out with the caller, if one is.
    batch_out_since: Mutex<Option<Instant>>,
    /// Slots a heartbeat found taken over: (partition, epoch held).
    fenced: Mutex<Vec<(u32, u64)>>,
}

/// The bucket as this member last saw it.
#[derive(Default)]
struct View {
    keys: HashMap<String, Seen>,
}

/// One key as seen: its latest revision and value, and when (on this
/// member's clock) the revision last changed.
struct Seen {
    revision: u64,
    value: Bytes,
    changed_at: Instant,
    /// The key was deleted or purged.
    removed: bool,
}

/// A slot as the assignment needs it.
pub(crate) struct SlotView {
    /// The state read, or `None` if never written.
    pub(crate) state: Option<SlotState>,
    /// Its holder, if it has one that changed the slot within the lease.
    pub(crate) live_holder: Option<MemberId>,
    /// Whether a take may be tried: the slot is free, never written, or its
    /// holder stopped heartbeating.
    pub(crate) takeable: bool,
}

impl Membership {
    /// Joins: writes this member's key and starts the watch and the
    /// heartbeats on the current runtime. Returns once the watch has seen
    /// this member's own key, so the view holds everything written before.
    ///
    /// The member key is written first, and waits while the bucket does not
    /// take writes yet (another member may have created it a moment ago,
    /// [`Slots::while_not_writable`]): the watch, and every slot write after
    /// it, then go to a bucket whose stream has a leader.
    pub(crate) async fn join(
        slots: Slots,
        nuid: &str,
        lease_timeout: Duration,
    ) -> Result<(Arc<Membership>, tokio::task::JoinHandle<()>), Error> {
        let member = member_id(nuid);
        let holder = hex(&member);
        let membership = Arc::new(Membership {
            slots,
            member,
            holder,
            lease_timeout,
            view: Mutex::new(View::default()),
            leases: tokio::sync::Mutex::new(BTreeMap::new()),
            batch_out_since: Mutex::new(None),
            fenced: Mutex::new(Vec::new()),
        });
        let key = member_key(&membership.holder);
        let first_write = || membership.slots.store().put(&key, membership.member_value());
        membership.slots.while_not_writable(&format!("write member key {key}"), first_write).await?;
        let mut watch = membership.watch().await?;
        while !membership.view().keys.contains_key(&key) {
            match watch.next().await {
                Some(Ok(entry)) => membership.observe(entry),
                Some(Err(e)) => return Err(Error::engine(format!("watch bucket {}", membership.bucket()), e)),
                None => return Err(Error::engine(format!("watch bucket {}", membership.bucket()), "the watch ended")),
            }
        }
        let background = tokio::spawn(membership.clone().run(watch));
        Ok((membership, background))
    }

    pub(crate) fn bucket(&self) -> &str {
        self.slots.bucket()
    }

    /// The live members (this one always among them), and each slot of
    /// `partitions` as seen.
    pub(crate) fn snapshot(&self, partitions: u32) -> Result<(Vec<MemberId>, Vec<SlotView>), Error> {
        let view = self.view();
        // A member's keys are judged by the lease it announced; a member
        // whose key is gone or unreadable, by this member's own.
        let lease_of_holder = |holder: &str| {
            let key = member_key(holder);
            view.keys
                .get(&key)
                .filter(|seen| !seen.removed)
                .and_then(|seen| lease_of(self.bucket(), &key, seen.revision, &seen.value).ok())
                .unwrap_or(self.lease_timeout)
        };
        let fresh = |seen: &Seen, holder: &str| seen.changed_at.elapsed() < lease_of_holder(holder);
        let mut live = vec![self.member];
        for (key, seen) in &view.keys {
            if let Some(holder) = key.strip_prefix(MEMBER_KEY_PREFIX)
                && let Some(id) = parse_hex(holder)
                && !seen.removed
                && fresh(seen, holder)
            {
                live.push(id);
            }
        }
        let mut slots = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let key = slot_key(p);
            let Some(seen) = view.keys.get(&key) else {
                slots.push(SlotView { state: None, live_holder: None, takeable: true });
                continue;
            };
            if seen.removed {
                return Err(Error::CorruptSlot {
                    bucket: self.bucket().to_owned(),
                    slot: key,
                    revision: seen.revision,
                    position: 0,
                    reason: "the key was removed: its checkpoint is lost".to_owned(),
                });
            }
            let state = self.slots.state_of(&key, seen.revision, &seen.value)?;
            let fresh = state.holder().is_some_and(|h| fresh(seen, h));
            let holder = state.holder().map(|h| parse_hex(h).unwrap_or(durq::internals::group::lease::NOBODY));
            let live_holder = holder.filter(|_| fresh);
            let takeable = holder.is_none() || !fresh;
            slots.push(SlotView { state: Some(state), live_holder, takeable });
        }
        Ok((live, slots))
    }

    /// Notes that a batch is out with the caller (`true`) or came back.
    pub(crate) fn batch_out(&self, out: bool) {
        *self.batch_out_since.lock().unwrap_or_else(PoisonError::into_inner) = out.then(Instant::now);
    }

    /// The slots a heartbeat found taken over since the last call.
    pub(crate) fn take_fenced(&self) -> Vec<(u32, u64)> {
        std::mem::take(&mut *self.fenced.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Leaves the group: gives every held slot back and removes the member
    /// key, so the others take over at once rather than after a lease.
    /// `unmarked`: per slot, the progress to give back instead of the
    /// held one, where a batch was marked but never handed over.
    pub(crate) async fn leave(&self, unmarked: BTreeMap<u32, Progress>) {
        let leases = std::mem::take(&mut *self.leases.lock().await);
        for (partition, mut lease) in leases {
            if let Some(&before) = unmarked.get(&partition) {
                lease.unmark(before);
            }
            // A fenced or failed release leaves the slot to a takeover.
            let _ = self.slots.release(lease).await;
        }
        let _ = self.slots.store().delete(member_key(&self.holder)).await;
    }

    /// The background task: applies the watch's entries to the view, and
    /// heartbeats every `lease_timeout / 3`.
    async fn run(self: Arc<Self>, mut watch: kv::Watch) {
        let mut tick = tokio::time::interval(self.lease_timeout / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => self.observe(entry),
                    // The watch broke: watch again (its history brings the
                    // view up to date).
                    _ => {
                        tokio::time::sleep(REWATCH_PAUSE).await;
                        if let Ok(again) = self.watch().await {
                            watch = again;
                        }
                    }
                },
                _ = tick.tick() => self.heartbeat().await,
            }
        }
    }

    /// Rewrites the member key, and every held slot unless a batch has been
    /// out longer than the lease. A slot found taken over is dropped and
    /// reported to the consumer. Other failures wait for the next tick.
    async fn heartbeat(&self) {
        let _ = self.put_member_key().await;
        let stalled = self
            .batch_out_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() >= self.lease_timeout);
        if stalled {
            return;
        }
        let mut leases = self.leases.lock().await;
        let mut lost = Vec::new();
        for (&partition, lease) in leases.iter_mut() {
            let progress = lease.progress();
            if let Err(Error::Fenced { epoch, .. }) = self.slots.advance(lease, progress).await {
                lost.push((partition, epoch));
            }
        }
        for (partition, _) in &lost {
            leases.remove(partition);
        }
        self.fenced.lock().unwrap_or_else(PoisonError::into_inner).extend(lost);
    }

    async fn put_member_key(&self) -> Result<(), Error> {
        let key = member_key(&self.holder);
        self.slots
            .store()
            .put(&key, self.member_value())
            .await
            .map_err(|e| Error::engine(format!("write member key {}/{key}", self.bucket()), e))?;
        Ok(())
    }

    /// The member key's value: this member's lease timeout.
    fn member_value(&self) -> Bytes {
        Bytes::copy_from_slice(&(self.lease_timeout.as_millis() as u64).to_le_bytes())
    }

    async fn watch(&self) -> Result<kv::Watch, Error> {
        self.slots
            .store()
            .watch_with_history(">")
            .await
            .map_err(|e| Error::engine(format!("watch bucket {}", self.bucket()), e))
    }

    fn observe(&self, entry: kv::Entry) {
        let mut view = self.view();
        let removed = matches!(entry.operation, Operation::Delete | Operation::Purge);
        if removed && entry.key.starts_with(MEMBER_KEY_PREFIX) {
            // A member that left.
            view.keys.remove(&entry.key);
            return;
        }
        match view.keys.get_mut(&entry.key) {
            Some(seen) if seen.revision >= entry.revision => {}
            Some(seen) => {
                *seen = Seen { revision: entry.revision, value: entry.value, changed_at: Instant::now(), removed };
            }
            None => {
                let seen = Seen { revision: entry.revision, value: entry.value, changed_at: Instant::now(), removed };
                view.keys.insert(entry.key, seen);
            }
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A member id from a NUID (unique among the server's clients): two
/// independent 64-bit hashes of it.
fn member_id(nuid: &str) -> MemberId {
    let mut id = [0u8; 16];
    for (i, half) in id.chunks_mut(8).enumerate() {
        let mut hasher = DefaultHasher::new();
        (i, nuid).hash(&mut hasher);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    id
}

fn hex(id: &MemberId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<MemberId> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_round_trip_as_hex_and_differ_by_nuid() {
        let a = member_id("NUIDAAAAAAAAAAAAAAAAA1");
        let b = member_id("NUIDAAAAAAAAAAAAAAAAA2");
        assert_ne!(a, b);
        assert_eq!(parse_hex(&hex(&a)), Some(a));
        assert_eq!(parse_hex("zz"), None);
    }
}

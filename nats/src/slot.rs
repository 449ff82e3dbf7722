//! Slots: a consumer group's exclusive, fenced hold on each of its
//! partitions, kept in a JetStream key-value bucket (one key per slot) and
//! written only by compare-and-set on the key's revision.
//!
//! This is the fencing protocol of the local queue (`src/group/slot.rs`),
//! with the server's compare-and-set in place of the exclusive file
//! creation:
//!
//! 1. **Read** the slot ([`Slots::read`]): its revision, holder and
//!    checkpoint. Reads go to the stream's leader, not a replica, so they
//!    are not older than the last acknowledged write (a stale read would only
//!    make the next step fail, never let a wrong write through).
//! 2. **Take** it ([`Slots::take`]): write "held by me, same checkpoint"
//!    expecting the revision read. One taker wins; every other one gets
//!    [`Error::SlotChanged`]. The revision of the winning write is the
//!    holding's **epoch**, and the checkpoint carried over is the last one
//!    committed, since nothing was written between the read and the take.
//! 3. **Commit** ([`Slots::commit`]): write the new checkpoint expecting the
//!    revision of the holder's own last write. A holder that was taken over
//!    (a zombie: paused, partitioned, presumed dead) finds a newer revision
//!    by someone else and gets [`Error::Fenced`]; its checkpoint is never
//!    stored.
//!
//! **Invariant:** a slot's stored checkpoint never decreases. A take copies
//! it unchanged; a commit refuses to go below the holder's own (and the
//! holder's own is the stored one, or the holder is fenced).
//!
//! **Deliveries.** Beside the checkpoint a slot keeps how far records were
//! handed out uncommitted and how often the record at the checkpoint was
//! delivered ([`Progress`]), so that the member that takes the slot over
//! counts them. A take and a release carry both over unchanged.
//!
//! **Marks in memory, beside the slots.** The mark of a batch handed to
//! a member that was idle ([`Slots::send_mark`]) does not go to the slot's
//! key: it is put into the group's marks bucket (`DURM_…`, memory storage,
//! as many replicas as the slots, [`crate::group_names::marks_bucket`]),
//! under the slot's name, without waiting for the server: the message is
//! written into the connection's socket, and the batch is handed over. The
//! member that takes the slot over from that holding reads the mark with
//! the slot and counts its deliveries ([`Slots::take`]). So a mark costs no
//! sync (a slot's write is synced on the servers' disks): it survives the
//! member's process crash (the bytes are in the kernel or on the servers),
//! not the loss of the servers' memory, as the local queue's mark survives
//! a process crash in the page cache, not a power cut. A lost mark makes a
//! delivery count one too low; it never moves a checkpoint. Fencing stays
//! the slot's compare-and-set alone: a mark is a plain put, and counts only
//! for the holding (epoch) and checkpoint it names, so a zombie's late mark
//! counts for nobody (it may overwrite its successor's, whose count is
//! then one too low if that successor dies before its next write). A mark
//! needs no acknowledgement before the batch's commit: it matters only for
//! records not committed. A member that keeps up marks the next batch in
//! the same (synced) write that commits the last one.
//!
//! **Lost replies.** A write whose acknowledgement is lost (a timeout, a
//! leader change) may have happened. The holder's next write then finds a
//! newer revision; if that revision still carries the holder's epoch, it was
//! the holder's own write, and the holder adopts it and writes again. Any
//! other writer in between means a takeover: fenced.
//!
//! **A bucket another member is creating.** On a cluster, the first of
//! several members creating a group's bucket at once gets its reply when the
//! bucket's stream has elected its first leader; the others are answered at
//! once that it exists, and their writes find no stream to take them until
//! that election is over. [`Slots::open`] and the first write of a joining
//! member ([`Slots::while_not_writable`]) wait that out, for at most
//! [`BUCKET_WRITABLE_WITHIN`].

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{CreateKeyValueErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, StorageType};

use crate::connect::Client;
use crate::error::{Error, Result};
use crate::group_names::{marks_bucket, validate_name};
use crate::slot_value::{HOLDER_BYTES_MAX, SlotValue, VALUE_BYTES_MAX};

/// The JetStream header that marks a key-value delete or purge.
const KV_OPERATION_HEADER: &str = "KV-Operation";

/// How long opening a group's bucket, and a member's first write into it,
/// wait for a bucket that is still being created to take writes: as long as
/// a send waits through a leader election (the producer's
/// `SEND_RETRY_WITHIN`, 60 s too; not taken from there, which would make
/// the slot module depend on the producer's). On the test cluster the first
/// creator's reply came 0.15 s after its request, the others' first writes
/// went through 0.2 s after the barrier (two refused before), but a first
/// election that fails waits a Raft election timeout, several seconds on a
/// loaded machine.
pub const BUCKET_WRITABLE_WITHIN: Duration = Duration::from_secs(60);

/// The pause between two attempts at a bucket that is not writable yet.
const BUCKET_POLL: Duration = Duration::from_millis(100);

/// One consumer group's slots: a key-value bucket.
#[derive(Debug, Clone)]
pub struct Slots {
    store: kv::Store,
    /// The group's delivery marks (module doc, "Marks in memory").
    marks: kv::Store,
    /// The connection marks are published on without a reply.
    client: async_nats::Client,
}

/// A slot as read: its revision and stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    slot: String,
    revision: u64,
    value: SlotValue,
}

/// Where a slot's group is in its partition: what is processed, and what
/// was handed out and not yet committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The next offset to process; every record before it was processed.
    pub checkpoint: u64,
    /// Records from `checkpoint` up to here were handed to a member and not
    /// committed (at least `checkpoint`).
    pub delivered_end: u64,
    /// Deliveries of the record at `checkpoint` so far.
    pub attempts: u32,
}

impl Progress {
    /// What a stored value (a slot's or a mark's) says.
    fn of(value: &SlotValue) -> Progress {
        Progress { checkpoint: value.checkpoint, delivered_end: value.delivered_end, attempts: value.attempts }
    }

    /// After every record before `checkpoint` was processed. A record past
    /// the old checkpoint starts its count afresh, except one that was
    /// handed out before (it was delivered at least once). The same
    /// checkpoint again changes nothing.
    pub fn committed(self, checkpoint: u64) -> Progress {
        if checkpoint == self.checkpoint {
            return self;
        }
        let attempts = u32::from(checkpoint < self.delivered_end);
        Progress { checkpoint, delivered_end: self.delivered_end.max(checkpoint), attempts }
    }

    /// After the records from the checkpoint up to `end` were handed out
    /// once more: the record at the checkpoint counts one more delivery.
    pub fn handed_out(self, end: u64) -> Progress {
        Progress {
            checkpoint: self.checkpoint,
            delivered_end: self.delivered_end.max(end),
            attempts: self.attempts.saturating_add(1),
        }
    }
}

/// A delivery mark as read from the marks bucket ([`Slots::read_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The epoch of the holding that put it.
    pub epoch: u64,
    /// What that holding had handed out, at which checkpoint.
    pub progress: Progress,
}

/// A held slot: what its holder needs to commit.
///
/// Dropping a lease does not release the slot (as when the holder's process
/// dies): another member takes it over.
#[derive(Debug)]
pub struct Lease {
    slot: String,
    holder: String,
    epoch: u64,
    /// The revision of the holder's last acknowledged write: what its next
    /// compare-and-set expects.
    revision: u64,
    /// What the holder last wrote, or marked in the marks bucket.
    progress: Progress,
}

impl Slots {
    /// Opens the bucket `bucket`, creating it if it does not exist, with
    /// `replicas` copies (1, or 3 on a cluster). Every write is on disk
    /// before it is acknowledged only if the servers run with
    /// `sync_interval: always` (docs/SCALE_OUT.md).
    ///
    /// A bucket that exists with the same settings is opened as it is (two
    /// members may create it at the same instant). A creation that timed out
    /// (on a cluster it is answered once the stream has a leader) is asked
    /// again, for up to [`BUCKET_WRITABLE_WITHIN`]; the bucket may exist by
    /// then, which is the same as creating it.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bucket name NATS cannot use;
    /// [`Error::Engine`] at once if the bucket exists with other settings or
    /// the request fails otherwise, and after [`BUCKET_WRITABLE_WITHIN`] if
    /// every creation timed out.
    pub async fn open(client: &Client, bucket: &str, replicas: usize) -> Result<Slots> {
        validate_name("bucket", bucket)?;
        let store = create_bucket(client, bucket, "durq consumer-group slots", StorageType::File, replicas).await?;
        // Not synced: a mark is meant to survive a member's crash, not the
        // servers' (module doc).
        let marks_name = marks_bucket(bucket)?;
        let marks =
            create_bucket(client, &marks_name, "durq consumer-group delivery marks", StorageType::Memory, replicas)
                .await?;
        // A mark is published to the key's subject by hand; with durq's
        // context (the default API prefix) that is the store's prefix.
        assert!(!marks.use_jetstream_prefix, "durq's JetStream context uses the default API prefix");
        Ok(Slots { store, marks, client: client.jetstream().client() })
    }

    /// Runs `write` (a write into this bucket) until it is not refused for a
    /// stream that does not answer yet: no responder for the bucket's
    /// subjects (a stream still electing its first leader; the client calls
    /// it "stream not found") or no reply in time. Tried again for up to
    /// [`BUCKET_WRITABLE_WITHIN`], so `write` must be one that may be
    /// repeated (a put of the same value). Any other failure is returned at
    /// once.
    ///
    /// Meant for the first write of a member that may have opened a bucket
    /// another member is creating: after it, the bucket has a leader, and a
    /// later write that finds none is an outage the caller sees.
    ///
    /// # Errors
    /// [`Error::Engine`] naming the bucket and `what`.
    pub(crate) async fn while_not_writable<T, E, F>(&self, what: &str, write: impl FnMut() -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        while_not_there(write, |e: &E| publish_not_answered(e))
            .await
            .map_err(|(e, waited)| Error::engine(format!("{what} in bucket {}{waited}", self.bucket()), e))
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.store.name
    }

    /// The name of the bucket of the slots' delivery marks.
    pub fn marks_bucket(&self) -> &str {
        &self.marks.name
    }

    /// The slot's current state, or `None` if it was never written.
    ///
    /// # Errors
    /// [`Error::CorruptSlot`] if the stored value does not decode, or the key
    /// was deleted (its checkpoint is gone, and is not silently restarted);
    /// [`Error::Engine`] if the request fails.
    pub async fn read(&self, slot: &str) -> Result<Option<SlotState>> {
        read_slot(&self.store, slot).await
    }

    /// The delivery mark last put for slot `slot`, or `None` if there is
    /// none (never put, removed, or lost with the servers' memory).
    ///
    /// # Errors
    /// [`Error::CorruptSlot`] (naming the marks bucket) if the stored value
    /// does not decode; [`Error::Engine`] if the request fails.
    pub async fn read_mark(&self, slot: &str) -> Result<Option<Mark>> {
        validate_name("slot", slot)?;
        match last_entry(&self.marks, slot).await? {
            None | Some(Entry::Removed { .. }) => Ok(None),
            Some(Entry::Value { value, .. }) => Ok(Some(Mark { epoch: value.epoch, progress: Progress::of(&value) })),
        }
    }

    /// The mark a take reads: [`Slots::read_mark`], with a marks bucket
    /// that does not answer (its stream electing a leader after the loss
    /// of a node: its own election, apart from the slots') read as no mark.
    /// A takeover does not wait on it: the mark is then lost, a count one
    /// too low, as when the servers lose their memory.
    ///
    /// # Errors
    /// As [`Slots::read_mark`], but for a request that failed.
    async fn mark_for_take(&self, slot: &str) -> Result<Option<Mark>> {
        match self.read_mark(slot).await {
            Err(Error::Engine { .. }) => Ok(None),
            read => read,
        }
    }

    /// The state of slot `slot` from a watched entry's revision and value.
    ///
    /// # Errors
    /// [`Error::CorruptSlot`] if the value does not decode.
    pub(crate) fn state_of(&self, slot: &str, revision: u64, value: &[u8]) -> Result<SlotState> {
        let value = SlotValue::decode(value).map_err(|e| Error::CorruptSlot {
            bucket: self.bucket().to_owned(),
            slot: slot.to_owned(),
            revision,
            position: e.position,
            reason: e.reason,
        })?;
        Ok(SlotState { slot: slot.to_owned(), revision, value })
    }

    /// Takes the slot for `holder`, from the state the caller read (`None`:
    /// the slot was never written, and starts at checkpoint 0). The caller
    /// decides whether the slot may be taken (free, or its holder dead);
    /// this call makes sure nobody changed it since.
    ///
    /// # Errors
    /// [`Error::SlotChanged`] if the slot changed since `seen` (nothing was
    /// written); [`Error::InvalidName`] for a bad slot or member id;
    /// [`Error::Engine`] if the request fails (it may have taken effect:
    /// read the slot again).
    pub async fn take(&self, slot: &str, holder: &str, seen: Option<&SlotState>) -> Result<Lease> {
        validate_name("slot", slot)?;
        validate_holder(holder)?;
        if let Some(seen) = seen {
            assert_eq!(seen.slot, slot, "a slot is taken from a state read of that same slot");
        }
        let mut progress = seen.map_or(Progress { checkpoint: 0, delivered_end: 0, attempts: 0 }, SlotState::progress);
        // Taken from a holder (dead, or presumed so): its last mark counts
        // if it was made by that holding at the checkpoint stored. A free
        // slot's release stored its holder's progress, marks included.
        if let Some(epoch) = seen.and_then(SlotState::epoch)
            && let Some(mark) = self.mark_for_take(slot).await?
            && mark.epoch == epoch
            && mark.progress.checkpoint == progress.checkpoint
        {
            progress.delivered_end = progress.delivered_end.max(mark.progress.delivered_end);
            progress.attempts = progress.attempts.max(mark.progress.attempts);
        }
        let value = SlotValue {
            checkpoint: progress.checkpoint,
            epoch: 0,
            delivered_end: progress.delivered_end,
            attempts: progress.attempts,
            holder: holder.to_owned(),
        };
        // Expected revision 0: the key must have no entry yet.
        let expected = seen.map_or(0, SlotState::revision);
        let revision = self.store.update(slot, value.encode().into(), expected).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => {
                Error::SlotChanged { bucket: self.bucket().to_owned(), slot: slot.to_owned(), expected }
            }
            _ => Error::engine(format!("take slot {}/{slot}", self.bucket()), e),
        })?;
        Ok(Lease { slot: slot.to_owned(), holder: holder.to_owned(), epoch: revision, revision, progress })
    }

    /// Moves the slot's checkpoint to `checkpoint` (every record before it
    /// was processed), if `lease` still holds the slot. The same checkpoint
    /// again is allowed: it writes a new revision, which is how a holder
    /// shows it is alive.
    ///
    /// # Errors
    /// [`Error::Fenced`] if the slot was taken over (nothing was stored);
    /// [`Error::CheckpointBehind`] if `checkpoint` is below the held one;
    /// [`Error::Engine`] if the request fails (it may have taken effect; the
    /// next commit finds out).
    pub async fn commit(&self, lease: &mut Lease, checkpoint: u64) -> Result<()> {
        let progress = lease.progress.committed(checkpoint);
        self.advance(lease, progress).await
    }

    /// Writes `progress` (a commit, or the mark of a batch handed out), if
    /// `lease` still holds the slot.
    ///
    /// # Errors
    /// As [`Slots::commit`].
    pub async fn advance(&self, lease: &mut Lease, progress: Progress) -> Result<()> {
        let value = lease.value_of(progress);
        self.write_over(lease, value).await
    }

    /// Puts `progress`, the mark of a batch about to be handed over, into
    /// the marks bucket, and returns once the message is written into the
    /// connection's socket, without waiting for the server (module doc,
    /// "Marks in memory"). The lease's next write stores it in the slot
    /// too.
    ///
    /// # Errors
    /// [`Error::CheckpointBehind`] as [`Slots::commit`]; [`Error::Engine`]
    /// if the mark cannot be sent or flushed (it may still reach the
    /// server).
    pub async fn send_mark(&self, lease: &mut Lease, progress: Progress) -> Result<()> {
        let value = lease.value_of(progress);
        self.check_not_behind(lease, &value)?;
        let what = || format!("mark slot {}/{}", self.marks.name, lease.slot);
        let subject = format!("{}{}", self.marks.put_prefix.as_ref().unwrap_or(&self.marks.prefix), lease.slot);
        self.client.publish(subject, value.encode().into()).await.map_err(|e| Error::engine(what(), e))?;
        lease.progress = progress;
        // The client's flush returns once its connection task has written
        // everything queued before it into the socket (no round trip).
        self.client.flush().await.map_err(|e| Error::engine(what(), e))
    }

    /// Gives the slot back, keeping its checkpoint, so another member can
    /// take it at once instead of after a lease timeout.
    ///
    /// # Errors
    /// As [`Slots::commit`].
    pub async fn release(&self, mut lease: Lease) -> Result<()> {
        let p = lease.progress;
        let value = SlotValue {
            checkpoint: p.checkpoint,
            epoch: 0,
            delivered_end: p.delivered_end,
            attempts: p.attempts,
            holder: String::new(),
        };
        self.write_over(&mut lease, value).await
    }

    /// Sets a slot nobody holds to `checkpoint` (a group reset), from the
    /// state the caller read (`None`: never written). The one write that
    /// may move a checkpoint backwards; the caller makes sure no live
    /// member holds the slot, and the compare-and-set that nothing changed
    /// since it looked.
    ///
    /// # Errors
    /// As [`Slots::take`].
    pub async fn reset(&self, slot: &str, seen: Option<&SlotState>, checkpoint: u64) -> Result<()> {
        validate_name("slot", slot)?;
        let value = SlotValue { checkpoint, epoch: 0, delivered_end: checkpoint, attempts: 0, holder: String::new() };
        let expected = seen.map_or(0, SlotState::revision);
        self.store.update(slot, value.encode().into(), expected).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => {
                Error::SlotChanged { bucket: self.bucket().to_owned(), slot: slot.to_owned(), expected }
            }
            _ => Error::engine(format!("reset slot {}/{slot}", self.bucket()), e),
        })?;
        Ok(())
    }

    /// The key-value handle (membership keys share the bucket).
    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }

    fn check_not_behind(&self, lease: &Lease, value: &SlotValue) -> Result<()> {
        if value.checkpoint < lease.progress.checkpoint {
            return Err(Error::CheckpointBehind {
                bucket: self.bucket().to_owned(),
                slot: lease.slot.clone(),
                committed: lease.progress.checkpoint,
                requested: value.checkpoint,
            });
        }
        Ok(())
    }

    /// Writes `value` over the lease's own last revision; on a mismatch,
    /// adopts a newer revision that is still this holding's (a write whose
    /// reply was lost) and tries once more.
    async fn write_over(&self, lease: &mut Lease, value: SlotValue) -> Result<()> {
        let fenced =
            || Error::Fenced { bucket: self.bucket().to_owned(), slot: lease.slot.clone(), epoch: lease.epoch };
        for _attempt in 0..2 {
            self.check_not_behind(lease, &value)?;
            match self.store.update(&lease.slot, value.encode().into(), lease.revision).await {
                Ok(revision) => {
                    lease.revision = revision;
                    lease.progress = Progress::of(&value);
                    return Ok(());
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => match self.read(&lease.slot).await? {
                    Some(now) if now.epoch() == Some(lease.epoch) && now.revision > lease.revision => {
                        lease.revision = now.revision;
                        lease.progress = now.progress();
                    }
                    _ => return Err(fenced()),
                },
                Err(e) => return Err(Error::engine(format!("commit slot {}/{}", self.bucket(), lease.slot), e)),
            }
        }
        Err(fenced())
    }
}

impl SlotState {
    /// The slot's name.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The revision of the entry read (what a take must expect).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next offset to process.
    pub fn checkpoint(&self) -> u64 {
        self.value.checkpoint
    }

    /// The checkpoint and deliveries stored.
    pub fn progress(&self) -> Progress {
        Progress::of(&self.value)
    }

    /// The holder's member id, or `None` if the slot is free.
    pub fn holder(&self) -> Option<&str> {
        Some(self.value.holder.as_str()).filter(|h| !h.is_empty())
    }

    /// The epoch of the holding, or `None` if the slot is free.
    pub fn epoch(&self) -> Option<u64> {
        self.holder()?;
        Some(if self.value.epoch == 0 { self.revision } else { self.value.epoch })
    }
}

impl Lease {
    /// The slot held.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The fencing epoch: the revision of the take.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The checkpoint held: the last one committed.
    pub fn checkpoint(&self) -> u64 {
        self.progress.checkpoint
    }

    /// The checkpoint and deliveries last written.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The value this holding stores for `progress`.
    fn value_of(&self, progress: Progress) -> SlotValue {
        assert!(
            progress.delivered_end >= progress.checkpoint,
            "delivered end {} below checkpoint {}",
            progress.delivered_end,
            progress.checkpoint
        );
        SlotValue {
            checkpoint: progress.checkpoint,
            epoch: self.epoch,
            delivered_end: progress.delivered_end,
            attempts: progress.attempts,
            holder: self.holder.clone(),
        }
    }

    /// Takes back the mark of a batch that was recorded as handed out but
    /// never reached the caller: the next write (a heartbeat, a release)
    /// stores `before`, the progress the mark was made on, so whoever holds
    /// the slot next does not count a delivery that did not happen.
    pub(crate) fn unmark(&mut self, before: Progress) {
        assert_eq!(
            before.checkpoint, self.progress.checkpoint,
            "a mark is taken back at the checkpoint it was made at"
        );
        self.progress = before;
    }
}

/// Creates key-value bucket `bucket` (or opens it, if it exists with the
/// same settings), holding only each key's latest value: compare-and-set
/// checks the latest revision, and a mark replaces the one before. A
/// creation that timed out is asked again ([`Slots::open`]).
async fn create_bucket(
    client: &Client,
    bucket: &str,
    description: &str,
    storage: StorageType,
    replicas: usize,
) -> Result<kv::Store> {
    let config = kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_value_size: VALUE_BYTES_MAX as i32,
        storage,
        num_replicas: replicas,
        ..Default::default()
    };
    let create = || client.jetstream().create_key_value(config.clone());
    while_not_there(create, |e| e.kind() == CreateKeyValueErrorKind::TimedOut).await.map_err(|(e, waited)| {
        Error::engine(format!("create key-value bucket {bucket} ({replicas} replicas){waited}"), e)
    })
}

/// A group's slots as `durq stat` looks at them: the bucket opened as it
/// is, creating nothing (so credentials that may only read will do), and
/// read, never written.
#[derive(Debug, Clone)]
pub struct SlotsView {
    store: kv::Store,
}

impl SlotsView {
    /// Opens the existing bucket `bucket`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bucket name NATS cannot use;
    /// [`Error::Engine`] if it does not exist or the request fails.
    pub async fn open(client: &Client, bucket: &str) -> Result<SlotsView> {
        validate_name("bucket", bucket)?;
        let store = client
            .jetstream()
            .get_key_value(bucket)
            .await
            .map_err(|e| Error::engine(format!("open key-value bucket {bucket}"), e))?;
        Ok(SlotsView { store })
    }

    /// As [`Slots::read`].
    ///
    /// # Errors
    /// As [`Slots::read`].
    pub async fn read(&self, slot: &str) -> Result<Option<SlotState>> {
        read_slot(&self.store, slot).await
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.store.name
    }

    /// The key-value handle (membership keys share the bucket).
    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }
}

/// Slot `slot` of the bucket `store` ([`Slots::read`]).
async fn read_slot(store: &kv::Store, slot: &str) -> Result<Option<SlotState>> {
    validate_name("slot", slot)?;
    match last_entry(store, slot).await? {
        None => Ok(None),
        Some(Entry::Removed { revision, operation }) => Err(Error::CorruptSlot {
            bucket: store.name.clone(),
            slot: slot.to_owned(),
            revision,
            position: 0,
            reason: format!("the key was removed ({operation}): its checkpoint is lost"),
        }),
        Some(Entry::Value { revision, value }) => Ok(Some(SlotState { slot: slot.to_owned(), revision, value })),
    }
}

/// A key's last entry in a bucket, as stored.
enum Entry {
    Value {
        revision: u64,
        value: SlotValue,
    },
    /// A delete or purge marker, with its operation.
    Removed {
        revision: u64,
        operation: String,
    },
}

/// The last entry of key `key` in `store` (read from the stream's leader),
/// or `None` if it was never written.
///
/// # Errors
/// [`Error::CorruptSlot`] if the value does not decode; [`Error::Engine`] if
/// the request fails.
async fn last_entry(store: &kv::Store, key: &str) -> Result<Option<Entry>> {
    let subject = format!("{}{key}", store.prefix);
    let message = match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(Error::engine(format!("read key {}/{key}", store.name), e)),
    };
    if let Some(operation) = message.headers.get(KV_OPERATION_HEADER) {
        return Ok(Some(Entry::Removed { revision: message.sequence, operation: operation.to_string() }));
    }
    let value = SlotValue::decode(&message.payload).map_err(|e| Error::CorruptSlot {
        bucket: store.name.clone(),
        slot: key.to_owned(),
        revision: message.sequence,
        position: e.position,
        reason: e.reason,
    })?;
    Ok(Some(Entry::Value { revision: message.sequence, value }))
}

/// Runs `attempt` until it succeeds, fails with an error `not_there` does
/// not accept, or [`BUCKET_WRITABLE_WITHIN`] has passed. The error comes
/// with a note for the operation's name: that the bucket did not answer in
/// time, when that is why it is returned (empty otherwise). Also how
/// opening a queue waits for the meta bucket and the streams that other
/// openers are creating at the same instant (`queue.rs`).
pub(crate) async fn while_not_there<T, E, F>(
    mut attempt: impl FnMut() -> F,
    not_there: impl Fn(&E) -> bool,
) -> std::result::Result<T, (E, String)>
where
    F: Future<Output = std::result::Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if not_there(&e) && started.elapsed() < BUCKET_WRITABLE_WITHIN => {
                tokio::time::sleep(BUCKET_POLL).await;
            }
            Err(e) if not_there(&e) => {
                let waited = format!(
                    " (the bucket did not answer within {}s, tried every {}ms)",
                    BUCKET_WRITABLE_WITHIN.as_secs(),
                    BUCKET_POLL.as_millis()
                );
                return Err((e, waited));
            }
            Err(e) => return Err((e, String::new())),
        }
    }
}

/// Whether `error` is a write into a bucket whose stream did not answer:
/// no responder (the client says "stream not found") or no reply in time,
/// found among its sources (the key-value calls wrap the publish's error
/// once or twice).
pub(crate) fn publish_not_answered(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = error.source();
    while let Some(error) = source {
        if let Some(publish) = error.downcast_ref::<PublishError>() {
            return matches!(publish.kind(), PublishErrorKind::StreamNotFound | PublishErrorKind::TimedOut);
        }
        source = error.source();
    }
    false
}

fn validate_holder(holder: &str) -> Result<()> {
    let reason = if holder.is_empty() {
        Some("empty (an empty holder means a free slot)")
    } else if holder.len() > HOLDER_BYTES_MAX {
        Some("longer than 256 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { what: "member id", name: holder.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_id_is_non_empty_and_fits_the_value() {
        assert!(validate_holder("m").is_ok());
        assert!(validate_holder(&"m".repeat(HOLDER_BYTES_MAX)).is_ok());
        assert!(validate_holder("").is_err());
        assert!(validate_holder(&"m".repeat(HOLDER_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn epoch_of_a_take_entry_is_its_own_revision() {
        let state = |epoch, holder: &str| SlotState {
            slot: "p0".to_owned(),
            revision: 9,
            value: SlotValue { checkpoint: 3, epoch, delivered_end: 3, attempts: 0, holder: holder.to_owned() },
        };
        assert_eq!(state(0, "m").epoch(), Some(9), "the take's own entry");
        assert_eq!(state(5, "m").epoch(), Some(5), "a commit of the holding taken at revision 5");
        assert_eq!(state(0, "").epoch(), None, "a free slot");
        assert_eq!(state(0, "").holder(), None);
    }
}

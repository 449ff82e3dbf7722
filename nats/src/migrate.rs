//! Moving a local queue to NATS with its offsets: the records not yet
//! consumed, and the position of each consumer group named.
//!
//! For each partition `p` of the local queue, the records from `start` to
//! the partition's end are published, in order, to the stream of partition
//! `p` of a new NATS queue with as many partitions, created with its first
//! sequence at `start + 1` so that every record keeps its offset (offset =
//! sequence − 1). `start` is the lowest committed offset over the groups
//! named, or the first kept offset when none is named. Each record keeps its
//! key and payload; its partition is the same, so a key's records stay in
//! one partition, in order, and later sends with that key go there too (the
//! NATS producer hashes keys as the local one does). Each named group gets
//! its slots written free with its committed offsets (at least `start`: a
//! group behind the first kept record starts there), through [`Slots`], as
//! a member releasing them would leave them. The queue's meta entry is
//! written **last**: until then no `Queue::open` accepts the queue (it finds
//! the streams' configuration changed and refuses), so no producer or
//! consumer sees a half-migrated queue.
//!
//! **Resumable.** Every record is published with `Nats-Expected-Last-Sequence`
//! = its offset, so the stream stores it only at its own offset, and with
//! a `Nats-Msg-Id` naming its partition and offset. A migration that stopped
//! (crashed, killed, lost its server) is run again with the same arguments:
//! each stream that exists is checked to be an earlier run's (its last
//! message carries the migration's id for its offset) and copying goes on
//! after its last record; the slots are rewritten (a slot the migration
//! held when it stopped is taken back from itself). The result is the same
//! records at the same offsets, none twice.
//!
//! **What it does not do.** The local queue is opened (which recovers it
//! after a crash, as any open does) and only read: no group is joined,
//! nothing is committed. Records sent to it after a partition was copied
//! are not migrated, and a local consumer still committing moves positions
//! the migration has already written: stop the local producers and
//! consumers first. A record's append time is not kept (the stream stamps
//! its own; a dead letter keeps its record's, not when it failed). A target
//! queue that exists (its meta entry) is refused: a migration creates the
//! queue.
//!
//! **Dead letters.** Each named group's dead letters not yet replayed are
//! published, oldest first, to the group's dead-letter stream (as its
//! members would have published them: `dead_letter.rs`), each with
//! `Nats-Expected-Last-Sequence` = its place in the stream and a
//! `Nats-Msg-Id` naming its offset in the local dead-letter queue, after
//! the group's slots are written: a rerun goes on after the letters an
//! earlier run stored, and refuses a stream holding anything else.

use std::ops::Range;
use std::path::Path;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishAckFuture};
use async_nats::jetstream::kv::CreateErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use durq::{BoxError, Options, Position, StoredRecord};

use crate::connect::{Client, connect};
use crate::dead_letter;
use crate::error::Error;
use crate::group_names::{group_bucket, slot_key};
use crate::queue::{create_stream, open_meta_bucket, read_meta, resolve};
use crate::queue_meta::QueueMeta;
use crate::queue_url::QueueUrl;
use crate::record;
use crate::shared::ClientRuntime;
use crate::slot::Slots;

/// The member id the migration takes slots as, while it writes them.
pub const MIGRATOR: &str = "durq-migrate";

/// Records published before their acknowledgements are awaited.
const PIPELINE_DEPTH: usize = 64;

/// Records read from the local queue at a time.
const READ_BATCH_MAX: usize = 1024;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migrated {
    /// The NATS queue's address.
    pub url: String,
    /// One entry per partition.
    pub partitions: Vec<MigratedPartition>,
    /// One entry per group named.
    pub groups: Vec<MigratedGroup>,
}

/// One partition of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigratedPartition {
    /// The partition.
    pub partition: u32,
    /// The records now on NATS: the stream's first offset to the one its
    /// next record gets.
    pub offsets: Range<u64>,
    /// Where this run began copying: `offsets.start` unless an earlier run
    /// had copied up to here.
    pub resumed_at: u64,
}

/// One group of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigratedGroup {
    /// The group's name.
    pub name: String,
    /// The checkpoint written per partition (the next offset to process).
    pub checkpoints: Vec<u64>,
    /// The group's dead letters now in its dead-letter stream on NATS
    /// (copied by this run or an earlier one).
    pub dead_letters: u64,
}

/// Migrates the local queue at `dir` to a new NATS queue at `url`
/// (`nats://host:port/QUEUE`) with the positions of `groups`; see the
/// module's documentation. `copied` is called with the positions of each
/// run of records once the server acknowledged them; an error from it stops
/// the migration (run it again to go on).
///
/// # Errors
/// The local queue's errors as [`durq::Queue::open_existing`] and
/// [`durq::Queue::read_at`] give them; [`durq::Error::Engine`] with
/// [`Error::MigrationRefused`] when the target exists, a group is missing or
/// its position damaged, or a record does not fit the server, with the
/// connection errors of [`crate::connect()`], or with a failed request (run it
/// again); and whatever `copied` returns.
pub fn migrate(
    dir: &Path,
    url: &str,
    groups: &[String],
    mut copied: impl FnMut(&[Position]) -> durq::Result<()>,
) -> durq::Result<Migrated> {
    let target = QueueUrl::parse(url)?;
    let local = durq::Queue::open_existing(dir)?;
    let plan = Plan::of(&local, groups, &target)?;
    let runtime = ClientRuntime::start()?;
    let migration = Migration { local: &local, target: &target };
    runtime.get().block_on(migration.run(&plan, &mut copied))
}

/// What the local queue holds to migrate, read before anything is written.
struct Plan {
    /// Per partition: the first offset to copy, and the end (next offset)
    /// when the migration began.
    partitions: Vec<Range<u64>>,
    /// Each group named and its committed offset per partition.
    groups: Vec<(String, Vec<u64>)>,
}

impl Plan {
    fn of(local: &durq::Queue, names: &[String], target: &QueueUrl) -> durq::Result<Plan> {
        let stat = local.stat()?;
        let refused = |reason: String| refusal(local.path(), target, reason);
        let mut groups = Vec::new();
        for name in names {
            let group = stat
                .groups
                .iter()
                .find(|g| &g.name == name)
                .ok_or_else(|| refused(format!("the local queue has no group {name:?}")))?;
            let committed = group
                .committed
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    c.ok_or_else(|| {
                        refused(format!(
                            "group {name:?} has a damaged position in partition {p} (`durq stat` says why; \
                             `durq group reset` gives it one)"
                        ))
                    })
                })
                .collect::<durq::Result<Vec<u64>>>()?;
            groups.push((name.clone(), committed));
        }
        let mut partitions = Vec::new();
        for p in 0..local.config().partitions {
            let (first, next) = local.offsets(p)?;
            let lowest = groups.iter().map(|(_, committed)| committed[p as usize]).min().unwrap_or(first);
            partitions.push(lowest.clamp(first, next)..next);
        }
        Ok(Plan { partitions, groups })
    }
}

/// One migration under way.
struct Migration<'a> {
    local: &'a durq::Queue,
    target: &'a QueueUrl,
}

impl Migration<'_> {
    async fn run(
        &self,
        plan: &Plan,
        copied: &mut impl FnMut(&[Position]) -> durq::Result<()>,
    ) -> durq::Result<Migrated> {
        let client = connect(&self.target.servers).await?;
        let replicas: u8 = if client.clustered() { 3 } else { 1 };
        let metas = open_meta_bucket(&client, replicas).await?;
        if read_meta(&metas, self.target).await?.is_some() {
            return Err(self.refused(
                "the queue exists on the server; a migration creates its queue (choose another name, or delete \
                 that queue)",
            ));
        }
        let config = self.local.config();
        let options = Options::default().partitions(config.partitions).durability(config.durability);
        let meta = resolve(&client, &options, replicas)?;
        let mut partitions = Vec::new();
        for (p, wanted) in (0..).zip(&plan.partitions) {
            partitions.push(self.copy_partition(&client, &meta, p, wanted.clone(), copied).await?);
        }
        let mut groups = Vec::new();
        for (name, committed) in &plan.groups {
            // A group behind the first record copied starts at it, as a
            // local group behind retention does at the first kept record.
            let checkpoints: Vec<u64> =
                committed.iter().zip(&partitions).map(|(&c, copied)| c.max(copied.offsets.start)).collect();
            self.write_group(&client, replicas, name, &checkpoints).await?;
            let dead_letters = self.copy_dead_letters(&client, replicas, name).await?;
            groups.push(MigratedGroup { name: name.clone(), checkpoints, dead_letters });
        }
        match metas.create(&self.target.name, meta.encode().into()).await {
            Ok(_) => Ok(Migrated { url: self.target.to_string(), partitions, groups }),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                Err(self.refused("the queue was created on the server while the migration ran"))
            }
            Err(e) => Err(Error::engine(
                format!("write the meta entry of queue {} (run the migration again)", self.target),
                e,
            )
            .into()),
        }
    }

    /// Creates (or finds, from an earlier run) partition `p`'s stream and
    /// copies the local records of `wanted` that it does not hold yet.
    async fn copy_partition(
        &self,
        client: &Client,
        meta: &QueueMeta,
        p: u32,
        wanted: Range<u64>,
        copied: &mut impl FnMut(&[Position]) -> durq::Result<()>,
    ) -> durq::Result<MigratedPartition> {
        let (start, resumed_at) = match self.earlier_run(client, p).await? {
            Some(stored) => self.check_earlier_run(p, &wanted, stored)?,
            None => {
                create_stream(client, self.target, meta, p, Some(wanted.start)).await?;
                (wanted.start, wanted.start)
            }
        };
        let subject = record::subject(&self.target.name, p);
        let mut next = resumed_at;
        while next < wanted.end {
            let max = READ_BATCH_MAX.min((wanted.end - next) as usize);
            let records = self.local.read_at(p, next, max)?;
            if records.is_empty() {
                // Records not yet visible to consumers (a local producer is
                // still writing): they are not migrated.
                break;
            }
            for window in records.chunks(PIPELINE_DEPTH) {
                self.publish(client, meta, &subject, p, window).await?;
                next = window[window.len() - 1].position.offset + 1;
                let positions: Vec<Position> = window.iter().map(|r| r.position).collect();
                copied(&positions)?;
            }
        }
        Ok(MigratedPartition { partition: p, offsets: start..next.max(resumed_at), resumed_at })
    }

    /// Publishes `records` of partition `p`, pipelined, each only at its
    /// own offset.
    async fn publish(
        &self,
        client: &Client,
        meta: &QueueMeta,
        subject: &str,
        p: u32,
        records: &[StoredRecord],
    ) -> durq::Result<()> {
        let mut acks = Vec::with_capacity(records.len());
        for (expected, r) in (records[0].position.offset..).zip(records) {
            if r.position.offset != expected {
                return Err(self.refused(format!(
                    "partition {p} of the local queue has no record at offset {expected} (the next read is {})",
                    r.position.offset
                )));
            }
            let bytes = r.key.as_ref().map_or(0, Vec::len) + r.payload.len();
            if bytes > meta.record_bytes_max as usize {
                return Err(self.refused(format!(
                    "the record at partition {p} offset {} has {bytes} bytes of key and payload; the server takes \
                     at most {} (raise max_payload on the servers)",
                    r.position.offset, meta.record_bytes_max
                )));
            }
            let mut message = PublishMessage::build()
                .message_id(migration_id(p, r.position.offset))
                // The previous record's sequence is this record's offset.
                .expected_last_sequence(r.position.offset)
                .payload(Bytes::copy_from_slice(&r.payload));
            if let Some(key) = &r.key {
                message = message.header(record::KEY_HEADER, record::encode_key(key));
            }
            let ack = client
                .jetstream()
                .send_publish(subject.to_owned(), message)
                .await
                .map_err(|e| self.publish_failed(p, r.position.offset, e))?;
            acks.push((r.position.offset, ack));
        }
        for (offset, ack) in acks {
            let ack = ack.await.map_err(|e| self.publish_failed(p, offset, e))?;
            if ack.sequence != record::sequence_of_offset(offset) {
                return Err(self.refused(format!(
                    "the record at partition {p} offset {offset} was stored at sequence {} of stream {}, not {}",
                    ack.sequence,
                    ack.stream,
                    record::sequence_of_offset(offset)
                )));
            }
        }
        Ok(())
    }

    /// Partition `p`'s stream as an earlier run left it: its first offset,
    /// next offset and the message id of its last record; `None` if it
    /// does not exist.
    async fn earlier_run(&self, client: &Client, p: u32) -> durq::Result<Option<StoredStream>> {
        let name = record::stream_name(&self.target.name, p);
        let stream = match client.jetstream().get_stream(&name).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::engine(format!("look up stream {name}"), e).into()),
        };
        // The lookup's own answer: nothing writes to the stream but this
        // migration (no `Queue::open` accepts it before the meta entry).
        let info = stream.cached_info().clone();
        let first = record::offset_of_sequence(info.config.first_sequence.unwrap_or(1).max(1));
        let next = info.state.last_sequence.max(first);
        let subject = record::subject(&self.target.name, p);
        let last_id = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message.headers.get("Nats-Msg-Id").map(|id| id.to_string()),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(Error::engine(format!("read the last record of stream {name}"), e).into()),
        };
        Ok(Some(StoredStream { name, first, next, records: info.state.messages, last_id }))
    }

    /// Where to go on in a stream an earlier run created: `(first offset,
    /// offset to copy next)`, if it holds only what the migration wrote, a
    /// prefix of what it would write now.
    fn check_earlier_run(&self, p: u32, wanted: &Range<u64>, stored: StoredStream) -> durq::Result<(u64, u64)> {
        let StoredStream { name, first, next, records, last_id } = stored;
        let refused = |what: String| self.refused(format!("stream {name} exists and {what}"));
        if first > wanted.start {
            return Err(refused(format!(
                "starts at offset {first}, after offset {} where partition {p}'s records to migrate begin",
                wanted.start
            )));
        }
        let (kept, _) = self.local.offsets(p)?;
        if first < kept {
            return Err(refused(format!(
                "starts at offset {first}, before the local partition {p}'s first kept record {kept}"
            )));
        }
        if records > 0 && last_id.as_deref() != Some(migration_id(p, next - 1).as_str()) {
            return Err(refused(format!(
                "holds records a migration did not write (its last, offset {}, has message id {last_id:?})",
                next - 1
            )));
        }
        if next > wanted.end {
            return Err(refused(format!("holds records up to offset {next}, past the local end {}", wanted.end)));
        }
        Ok((first, next))
    }

    /// Writes the group's slots free with `checkpoints`, taking each from
    /// nobody or from an earlier run's migrator.
    async fn write_group(&self, client: &Client, replicas: u8, group: &str, checkpoints: &[u64]) -> durq::Result<()> {
        let slots = Slots::open(client, &group_bucket(&self.target.name, group)?, usize::from(replicas)).await?;
        for (p, &checkpoint) in (0u32..).zip(checkpoints) {
            let key = slot_key(p);
            let seen = slots.read(&key).await?;
            if let Some(seen) = &seen {
                match seen.holder() {
                    None if seen.checkpoint() == checkpoint => continue,
                    Some(holder) if holder != MIGRATOR => {
                        return Err(self.refused(format!(
                            "group {group:?}'s slot of partition {p} is held by member {holder:?} on the server"
                        )));
                    }
                    _ if seen.checkpoint() > checkpoint => {
                        return Err(self.refused(format!(
                            "group {group:?}'s slot of partition {p} is at offset {} on the server, past its local \
                             position {checkpoint}",
                            seen.checkpoint()
                        )));
                    }
                    _ => {}
                }
            }
            let mut lease = slots.take(&key, MIGRATOR, seen.as_ref()).await?;
            slots.commit(&mut lease, checkpoint).await?;
            slots.release(lease).await?;
        }
        Ok(())
    }

    /// Copies group `group`'s local dead letters, oldest first, to its
    /// dead-letter stream on NATS (created if there are any), each only at
    /// its own place in the stream, after those an earlier run copied, at
    /// most [`PIPELINE_DEPTH`] unacknowledged at a time, as the records.
    /// Returns how many the stream holds. (The letters are read from the
    /// local dead-letter queue all at once.)
    async fn copy_dead_letters(&self, client: &Client, replicas: u8, group: &str) -> durq::Result<u64> {
        let letters = self.local.dead_letters(group, usize::MAX)?;
        if letters.is_empty() {
            return Ok(0);
        }
        let queue = &self.target.name;
        dead_letter::create_stream(client, queue, group, usize::from(replicas)).await?;
        let name = dead_letter::stream_name(queue, group);
        let failed = |what: String, e: BoxError| -> durq::Error {
            Error::engine(format!("{what} (run the migration again to go on)"), e).into()
        };
        let mut stream =
            client.jetstream().get_stream(&name).await.map_err(|e| failed(format!("look up {name}"), e.into()))?;
        let info = stream.info().await.map_err(|e| failed(format!("read the state of {name}"), e.into()))?;
        let (done, messages) = (info.state.last_sequence, info.state.messages);
        if done > 0 {
            // Only this migration writes to the stream before the meta
            // entry: what it holds must be a prefix of the letters, in order.
            let last = stream
                .get_raw_message(done)
                .await
                .map_err(|e| failed(format!("read dead letter {done} of {name}"), e.into()))?;
            let id = last.headers.get("Nats-Msg-Id").map(|id| id.to_string());
            let wanted = letters.get(done as usize - 1).map(|l| dead_letter_migration_id(l.dlq_offset));
            if done > letters.len() as u64 || messages != done || id != wanted {
                return Err(self.refused(format!(
                    "dead-letter stream {name} exists and holds what a migration of the {} local dead letters of \
                     group {group:?} did not write ({} messages, the last with message id {id:?})",
                    letters.len(),
                    messages
                )));
            }
        }
        let subject = dead_letter::subject(queue, group);
        let mut acks = Vec::new();
        for (sequence, letter) in (done + 1..).zip(&letters[done as usize..]) {
            let headers = dead_letter::headers(
                letter.key.as_deref(),
                letter.original,
                letter.timestamp_ms,
                letter.deliveries,
                &letter.reason,
            );
            let message = PublishMessage::build()
                .headers(headers)
                .message_id(dead_letter_migration_id(letter.dlq_offset))
                .expected_last_sequence(sequence - 1)
                .payload(Bytes::copy_from_slice(&letter.payload));
            let what = || format!("publish dead letter {} of group {group:?} to {name}", letter.dlq_offset);
            let ack = client
                .jetstream()
                .send_publish(subject.clone(), message)
                .await
                .map_err(|e| failed(what(), e.into()))?;
            acks.push((sequence, what(), ack));
            if acks.len() == PIPELINE_DEPTH {
                self.confirm_dead_letters(std::mem::take(&mut acks), &failed).await?;
            }
        }
        self.confirm_dead_letters(acks, &failed).await?;
        Ok(letters.len() as u64)
    }

    /// Awaits the server's acknowledgement of each dead letter published,
    /// each at the sequence it was sent for.
    async fn confirm_dead_letters(
        &self,
        acks: Vec<(u64, String, PublishAckFuture)>,
        failed: &impl Fn(String, BoxError) -> durq::Error,
    ) -> durq::Result<()> {
        for (sequence, what, ack) in acks {
            let ack = ack.await.map_err(|e| failed(what.clone(), e.into()))?;
            if ack.sequence != sequence {
                return Err(self.refused(format!("{what}: stored at sequence {}, not {sequence}", ack.sequence)));
            }
        }
        Ok(())
    }

    fn publish_failed(&self, p: u32, offset: u64, e: impl Into<crate::error::ClientError>) -> durq::Error {
        Error::engine(
            format!(
                "publish the record at partition {p} offset {offset} to queue {} (run the migration again to go on)",
                self.target
            ),
            e,
        )
        .into()
    }

    fn refused(&self, reason: impl Into<String>) -> durq::Error {
        refusal(self.local.path(), self.target, reason.into())
    }
}

/// A partition's stream found on the server.
struct StoredStream {
    name: String,
    first: u64,
    next: u64,
    records: u64,
    last_id: Option<String>,
}

/// The `Nats-Msg-Id` of the migrated dead letter at `dlq_offset` of its
/// group's local dead-letter queue.
fn dead_letter_migration_id(dlq_offset: u64) -> String {
    format!("durq-migrate-dlq-{dlq_offset}")
}

/// The `Nats-Msg-Id` of the migrated record at `offset` of partition `p`.
fn migration_id(p: u32, offset: u64) -> String {
    format!("durq-migrate-{p}-{offset}")
}

fn refusal(from: &Path, to: &QueueUrl, reason: String) -> durq::Error {
    Error::MigrationRefused { from: from.to_path_buf(), to: to.to_string(), reason }.into()
}

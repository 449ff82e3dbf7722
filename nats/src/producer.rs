//! The producer of a NATS queue: the local queue's `send`, `send_keyed`,
//! `send_batch` and `flush`, each returning once JetStream acknowledged the
//! records, with their [`Position`]s (offset = stream sequence − 1).
//!
//! **A retried send is not a second record.** Every record carries a
//! `Nats-Msg-Id` unique to it (`<producer id>-<n>`; clones of a producer
//! share the id and the counter). When an acknowledgement does not come (a
//! timeout, a lost connection, no stream leader during an election), the
//! producer publishes the same message again, with the same id, until
//! [`SEND_RETRY_WITHIN`] has passed; the stream keeps one copy per id within
//! its duplicate window and acknowledges a repeat with the first copy's
//! sequence, so the position returned is the stored record's.
//!
//! **`send_batch` is atomic where the server has atomic batch publish**
//! (nats-server [`ATOMIC_BATCH_SINCE`](crate::ATOMIC_BATCH_SINCE) and
//! later, every partition's stream allowing it: `queue.rs`). A batch of up
//! to [`BATCH_RECORDS_MAX`] records (the server's default limit) is one
//! JetStream atomic batch (`atomic_batch.rs`): stored whole, at contiguous
//! positions, or not at all, also when the producer dies in the middle of
//! it. A larger batch is sent as consecutive atomic batches of that size,
//! each waiting for the one before: each is all or nothing, so what a
//! failure or a crash leaves is a prefix of the batch made of whole chunks,
//! in order (one batch of any size would need the server to hold it all
//! before storing any; splitting keeps each within the server's limit
//! instead of refusing the call). A server configured with a lower limit
//! refuses a chunk as too large (nothing stored); the producer then halves
//! its chunk size, for this and later batches, and sends that chunk again.
//! A batch of one record is a single publish.
//!
//! A retried atomic batch keeps the rule above: its records keep their
//! `Nats-Msg-Id`s, and only the batch id is new. The server refuses a batch
//! holding an id already in its duplicate window (it does not acknowledge
//! it as a duplicate, as it does a single publish), and since a batch is
//! stored whole or not at all, that refusal means the earlier attempt was
//! stored: the producer then publishes the batch's last record alone, with
//! its id, which the stream acknowledges as a duplicate at the stored
//! copy's sequence, and the batch's positions end there. An attempt
//! refused as incomplete (a record lost on the way, or the stream's limit
//! of 50 open batches) stored nothing and is sent again; any other refusal
//! is final and stored nothing of that chunk.
//!
//! **On older servers `send_batch` is not atomic**: its records are
//! published one after another to one partition, pipelined, and
//! acknowledged one by one. What a crash of the producer between two
//! records leaves is a prefix of the batch, in order; other producers'
//! records may sit between the batch's records, so the positions are
//! increasing but not always contiguous. A record whose acknowledgement was
//! lost is sent again after those behind it were stored, so a leader
//! change in the middle of a batch can leave that record after its
//! successors: the positions returned say where each is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use durq::KEY_BYTES_MAX;
use durq::Position;

use crate::atomic_batch::{self, BATCH_RECORDS_MAX, Reply};
use crate::error::Error;
use crate::record;
use crate::shared::Shared;

/// How long a send keeps publishing a record again while no
/// acknowledgement comes, before it reports the record as possibly stored.
/// Well inside the streams' duplicate window (`DUPLICATE_WINDOW`, 2 min),
/// and longer than the leader elections measured on a three-node cluster
/// (5 to 8 s).
pub const SEND_RETRY_WITHIN: Duration = Duration::from_secs(60);

/// The pause between two attempts at a record.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Records of one batch published before their acknowledgements are
/// awaited. The client holds at most 5,000 unacknowledged publishes per
/// connection; a window per batch keeps concurrent batches from waiting on
/// each other's permits.
const PIPELINE_DEPTH: usize = 64;

/// How long the first and the last record of an atomic batch wait for the
/// server's reply before the attempt counts as lost (and is made again:
/// see the module's documentation). Longer than a single publish's 5 s:
/// the commit stores the whole batch, with `sync_interval: always` a sync
/// per record (1,000 records took 0.1 to 3 s on the shared test machine,
/// about what as many pipelined single publishes take).
const BATCH_REPLY_WITHIN: Duration = Duration::from_secs(10);

/// Sends records into a NATS queue. `Clone + Send + Sync`; clones share the
/// message-id sequence.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    ids: Arc<MessageIds>,
    /// Batches go out as atomic batches (every partition's stream allows
    /// them).
    atomic_batches: bool,
    /// Records per atomic batch: [`BATCH_RECORDS_MAX`], halved when a
    /// server configured with a lower limit refuses a batch as too large.
    batch_records_max: Arc<AtomicUsize>,
}

/// Where the `Nats-Msg-Id`s of a producer come from.
struct MessageIds {
    producer: String,
    next: AtomicU64,
}

/// A record on its way: its key (if any) and payload.
struct Outgoing {
    key: Option<Bytes>,
    payload: Bytes,
}

/// A record with its message id, as it is published.
struct Record {
    id: String,
    key: Option<Bytes>,
    payload: Bytes,
    /// Key + payload, for [`durq::Error::RecordTooLarge`].
    bytes: usize,
}

/// What became of one atomic batch.
enum Committed {
    /// Stored, from this offset on.
    At(u64),
    /// Refused as more records than the server takes in one batch; nothing
    /// stored. The server's words.
    TooLarge(String),
}

/// Why an attempt at an atomic batch ended without the server's word on it.
enum Attempt {
    /// Lost on the way (no reply in time, no connection, no stream leader):
    /// another attempt may succeed.
    Lost(Error),
    /// A failure another attempt cannot outlast.
    Failed(durq::Error),
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>, atomic_batches: bool) -> Producer {
        let ids = MessageIds { producer: shared.client.unique_name(), next: AtomicU64::new(0) };
        Producer {
            shared,
            ids: Arc::new(ids),
            atomic_batches,
            batch_records_max: Arc::new(AtomicUsize::new(BATCH_RECORDS_MAX)),
        }
    }

    /// Appends one record to the next partition in round-robin order.
    ///
    /// # Errors
    /// [`durq::Error::RecordTooLarge`] (nothing was sent);
    /// [`durq::Error::Engine`] if no acknowledgement came within
    /// [`SEND_RETRY_WITHIN`] or the server refused the record (it may or may
    /// not be stored).
    pub fn send(&self, payload: impl AsRef<[u8]>) -> durq::Result<Position> {
        let partition = self.shared.next_partition();
        let records = vec![Outgoing { key: None, payload: Bytes::copy_from_slice(payload.as_ref()) }];
        self.shared.block_on(self.publish(partition, records)).map(single)
    }

    /// Appends one record with a key. Records with the same key go to the
    /// same partition, by the local queue's map ([`durq::partition_of_key`]),
    /// so a queue moved between backends keeps each key's records in order.
    ///
    /// # Errors
    /// As [`Producer::send`], and [`durq::Error::KeyTooLarge`].
    pub fn send_keyed(&self, key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> durq::Result<Position> {
        let (partition, records) = self.keyed(key.as_ref(), payload.as_ref());
        self.shared.block_on(self.publish(partition, records)).map(single)
    }

    /// Appends records to one partition (round-robin), in order. If any
    /// record is too large, nothing is sent.
    ///
    /// On nats-server [`ATOMIC_BATCH_SINCE`](crate::ATOMIC_BATCH_SINCE) and
    /// later, a batch of up to 1,000 records (the server's default limit)
    /// is atomic: all stored, at contiguous positions, or none, also if the
    /// producer dies mid-batch; a larger one is sent as consecutive atomic
    /// chunks of that size, so a failure leaves whole chunks. On older
    /// servers the records are published one by one, pipelined: a failure
    /// or crash leaves a prefix, and other producers' records may sit
    /// between them. See the module's documentation.
    ///
    /// # Errors
    /// As [`Producer::send`]; on an engine error, the records before the
    /// failed one (atomic: the chunks before the failed chunk) are stored.
    pub fn send_batch<I>(&self, payloads: I) -> durq::Result<Vec<Position>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let (partition, records) = self.batch(payloads);
        self.shared.block_on(self.publish(partition, records))
    }

    /// Returns at once: every send already waited for the server's
    /// acknowledgement, so nothing is left in this client. What an
    /// acknowledgement means on disk is the servers' `sync_interval`
    /// (docs/SCALE_OUT.md, "Durability"); the client cannot make a server
    /// sync sooner.
    ///
    /// # Errors
    /// None today; the signature is the local queue's.
    pub fn flush(&self) -> durq::Result<()> {
        Ok(())
    }

    /// [`Producer::send`] for async code.
    ///
    /// # Errors
    /// As [`Producer::send`].
    pub async fn send_async(&self, payload: impl AsRef<[u8]>) -> durq::Result<Position> {
        let partition = self.shared.next_partition();
        let records = vec![Outgoing { key: None, payload: Bytes::copy_from_slice(payload.as_ref()) }];
        self.publish_on_runtime(partition, records).await.map(single)
    }

    /// [`Producer::send_keyed`] for async code.
    ///
    /// # Errors
    /// As [`Producer::send_keyed`].
    pub async fn send_keyed_async(&self, key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> durq::Result<Position> {
        let (partition, records) = self.keyed(key.as_ref(), payload.as_ref());
        self.publish_on_runtime(partition, records).await.map(single)
    }

    /// [`Producer::send_batch`] for async code.
    ///
    /// # Errors
    /// As [`Producer::send_batch`].
    pub async fn send_batch_async<I>(&self, payloads: I) -> durq::Result<Vec<Position>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let (partition, records) = self.batch(payloads);
        self.publish_on_runtime(partition, records).await
    }

    /// [`Producer::flush`] for async code.
    ///
    /// # Errors
    /// As [`Producer::flush`].
    pub async fn flush_async(&self) -> durq::Result<()> {
        self.flush()
    }

    fn keyed(&self, key: &[u8], payload: &[u8]) -> (u32, Vec<Outgoing>) {
        let partition = durq::partition_of_key(key, self.shared.meta.partitions);
        let record = Outgoing { key: Some(Bytes::copy_from_slice(key)), payload: Bytes::copy_from_slice(payload) };
        (partition, vec![record])
    }

    fn batch<I>(&self, payloads: I) -> (u32, Vec<Outgoing>)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let records =
            payloads.into_iter().map(|p| Outgoing { key: None, payload: Bytes::copy_from_slice(p.as_ref()) }).collect();
        (self.shared.next_partition(), records)
    }

    async fn publish_on_runtime(&self, partition: u32, records: Vec<Outgoing>) -> durq::Result<Vec<Position>> {
        let producer = self.clone();
        self.shared.run(async move { producer.publish(partition, records).await }).await
    }

    /// Publishes `records` to `partition` in order and returns their
    /// positions once each is acknowledged.
    async fn publish(&self, partition: u32, records: Vec<Outgoing>) -> durq::Result<Vec<Position>> {
        let max = self.shared.meta.record_bytes_max;
        for r in &records {
            let key_bytes = r.key.as_ref().map_or(0, Bytes::len);
            if key_bytes > KEY_BYTES_MAX {
                return Err(durq::Error::KeyTooLarge { bytes: key_bytes, max: KEY_BYTES_MAX });
            }
            let bytes = key_bytes + r.payload.len();
            if bytes > max as usize {
                return Err(durq::Error::RecordTooLarge { bytes, max });
            }
        }
        let first_id = self.ids.next.fetch_add(records.len() as u64, Ordering::Relaxed);
        let records: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Record {
                id: record::message_id(&self.ids.producer, first_id + i as u64),
                bytes: r.key.as_ref().map_or(0, Bytes::len) + r.payload.len(),
                key: r.key,
                payload: r.payload,
            })
            .collect();
        let target = Target::new(&self.shared, partition);
        if self.atomic_batches && records.len() > 1 {
            self.publish_atomically(&target, &records).await
        } else {
            target.publish_pipelined(&records).await
        }
    }

    /// Publishes `records` as consecutive atomic batches of at most
    /// `batch_records_max` records, each after the one before is stored.
    async fn publish_atomically(&self, target: &Target<'_>, records: &[Record]) -> durq::Result<Vec<Position>> {
        let mut positions = Vec::with_capacity(records.len());
        let mut rest = records;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(self.batch_records_max.load(Ordering::Relaxed))];
            match target.publish_batch(chunk).await? {
                Committed::At(first) => {
                    let offsets = first..first + chunk.len() as u64;
                    positions.extend(offsets.map(|offset| Position { partition: target.partition, offset }));
                    rest = &rest[chunk.len()..];
                }
                Committed::TooLarge(_) if chunk.len() > 1 => {
                    self.batch_records_max.fetch_min(chunk.len() / 2, Ordering::Relaxed);
                }
                Committed::TooLarge(reason) => {
                    return Err(Error::engine(
                        format!("send a batch of 1 record to stream {} of queue {}", target.stream, self.shared.url),
                        reason,
                    )
                    .into());
                }
            }
        }
        Ok(positions)
    }
}

/// The stream a publish goes to, and what a failure there means.
struct Target<'a> {
    shared: &'a Shared,
    partition: u32,
    stream: String,
    subject: String,
}

impl Target<'_> {
    fn new(shared: &Shared, partition: u32) -> Target<'_> {
        let queue = &shared.url.name;
        Target {
            shared,
            partition,
            stream: record::stream_name(queue, partition),
            subject: record::subject(queue, partition),
        }
    }

    /// Publishes `records` one by one, in windows of [`PIPELINE_DEPTH`],
    /// and returns their positions once each is acknowledged.
    async fn publish_pipelined(&self, records: &[Record]) -> durq::Result<Vec<Position>> {
        let mut positions = Vec::with_capacity(records.len());
        for window in records.chunks(PIPELINE_DEPTH) {
            let messages: Vec<PublishMessage> = window.iter().map(Record::message).collect();
            let mut acks = Vec::with_capacity(window.len());
            for message in &messages {
                acks.push(self.send(message).await);
            }
            for ((message, record), ack) in messages.iter().zip(window).zip(acks) {
                let first_attempt = match ack {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                let ack = match first_attempt {
                    Ok(ack) => ack,
                    Err(e) => self.retry(message, record.bytes, e).await?,
                };
                positions.push(Position { partition: self.partition, offset: self.offset_of(&ack)? });
            }
        }
        Ok(positions)
    }

    /// Publishes `records` as one atomic batch, again (a new batch id, the
    /// same message ids) while attempts are lost and [`SEND_RETRY_WITHIN`]
    /// has not passed since the first was; see the module's documentation.
    async fn publish_batch(&self, records: &[Record]) -> durq::Result<Committed> {
        let mut deadline = None;
        loop {
            let lost = match self.attempt_batch(records).await {
                Ok(Reply::Committed { stream, last_sequence, count }) => {
                    if stream != self.stream || count != records.len() as u64 {
                        let reason =
                            format!("{count} records acknowledged by stream {stream} at sequence {last_sequence}");
                        return Err(self.batch_failed(records, reason).into());
                    }
                    return Ok(Committed::At(record::offset_of_sequence(last_sequence + 1 - count)));
                }
                Ok(Reply::Refused { code: atomic_batch::ERR_DUPLICATE_MESSAGE_ID, .. }) => {
                    return self.locate_batch(records).await.map(Committed::At);
                }
                Ok(Reply::Refused { code: atomic_batch::ERR_TOO_LARGE, description }) => {
                    return Ok(Committed::TooLarge(description));
                }
                Ok(Reply::Refused { code: atomic_batch::ERR_INCOMPLETE, description }) => {
                    self.batch_failed(records, description)
                }
                Ok(Reply::Refused { code, description }) => {
                    let reason = format!("refused ({code}: {description}); none of its records is stored");
                    return Err(self.batch_failed(records, reason).into());
                }
                Ok(Reply::Started) => {
                    return Err(self.batch_failed(records, "the commit was answered as a batch's start").into());
                }
                Err(Attempt::Lost(e)) => e,
                Err(Attempt::Failed(e)) => return Err(e),
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + SEND_RETRY_WITHIN);
            if Instant::now() >= deadline {
                return Err(lost.into());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One attempt at an atomic batch: the first record as a request (the
    /// server opens the batch), the middle ones without a reply, the last
    /// as a request whose reply is the server's word on the whole batch.
    async fn attempt_batch(&self, records: &[Record]) -> Result<Reply, Attempt> {
        let nats = self.shared.client.jetstream().client();
        let batch = self.shared.client.unique_name();
        let last = records.len() - 1;
        for (i, record) in records.iter().enumerate() {
            let mut headers = record.headers();
            atomic_batch::add_headers(&mut headers, &batch, i + 1, i == last);
            if i != 0 && i != last {
                nats.publish_with_headers(self.subject.clone(), headers, record.payload.clone()).await.map_err(
                    |e| match e.kind() {
                        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                            Attempt::Failed(self.too_large(record.bytes))
                        }
                        _ => Attempt::Lost(self.batch_failed(records, e)),
                    },
                )?;
                continue;
            }
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(record.payload.clone())
                .timeout(Some(BATCH_REPLY_WITHIN));
            let reply = nats.send_request(self.subject.clone(), request).await.map_err(|e| match e.kind() {
                RequestErrorKind::MaxPayloadExceeded => Attempt::Failed(self.too_large(record.bytes)),
                RequestErrorKind::InvalidSubject => Attempt::Failed(self.batch_failed(records, e).into()),
                RequestErrorKind::TimedOut | RequestErrorKind::NoResponders | RequestErrorKind::Other => {
                    Attempt::Lost(self.batch_failed(records, e))
                }
            })?;
            let reply =
                Reply::parse(&reply.payload).map_err(|e| Attempt::Failed(self.batch_failed(records, e).into()))?;
            if i == last || reply != Reply::Started {
                return Ok(reply);
            }
        }
        unreachable!("the last record's reply returns")
    }

    /// The offset of the first record of a batch an earlier attempt stored:
    /// its last record published alone, with its id, is acknowledged as a
    /// duplicate at the stored copy's sequence.
    async fn locate_batch(&self, records: &[Record]) -> durq::Result<u64> {
        let last = records.last().expect("a batch has records");
        let message = last.message();
        let first_attempt = match self.send(&message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let ack = match first_attempt {
            Ok(ack) => ack,
            Err(e) => self.retry(&message, last.bytes, e).await?,
        };
        let last_offset = self.offset_of(&ack)?;
        let count = records.len() as u64;
        if !ack.duplicate || last_offset + 1 < count {
            let reason = format!(
                "refused as holding a stored message id, but its last record was not stored before: it now is, \
                 alone, at offset {last_offset} (duplicate: {})",
                ack.duplicate
            );
            return Err(self.batch_failed(records, reason).into());
        }
        Ok(last_offset + 1 - count)
    }

    fn batch_failed(&self, records: &[Record], reason: impl Into<crate::ClientError>) -> Error {
        Error::engine(
            format!(
                "send an atomic batch of {} records to stream {} of queue {} (unless said otherwise, it may or may \
                 not be stored, whole)",
                records.len(),
                self.stream,
                self.shared.url
            ),
            reason,
        )
    }

    fn too_large(&self, bytes: usize) -> durq::Error {
        // The key's escaping or the batch's headers pushed the message past
        // max_payload.
        durq::Error::RecordTooLarge { bytes, max: self.shared.meta.record_bytes_max }
    }

    async fn send(&self, message: &PublishMessage) -> Result<PublishAckFuture, PublishError> {
        self.shared.client.jetstream().send_publish(self.subject.clone(), message.clone()).await
    }

    /// Publishes `message` again, with its id, while the failures are ones
    /// a retry can outlast and [`SEND_RETRY_WITHIN`] has not passed.
    async fn retry(&self, message: &PublishMessage, bytes: usize, mut error: PublishError) -> durq::Result<PublishAck> {
        let deadline = Instant::now() + SEND_RETRY_WITHIN;
        loop {
            if !may_outlast(&error) || Instant::now() >= deadline {
                return Err(self.failed(bytes, error));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            let attempt = match self.send(message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(ack) => return Ok(ack),
                Err(e) => error = e,
            }
        }
    }

    fn failed(&self, bytes: usize, error: PublishError) -> durq::Error {
        if error.kind() == PublishErrorKind::MaxPayloadExceeded {
            return self.too_large(bytes);
        }
        // A refusal (the stream's answer is an error: a full store, a
        // limit) is final and was not retried; anything else is a send
        // whose acknowledgement never came.
        let what = if refused(&error) {
            "refused by the server; a refusal is not retried"
        } else {
            "no acknowledgement: the record may or may not be stored"
        };
        Error::engine(format!("send to stream {} of queue {} ({what})", self.stream, self.shared.url), error).into()
    }

    /// The offset of the acknowledged record, after checking that the
    /// acknowledgement is from the partition's stream.
    fn offset_of(&self, ack: &PublishAck) -> durq::Result<u64> {
        if ack.stream != self.stream || ack.sequence == 0 {
            let reason = format!("acknowledged by stream {} at sequence {}", ack.stream, ack.sequence);
            return Err(
                Error::engine(format!("send to stream {} of queue {}", self.stream, self.shared.url), reason).into()
            );
        }
        Ok(record::offset_of_sequence(ack.sequence))
    }
}

/// True for failures that end when a connection comes back or a stream
/// leader is elected: no reply in time, a lost connection, nobody answering
/// the subject (no leader yet). A refusal by the stream is final.
fn may_outlast(error: &PublishError) -> bool {
    matches!(error.kind(), PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound)
}

/// True when the stream answered the publish with an error (its reason
/// is the source: "insufficient resources" past the server's
/// `max_file_store`, "no space left on device" from a full disk).
fn refused(error: &PublishError) -> bool {
    std::error::Error::source(error).is_some_and(|source| source.is::<async_nats::jetstream::Error>())
}

impl Record {
    /// The record as a single publish.
    fn message(&self) -> PublishMessage {
        let mut message = PublishMessage::build().message_id(&self.id).payload(self.payload.clone());
        if let Some(key) = &self.key {
            message = message.header(record::KEY_HEADER, record::encode_key(key));
        }
        message
    }

    /// The record's headers, to which a batch adds its own.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, self.id.as_str());
        if let Some(key) = &self.key {
            headers.insert(record::KEY_HEADER, record::encode_key(key).as_str());
        }
        headers
    }
}

fn single(mut positions: Vec<Position>) -> Position {
    assert_eq!(positions.len(), 1, "one record sent, one position");
    positions.pop().expect("one position")
}

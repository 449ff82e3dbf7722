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
//! **`send_batch` is not atomic** on nats-server 2.10 (atomic batch publish
//! comes with 2.12): its records are published one after another to one
//! partition, pipelined, and acknowledged one by one. What a crash of the
//! producer between two records leaves is a prefix of the batch, in order;
//! other producers' records may sit between the batch's records, so the
//! positions are increasing but not always contiguous. A record whose
//! acknowledgement was lost is sent again after those behind it were
//! stored, so a leader change in the middle of a batch can leave that
//! record after its successors: the positions returned say where each is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use durq::KEY_BYTES_MAX;
use durq::Position;

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

/// Sends records into a NATS queue. `Clone + Send + Sync`; clones share the
/// message-id sequence.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    ids: Arc<MessageIds>,
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

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>) -> Producer {
        let ids = MessageIds { producer: shared.client.unique_name(), next: AtomicU64::new(0) };
        Producer { shared, ids: Arc::new(ids) }
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

    /// Appends records to one partition (round-robin), in order. Not atomic
    /// on this server release: see the module's documentation. If any record
    /// is too large, nothing is sent.
    ///
    /// # Errors
    /// As [`Producer::send`]; on an engine error, the records before the
    /// failed one are stored.
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
        let messages: Vec<(PublishMessage, usize)> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut message = PublishMessage::build()
                    .message_id(record::message_id(&self.ids.producer, first_id + i as u64))
                    .payload(r.payload.clone());
                if let Some(key) = &r.key {
                    message = message.header(record::KEY_HEADER, record::encode_key(key));
                }
                (message, r.key.map_or(0, |k| k.len()) + r.payload.len())
            })
            .collect();
        let target = Target::new(&self.shared, partition);
        let mut positions = Vec::with_capacity(messages.len());
        for window in messages.chunks(PIPELINE_DEPTH) {
            let mut acks = Vec::with_capacity(window.len());
            for (message, _) in window {
                acks.push(target.send(message).await);
            }
            for ((message, bytes), ack) in window.iter().zip(acks) {
                let first_attempt = match ack {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                let ack = match first_attempt {
                    Ok(ack) => ack,
                    Err(e) => target.retry(message, *bytes, e).await?,
                };
                positions.push(Position { partition, offset: target.offset_of(&ack)? });
            }
        }
        Ok(positions)
    }
}

/// The stream a publish goes to, and what a failure there means.
struct Target<'a> {
    shared: &'a Shared,
    stream: String,
    subject: String,
}

impl Target<'_> {
    fn new(shared: &Shared, partition: u32) -> Target<'_> {
        let queue = &shared.url.name;
        Target { shared, stream: record::stream_name(queue, partition), subject: record::subject(queue, partition) }
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
            // The key's escaping or the server's own limit pushed the
            // message past max_payload.
            return durq::Error::RecordTooLarge { bytes, max: self.shared.meta.record_bytes_max };
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

fn single(mut positions: Vec<Position>) -> Position {
    assert_eq!(positions.len(), 1, "one record sent, one position");
    positions.pop().expect("one position")
}

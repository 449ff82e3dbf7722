//! A group's dead-letter stream: where a record goes that failed
//! `max_deliveries` times or was given [`durq::Verdict::DeadLetter`], before
//! the group's checkpoint passes it; listed and replayed by
//! [`crate::Queue::dead_letters`] and [`crate::Queue::replay_dead_letters`].
//!
//! Group `G` of queue `Q` has the stream `DURQ_Q_DLQ_G` (subject
//! `durq.Q.dlq.G`), created on its first dead letter, file storage, with the
//! queue's replicas. A dead letter is the record's payload, byte for byte,
//! with headers:
//!
//! | header | value |
//! |---|---|
//! | `Durq-Key` | the record's key, encoded as in the partition streams (absent if none) |
//! | `Durq-Partition`, `Durq-Offset` | where the record is in the queue |
//! | `Durq-Timestamp-Ms` | when the record was appended, ms since the Unix epoch |
//! | `Durq-Deliveries` | deliveries before it was given up on |
//! | `Durq-Reason` | why, cut to [`REASON_BYTES_MAX`] bytes, encoded as a key is |
//! | `Nats-Msg-Id` | `<partition>-<offset>-<epoch>`: a holder that publishes it again (its commit failed) stores it once |
//!
//! The publish is acknowledged (stored under the queue's durability) before
//! the checkpoint moves past the record. A crash in between makes the next
//! holder publish it again under its own epoch: a second dead letter of the
//! same record, never none.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, StorageType};
use durq::{DeadLetter, Position};

use crate::connect::Client;
use crate::error::Error;
use crate::queue::DUPLICATE_WINDOW;
use crate::reader::Record;
use crate::record;
use crate::shared::Shared;

/// The longest reason kept with a dead letter: it travels in a header, within
/// the room the queue keeps for headers (`HEADER_ROOM_BYTES`).
pub const REASON_BYTES_MAX: usize = 512;

const PARTITION_HEADER: &str = "Durq-Partition";
const OFFSET_HEADER: &str = "Durq-Offset";
const TIMESTAMP_HEADER: &str = "Durq-Timestamp-Ms";
const DELIVERIES_HEADER: &str = "Durq-Deliveries";
const REASON_HEADER: &str = "Durq-Reason";

/// A group's dead-letter stream, as its consumer publishes to it.
pub(crate) struct DeadLetters {
    group: String,
    stream: String,
    subject: String,
    /// Whether this consumer has made sure the stream exists.
    created: bool,
}

/// The stream of group `group`'s dead letters.
pub(crate) fn stream_name(queue: &str, group: &str) -> String {
    format!("DURQ_{queue}_DLQ_{group}")
}

/// The subject of group `group`'s dead letters.
pub(crate) fn subject(queue: &str, group: &str) -> String {
    format!("durq.{queue}.dlq.{group}")
}

impl DeadLetters {
    pub(crate) fn new(shared: &Shared, group: &str) -> DeadLetters {
        let queue = &shared.url.name;
        DeadLetters {
            group: group.to_owned(),
            stream: stream_name(queue, group),
            subject: subject(queue, group),
            created: false,
        }
    }

    /// Publishes `record` as a dead letter and waits for its
    /// acknowledgement. `epoch` makes a repeat by the same holder one copy.
    pub(crate) async fn publish(
        &mut self,
        shared: &Arc<Shared>,
        record: &Record,
        epoch: u64,
        deliveries: u32,
        reason: &str,
    ) -> durq::Result<()> {
        if !self.created {
            create_stream(&shared.client, &shared.url.name, &self.group, usize::from(shared.meta.replicas)).await?;
            self.created = true;
        }
        let Position { partition, offset } = record.position;
        let mut headers = headers(record.key.as_deref(), record.position, record.timestamp_ms, deliveries, reason);
        headers.insert("Nats-Msg-Id", format!("{partition}-{offset}-{epoch}").as_str());
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            Error::engine(format!("publish the dead letter of {partition}/{offset} to {}", self.stream), e)
        };
        let ack = shared
            .client
            .jetstream()
            .publish_with_headers(self.subject.clone(), headers, record.payload.clone())
            .await
            .map_err(|e| failed(e.into()))?;
        ack.await.map_err(|e| failed(e.into()))?;
        Ok(())
    }
}

/// Creates the dead-letter stream of group `group` of queue `queue`, with
/// `replicas` copies, or finds it as it is.
///
/// # Errors
/// [`durq::Error::Engine`] if the request fails, or the stream exists with
/// other settings.
pub(crate) async fn create_stream(client: &Client, queue: &str, group: &str, replicas: usize) -> durq::Result<()> {
    let name = stream_name(queue, group);
    let config = stream::Config {
        name: name.clone(),
        description: Some(format!("durq queue {queue}: dead letters")),
        subjects: vec![subject(queue, group)],
        storage: StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    client
        .jetstream()
        .create_stream(config)
        .await
        .map_err(|e| Error::engine(format!("create dead-letter stream {name}"), e))?;
    Ok(())
}

/// The headers of a dead letter (the table in the module's documentation),
/// all but its `Nats-Msg-Id`, which says who published it.
pub(crate) fn headers(
    key: Option<&[u8]>,
    original: Position,
    timestamp_ms: u64,
    deliveries: u32,
    reason: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        headers.insert(record::KEY_HEADER, record::encode_key(key).as_str());
    }
    headers.insert(PARTITION_HEADER, original.partition.to_string().as_str());
    headers.insert(OFFSET_HEADER, original.offset.to_string().as_str());
    headers.insert(TIMESTAMP_HEADER, timestamp_ms.to_string().as_str());
    headers.insert(DELIVERIES_HEADER, deliveries.to_string().as_str());
    headers.insert(REASON_HEADER, record::encode_key(cut(reason).as_bytes()).as_str());
    headers
}

/// The dead letters of `group` not yet replayed, oldest first, up to `max`.
pub(crate) async fn list(shared: &Shared, group: &str, max: usize) -> durq::Result<Vec<DeadLetter>> {
    let mut letters = Vec::new();
    let Some(stream) = open(shared, group).await? else { return Ok(letters) };
    let name = stream_name(&shared.url.name, group);
    let (first, last) = bounds(&stream, &name).await?;
    for sequence in first..=last {
        if letters.len() >= max {
            break;
        }
        if let Some(letter) = read(&stream, &name, sequence).await? {
            letters.push(letter);
        }
    }
    Ok(letters)
}

/// Sends every dead letter of `group` back into the queue (with its key),
/// and removes each from the dead-letter stream only after its re-send was
/// acknowledged. Returns how many were replayed. Blocking: the sends are
/// the producer's.
pub(crate) fn replay(shared: &Shared, producer: &crate::Producer, group: &str) -> durq::Result<u64> {
    let Some(stream) = shared.block_on(open(shared, group))? else { return Ok(0) };
    let name = stream_name(&shared.url.name, group);
    let (first, last) = shared.block_on(bounds(&stream, &name))?;
    let mut replayed = 0;
    for sequence in first..=last {
        let Some(letter) = shared.block_on(read(&stream, &name, sequence))? else { continue };
        match &letter.key {
            Some(key) => producer.send_keyed(key, &letter.payload)?,
            None => producer.send(&letter.payload)?,
        };
        shared
            .block_on(stream.delete_message(sequence))
            .map_err(|e| Error::engine(format!("remove dead letter {sequence} from {name}"), e))?;
        replayed += 1;
    }
    Ok(replayed)
}

/// Deletes the dead-letter stream of `group`, if it exists.
pub(crate) async fn delete(shared: &Shared, group: &str) -> durq::Result<()> {
    let name = stream_name(&shared.url.name, group);
    if open(shared, group).await?.is_some() {
        shared
            .client
            .jetstream()
            .delete_stream(&name)
            .await
            .map_err(|e| Error::engine(format!("delete dead-letter stream {name}"), e))?;
    }
    Ok(())
}

async fn open(shared: &Shared, group: &str) -> durq::Result<Option<stream::Stream>> {
    let name = stream_name(&shared.url.name, group);
    match shared.client.jetstream().get_stream(&name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            Ok(None)
        }
        Err(e) => Err(Error::engine(format!("look up dead-letter stream {name}"), e).into()),
    }
}

/// The first and last sequence stored now (first > last when empty).
async fn bounds(stream: &stream::Stream, name: &str) -> durq::Result<(u64, u64)> {
    let info = stream.get_info().await.map_err(|e| Error::engine(format!("read the state of {name}"), e))?;
    Ok((info.state.first_sequence.max(1), info.state.last_sequence))
}

/// The dead letter at `sequence`, or `None` if it was removed (replayed).
async fn read(stream: &stream::Stream, name: &str, sequence: u64) -> durq::Result<Option<DeadLetter>> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let message = match stream.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(Error::engine(format!("read dead letter {sequence} of {name}"), e).into()),
    };
    let bad = |reason: String| Error::BadRecord { stream: name.to_owned(), sequence, reason };
    let header = |h: &str| message.headers.get(h).map(|v| v.as_str().to_owned());
    let number = |h: &str| -> Result<u64, Error> {
        header(h).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("header {h} is missing or not a number")))
    };
    let decoded = |h: &str| -> Result<Option<Vec<u8>>, Error> {
        header(h).map(|v| record::decode_key(&v).ok_or_else(|| bad(format!("header {h} does not decode")))).transpose()
    };
    let partition = u32::try_from(number(PARTITION_HEADER)?).map_err(|_| bad("partition out of range".into()))?;
    let reason = decoded(REASON_HEADER)?.map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
    Ok(Some(DeadLetter {
        dlq_offset: record::offset_of_sequence(sequence),
        original: Position { partition, offset: number(OFFSET_HEADER)? },
        timestamp_ms: number(TIMESTAMP_HEADER)?,
        failed_at_ms: u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        deliveries: u32::try_from(number(DELIVERIES_HEADER)?).unwrap_or(u32::MAX),
        reason,
        key: decoded(record::KEY_HEADER)?,
        payload: message.payload.to_vec(),
    }))
}

/// `reason` cut to [`REASON_BYTES_MAX`] bytes, at a character boundary.
fn cut(reason: &str) -> &str {
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

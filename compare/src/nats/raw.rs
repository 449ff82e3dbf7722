//! The raw async-nats side: a stream of the kind durq-nats makes for one
//! partition, reached without durq.

use async_nats::jetstream::{self, kv, stream};

use crate::common::Result;

pub const STREAM: &str = "RAW";
pub const SUBJECT: &str = "raw.0";

/// How long a raw publish waits for its acknowledgement: longer than the
/// client's 5 s default, which a preload's window of outstanding publishes
/// outlasted on the loaded test machine (each is an fsync on the server).
const ACK_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects to `url` and creates the stream: file storage, one replica, the
/// duplicate window durq-nats sets (`durq_nats::DUPLICATE_WINDOW`).
pub async fn stream(url: &str) -> Result<jetstream::Context> {
    let mut jetstream = jetstream::new(async_nats::connect(url).await?);
    jetstream.set_timeout(ACK_WITHIN);
    jetstream
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![SUBJECT.to_owned()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: durq_nats::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await?;
    Ok(jetstream)
}

/// Publishes `payload` and waits for its acknowledgement; with `id`, the
/// message carries `Nats-Msg-Id: <a NUID-long prefix>-<id>`, as long as the
/// ids durq-nats sends.
pub async fn publish(jetstream: &jetstream::Context, payload: &[u8], id: Option<String>) -> Result<()> {
    let payload = bytes::Bytes::copy_from_slice(payload);
    match id {
        None => jetstream.publish(SUBJECT, payload).await?.await?,
        Some(id) => {
            let message =
                jetstream::message::PublishMessage::build().message_id(format!("{ID_PREFIX}-{id}")).payload(payload);
            jetstream.send_publish(SUBJECT, message).await?.await?
        }
    };
    Ok(())
}

/// Stands in for a producer's NUID (22 characters) in raw message ids.
const ID_PREFIX: &str = "rawbenchrawbenchrawben";

/// Publishes `count` records of `payload` bytes, stamped 0.., up to
/// [`PRELOAD_WINDOW`] acknowledgements outstanding at a time (the preload of a consume run;
/// not timed). With `ids`, each carries a `Nats-Msg-Id` as long as
/// durq-nats's, so the records read are the same messages durq-nats reads.
pub async fn preload(jetstream: &jetstream::Context, count: u64, payload: usize, ids: bool) -> Result<()> {
    let mut buf = crate::common::payload(payload);
    let mut n = 0;
    while n < count {
        let mut acks = Vec::new();
        while n < count && acks.len() < PRELOAD_WINDOW {
            crate::common::stamp(&mut buf, n);
            let payload = bytes::Bytes::copy_from_slice(&buf);
            acks.push(if ids {
                let message =
                    jetstream::message::PublishMessage::build().message_id(format!("{ID_PREFIX}-{n}")).payload(payload);
                jetstream.send_publish(SUBJECT, message).await?
            } else {
                jetstream.publish(SUBJECT, payload).await?
            });
            n += 1;
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

const PRELOAD_WINDOW: usize = 256;

/// A reader of the stream from its first record: an ordered consumer (no
/// acknowledgements; the client recreates it at the next sequence if a
/// message is missed).
pub async fn reader(jetstream: &jetstream::Context) -> Result<jetstream::consumer::pull::Ordered> {
    let consumer = jetstream
        .get_stream(STREAM)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// The durable consumer [`acking_reader`] creates.
const ACKING_CONSUMER: &str = "raw_group";

/// A reader of the stream from its first record that must acknowledge each:
/// a durable pull consumer (the server keeps its acknowledged position, as
/// a durq-nats group's slot does) with explicit acknowledgements.
pub async fn acking_reader(jetstream: &jetstream::Context) -> Result<jetstream::consumer::pull::Stream> {
    let consumer = jetstream
        .get_stream(STREAM)
        .await?
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(ACKING_CONSUMER.to_owned()),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// The key-value bucket that holds a raw group's position.
const GROUP_BUCKET: &str = "raw_group";

/// The key of the one partition's position in [`group_positions`].
pub const POSITION_KEY: &str = "p0";

/// A raw group's position as durq-nats keeps a group's slots: a key-value
/// bucket of file storage, one replica, history 1 (so every write is synced
/// under `sync_interval: always`, as a slot's is), with the partition's key
/// created at 0. Returns the bucket and the key's revision, which each
/// compare-and-set expects.
pub async fn group_positions(jetstream: &jetstream::Context) -> Result<(kv::Store, u64)> {
    let positions = jetstream
        .create_key_value(kv::Config {
            bucket: GROUP_BUCKET.to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    let revision = positions.create(POSITION_KEY, 0u64.to_le_bytes().to_vec().into()).await?;
    Ok((positions, revision))
}

/// The number [`crate::common::stamp`] wrote into a payload.
pub fn stamped(payload: &[u8]) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&payload[..8]);
    u64::from_le_bytes(n)
}

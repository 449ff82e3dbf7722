//! A durq queue on NATS JetStream, opened by URL and name with the local
//! queue's [`durq::Options`].
//!
//! A queue `Q` of `P` partitions is `P` streams (`DURQ_Q_P0000` …, see
//! `record.rs`) and one meta entry, the key `Q` of the key-value bucket
//! [`META_BUCKET`] (layout in `queue_meta.rs`). Opening:
//!
//! 1. If the meta entry exists, it is the queue: the options the caller set
//!    are checked against it ([`durq::Error::OptionsConflict`]) and each
//!    partition's stream must exist ([`Error::MissingStream`]; a lost
//!    stream is never created again, which would restart its offsets at 0).
//! 2. Otherwise the queue is created: every partition's stream, each
//!    creation idempotent (the server accepts a stream that exists with the
//!    same configuration), and the meta entry **last**, by a create that
//!    fails if the key exists. A queue whose streams exist without a meta
//!    entry is half-created (its creator stopped), and the next open
//!    finishes it. When two openers race, the first meta entry wins and the
//!    other is checked against it.
//!
//! **Atomic batches, where the server has them.** On a server of
//! [`ATOMIC_BATCH_SINCE`] or later, new partition streams are created with
//! `allow_atomic` (atomic batch publish), and an existing queue's streams
//! that lack it (created under an older server) get it by a stream update
//! at [`Queue::open`]: the same configuration with the one setting added,
//! idempotent, and harmless to everything else durq does with the stream
//! (ADR-50: the setting may be turned on and off by updates). `open_existing`
//! (for looking at a queue) changes nothing. The queue's producers send
//! atomic batches only if **every** partition's stream, as the server
//! reports its configuration back, allows them; else pipelined publishes,
//! as on older servers (`producer.rs`). A queue half-created by an older
//! durq or server (streams without the setting and no meta entry) is
//! refused as a stream with another configuration, as before.
//!
//! **The blocking API runs on a runtime of its own.** The NATS client is
//! async; a [`Queue`] owns a one-thread tokio runtime that drives the
//! connection, and each blocking call waits on it. Called from inside an
//! async runtime (where tokio refuses a `block_on`), a blocking call runs
//! its work on a thread of its own and blocks the caller's thread, as the
//! local queue's blocking calls do there: it works, but stalls that
//! runtime thread, so use the `_async` forms in async code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream::{self, StorageType};
use durq::{Durability, Options};

use crate::connect::{Client, connect};
use crate::error::Error;
use crate::producer::Producer;
use crate::queue_meta::QueueMeta;
use crate::queue_url::QueueUrl;
use crate::record;
use crate::shared::{ClientRuntime, Shared};
use crate::slot::{publish_not_answered, while_not_there};
use crate::version::ATOMIC_BATCH_SINCE;

/// The key-value bucket of every queue's meta entry (key: the queue's name).
pub const META_BUCKET: &str = "DURQ_QUEUES";

/// The meta bucket's limit on a stored entry, headers included: room for
/// the 23-byte value and a compare-and-set header, not for anything else.
const META_VALUE_BYTES_MAX: i32 = 256;

/// How long the streams remember a message id (`Nats-Msg-Id`): a send
/// retried within it, with the same id, is not stored twice. Two minutes,
/// the server's default, set explicitly so it is part of the queue's
/// configuration and longer than a producer retries (`SEND_RETRY_WITHIN`).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The part of the server's `max_payload` kept for durq's headers
/// (`Nats-Msg-Id` and the header block's framing): `record_bytes_max` is at
/// most `max_payload` minus this.
pub const HEADER_ROOM_BYTES: usize = 1024;

/// A queue on NATS JetStream. `Clone + Send + Sync`; clones share one
/// connection and runtime.
///
/// ```no_run
/// # fn main() -> Result<(), durq::Error> {
/// let queue = durq_nats::Queue::open_with(
///     "nats://127.0.0.1:4222/orders",
///     durq::Options::default().partitions(4),
/// )?;
/// let position = queue.producer().send(b"order 1: 100 yuan")?;
/// println!("stored at partition {} offset {}", position.partition, position.offset);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
    /// Every partition's stream allows atomic batch publish.
    atomic_batches: bool,
}

impl Queue {
    /// Opens the queue at `url` (`nats://host:port/QUEUE`, or
    /// `nats://host1:port1,host2:port2/QUEUE` for a cluster), creating it
    /// with default options if it does not exist.
    ///
    /// # Errors
    /// As [`Queue::open_with`].
    pub fn open(url: &str) -> durq::Result<Queue> {
        Queue::open_with(url, Options::default())
    }

    /// Opens the queue at `url`, creating it with `options` if it does not
    /// exist; on an existing queue, the options the caller set must match
    /// the stored ones. Options without meaning on NATS (`segment_bytes`)
    /// are not used.
    ///
    /// # Errors
    /// - [`durq::Error::OptionsConflict`] (its `path` is `url`), or
    ///   [`durq::Error::InvalidOption`] for an option out of range or a
    ///   `record_bytes_max` the server's `max_payload` cannot carry;
    /// - [`durq::Error::Engine`] with a [`crate::Error`]: a malformed
    ///   address or queue name ([`Error::InvalidName`]), no server, a
    ///   too-old one, one without JetStream, a missing stream or a damaged
    ///   meta entry, a failed request.
    pub fn open_with(url: &str, options: Options) -> durq::Result<Queue> {
        let runtime = ClientRuntime::start()?;
        let opened = runtime.get().block_on(open_on_runtime(url, options, Create::IfMissing));
        opened.map(|opened| Queue::new(runtime, opened))
    }

    /// Opens the queue at `url`, which must exist: never creates one (for
    /// looking at a queue, where a typo must not create an empty one).
    ///
    /// # Errors
    /// [`durq::Error::NotAQueue`] (its `path` is `url`) if the server has no
    /// such queue; otherwise as [`Queue::open_with`].
    pub fn open_existing(url: &str) -> durq::Result<Queue> {
        let runtime = ClientRuntime::start()?;
        let opened = runtime.get().block_on(open_on_runtime(url, Options::default(), Create::Never));
        opened.map(|opened| Queue::new(runtime, opened))
    }

    /// [`Queue::open_with`] for async code.
    ///
    /// # Errors
    /// As [`Queue::open_with`].
    pub async fn open_async(url: &str, options: Options) -> durq::Result<Queue> {
        let runtime = ClientRuntime::start()?;
        let opening = runtime.get().spawn(open_on_runtime(url.to_owned(), options, Create::IfMissing));
        let opened = opening.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(Queue::new(runtime, opened))
    }

    fn new(runtime: ClientRuntime, opened: Opened) -> Queue {
        let Opened { client, url, meta, atomic_batches } = opened;
        Queue { shared: Arc::new(Shared::new(runtime, client, url, meta)), atomic_batches }
    }

    /// What the queue's handles share.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A producer for this queue.
    pub fn producer(&self) -> Producer {
        Producer::new(self.shared.clone(), self.atomic_batches)
    }

    /// The queue's address, `nats://host:port/QUEUE`.
    pub fn url(&self) -> String {
        self.shared.url.to_string()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.url.name
    }

    /// Number of partitions (fixed at creation).
    pub fn partitions(&self) -> u32 {
        self.shared.meta.partitions
    }

    /// What an acknowledgement means (docs/SCALE_OUT.md, "Durability").
    pub fn durability(&self) -> Durability {
        self.shared.meta.durability
    }

    /// Largest key + payload of one record.
    pub fn record_bytes_max(&self) -> u32 {
        self.shared.meta.record_bytes_max
    }

    /// Copies of each of the queue's streams.
    pub fn replicas(&self) -> u8 {
        self.shared.meta.replicas
    }
}

/// Whether opening a queue that does not exist creates it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    IfMissing,
    Never,
}

/// What opening found: the connection, the queue and whether its streams
/// all allow atomic batches.
struct Opened {
    client: Client,
    url: QueueUrl,
    meta: QueueMeta,
    atomic_batches: bool,
}

/// Connects and opens (or creates) the queue; see the module's steps.
async fn open_on_runtime(url: impl AsRef<str>, options: Options, create: Create) -> durq::Result<Opened> {
    let url = QueueUrl::parse(url.as_ref())?;
    let client = connect(&url.servers).await?;
    let replicas: u8 = if client.clustered() { 3 } else { 1 };
    let metas = open_meta_bucket(&client, replicas).await?;
    if let Some(stored) = read_meta(&metas, &url).await? {
        check_conflicts(&url, &options, &stored)?;
        let atomic_batches = check_streams(&client, &url, &stored, create).await?;
        return Ok(Opened { client, url, meta: stored, atomic_batches });
    }
    if create == Create::Never {
        return Err(durq::Error::NotAQueue {
            path: PathBuf::from(url.to_string()),
            reason: format!("the server has no queue {:?} (no entry in {META_BUCKET})", url.name),
        });
    }
    let meta = resolve(&client, &options, replicas)?;
    let mut atomic_batches = true;
    for partition in 0..meta.partitions {
        atomic_batches &= create_stream(&client, &url, &meta, partition, None).await?;
    }
    // Repeating the create is safe: one that took effect makes the next
    // `AlreadyExists`, and the entry read then is this one.
    let create = || metas.create(&url.name, meta.encode().into());
    match while_not_there(create, |e| publish_not_answered(e)).await.map_err(|(e, _)| e) {
        Ok(_) => Ok(Opened { client, url, meta, atomic_batches }),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            // Another opener wrote it between our read and create.
            let stored = read_meta(&metas, &url).await?.ok_or_else(|| {
                Error::engine(format!("read the meta entry of queue {url}"), "it exists and then it does not")
            })?;
            check_conflicts(&url, &options, &stored)?;
            // Its streams are the ones created above (same names).
            Ok(Opened { client, url, meta: stored, atomic_batches })
        }
        Err(e) => Err(Error::engine(format!("write the meta entry of queue {url}"), e).into()),
    }
}

pub(crate) async fn open_meta_bucket(client: &Client, replicas: u8) -> Result<kv::Store, Error> {
    let config = kv::Config {
        bucket: META_BUCKET.to_owned(),
        description: "durq queues: what each was created with".to_owned(),
        history: 1,
        // The server counts a write's headers (the compare-and-set's
        // expected revision) against this limit too.
        max_value_size: META_VALUE_BYTES_MAX,
        storage: StorageType::File,
        num_replicas: usize::from(replicas),
        ..Default::default()
    };
    // Openers at the same instant on a fresh cluster: only the first
    // creator's reply waits for the bucket's stream to have a leader.
    let create = || client.jetstream().create_key_value(config.clone());
    while_not_there(create, |e| e.kind() == CreateKeyValueErrorKind::TimedOut).await.map_err(|(e, waited)| {
        Error::engine(format!("create key-value bucket {META_BUCKET} ({replicas} replicas){waited}"), e)
    })
}

/// The queue's meta entry, or `None` if it has none (never created, or
/// half-created).
pub(crate) async fn read_meta(metas: &kv::Store, url: &QueueUrl) -> Result<Option<QueueMeta>, Error> {
    // A bucket another opener has just created may not answer yet.
    let entry = while_not_there(|| metas.entry(&url.name), |e| e.kind() == kv::EntryErrorKind::TimedOut)
        .await
        .map_err(|(e, waited)| Error::engine(format!("read the meta entry of queue {url}{waited}"), e))?;
    let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    QueueMeta::decode(&entry.value).map(Some).map_err(|e| Error::CorruptMeta {
        queue: url.name.clone(),
        bucket: META_BUCKET.to_owned(),
        revision: entry.revision,
        position: e.position,
        reason: e.reason,
    })
}

/// The meta a new queue gets: the caller's options, durq's defaults and
/// ranges, and a `record_bytes_max` that fits the server's `max_payload`.
pub(crate) fn resolve(client: &Client, options: &Options, replicas: u8) -> durq::Result<QueueMeta> {
    let config = options.resolve()?;
    let max_payload = client.max_payload();
    let room = u32::try_from(max_payload.saturating_sub(HEADER_ROOM_BYTES)).unwrap_or(u32::MAX);
    let record_bytes_max = match options.requested_record_bytes_max() {
        Some(asked) if asked > room => {
            return Err(durq::Error::InvalidOption {
                option: "record_bytes_max",
                reason: format!(
                    "{asked} bytes do not fit the NATS server's max_payload of {max_payload} bytes with durq's \
                     {HEADER_ROOM_BYTES} bytes of headers: ask for at most {room}, or raise max_payload on the \
                     servers"
                ),
            });
        }
        Some(asked) => asked,
        None => config.record_bytes_max.min(room),
    };
    Ok(QueueMeta { partitions: config.partitions, durability: config.durability, record_bytes_max, replicas })
}

fn check_conflicts(url: &QueueUrl, options: &Options, stored: &QueueMeta) -> durq::Result<()> {
    fn check<T: PartialEq + std::fmt::Display>(
        url: &QueueUrl,
        option: &'static str,
        asked: Option<T>,
        stored: T,
    ) -> durq::Result<()> {
        match asked {
            Some(asked) if asked != stored => Err(durq::Error::OptionsConflict {
                path: PathBuf::from(url.to_string()),
                option,
                stored: stored.to_string(),
                requested: asked.to_string(),
            }),
            _ => Ok(()),
        }
    }
    check(url, "partitions", options.requested_partitions(), stored.partitions)?;
    check(url, "durability", options.requested_durability(), stored.durability)?;
    check(url, "record_bytes_max", options.requested_record_bytes_max(), stored.record_bytes_max)
}

/// Checks that every partition's stream exists, and returns whether all
/// allow atomic batches: on a server that has them, a stream without the
/// setting gets it by an update unless `create` is `Never` (see the module's
/// documentation).
async fn check_streams(client: &Client, url: &QueueUrl, meta: &QueueMeta, create: Create) -> Result<bool, Error> {
    let mut atomic_batches = true;
    for partition in 0..meta.partitions {
        let stream = record::stream_name(&url.name, partition);
        let found = match client.jetstream().get_stream(&stream).await {
            Ok(found) => found,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Err(Error::MissingStream { queue: url.name.clone(), stream, partition });
            }
            Err(e) => return Err(Error::engine(format!("look up stream {stream} of queue {url}"), e)),
        };
        let mut config = found.cached_info().config.clone();
        if !config.allow_atomic_publish && create == Create::IfMissing && client.server_version() >= ATOMIC_BATCH_SINCE
        {
            config.allow_atomic_publish = true;
            let updated = client.jetstream().update_stream(&config).await.map_err(|e| {
                Error::engine(format!("allow atomic batches on stream {stream} of queue {url} (a stream update)"), e)
            })?;
            config = updated.config;
        }
        // The configuration as the server reports it: a server that does
        // not know the setting leaves it out.
        atomic_batches &= config.allow_atomic_publish;
    }
    Ok(atomic_batches)
}

/// Creates the stream of one partition; a stream that exists with the same
/// configuration is accepted as it is. A migrated partition gives its
/// `first_offset`, where its local records start, so offsets are kept (and
/// its stream's configuration differs from the one `Queue::open` would
/// create, which therefore refuses a queue still being migrated). On a
/// server of [`ATOMIC_BATCH_SINCE`] or later the stream allows atomic batch
/// publish; returns whether the server's reply says it does.
pub(crate) async fn create_stream(
    client: &Client,
    url: &QueueUrl,
    meta: &QueueMeta,
    partition: u32,
    first_offset: Option<u64>,
) -> Result<bool, Error> {
    let name = record::stream_name(&url.name, partition);
    let config = stream::Config {
        name: name.clone(),
        description: Some(format!("durq queue {}, partition {partition}", url.name)),
        subjects: vec![record::subject(&url.name, partition)],
        storage: StorageType::File,
        num_replicas: usize::from(meta.replicas),
        duplicate_window: DUPLICATE_WINDOW,
        first_sequence: first_offset.map(record::sequence_of_offset),
        allow_atomic_publish: client.server_version() >= ATOMIC_BATCH_SINCE,
        ..Default::default()
    };
    let create = || client.jetstream().create_stream(config.clone());
    let created =
        while_not_there(create, |e| e.kind() == CreateStreamErrorKind::TimedOut).await.map_err(|(e, _)| {
            Error::engine(
                format!(
                    "create stream {name} of queue {url} ({} replicas; it may exist with another configuration)",
                    meta.replicas
                ),
                e,
            )
        })?;
    Ok(created.cached_info().config.allow_atomic_publish)
}

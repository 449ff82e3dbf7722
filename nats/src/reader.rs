//! Reading a partition in sequence order: the [`Cursor`] a consumer reads
//! its held partitions with, and the public [`Reader`] that reads without a
//! group (`durq tail`).
//!
//! **How.** A cursor is an *ordered consumer* on the partition's stream: an
//! ephemeral, flow-controlled server-side consumer without acknowledgements,
//! which the client recreates from the last sequence it saw whenever it
//! notices a gap (a lost message, a server restart). It is a cursor, not a
//! position: nothing on the server remembers where a group is; the group's
//! slot does. The server pushes records as they are stored, so a cursor
//! waits for new records without polling.
//!
//! **Why not direct gets.** nats-server 2.10 answers a direct get with one
//! message (batched direct gets are 2.11), so reading `n` records is `n`
//! request round trips, pipelined at best. The ordered consumer streams them
//! in pulls of hundreds. Measured for 100-byte records on one local server
//! (docs/SCALE_OUT.md, "Reading from the checkpoint").
//!
//! **Lost records are an error, never skipped.** durq sets no retention
//! limit on a partition's stream and deletes no record, so every offset
//! from the stream's start to its end is a record. A cursor checks that
//! where it opens (its position neither past the stream's end nor before
//! its first record), for every record it receives (the next sequence, no
//! hole), and when it has heard nothing for a while (the stream's end not
//! behind a record it already received): a server that dropped records of
//! a damaged message block at restart, or cut the stream short there, is
//! [`Error::RecordsLost`] naming the partition and the missing offsets.
//! Records before a loss are delivered; the loss stops the cursor there.
//!
//! Each record carries its payload, its key (header `Durq-Key`, decoded by
//! [`record::decode_key`]; a header that does not decode is an error naming
//! the stream and sequence, never a record delivered without its key), the
//! time the stream stored it, and its [`Position`] (offset = sequence − 1).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_nats::HeaderName;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::stream;
use bytes::Bytes;
use durq::{Position, ResetTo, StoredRecord};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Sleep;

use crate::connect::Client;
use crate::error::Error;
use crate::record;
use crate::shared::Shared;

/// How long one pull of a cursor waits on the server. The client asks the
/// server for an idle heartbeat every half of it and recreates the cursor's
/// server-side consumer after two heartbeats missed twice in a row, so this
/// bounds how long a cursor stays silent after the server holding its
/// consumer dies (an ordered consumer has one replica, whatever the
/// stream's): about twice this. The client's default, 30 s, left a partition
/// unread for a minute after that server's SIGKILL while the group's leases
/// and the stream had long moved on. The cost is one idle pull request per
/// cursor every `PULL_EXPIRY`.
const PULL_EXPIRY: Duration = Duration::from_secs(2);

/// How often a cursor waiting for a record polls its ordered consumer
/// again. After its first missed heartbeat, async-nats's ordered consumer
/// returns `Pending` without arranging to be woken, so a task that only
/// awaits it waits forever once its server died (a member's `process`
/// stalled for the rest of the HA test, 0 errors, 24 records unread);
/// polled again, it notices the second missed heartbeat and recreates its
/// consumer. Half the heartbeat.
const REPOLL: Duration = Duration::from_millis(500);

/// How long a batch waits, in all, for the records that were on their way
/// when the last one was sent (they come within milliseconds from a live
/// server): past it, the batch is handed over with what arrived. One timer
/// per batch that waits, not one per record.
const IN_FLIGHT_WITHIN: Duration = Duration::from_secs(1);

/// How long a cursor may hear nothing before it asks the stream whether
/// records are waiting past it. In the HA test a partition's cursor lost
/// its server-side consumer with that server and the client never made a
/// new one (no consumer left on the stream, no error, 24 to 32 records
/// unread until the test gave up): a cursor that hears nothing while the
/// stream holds its next record opens itself again there. The cost: one
/// stream-info request per idle cursor every `STALL_AFTER`.
const STALL_AFTER: Duration = Duration::from_secs(3);

/// The header that carries a record's key, as the client's header map
/// keys it: built once, where a `&str` is turned into a name (checked and
/// copied into an allocation) at every look-up, i.e. every record.
const KEY_HEADER_NAME: HeaderName = HeaderName::from_static(record::KEY_HEADER);

/// One record read from a partition.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) position: Position,
    pub(crate) timestamp_ms: u64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Bytes,
}

/// Reads one partition in sequence order from an offset (async).
pub(crate) struct Cursor {
    client: Client,
    stream: String,
    partition: u32,
    messages: Ordered,
    /// The stream sequence the next record must have, once known (from
    /// the start of a cursor opened at an offset, else from its first
    /// record). The client recreates its server-side consumer after a
    /// server loss from the last sequence it received, or from the
    /// stream's first record if it had received none: a record before
    /// this one is such a restart, and the cursor opens itself again here;
    /// a record past it is a gap in the stream, an error.
    next_sequence: Option<u64>,
    /// A record before `next_sequence` arrived: open again there before
    /// reading on.
    restarted: bool,
    /// Records received and not yet taken.
    buffered: VecDeque<Record>,
    /// Records the stream held past the last one received, when it was
    /// sent: they are on their way.
    pending: u64,
    /// When a record last arrived, the cursor was opened, or the stream
    /// was last asked about it ([`STALL_AFTER`]).
    heard_at: Instant,
    /// The [`REPOLL`] timer, kept from one read to the next: a read that
    /// finds its record already there arms no timer, and one that waits
    /// reuses this one instead of registering a timer of its own per
    /// record (measured on the consume row: a timer per record was among
    /// what durq-nats's reading costs beyond raw's).
    repoll: Pin<Box<Sleep>>,
    /// A read that failed while the cursor read ahead
    /// ([`Cursor::read_while`]): returned by the next take or wait, once
    /// the records buffered before it were taken.
    failed: Option<Error>,
    /// Records found lost past the last one received: every take or wait
    /// after the records before them returns the loss again, as a local
    /// reader stays before a damaged record.
    lost: Option<Lost>,
}

/// The offsets a cursor found lost, and what showed it
/// ([`Error::RecordsLost`]).
struct Lost {
    from: u64,
    to: u64,
    reason: String,
}

impl Cursor {
    /// A cursor on `partition` of `queue`, at `from`: a group's checkpoint.
    /// A [`ResetTo::Offset`] past the stream's end or before its first
    /// record is [`Error::RecordsLost`]: records before a checkpoint were
    /// stored, and the group's position never passes the end. One before
    /// the offset the stream was created to start at (a migrated
    /// partition) is [`Error::BeforeStreamStart`].
    pub(crate) async fn open(client: &Client, queue: &str, partition: u32, from: ResetTo) -> Result<Cursor, Error> {
        Cursor::open_at(client, queue, partition, from, PastTheEnd::Lost).await
    }

    /// As [`Cursor::open`], with a [`ResetTo::Offset`] past the stream's
    /// end moved to its end, and one before the stream's creation (a
    /// migrated partition starts where the migration began) to its start, as
    /// the local `durq::Reader` clamps an offset: a reader's offset is
    /// anybody's guess, not a position the records were read to.
    async fn open_clamped(client: &Client, queue: &str, partition: u32, from: ResetTo) -> Result<Cursor, Error> {
        Cursor::open_at(client, queue, partition, from, PastTheEnd::Clamped).await
    }

    async fn open_at(
        client: &Client,
        queue: &str,
        partition: u32,
        from: ResetTo,
        past_the_end: PastTheEnd,
    ) -> Result<Cursor, Error> {
        let stream = record::stream_name(queue, partition);
        let handle = client
            .jetstream()
            .get_stream(&stream)
            .await
            .map_err(|e| Error::engine(format!("open a cursor on stream {stream} at {from:?}"), e))?;
        let kept = Kept::of(handle.cached_info());
        let from = match (from, past_the_end) {
            (ResetTo::Offset(offset), PastTheEnd::Clamped) => ResetTo::Offset(kept.clamp(offset)),
            _ => from,
        };
        if let ResetTo::Offset(offset) = from {
            kept.check(&stream, partition, offset)?;
        }
        let next_sequence = match from {
            ResetTo::Offset(offset) => Some(offset + 1),
            _ => None,
        };
        let deliver_policy = match from {
            ResetTo::Earliest => DeliverPolicy::All,
            ResetTo::Latest => DeliverPolicy::New,
            ResetTo::Offset(offset) => DeliverPolicy::ByStartSequence { start_sequence: offset + 1 },
            ResetTo::Time(time) => {
                let nanos = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
                let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .map_err(|e| Error::engine(format!("read stream {stream} from {time:?}"), e))?;
                DeliverPolicy::ByStartTime { start_time }
            }
        };
        let (messages, pending) = subscribe(&handle, deliver_policy)
            .await
            .map_err(|e| Error::engine(format!("open a cursor on stream {stream} at {from:?}"), e))?;
        Ok(Cursor {
            client: client.clone(),
            stream,
            partition,
            messages,
            next_sequence,
            restarted: false,
            buffered: VecDeque::new(),
            pending,
            heard_at: Instant::now(),
            repoll: Box::pin(tokio::time::sleep(REPOLL)),
            failed: None,
            lost: None,
        })
    }

    /// Opens the cursor again at `next_sequence`, after the client
    /// restarted its consumer before it.
    async fn reopen_if_restarted(&mut self) -> Result<(), Error> {
        if !self.restarted {
            return Ok(());
        }
        let start_sequence = self.next_sequence.expect("a restart is noticed against a known sequence");
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            Error::engine(format!("reopen a cursor on stream {} at {start_sequence}", self.stream), e)
        };
        let handle = self.client.jetstream().get_stream(&self.stream).await.map_err(|e| failed(e.into()))?;
        // The server may have restarted with fewer records than it had.
        Kept::of(handle.cached_info()).check(&self.stream, self.partition, start_sequence - 1)?;
        let (messages, pending) =
            subscribe(&handle, DeliverPolicy::ByStartSequence { start_sequence }).await.map_err(failed)?;
        self.messages = messages;
        self.pending = pending;
        self.restarted = false;
        self.heard_at = Instant::now();
        Ok(())
    }

    /// If the cursor has heard nothing for [`STALL_AFTER`] and nothing is
    /// buffered, asks the stream for its last record; if the cursor's next
    /// one is stored, opens the cursor again there (its server-side
    /// consumer is gone or stuck). A stream that now ends before a record
    /// the cursor received lost it: [`Error::RecordsLost`] (a server that
    /// restarted on a damaged block cuts the stream there, silently, and
    /// gives the lost offsets to the next records sent; noticed only if no
    /// new record reached the cursor's position before this look).
    pub(crate) async fn reopen_if_stalled(&mut self) -> Result<(), Error> {
        let Some(next) = self.next_sequence else { return Ok(()) };
        if !self.buffered.is_empty() || self.heard_at.elapsed() < STALL_AFTER {
            return Ok(());
        }
        self.heard_at = Instant::now();
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            Error::engine(format!("read the last sequence of stream {}", self.stream), e)
        };
        let mut stream = self.client.jetstream().get_stream(&self.stream).await.map_err(|e| failed(e.into()))?;
        let last = stream.info().await.map_err(|e| failed(e.into()))?.state.last_sequence;
        if last + 1 < next {
            let reason = format!(
                "the stream now ends at offset {last}, before records this cursor received (the server lost them, \
                 and gives their offsets to the next records sent)"
            );
            self.lost = Some(Lost { from: last, to: next - 1, reason });
            return self.check_lost();
        }
        if last >= next {
            self.restarted = true;
            self.reopen_if_restarted().await?;
        }
        Ok(())
    }

    /// Waits until at least one record is buffered. Cancel-safe: a record
    /// received is buffered in the same poll, so dropping this future loses
    /// nothing.
    pub(crate) async fn wait(&mut self) -> Result<(), Error> {
        while self.buffered.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            self.check_lost()?;
            self.reopen_if_restarted().await?;
            let message = self.next_message().await;
            self.receive(message)?;
        }
        Ok(())
    }

    /// Up to `max` records in sequence order: those buffered, those that
    /// already arrived, and, if any was buffered, those the stream held
    /// past it when it was sent (they are on their way), so that a batch is
    /// as full as the stream allows. Waits only for those.
    pub(crate) async fn take_ready(&mut self, max: usize) -> Result<Vec<Record>, Error> {
        if self.buffered.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            self.check_lost()?;
        }
        // Armed by the first record this batch waits for.
        let mut in_flight: Option<Pin<Box<Sleep>>> = None;
        while self.buffered.len() < max && self.failed.is_none() && self.lost.is_none() {
            self.reopen_if_restarted().await?;
            let received = match self.messages.next().now_or_never() {
                Some(message) => self.receive(message),
                None if self.pending > 0 && !self.buffered.is_empty() => {
                    let deadline = in_flight.get_or_insert_with(|| Box::pin(tokio::time::sleep(IN_FLIGHT_WITHIN)));
                    tokio::select! {
                        biased;
                        message = self.next_message() => self.receive(message),
                        () = deadline.as_mut() => break,
                    }
                }
                None => break,
            };
            // The records before a failure (a lost record, a bad key) are
            // handed out first; the failure ends the batch and is returned
            // by the next take, so a consumer stops at it, not before (a
            // loss is kept in `lost` by `receive`).
            match received {
                Ok(()) => {}
                Err(e) if self.buffered.is_empty() => return Err(e),
                Err(_) if self.lost.is_some() => {}
                Err(e) => self.failed = Some(e),
            }
        }
        Ok(self.buffered.drain(..max.min(self.buffered.len())).collect())
    }

    /// Runs `until` (a write of the slot) to its end, reading meanwhile
    /// the records that arrive, until `max` are buffered. Reading stops
    /// only while nothing polls the cursor: left idle during a commit's
    /// round trip, the client sends no new pull request once half of the
    /// last one arrived, and the next batch is then read after the write
    /// instead of during it. A read that fails is kept for the next take or
    /// wait ([`Cursor::failed`]); a restarted client consumer stops the
    /// reading, and the next take opens the cursor again.
    pub(crate) async fn read_while<T>(&mut self, max: usize, until: impl Future<Output = T>) -> T {
        let read_ahead = async {
            while self.failed.is_none() && self.lost.is_none() && !self.restarted && self.buffered.len() < max {
                let message = self.next_message().await;
                if let Err(e) = self.receive(message)
                    && self.lost.is_none()
                {
                    self.failed = Some(e);
                }
            }
            std::future::pending::<T>().await
        };
        tokio::select! {
            biased;
            done = until => done,
            done = read_ahead => done,
        }
    }

    /// The ordered consumer's next message, polling it again every
    /// [`REPOLL`] until it has one. Cancel-safe, as `StreamExt::next` is
    /// (the timer is the cursor's: dropped mid-wait, it stays armed, and
    /// the next read that finds it expired polls once more and rearms it).
    async fn next_message(
        &mut self,
    ) -> Option<Result<async_nats::jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>> {
        loop {
            tokio::select! {
                biased;
                message = self.messages.next() => return message,
                () = self.repoll.as_mut() => {
                    let next = tokio::time::Instant::now() + REPOLL;
                    self.repoll.as_mut().reset(next);
                }
            }
        }
    }

    /// [`Cursor::wait`], keeping a failure for the next take instead of
    /// returning it: ends when there is something to take, a record or the
    /// error that stops the cursor.
    async fn wait_keeping_failure(&mut self) {
        if let Err(e) = self.wait().await
            && self.lost.is_none()
        {
            self.failed = Some(e);
        }
    }

    /// Whether a record or a failure waits to be taken.
    fn has_news(&self) -> bool {
        !self.buffered.is_empty() || self.failed.is_some() || self.lost.is_some()
    }

    /// [`Error::RecordsLost`] once the cursor found records lost.
    fn check_lost(&self) -> Result<(), Error> {
        match &self.lost {
            None => Ok(()),
            Some(Lost { from, to, reason }) => Err(Error::RecordsLost {
                stream: self.stream.clone(),
                partition: self.partition,
                from: *from,
                to: *to,
                reason: reason.clone(),
            }),
        }
    }

    /// Whether every record the stream held when the last one was sent (or,
    /// before any, when the cursor was made) was taken.
    fn caught_up(&self) -> bool {
        self.buffered.is_empty() && self.pending == 0
    }

    fn receive(
        &mut self,
        message: Option<Result<async_nats::jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>>,
    ) -> Result<(), Error> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(Error::engine(format!("read stream {}", self.stream), e)),
            None => return Err(Error::engine(format!("read stream {}", self.stream), "the ordered consumer ended")),
        };
        let info = message.info().map_err(|e| Error::engine(format!("read stream {}", self.stream), e))?;
        let sequence = info.stream_sequence;
        self.heard_at = Instant::now();
        match self.next_sequence {
            Some(next) if sequence < next => {
                self.restarted = true;
                return Ok(());
            }
            Some(next) if sequence > next => {
                let (from, to) = (record::offset_of_sequence(next), record::offset_of_sequence(sequence));
                let reason = format!(
                    "the next record the stream holds is at offset {to} (the server dropped them, e.g. from a damaged \
                     message block, or they were deleted by hand)"
                );
                self.lost = Some(Lost { from, to, reason });
                return self.check_lost();
            }
            _ => self.next_sequence = Some(sequence + 1),
        }
        self.pending = info.pending;
        let timestamp_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let key = match message.headers.as_ref().and_then(|h| h.get(KEY_HEADER_NAME)) {
            None => None,
            Some(text) => Some(record::decode_key(text.as_str()).ok_or_else(|| Error::BadRecord {
                stream: self.stream.clone(),
                sequence,
                reason: format!("header {} is not an encoded key: {:?}", record::KEY_HEADER, text.as_str()),
            })?),
        };
        let position = Position { partition: self.partition, offset: record::offset_of_sequence(sequence) };
        self.buffered.push_back(Record { position, timestamp_ms, key, payload: message.payload.clone() });
        Ok(())
    }
}

/// The offset partition `partition`'s stream was created to start at: 0,
/// or where a migration began copying it. A group that never read the
/// partition starts there, as a new local group starts at the first kept
/// record.
///
/// # Errors
/// [`Error::Engine`] if the stream cannot be looked up.
pub(crate) async fn created_first_offset(client: &Client, queue: &str, partition: u32) -> Result<u64, Error> {
    let stream = record::stream_name(queue, partition);
    let handle = client
        .jetstream()
        .get_stream(&stream)
        .await
        .map_err(|e| Error::engine(format!("look up stream {stream}"), e))?;
    Ok(record::offset_of_sequence(Kept::of(handle.cached_info()).created_first))
}

/// What a cursor does with a position past the stream's end (or before
/// where it was created to start).
enum PastTheEnd {
    /// A group's checkpoint: records before it were stored, so they are
    /// lost ([`Error::RecordsLost`]); one before the stream's creation is
    /// [`Error::BeforeStreamStart`].
    Lost,
    /// A reader's offset: moved to the end (and one before the stream's
    /// creation to its start), as locally.
    Clamped,
}

/// Which sequences a partition's stream holds, as its info reported them.
struct Kept {
    /// The first stored record's sequence (the next one's when empty; 0
    /// for a stream never written).
    first: u64,
    /// The last sequence the stream stored (0 for a stream never written).
    last: u64,
    /// The sequence the stream was created to start at: 1, or a migrated
    /// partition's first offset + 1.
    created_first: u64,
}

impl Kept {
    fn of(info: &stream::Info) -> Kept {
        Kept {
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            created_first: info.config.first_sequence.unwrap_or(1).max(1),
        }
    }

    /// [`Error::RecordsLost`] unless a cursor may start at `offset`: not
    /// past the end (offset `last` is the next record's), and not before
    /// the first stored record; [`Error::BeforeStreamStart`] if the stream
    /// never held that offset (it was created to start later, by a
    /// migration: nothing is lost).
    fn check(&self, stream: &str, partition: u32, offset: u64) -> Result<(), Error> {
        let lost = |from: u64, to: u64, reason: String| {
            Err(Error::RecordsLost { stream: stream.to_owned(), partition, from, to, reason })
        };
        if offset > self.last {
            let last = self.last;
            return lost(
                last,
                offset,
                format!(
                    "the stream ends at offset {last}, before position {offset}, which records were read or \
                     committed to (a stream the server cut short, e.g. at a damaged message block when it restarted)"
                ),
            );
        }
        let start = record::sequence_of_offset(offset);
        if start < self.created_first {
            return Err(Error::BeforeStreamStart {
                stream: stream.to_owned(),
                partition,
                offset,
                first: record::offset_of_sequence(self.created_first),
            });
        }
        if start < self.first {
            let first = record::offset_of_sequence(self.first);
            return lost(
                offset,
                first,
                format!(
                    "the stream's first record is at offset {first}, and durq removes none (dropped by the server, \
                     e.g. from a damaged message block, or purged by hand)"
                ),
            );
        }
        Ok(())
    }

    /// `offset` moved into what the stream can hold: its end if past it,
    /// its created start if before that.
    fn clamp(&self, offset: u64) -> u64 {
        if offset > self.last { self.last } else { offset.max(self.created_first - 1) }
    }
}

/// An ordered consumer on the stream `handle` from `deliver_policy`, and
/// the number of records the stream held from there when it was made (on
/// their way, as a record's `pending` is).
async fn subscribe(
    handle: &stream::Stream,
    deliver_policy: DeliverPolicy,
) -> Result<(Ordered, u64), Box<dyn std::error::Error + Send + Sync>> {
    let config = OrderedConfig { deliver_policy, max_expires: PULL_EXPIRY, ..Default::default() };
    let consumer = handle.create_consumer(config).await?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer.messages().await?, pending))
}

/// Reads a queue's records without a group: it commits nothing and moves
/// nobody (`durq tail`). The partitions take turns, so a busy one does not
/// hide the others.
///
/// ```no_run
/// # fn main() -> Result<(), durq::Error> {
/// let queue = durq_nats::Queue::open("nats://127.0.0.1:4222/orders")?;
/// let mut reader = queue.reader(durq::ResetTo::Earliest)?;
/// while reader.wait(Some(std::time::Duration::from_secs(1))) {
///     for record in reader.read(100)? {
///         println!("{} {}", record.position.offset, String::from_utf8_lossy(&record.payload));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Reader {
    shared: Arc<Shared>,
    cursors: Vec<Cursor>,
    /// The next offset per cursor.
    next: Vec<u64>,
    turn: usize,
}

impl crate::Queue {
    /// A reader of every partition, starting at `from` in each
    /// ([`ResetTo::Latest`]: only records sent from now on;
    /// [`ResetTo::Offset`] is clamped to the stream's end, and to where a
    /// migrated partition's stream starts, as the local reader clamps it).
    /// Joins no group and commits nothing.
    ///
    /// # Errors
    /// [`durq::Error::Engine`] if a partition's stream cannot be read, or
    /// lost the records at the offset asked for ([`Error::RecordsLost`]).
    pub fn reader(&self, from: ResetTo) -> durq::Result<Reader> {
        Reader::open(self.shared(), (0..self.partitions()).collect(), from)
    }

    /// As [`crate::Queue::reader`], for partition `partition` only.
    ///
    /// # Errors
    /// [`durq::Error::InvalidOption`] for a partition the queue does not
    /// have; else as [`crate::Queue::reader`].
    pub fn partition_reader(&self, partition: u32, from: ResetTo) -> durq::Result<Reader> {
        if partition >= self.partitions() {
            return Err(durq::Error::InvalidOption {
                option: "partition",
                reason: format!("{partition} is not below {}", self.partitions()),
            });
        }
        Reader::open(self.shared(), vec![partition], from)
    }
}

impl Reader {
    fn open(shared: Arc<Shared>, partitions: Vec<u32>, from: ResetTo) -> durq::Result<Reader> {
        let cursors = shared.block_on(async {
            let mut cursors = Vec::with_capacity(partitions.len());
            for &p in &partitions {
                cursors.push(Cursor::open_clamped(&shared.client, &shared.url.name, p, from).await?);
            }
            Ok::<_, Error>(cursors)
        })?;
        // Where each cursor opened: the offset asked for, clamped.
        let next = cursors.iter().map(|c| c.next_sequence.map_or(0, record::offset_of_sequence)).collect();
        Ok(Reader { shared, next, cursors, turn: 0 })
    }

    /// Up to `max` records that arrived, from one partition (the next, in
    /// turn, that has any), in offset order; empty when none is waiting.
    ///
    /// # Errors
    /// [`durq::Error::Engine`] if the stream cannot be read, a record's
    /// key header is damaged, or records are lost from the partition's
    /// stream ([`Error::RecordsLost`], after the records before them were
    /// read).
    pub fn read(&mut self, max: usize) -> durq::Result<Vec<StoredRecord>> {
        let shared = self.shared.clone();
        shared.block_on(self.read_ready(max))
    }

    /// Waits until a record has arrived, or `timeout` passes (`None`: no
    /// limit). Returns whether one has, or a failure the next
    /// [`Reader::read`] returns. Never polls: the server pushes records as
    /// they are stored.
    pub fn wait(&mut self, timeout: Option<Duration>) -> bool {
        let shared = self.shared.clone();
        shared.block_on(self.wait_async(timeout))
    }

    /// [`Reader::wait`] for async code (on any runtime).
    pub async fn wait_async(&mut self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.cursors.iter().any(Cursor::has_news) {
                return true;
            }
            // Waits in slices of STALL_AFTER, looking for stalled cursors
            // between them. A cursor's failure is news too: kept for the
            // next read, which returns it (a `false` here would hide it).
            let slice = deadline.map_or(STALL_AFTER, |d| STALL_AFTER.min(d.saturating_duration_since(Instant::now())));
            let any =
                futures_util::future::select_all(self.cursors.iter_mut().map(|c| Box::pin(c.wait_keeping_failure())));
            if tokio::time::timeout(slice, any).await.is_ok() {
                return true;
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return false;
            }
            for cursor in &mut self.cursors {
                // A loss found is kept by the cursor (news for the next
                // turn of this loop); a failed look is made again after the
                // next slice.
                let _ = cursor.reopen_if_stalled().await;
            }
        }
    }

    /// Whether the reader has handed out every record its partitions held
    /// when it was made, and every one it has seen arrive since: with no
    /// producer running, a reader caught up has read the queue to its end
    /// (`durq tail` without `-f` stops there). Records stored after the last
    /// one received are not known of until they arrive.
    pub fn caught_up(&self) -> bool {
        self.cursors.iter().all(Cursor::caught_up)
    }

    /// The offset the reader reads next in each of its partitions (for a
    /// reader started at an offset, or once it read a record there).
    pub fn positions(&self) -> Vec<Position> {
        self.cursors.iter().zip(&self.next).map(|(c, &offset)| Position { partition: c.partition, offset }).collect()
    }

    async fn read_ready(&mut self, max: usize) -> durq::Result<Vec<StoredRecord>> {
        for _ in 0..self.cursors.len() {
            let at = self.turn;
            self.turn = (self.turn + 1) % self.cursors.len();
            let records = self.cursors[at].take_ready(max).await?;
            if let Some(last) = records.last() {
                self.next[at] = last.position.offset + 1;
                return Ok(records
                    .into_iter()
                    .map(|r| StoredRecord {
                        position: r.position,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        payload: r.payload.to_vec(),
                    })
                    .collect());
            }
        }
        Ok(Vec::new())
    }
}

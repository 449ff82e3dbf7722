//! The consumer: a member of a consumer group. It hands batches to the
//! caller's closure and commits them only after the closure returns `Ok`.
//!
//! This is the one place where a queue classically loses messages: committing
//! the read position before the work is done (the "auto-commit" of many
//! clients). durq's default API has no separate acknowledge call. The batch
//! is a borrowed slice that cannot outlive the closure, and the checkpoint
//! moves, with an fdatasync, only after the closure has returned `Ok`. An
//! error or a panic commits nothing; the batch is delivered again after a
//! backoff, its records one at a time so that a poison record is isolated,
//! and a record that fails `max_deliveries` times goes to the group's
//! dead-letter queue before the group moves past it.
//!
//! What a commit survives is the consumer's `commit` option: under `Sync`
//! the checkpoint is synced before `process` returns; under `Interval` and
//! `Buffered` the position is stored into the checkpoint file's shared
//! mapping (a process crash cannot lose it) and synced later, by the
//! background thread (`group/syncer.rs`), [`Consumer::flush`], or before a
//! slot is given back.
//!
//! Membership: every `Consumer` is a member of its group. Slots (one per
//! partition) are shared fairly among live members; a member checks who is
//! alive every `rebalance_interval` while it waits and between batches,
//! takes over the slots of dead or hung members at once, and gives back
//! slots that belong to a newcomer only after committing its current batch.
//! See `group/membership.rs` for rebalancing and `group/slot.rs` for the
//! takeover and fencing protocol.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{BoxError, Error, Result};
use crate::fail_stop::FailStop;
use crate::group::Group;
use crate::group::dead_letter::{self, Envelope};
use crate::group::exit_watch::ExitWatch;
use crate::group::membership::{Held, Membership};
use crate::group::syncer::Syncer;
use crate::log::partition::{Partition, ReadCursor, Span};
use crate::observe::{self, FencedAt};
use crate::options::{ConsumerOptions, Durability};
use crate::position::Position;
use crate::queue::{Queue, QueueInner};
use crate::retention;
use crate::storage;

#[cfg(feature = "tokio")]
mod process_async;

/// One record handed to the caller, borrowed from the queue's mapping (no
/// copy). It lives only as long as the closure call (or the [`Delivery`]).
#[derive(Clone, Copy)]
pub struct Message<'a> {
    position: Position,
    timestamp_ms: u64,
    delivery_count: u32,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message of another backend (durq-nats), which keeps the bytes it
    /// borrows. Not part of the API.
    #[doc(hidden)]
    pub fn from_parts(
        position: Position,
        timestamp_ms: u64,
        delivery_count: u32,
        key: Option<&'a [u8]>,
        payload: &'a [u8],
    ) -> Message<'a> {
        Message { position, timestamp_ms, delivery_count, key, payload }
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The key, if the record was sent with one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// Where the record is stored.
    pub fn position(&self) -> Position {
        self.position
    }

    /// When the record was appended.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }

    /// When the record was appended, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// How many times this record has been handed to the group, this time
    /// included: 1 on its first delivery. It counts deliveries by every
    /// member and survives a crash of the process that was processing it.
    /// The first record of a redelivered batch carries its exact count;
    /// other records delivered before carry at least 2.
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    /// True if this record may have been handed to the group before (a
    /// retry, or a crash or takeover during an earlier delivery).
    pub fn is_redelivery(&self) -> bool {
        self.delivery_count > 1
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("position", &self.position)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("delivery_count", &self.delivery_count)
            .field("key", &self.key.map(String::from_utf8_lossy))
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What to do with one record, for [`Consumer::process_each`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Processed: commit it.
    Done,
    /// Not now: stop here, commit the records before it, and deliver it
    /// again after the pause (the backoff schedule's if `None`). Counts as a
    /// failed delivery toward `max_deliveries`.
    Retry(Option<Duration>),
    /// Never: move it to the dead-letter queue with this reason, then
    /// commit it.
    DeadLetter(String),
}

/// A member of a consumer group. `Send`: each thread that consumes opens
/// its own, or is handed one; the members share the group's partitions
/// fairly, in one process or many.
///
/// ```
/// # fn main() -> Result<(), durq::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let queue = durq::Queue::open(tmp.path().join("q"))?;
/// queue.producer().send(b"red packet for alice")?;
/// let options = durq::ConsumerOptions::default().retry_backoff(vec![std::time::Duration::ZERO]);
/// let mut consumer = queue.consumer_with("red-packet", options)?;
/// // Fails: nothing is committed, and the record comes again.
/// let failed = consumer.process(|_batch| Err(std::io::Error::other("database down")));
/// assert!(failed.is_err());
/// // Succeeds: the checkpoint moves only now, after the closure returned.
/// let n = consumer.process(|batch| {
///     assert_eq!(batch[0].payload(), b"red packet for alice");
///     assert_eq!(batch[0].delivery_count(), 2);
///     Ok::<(), std::io::Error>(())
/// })?;
/// assert_eq!(n, 1);
/// let n = consumer.process_timeout(std::time::Duration::from_millis(10), |_| Ok::<(), std::io::Error>(()))?;
/// assert_eq!(n, 0);
/// # Ok(()) }
/// ```
pub struct Consumer {
    queue: Arc<QueueInner>,
    options: ConsumerOptions,
    membership: Membership<Reader>,
    next_slot: u32,
    last_rebalance: Option<LastRebalance>,
    /// The coarse clock's resolution (`None`: no coarse clock here).
    coarse_tick: Option<Duration>,
    dead_letters: Option<Queue>,
    /// Shared with `syncer`, whose failed sync stops this consumer.
    stopped: Arc<FailStop>,
    /// The thread that waits and heartbeats for `process_async`, started
    /// by its first call.
    #[cfg(feature = "tokio")]
    companion: Option<crate::asynchronous::Companion>,
    /// The background sync of `commit(Interval)`. Dropped after
    /// `membership`, whose drop syncs and gives back every slot.
    syncer: Option<Syncer>,
    /// Wakes this consumer when another member's process exits, so that it
    /// scans (and takes over) at once.
    exits: ExitWatch,
    /// The batch after the last one `process` committed under
    /// `commit(Sync)`, read while that commit's sync was in flight.
    read_ahead: Option<ReadAhead>,
}

// The docs above promise that a consumer can be moved to another thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Consumer>();
};

/// Where this member reads in a slot it holds.
struct Reader {
    cursor: ReadCursor,
    metrics: observe::SlotMetrics,
    /// No delivery before this instant (backoff after a failure).
    retry_at: Option<Instant>,
    /// Records below this were in a failed batch: deliver them one at a time.
    isolate_end: u64,
}

/// The fewest records a committed batch must have for `process` to read
/// the next one ahead ([`ReadAhead`]). Starting the write early costs a
/// system call (`sync_file_range`, about 1–2 µs here); a read of 64 records
/// (about 40 ns each, docs/BENCHMARKS.md, W4) takes longer than that, and a
/// batch this long suggests the next one is as long. Below it (one record
/// per commit, W7) there is nothing to overlap.
const READ_AHEAD_MIN_RECORDS: usize = 64;

/// Records read ahead of the next delivery, not yet marked delivered.
///
/// Under `commit(Sync)` a batch's commit waits for the disk twice (the
/// checkpoint page's write, then the cache flush); `process` reads the next
/// batch after the write has started, so the read overlaps the wait
/// ([`Checkpoint::commit_overlapping`](crate::group::checkpoint::Checkpoint::commit_overlapping)).
/// The records are the ones the next read would return, or the first of
/// them (a batch read later may be longer: more may be visible by then):
/// the log below the visible end never changes. The next read takes them
/// only if nothing moved meanwhile: the same slot held at the same epoch,
/// its cursor still where they start, their count within the batch limit
/// (one at a time after a failure), and none of them removed by retention.
/// Nothing else changes: they are marked delivered, as any batch, before
/// the closure sees them.
struct ReadAhead {
    slot: u32,
    epoch: u64,
    span: Span,
}

impl ReadAhead {
    /// Reads the batch that follows the first `count` records of `span`,
    /// committed in this commit, from `part`, at most `max` records. `None`
    /// if there is nothing to read yet, the records there go one at a time,
    /// or the read fails (the delivery's own read reports it). It runs
    /// between the commit's write and its sync: a panic in the read (a
    /// broken assertion) must not leave the commit unsynced, so it too is
    /// left for the delivery's own read to raise.
    fn read(part: &Partition, reader: &Reader, span: &Span, count: usize, max: usize) -> Option<Span> {
        let mut cursor = reader.cursor.clone();
        cursor.advance(span, count);
        let visible = part.visible();
        if cursor.next_offset >= visible || cursor.next_offset < reader.isolate_end {
            return None;
        }
        let read = catch_unwind(AssertUnwindSafe(|| part.read_span(&mut cursor, visible, max)));
        read.ok()?.ok().filter(|s| !s.frames.is_empty())
    }

    /// Whether the next delivery from `slot`, held at `epoch`, whose
    /// cursor is at `next_offset`, can be these records.
    fn fits(&self, slot: u32, epoch: u64, next_offset: u64, max: usize, part: &Partition) -> bool {
        let first = self.span.frames[0].offset;
        self.slot == slot
            && self.epoch == epoch
            && first == next_offset
            && first >= part.first_offset()
            && self.span.frames.len() <= max
    }
}

/// When a member last rebalanced, by the exact clock and by the coarse one.
#[derive(Clone, Copy)]
struct LastRebalance {
    at: Instant,
    coarse_at: Option<Duration>,
}

impl LastRebalance {
    /// Whether `interval` has passed since. Asked before every batch: the
    /// exact clock's read (tens of ns on a VM) was 7% of a message's cost
    /// at `max_batch(1)` under `commit(Interval)`. The coarse clock, read
    /// in a few ns, lags the exact one by less than a `tick`, so while its
    /// reading plus a tick is short of `interval` the interval has surely
    /// not passed; only then is the exact clock asked. The answer is the
    /// exact clock's, always.
    fn is_due(&self, interval: Duration, tick: Option<Duration>) -> bool {
        if let (Some(then), Some(tick), Some(now)) = (self.coarse_at, tick, storage::coarse_monotonic())
            && now.saturating_sub(then) + tick < interval
        {
            return false;
        }
        self.at.elapsed() >= interval
    }
}

/// What a consumer looking for records does next.
enum Next {
    Batch(Batch),
    /// Wait this long for records, then look again.
    Wait(Duration),
    TimedOut,
}

/// A batch taken from one slot, not yet committed.
struct Batch {
    slot: u32,
    /// The epoch the slot was held at when the batch was read.
    epoch: u64,
    span: Span,
    /// Deliveries of the batch's first record, this one included.
    attempts: u32,
    /// Records below this were delivered before...
    redelivered_end: u64,
    /// ...this many times (all but the first record).
    earlier_deliveries: u32,
}

impl Batch {
    fn messages(&self) -> Vec<Message<'_>> {
        self.span
            .frames
            .iter()
            .map(|fr| Message {
                position: Position { partition: self.slot, offset: fr.offset },
                timestamp_ms: fr.timestamp_ms,
                delivery_count: if fr.offset == self.span.frames[0].offset {
                    self.attempts
                } else if fr.offset < self.redelivered_end {
                    self.earlier_deliveries + 1
                } else {
                    1
                },
                key: fr.key.map(|k| self.span.bytes(k)),
                payload: self.span.bytes(fr.payload),
            })
            .collect()
    }
}

impl Queue {
    /// Joins consumer group `group` with default options.
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        self.consumer_with(group, ConsumerOptions::default())
    }

    /// Joins consumer group `group`.
    pub fn consumer_with(&self, group: &str, options: ConsumerOptions) -> Result<Consumer> {
        Consumer::open(self.inner.clone(), group, options)
    }
}

impl Consumer {
    fn open(queue: Arc<QueueInner>, group: &str, options: ConsumerOptions) -> Result<Consumer> {
        let group = Group::named(&queue.dir, group)?;
        options.validate()?;
        {
            // A retention pass either ran before the group's directory
            // appeared (the group starts at the offset it raised) or sees
            // the group, which has not started, and keeps everything.
            let _floor = retention::lock_floor(&queue.dir)?;
            group.register()?;
        }
        let timeout_ms = options.lease_timeout.as_millis() as u64;
        let stopped = Arc::new(FailStop::of("consumer"));
        let syncer = match options.commit {
            Durability::Interval(every) => Some(Syncer::start(every, stopped.clone(), &queue.dir)?),
            Durability::Sync | Durability::Buffered => None,
        };
        let control = queue.control.clone();
        let exits = ExitWatch::start(move || control.notify(), group.dir())?;
        let membership = Membership::join(group, queue.config.partitions, timeout_ms, queue.counters.clone())?;
        let mut consumer = Consumer {
            queue,
            options,
            membership,
            next_slot: 0,
            last_rebalance: None,
            coarse_tick: storage::coarse_monotonic_tick(),
            dead_letters: None,
            stopped,
            #[cfg(feature = "tokio")]
            companion: None,
            syncer,
            exits,
            read_ahead: None,
        };
        consumer.rebalance()?;
        Ok(consumer)
    }

    /// Waits for records, hands a batch of them (from one partition, in
    /// offset order) to `f`, and commits the batch once `f` returns `Ok`:
    /// durably under `commit(Sync)` (the default), or where a crash of this
    /// process cannot lose it under `commit(Interval)` and
    /// `commit(Buffered)` (see [`ConsumerOptions::commit`]). Returns the
    /// number of records processed.
    ///
    /// If `f` returns `Err` or panics, nothing is committed, the error is
    /// returned as [`Error::Process`] or [`Error::ProcessPanicked`], and the
    /// records are delivered again after the backoff, one at a time; a record
    /// that fails `max_deliveries` times goes to the dead-letter queue. If
    /// another member took the slot over meanwhile (this one was presumed
    /// hung), the commit does not count and [`Error::Fenced`] is returned
    /// (under `commit(Interval)` and `commit(Buffered)`, from the first
    /// call after a sync or heartbeat found it out: commits in between
    /// return `Ok`, do not count either, and come again to the new holder).
    pub fn process<F, E>(&mut self, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(None, f)
    }

    /// As [`Consumer::process`], but returns `Ok(0)` without calling `f` if
    /// no record arrives within `timeout`.
    pub fn process_timeout<F, E>(&mut self, timeout: Duration, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(Some(timeout), f)
    }

    /// Like [`Consumer::process`], with a verdict per record: `f` is called
    /// for each record of the batch in order, until it returns
    /// [`Verdict::Retry`]. Records before that are committed (dead letters
    /// first moved to the dead-letter queue); the retried one comes again
    /// after its pause. Returns the number of records committed; waits at
    /// most `timeout` for records (`Ok(0)` if none came).
    pub fn process_each<F>(&mut self, timeout: Duration, mut f: F) -> Result<usize>
    where
        F: FnMut(&Message<'_>) -> Verdict,
    {
        self.stopped.check()?;
        let Some(batch) = self.next_batch(Some(timeout))? else { return Ok(0) };
        let _span = self.batch_span(&batch);
        let messages = batch.messages();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut verdicts = Vec::with_capacity(messages.len());
            for m in &messages {
                let v = f(m);
                let stop = matches!(v, Verdict::Retry(_));
                verdicts.push(v);
                if stop {
                    break;
                }
            }
            verdicts
        }));
        let verdicts = match outcome {
            Ok(v) => v,
            Err(panic) => {
                let error = panic_message(&panic);
                drop(messages);
                self.fail(batch, &error, None)?;
                return Err(Error::ProcessPanicked(error));
            }
        };
        for (m, v) in messages.iter().zip(&verdicts) {
            if let Verdict::DeadLetter(reason) = v {
                self.dead_letter(m, reason)?;
            }
        }
        let retry = match verdicts.last() {
            Some(Verdict::Retry(delay)) => Some(*delay),
            _ => None,
        };
        let done = verdicts.len() - usize::from(retry.is_some());
        drop(messages);
        self.commit(&batch, done)?;
        if let Some(delay) = retry {
            let attempts = batch.messages()[done].delivery_count;
            self.fail_head(batch.slot, &batch, done, attempts, "closure asked for a retry", delay)?;
        }
        Ok(done)
    }

    /// The manual-commit form, for callers who cannot work inside a
    /// closure: waits at most `timeout` for records and returns them as a
    /// [`Delivery`] that must be [`Delivery::commit`]ted. Dropping it
    /// uncommitted counts as a failed delivery: the records come again.
    ///
    /// Prefer [`Consumer::process`]: with a `Delivery` it is possible to
    /// commit before the work is really done (the classic way queues lose
    /// messages), and the borrow of the consumer lasts until the commit.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Delivery<'_>>> {
        self.stopped.check()?;
        Ok(self.next_batch(Some(timeout))?.map(|batch| Delivery { consumer: self, batch: Some(batch) }))
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        self.membership.group().name()
    }

    /// The partitions whose slots this member holds now.
    pub fn held_partitions(&self) -> Vec<u32> {
        self.membership.held().keys().copied().collect()
    }

    /// The group's committed position (next offset to process) in every
    /// partition: this member's own for the slots it holds, the checkpoint
    /// in force on disk for the others.
    pub fn committed(&self) -> Result<Vec<u64>> {
        let held = self.membership.held();
        (0..self.queue.config.partitions)
            .zip(&self.queue.partitions)
            .map(|(s, part)| match held.get(&s) {
                Some(h) => Ok(h.hold.checkpoint.state().next_offset),
                None => Ok(self.membership.group().committed(s)?.next_offset_or(part.first_offset())),
            })
            .collect()
    }

    /// Makes every position this member committed durable now: under
    /// `commit(Interval)` and `commit(Buffered)` a commit is only stored
    /// (it survives a crash of the process, not a power loss) until a sync.
    /// Under `commit(Sync)` there is nothing to do. Dropping the consumer
    /// flushes too. [`Error::Fenced`] if a slot was taken over meanwhile (its
    /// position never takes effect); a failed sync stops the consumer.
    pub fn flush(&mut self) -> Result<()> {
        self.stopped.check()?;
        let mut fenced = Vec::new();
        for (&slot, held) in self.membership.held() {
            match held.hold.checkpoint.sync() {
                Ok(()) => {}
                Err(e @ Error::Fenced { .. }) => fenced.push((slot, e)),
                Err(e) => return Err(self.stopped.stop(e)),
            }
        }
        // Every slot taken over is let go; the first is reported.
        let mut first = None;
        for (slot, e) in fenced {
            self.membership.forget(slot);
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    fn process_within<F, E>(&mut self, timeout: Option<Duration>, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        self.stopped.check()?;
        let Some(batch) = self.next_batch(timeout)? else { return Ok(0) };
        let _span = self.batch_span(&batch);
        let messages = batch.messages();
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&messages)));
        drop(messages);
        self.settle(batch, outcome)
    }

    /// Commits `batch` if its processing returned `Ok`; otherwise counts a
    /// failed delivery and returns the error or the panic's message.
    fn settle<E: Into<BoxError>>(
        &mut self,
        batch: Batch,
        outcome: std::thread::Result<std::result::Result<(), E>>,
    ) -> Result<usize> {
        match outcome {
            Ok(Ok(())) => {
                let n = batch.span.frames.len();
                self.commit_reading_ahead(&batch, n)?;
                Ok(n)
            }
            Ok(Err(e)) => {
                let e: BoxError = e.into();
                self.fail(batch, &e.to_string(), None)?;
                Err(Error::Process(e))
            }
            Err(panic) => {
                let error = panic_message(&panic);
                self.fail(batch, &error, None)?;
                Err(Error::ProcessPanicked(error))
            }
        }
    }

    /// Waits until a held slot has a record ready (rebalancing on the way),
    /// reads a batch from it and marks it delivered. `None` on timeout.
    fn next_batch(&mut self, timeout: Option<Duration>) -> Result<Option<Batch>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = match self.next_step(deadline)? {
                Next::Batch(batch) => return Ok(Some(batch)),
                Next::TimedOut => return Ok(None),
                Next::Wait(wait) => wait,
            };
            let held = self.membership.held();
            let partitions = &self.queue.partitions;
            let exits = &self.exits;
            self.queue.control.wait_until(Some(wait), || {
                exits.exited()
                    || held.iter().any(|(&s, h)| {
                        h.state.retry_at.is_none_or(|r| r <= Instant::now())
                            && h.state.cursor.next_offset < partitions[s as usize].visible()
                    })
            });
        }
    }

    /// Rebalances if it is due, then reads a batch if a held slot has one
    /// ready; otherwise says how long to wait for records, at most until the
    /// next rebalance, the end of a backoff, or `deadline`.
    fn next_step(&mut self, deadline: Option<Instant>) -> Result<Next> {
        let due = self.last_rebalance.is_none_or(|last| last.is_due(self.options.rebalance_interval, self.coarse_tick));
        // A member's process exited: it may have held slots, so scan now.
        if due || self.exits.take_exited() {
            self.rebalance()?;
        }
        if let Some((slot, visible)) = self.ready_slot()
            && let Some(batch) = self.read_batch(slot, visible)?
        {
            return Ok(Next::Batch(batch));
        }
        let now = Instant::now();
        let mut wait = self.options.rebalance_interval;
        if let Some(d) = deadline {
            match d.checked_duration_since(now) {
                Some(left) if !left.is_zero() => wait = wait.min(left),
                _ => return Ok(Next::TimedOut),
            }
        }
        if let Some(r) = self.membership.held().values().filter_map(|h| h.state.retry_at).min() {
            wait = wait.min(r.saturating_duration_since(now));
        }
        Ok(Next::Wait(wait))
    }

    /// The next held slot, round-robin, with a record ready and no pending
    /// backoff, and how far its partition's records are visible. Reads the
    /// clock only for a slot in backoff.
    fn ready_slot(&self) -> Option<(u32, u64)> {
        let ready = |(&s, h): (&u32, &Held<Reader>)| {
            let visible = self.queue.partitions[s as usize].visible();
            (h.state.cursor.next_offset < visible && h.state.retry_at.is_none_or(|r| r <= Instant::now()))
                .then_some((s, visible))
        };
        let held = self.membership.held();
        let after = held.range(self.next_slot..).find_map(ready);
        after.or_else(|| held.range(..self.next_slot).find_map(ready))
    }

    /// Reads a batch, up to `visible`, from held `slot`, which has a record
    /// ready ([`Consumer::ready_slot`]), and marks it delivered.
    fn read_batch(&mut self, slot: u32, visible: u64) -> Result<Option<Batch>> {
        let part = &self.queue.partitions[slot as usize];
        let Some((group, held)) = self.membership.get_mut_in_group(slot) else { return Ok(None) };
        let max = if held.state.cursor.next_offset < held.state.isolate_end { 1 } else { self.options.max_batch };
        // The next call starts at the next slot even if this read fails: a
        // damaged record in one partition is reported every time it comes
        // round, and must not stop the other partitions' deliveries.
        self.next_slot = slot + 1;
        let span = match self.read_ahead.take() {
            Some(ahead) if ahead.fits(slot, held.hold.epoch, held.state.cursor.next_offset, max, part) => ahead.span,
            // A retention limit may have removed the next records (their skip
            // is recorded in the group's skip record): read on from the first kept.
            _ => part.read_span_retained(&mut held.state.cursor, visible, max)?,
        };
        assert!(!span.frames.is_empty(), "slot {slot} was ready but yielded no record");
        let head = span.frames[0].offset;
        // Deliveries that cover every delivered record are counted for all
        // of them; after a failure deliveries come one at a time and only
        // count for their own record.
        let (state, marked) = held.hold.checkpoint.mark_delivered(|state| {
            let redelivery = head < state.delivered_end;
            let attempts = if redelivery { state.attempts + 1 } else { 1 };
            let (delivered_end, range_attempts) = if span.end_offset >= state.delivered_end {
                (span.end_offset, if redelivery { state.range_attempts + 1 } else { 1 })
            } else {
                (state.delivered_end, state.range_attempts)
            };
            (delivered_end, attempts, range_attempts)
        });
        let attempts = marked.attempts;
        let redelivered = span.end_offset.min(state.delivered_end).saturating_sub(head);
        let batch = Batch {
            slot,
            epoch: held.hold.epoch,
            span,
            attempts,
            redelivered_end: state.delivered_end,
            earlier_deliveries: state.range_attempts,
        };
        observe::redelivered(&self.queue.counters, &held.state.metrics, group.name(), slot, redelivered);
        Ok(Some(batch))
    }

    /// Commits the first `count` records of `batch`.
    fn commit(&mut self, batch: &Batch, count: usize) -> Result<()> {
        self.commit_with(batch, count, false)
    }

    /// As [`Consumer::commit`], and under `commit(Sync)` reads the next
    /// batch while the commit's sync is in flight ([`ReadAhead`]), if this
    /// member holds one slot only (with more, the next delivery may come
    /// from another, round-robin) and commits at least
    /// [`READ_AHEAD_MIN_RECORDS`]. `process` commits this way, as its next
    /// call is most likely to deliver the records after; a `Delivery` or
    /// `process_each` commit waits for the sync alone.
    fn commit_reading_ahead(&mut self, batch: &Batch, count: usize) -> Result<()> {
        let read_ahead = count >= READ_AHEAD_MIN_RECORDS && self.membership.held().len() == 1;
        self.commit_with(batch, count, read_ahead)
    }

    fn commit_with(&mut self, batch: &Batch, count: usize, read_ahead: bool) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let end = batch.span.frames[count - 1].offset + 1;
        // Under `Buffered` or `Interval` durability a consumer sees records
        // before they are durable. A checkpoint past what a power cut keeps
        // would skip the records later sent to those offsets, so the log is
        // made durable up to the commit first (a no-op under `Sync`).
        if let Err(e) = self.queue.partitions[batch.slot as usize].sync_to(end) {
            return Err(self.stopped.stop(e));
        }
        // Nothing between taking a batch and committing it rebalances: the
        // slot is still held, unless this member was fenced from it.
        let Some((group, held)) = self.membership.get_mut_in_group(batch.slot) else {
            observe::fenced(&self.queue.counters, self.group(), batch.slot, batch.epoch, FencedAt::Commit);
            return Err(Error::Fenced { partition: batch.slot, epoch: batch.epoch });
        };
        let timer = observe::CommitTimer::start();
        // `Sync`: durable before `process` returns. The others store the
        // position where a crash of this process cannot lose it; the
        // syncer, `flush` or giving the slot back make it durable.
        let committed = match self.options.commit {
            Durability::Sync if read_ahead => {
                let (part, max) = (&self.queue.partitions[batch.slot as usize], self.options.max_batch);
                let (reader, epoch, mut span) = (&held.state, held.hold.epoch, None);
                let committed = held
                    .hold
                    .checkpoint
                    .commit_overlapping(end, || span = ReadAhead::read(part, reader, &batch.span, count, max));
                // Kept only if the commit succeeded: after a failure the slot
                // is forgotten, or the consumer stopped.
                if committed.is_ok() {
                    self.read_ahead = span.map(|span| ReadAhead { slot: batch.slot, epoch, span });
                }
                committed
            }
            Durability::Sync => held.hold.checkpoint.commit(end),
            Durability::Interval(_) | Durability::Buffered => held.hold.checkpoint.store(end),
        };
        match committed {
            Ok(()) => {
                held.state.cursor.advance(&batch.span, count);
                held.state.retry_at = None;
                let group = group.name();
                let frames = &batch.span.frames[..count];
                let bytes = frames.iter().map(|fr| fr.key.map_or(0, |k| k.1) + fr.payload.1).sum();
                let slot = &held.state.metrics;
                observe::committed(&self.queue.counters, slot, group, batch.slot, count, bytes, timer);
                let part = &self.queue.partitions[batch.slot as usize];
                observe::lag(slot, || part.next_offset().saturating_sub(end));
                Ok(())
            }
            Err(e @ Error::Fenced { .. }) => {
                // Another member owns the slot now; what this one did there
                // does not count, and it must not touch the slot again.
                self.membership.forget(batch.slot);
                observe::fenced(&self.queue.counters, self.group(), batch.slot, batch.epoch, FencedAt::Commit);
                Err(e)
            }
            Err(e) => Err(self.stopped.stop(e)),
        }
    }

    /// Handles a batch whose processing failed: its records will come
    /// again one at a time after the backoff, and its first record goes to
    /// the dead-letter queue if it has failed `max_deliveries` times.
    fn fail(&mut self, batch: Batch, error: &str, delay: Option<Duration>) -> Result<()> {
        let attempts = batch.attempts;
        self.fail_head(batch.slot, &batch, 0, attempts, error, delay)
    }

    /// Record `index` of `batch` failed on its `attempts`-th delivery; every
    /// record before it was committed.
    fn fail_head(
        &mut self,
        slot: u32,
        batch: &Batch,
        index: usize,
        attempts: u32,
        error: &str,
        delay: Option<Duration>,
    ) -> Result<()> {
        let isolated = batch.span.frames.len() - index == 1;
        if isolated && attempts >= self.options.max_deliveries {
            let messages = batch.messages();
            let dead = Message { delivery_count: attempts, ..messages[index] };
            self.dead_letter(&dead, error)?;
            drop(messages);
            return self.commit(batch, index + 1);
        }
        let Some(held) = self.membership.get_mut(slot) else { return Ok(()) };
        held.state.isolate_end = held.state.isolate_end.max(batch.span.end_offset);
        let delay = delay.unwrap_or_else(|| self.options.backoff(attempts));
        held.state.retry_at = Some(Instant::now() + delay);
        let state = held.hold.checkpoint.state();
        // Durable: the attempt count must survive a crash, or a poison
        // record would never reach the dead-letter queue.
        if let Err(e) = held.hold.checkpoint.mark_failed_delivery(state.delivered_end, attempts, state.range_attempts) {
            return Err(self.stopped.stop(e));
        }
        let position = Position { partition: slot, offset: batch.span.frames[index].offset };
        observe::retry(&self.queue.counters, self.group(), position, attempts, error, delay);
        Ok(())
    }

    /// Appends `m` to the group's dead-letter queue, durably.
    fn dead_letter(&mut self, m: &Message<'_>, error: &str) -> Result<()> {
        // Recovery takes a dead letter as proof that its record was synced
        // (`group::evidence`); under `Buffered` a consumer sees records
        // before they are, so the log is made durable past it first.
        let p = m.position.partition as usize;
        if let Err(e) = self.queue.partitions[p].sync_to(m.position.offset.saturating_add(1)) {
            return Err(self.stopped.stop(e));
        }
        let dlq = match &self.dead_letters {
            Some(dlq) => dlq,
            None => {
                // An existing one keeps the options it was created with.
                let dlq_dir = self.membership.group().dead_letter_queue();
                let dlq = match Queue::open_existing(dlq_dir.dir()) {
                    Ok(dlq) => dlq,
                    Err(Error::NotAQueue { .. }) => {
                        Queue::open_with(dlq_dir.dir(), dead_letter::queue_options(&self.queue.config))?
                    }
                    Err(e) => return Err(e),
                };
                self.dead_letters.insert(dlq)
            }
        };
        let envelope = dead_letter::encode(&Envelope {
            partition: m.position.partition,
            offset: m.position.offset,
            timestamp_ms: m.timestamp_ms,
            delivery_count: m.delivery_count,
            error,
            payload: m.payload,
        });
        let producer = dlq.producer();
        match m.key {
            Some(key) => producer.send_keyed(key, envelope)?,
            None => producer.send(envelope)?,
        };
        observe::dead_lettered(&self.queue.counters, self.group(), m.position, m.delivery_count, error);
        Ok(())
    }

    /// The tracing span for processing `batch` (`observe::batch`).
    fn batch_span(&self, batch: &Batch) -> observe::BatchSpan {
        observe::batch(self.group(), batch.slot, batch.span.frames[0].offset, batch.span.frames.len())
    }

    /// Heartbeats and rebalances (`group/membership.rs`): gives back the
    /// slots that belong to others now and takes this member's own, each
    /// read from its checkpoint on. Runs only between batches, so a slot is
    /// never given back mid-batch.
    fn rebalance(&mut self) -> Result<()> {
        self.last_rebalance = Some(LastRebalance { at: Instant::now(), coarse_at: storage::coarse_monotonic() });
        let partitions = &self.queue.partitions;
        let counters = &self.queue.counters;
        let group = self.membership.group().name().to_owned();
        let rebalanced = self.membership.rebalance(
            |s| {
                let part = &partitions[s as usize];
                (part.first_offset(), part.next_offset())
            },
            |s, state| {
                // Past records a retention limit removed since the take.
                let cursor = partitions[s as usize].cursor_from(state.next_offset)?;
                // Records a predecessor was handed and did not commit (it
                // failed, crashed or hung) come one at a time, so a poison
                // record among them is isolated and every count stays exact.
                let isolate_end = if state.attempts >= 1 { state.delivered_end } else { 0 };
                let metrics = observe::SlotMetrics::new(counters, &group, s);
                Ok(Reader { cursor, metrics, retry_at: None, isolate_end })
            },
        );
        if let Some(syncer) = &self.syncer {
            syncer.track(self.membership.held().values().map(|h| h.hold.checkpoint.syncable()).collect());
        }
        self.exits.watch(self.membership.other_processes().clone());
        rebalanced
    }
}

/// A batch from [`Consumer::poll`], to be committed after it was processed.
pub struct Delivery<'c> {
    consumer: &'c mut Consumer,
    batch: Option<Batch>,
}

impl Delivery<'_> {
    /// The records, in offset order, from one partition.
    pub fn messages(&self) -> Vec<Message<'_>> {
        // Only `commit` (which consumes the delivery) and drop take it.
        self.batch.as_ref().map_or_else(Vec::new, Batch::messages)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.span.frames.len())
    }

    /// Always false: a delivery has at least one record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits every record of the delivery. Call it only once the work for
    /// all of them is done and durable on your side.
    pub fn commit(mut self) -> Result<usize> {
        let Some(batch) = self.batch.take() else { return Ok(0) };
        let n = batch.span.frames.len();
        self.consumer.commit(&batch, n)?;
        Ok(n)
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            // Not committed: a failed delivery. An error here can only be a
            // failed write of the attempt count, which already stopped the
            // consumer; the next call reports it.
            let _ = self.consumer.fail(batch, "delivery dropped without commit", None);
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebalance_is_due_as_soon_as_the_exact_clock_says_its_interval_passed() {
        // The coarse clock may only rule a rebalance out while it is surely
        // not due; once the exact interval has passed, it is due at once.
        let tick = storage::coarse_monotonic_tick();
        for interval in [1, 3, 7, 20].map(Duration::from_millis) {
            let last = LastRebalance { at: Instant::now(), coarse_at: storage::coarse_monotonic() };
            assert!(!last.is_due(Duration::from_secs(3600), tick));
            while last.at.elapsed() < interval {
                std::hint::spin_loop();
            }
            assert!(last.is_due(interval, tick), "{interval:?} passed by the exact clock, but no rebalance is due");
        }
    }
}

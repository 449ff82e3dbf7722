//! Observability: every event durq reports and every number it counts, in
//! one place, so that a call site is one unconditional line.
//!
//! Three outlets, each fed by the same calls:
//! - [`Stats`], from [`Queue::stats`](crate::Queue::stats): process-local counters since the
//!   queue was opened, shared by every clone of the handle and every
//!   producer and consumer made from it. Always compiled: relaxed atomic
//!   adds, once per send, batch or sync, never per record.
//! - `tracing` events (feature `tracing`): recovery, slots taken, given back
//!   and taken over, fenced commits, retries, dead letters, retention,
//!   sync failures and fail-stop, a span per consumed batch. Nothing per
//!   record above `trace`.
//! - `metrics` (feature `metrics`, the facade only): the `durq_*` counters,
//!   histograms and gauges of docs/OBSERVABILITY.md, labelled with the
//!   queue's directory (`queue`) and, on the consumer's side, `group` and
//!   `partition`.
//!
//! With a feature off, its part of each function is compiled out; with both
//! off, only the atomic adds remain.

// With a feature off, the arguments only it reports go unused, by design.
#![cfg_attr(not(all(feature = "tracing", feature = "metrics")), allow(unused_variables))]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[cfg(feature = "metrics")]
use std::sync::Arc;

use crate::error::Error;
use crate::position::Position;

/// What this process did with a queue since it opened it, for
/// [`Queue::stats`](crate::Queue::stats): counts over every clone of the handle and every
/// producer and consumer made from it (other processes count their own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records appended (acknowledged or not yet synced).
    pub messages_appended: u64,
    /// Their key and payload bytes.
    pub bytes_appended: u64,
    /// Records committed by this process's consumers (processed).
    pub messages_consumed: u64,
    /// Their key and payload bytes.
    pub bytes_consumed: u64,
    /// Syncs of a partition's log this process ran (group commit: one sync
    /// covers every waiting sender).
    pub syncs: u64,
    /// Records those syncs made durable.
    pub messages_synced: u64,
    /// Checkpoint commits (each an fdatasync).
    pub commits: u64,
    /// Records handed to a consumer again (after a failure, a crash or a
    /// takeover).
    pub redeliveries: u64,
    /// Failed deliveries put off for a retry.
    pub retries: u64,
    /// Records moved to a group's dead-letter queue.
    pub dead_letters: u64,
    /// Slots this process's consumers took over from a dead or hung member.
    pub takeovers: u64,
    /// Commits refused because another member had taken the slot over.
    pub fenced_commits: u64,
}

/// The counters of one open queue (and, with feature `metrics`, its metric
/// handles, registered once at open so the append path looks nothing up).
pub(crate) struct Counters {
    messages_appended: AtomicU64,
    bytes_appended: AtomicU64,
    messages_consumed: AtomicU64,
    bytes_consumed: AtomicU64,
    syncs: AtomicU64,
    messages_synced: AtomicU64,
    commits: AtomicU64,
    redeliveries: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
    takeovers: AtomicU64,
    fenced_commits: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: QueueMetrics,
}

impl Counters {
    /// The counters of the queue at `dir`, all zero.
    pub(crate) fn new(dir: &Path) -> Counters {
        Counters {
            messages_appended: AtomicU64::new(0),
            bytes_appended: AtomicU64::new(0),
            messages_consumed: AtomicU64::new(0),
            bytes_consumed: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            messages_synced: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            fenced_commits: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics: QueueMetrics::new(dir),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            messages_appended: self.messages_appended.load(Relaxed),
            bytes_appended: self.bytes_appended.load(Relaxed),
            messages_consumed: self.messages_consumed.load(Relaxed),
            bytes_consumed: self.bytes_consumed.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            messages_synced: self.messages_synced.load(Relaxed),
            commits: self.commits.load(Relaxed),
            redeliveries: self.redeliveries.load(Relaxed),
            retries: self.retries.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            takeovers: self.takeovers.load(Relaxed),
            fenced_commits: self.fenced_commits.load(Relaxed),
        }
    }
}

/// The queue-wide metric handles, labelled with the queue's directory.
#[cfg(feature = "metrics")]
struct QueueMetrics {
    queue: Arc<str>,
    messages_appended: metrics::Counter,
    bytes_appended: metrics::Counter,
    syncs: metrics::Counter,
    messages_per_sync: metrics::Histogram,
    sync_seconds: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl QueueMetrics {
    fn new(dir: &Path) -> QueueMetrics {
        let queue: Arc<str> = dir.display().to_string().into();
        let label = || [("queue", queue.clone())];
        QueueMetrics {
            messages_appended: metrics::counter!("durq_messages_appended_total", &label()),
            bytes_appended: metrics::counter!("durq_bytes_appended_total", &label()),
            syncs: metrics::counter!("durq_syncs_total", &label()),
            messages_per_sync: metrics::histogram!("durq_messages_per_sync", &label()),
            sync_seconds: metrics::histogram!("durq_sync_seconds", &label()),
            queue,
        }
    }

    /// The labels of a consumer-side metric: queue, group and partition.
    fn group_labels(&self, group: &str, partition: u32) -> [(&'static str, metrics::SharedString); 3] {
        [
            ("queue", self.queue.clone().into()),
            ("group", group.to_owned().into()),
            ("partition", partition.to_string().into()),
        ]
    }
}

/// The consumer-side metric handles of one slot a member holds, registered
/// once when it takes the slot: building the three label strings at every
/// commit was about half of a `max_batch(1)` consumer's time. Zero-sized
/// without feature `metrics`.
pub(crate) struct SlotMetrics {
    #[cfg(feature = "metrics")]
    handles: SlotHandles,
}

#[cfg(feature = "metrics")]
struct SlotHandles {
    messages_consumed: metrics::Counter,
    bytes_consumed: metrics::Counter,
    commit_seconds: metrics::Histogram,
    lag: metrics::Gauge,
    redeliveries: metrics::Counter,
}

impl SlotMetrics {
    /// The handles of `group`'s slot `partition` in the queue of `counters`.
    pub(crate) fn new(counters: &Counters, group: &str, partition: u32) -> SlotMetrics {
        #[cfg(feature = "metrics")]
        {
            let labels = counters.metrics.group_labels(group, partition);
            SlotMetrics {
                handles: SlotHandles {
                    messages_consumed: metrics::counter!("durq_messages_consumed_total", &labels),
                    bytes_consumed: metrics::counter!("durq_bytes_consumed_total", &labels),
                    commit_seconds: metrics::histogram!("durq_commit_seconds", &labels),
                    lag: metrics::gauge!("durq_lag_messages", &labels),
                    redeliveries: metrics::counter!("durq_redeliveries_total", &labels),
                },
            }
        }
        #[cfg(not(feature = "metrics"))]
        SlotMetrics {}
    }
}

/// A span around the processing of one batch (`debug`), entered until
/// dropped. Zero-sized without feature `tracing`.
pub(crate) struct BatchSpan {
    #[cfg(feature = "tracing")]
    _entered: tracing::span::EnteredSpan,
}

/// Whose heartbeat or commit found that another member took its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FencedAt {
    /// A commit was refused: the batch does not count.
    Commit,
    /// A heartbeat: the member lets the slot go between batches.
    Heartbeat,
}

/// What recovery found and did in one partition, for [`recovered`].
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "tracing"), expect(dead_code, reason = "only the recovery event reads it"))]
pub(crate) struct Recovered {
    /// The segment scanned (the last one, or the one before it when the
    /// log was cut there).
    pub(crate) segment_base: u64,
    /// Records found valid in it.
    pub(crate) records_scanned: u64,
    /// Bytes of it read to find them.
    pub(crate) bytes_scanned: u64,
    /// Bytes of a torn, never acknowledged tail zeroed.
    pub(crate) bytes_zeroed: u64,
    /// The log was cut in the segment before the last, and the last removed.
    pub(crate) cut: bool,
    /// The offset the next record gets.
    pub(crate) next_offset: u64,
}

/// Recovery rebuilt partition `partition`'s tail after `crash` (a power
/// loss, or a writer's death while others use the queue) in `took`.
#[inline]
pub(crate) fn recovered(partition: u32, crash: impl std::fmt::Debug, found: &Recovered, took: Duration) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        partition,
        crash = ?crash,
        segment_base = found.segment_base,
        records_scanned = found.records_scanned,
        bytes_scanned = found.bytes_scanned,
        bytes_zeroed = found.bytes_zeroed,
        cut = found.cut,
        next_offset = found.next_offset,
        took_us = took.as_micros() as u64,
        "durq recovered a partition"
    );
}

/// Records `n` records of `bytes` key and payload bytes appended to
/// `partition` by one send.
#[inline]
pub(crate) fn appended(counters: &Counters, partition: u32, n: usize, bytes: usize) {
    counters.messages_appended.fetch_add(n as u64, Relaxed);
    counters.bytes_appended.fetch_add(bytes as u64, Relaxed);
    #[cfg(feature = "metrics")]
    {
        counters.metrics.messages_appended.increment(n as u64);
        counters.metrics.bytes_appended.increment(bytes as u64);
    }
    #[cfg(feature = "tracing")]
    tracing::trace!(partition, records = n, bytes, "durq appended");
}

/// One sync of `partition`'s log made `messages` records durable in
/// `latency` (group commit: one sync for every waiting sender).
#[inline]
pub(crate) fn synced(counters: &Counters, partition: u32, messages: u64, latency: Duration) {
    counters.syncs.fetch_add(1, Relaxed);
    counters.messages_synced.fetch_add(messages, Relaxed);
    #[cfg(feature = "metrics")]
    {
        counters.metrics.syncs.increment(1);
        counters.metrics.messages_per_sync.record(messages as f64);
        counters.metrics.sync_seconds.record(latency.as_secs_f64());
    }
    #[cfg(feature = "tracing")]
    tracing::trace!(partition, records = messages, latency_us = latency.as_micros() as u64, "durq synced");
}

/// A sync failed with `error`, returned for the caller to stop on (and
/// [`stopped`] follows, once per handle).
#[inline]
pub(crate) fn sync_failed(error: Error) -> Error {
    #[cfg(feature = "tracing")]
    tracing::error!(%error, "durq sync failed");
    error
}

/// A `handle` ("queue", "consumer") stopped for good after `cause`
/// (fail-stop: it refuses every write until reopened).
#[inline]
pub(crate) fn stopped(handle: &'static str, cause: &Error) {
    #[cfg(feature = "tracing")]
    tracing::error!(handle, %cause, "durq stopped: every later write is refused until the queue is reopened");
}

/// The span for processing a batch of `len` records of `group` from
/// `partition`, the first at `first_offset`.
#[inline]
pub(crate) fn batch(group: &str, partition: u32, first_offset: u64, len: usize) -> BatchSpan {
    #[cfg(feature = "tracing")]
    return BatchSpan { _entered: tracing::debug_span!("durq_batch", group, partition, first_offset, len).entered() };
    #[cfg(not(feature = "tracing"))]
    BatchSpan {}
}

/// `redelivered` records of a batch of `group` from `partition` were handed
/// to the group before.
#[inline]
pub(crate) fn redelivered(counters: &Counters, slot: &SlotMetrics, group: &str, partition: u32, redelivered: u64) {
    if redelivered == 0 {
        return;
    }
    counters.redeliveries.fetch_add(redelivered, Relaxed);
    #[cfg(feature = "metrics")]
    slot.handles.redeliveries.increment(redelivered);
    #[cfg(feature = "tracing")]
    tracing::debug!(group, partition, records = redelivered, "durq redelivers");
}

/// Times a commit for [`committed`], only where an outlet reports the
/// time: at `max_batch(1)` under `commit(Interval)` the two clock reads were
/// a sixth of a message's cost, for a number nothing read. Zero-sized
/// without features `metrics` and `tracing`.
pub(crate) struct CommitTimer {
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    started: std::time::Instant,
}

impl CommitTimer {
    /// Starts timing (reads the clock only if an outlet will report it).
    #[inline]
    pub(crate) fn start() -> CommitTimer {
        CommitTimer {
            #[cfg(any(feature = "metrics", feature = "tracing"))]
            started: std::time::Instant::now(),
        }
    }

    #[cfg(any(feature = "metrics", feature = "tracing"))]
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `group` committed `n` records of `bytes` key and payload bytes in
/// `partition`; `timer` was started before the checkpoint's write (and,
/// under `commit(Sync)`, its sync).
#[inline]
pub(crate) fn committed(
    counters: &Counters,
    slot: &SlotMetrics,
    group: &str,
    partition: u32,
    n: usize,
    bytes: usize,
    timer: CommitTimer,
) {
    counters.messages_consumed.fetch_add(n as u64, Relaxed);
    counters.bytes_consumed.fetch_add(bytes as u64, Relaxed);
    counters.commits.fetch_add(1, Relaxed);
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    let latency = timer.elapsed();
    #[cfg(feature = "metrics")]
    {
        slot.handles.messages_consumed.increment(n as u64);
        slot.handles.bytes_consumed.increment(bytes as u64);
        slot.handles.commit_seconds.record(latency.as_secs_f64());
    }
    #[cfg(feature = "tracing")]
    tracing::debug!(group, partition, records = n, latency_us = latency.as_micros() as u64, "durq committed");
}

/// After a commit: the group is `lag()` records behind the end of the
/// partition of `slot`. `lag` is called only if the gauge is compiled in:
/// reading the partition's end costs a look-up per commit.
#[inline]
pub(crate) fn lag(slot: &SlotMetrics, lag: impl FnOnce() -> u64) {
    #[cfg(feature = "metrics")]
    slot.handles.lag.set(lag() as f64);
}

/// `group`'s member found, at a commit or a heartbeat, that another member
/// took `partition`'s slot over (it held it at `epoch`).
#[inline]
pub(crate) fn fenced(counters: &Counters, group: &str, partition: u32, epoch: u64, at: FencedAt) {
    if matches!(at, FencedAt::Commit) {
        counters.fenced_commits.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("durq_fenced_commits_total", &counters.metrics.group_labels(group, partition)).increment(1);
    }
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group,
        partition,
        epoch,
        at = ?at,
        "durq fenced: another member took the slot over, this member's work there does not count"
    );
}

/// The record at `position` failed its `attempts`-th delivery to `group`
/// with `error`; it comes again after `delay`.
#[inline]
pub(crate) fn retry(counters: &Counters, group: &str, position: Position, attempts: u32, error: &str, delay: Duration) {
    counters.retries.fetch_add(1, Relaxed);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group,
        partition = position.partition,
        offset = position.offset,
        attempts,
        error,
        delay_ms = delay.as_millis() as u64,
        "durq will deliver a failed record again"
    );
}

/// The record at `position` went to `group`'s dead-letter queue after
/// `deliveries` deliveries, the last failing with `error`.
#[inline]
pub(crate) fn dead_lettered(counters: &Counters, group: &str, position: Position, deliveries: u32, error: &str) {
    counters.dead_letters.fetch_add(1, Relaxed);
    #[cfg(feature = "metrics")]
    metrics::counter!("durq_dead_letters_total", &counters.metrics.group_labels(group, position.partition))
        .increment(1);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group,
        partition = position.partition,
        offset = position.offset,
        deliveries,
        error,
        "durq moved a record to the dead-letter queue"
    );
}

/// Whom a slot was taken over from: what the takeover event names.
// Read by the `tracing` event only.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) struct OldHolder<'a> {
    /// `"dead"` (its member file unlocked) or `"hung"` (silent for longer
    /// than its lease timeout).
    pub(crate) was: &'static str,
    pub(crate) member: &'a [u8; 16],
    pub(crate) pid: u32,
    pub(crate) host: &'a str,
    pub(crate) epoch: u64,
    pub(crate) heartbeat_ms: u64,
}

/// `group`'s member took `partition`'s slot at `epoch` in `took`; a
/// takeover (counted, and at `warn`) if it was taken from a dead or hung
/// member (`taken_over`).
#[inline]
pub(crate) fn slot_taken(
    counters: &Counters,
    group: &str,
    partition: u32,
    epoch: u64,
    taken_over: Option<OldHolder<'_>>,
    took: Duration,
) {
    if let Some(old) = taken_over {
        counters.takeovers.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("durq_takeovers_total", &counters.metrics.group_labels(group, partition)).increment(1);
        took_over(group, partition, epoch, &old, took);
    } else {
        #[cfg(feature = "tracing")]
        tracing::info!(group, partition, epoch, took_us = took.as_micros() as u64, "durq took a slot");
    }
}

#[inline]
fn took_over(group: &str, partition: u32, epoch: u64, old: &OldHolder<'_>, took: Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group,
        partition,
        epoch,
        old_holder = %crate::layout::member_hex(old.member),
        old_pid = old.pid,
        old_host = %old.host,
        old_epoch = old.epoch,
        old_was = old.was,
        silent_ms = crate::storage::now_ms().saturating_sub(old.heartbeat_ms),
        took_us = took.as_micros() as u64,
        "durq took a slot over from a {} member", old.was
    );
}

/// `group`'s member gave `partition`'s slot back (at a batch boundary).
#[inline]
pub(crate) fn slot_released(group: &str, partition: u32, epoch: u64) {
    #[cfg(feature = "tracing")]
    tracing::info!(group, partition, epoch, "durq gave a slot back");
}

/// Retention removed `segments` segment files of `segment_bytes` each from
/// `partition` of the queue at `dir`, which every group had passed; the
/// earliest record kept is now at `first_offset`.
#[inline]
pub(crate) fn retention_removed(dir: &Path, partition: u32, segments: usize, segment_bytes: u64, first_offset: u64) {
    let bytes = segments as u64 * segment_bytes;
    #[cfg(feature = "metrics")]
    metrics::counter!("durq_retention_removed_bytes_total", "queue" => dir.display().to_string()).increment(bytes);
    #[cfg(feature = "tracing")]
    tracing::info!(
        queue = %dir.display(),
        partition,
        segments,
        bytes,
        first_offset,
        "durq retention removed segments every group had passed"
    );
}

/// A retention limit removed records group `group` had not processed in
/// `partition`: offsets `from..to` are lost to it (recorded in its skip
/// record before anything was removed). Loud on purpose: the operator chose
/// the limit, and must hear when it costs a group records.
#[inline]
pub(crate) fn retention_skipped(dir: &Path, group: &str, partition: u32, from: u64, to: u64) {
    let records = to.saturating_sub(from);
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "durq_retention_skipped_records_total",
        "queue" => dir.display().to_string(),
        "group" => group.to_owned()
    )
    .increment(records);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        queue = %dir.display(),
        group,
        partition,
        from,
        to,
        records,
        "durq retention limits removed records a group had not processed"
    );
}

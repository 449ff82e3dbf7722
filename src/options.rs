//! Queue and consumer options, their limits, and the durability modes.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FRAME_ALIGN, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};

/// What an acknowledged `send` survives. A property of the queue, stored in
/// its meta file, so every process agrees on what a reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `send` returns once its record is on stable storage: it survives a
    /// process crash and a power loss. Concurrent senders share one sync
    /// (group commit). Consumers see only synced records.
    #[default]
    Sync,
    /// `send` returns once the record is in the shared mapping (survives a
    /// process crash); a background flusher makes it durable within the
    /// interval, and `Producer::flush` makes it durable now. Consumers see
    /// only synced records.
    Interval(Duration),
    /// The page cache only: survives a process crash, not a power loss, until
    /// `Producer::flush`. Consumers see records as soon as they are written.
    Buffered,
}

impl Durability {
    /// True when a reader may see records that are written but not yet synced.
    pub(crate) fn readers_see_unsynced(self) -> bool {
        matches!(self, Durability::Buffered)
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Sync => write!(f, "sync"),
            Durability::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            Durability::Buffered => write!(f, "buffered"),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;

    /// Parses `sync`, `buffered` or `interval:MS`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidOption {
            option: "durability",
            reason: format!("{s:?} is not one of sync, buffered, interval:MS"),
        };
        match s {
            "sync" => Ok(Durability::Sync),
            "buffered" => Ok(Durability::Buffered),
            _ => {
                let ms = s.strip_prefix("interval:").ok_or_else(bad)?;
                let ms: u64 = ms.parse().map_err(|_| bad())?;
                Ok(Durability::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Default size of one segment file: 64 MiB. See ARCHITECTURE.md for why.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment: 64 KiB (a whole number of pages, room for a few frames).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment: 1 GiB, so a byte position always fits in a `u32`-sized
/// frame budget and a whole segment can be mapped on any host durq builds
/// for (64-bit only, see `storage/mmap.rs`).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Default limit on key + payload bytes of one record: 1 MiB.
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 1 << 20;
/// Largest number of partitions a queue may have.
pub const PARTITIONS_MAX: u32 = 1024;
/// Interval mode's shortest flush interval.
pub const INTERVAL_MIN: Duration = Duration::from_millis(1);
/// Interval mode's longest flush interval: an hour.
pub const INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// Options for creating a queue. On an existing queue, only the options the
/// caller set explicitly are checked against the stored ones.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub(crate) partitions: Option<u32>,
    pub(crate) durability: Option<Durability>,
    pub(crate) segment_bytes: Option<u64>,
    pub(crate) record_bytes_max: Option<u32>,
    pub(crate) retention_max_bytes: Option<u64>,
    pub(crate) retention_max_age: Option<Duration>,
}

impl Options {
    /// Number of partitions (default 1; fixed at creation).
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = Some(n);
        self
    }

    /// What an acknowledgement means (default [`Durability::Sync`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = Some(d);
        self
    }

    /// Size of each segment file in bytes (default 64 MiB; a multiple of
    /// 4096 between 64 KiB and 1 GiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = Some(bytes);
        self
    }

    /// Largest key + payload of one record (default 1 MiB; at most what fits
    /// one segment).
    pub fn record_bytes_max(mut self, bytes: u32) -> Self {
        self.record_bytes_max = Some(bytes);
        self
    }

    /// Most bytes of segment files each partition keeps (default unlimited).
    /// A retention pass removes a partition's oldest segments while their
    /// total exceeds this, even records a group has not processed: that
    /// group's skip is recorded durably first (`durq stat` shows it) and it
    /// resumes at the first kept record. The last two segments of a
    /// partition always stay, so a partition holds at least two segments
    /// whatever the limit. Stored with the queue; [`crate::Queue::change_retention`]
    /// changes it.
    pub fn retention_max_bytes(mut self, bytes: u64) -> Self {
        self.retention_max_bytes = Some(bytes);
        self
    }

    /// Longest a partition keeps a segment once a newer one has started
    /// (default unlimited): a segment whose records were all written more
    /// than `age` ago is removed, with the same rules as
    /// [`Options::retention_max_bytes`].
    pub fn retention_max_age(mut self, age: Duration) -> Self {
        self.retention_max_age = Some(age);
        self
    }

    /// The partition count the caller set, or `None`: another backend
    /// (durq-nats) checks what was set against a stored queue, as
    /// `Queue::open_with` does.
    pub fn requested_partitions(&self) -> Option<u32> {
        self.partitions
    }

    /// The durability the caller set, or `None`.
    pub fn requested_durability(&self) -> Option<Durability> {
        self.durability
    }

    /// The record size limit the caller set, or `None`.
    pub fn requested_record_bytes_max(&self) -> Option<u32> {
        self.record_bytes_max
    }

    /// The retention limits the caller set, unlimited where it set none.
    pub(crate) fn requested_retention(&self) -> Retention {
        Retention { max_bytes: self.retention_max_bytes, max_age: self.retention_max_age }
    }

    /// The options a new queue is created with: the caller's, defaults for
    /// the rest, validated.
    pub fn resolve(&self) -> Result<QueueConfig> {
        let config = QueueConfig {
            partitions: self.partitions.unwrap_or(1),
            durability: self.durability.unwrap_or_default(),
            segment_bytes: self.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT),
            record_bytes_max: self.record_bytes_max.unwrap_or(RECORD_BYTES_MAX_DEFAULT),
            retention: self.requested_retention(),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The options a queue actually has, as stored in its meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// What an acknowledgement means.
    pub durability: Durability,
    /// Size of each segment file.
    pub segment_bytes: u64,
    /// Largest key + payload of one record.
    pub record_bytes_max: u32,
    /// How much each partition keeps at most, whatever the groups have
    /// processed.
    pub retention: Retention,
}

/// Retention limits of a queue, per partition; `None` is unlimited (the
/// default: segments go only once every group has processed them).
///
/// A limit removes whole segments, oldest first, never the last two of a
/// partition and never a record not yet durable. A group that had not
/// processed what a limit removed has the skipped range recorded durably
/// before anything is removed, and resumes at the first kept record. A
/// full disk does not set a limit off: with none configured, a full disk
/// fails sends (`Error::Io` with `ENOSPC`), it never drops records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Most bytes of segment files per partition.
    pub max_bytes: Option<u64>,
    /// Longest a segment is kept after its last record was written.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// No limit: the default.
    pub const UNLIMITED: Retention = Retention { max_bytes: None, max_age: None };

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

impl std::fmt::Display for Retention {
    /// `max_bytes=B|unlimited max_age_secs=S|unlimited`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max_bytes {
            Some(b) => write!(f, "max_bytes={b}")?,
            None => write!(f, "max_bytes=unlimited")?,
        }
        match self.max_age {
            Some(a) => write!(f, " max_age_secs={}", a.as_secs_f64()),
            None => write!(f, " max_age_secs=unlimited"),
        }
    }
}

impl QueueConfig {
    /// Checks every option's range (`InvalidOption`); another backend
    /// (durq-nats) checks them as the local consumer does.
    #[doc(hidden)]
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, reason: String| Err(Error::InvalidOption { option, reason });
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return invalid("partitions", format!("{} is not in 1..={PARTITIONS_MAX}", self.partitions));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(4096)
        {
            return invalid(
                "segment_bytes",
                format!(
                    "{} is not a multiple of 4096 in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        // The largest record's frame: its header, its bytes, and at most
        // `FRAME_ALIGN` bytes of padding.
        let fits = self.segment_bytes - (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + FRAME_ALIGN) as u64;
        if self.record_bytes_max == 0 || u64::from(self.record_bytes_max) > fits {
            return invalid(
                "record_bytes_max",
                format!("{} is not in 1..={fits} (what fits one segment)", self.record_bytes_max),
            );
        }
        if let Durability::Interval(d) = self.durability
            && !(INTERVAL_MIN..=INTERVAL_MAX).contains(&d)
        {
            return invalid("durability", format!("interval {d:?} is not in 1 ms..=1 h"));
        }
        if self.retention.max_bytes == Some(0) {
            return invalid("retention_max_bytes", "must be at least 1 (leave it unset for no limit)".into());
        }
        // Stored as whole milliseconds, 0 meaning unlimited.
        if let Some(age) = self.retention.max_age
            && (age < Duration::from_millis(1) || age.as_millis() > u128::from(u64::MAX))
        {
            return invalid("retention_max_age", format!("{age:?} is not at least 1 ms"));
        }
        Ok(())
    }
}

/// Default number of records handed to one `process` call.
pub const MAX_BATCH_DEFAULT: usize = 64;
/// Largest `max_batch`.
pub const MAX_BATCH_LIMIT: usize = 1 << 20;

/// Default time without a heartbeat after which a member counts as hung.
pub const LEASE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default number of deliveries before a record goes to the dead-letter
/// queue (RocketMQ's default).
pub const MAX_DELIVERIES_DEFAULT: u32 = 16;
/// Default pause between membership checks while a consumer waits.
pub const REBALANCE_INTERVAL_DEFAULT: Duration = Duration::from_millis(20);

/// Default pauses before redelivering a failed record, by failed attempt
/// (RocketMQ's schedule from 1 s; the last one repeats).
pub fn retry_backoff_default() -> Vec<Duration> {
    [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// Options for a consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub(crate) max_batch: usize,
    pub(crate) lease_timeout: Duration,
    pub(crate) rebalance_interval: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) retry_backoff: Vec<Duration>,
    pub(crate) commit: Durability,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            max_batch: MAX_BATCH_DEFAULT,
            lease_timeout: LEASE_TIMEOUT_DEFAULT,
            rebalance_interval: REBALANCE_INTERVAL_DEFAULT,
            max_deliveries: MAX_DELIVERIES_DEFAULT,
            retry_backoff: retry_backoff_default(),
            commit: Durability::Sync,
        }
    }
}

impl ConsumerOptions {
    /// Most records handed to one `process` call (default 64; 1..=1,048,576).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// How long a member may go without a heartbeat before others take its
    /// slots over (default 10 s). A member heartbeats while it waits for
    /// records and between batches, so this must exceed the longest time a
    /// `process` closure runs.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// How often a waiting member checks who is alive and which slots it
    /// should hold (default 20 ms): the bound on how long a dead member's
    /// slot stays unattended while a standby waits.
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// Deliveries of a failing record before it goes to the group's
    /// dead-letter queue (default 16).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Pauses before redelivering a failed record, by attempt; the last one
    /// repeats (default 1 s, 5 s, 10 s, 30 s, 1 min, 2 min, … 30 min).
    pub fn retry_backoff(mut self, schedule: Vec<Duration>) -> Self {
        self.retry_backoff = schedule;
        self
    }

    /// What a commit survives once `process` returned `Ok` (default
    /// [`Durability::Sync`]):
    ///
    /// - `Sync`: the checkpoint is on stable storage before `process`
    ///   returns (one msync per batch).
    /// - `Interval(d)`: the new position is stored at once in the shared
    ///   mapping of the checkpoint file, where a crash of the process
    ///   cannot lose it (a SIGKILL redelivers only the batch in flight),
    ///   and a background thread, one per consumer for all its slots,
    ///   syncs it within `d`. After a power cut at most the records
    ///   committed in the last `d` come again; none is skipped. (A member
    ///   killed before its sync leaves its stored position to the member
    ///   that takes its slots over, which syncs it before it starts, or to
    ///   the kernel's writeback.)
    /// - `Buffered`: as `Interval`, synced only by [`Consumer::flush`], on
    ///   drop, and before a slot is handed to another member.
    ///
    /// Under every mode a slot is handed over only once its position is
    /// durable, and a fenced member's position never takes effect.
    /// Retention frees only what the *synced* positions passed.
    ///
    /// [`Consumer::flush`]: crate::Consumer::flush
    pub fn commit(mut self, durability: Durability) -> Self {
        self.commit = durability;
        self
    }

    /// The batch limit set, for another backend (durq-nats). Not part of
    /// the API.
    #[doc(hidden)]
    pub fn configured_max_batch(&self) -> usize {
        self.max_batch
    }

    /// The lease timeout set (as [`ConsumerOptions::configured_max_batch`]).
    #[doc(hidden)]
    pub fn configured_lease_timeout(&self) -> Duration {
        self.lease_timeout
    }

    /// The rebalance interval set (as [`ConsumerOptions::configured_max_batch`]).
    #[doc(hidden)]
    pub fn configured_rebalance_interval(&self) -> Duration {
        self.rebalance_interval
    }

    /// The delivery limit set (as [`ConsumerOptions::configured_max_batch`]).
    #[doc(hidden)]
    pub fn configured_max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// The pause before redelivering a record that failed `attempts` times.
    #[doc(hidden)]
    pub fn backoff(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry_backoff.len().saturating_sub(1));
        self.retry_backoff.get(i).copied().unwrap_or_default()
    }

    /// Checks every option's range (`InvalidOption`); another backend
    /// (durq-nats) checks them as the local consumer does.
    #[doc(hidden)]
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, reason: String| Err(Error::InvalidOption { option, reason });
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            return invalid("max_batch", format!("{} is not in 1..={MAX_BATCH_LIMIT}", self.max_batch));
        }
        if self.lease_timeout < Duration::from_millis(10) || self.lease_timeout > Duration::from_secs(86_400) {
            return invalid("lease_timeout", format!("{:?} is not in 10 ms..=1 day", self.lease_timeout));
        }
        if self.rebalance_interval.is_zero() || self.rebalance_interval > self.lease_timeout / 2 {
            return invalid(
                "rebalance_interval",
                format!("{:?} is not in (0, lease_timeout / 2]", self.rebalance_interval),
            );
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries", "must be at least 1".into());
        }
        if self.retry_backoff.is_empty() {
            return invalid("retry_backoff", "needs at least one pause (it may be zero)".into());
        }
        if let Durability::Interval(d) = self.commit
            && !(INTERVAL_MIN..=INTERVAL_MAX).contains(&d)
        {
            return invalid("commit", format!("interval {d:?} is not in 1 ms..=1 h"));
        }
        Ok(())
    }
}

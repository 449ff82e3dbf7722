//! Queue and consumer options, their limits, and the durability modes.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::record::FRAME_HEADER_BYTES;
use crate::log::segment::SEGMENT_HEADER_BYTES;

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
/// frame budget and a whole segment can be mapped on any 64-bit host.
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

    /// The options a new queue is created with: the caller's, defaults for
    /// the rest, validated.
    pub(crate) fn resolve(&self) -> Result<QueueConfig> {
        let config = QueueConfig {
            partitions: self.partitions.unwrap_or(1),
            durability: self.durability.unwrap_or_default(),
            segment_bytes: self.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT),
            record_bytes_max: self.record_bytes_max.unwrap_or(RECORD_BYTES_MAX_DEFAULT),
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
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<()> {
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
        let fits = self.segment_bytes - SEGMENT_HEADER_BYTES as u64 - FRAME_HEADER_BYTES as u64 - 8;
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
        Ok(())
    }
}

/// Default number of records handed to one `process` call.
pub const MAX_BATCH_DEFAULT: usize = 64;
/// Largest `max_batch`.
pub const MAX_BATCH_LIMIT: usize = 1 << 20;

/// Options for a consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub(crate) max_batch: usize,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions { max_batch: MAX_BATCH_DEFAULT }
    }
}

impl ConsumerOptions {
    /// Most records handed to one `process` call (default 64; 1..=1,048,576).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            return Err(Error::InvalidOption {
                option: "max_batch",
                reason: format!("{} is not in 1..={MAX_BATCH_LIMIT}", self.max_batch),
            });
        }
        Ok(())
    }
}

//! durq: an embedded, single-host, durable message queue that never loses a
//! message.
//!
//! A queue is a directory of memory-mapped segment files, split into
//! partitions. Producers in any number of threads and processes append to
//! it; consumer groups share its partitions and commit their position only
//! after their own work is done. This page is a short guide: what durq
//! promises, and how to use each promise. README.md has the `durq` command,
//! ARCHITECTURE.md how it works, docs/FORMAT.md every byte on disk and
//! docs/RELIABILITY.md how each promise is tested. The `examples/` folder
//! has whole programs: `quickstart`, `worker_pool`, `dead_letters`,
//! `manual_commit` and `exactly_once` (`cargo run --example NAME`).
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let queue = durq::Queue::open(tmp.path().join("orders"))?;
//! queue.producer().send(b"order 1: 100 yuan")?;
//!
//! let mut red_packets = queue.consumer("red-packet")?;
//! red_packets.process(|batch| {
//!     for m in batch {
//!         println!("grant a red packet for {}", String::from_utf8_lossy(m.payload()));
//!     }
//!     Ok::<(), std::io::Error>(()) // only now is the batch committed
//! })?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Acknowledged means durable.** Under [`Durability::Sync`] (the
//!   default), [`Producer::send`] returns only once the record is on stable
//!   storage: it survives a process crash and a power loss.
//! - **Processed means processed.** A consumer group's checkpoint advances
//!   only after the caller's `process` closure has *returned `Ok`* for the
//!   batch: work that was not finished is delivered again, never skipped.
//!   Delivery is at least once; [`Message::is_redelivery`] says when a
//!   record may have been handed out before.
//! - **Damage is reported, never delivered.** Every record carries a CRC32
//!   over its whole frame; damaged data is [`Error::Corrupt`] with its file
//!   and byte position, never delivered, never silently dropped. Crash
//!   recovery zeroes only torn tails that were never acknowledged.
//! - **Fail-stop.** After a failed fsync the handle refuses further writes
//!   ([`Error::Stopped`]) instead of retrying into silent loss.
//! - **Order.** Within a partition records are delivered in offset order;
//!   records sent with the same key ([`Producer::send_keyed`]) go to the
//!   same partition ([`partition_of_key`]).
//!
//! # Durability modes
//!
//! What an acknowledged send survives is a property of the queue, chosen at
//! creation ([`Options::durability`]) and stored with it, so that every
//! process agrees on what a consumer may see:
//!
//! | mode | `send` returns once the record is | process crash | power loss, OS crash | consumers see a record |
//! |---|---|---|---|---|
//! | [`Durability::Sync`] | on stable storage (concurrent senders share a sync) | survives | survives | once synced |
//! | [`Durability::Interval`]`(d)` | in the shared mapping; a background thread syncs every `d` | survives | loses at most the last `d` | once synced |
//! | [`Durability::Buffered`] | in the page cache | survives | loses what was not flushed | at once |
//!
//! [`Producer::flush`] makes everything sent so far durable, in any mode.
//! Under `Buffered`, a consumer's commit first makes the log durable up to
//! what it commits, so a group never passes a record that a power loss
//! could take back. [`Queue::change_durability`] changes the mode of a
//! queue nobody has open.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let path = tmp.path().join("ticks");
//! use durq::{Durability, Options, Queue};
//! use std::time::Duration;
//!
//! let every_10_ms = Durability::Interval(Duration::from_millis(10));
//! let queue = Queue::open_with(&path, Options::default().durability(every_10_ms))?;
//! let producer = queue.producer();
//! producer.send(b"tick")?; // survives a crash of this process
//! producer.flush()?; // and now a power loss too
//! drop((producer, queue));
//!
//! // Every process must agree on the mode: it changes only while the
//! // queue is closed, and an open that asks for another is refused.
//! Queue::change_durability(&path, Durability::Sync)?;
//! assert_eq!(Queue::open(&path)?.config().durability, Durability::Sync);
//! assert!(Queue::open_with(&path, Options::default().durability(Durability::Buffered)).is_err());
//! # Ok(()) }
//! ```
//!
//! # The consumer contract
//!
//! A [`Consumer`] is a member of a named group; the group keeps one
//! position (checkpoint) per partition. Three ways to consume, one rule:
//! nothing is committed before the work is done.
//!
//! - [`Consumer::process`] hands a batch (from one partition, in offset
//!   order) to a closure and commits it durably once the closure returns
//!   `Ok`. An `Err` or a panic commits nothing; the records come again
//!   after the retry backoff ([`ConsumerOptions::retry_backoff`]), one at a
//!   time, so that the record that fails is found.
//! - [`Consumer::process_each`] takes a [`Verdict`] per record: `Done`,
//!   `Retry` (this one later; the ones before it are committed) or
//!   `DeadLetter` (never: it goes to the group's dead-letter queue with the
//!   reason, durably, before the group moves past it).
//! - [`Consumer::poll`] returns a [`Delivery`] to [`Delivery::commit`] once
//!   the work is done, for callers who cannot work inside a closure;
//!   dropping it uncommitted means redelivery.
//!
//! A record that fails [`ConsumerOptions::max_deliveries`] times (16 by
//! default) goes to the dead-letter queue by itself, so one poison record
//! cannot block its partition. [`Queue::dead_letters`] lists them and
//! [`Queue::replay_dead_letters`] sends them back (`durq dlq list|replay`).
//! For effects that must happen once, keep the record's [`Position`] in
//! the same transaction as the effect (`examples/exactly_once.rs`).
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! use durq::{Queue, Verdict};
//! use std::time::Duration;
//!
//! let queue = Queue::open(tmp.path().join("orders"))?;
//! queue.producer().send_batch(["order 1: 100", "order 2: one hundred", "order 3: 66"])?;
//! let mut consumer = queue.consumer("red-packet")?;
//! let committed = consumer.process_each(Duration::from_secs(1), |m| {
//!     match std::str::from_utf8(m.payload()).ok().and_then(|o| o.rsplit(' ').next()?.parse::<u32>().ok()) {
//!         Some(_amount) => Verdict::Done, // grant the red packet here
//!         None => Verdict::DeadLetter("amount is not a number".into()),
//!     }
//! })?;
//! assert_eq!(committed, 3);
//! let letters = queue.dead_letters("red-packet", 10)?;
//! assert_eq!(letters[0].payload, b"order 2: one hundred");
//! assert_eq!(letters[0].reason, "amount is not a number");
//! # Ok(()) }
//! ```
//!
//! # Failover and fencing
//!
//! Any number of consumers of a group, in threads or processes, share its
//! partitions: each partition is a slot that one live member holds, and
//! the members split the slots fairly. A member that dies (a crash, a
//! SIGKILL) is noticed at once, because the kernel releases its locks; a
//! live member takes its slots at its next membership check
//! ([`ConsumerOptions::rebalance_interval`], 20 ms) and resumes from their
//! checkpoints. A member that hangs stops heartbeating, and is taken over
//! after [`ConsumerOptions::lease_timeout`] (10 s by default; it must exceed
//! the longest batch). The takeover raises the slot's epoch, which *fences*
//! the old holder: if it wakes up and commits, the commit is refused with
//! [`Error::Fenced`] and can never move the group's position, and its
//! batch is processed by the new holder.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! use durq::{ConsumerOptions, Error, Queue};
//! use std::time::Duration;
//!
//! let queue = Queue::open(tmp.path().join("orders"))?;
//! queue.producer().send(b"order 1")?;
//! let options = ConsumerOptions::default().lease_timeout(Duration::from_millis(50));
//! let mut slow = queue.consumer_with("red-packet", options.clone())?;
//! let delivery = slow.poll(Duration::from_secs(5))?.expect("order 1");
//! // `slow` hangs with the batch: no heartbeat, so after the lease timeout
//! // another member takes the slot over and processes the batch itself.
//! let mut other = queue.consumer_with("red-packet", options)?;
//! let n = other.process_timeout(Duration::from_secs(5), |batch| {
//!     assert_eq!(batch[0].payload(), b"order 1");
//!     Ok::<(), std::io::Error>(())
//! })?;
//! assert_eq!(n, 1);
//! // `slow` wakes up and commits: refused, the new holder's commit stands.
//! assert!(matches!(delivery.commit(), Err(Error::Fenced { partition: 0, .. })));
//! # Ok(()) }
//! ```
//!
//! # Retention
//!
//! A partition's log is a series of segment files
//! ([`Options::segment_bytes`], 64 MiB by default). A segment is removed
//! once every registered group has processed past it: after a roll to a
//! new segment, when a roll finds the disk full, or now by
//! [`Queue::reclaim`] (`durq gc`), which says what holds the rest back
//! ([`RetentionLimit`]). With no group, nothing is removed; a group holds
//! retention back until it is deleted ([`Queue::delete_group`]). A failed
//! removal never fails a send; [`stat`] counts it. A [`Reader`] reads
//! without a group and holds nothing back.
//!
//! Retention limits ([`Options::retention_max_bytes`],
//! [`Options::retention_max_age`], per partition, unlimited by default,
//! changed by [`Queue::change_retention`]) bound the disk a queue takes even
//! when a group stops: they may remove records a group has not processed.
//! Such a loss is recorded durably in the group's skip record before
//! anything is removed, shown by [`stat`], reported as a `warn` event and a
//! metric, and the group resumes at the first kept record, never at 0.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! use durq::{Options, Queue, SEGMENT_BYTES_MIN};
//! use std::time::Duration;
//!
//! let small = Options::default().segment_bytes(SEGMENT_BYTES_MIN).record_bytes_max(4096);
//! let queue = Queue::open_with(tmp.path().join("q"), small)?;
//! let mut archive = queue.consumer("archive")?; // holds retention back from now on
//! for _ in 0..4 {
//!     queue.producer().send_batch(vec![[0u8; 1000]; 100])?; // 100 kB: more than a segment
//! }
//! while archive.process_timeout(Duration::ZERO, |_| Ok::<(), std::io::Error>(()))? > 0 {}
//! let reclaimed = queue.reclaim()?;
//! assert!(queue.offsets(0)?.0 > 0, "the segments the group passed are gone: {reclaimed:?}");
//! # Ok(()) }
//! ```
//!
//! # Async
//!
//! With the feature `tokio`, [`Producer`] and [`Consumer`] have async forms
//! (`send_async`, `send_keyed_async`, `send_batch_async`, `flush_async`,
//! and `process_async` handing an owned `Batch`) that never block a
//! runtime thread and follow the same rules: under `Sync` an awaiting
//! sender is woken by the group commit that covers its record; the
//! checkpoint advances only after the batch's future resolves `Ok`, and a
//! dropped future commits nothing (the batch comes again).
//!
//! # Observability
//!
//! [`Queue::stats`] counts what this process did since it opened the queue
//! (records and bytes appended and consumed, syncs, commits, redeliveries,
//! retries, dead letters, takeovers, fenced commits), with no feature. With
//! the feature `tracing`, durq sends events to the service's subscriber:
//! recovery on open, slots taken over from a dead or hung member (naming
//! it), fenced commits, retries, dead letters, retention deletions, sync
//! errors and fail-stop; nothing per message above `trace`. With the
//! feature `metrics`, it feeds the `metrics` facade `durq_*` counters,
//! histograms (sync and commit latency) and lag gauges. docs/OBSERVABILITY.md
//! lists every event and metric.
//!
//! # Limits
//!
//! Every size has a limit, checked when a queue or consumer is created,
//! and a record over it is refused with an error, never cut:
//!
//! - partitions: 1 to [`PARTITIONS_MAX`] (1,024), fixed at creation;
//! - segments: [`SEGMENT_BYTES_MIN`] (64 KiB) to [`SEGMENT_BYTES_MAX`]
//!   (1 GiB), a multiple of 4,096;
//! - a record's key and payload together: [`RECORD_BYTES_MAX_DEFAULT`]
//!   (1 MiB) unless [`Options::record_bytes_max`] says otherwise, at most
//!   what fits one segment ([`Error::RecordTooLarge`]); a key: at most
//!   [`KEY_BYTES_MAX`] bytes;
//! - [`Producer::send_batch`] is atomic, even across a crash, when it fits
//!   one segment; a larger batch is split at segment boundaries;
//! - `Interval` syncs every [`INTERVAL_MIN`] (1 ms) to [`INTERVAL_MAX`]
//!   (1 h);
//! - a group name: 1 to 64 bytes of ASCII letters, digits, `-`, `_`, `.`;
//!   a batch: at most [`ConsumerOptions::max_batch`] records (64 by default).
//!
//! durq runs on 64-bit Linux, on one host: every process that opens a
//! queue shares its mappings, locks and futexes, so all of them run where
//! the queue's file system is local. A copy-on-write file system (btrfs,
//! ZFS) is not supported where the disk may fill up (the README says why).
//!
//! # Inspection
//!
//! [`stat()`](stat::stat) (`durq stat`) shows offsets, segments, and for each group
//! its members, slots, committed positions, lag and dead letters;
//! [`verify()`](verify::verify) (`durq verify`) checks every frame and checkpoint and
//! reports each problem with its file and byte position. Both only read:
//! no lock, no write, no recovery, so they run beside a queue in use, with
//! read access to its directory.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let path = tmp.path().join("orders");
//! let queue = durq::Queue::open(&path)?;
//! queue.producer().send_batch(["order 1", "order 2"])?;
//! let _group = queue.consumer("red-packet")?;
//!
//! let stat = durq::stat::stat(&path)?;
//! assert_eq!(stat.partitions[0].next_offset, 2);
//! assert_eq!(stat.groups[0].name, "red-packet");
//! assert_eq!(stat.groups[0].lag, [Some(2)]);
//!
//! let report = durq::verify::verify(&path)?;
//! assert_eq!(report.records, 2);
//! assert!(report.problems.is_empty());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
// Library code returns errors; it does not panic on the world (tests may:
// clippy.toml allows it there).
#![deny(clippy::unwrap_used, clippy::expect_used)]
// File-system effects only through `storage` (clippy.toml says why).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod admin;
#[cfg(feature = "tokio")]
mod asynchronous;
mod codec;
mod consumer;
mod error;
mod fail_stop;
mod format;
mod group;
mod layout;
mod log;
mod meta;
mod observe;
mod options;
mod position;
mod producer;
mod queue;
mod reader;
mod retention;
pub mod stat;
mod storage;
pub mod verify;

pub use admin::{ResetTo, StoredRecord};
#[cfg(feature = "tokio")]
pub use asynchronous::{Batch, OwnedRecord};
pub use consumer::{Consumer, Delivery, Message, Verdict};
pub use error::{BoxError, Error, Result};
pub use group::dead_letter::DeadLetter;
pub use log::record::KEY_BYTES_MAX;
pub use observe::Stats;
pub use options::{
    ConsumerOptions, Durability, INTERVAL_MAX, INTERVAL_MIN, Options, PARTITIONS_MAX, QueueConfig,
    RECORD_BYTES_MAX_DEFAULT, Retention, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use position::Position;
pub use producer::{Producer, partition_of_key};
pub use queue::Queue;
pub use reader::Reader;
pub use retention::{GroupSkipped, Reclaimed, RetentionLimit, Skipped};

/// The crate's insides, for its own tests, fuzz targets and benchmarks and
/// for the `durq` command: the file codecs, the directory layout, recovery,
/// the group protocol's files, the simulated disk. Not part of the API:
/// anything here may change in any release, and nothing here keeps the
/// queue's rules (the codecs write files without the open lock, for one).
#[doc(hidden)]
pub mod internals {
    /// Consumer groups' files and protocol.
    pub mod group {
        pub use crate::group::*;
    }
    /// The segmented log: records, segments, recovery, the control file.
    pub mod log {
        pub use crate::log::*;
    }
    /// The queue's meta file.
    pub mod meta {
        pub use crate::meta::*;
    }
    /// Every file and folder name of a queue directory.
    pub mod layout {
        pub use crate::layout::*;
    }
    /// Removing the segments every group has passed, and its failure record.
    pub mod retention {
        pub use crate::retention::*;
    }
    /// The simulated disk (feature `simulation`): power-loss images and I/O
    /// faults for the crate's own tests and fuzz targets.
    #[cfg(feature = "simulation")]
    pub use crate::storage::sim;
}

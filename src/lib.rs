//! durq: an embedded, single-host, durable message queue that never loses a
//! message.
//!
//! - A producer's message, once acknowledged under [`Durability::Sync`],
//!   survives a process crash and a power loss.
//! - A consumer group's checkpoint advances only after the caller's
//!   `process` closure has *returned `Ok`* for the batch: work that was not
//!   finished is delivered again, never skipped.
//! - Every record carries a CRC32 over its whole frame; damaged data is
//!   reported as [`Error::Corrupt`] with its file and byte position, never
//!   delivered, never silently dropped.
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
//! Read ARCHITECTURE.md for how it works and docs/FORMAT.md for every byte
//! on disk.

#![deny(missing_docs)]
// Library code returns errors; it does not panic on the world (tests may:
// clippy.toml allows it there).
#![deny(clippy::unwrap_used, clippy::expect_used)]
// File-system effects only through `storage` (clippy.toml says why).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod admin;
mod codec;
mod consumer;
mod error;
mod fail_stop;
mod format;
mod group;
mod layout;
mod log;
mod meta;
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
pub use consumer::{Consumer, Delivery, Message, Verdict};
pub use error::{BoxError, Error, Result};
pub use group::dead_letter::DeadLetter;
pub use log::record::KEY_BYTES_MAX;
pub use options::{
    ConsumerOptions, Durability, INTERVAL_MAX, INTERVAL_MIN, Options, PARTITIONS_MAX, QueueConfig,
    RECORD_BYTES_MAX_DEFAULT, Retention, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use position::Position;
pub use producer::{Producer, partition_of_key};
pub use queue::Queue;
pub use reader::{Reader, Skipped};
pub use retention::{GroupSkipped, Reclaimed, RetentionLimit};

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

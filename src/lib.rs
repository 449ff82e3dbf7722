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

mod admin;
mod codec;
mod consumer;
mod error;
mod fail_stop;
mod format;
pub mod group;
mod layout;
pub mod log;
pub mod meta;
mod options;
mod position;
mod producer;
mod queue;
mod reader;
pub mod retention;
pub mod stat;
mod storage;
#[cfg(feature = "simulation")]
#[doc(hidden)]
pub use storage::sim;
pub mod verify;

pub use admin::{ResetTo, StoredRecord};
pub use consumer::{Consumer, Delivery, Message, Verdict};
pub use error::{BoxError, Error, Result};
pub use group::dead_letter::DeadLetter;
pub use options::{ConsumerOptions, Durability, Options, QueueConfig};
pub use position::Position;
pub use producer::{Producer, partition_of_key};
pub use queue::Queue;
pub use reader::{Reader, Skipped};

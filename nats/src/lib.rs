//! durq's consumer contract on NATS JetStream: groundwork (issue 14).
//!
//! What is here is the foundation the NATS backend builds on, each piece
//! tested against a real `nats-server`:
//!
//! - [`connect()`]: a connection that refuses a server older than
//!   [`MIN_SERVER_VERSION`] or one without JetStream, each with an error
//!   that says so.
//! - [`Slots`]: the fencing primitive. A consumer group's slots live in a
//!   JetStream key-value bucket and are written only by compare-and-set on
//!   the key's revision: the revision of the write that took a slot is the
//!   holder's fencing epoch, a commit is a compare-and-set on the holder's
//!   last revision, and a zombie's commit fails with [`Error::Fenced`].
//!
//! - [`Queue`] and [`Producer`]: a queue opened by
//!   `nats://host:port/QUEUE` with the local queue's [`durq::Options`],
//!   one stream per partition, and the local producer's API (`send`,
//!   `send_keyed`, `send_batch`, `flush`, and `_async` forms) returning
//!   [`durq::Position`]s and [`durq::Error`]s; engine failures are
//!   [`durq::Error::Engine`] around this crate's [`Error`].
//!
//! - [`Consumer`]: a member of a consumer group with the local consumer's
//!   API (`process`, `process_timeout`, `process_each`, `poll` and
//!   [`Delivery::commit`], `process_async` with the feature `tokio`),
//!   handing out [`durq::Message`]s and committing by compare-and-set on its
//!   slot only after the work returned `Ok`; liveness by heartbeats,
//!   rebalancing, delivery counts and a dead-letter stream per group. Group
//!   reset and delete and the dead letters are `Queue` calls.
//! - [`Reader`]: a partition read in order without a group (`durq tail`).
//! - [`migrate()`]: a local queue's unconsumed records, at the same
//!   offsets, and its groups' positions moved to a new NATS queue.
//!
//! The design, what each durq guarantee becomes on NATS, and what remains to
//! build are in docs/SCALE_OUT.md (a draft).

mod atomic_batch;
mod connect;
mod consumer;
mod dead_letter;
mod error;
mod group_admin;
pub mod group_names;
pub mod member_stat;
mod membership;
pub mod migrate;
mod producer;
mod queue;
mod queue_meta;
pub mod queue_stat;
mod queue_url;
mod reader;
pub mod record;
mod shared;
mod slot;
mod slot_value;
mod version;

pub use connect::{CONNECT_TIMEOUT, Client, connect};
pub use consumer::{Consumer, Delivery};
pub use dead_letter::REASON_BYTES_MAX;
pub use error::{ClientError, ENGINE, Error, Result};
pub use group_names::NAME_BYTES_MAX;
pub use migrate::{Migrated, migrate};
pub use producer::{Producer, SEND_RETRY_WITHIN};
pub use queue::{DUPLICATE_WINDOW, HEADER_ROOM_BYTES, META_BUCKET, Queue};
pub use reader::Reader;
pub use slot::{BUCKET_WRITABLE_WITHIN, Lease, Mark, Progress, SlotState, Slots, SlotsView};
pub use slot_value::HOLDER_BYTES_MAX;
pub use version::{ATOMIC_BATCH_SINCE, MIN_SERVER_VERSION, ServerVersion};

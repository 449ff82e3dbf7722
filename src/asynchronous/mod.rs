//! The async API (feature `tokio`): what lets a tokio service send and
//! consume without blocking its runtime, on the same paths as the blocking
//! API.
//!
//! - `Producer::send_async` and friends (`producer/send_async.rs`) append as
//!   `send` does; under `Sync` they then wait for group commit without a
//!   thread ([`durable`]).
//! - `Consumer::process_async` (`consumer/process_async.rs`) waits for
//!   records and heartbeats through a thread of the consumer's
//!   ([`companion`]), hands the caller an owned [`Batch`], and settles the
//!   outcome exactly as `process` does.

mod batch;
mod companion;
mod durable;

pub use batch::{Batch, OwnedRecord};
pub(crate) use companion::{Companion, Wait};
pub(crate) use durable::{Durable, DurableWaiters};

//! [`Consumer::process_async`] (feature `tokio`): [`Consumer::process`] for
//! async code, on the same paths, handing the caller durq's owned
//! [`durq::Batch`].
//!
//! - **Waiting** for records and the slot writes run on the caller's task
//!   (the client's own tasks run on the queue's runtime), so nothing blocks
//!   a runtime thread. The caller's runtime needs its timer enabled (as
//!   `#[tokio::main]` has).
//! - **While the future is awaited** the member's background task keeps
//!   heartbeating the slots, however long the batch takes, so a busy
//!   runtime does not cost the batch its slots (the blocking forms stop
//!   after `lease_timeout`, as the local consumer's do).
//! - **The outcome** goes through `Consumer::settle`, as `process`'s does.
//! - **Dropping the future** while the batch is out commits nothing and
//!   counts a failed delivery: the batch comes again, one record at a time,
//!   and the consumer stays usable.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use durq::{BoxError, OwnedRecord};

use super::{Consumer, Taken};

impl Consumer {
    /// Waits for records without blocking the runtime, hands a
    /// [`durq::Batch`] of them (from one partition, in offset order) to
    /// `f`, awaits the future `f` returns, and commits the batch once it
    /// resolves `Ok`. Returns the number of records processed.
    ///
    /// Exactly as [`Consumer::process`]: if the future resolves `Err` or
    /// panics (or `f` panics), nothing is committed and the records come
    /// again after the backoff. If this future is dropped before it
    /// completes, nothing is committed either: the batch counts as a failed
    /// delivery and comes again.
    ///
    /// # Errors
    /// As [`Consumer::process`].
    pub async fn process_async<F, Fut, E>(&mut self, f: F) -> durq::Result<usize>
    where
        F: FnOnce(durq::Batch) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<BoxError>,
    {
        let Some(taken) = self.next_batch(None).await? else {
            unreachable!("a wait without a timeout ends only with a batch")
        };
        // Heartbeats go on while the caller's future runs.
        self.membership.batch_out(false);
        let batch = durq::Batch::from_records(taken.owned_records());
        let mut out = Out { consumer: self, taken: Some(taken) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(batch))) {
            Ok(future) => {
                let mut future = std::pin::pin!(future);
                std::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(poll) => poll.map(Ok),
                    Err(panic) => std::task::Poll::Ready(Err(panic)),
                })
                .await
            }
            Err(panic) => Err(panic),
        };
        let taken = out.taken.take().expect("settled once");
        out.consumer.settle(taken, outcome.map(|done| done.map_err(Into::into))).await
    }
}

impl Taken {
    /// The records as durq's owned batch wants them (a copy of each).
    fn owned_records(&self) -> Vec<OwnedRecord> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| OwnedRecord {
                position: r.position,
                timestamp_ms: r.timestamp_ms,
                delivery_count: self.delivery_count(i),
                key: r.key.clone().map(Vec::into_boxed_slice),
                payload: r.payload.to_vec().into_boxed_slice(),
            })
            .collect()
    }
}

/// A batch in the caller's hands. Dropped before it was settled (the
/// `process_async` future was dropped mid-batch), it counts a failed
/// delivery.
struct Out<'c> {
    consumer: &'c mut Consumer,
    taken: Option<Taken>,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        if let Some(taken) = self.taken.take() {
            self.consumer.fail_here(&taken);
        }
    }
}

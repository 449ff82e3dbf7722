//! [`Consumer::process_async`] (feature `tokio`): [`Consumer::process`] for
//! async code, on the same paths.
//!
//! - **Waiting** for records happens on the consumer's companion thread
//!   (`asynchronous::companion`), parked on the same futex as a blocking
//!   consumer; the task sleeps on a `Notify` meanwhile. Rebalancing and
//!   reading a batch run on the task, as they run on a blocking consumer's
//!   thread between waits: small reads and writes of the group's files.
//! - **The batch** is an owned [`Batch`] sharing the segment's mapping, so
//!   the caller's future may be `'static` and be spawned.
//! - **While the future is awaited** the companion heartbeats the member and
//!   its slots, so a busy runtime cannot cost the batch its slots.
//! - **The outcome** goes through `Consumer::settle`, as `process`'s does:
//!   `Ok` commits (the same durable commit, on the task: one msync of the
//!   checkpoint, and under `Buffered`/`Interval` the log's sync first);
//!   `Err` and a panic count a failed delivery (backoff, one record at a
//!   time, dead-letter queue).
//! - **Dropping the future** while the batch is out commits nothing and
//!   counts a failed delivery, as dropping a [`crate::Delivery`] does: the
//!   batch comes again, and the consumer stays usable. Dropped while it
//!   waits, nothing happened at all.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Batch as Taken, Consumer, Next};
use crate::asynchronous::{Batch, Companion, Wait};
use crate::error::{BoxError, Result};
use crate::queue::QueueInner;

impl Consumer {
    /// Waits for records without blocking the runtime, hands a [`Batch`] of
    /// them (from one partition, in offset order) to `f`, awaits the future
    /// `f` returns, and commits the batch durably once it resolves `Ok`.
    /// Returns the number of records processed.
    ///
    /// Exactly as [`Consumer::process`]: if the future resolves `Err` or
    /// panics (or `f` panics), nothing is committed, the error is returned as
    /// [`crate::Error::Process`] or [`crate::Error::ProcessPanicked`], and the
    /// records come again after the backoff, one at a time, a record that
    /// fails `max_deliveries` times going to the dead-letter queue. If this
    /// future is dropped before it completes, nothing is committed either:
    /// the batch counts as a failed delivery and comes again, and the
    /// consumer stays usable.
    ///
    /// The future is `Send` whenever `f` and its future are, so it can be
    /// `tokio::spawn`ed with the consumer moved in. While the batch's future
    /// is awaited, a thread of the consumer keeps its slots' leases fresh,
    /// so a long batch or a busy runtime does not lose them to a takeover.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), durq::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let queue = durq::Queue::open(tmp.path().join("q"))?;
    /// queue.producer().send_async(b"order 1").await?;
    /// let mut consumer = queue.consumer("billing")?;
    /// let n = consumer
    ///     .process_async(|batch| async move {
    ///         for m in &batch {
    ///             assert_eq!(m.payload(), b"order 1");
    ///         }
    ///         Ok::<(), std::io::Error>(())
    ///     })
    ///     .await?;
    /// assert_eq!(n, 1);
    /// # Ok(()) }
    /// ```
    pub async fn process_async<F, Fut, E>(&mut self, f: F) -> Result<usize>
    where
        F: FnOnce(Batch) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        self.stopped.check()?;
        let taken = loop {
            let timeout = match self.next_step(None)? {
                Next::Batch(taken) => break taken,
                Next::Wait(timeout) => timeout,
                Next::TimedOut => Duration::ZERO,
            };
            let wait = Wait { watch: self.watched(), timeout, exits: self.exits.signal() };
            started(&mut self.companion, &self.queue)?.wait(wait).await;
        };
        let every = self.options.rebalance_interval;
        let companion = started(&mut self.companion, &self.queue)?;
        if let Err(e) = companion.start_heartbeats(|previous| self.membership.pulse(previous), every) {
            // Without heartbeats the batch could not be held safely: hand it
            // to nobody, and deliver it again.
            self.fail(taken, &e.to_string(), None)?;
            return Err(e);
        }
        let batch = Batch::new(&taken.span, taken.messages());
        let out = Out { consumer: self, taken: Some(taken) };
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
        out.settle(outcome)
    }

    /// The held slots a wait for records watches, each with the offset its
    /// next record gets; slots in a backoff are left to the wait's timeout.
    fn watched(&self) -> Vec<(Arc<crate::log::partition::Partition>, u64)> {
        let now = Instant::now();
        self.membership
            .held()
            .iter()
            .filter(|(_, h)| h.state.retry_at.is_none_or(|r| r <= now))
            .map(|(&s, h)| (self.queue.partitions[s as usize].clone(), h.state.cursor.next_offset))
            .collect()
    }
}

/// A consumer's companion thread, started on first use.
fn started<'c>(companion: &'c mut Option<Companion>, queue: &QueueInner) -> Result<&'c Companion> {
    match companion {
        Some(companion) => Ok(companion),
        none => Ok(none.insert(Companion::start(&queue.dir, queue.control.clone())?)),
    }
}

/// A batch in the caller's hands. Dropped before [`Out::settle`] (the
/// `process_async` future was dropped mid-batch), it counts a failed
/// delivery, as a dropped [`crate::Delivery`] does.
struct Out<'c> {
    consumer: &'c mut Consumer,
    taken: Option<Taken>,
}

impl Out<'_> {
    /// Settles the batch with its outcome, as `process` does, once the
    /// heartbeats have ended (none runs after they do).
    fn settle<E: Into<BoxError>>(mut self, outcome: std::thread::Result<std::result::Result<(), E>>) -> Result<usize> {
        self.end_heartbeats();
        match self.taken.take() {
            Some(taken) => self.consumer.settle(taken, outcome),
            None => Ok(0),
        }
    }

    fn end_heartbeats(&self) {
        if let Some(companion) = &self.consumer.companion {
            companion.end_heartbeats();
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.end_heartbeats();
        if let Some(taken) = self.taken.take() {
            // An error here can only be a failed write of the attempt count,
            // which already stopped the consumer; the next call reports it.
            let _ = self.consumer.fail(taken, "process_async dropped before its batch was processed", None);
        }
    }
}

//! What the handles of one queue share: the connection, the runtime that
//! drives it, the queue's address and meta entry, and the round-robin
//! position of unkeyed sends. `Queue` makes it; `Producer` (and later the
//! consumer) hold it, so none of them needs another's module.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::connect::Client;

use crate::error::Error;
use crate::queue_meta::QueueMeta;
use crate::queue_url::QueueUrl;

/// What a queue's handles share.
pub(crate) struct Shared {
    runtime: ClientRuntime,
    pub(crate) client: Client,
    pub(crate) url: QueueUrl,
    pub(crate) meta: QueueMeta,
    /// The round-robin position of unkeyed sends.
    next_partition: AtomicU32,
}

/// The runtime that drives the connection. Shut down without waiting when
/// dropped, so that dropping a queue inside an async runtime does not panic
/// (tokio forbids a blocking shutdown there).
pub(crate) struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Shared {
    pub(crate) fn new(runtime: ClientRuntime, client: Client, url: QueueUrl, meta: QueueMeta) -> Shared {
        Shared { runtime, client, url, meta, next_partition: AtomicU32::new(0) }
    }

    /// Runs `future` to completion on the queue's runtime, blocking the
    /// calling thread. Called from inside another runtime's task (where
    /// tokio forbids a `block_on`: the local queue's blocking calls simply
    /// block there, and code must behave the same on both backends), the
    /// future runs on a thread of its own, scoped to the call, so that it
    /// may still borrow from the caller; the caller's thread is blocked as
    /// with the local queue (use the `_async` forms in async code).
    pub(crate) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime.get();
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(future);
        }
        std::thread::scope(|scope| {
            let outside = scope.spawn(|| runtime.block_on(future));
            outside.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `future` on the queue's runtime and waits for it from the
    /// caller's async context.
    pub(crate) async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.runtime.get().spawn(future);
        task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Runs `future` on the queue's runtime and blocks the calling thread
    /// until it is done, also when that thread runs another runtime's task
    /// (where [`Shared::block_on`] would panic): for calls the local queue
    /// makes blocking and callers make from async code, as opening a
    /// consumer.
    pub(crate) fn wait_for<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.block_on(future);
        }
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        drop(self.runtime.get().spawn(async move {
            let _ = done.send(future.await);
        }));
        outcome.recv().expect("the queue's runtime runs its tasks to completion")
    }

    /// Starts `future` on the queue's runtime without waiting for it (work
    /// that must not block a caller inside another runtime, as a drop).
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.runtime.get().spawn(future));
    }

    /// The partition of the next unkeyed send.
    pub(crate) fn next_partition(&self) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % self.meta.partitions
    }
}

impl ClientRuntime {
    pub(crate) fn start() -> durq::Result<ClientRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("durq-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::engine("start the client's runtime", e))?;
        Ok(ClientRuntime(Some(runtime)))
    }

    pub(crate) fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime is taken only on drop")
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

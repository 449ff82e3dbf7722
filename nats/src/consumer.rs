//! The consumer of a NATS queue: a member of a consumer group, with the
//! local consumer's API (`process`, `process_timeout`, `process_each`,
//! `poll` and `Delivery::commit`, `flush`, and `process_async` with the
//! feature `tokio`), handing the caller [`durq::Message`]s and committing a
//! batch only after the caller's work returned `Ok`.
//!
//! - **Reading.** The member reads each partition it holds from the slot's
//!   checkpoint, in sequence order, with a [`Cursor`] (`reader.rs`). Nothing
//!   on the server moves the group's position: only the slot's
//!   compare-and-set does.
//! - **Marking.** Before a batch is handed over, the slot records it as
//!   delivered (its end, and the first record's delivery count) by
//!   compare-and-set, so that the member that takes the slot over after a
//!   crash counts the delivery ([`Message::delivery_count`]). When the next
//!   batch of a partition is already here as its batch is committed, the
//!   one write does both (commit this batch, mark the next), so a member
//!   that keeps up pays one replicated write per batch. When nothing of
//!   the next batch is here yet, the commit marks the next record all the
//!   same, in advance: a *standing mark*. A member that waited for records
//!   hands a lone record over without a write when it comes, so a member
//!   fed one record at a time also pays one write per record. The price: a
//!   member that dies idle, its standing mark unused, leaves its successor
//!   counting one delivery of that record that did not happen
//!   ([`Message::delivery_count`] 2 at its first); a member that dies with
//!   the record in its hands is counted exactly. Every other hand-over
//!   (several records after a wait, the first after a take, a retry) is
//!   marked as it is handed over, by a put into the group's marks bucket
//!   (memory storage, not synced) that is flushed into the connection's
//!   socket first (`Slots::send_mark`); the member that takes the slot over
//!   reads it with the slot. Such a mark survives the member's process
//!   crash, as the local queue's survives one in the page cache, and costs
//!   no sync on the servers.
//! - **Committing.** After `Ok`, the slot's checkpoint moves past the batch
//!   by compare-and-set on the holder's own last revision. A member that was
//!   taken over meanwhile gets [`durq::Error::Fenced`] and nothing moves; its
//!   batch goes to the new holder. Every commit is on the servers' disks
//!   when it returns (with `sync_interval: always`), whatever
//!   [`ConsumerOptions::commit`] says: there is no local buffer to sync.
//! - **Failing.** An `Err`, a panic or a dropped [`Delivery`] commits
//!   nothing: the records come again after the backoff, one at a time, and a
//!   record that fails `max_deliveries` times goes to the group's
//!   dead-letter stream, acknowledged, before the checkpoint passes it.
//! - **Membership.** `membership.rs`: who is alive, heartbeats, and the
//!   fair, sticky assignment of the local queue (`assignment.rs`, reused),
//!   applied between batches, never in the middle of one.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::{BoxError, ConsumerOptions, Message, ResetTo, Verdict};

use crate::dead_letter::DeadLetters;
use crate::error::Error;
use crate::group_names::{group_bucket, slot_key};
use crate::membership::Membership;
use crate::reader::{Cursor, Record, created_first_offset};
use crate::shared::Shared;
use crate::slot::{Progress, Slots};

#[cfg(feature = "tokio")]
mod process_async;

/// A member of a consumer group of a NATS queue. `Send`: each thread that
/// consumes opens its own. Dropping it gives its slots back, so the others
/// take them at once.
///
/// ```no_run
/// # fn main() -> Result<(), durq::Error> {
/// let queue = durq_nats::Queue::open("nats://127.0.0.1:4222/orders")?;
/// let mut consumer = queue.consumer("red-packet")?;
/// consumer.process(|batch| {
///     for m in batch {
///         println!("grant a red packet for {}", String::from_utf8_lossy(m.payload()));
///     }
///     Ok::<(), std::io::Error>(()) // only now is the batch committed
/// })?;
/// # Ok(()) }
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    group: String,
    options: ConsumerOptions,
    membership: Arc<Membership>,
    /// Where this member reads in each slot it holds.
    held: BTreeMap<u32, Held>,
    /// The slot to look at first next time: slots take turns.
    next_slot: u32,
    last_rebalance: Option<Instant>,
    dead_letters: DeadLetters,
    /// The watch and heartbeat task (`membership.rs`), stopped on drop.
    background: tokio::task::JoinHandle<()>,
}

// The docs above promise that a consumer can be moved to another thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Consumer>();
};

/// This member's reading of one slot it holds.
struct Held {
    /// The epoch the slot is held at.
    epoch: u64,
    /// Reads from the checkpoint; `None` until needed (and after a failed
    /// batch, so the records come again from the checkpoint).
    cursor: Option<Cursor>,
    /// No delivery before this instant (backoff after a failure).
    retry_at: Option<Instant>,
    /// Records below this were in a failed batch: deliver them one at a
    /// time.
    isolate_end: u64,
    /// The next batch, marked as delivered by the write that committed the
    /// one before it, handed over when this slot's turn comes.
    marked: Option<Marked>,
    /// The slot's progress before the standing mark the last commit
    /// stored (module doc, "Marking"), while it is unused: a lone record
    /// at the checkpoint is handed over without a write. What a release
    /// stores instead.
    standing: Option<Progress>,
}

impl Held {
    /// What a release stores instead of the progress held, if the last
    /// write marked a batch that never reached the caller: the progress
    /// before that mark (`Lease::unmark`).
    fn unmarked(&self) -> Option<Progress> {
        self.marked.as_ref().map(|marked| marked.before).or(self.standing)
    }
}

/// A batch recorded in the slot as handed out, not handed out yet.
struct Marked {
    taken: Taken,
    /// The slot's progress before the mark: what a release stores instead
    /// (`Lease::unmark`), so a batch that never reached the caller is not
    /// counted as delivered by the next holder.
    before: Progress,
}

/// A batch taken from one slot, marked as delivered, not yet committed.
struct Taken {
    partition: u32,
    epoch: u64,
    records: Vec<Record>,
    /// Deliveries of the first record, this one included.
    attempts: u32,
    /// Records below this were delivered before this batch.
    delivered_before: u64,
}

impl Taken {
    fn end(&self) -> u64 {
        self.records.last().map_or(0, |r| r.position.offset + 1)
    }

    fn delivery_count(&self, index: usize) -> u32 {
        if index == 0 {
            self.attempts
        } else if self.records[index].position.offset < self.delivered_before {
            2
        } else {
            1
        }
    }

    fn messages(&self) -> Vec<Message<'_>> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Message::from_parts(r.position, r.timestamp_ms, self.delivery_count(i), r.key.as_deref(), &r.payload)
            })
            .collect()
    }
}

impl crate::Queue {
    /// Joins consumer group `group` with default options.
    ///
    /// # Errors
    /// As [`crate::Queue::consumer_with`].
    pub fn consumer(&self, group: &str) -> durq::Result<Consumer> {
        self.consumer_with(group, ConsumerOptions::default())
    }

    /// Joins consumer group `group` (ASCII letters, digits, `-`, `_` on
    /// NATS), creating it if it does not exist.
    ///
    /// # Errors
    /// [`durq::Error::InvalidGroupName`], [`durq::Error::InvalidOption`];
    /// [`durq::Error::Engine`] if the group's bucket cannot be opened.
    pub fn consumer_with(&self, group: &str, options: ConsumerOptions) -> durq::Result<Consumer> {
        let shared = self.shared();
        let group = group.to_owned();
        shared.clone().wait_for(async move { Consumer::open(shared, &group, options).await })
    }
}

impl Consumer {
    async fn open(shared: Arc<Shared>, group: &str, options: ConsumerOptions) -> durq::Result<Consumer> {
        options.validate()?;
        let bucket = group_bucket(&shared.url.name, group)?;
        let slots = Slots::open(&shared.client, &bucket, usize::from(shared.meta.replicas)).await?;
        let nuid = shared.client.unique_name();
        let (membership, background) = Membership::join(slots, &nuid, options.configured_lease_timeout()).await?;
        let dead_letters = DeadLetters::new(&shared, group);
        let mut consumer = Consumer {
            shared,
            group: group.to_owned(),
            options,
            membership,
            held: BTreeMap::new(),
            next_slot: 0,
            last_rebalance: None,
            dead_letters,
            background,
        };
        consumer.rebalance().await?;
        Ok(consumer)
    }

    /// Waits for records, hands a batch of them (from one partition, in
    /// offset order) to `f`, and commits the batch once `f` returns `Ok`.
    /// Returns the number of records processed.
    ///
    /// If `f` returns `Err` or panics, nothing is committed, the error is
    /// returned as [`durq::Error::Process`] or
    /// [`durq::Error::ProcessPanicked`], and the records come again after
    /// the backoff, one at a time; a record that fails `max_deliveries`
    /// times goes to the dead-letter stream. If another member took the
    /// slot over meanwhile (this one was presumed dead or hung), the commit
    /// does not count and [`durq::Error::Fenced`] is returned.
    ///
    /// # Errors
    /// As above, and [`durq::Error::Engine`] if the servers cannot be
    /// reached (nothing was committed; the batch comes again).
    pub fn process<F, E>(&mut self, f: F) -> durq::Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(None, f)
    }

    /// As [`Consumer::process`], but returns `Ok(0)` without calling `f` if
    /// no record arrives within `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::process`].
    pub fn process_timeout<F, E>(&mut self, timeout: Duration, f: F) -> durq::Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(Some(timeout), f)
    }

    /// Like [`Consumer::process`], with a [`Verdict`] per record: `f` is
    /// called for each record of the batch in order, until it returns
    /// [`Verdict::Retry`]. Records before that are committed (dead letters
    /// first published to the dead-letter stream); the retried one comes
    /// again after its pause. Returns the number of records committed;
    /// waits at most `timeout` for records (`Ok(0)` if none came).
    ///
    /// # Errors
    /// As [`Consumer::process`].
    pub fn process_each<F>(&mut self, timeout: Duration, mut f: F) -> durq::Result<usize>
    where
        F: FnMut(&Message<'_>) -> Verdict,
    {
        let shared = self.shared.clone();
        let Some(taken) = shared.block_on(self.next_batch(Some(timeout)))? else { return Ok(0) };
        let messages = taken.messages();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut verdicts = Vec::with_capacity(messages.len());
            for m in &messages {
                let verdict = f(m);
                let stop = matches!(verdict, Verdict::Retry(_));
                verdicts.push(verdict);
                if stop {
                    break;
                }
            }
            verdicts
        }));
        drop(messages);
        let verdicts = match outcome {
            Ok(verdicts) => verdicts,
            Err(panic) => {
                let error = panic_message(&panic);
                shared.block_on(self.fail(taken, 0, &error, None))?;
                return Err(durq::Error::ProcessPanicked(error));
            }
        };
        shared.block_on(self.settle_verdicts(taken, verdicts))
    }

    /// The manual-commit form, for callers who cannot work inside a
    /// closure: waits at most `timeout` for records and returns them as a
    /// [`Delivery`] that must be [`Delivery::commit`]ted. Dropping it
    /// uncommitted counts as a failed delivery: the records come again.
    ///
    /// # Errors
    /// As [`Consumer::process`].
    pub fn poll(&mut self, timeout: Duration) -> durq::Result<Option<Delivery<'_>>> {
        let shared = self.shared.clone();
        let taken = shared.block_on(self.next_batch(Some(timeout)))?;
        Ok(taken.map(|taken| Delivery { consumer: self, taken: Some(taken) }))
    }

    /// Returns at once: every commit was acknowledged by the servers before
    /// `process` returned, so nothing waits in this client.
    ///
    /// # Errors
    /// None today; the signature is the local consumer's.
    pub fn flush(&mut self) -> durq::Result<()> {
        Ok(())
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partitions whose slots this member holds now.
    pub fn held_partitions(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// The group's committed position (next offset to process) in every
    /// partition: this member's own for the slots it holds, the stored one
    /// for the others (0 for a slot never written). May be called from
    /// async code (it blocks the thread for the reads).
    ///
    /// # Errors
    /// [`durq::Error::Engine`] if a slot cannot be read.
    pub fn committed(&self) -> durq::Result<Vec<u64>> {
        let (shared, membership) = (self.shared.clone(), self.membership.clone());
        let partitions = shared.meta.partitions;
        shared.wait_for(async move {
            let leases = membership.leases.lock().await;
            let mut committed = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let checkpoint = match leases.get(&p) {
                    Some(lease) => lease.checkpoint(),
                    None => membership.slots.read(&slot_key(p)).await?.map_or(0, |s| s.checkpoint()),
                };
                committed.push(checkpoint);
            }
            Ok(committed)
        })
    }

    fn process_within<F, E>(&mut self, timeout: Option<Duration>, f: F) -> durq::Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> Result<(), E>,
        E: Into<BoxError>,
    {
        let shared = self.shared.clone();
        let Some(taken) = shared.block_on(self.next_batch(timeout))? else { return Ok(0) };
        let messages = taken.messages();
        // The error becomes a `BoxError` here, so that what is settled is
        // `Send` whatever the closure's error type is.
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&messages))).map(|done| done.map_err(Into::into));
        drop(messages);
        shared.block_on(self.settle(taken, outcome))
    }

    /// Commits `taken` after `Ok`; counts a failed delivery after an error
    /// or a panic.
    async fn settle(
        &mut self,
        taken: Taken,
        outcome: std::thread::Result<Result<(), BoxError>>,
    ) -> durq::Result<usize> {
        match outcome {
            Ok(Ok(())) => {
                let n = taken.records.len();
                self.commit(&taken, n).await?;
                Ok(n)
            }
            Ok(Err(error)) => {
                self.fail(taken, 0, &error.to_string(), None).await?;
                Err(durq::Error::Process(error))
            }
            Err(panic) => {
                let error = panic_message(&panic);
                self.fail(taken, 0, &error, None).await?;
                Err(durq::Error::ProcessPanicked(error))
            }
        }
    }

    async fn settle_verdicts(&mut self, taken: Taken, verdicts: Vec<Verdict>) -> durq::Result<usize> {
        for (i, verdict) in verdicts.iter().enumerate() {
            if let Verdict::DeadLetter(reason) = verdict {
                let record = &taken.records[i];
                self.dead_letters.publish(&self.shared, record, taken.epoch, taken.delivery_count(i), reason).await?;
            }
        }
        let retry = match verdicts.last() {
            Some(Verdict::Retry(delay)) => Some(*delay),
            _ => None,
        };
        let done = verdicts.len() - usize::from(retry.is_some());
        match retry {
            None => {
                self.commit(&taken, done).await?;
            }
            Some(delay) => {
                self.fail(taken, done, "closure asked for a retry", delay).await?;
            }
        }
        Ok(done)
    }

    /// Moves the slot's checkpoint past the first `n` records of `taken`,
    /// and, if all of them were processed and the partition's next batch is
    /// already here, marks that one as delivered in the same write.
    async fn commit(&mut self, taken: &Taken, n: usize) -> durq::Result<()> {
        self.membership.batch_out(false);
        let checkpoint = if n == taken.records.len() { taken.end() } else { taken.records[n].position.offset };
        let next = if n == taken.records.len() { self.next_ready(taken).await } else { Vec::new() };
        let mut leases = self.membership.leases.lock().await;
        let Some(lease) = leases.get_mut(&taken.partition) else {
            // A heartbeat found the slot taken over.
            drop(leases);
            self.forget(taken.partition);
            return Err(durq::Error::Fenced { partition: taken.partition, epoch: taken.epoch });
        };
        let committed = lease.progress().committed(checkpoint);
        // Any standing mark was used by `taken`; this write may stand another.
        let may_stand = self.held.get_mut(&taken.partition).is_some_and(|h| {
            h.standing = None;
            h.epoch == taken.epoch && h.retry_at.is_none() && checkpoint >= h.isolate_end
        }) && n == taken.records.len()
            && committed.attempts == 0;
        let progress = match next.last() {
            Some(last) => committed.handed_out(last.position.offset + 1),
            // The standing mark of the record that has not come yet.
            None if may_stand => committed.handed_out(checkpoint + 1),
            None => committed,
        };
        let write = self.membership.slots.advance(lease, progress);
        let written = match self.held.get_mut(&taken.partition).and_then(|held| held.cursor.as_mut()) {
            // The batch after `next` is read while the write is on its way.
            Some(cursor) => cursor.read_while(self.options.configured_max_batch(), write).await,
            None => write.await,
        };
        match written {
            Ok(()) => {
                if let Some(held) = self.held.get_mut(&taken.partition) {
                    if !next.is_empty() {
                        let taken = Taken {
                            partition: taken.partition,
                            epoch: taken.epoch,
                            records: next,
                            attempts: progress.attempts,
                            delivered_before: committed.delivered_end,
                        };
                        held.marked = Some(Marked { taken, before: committed });
                    } else if progress != committed {
                        held.standing = Some(committed);
                    }
                }
                Ok(())
            }
            Err(Error::Fenced { .. }) => {
                leases.remove(&taken.partition);
                drop(leases);
                self.forget(taken.partition);
                Err(durq::Error::Fenced { partition: taken.partition, epoch: taken.epoch })
            }
            Err(e) => {
                drop(leases);
                // The commit may or may not have been stored: read again
                // from the checkpoint the next write finds.
                if let Some(held) = self.held.get_mut(&taken.partition) {
                    held.cursor = None;
                }
                Err(e.into())
            }
        }
    }

    /// The records of `taken`'s partition after it that are here already
    /// (or on their way), up to a batch, if the next batch may be marked in
    /// the write that commits `taken`: the slot is still held at `taken`'s
    /// epoch, in no backoff, and past the records delivered one at a time.
    /// Empty otherwise, or if the cursor failed (the next look reopens it
    /// from the checkpoint).
    async fn next_ready(&mut self, taken: &Taken) -> Vec<Record> {
        let max_batch = self.options.configured_max_batch();
        let end = taken.end();
        let Some(held) = self.held.get_mut(&taken.partition) else { return Vec::new() };
        if held.epoch != taken.epoch || held.retry_at.is_some() || end < held.isolate_end {
            return Vec::new();
        }
        let Some(cursor) = held.cursor.as_mut() else { return Vec::new() };
        match cursor.take_ready(max_batch).await {
            Ok(records) => {
                if let Some(first) = records.first() {
                    assert_eq!(first.position.offset, end, "a batch starts where the one before it ended");
                }
                records
            }
            Err(_) => {
                held.cursor = None;
                Vec::new()
            }
        }
    }

    /// Record `index` of `taken` failed (every record before it was
    /// processed): commits those before it, then either dead-letters it
    /// (alone in its batch and at `max_deliveries`) and commits it, or
    /// delivers it again after the pause, one record at a time.
    async fn fail(&mut self, taken: Taken, index: usize, error: &str, delay: Option<Duration>) -> durq::Result<()> {
        self.membership.batch_out(false);
        let attempts = taken.delivery_count(index);
        let isolated = taken.records.len() - index == 1;
        if isolated && attempts >= self.options.configured_max_deliveries() {
            if index > 0 {
                self.commit(&taken, index).await?;
            }
            self.dead_letters.publish(&self.shared, &taken.records[index], taken.epoch, attempts, error).await?;
            return self.commit(&taken, index + 1).await;
        }
        if index > 0 {
            // The retried record keeps its count: it was delivered.
            let head = taken.records[index].position.offset;
            let mut leases = self.membership.leases.lock().await;
            if let Some(lease) = leases.get_mut(&taken.partition) {
                let progress =
                    Progress { checkpoint: head, delivered_end: lease.progress().delivered_end.max(head), attempts };
                match self.membership.slots.advance(lease, progress).await {
                    Ok(()) => {}
                    Err(Error::Fenced { .. }) => {
                        leases.remove(&taken.partition);
                        drop(leases);
                        self.forget(taken.partition);
                        return Err(durq::Error::Fenced { partition: taken.partition, epoch: taken.epoch });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let pause = delay.unwrap_or_else(|| self.options.backoff(attempts));
        self.deliver_again(&taken, pause);
        Ok(())
    }

    /// A failed delivery of `taken` handled without a request (where
    /// nothing can be awaited: a drop): its records come again after the
    /// backoff, one at a time. The slot's mark already counted it; a record
    /// at `max_deliveries` goes to the dead-letter stream on its next
    /// failure.
    #[cfg(feature = "tokio")]
    fn fail_here(&mut self, taken: &Taken) {
        self.membership.batch_out(false);
        let pause = self.options.backoff(taken.attempts);
        self.deliver_again(taken, pause);
    }

    fn deliver_again(&mut self, taken: &Taken, pause: Duration) {
        if let Some(held) = self.held.get_mut(&taken.partition) {
            held.isolate_end = held.isolate_end.max(taken.end());
            held.retry_at = Some(Instant::now() + pause);
            held.cursor = None;
        }
    }

    /// The next batch from the held slots (they take turns), marked as
    /// delivered; `None` if nothing came within `timeout` (`None`: wait as
    /// long as it takes). Rebalances every `rebalance_interval` meanwhile.
    async fn next_batch(&mut self, timeout: Option<Duration>) -> durq::Result<Option<Taken>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            for (partition, epoch) in self.membership.take_fenced() {
                if self.held.get(&partition).is_some_and(|h| h.epoch == epoch) {
                    self.held.remove(&partition);
                }
            }
            let interval = self.options.configured_rebalance_interval();
            if self.last_rebalance.is_none_or(|at| at.elapsed() >= interval) {
                self.rebalance().await?;
            }
            if let Some(taken) = self.take_ready().await? {
                self.membership.batch_out(true);
                return Ok(Some(taken));
            }
            self.reopen_stalled_cursors().await?;
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Ok(None);
            }
            let mut wake = self.last_rebalance.map_or(now, |at| at + interval);
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            let mut waits = Vec::new();
            for held in self.held.values_mut() {
                match held.retry_at {
                    Some(at) if at > now => wake = wake.min(at),
                    _ => {
                        if let Some(cursor) = held.cursor.as_mut() {
                            waits.push(Box::pin(cursor.wait()));
                        }
                    }
                }
            }
            let sleep = tokio::time::sleep_until(wake.into());
            let failed = if waits.is_empty() {
                drop(waits);
                sleep.await;
                false
            } else {
                let any = futures_util::future::select_all(waits);
                tokio::select! {
                    (result, _, _) = any => result.is_err(),
                    _ = sleep => false,
                }
            };
            if failed {
                // A cursor that failed is opened again from the checkpoint
                // by the next look.
                self.drop_failed_cursors();
            }
        }
    }

    /// Opens again each held slot's cursor that has heard nothing for a
    /// while though its next record is stored (`Cursor::reopen_if_stalled`).
    async fn reopen_stalled_cursors(&mut self) -> durq::Result<()> {
        for held in self.held.values_mut() {
            if let Some(cursor) = held.cursor.as_mut()
                && let Err(e) = cursor.reopen_if_stalled().await
            {
                held.cursor = None;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// A batch from the first held slot, in turn, that has records ready
    /// and is not in a backoff; opens cursors where needed.
    async fn take_ready(&mut self) -> durq::Result<Option<Taken>> {
        let partitions: Vec<u32> = self.held.keys().copied().collect();
        if partitions.is_empty() {
            return Ok(None);
        }
        let start = partitions.iter().position(|&p| p >= self.next_slot).unwrap_or(0);
        let now = Instant::now();
        for &p in partitions[start..].iter().chain(&partitions[..start]) {
            let Some(progress) = self.membership.leases.lock().await.get(&p).map(|l| l.progress()) else {
                continue;
            };
            let max_batch = self.options.configured_max_batch();
            let held = self.held.get_mut(&p).expect("a held slot");
            if let Some(marked) = held.marked.take() {
                self.next_slot = p + 1;
                return Ok(Some(marked.taken));
            }
            if held.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            held.retry_at = None;
            if held.cursor.is_none() {
                let from = ResetTo::Offset(progress.checkpoint);
                held.cursor = Some(Cursor::open(&self.shared.client, &self.shared.url.name, p, from).await?);
            }
            let cursor = held.cursor.as_mut().expect("just opened");
            let max = if progress.checkpoint < held.isolate_end { 1 } else { max_batch };
            let records = match cursor.take_ready(max).await {
                Ok(records) => records,
                Err(e) => {
                    held.cursor = None;
                    return Err(e.into());
                }
            };
            if records.is_empty() {
                continue;
            }
            assert_eq!(
                records[0].position.offset, progress.checkpoint,
                "a batch starts at the checkpoint of partition {p}"
            );
            self.next_slot = p + 1;
            let epoch = held.epoch;
            let progress = match held.standing.take() {
                Some(before) if records.len() == 1 => {
                    // The last commit stored this record as handed out.
                    assert_eq!(
                        (progress.delivered_end, progress.attempts),
                        (progress.checkpoint + 1, 1),
                        "a standing mark stands for the record at the checkpoint"
                    );
                    let taken =
                        Taken { partition: p, epoch, records, attempts: 1, delivered_before: before.delivered_end };
                    return Ok(Some(taken));
                }
                // More came: marked as any batch, from before the standing
                // mark, which counted only the first of them.
                Some(before) => before,
                None => progress,
            };
            return self.mark(p, epoch, progress, records).await;
        }
        Ok(None)
    }

    /// Records `records` as delivered, before they are handed over: the
    /// mark is put into the marks bucket and flushed (`Slots::send_mark`).
    /// A slot found taken over is dropped (nothing was handed out).
    async fn mark(
        &mut self,
        partition: u32,
        epoch: u64,
        progress: Progress,
        records: Vec<Record>,
    ) -> durq::Result<Option<Taken>> {
        let end = records.last().map_or(progress.checkpoint, |r| r.position.offset + 1);
        let marked = progress.handed_out(end);
        let mut leases = self.membership.leases.lock().await;
        let Some(lease) = leases.get_mut(&partition) else {
            drop(leases);
            self.forget(partition);
            return Ok(None);
        };
        match self.membership.slots.send_mark(lease, marked).await {
            Ok(()) => Ok(Some(Taken {
                partition,
                epoch,
                records,
                attempts: marked.attempts,
                delivered_before: progress.delivered_end,
            })),
            Err(e) => {
                drop(leases);
                if let Some(held) = self.held.get_mut(&partition) {
                    held.cursor = None;
                }
                Err(e.into())
            }
        }
    }

    fn drop_failed_cursors(&mut self) {
        // Which cursor failed is not known here; reopening all of them from
        // their checkpoints is always right, and rare.
        for held in self.held.values_mut() {
            held.cursor = None;
        }
    }

    fn forget(&mut self, partition: u32) {
        self.held.remove(&partition);
    }

    /// Gives back the slots that belong to others now and takes this
    /// member's own (free ones, or those whose holder stopped heartbeating),
    /// by the local queue's fair, sticky assignment. Runs between batches
    /// only.
    async fn rebalance(&mut self) -> durq::Result<()> {
        self.last_rebalance = Some(Instant::now());
        let partitions = self.shared.meta.partitions;
        let (live, slots) = self.membership.snapshot(partitions)?;
        let holders: Vec<_> = slots.iter().map(|s| s.live_holder).collect();
        let owners = durq::internals::group::assignment::assign(&live, &holders);
        let me = self.membership.member;
        let mut leases = self.membership.leases.lock().await;
        let mine_now: Vec<u32> = leases.keys().copied().collect();
        for p in mine_now {
            if owners[p as usize] != Some(me)
                && let Some(mut lease) = leases.remove(&p)
            {
                if let Some(before) = self.held.remove(&p).and_then(|held| held.unmarked()) {
                    lease.unmark(before);
                }
                // A fenced release needs nothing more: the slot is another's.
                match self.membership.slots.release(lease).await {
                    Ok(()) | Err(Error::Fenced { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for (p, view) in slots.iter().enumerate() {
            let p = p as u32;
            if owners[p as usize] != Some(me) || leases.contains_key(&p) || !view.takeable {
                continue;
            }
            match self.membership.slots.take(&slot_key(p), &self.membership.holder, view.state.as_ref()).await {
                Ok(mut lease) => {
                    if lease.checkpoint() == 0 {
                        // A group that never read the partition starts at
                        // its first offset: above 0 when a migration
                        // created the stream, whose offsets below it never
                        // held a record. Until this commit is stored the
                        // slot stays at 0, and its next holder moves it.
                        let first = created_first_offset(&self.shared.client, &self.shared.url.name, p).await;
                        let moved = match first {
                            Ok(0) => Ok(()),
                            Ok(first) => self.membership.slots.commit(&mut lease, first).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = moved {
                            // Not kept: the slot lapses after a lease
                            // timeout (nothing was handed out from it) and
                            // is taken, and moved, again.
                            return Err(e.into());
                        }
                    }
                    let progress = lease.progress();
                    // Records a predecessor was handed and did not commit
                    // come one at a time, so a poison record among them is
                    // isolated and every count stays exact.
                    let isolate_end = if progress.attempts >= 1 { progress.delivered_end } else { 0 };
                    self.held.insert(
                        p,
                        Held {
                            epoch: lease.epoch(),
                            cursor: None,
                            retry_at: None,
                            isolate_end,
                            marked: None,
                            standing: None,
                        },
                    );
                    leases.insert(p, lease);
                }
                // Another member took it first, or its holder wrote: look
                // again next time.
                Err(Error::SlotChanged { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.background.abort();
        let membership = self.membership.clone();
        let unmarked: BTreeMap<u32, Progress> =
            self.held.iter().filter_map(|(&p, held)| Some((p, held.unmarked()?))).collect();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside a runtime nothing may block: the slots are given back
            // by a task on the queue's runtime, as soon as it runs.
            self.shared.spawn(async move { membership.leave(unmarked).await });
        } else {
            self.shared.block_on(membership.leave(unmarked));
        }
    }
}

/// A batch from [`Consumer::poll`], to be committed after it was processed.
pub struct Delivery<'c> {
    consumer: &'c mut Consumer,
    taken: Option<Taken>,
}

impl Delivery<'_> {
    /// The records, in offset order, from one partition.
    pub fn messages(&self) -> Vec<Message<'_>> {
        self.taken.as_ref().map_or_else(Vec::new, Taken::messages)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.taken.as_ref().map_or(0, |t| t.records.len())
    }

    /// Always false: a delivery has at least one record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits every record of the delivery. Call it only once the work for
    /// all of them is done and durable on your side.
    ///
    /// # Errors
    /// [`durq::Error::Fenced`] if another member took the slot over
    /// meanwhile (the records go to it); [`durq::Error::Engine`].
    pub fn commit(mut self) -> durq::Result<usize> {
        let Some(taken) = self.taken.take() else { return Ok(0) };
        let n = taken.records.len();
        let shared = self.consumer.shared.clone();
        shared.block_on(self.consumer.commit(&taken, n))?;
        Ok(n)
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        if let Some(taken) = self.taken.take() {
            // Not committed: a failed delivery. An error here leaves the
            // records to the next look, from the checkpoint.
            let shared = self.consumer.shared.clone();
            let _ = shared.block_on(self.consumer.fail(taken, 0, "delivery dropped without commit", None));
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

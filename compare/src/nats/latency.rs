//! End-to-end latency under `Sync`: from just before a `send` (or raw
//! publish) to the moment a reader in the same process sees the record,
//! one record at a time (each send acknowledged before the next), 100 B.
//! The time includes the send's own wait for its sync; the reader reads
//! from the start of the partition and commits nothing.
//!
//! - durq-nats: a member of group `bench` on a thread, in
//!   `process_timeout`, stamping the time its closure is handed each record
//!   (after the slot's mark: a batch is recorded as delivered before it is
//!   handed over), while the main thread calls the blocking `send`.
//! - durq-nats `Reader`: `Queue::reader` on a thread, blocked in
//!   `Reader::wait` between records: no group, no write, the same cursor a
//!   member reads with; what the member's row adds is its writes.
//! - raw async-nats: an ordered consumer (the client's pull consumer
//!   without acknowledgements) on a task of the same runtime.
//! - raw async-nats acking each: a durable pull consumer with explicit
//!   acknowledgements on a task, stamping each record when it is handed
//!   over, then acknowledging it and awaiting the server's confirmation
//!   before taking the next: the job a member does (its `process` returns
//!   only once the commit is confirmed), with the engine's own means.
//! - raw async-nats + synced commit each: the plain raw reader, and once a
//!   record is handed over, a compare-and-set of the group's key in a
//!   key-value bucket (file storage, history 1: synced, as a slot's write
//!   is) awaited before the next is taken; the records that arrived
//!   meanwhile are handed over together and committed by one write, as a
//!   member's next batch is. The member's job with the member's
//!   durability, the same writes in the same order.
//! - local durq: `Queue::reader` on a thread, blocked in `Reader::wait`
//!   between records.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use durq::{Durability, Options, Position, ResetTo, StoredRecord};
use futures_util::{FutureExt, StreamExt};

use super::{Measured, Size, raw};
use crate::common::{Result, payload, stamp};

pub fn durq_nats(url: &str, size: &Size) -> Result<Measured> {
    let options = Options::default().partitions(1).durability(Durability::Sync);
    let queue = durq_nats::Queue::open_with(&format!("{url}/bench"), options)?;
    let count = size.messages;
    let mut consumer = queue.consumer("bench")?;
    let consuming = std::thread::spawn(move || {
        let mut seen = vec![None; count as usize];
        let mut left = count;
        while left > 0 {
            let n = consumer.process_timeout(Duration::from_secs(30), |batch| {
                let now = Instant::now();
                for m in batch {
                    seen[raw::stamped(m.payload()) as usize] = Some(now);
                }
                Ok::<(), std::io::Error>(())
            })?;
            if n == 0 {
                return Err("no record for 30 s".into());
            }
            left -= n as u64;
        }
        Ok::<_, crate::common::BoxError>(seen)
    });
    let producer = queue.producer();
    let mut buf = payload(size.payload);
    let mut sent = Vec::with_capacity(count as usize);
    for n in 0..count {
        stamp(&mut buf, n);
        sent.push(Instant::now());
        producer.send(&buf)?;
    }
    let seen = consuming.join().map_err(|_| "the consumer thread panicked")??;
    Measured::latencies(&sent, &seen)
}

pub fn durq_nats_reader(url: &str, size: &Size) -> Result<Measured> {
    let options = Options::default().partitions(1).durability(Durability::Sync);
    let queue = durq_nats::Queue::open_with(&format!("{url}/bench"), options)?;
    let reader = queue.reader(ResetTo::Earliest)?;
    let producer = queue.producer();
    through_reader(reader, |r, timeout| r.wait(timeout), |r, max| r.read(max), size, |payload| producer.send(payload))
}

pub async fn raw(url: &str, size: &Size) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    let mut messages = raw::reader(&jetstream).await?;
    let count = size.messages;
    let reader = tokio::spawn(async move {
        let mut seen = vec![None; count as usize];
        for _ in 0..count {
            let message = messages.next().await.ok_or("the ordered consumer ended")??;
            seen[raw::stamped(&message.payload) as usize] = Some(Instant::now());
        }
        Ok::<_, crate::common::BoxError>(seen)
    });
    let sent = publish_each(&jetstream, size).await?;
    Measured::latencies(&sent, &reader.await??)
}

pub async fn raw_acking(url: &str, size: &Size) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    let mut messages = raw::acking_reader(&jetstream).await?;
    let count = size.messages;
    let reader = tokio::spawn(async move {
        let mut seen = vec![None; count as usize];
        for _ in 0..count {
            let message = messages.next().await.ok_or("the pull consumer ended")??;
            seen[raw::stamped(&message.payload) as usize] = Some(Instant::now());
            message.double_ack().await?;
        }
        Ok::<_, crate::common::BoxError>(seen)
    });
    let sent = publish_each(&jetstream, size).await?;
    Measured::latencies(&sent, &reader.await??)
}

pub async fn raw_committing(url: &str, size: &Size) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    let (positions, mut revision) = raw::group_positions(&jetstream).await?;
    let mut messages = raw::reader(&jetstream).await?;
    let count = size.messages;
    let reader = tokio::spawn(async move {
        let mut seen = vec![None; count as usize];
        let mut left = count;
        while left > 0 {
            // The records that arrived while the last commit was on its
            // way are handed over together and committed by one write, as
            // a member's next batch is: one write per record would fall
            // behind the sends whenever a commit takes longer than a send.
            let mut batch = vec![messages.next().await.ok_or("the ordered consumer ended")??];
            while let Some(message) = messages.next().now_or_never() {
                batch.push(message.ok_or("the ordered consumer ended")??);
            }
            let now = Instant::now();
            let mut end = 0;
            for message in &batch {
                let n = raw::stamped(&message.payload);
                seen[n as usize] = Some(now);
                end = n + 1;
            }
            left -= batch.len() as u64;
            revision = positions.update(raw::POSITION_KEY, end.to_le_bytes().to_vec().into(), revision).await?;
        }
        Ok::<_, crate::common::BoxError>(seen)
    });
    let sent = publish_each(&jetstream, size).await?;
    Measured::latencies(&sent, &reader.await??)
}

/// Publishes `size.messages` records one at a time, each acknowledged before
/// the next, and returns the time just before each publish.
async fn publish_each(jetstream: &async_nats::jetstream::Context, size: &Size) -> Result<Vec<Instant>> {
    let mut buf = payload(size.payload);
    let mut sent = Vec::with_capacity(size.messages as usize);
    for n in 0..size.messages {
        stamp(&mut buf, n);
        sent.push(Instant::now());
        jetstream.publish(raw::SUBJECT, Bytes::copy_from_slice(&buf)).await?.await?;
    }
    Ok(sent)
}

pub fn local(dir: &Path, size: &Size) -> Result<Measured> {
    let queue = durq::Queue::open_with(dir.join("q"), Options::default().partitions(1).durability(Durability::Sync))?;
    let reader = queue.reader(ResetTo::Earliest)?;
    let producer = queue.producer();
    through_reader(reader, |r, timeout| r.wait(timeout), |r, max| r.read(max), size, |payload| producer.send(payload))
}

/// Sends `size.messages` records one at a time with `send`, while `reader`
/// (either backend's `Queue::reader`, read with `wait` and `read`) waits on
/// a thread of its own, and times each from just before its send to its
/// reading.
fn through_reader<R: Send + 'static>(
    mut reader: R,
    wait: fn(&mut R, Option<Duration>) -> bool,
    read: fn(&mut R, usize) -> durq::Result<Vec<StoredRecord>>,
    size: &Size,
    send: impl Fn(&[u8]) -> durq::Result<Position>,
) -> Result<Measured> {
    let count = size.messages;
    let reading = std::thread::spawn(move || {
        let mut seen = vec![None; count as usize];
        let mut left = count;
        while left > 0 {
            if !wait(&mut reader, Some(Duration::from_secs(30))) {
                return Err("no record for 30 s".into());
            }
            for record in read(&mut reader, 1000)? {
                seen[raw::stamped(&record.payload) as usize] = Some(Instant::now());
                left -= 1;
            }
        }
        Ok::<_, crate::common::BoxError>(seen)
    });
    let mut buf = payload(size.payload);
    let mut sent = Vec::with_capacity(count as usize);
    for n in 0..count {
        stamp(&mut buf, n);
        sent.push(Instant::now());
        send(&buf)?;
    }
    let seen = reading.join().map_err(|_| "the reader thread panicked")??;
    Measured::latencies(&sent, &seen)
}

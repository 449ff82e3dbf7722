//! Produce under `Sync`, 100 B records, one partition: one sender (each send
//! acknowledged before the next) and concurrent senders.
//!
//! - durq-nats: a `Producer` on a queue of one partition; one sender calls
//!   the blocking `send`, concurrent senders are tasks awaiting
//!   `send_async` on clones of one producer.
//! - raw async-nats: the same kind of stream as a durq-nats partition (file
//!   storage, one replica, a two-minute duplicate window), one connection,
//!   `publish` and the await of its acknowledgement, no message id: what
//!   the engine does with nothing of durq's on top. A second raw row adds
//!   a `Nats-Msg-Id` to each message, as durq-nats does (the stream then
//!   checks and remembers every id for its duplicate window): the same
//!   server-side work as durq-nats, without durq's client.
//! - local durq: `Durability::Sync`, the blocking `send`; concurrent
//!   senders are threads sharing one producer (group commit).

use std::path::Path;
use std::time::Instant;

use durq::{Durability, Options};

use super::{Measured, Size, raw};
use crate::common::{Deadline, Result, concurrent, payload, per_thread, stamp};

/// One durq-nats sender.
pub fn durq_nats_one(url: &str, size: &Size) -> Result<Measured> {
    let queue = durq_nats::Queue::open_with(&format!("{url}/bench"), sync_options())?;
    let producer = queue.producer();
    let mut buf = payload(size.payload);
    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < size.messages && !deadline.passed() {
        stamp(&mut buf, n);
        producer.send(&buf)?;
        n += 1;
    }
    Ok(Measured::rate(n, start))
}

/// One raw sender; with `ids`, each message carries a `Nats-Msg-Id`.
pub async fn raw_one(url: &str, size: &Size, ids: bool) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    let mut buf = payload(size.payload);
    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < size.messages && !deadline.passed() {
        stamp(&mut buf, n);
        raw::publish(&jetstream, &buf, ids.then(|| format!("{n}"))).await?;
        n += 1;
    }
    Ok(Measured::rate(n, start))
}

/// One local sender.
pub fn local_one(dir: &Path, size: &Size) -> Result<Measured> {
    let queue = durq::Queue::open_with(dir.join("q"), sync_options())?;
    let producer = queue.producer();
    let mut buf = payload(size.payload);
    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let mut n = 0;
    while n < size.messages && !deadline.passed() {
        stamp(&mut buf, n);
        producer.send(&buf)?;
        n += 1;
    }
    Ok(Measured::rate(n, start))
}

/// `senders` durq-nats tasks.
pub async fn durq_nats_concurrent(url: &str, size: &Size, senders: usize) -> Result<Measured> {
    let queue = durq_nats::Queue::open_async(&format!("{url}/bench"), sync_options()).await?;
    let producer = queue.producer();
    let each = per_thread(size.messages, senders);
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|t| {
            let (producer, mut buf, cap) = (producer.clone(), payload(size.payload), size.cap);
            tokio::spawn(async move {
                let deadline = Deadline::new(cap);
                let mut n = 0;
                while n < each && !deadline.passed() {
                    stamp(&mut buf, (t as u64) << 32 | n);
                    producer.send_async(&buf).await?;
                    n += 1;
                }
                Ok::<u64, durq::Error>(n)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(Measured::rate(total, start))
}

/// `senders` raw tasks on one connection; with `ids`, each message carries
/// a `Nats-Msg-Id`.
pub async fn raw_concurrent(url: &str, size: &Size, senders: usize, ids: bool) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    let each = per_thread(size.messages, senders);
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|t| {
            let (jetstream, mut buf, cap) = (jetstream.clone(), payload(size.payload), size.cap);
            tokio::spawn(async move {
                let deadline = Deadline::new(cap);
                let mut n = 0;
                while n < each && !deadline.passed() {
                    stamp(&mut buf, (t as u64) << 32 | n);
                    raw::publish(&jetstream, &buf, ids.then(|| format!("{t}-{n}"))).await?;
                    n += 1;
                }
                Ok::<u64, crate::common::BoxError>(n)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(Measured::rate(total, start))
}

/// `senders` local threads sharing one producer.
pub fn local_concurrent(dir: &Path, size: &Size, senders: usize) -> Result<Measured> {
    let queue = durq::Queue::open_with(dir.join("q"), sync_options())?;
    let producer = queue.producer();
    let buf = payload(size.payload);
    let outcome = concurrent(
        senders,
        per_thread(size.messages, senders),
        size.cap,
        |_| Ok((producer.clone(), buf.clone())),
        |(producer, buf), t, i| {
            stamp(buf, (t as u64) << 32 | i);
            producer.send(&*buf)?;
            Ok(())
        },
    )?;
    Measured::from_outcome(outcome)
}

fn sync_options() -> Options {
    Options::default().partitions(1).durability(Durability::Sync)
}

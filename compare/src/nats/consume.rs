//! Consume a preloaded partition of 100 B records with a durable commit
//! per batch of 1,000 (the local queue's W4 with a smaller preload: on
//! NATS under `sync_interval: always` every preloaded record is an fsync of
//! its own, and on the loaded test machine a 50,000-record preload took
//! minutes). The preload is not timed; the clock runs from the first read
//! until the last batch's commit is acknowledged.
//!
//! - durq-nats: `process` with `max_batch(1000)` on a queue of one
//!   partition preloaded with `send_batch`; each batch is marked as
//!   delivered before it is handed over and committed after, two
//!   compare-and-sets of the group's slot.
//! - raw async-nats: an ordered consumer reads the stream from its first
//!   record, and each batch is "committed" as durq-nats commits: a
//!   compare-and-set of the group's key in a key-value bucket (file
//!   storage, one replica, history 1) on the revision the last commit
//!   returned, i.e. one acknowledged, synced write per batch. Twice: over
//!   records preloaded without headers, and over records that carry a
//!   `Nats-Msg-Id` as durq-nats's do (the producer's retry identity), the
//!   same messages durq-nats reads.
//! - local durq: `process` with `max_batch(1000)` and the default `Sync`
//!   commit (a synced checkpoint per batch).

use std::path::Path;
use std::time::Instant;

use durq::{ConsumerOptions, Durability, Options};
use futures_util::StreamExt;

use super::{Measured, Size, raw};
use crate::common::{Deadline, Result, payload, stamp};

pub async fn raw(url: &str, size: &Size, batch: u64, ids: bool) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    raw::preload(&jetstream, size.messages, size.payload, ids).await?;
    let (positions, mut revision) = raw::group_positions(&jetstream).await?;

    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let mut messages = raw::reader(&jetstream).await?;
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < size.messages && !deadline.passed() {
        let message = messages.next().await.ok_or("the ordered consumer ended")??;
        if raw::stamped(&message.payload) != seen {
            return Err(format!("record {seen} read as {}", raw::stamped(&message.payload)).into());
        }
        bytes += message.payload.len();
        seen += 1;
        if seen.is_multiple_of(batch) || seen == size.messages {
            revision = positions.update(raw::POSITION_KEY, seen.to_le_bytes().to_vec().into(), revision).await?;
        }
    }
    if !seen.is_multiple_of(batch) && seen != size.messages {
        positions.update(raw::POSITION_KEY, seen.to_le_bytes().to_vec().into(), revision).await?;
    }
    let out = Measured::rate(seen, start);
    assert_eq!(bytes as u64, seen * size.payload as u64, "raw consumed the wrong bytes");
    Ok(out)
}

pub fn durq_nats(url: &str, size: &Size, batch: u64) -> Result<Measured> {
    let options = Options::default().partitions(1).durability(Durability::Sync);
    let queue = durq_nats::Queue::open_with(&format!("{url}/bench"), options)?;
    let producer = queue.producer();
    let mut chunk = vec![payload(size.payload); 1000];
    let mut n = 0;
    while n < size.messages {
        let k = (size.messages - n).min(chunk.len() as u64) as usize;
        for (i, m) in chunk[..k].iter_mut().enumerate() {
            stamp(m, n + i as u64);
        }
        producer.send_batch(&chunk[..k])?;
        n += k as u64;
    }
    let mut consumer = queue.consumer_with("bench", ConsumerOptions::default().max_batch(batch as usize))?;
    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < size.messages && !deadline.passed() {
        let mut out_of_order = None;
        let n = consumer.process_timeout(std::time::Duration::from_secs(30), |msgs| {
            for (i, m) in msgs.iter().enumerate() {
                if raw::stamped(m.payload()) != seen + i as u64 {
                    out_of_order.get_or_insert((seen + i as u64, raw::stamped(m.payload())));
                }
            }
            bytes += msgs.iter().map(|m| m.payload().len()).sum::<usize>();
            Ok::<(), std::io::Error>(())
        })?;
        if let Some((expected, got)) = out_of_order {
            return Err(format!("record {expected} read as {got}").into());
        }
        if n == 0 {
            return Err(format!("no record for 30 s after {seen}").into());
        }
        seen += n as u64;
    }
    let out = Measured::rate(seen, start);
    assert_eq!(bytes as u64, seen * size.payload as u64, "durq-nats consumed the wrong bytes");
    Ok(out)
}

pub fn local(dir: &Path, size: &Size, batch: u64) -> Result<Measured> {
    let queue =
        durq::Queue::open_with(dir.join("q"), Options::default().partitions(1).durability(Durability::Buffered))?;
    let producer = queue.producer();
    let mut chunk = vec![payload(size.payload); 1000];
    let mut n = 0;
    while n < size.messages {
        let k = (size.messages - n).min(chunk.len() as u64) as usize;
        for (i, m) in chunk[..k].iter_mut().enumerate() {
            stamp(m, n + i as u64);
        }
        producer.send_batch(&chunk[..k])?;
        n += k as u64;
    }
    producer.flush()?;
    let mut consumer = queue.consumer_with("bench", ConsumerOptions::default().max_batch(batch as usize))?;
    let deadline = Deadline::new(size.cap);
    let start = Instant::now();
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < size.messages && !deadline.passed() {
        seen += consumer.process(|msgs| {
            bytes += msgs.iter().map(|m| m.payload().len()).sum::<usize>();
            Ok::<(), std::io::Error>(())
        })? as u64;
    }
    let out = Measured::rate(seen, start);
    assert_eq!(bytes as u64, seen * size.payload as u64, "durq consumed the wrong bytes");
    Ok(out)
}

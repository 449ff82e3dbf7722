//! Takeover with a 1 s lease, the raw engine's floor: what any design that
//! fences by compare-and-set on a key-value key and detects a dead holder
//! by its lease pays, with nothing of durq's on top.
//!
//! A holder takes the key `p0` of a bucket (create), renews it every 250 ms
//! by compare-and-set, and stops (dies) 125 ms after a renewal. A standby
//! reads the key every 50 ms; once the revision has not moved for the
//! lease (1 s, counted from when the standby first saw that revision) it
//! takes the key by compare-and-set on that revision and reads the record
//! at the checkpoint. The time is from the holder's death to that record
//! in the standby's hands.
//!
//! durq-nats: the holder is a child process (this program run again with
//! [`HOLDER_ARG`]), a member of group `bench` with a 1 s lease holding the
//! queue's one slot; a standby member in this process joined before. The
//! holder is handed the record and SIGKILLed at once, inside its closure;
//! the time is from its death (the kill returned) to the standby's closure
//! seeing that record, delivered for the second time.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Options};

use async_nats::jetstream::kv;

use super::{Measured, raw};
use crate::common::Result;

const BUCKET: &str = "raw_leases";
pub const LEASE: Duration = Duration::from_secs(1);
const RENEW_EVERY: Duration = Duration::from_millis(250);
const DIES_AFTER_RENEWAL: Duration = Duration::from_millis(125);
const STANDBY_READS_EVERY: Duration = Duration::from_millis(50);

/// The argument (after `nats`) that makes this program the holder.
pub const HOLDER_ARG: &str = "takeover-holder";
/// What the holder prints once it holds the slot, and once it is inside its
/// closure with the record.
const HOLDS: &str = "holds";
const HANDED: &str = "handed";

fn member_options() -> ConsumerOptions {
    ConsumerOptions::default().lease_timeout(LEASE)
}

pub fn durq_nats(url: &str) -> Result<Measured> {
    let spec = format!("{url}/bench");
    let queue = durq_nats::Queue::open_with(&spec, Options::default().partitions(1).durability(Durability::Sync))?;
    let mut holder = Command::new(std::env::current_exe()?)
        .args(["nats", HOLDER_ARG, &spec])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(holder.stdout.take().ok_or("the holder's stdout")?).lines();
    let mut expect = |what: &str| match lines.next() {
        Some(Ok(line)) if line == what => Ok(()),
        other => Err(format!("the holder said {other:?}, not {what:?}")),
    };
    let measured = (|| {
        expect(HOLDS)?;
        // The standby joins while the holder is alive (it keeps the slot:
        // the assignment is sticky) and waits a lease before it presumes
        // anybody dead; joined well before the kill, that wait is over.
        let mut standby = queue.consumer_with("bench", member_options())?;
        if !standby.held_partitions().is_empty() {
            return Err("the standby took the slot from a live holder".into());
        }
        std::thread::sleep(LEASE);
        queue.producer().send(b"the record")?;
        expect(HANDED)?;
        holder.kill()?;
        let died_at = Instant::now();
        holder.wait()?;
        let mut seen = None;
        let n = standby.process_timeout(Duration::from_secs(30), |batch| {
            seen = Some((Instant::now(), batch[0].position().offset, batch[0].delivery_count()));
            Ok::<(), std::io::Error>(())
        })?;
        match seen {
            Some((at, 0, 2)) if n == 1 => Ok(Measured::Takeover(at.saturating_duration_since(died_at))),
            other => Err(format!("the standby got {n} records: (time, offset, delivery count) {other:?}").into()),
        }
    })();
    // Errors mean it already exited.
    let _ = holder.kill();
    let _ = holder.wait();
    measured
}

/// The holder's side of [`durq_nats`]: joins, says it holds the slot, and
/// once handed the record says so and waits to be killed.
pub fn holder(spec: &str) -> Result<()> {
    use std::io::Write as _;
    let queue = durq_nats::Queue::open(spec)?;
    let mut consumer = queue.consumer_with("bench", member_options())?;
    if consumer.held_partitions() != [0] {
        return Err(format!("the holder holds {:?}, not [0]", consumer.held_partitions()).into());
    }
    let say = |what: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{what}").and_then(|()| out.flush())
    };
    say(HOLDS)?;
    consumer.process_timeout(Duration::from_secs(60), |_| {
        say(HANDED)?;
        std::thread::sleep(Duration::from_secs(60));
        Ok::<(), std::io::Error>(())
    })?;
    Err("the holder was not killed within a minute".into())
}

pub async fn raw(url: &str) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    raw::preload(&jetstream, 1, 100, false).await?;
    let leases = jetstream
        .create_key_value(kv::Config {
            bucket: BUCKET.to_owned(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;

    let holder = {
        let leases = leases.clone();
        tokio::spawn(async move {
            let mut revision = leases.create("p0", "holder a".into()).await?;
            for _ in 0..4 {
                tokio::time::sleep(RENEW_EVERY).await;
                revision = leases.update("p0", "holder a".into(), revision).await?;
            }
            tokio::time::sleep(DIES_AFTER_RENEWAL).await;
            Ok::<Instant, crate::common::BoxError>(Instant::now())
        })
    };
    // The standby's view: the revision it last saw change, and when.
    let mut seen: Option<(u64, Instant)> = None;
    let taken_at = loop {
        tokio::time::sleep(STANDBY_READS_EVERY).await;
        let Some(entry) = leases.entry("p0").await? else { continue };
        match seen {
            Some((revision, since)) if revision == entry.revision => {
                if since.elapsed() >= LEASE {
                    leases.update("p0", "holder b".into(), revision).await?;
                    jetstream.get_stream(raw::STREAM).await?.get_raw_message(1).await?;
                    break Instant::now();
                }
            }
            _ => seen = Some((entry.revision, Instant::now())),
        }
    };
    let died_at = holder.await??;
    Ok(Measured::Takeover(taken_at.saturating_duration_since(died_at)))
}

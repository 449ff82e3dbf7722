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

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;

use super::{Measured, raw};
use crate::common::Result;

const BUCKET: &str = "raw_leases";
pub const LEASE: Duration = Duration::from_secs(1);
const RENEW_EVERY: Duration = Duration::from_millis(250);
const DIES_AFTER_RENEWAL: Duration = Duration::from_millis(125);
const STANDBY_READS_EVERY: Duration = Duration::from_millis(50);

pub async fn raw(url: &str) -> Result<Measured> {
    let jetstream = raw::stream(url).await?;
    raw::preload(&jetstream, 1, 100).await?;
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

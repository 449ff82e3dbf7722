//! A group's members as its bucket holds them, read without joining the
//! group and without writing anything (`durq stat nats://…`).
//!
//! Each member key `m-<id>` (`group_names.rs`) is read as stored on the
//! bucket's stream: its value (the member's lease timeout, u64 LE ms,
//! written by `membership.rs`), its revision, and the time the server
//! stamped on its last write. A live member rewrites its key every
//! `lease_timeout / 3`; a member that left deleted it (the delete marker
//! stays, with its time).
//!
//! **Age by the server's clock only.** A key's age is the server's time at
//! the end of the reading (the `ts` of a stream info reply) minus the
//! server's time stamp of the key's last write: no host's clock is compared
//! with a server's. Both come from the bucket stream's leader; after a
//! leader change the two stamps may come from two servers, whose clocks the
//! age then also measures. The members themselves decide liveness on their
//! own monotonic clocks, by the same rule (a key unchanged for its lease),
//! so a member shown `Lapsed` here is one they presume dead or soon will.
//!
//! The keys are listed from the stream's subjects (a stream info request
//! with a subject filter), not through a key-value watch, which would create
//! a consumer on the server: stat changes nothing.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::TryStreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::group_names::MEMBER_KEY_PREFIX;
use crate::slot::SlotsView;

/// The JetStream header that marks a key-value delete or purge.
const KV_OPERATION_HEADER: &str = "KV-Operation";

/// Bytes of a member key's value: the lease timeout, u64 LE ms.
const MEMBER_VALUE_BYTES: usize = 8;

/// One member key of a group, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStat {
    /// The member's id, as slots name their holder.
    pub id: String,
    /// Alive, lapsed or left, by its key's age and lease.
    pub liveness: Liveness,
    /// The lease timeout the member announced; `None` once it left.
    pub lease_timeout: Option<Duration>,
    /// When its key was last written (its last heartbeat, or its leaving),
    /// in ms since the Unix epoch, by the server's clock.
    pub written_ms: u64,
    /// How long before the reading that was, by the server's clock.
    pub age: Duration,
    /// The revision of the key's last write.
    pub revision: u64,
}

/// Whether a member still heartbeats, as its key shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// Its key was written within its lease timeout.
    Alive,
    /// Its key is older than its lease timeout: the member died, hung or
    /// lost the server (which of these a key cannot tell), and the others
    /// may take its slots.
    Lapsed,
    /// It left the group: its key was deleted (by the member on leaving, or
    /// by a group reset or delete that found it dead).
    Left,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Lapsed => "lapsed",
            Liveness::Left => "left",
        })
    }
}

/// Every member key of `slots`' bucket, by id.
///
/// # Errors
/// [`Error::Engine`] if a request fails or the server's reply has no time;
/// [`Error::CorruptSlot`] (naming the member's key) for a member value that
/// is not 8 bytes.
pub(crate) async fn members(jetstream: &Context, slots: &SlotsView) -> Result<Vec<MemberStat>> {
    let store = slots.store();
    let bucket = slots.bucket();
    let list = || format!("list the member keys of bucket {bucket}");
    let subjects: Vec<String> = store
        .stream
        .info_with_subjects(format!("{}*", store.prefix))
        .await
        .map_err(|e| Error::engine(list(), e))?
        .map_ok(|(subject, _count)| subject)
        .try_collect()
        .await
        .map_err(|e| Error::engine(list(), e))?;
    let mut keys: Vec<&str> = subjects
        .iter()
        .filter_map(|s| s.strip_prefix(&store.prefix))
        .filter(|key| key.starts_with(MEMBER_KEY_PREFIX))
        .collect();
    keys.sort_unstable();
    let mut read = Vec::with_capacity(keys.len());
    for key in keys {
        let subject = format!("{}{key}", store.prefix);
        let message = match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            // Purged between the listing and this read: nothing to show.
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(Error::engine(format!("read member key {bucket}/{key}"), e)),
        };
        let lease_timeout = match message.headers.get(KV_OPERATION_HEADER) {
            Some(_) => None,
            None => Some(lease_of(bucket, key, message.sequence, &message.payload)?),
        };
        read.push((key, lease_timeout, message.time, message.sequence));
    }
    // Asked after every key was read, so no key is younger than "now".
    let now = server_time(jetstream, &store.stream_name).await?;
    Ok(read
        .into_iter()
        .map(|(key, lease_timeout, written, revision)| {
            let age = Duration::try_from(now - written).unwrap_or(Duration::ZERO);
            let liveness = match lease_timeout {
                None => Liveness::Left,
                Some(lease) if age < lease => Liveness::Alive,
                Some(_) => Liveness::Lapsed,
            };
            MemberStat {
                id: key[MEMBER_KEY_PREFIX.len()..].to_owned(),
                liveness,
                lease_timeout,
                written_ms: u64::try_from(written.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                age,
                revision,
            }
        })
        .collect())
}

/// A member value's lease timeout.
pub(crate) fn lease_of(bucket: &str, key: &str, revision: u64, value: &[u8]) -> Result<Duration> {
    let bytes: [u8; MEMBER_VALUE_BYTES] = value.try_into().map_err(|_| Error::CorruptSlot {
        bucket: bucket.to_owned(),
        slot: key.to_owned(),
        revision,
        position: value.len().min(MEMBER_VALUE_BYTES),
        reason: format!(
            "a member key's value is its lease timeout, {MEMBER_VALUE_BYTES} bytes; this one has {}",
            value.len()
        ),
    })?;
    Ok(Duration::from_millis(u64::from_le_bytes(bytes)))
}

/// The server's time now: the `ts` of a stream info reply, which the
/// client's typed `Info` leaves out.
async fn server_time(jetstream: &Context, stream: &str) -> Result<OffsetDateTime> {
    let what = || format!("read the server's time from the info of stream {stream}");
    let reply: serde_json::Value = jetstream
        .request(format!("STREAM.INFO.{stream}"), &serde_json::json!({}))
        .await
        .map_err(|e| Error::engine(what(), e))?;
    let ts = reply.get("ts").and_then(serde_json::Value::as_str).ok_or_else(|| {
        let error = reply.get("error").map_or_else(|| "no \"ts\" in the reply".to_owned(), ToString::to_string);
        Error::engine(what(), error)
    })?;
    OffsetDateTime::parse(ts, &Rfc3339).map_err(|e| Error::engine(what(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_value_is_its_lease_in_ms_and_anything_else_names_the_key() {
        assert_eq!(lease_of("B", "m-1", 4, &1500u64.to_le_bytes()).unwrap(), Duration::from_millis(1500));
        for (value, position) in [(&b""[..], 0), (&b"abc"[..], 3), (&[0u8; 9][..], 8)] {
            match lease_of("B", "m-1", 4, value) {
                Err(Error::CorruptSlot { bucket, slot, revision: 4, position: at, .. }) => {
                    assert_eq!((bucket.as_str(), slot.as_str(), at), ("B", "m-1", position));
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }
}

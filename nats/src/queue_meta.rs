//! The bytes of a queue's meta entry (pure: no I/O): what the queue was
//! created with, written last when it is created, so a queue whose streams
//! exist without it is recognisably half-created.
//!
//! The entry is the key `<queue>` of the key-value bucket `DURQ_QUEUES`.
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | magic | `DQQM` |
//! | 4 | 1 | version | 1 |
//! | 5 | 4 | partitions | u32 LE, 1..=1024 |
//! | 9 | 1 | durability | 0 = sync, 1 = interval, 2 = buffered |
//! | 10 | 8 | interval | u64 LE milliseconds; 0 unless durability is interval |
//! | 18 | 4 | record_bytes_max | u32 LE, at least 1 |
//! | 22 | 1 | replicas | copies of each stream: 1, or 3 on a cluster |
//!
//! The value is exactly 23 bytes. As with a slot's value, the server keeps
//! the entry whole; the checks catch a value written by something other than
//! durq, or by a newer format. The same table is in docs/SCALE_OUT.md.

use std::time::Duration;

use durq::Durability;

/// The value's first four bytes.
pub const MAGIC: [u8; 4] = *b"DQQM";
/// The format version this build reads and writes.
pub const VERSION: u8 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const PARTITIONS_OFFSET: usize = VERSION_OFFSET + 1;
const DURABILITY_OFFSET: usize = PARTITIONS_OFFSET + 4;
const INTERVAL_OFFSET: usize = DURABILITY_OFFSET + 1;
const RECORD_BYTES_MAX_OFFSET: usize = INTERVAL_OFFSET + 8;
const REPLICAS_OFFSET: usize = RECORD_BYTES_MAX_OFFSET + 4;
/// The encoded value's size.
pub const VALUE_BYTES: usize = REPLICAS_OFFSET + 1;

const SYNC: u8 = 0;
const INTERVAL: u8 = 1;
const BUFFERED: u8 = 2;

/// What a NATS queue was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMeta {
    /// Number of partitions (one stream each).
    pub partitions: u32,
    /// What an acknowledgement means (docs/SCALE_OUT.md, "Durability").
    pub durability: Durability,
    /// Largest key + payload of one record.
    pub record_bytes_max: u32,
    /// Copies of each stream.
    pub replicas: u8,
}

/// Why a value failed to decode: the byte position and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the value the check failed.
    pub position: usize,
    /// What failed.
    pub reason: String,
}

impl QueueMeta {
    /// The value's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, interval) = match self.durability {
            Durability::Sync => (SYNC, 0),
            Durability::Interval(d) => (INTERVAL, u64::try_from(d.as_millis()).expect("an interval of at most 1 h")),
            Durability::Buffered => (BUFFERED, 0),
        };
        let mut bytes = Vec::with_capacity(VALUE_BYTES);
        bytes.extend_from_slice(&MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.partitions.to_le_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&interval.to_le_bytes());
        bytes.extend_from_slice(&self.record_bytes_max.to_le_bytes());
        bytes.push(self.replicas);
        debug_assert_eq!(Self::decode(&bytes).as_ref(), Ok(self));
        bytes
    }

    /// Validates and decodes a value: length, magic, version, then each
    /// field's range.
    pub fn decode(bytes: &[u8]) -> Result<QueueMeta, DecodeError> {
        let fail = |position, reason: String| Err(DecodeError { position, reason });
        if bytes.len() != VALUE_BYTES {
            return fail(bytes.len().min(VALUE_BYTES), format!("{} bytes, not {VALUE_BYTES}", bytes.len()));
        }
        if bytes[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return fail(
                MAGIC_OFFSET,
                format!("magic {:02x?}, not {MAGIC:02x?}", &bytes[MAGIC_OFFSET..VERSION_OFFSET]),
            );
        }
        if bytes[VERSION_OFFSET] != VERSION {
            return fail(VERSION_OFFSET, format!("version {} (this build reads {VERSION})", bytes[VERSION_OFFSET]));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let partitions = u32_at(PARTITIONS_OFFSET);
        // durq's own rule (1..=1024), asked of durq rather than copied.
        if let Err(e) = durq::Options::default().partitions(partitions).resolve() {
            return fail(PARTITIONS_OFFSET, e.to_string());
        }
        let interval = u64::from_le_bytes(bytes[INTERVAL_OFFSET..INTERVAL_OFFSET + 8].try_into().expect("8 bytes"));
        let durability = match (bytes[DURABILITY_OFFSET], interval) {
            (SYNC, 0) => Durability::Sync,
            (BUFFERED, 0) => Durability::Buffered,
            (INTERVAL, ms) if ms > 0 => Durability::Interval(Duration::from_millis(ms)),
            (kind @ (SYNC | BUFFERED | INTERVAL), ms) => {
                return fail(INTERVAL_OFFSET, format!("interval {ms} ms does not fit durability kind {kind}"));
            }
            (kind, _) => return fail(DURABILITY_OFFSET, format!("durability kind {kind} is not 0, 1 or 2")),
        };
        let record_bytes_max = u32_at(RECORD_BYTES_MAX_OFFSET);
        if record_bytes_max == 0 {
            return fail(RECORD_BYTES_MAX_OFFSET, "record_bytes_max 0".to_owned());
        }
        let replicas = bytes[REPLICAS_OFFSET];
        if replicas == 0 {
            return fail(REPLICAS_OFFSET, "0 replicas".to_owned());
        }
        Ok(QueueMeta { partitions, durability, record_bytes_max, replicas })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> QueueMeta {
        QueueMeta {
            partitions: 0x0102,
            durability: Durability::Interval(Duration::from_millis(0x0304)),
            record_bytes_max: 0x0506,
            replicas: 3,
        }
    }

    #[test]
    fn golden_bytes_match_the_documented_layout() {
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &b"DQQM"[..],
            &[1],
            &[0x02, 0x01, 0, 0],
            &[1],
            &[0x04, 0x03, 0, 0, 0, 0, 0, 0],
            &[0x06, 0x05, 0, 0],
            &[3],
        ].concat();
        assert_eq!(meta().encode(), expected);
        assert_eq!(QueueMeta::decode(&expected), Ok(meta()));
    }

    #[test]
    fn every_durability_round_trips() {
        for durability in [Durability::Sync, Durability::Buffered, Durability::Interval(Duration::from_secs(3600))] {
            let meta = QueueMeta { durability, ..meta() };
            assert_eq!(QueueMeta::decode(&meta.encode()), Ok(meta));
        }
    }

    #[test]
    fn decode_names_the_byte_that_fails() {
        let good = meta().encode();
        let with = |at: usize, value: &[u8]| {
            let mut bytes = good.clone();
            bytes[at..at + value.len()].copy_from_slice(value);
            bytes
        };
        let cases: Vec<(Vec<u8>, usize)> = vec![
            (good[..VALUE_BYTES - 1].to_vec(), VALUE_BYTES - 1),
            ([&good[..], &[0]].concat(), VALUE_BYTES),
            (with(MAGIC_OFFSET, b"DQSL"), MAGIC_OFFSET),
            (with(VERSION_OFFSET, &[2]), VERSION_OFFSET),
            (with(PARTITIONS_OFFSET, &[0, 0, 0, 0]), PARTITIONS_OFFSET),
            (with(PARTITIONS_OFFSET, &1025_u32.to_le_bytes()), PARTITIONS_OFFSET),
            (with(DURABILITY_OFFSET, &[3]), DURABILITY_OFFSET),
            (with(DURABILITY_OFFSET, &[SYNC]), INTERVAL_OFFSET),
            (with(INTERVAL_OFFSET, &[0; 8]), INTERVAL_OFFSET),
            (with(RECORD_BYTES_MAX_OFFSET, &[0; 4]), RECORD_BYTES_MAX_OFFSET),
            (with(REPLICAS_OFFSET, &[0]), REPLICAS_OFFSET),
        ];
        for (bytes, position) in cases {
            let err = QueueMeta::decode(&bytes).unwrap_err();
            assert_eq!(err.position, position, "{bytes:02x?}: {}", err.reason);
        }
    }
}

//! Dead letters: records that kept failing, kept with why.
//!
//! After `max_deliveries` failed deliveries a record goes to its group's
//! dead-letter queue, itself a durq queue at `groups/<group>/dlq` (one
//! partition, `Sync`), before the group's checkpoint moves past it: nothing
//! is dropped without a durable trace. Each dead letter keeps the original
//! key as its key, and this envelope as its payload:
//!
//! ```text
//! offset size field
//!  0     8    magic           b"DURQDEAD"
//!  8     4    version         FORMAT_VERSION
//! 12     4    partition       where the record was
//! 16     8    offset          its offset there
//! 24     8    timestamp_ms    when it was first appended
//! 32     4    delivery_count  deliveries before it was given up on
//! 36     4    error_len       bytes of the error text
//! 40     -    error text (UTF-8), then the original payload
//! ```

use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::Result;
use crate::group::{Committed, Group};
use crate::log::record::FRAME_HEADER_BYTES;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::meta::FORMAT_VERSION;
use crate::options::{Durability, Options, QueueConfig};
use crate::position::Position;

pub use crate::layout::{DLQ_DIR, REPLAY_GROUP};
/// Longest error text kept, in bytes.
pub const ERROR_BYTES_MAX: usize = 4096;
const MAGIC: [u8; 8] = *b"DURQDEAD";
const HEADER_BYTES: usize = 40;

/// A group's dead-letter queue, a queue of its own in the group's
/// directory, created with the first dead letter.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterQueue {
    dir: PathBuf,
}

impl DeadLetterQueue {
    /// The dead-letter queue of the group at `group_dir`.
    pub(crate) fn of(group_dir: &Path) -> DeadLetterQueue {
        DeadLetterQueue { dir: group_dir.join(DLQ_DIR) }
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it was created: it has a meta file (its creation publishes
    /// the meta file last).
    pub(crate) fn exists(&self) -> bool {
        self.dir.join(crate::layout::META_FILE).exists()
    }

    /// Where its replay group stands: the dead letters before it were
    /// replayed, and no longer count.
    pub(crate) fn replayed(&self) -> Result<Committed> {
        Group::listed(&self.dir, REPLAY_GROUP).committed(0)
    }
}

/// The options of a dead-letter queue for a queue with `main`'s options:
/// one partition, `Sync`, and room for the largest record plus its envelope
/// (a dead letter must never be refused for its size: its record would then
/// block its partition for good).
pub fn queue_options(main: &QueueConfig) -> Options {
    let record_bytes_max = main.record_bytes_max + (HEADER_BYTES + ERROR_BYTES_MAX) as u32;
    let needed =
        (u64::from(record_bytes_max) + (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 8) as u64).next_multiple_of(4096);
    Options::default()
        .partitions(1)
        .durability(Durability::Sync)
        .segment_bytes(main.segment_bytes.max(needed))
        .record_bytes_max(record_bytes_max)
}

/// A dead letter, decoded, as [`Queue::dead_letters`] returns it: the
/// record that was given up on, where it was, and why.
///
/// [`Queue::dead_letters`]: crate::Queue::dead_letters
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its place in the dead-letter queue: letters are listed and replayed
    /// in this order.
    pub dlq_offset: u64,
    /// Where the record was in the queue.
    pub original: Position,
    /// When the record was first appended, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// When it was given up on (appended to the dead-letter queue), ms since
    /// the Unix epoch.
    pub failed_at_ms: u64,
    /// How many times it was delivered before it was given up on.
    pub deliveries: u32,
    /// Why: the last delivery's error, or the reason of a
    /// [`Verdict::DeadLetter`](crate::Verdict::DeadLetter), cut to
    /// [`ERROR_BYTES_MAX`] bytes.
    pub reason: String,
    /// The record's key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The record's payload.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The dead letter stored at `dlq_offset` of the dead-letter queue,
    /// appended at `failed_at_ms` with `key` and the decoded `envelope`.
    pub(crate) fn new(dlq_offset: u64, failed_at_ms: u64, key: Option<&[u8]>, envelope: Envelope<'_>) -> DeadLetter {
        DeadLetter {
            dlq_offset,
            original: Position { partition: envelope.partition, offset: envelope.offset },
            timestamp_ms: envelope.timestamp_ms,
            failed_at_ms,
            deliveries: envelope.delivery_count,
            reason: envelope.error.to_owned(),
            key: key.map(<[u8]>::to_vec),
            payload: envelope.payload.to_vec(),
        }
    }
}

/// A dead letter's envelope (the payload of its record in the dead-letter
/// queue), borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The partition the record was in.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was first appended, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// The last error, as text.
    pub error: &'a str,
    /// The original payload.
    pub payload: &'a [u8],
}

/// Encodes an envelope; the error text is cut to `ERROR_BYTES_MAX` bytes.
pub fn encode(d: &Envelope<'_>) -> Vec<u8> {
    let mut end = d.error.len().min(ERROR_BYTES_MAX);
    while !d.error.is_char_boundary(end) {
        end -= 1;
    }
    let error = &d.error.as_bytes()[..end];
    let mut out = Vec::with_capacity(HEADER_BYTES + error.len() + d.payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&d.partition.to_le_bytes());
    out.extend_from_slice(&d.offset.to_le_bytes());
    out.extend_from_slice(&d.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&d.delivery_count.to_le_bytes());
    out.extend_from_slice(&(error.len() as u32).to_le_bytes());
    out.extend_from_slice(error);
    out.extend_from_slice(d.payload);
    out
}

/// Decodes an envelope, or says why the bytes are not one.
pub fn decode(b: &[u8]) -> Result<Envelope<'_>, &'static str> {
    if b.len() < HEADER_BYTES || b[..8] != MAGIC {
        return Err("not a dead letter");
    }
    if codec::u32_at(b, 8) != FORMAT_VERSION {
        return Err("dead letter of another format version");
    }
    let error_len = codec::u32_at(b, 36) as usize;
    let error = b.get(HEADER_BYTES..HEADER_BYTES + error_len).ok_or("dead letter error text cut short")?;
    Ok(Envelope {
        partition: codec::u32_at(b, 12),
        offset: codec::u64_at(b, 16),
        timestamp_ms: codec::u64_at(b, 24),
        delivery_count: codec::u32_at(b, 32),
        error: std::str::from_utf8(error).map_err(|_| "dead letter error text is not UTF-8")?,
        payload: &b[HEADER_BYTES + error_len..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip_and_reject_garbage() {
        let d = Envelope {
            partition: 3,
            offset: 77,
            timestamp_ms: 5,
            delivery_count: 16,
            error: "db down",
            payload: b"order 9",
        };
        let bytes = encode(&d);
        assert_eq!(&bytes[..8], b"DURQDEAD");
        assert_eq!(decode(&bytes), Ok(d));
        assert!(decode(b"short").is_err());
        assert!(decode(&bytes[..42]).is_err());
    }

    #[test]
    fn the_dead_letter_queue_fits_the_largest_record_with_its_envelope() {
        for (segment_bytes, record_bytes_max) in [(64 << 10, 1000), (64 << 10, 65_432), (64 << 20, 1 << 20)] {
            let main = QueueConfig {
                partitions: 3,
                durability: Durability::Buffered,
                segment_bytes,
                record_bytes_max,
                retention: Default::default(),
            };
            let dlq = queue_options(&main).resolve().expect("valid options");
            assert!(dlq.record_bytes_max as usize >= record_bytes_max as usize + HEADER_BYTES + ERROR_BYTES_MAX);
            assert_eq!((dlq.partitions, dlq.durability), (1, Durability::Sync));
        }
    }

    #[test]
    fn long_error_texts_are_cut_on_a_char_boundary() {
        let long = "é".repeat(ERROR_BYTES_MAX);
        let d = Envelope { partition: 0, offset: 0, timestamp_ms: 0, delivery_count: 1, error: &long, payload: b"" };
        assert_eq!(decode(&encode(&d)).unwrap().error.len(), ERROR_BYTES_MAX);
    }
}

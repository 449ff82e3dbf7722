//! The bytes of one slot's key-value entry (pure: no I/O).
//!
//! Version 2 (written by this build):
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | magic | `DQSL` |
//! | 4 | 1 | version | 2 |
//! | 5 | 8 | checkpoint | u64 LE: the next offset to process; every record before it was processed |
//! | 13 | 8 | epoch | u64 LE: the revision of the take that began this holding; 0 in the take's own entry (its epoch is its revision, unknown until written) and in a released slot |
//! | 21 | 8 | delivered end | u64 LE: records from the checkpoint up to this offset were handed to a member and not committed; at least the checkpoint |
//! | 29 | 4 | attempts | u32 LE: deliveries of the record at the checkpoint so far |
//! | 33 | 2 | holder length | u16 LE, at most [`HOLDER_BYTES_MAX`]; 0 = the slot is free |
//! | 35 | n | holder | UTF-8 member id |
//!
//! Version 1 (read, never written) has no delivered end and attempts: the
//! holder length at 21 and the holder at 23. It reads as delivered end =
//! checkpoint and attempts = 0 (nothing delivered and uncommitted).
//!
//! The value is exactly its header + `n` bytes. The server keeps each entry
//! whole (one JetStream message, checksummed in its store), so there is no
//! torn write to detect here; the checks catch a value written by something
//! other than durq, or by a newer format. The same table is in
//! docs/SCALE_OUT.md.

/// The value's first four bytes.
pub const MAGIC: [u8; 4] = *b"DQSL";
/// The format version this build writes.
pub const VERSION: u8 = 2;
/// The first version, still read.
pub const VERSION_1: u8 = 1;
/// The longest member id a slot can name.
pub const HOLDER_BYTES_MAX: usize = 256;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const CHECKPOINT_OFFSET: usize = VERSION_OFFSET + 1;
const EPOCH_OFFSET: usize = CHECKPOINT_OFFSET + 8;
const DELIVERED_END_OFFSET: usize = EPOCH_OFFSET + 8;
const ATTEMPTS_OFFSET: usize = DELIVERED_END_OFFSET + 8;
const HOLDER_LEN_OFFSET: usize = ATTEMPTS_OFFSET + 4;
const HOLDER_OFFSET: usize = HOLDER_LEN_OFFSET + 2;
/// Version 1 ends its fixed fields after the epoch.
const V1_HOLDER_LEN_OFFSET: usize = EPOCH_OFFSET + 8;

/// The largest encoded value (the bucket's value size limit).
pub const VALUE_BYTES_MAX: usize = HOLDER_OFFSET + HOLDER_BYTES_MAX;

/// One slot's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotValue {
    /// The next offset to process.
    pub checkpoint: u64,
    /// The holding's epoch, or 0 (see the table above).
    pub epoch: u64,
    /// Records from `checkpoint` up to this offset were handed to a member
    /// and not committed (at least `checkpoint`).
    pub delivered_end: u64,
    /// Deliveries of the record at `checkpoint` so far.
    pub attempts: u32,
    /// The holder's member id; empty when the slot is free.
    pub holder: String,
}

/// Why a value failed to decode: the byte position and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the value the check failed.
    pub position: usize,
    /// What failed.
    pub reason: String,
}

impl SlotValue {
    /// The value's bytes. The holder must fit (`HOLDER_BYTES_MAX`); callers
    /// validate member ids before they get here.
    pub fn encode(&self) -> Vec<u8> {
        let holder = self.holder.as_bytes();
        assert!(holder.len() <= HOLDER_BYTES_MAX, "holder of {} bytes > {HOLDER_BYTES_MAX}", holder.len());
        let mut bytes = Vec::with_capacity(HOLDER_OFFSET + holder.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.checkpoint.to_le_bytes());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&self.delivered_end.to_le_bytes());
        bytes.extend_from_slice(&self.attempts.to_le_bytes());
        bytes.extend_from_slice(&(holder.len() as u16).to_le_bytes());
        bytes.extend_from_slice(holder);
        debug_assert_eq!(Self::decode(&bytes).as_ref(), Ok(self));
        bytes
    }

    /// Validates and decodes a value: magic, then version, then lengths,
    /// then the holder's UTF-8. Version 1 values read with nothing
    /// delivered past the checkpoint.
    pub fn decode(bytes: &[u8]) -> Result<SlotValue, DecodeError> {
        let fail = |position, reason: String| Err(DecodeError { position, reason });
        if bytes.len() <= VERSION_OFFSET {
            return fail(bytes.len(), format!("{} bytes, shorter than a header", bytes.len()));
        }
        if bytes[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return fail(
                MAGIC_OFFSET,
                format!("magic {:02x?}, not {MAGIC:02x?}", &bytes[MAGIC_OFFSET..VERSION_OFFSET]),
            );
        }
        let holder_len_offset = match bytes[VERSION_OFFSET] {
            VERSION => HOLDER_LEN_OFFSET,
            VERSION_1 => V1_HOLDER_LEN_OFFSET,
            other => {
                return fail(VERSION_OFFSET, format!("version {other} (this build reads {VERSION_1} and {VERSION})"));
            }
        };
        let holder_offset = holder_len_offset + 2;
        if bytes.len() < holder_offset {
            return fail(bytes.len(), format!("{} bytes, shorter than the {holder_offset}-byte header", bytes.len()));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let holder_len = usize::from(u16::from_le_bytes([bytes[holder_len_offset], bytes[holder_len_offset + 1]]));
        if holder_len > HOLDER_BYTES_MAX {
            return fail(holder_len_offset, format!("holder length {holder_len} > {HOLDER_BYTES_MAX}"));
        }
        if bytes.len() != holder_offset + holder_len {
            return fail(
                holder_len_offset,
                format!("holder length {holder_len} does not match the value's {} bytes", bytes.len()),
            );
        }
        let holder = match std::str::from_utf8(&bytes[holder_offset..]) {
            Ok(holder) => holder.to_owned(),
            Err(e) => return fail(holder_offset + e.valid_up_to(), "holder is not UTF-8".to_owned()),
        };
        let checkpoint = u64_at(CHECKPOINT_OFFSET);
        let (delivered_end, attempts) = if holder_len_offset == HOLDER_LEN_OFFSET {
            let attempts = u32::from_le_bytes(bytes[ATTEMPTS_OFFSET..ATTEMPTS_OFFSET + 4].try_into().expect("4 bytes"));
            (u64_at(DELIVERED_END_OFFSET), attempts)
        } else {
            (checkpoint, 0)
        };
        if delivered_end < checkpoint {
            return fail(
                DELIVERED_END_OFFSET,
                format!("delivered end {delivered_end} is below the checkpoint {checkpoint}"),
            );
        }
        Ok(SlotValue { checkpoint, epoch: u64_at(EPOCH_OFFSET), delivered_end, attempts, holder })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> SlotValue {
        SlotValue { checkpoint: 0x0102, epoch: 7, delivered_end: 0x0110, attempts: 3, holder: "m-1".to_owned() }
    }

    #[test]
    fn golden_bytes_match_the_documented_layout() {
        let bytes = held().encode();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &b"DQSL"[..],
            &[2],
            &[0x02, 0x01, 0, 0, 0, 0, 0, 0],
            &[7, 0, 0, 0, 0, 0, 0, 0],
            &[0x10, 0x01, 0, 0, 0, 0, 0, 0],
            &[3, 0, 0, 0],
            &[3, 0],
            b"m-1",
        ].concat();
        assert_eq!(bytes, expected);
        assert_eq!(SlotValue::decode(&bytes), Ok(held()));
    }

    #[test]
    fn a_version_1_value_reads_with_nothing_delivered_past_the_checkpoint() {
        #[rustfmt::skip]
        let v1: Vec<u8> = [
            &b"DQSL"[..],
            &[1],
            &[0x02, 0x01, 0, 0, 0, 0, 0, 0],
            &[7, 0, 0, 0, 0, 0, 0, 0],
            &[3, 0],
            b"m-1",
        ].concat();
        let expected =
            SlotValue { checkpoint: 0x0102, epoch: 7, delivered_end: 0x0102, attempts: 0, holder: "m-1".into() };
        assert_eq!(SlotValue::decode(&v1), Ok(expected));
        let mut bad = v1.clone();
        bad[21] = 9;
        assert_eq!(SlotValue::decode(&bad).unwrap_err().position, 21, "a version 1 holder length");
    }

    #[test]
    fn a_free_slot_round_trips_with_an_empty_holder() {
        let free =
            SlotValue { checkpoint: u64::MAX, epoch: 0, delivered_end: u64::MAX, attempts: 0, holder: String::new() };
        assert_eq!(free.encode().len(), HOLDER_OFFSET);
        assert_eq!(SlotValue::decode(&free.encode()), Ok(free));
    }

    #[test]
    fn decode_names_the_byte_that_fails() {
        let good = held().encode();
        let cases: Vec<(Vec<u8>, usize)> = vec![
            (Vec::new(), 0),
            (good[..HOLDER_OFFSET - 1].to_vec(), HOLDER_OFFSET - 1),
            ([&b"DQSX"[..], &good[4..]].concat(), MAGIC_OFFSET),
            ([&good[..4], &[3], &good[5..]].concat(), VERSION_OFFSET),
            ([&good[..], b"x"].concat(), HOLDER_LEN_OFFSET),
            (good[..good.len() - 1].to_vec(), HOLDER_LEN_OFFSET),
            ([&good[..HOLDER_LEN_OFFSET], &[0xff, 0xff]].concat(), HOLDER_LEN_OFFSET),
            ([&good[..HOLDER_OFFSET], &[b'm', 0xff, b'1']].concat(), HOLDER_OFFSET + 1),
            ([&good[..DELIVERED_END_OFFSET], &[0; 8], &good[ATTEMPTS_OFFSET..]].concat(), DELIVERED_END_OFFSET),
        ];
        for (bytes, position) in cases {
            let err = SlotValue::decode(&bytes).unwrap_err();
            assert_eq!(err.position, position, "{bytes:02x?}: {}", err.reason);
        }
    }

    #[test]
    fn the_longest_holder_fits_the_value_limit() {
        let longest =
            SlotValue { checkpoint: 1, epoch: 1, delivered_end: 1, attempts: 0, holder: "h".repeat(HOLDER_BYTES_MAX) };
        assert_eq!(longest.encode().len(), VALUE_BYTES_MAX);
        assert_eq!(SlotValue::decode(&longest.encode()), Ok(longest));
    }
}

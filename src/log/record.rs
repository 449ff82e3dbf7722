//! The record frame: how one message is laid out in a segment.
//!
//! ```text
//! offset size field
//!  0     4    crc32        CRC32 (IEEE, crc32fast) of bytes 4..frame_len,
//!                          seeded with the segment's salt (`salt.rs`)
//!  4     4    payload_len  payload bytes
//!  8     8    offset       the record's offset in its partition
//! 16     8    timestamp_ms milliseconds since the Unix epoch
//! 24     2    key_len      key bytes (0 when there is no key)
//! 26     1    flags        bit 0: has a key; bit 1: the batch continues
//!                          in the next frame; other bits zero
//! 27     1    magic        0xD7
//! 28     4    durable_lag  offset minus the partition's durable watermark
//!                          when the frame was written (saturating)
//! 32     -    key, then payload, then zeros up to a multiple of 8
//! ```
//!
//! All integers are little-endian. The checksum covers every byte of the
//! frame after itself, padding included, so a torn length or offset can never
//! decode as a valid record; it is seeded with the segment's salt, so that a
//! frame written into another segment, or into an earlier life of the same
//! file, never decodes as a record of this one. Frames start at multiples of 8, so the header's
//! integers are naturally aligned. A header of 32 zero bytes marks the end of
//! the written part of a segment (segments are created zero-filled).
//!
//! `durable_lag` lets recovery tell a torn tail from damaged acknowledged data:
//! a valid frame written after a damaged one, whose watermark says the damaged
//! record was already durable, proves the damage hit acknowledged data.
//!
//! The batch flag makes `send_batch` atomic across a crash: every frame of a
//! batch but its last says "continues", so recovery can cut a batch whose
//! writer died half way back to its first frame.

use crate::codec;
use crate::log::salt::Salt;

pub use crate::format::{FRAME_ALIGN, FRAME_HEADER_BYTES};
/// The magic byte of every frame header (byte 27; docs/FORMAT.md).
pub const FRAME_MAGIC: u8 = 0xD7;
/// Largest key a record may carry (`key_len` is a u16).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;

const CRC_AT: usize = 0;
const PAYLOAD_LEN_AT: usize = CRC_AT + 4;
const OFFSET_AT: usize = PAYLOAD_LEN_AT + 4;
const TIMESTAMP_AT: usize = OFFSET_AT + 8;
const KEY_LEN_AT: usize = TIMESTAMP_AT + 8;
const FLAGS_AT: usize = KEY_LEN_AT + 2;
const MAGIC_AT: usize = FLAGS_AT + 1;
const DURABLE_LAG_AT: usize = MAGIC_AT + 1;
const _: () = assert!(DURABLE_LAG_AT + 4 == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN));

const FLAG_HAS_KEY: u8 = 1;
const FLAG_BATCH_CONTINUES: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_HAS_KEY | FLAG_BATCH_CONTINUES;
const ZERO_PAD: [u8; FRAME_ALIGN] = [0; FRAME_ALIGN];

/// Bytes a frame with this key and payload occupies, padding included.
pub fn frame_bytes(key_len: usize, payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + key_len + payload_len).next_multiple_of(FRAME_ALIGN)
}

/// The fields of a frame that are not its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// `offset` minus the durable watermark when the frame was written.
    pub durable_lag: u32,
    /// True for every frame of a batch but its last.
    pub batch_continues: bool,
}

/// Builds a frame header with a zero checksum field; [`checksum`] over the
/// finished frame fills it in. The append path writes header, key, payload
/// and padding straight into the mapping and checksums them there, in one
/// pass over contiguous bytes (under `Sync`, into a buffer it then writes
/// with `pwrite`: [`encode_parts_into`]).
#[expect(clippy::expect_used, reason = "the append path checked the payload against record_bytes_max, a u32")]
pub fn encode_header(meta: FrameMeta, key: Option<&[u8]>, payload: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    let key_bytes = key.unwrap_or(&[]);
    assert!(key_bytes.len() <= KEY_BYTES_MAX, "key of {} bytes passed size checks", key_bytes.len());
    let payload_len = u32::try_from(payload.len()).expect("payload length checked against record_bytes_max");
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[PAYLOAD_LEN_AT..OFFSET_AT].copy_from_slice(&payload_len.to_le_bytes());
    h[OFFSET_AT..TIMESTAMP_AT].copy_from_slice(&meta.offset.to_le_bytes());
    h[TIMESTAMP_AT..KEY_LEN_AT].copy_from_slice(&meta.timestamp_ms.to_le_bytes());
    h[KEY_LEN_AT..FLAGS_AT].copy_from_slice(&(key_bytes.len() as u16).to_le_bytes());
    h[FLAGS_AT] =
        if key.is_some() { FLAG_HAS_KEY } else { 0 } | if meta.batch_continues { FLAG_BATCH_CONTINUES } else { 0 };
    h[MAGIC_AT] = FRAME_MAGIC;
    h[DURABLE_LAG_AT..].copy_from_slice(&meta.durable_lag.to_le_bytes());
    h
}

/// The checksum field of a whole frame (`frame[0..4]` is ignored): CRC32 of
/// every byte after the field, seeded with the segment's `salt`.
pub fn checksum(frame: &[u8], salt: Salt) -> [u8; CHECKSUM_BYTES] {
    salt.checksum(&frame[CHECKSUM_BYTES..]).to_le_bytes()
}

/// The salt under which the frame at the start of `buf` passes its
/// checksum, if `buf` starts with a whole frame in every other respect
/// (magic, lengths, zero padding), so that [`decode`] under that salt
/// returns it: what recovery finds the salt of a segment whose header was
/// lost from (`recovery::segment_salt`). The padding is checked before
/// anything is hashed: a walk over hostile bytes hashes at most the one
/// frame it accepts.
pub fn salt_of(buf: &[u8], record_bytes_max: u32) -> Option<Salt> {
    let h = parse_header(buf, buf.len(), record_bytes_max).ok()??;
    if buf[FRAME_HEADER_BYTES + h.key_len + h.payload_len..h.len].iter().any(|&b| b != 0) {
        return None;
    }
    Salt::solving(&buf[CHECKSUM_BYTES..h.len], codec::u32_at(buf, CRC_AT))
}

/// Bytes of the checksum field at the start of a frame.
pub const CHECKSUM_BYTES: usize = PAYLOAD_LEN_AT - CRC_AT;

/// The zero bytes that pad a frame with this key and payload.
pub fn padding(key_len: usize, payload_len: usize) -> &'static [u8] {
    &ZERO_PAD[..frame_bytes(key_len, payload_len) - FRAME_HEADER_BYTES - key_len - payload_len]
}

/// Appends a frame made of `parts` (header from [`encode_header`], key,
/// payload, padding) to `out`, its checksum under `salt` filled in, and
/// returns its length: how the append path builds a batch under `Sync`,
/// which it then writes with one `pwrite`.
pub fn encode_parts_into(out: &mut Vec<u8>, parts: [&[u8]; 4], salt: Salt) -> usize {
    let at = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    let crc = checksum(&out[at..], salt);
    out[at..at + CHECKSUM_BYTES].copy_from_slice(&crc);
    out.len() - at
}

/// Encodes a whole frame into a new buffer (tests, tools and fuzzing; the
/// append path writes the parts straight into the mapping, or into its
/// batch's buffer).
pub fn encode(meta: FrameMeta, key: Option<&[u8]>, payload: &[u8], salt: Salt) -> Vec<u8> {
    let key_bytes = key.unwrap_or(&[]);
    let mut out = Vec::with_capacity(frame_bytes(key_bytes.len(), payload.len()));
    out.extend_from_slice(&encode_header(meta, key, payload));
    out.extend_from_slice(key_bytes);
    out.extend_from_slice(payload);
    out.extend_from_slice(padding(key_bytes.len(), payload.len()));
    let crc = checksum(&out, salt);
    out[..CHECKSUM_BYTES].copy_from_slice(&crc);
    out
}

/// A record decoded from a frame, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Offset, timestamp and durable watermark.
    pub meta: FrameMeta,
    /// The key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
    /// Bytes the frame occupies, padding included.
    pub len: usize,
}

/// What the bytes at a frame position are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A frame that passed every check.
    Frame(Frame<'a>),
    /// A header of zeros: nothing was written here.
    Zero,
    /// Not a valid frame, and why.
    Invalid(Invalid),
}

/// Why bytes failed to decode as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes remain than a header needs.
    Truncated,
    /// The magic byte or a reserved flag bit is wrong.
    BadMagic,
    /// The lengths exceed `record_bytes_max` or the bytes that remain.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The padding after the payload is not zeros.
    BadPadding,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::Truncated => "frame header cut short",
            Invalid::BadMagic => "bad frame magic or flags",
            Invalid::BadLength => "frame length out of bounds",
            Invalid::BadChecksum => "frame checksum mismatch",
            Invalid::BadPadding => "frame padding is not zero",
        })
    }
}

/// Decodes the frame at the start of `buf`, checking magic, lengths against
/// `record_bytes_max` and the bytes available, and the checksum under the
/// segment's `salt`. Never reads outside `buf` and never allocates.
pub fn decode(buf: &[u8], record_bytes_max: u32, salt: Salt) -> Decoded<'_> {
    match parse_header(buf, buf.len(), record_bytes_max) {
        Ok(None) => Decoded::Zero,
        Ok(Some(header)) => decode_parsed(buf, header, |bytes| salt.checksum(bytes)),
        Err(invalid) => Decoded::Invalid(invalid),
    }
}

/// The fields of a frame header that passed every check but the
/// checksum's, which covers the bytes after the header too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    meta: FrameMeta,
    has_key: bool,
    key_len: usize,
    payload_len: usize,
    /// Bytes the frame occupies, padding included.
    pub len: usize,
}

/// Parses the frame header at the start of `buf`, of a frame that may
/// occupy at most `available` bytes: the first half of [`decode`], for a
/// reader that must borrow exactly one frame's bytes ([`decode_parsed`] is
/// the second). `None` for a zero header.
pub fn parse_header(buf: &[u8], available: usize, record_bytes_max: u32) -> Result<Option<Header>, Invalid> {
    let h: &[u8; FRAME_HEADER_BYTES] =
        buf.get(..FRAME_HEADER_BYTES).and_then(|h| h.try_into().ok()).ok_or(Invalid::Truncated)?;
    // A frame's magic byte is never zero: only a header without it can be
    // the zeros that end a segment's written part, so the 32 bytes are
    // scanned only there.
    if h[MAGIC_AT] != FRAME_MAGIC {
        return if h.iter().all(|&b| b == 0) { Ok(None) } else { Err(Invalid::BadMagic) };
    }
    if h[FLAGS_AT] & !FLAGS_KNOWN != 0 {
        return Err(Invalid::BadMagic);
    }
    let payload_len = codec::u32_at(h, PAYLOAD_LEN_AT) as usize;
    let key_len = codec::u16_at(h, KEY_LEN_AT) as usize;
    let has_key = h[FLAGS_AT] & FLAG_HAS_KEY != 0;
    if (!has_key && key_len != 0) || key_len + payload_len > record_bytes_max as usize {
        return Err(Invalid::BadLength);
    }
    let len = frame_bytes(key_len, payload_len);
    if len > available {
        return Err(Invalid::BadLength);
    }
    let meta = FrameMeta {
        offset: codec::u64_at(h, OFFSET_AT),
        timestamp_ms: codec::u64_at(h, TIMESTAMP_AT),
        durable_lag: codec::u32_at(h, DURABLE_LAG_AT),
        batch_continues: h[FLAGS_AT] & FLAG_BATCH_CONTINUES != 0,
    };
    Ok(Some(Header { meta, has_key, key_len, payload_len, len }))
}

/// The frame at the start of `buf`, whose header [`parse_header`] returned
/// as `header`, if its checksum (by `checksum`, the segment's salted CRC32
/// of the bytes after the field) and its padding are right. Never reads
/// outside `buf`.
pub fn decode_parsed(buf: &[u8], header: Header, checksum: impl FnOnce(&[u8]) -> u32) -> Decoded<'_> {
    let Some(frame) = buf.get(..header.len) else { return Decoded::Invalid(Invalid::BadLength) };
    if checksum(&frame[PAYLOAD_LEN_AT..]) != codec::u32_at(frame, CRC_AT) {
        return Decoded::Invalid(Invalid::BadChecksum);
    }
    let key_end = FRAME_HEADER_BYTES + header.key_len;
    let payload_end = key_end + header.payload_len;
    if frame[payload_end..].iter().any(|&b| b != 0) {
        return Decoded::Invalid(Invalid::BadPadding);
    }
    Decoded::Frame(Frame {
        meta: header.meta,
        key: header.has_key.then(|| &frame[FRAME_HEADER_BYTES..key_end]),
        payload: &frame[key_end..payload_end],
        len: header.len,
    })
}

/// Reads a frame's offset and length from its header alone, without
/// checking the checksum: for hopping over records a reader has already
/// consumed. `None` for a zero header.
pub fn peek_header(header: &[u8], record_bytes_max: u32) -> Result<Option<(u64, usize)>, Invalid> {
    let h = header.get(..FRAME_HEADER_BYTES).ok_or(Invalid::Truncated)?;
    Ok(parse_header(h, usize::MAX, record_bytes_max)?.map(|h| (h.meta.offset, h.len)))
}

/// The length of the frame whose header starts `buf`, from the header
/// alone (no checksum check): lets a reader borrow exactly one frame.
/// `None` for a zero header.
pub fn frame_len(buf: &[u8], record_bytes_max: u32) -> Result<Option<usize>, Invalid> {
    Ok(peek_header(buf, record_bytes_max)?.map(|(_, len)| len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: Salt = Salt::new(0x5a17_c0de);
    const META: FrameMeta =
        FrameMeta { offset: 7, timestamp_ms: 1_700_000_000_123, durable_lag: 2, batch_continues: false };

    #[test]
    fn frame_golden_bytes() {
        // Pins the layout documented in docs/FORMAT.md byte for byte.
        let frame = encode(META, Some(b"k1"), b"hello", Salt::UNSALTED);
        let expected: Vec<u8> = [
            &0xd1cb_b3f1_u32.to_le_bytes()[..], // crc32, pinned below
            &5u32.to_le_bytes(),
            &7u64.to_le_bytes(),
            &1_700_000_000_123u64.to_le_bytes(),
            &2u16.to_le_bytes(),
            &[FLAG_HAS_KEY, FRAME_MAGIC],
            &2u32.to_le_bytes(),
            b"k1hello",
            &[0],
        ]
        .concat();
        assert_eq!(frame.len(), 40);
        assert_eq!(frame[4..], expected[4..], "header fields and body");
        assert_eq!(codec::u32_at(&frame, 0), crc32fast::hash(&frame[4..]), "crc covers everything after itself");
        assert_eq!(frame[..4], expected[..4], "pinned checksum");
    }

    #[test]
    fn frame_golden_bytes_salted() {
        // The same frame in a version-2 segment: every byte but the
        // checksum is the same; the checksum is CRC32 seeded with the salt.
        let unsalted = encode(META, Some(b"k1"), b"hello", Salt::UNSALTED);
        let frame = encode(META, Some(b"k1"), b"hello", SALT);
        assert_eq!(frame[4..], unsalted[4..]);
        let mut seeded = crc32fast::Hasher::new_with_initial(0x5a17_c0de);
        seeded.update(&frame[4..]);
        assert_eq!(codec::u32_at(&frame, 0), seeded.finalize());
        assert_eq!(frame[..4], 0xf827_2979_u32.to_le_bytes(), "pinned checksum");
        assert_eq!(salt_of(&frame, 1 << 20), Some(SALT));
        assert_eq!(salt_of(&unsalted, 1 << 20), Some(Salt::UNSALTED));
        let mut padded = frame.clone();
        padded[39] = 1;
        assert_eq!(salt_of(&padded, 1 << 20), None, "not a frame under any salt");
    }

    #[test]
    fn frame_of_another_salt_never_decodes() {
        // A frame of another segment, or of an earlier life of this file,
        // or embedded in another segment's payload: bad checksum, always.
        for key in [None, Some(&b"k"[..])] {
            for payload in [&b""[..], b"x", b"a payload of a few bytes"] {
                let frame = encode(META, key, payload, SALT);
                for other in [Salt::UNSALTED, Salt::new(SALT.get() ^ 1), Salt::fresh(SALT)] {
                    assert_eq!(decode(&frame, 1 << 20, other), Decoded::Invalid(Invalid::BadChecksum), "{other:?}");
                }
            }
        }
    }

    #[test]
    fn frame_round_trips_with_and_without_key() {
        for key in [None, Some(&b""[..]), Some(&b"order-42"[..])] {
            for payload in [&b""[..], b"x", b"exactly8", b"a longer payload of some bytes"] {
                let frame = encode(META, key, payload, SALT);
                assert_eq!(frame.len() % FRAME_ALIGN, 0);
                match decode(&frame, 1 << 20, SALT) {
                    Decoded::Frame(f) => {
                        assert_eq!((f.meta, f.key, f.payload, f.len), (META, key, payload, frame.len()));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn frame_batch_flag_round_trips_and_unknown_flags_are_rejected() {
        let meta = FrameMeta { batch_continues: true, ..META };
        let frame = encode(meta, Some(b"k"), b"v", SALT);
        assert_eq!(frame[26], FLAG_HAS_KEY | FLAG_BATCH_CONTINUES);
        assert!(matches!(decode(&frame, 1 << 20, SALT), Decoded::Frame(f) if f.meta == meta));
        let mut unknown = frame.clone();
        unknown[26] |= 4;
        let crc = checksum(&unknown, SALT);
        unknown[..4].copy_from_slice(&crc);
        assert_eq!(decode(&unknown, 1 << 20, SALT), Decoded::Invalid(Invalid::BadMagic));
    }

    #[test]
    fn frame_zero_header_is_end_not_record() {
        assert_eq!(decode(&[0u8; 64], 1 << 20, SALT), Decoded::Zero);
        // An all-zero frame can never validate: its magic byte is missing.
        assert_eq!(decode(&[0u8; FRAME_HEADER_BYTES - 1], 1 << 20, SALT), Decoded::Invalid(Invalid::Truncated));
    }

    #[test]
    fn frame_every_single_bit_flip_is_detected() {
        let frame = encode(META, Some(b"key"), b"payload bytes", SALT);
        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode(&damaged, 1 << 20, SALT), Decoded::Invalid(_)),
                "flip of bit {bit} went undetected"
            );
        }
    }

    #[test]
    fn frame_length_beyond_limit_or_buffer_is_rejected() {
        let frame = encode(META, None, &[1u8; 100], SALT);
        assert_eq!(decode(&frame, 99, SALT), Decoded::Invalid(Invalid::BadLength));
        assert_eq!(decode(&frame[..frame.len() - 8], 1 << 20, SALT), Decoded::Invalid(Invalid::BadLength));
    }
}

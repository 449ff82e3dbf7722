//! The properties durq's fuzz targets check, one function per target, shared
//! with `tests/it/fuzz_regressions.rs`: a plain `cargo test` replays every file
//! of `fuzz/regressions/<target>/` through the same function, so every seed
//! and every input that ever crashed stays checked without a fuzzer.
//!
//! Each function takes the raw input and panics, with the numbers in the
//! message, when a property fails. Inputs that carry parameters read them
//! from their front through [`Input`] (little-endian; zeros past the end).
//!
//! | target              | input                                                            |
//! |---------------------|------------------------------------------------------------------|
//! | `record_decode`     | `record_bytes_max: u32`, then the bytes at a frame position      |
//! | `segment_recover`   | mode byte: even = a raw segment image ([`segment_image`]), odd = a valid segment built from the input, then damaged ([`segment_damaged`]) |
//! | `checkpoint_decode` | a whole checkpoint file of partition [`CHECKPOINT_PARTITION`]   |
//! | `lease_decode`      | the same bytes as a lease of slot [`LEASE_SLOT`], a dead letter and a meta file |
//! | `queue_ops`         | a durability byte, then steps of two bytes (operation, argument; a power cut takes 8 more, its seed): see `power::decode_steps` |
//!
//! Run a target: `cd fuzz && cargo fuzz run --sanitizer none <target>`; with
//! AddressSanitizer: `RUSTC_BOOTSTRAP=1 cargo fuzz run <target>`.

// Each includer (a fuzz target, the regression test) uses part of this file.
#![allow(dead_code)]

#[path = "../tests/common/power.rs"]
mod power;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use durq::Error;
use durq::internals::group::{checkpoint, dead_letter, lease};
use durq::internals::log::record::{self, Decoded, FRAME_ALIGN, FRAME_HEADER_BYTES, FrameMeta, Invalid};
use durq::internals::log::recovery::{self, Evidence, LastFile, Scan};
use durq::internals::log::salt::Salt;
use durq::internals::log::segment::{self, SEGMENT_HEADER_BYTES};
use durq::internals::meta;

/// The partition every checkpoint input belongs to.
pub const CHECKPOINT_PARTITION: u32 = 3;
/// The slot every lease input belongs to.
pub const LEASE_SLOT: u32 = 3;

// ---------------------------------------------------------------------------
// record_decode

/// Arbitrary bytes at a frame position: `record::decode` never panics, never
/// allocates, agrees with `peek_header` and `frame_len`, and whatever it
/// accepts as a frame re-encodes to exactly the bytes it was decoded from.
/// Decoded unsalted (a version-1 segment's frames), and under the salt its
/// checksum solves to (`record::salt_of`): a frame-shaped input whose
/// checksum fails unsalted is a frame under exactly that salt, and a frame
/// under one salt fails under every other.
pub fn record_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let record_bytes_max = input.u32();
    let buf = input.rest();
    record_decode_salted(buf, record_bytes_max, Salt::UNSALTED);
    if let Decoded::Frame(_) = record::decode(buf, record_bytes_max, Salt::UNSALTED) {
        assert_eq!(record::salt_of(buf, record_bytes_max), Some(Salt::UNSALTED), "an unsalted frame's salt");
    }
    if let Some(salt) = record::salt_of(buf, record_bytes_max) {
        assert!(
            matches!(record::decode(buf, record_bytes_max, salt), Decoded::Frame(_)),
            "the salt solved from a frame's checksum ({salt:?}) does not decode it"
        );
        record_decode_salted(buf, record_bytes_max, salt);
        for other in [Salt::new(salt.get() ^ 1), Salt::new(salt.get() ^ 0x8000_0000), Salt::new(!salt.get())] {
            assert_eq!(
                record::decode(buf, record_bytes_max, other),
                // The checksum is checked before the padding.
                match record::decode(buf, record_bytes_max, salt) {
                    Decoded::Frame(_) | Decoded::Invalid(Invalid::BadPadding) => Decoded::Invalid(Invalid::BadChecksum),
                    not_a_frame => not_a_frame,
                },
                "a frame of salt {salt:?} passes its checksum under {other:?}, or fails otherwise"
            );
        }
    }
}

fn record_decode_salted(buf: &[u8], record_bytes_max: u32, salt: Salt) {
    let (decoded, allocated) = allocated_by(|| record::decode(buf, record_bytes_max, salt));
    assert_eq!(allocated, 0, "record::decode allocated {allocated} bytes");
    let (peeked, allocated) = allocated_by(|| record::peek_header(buf, record_bytes_max));
    assert_eq!(allocated, 0, "record::peek_header allocated {allocated} bytes");
    assert_eq!(record::frame_len(buf, record_bytes_max), peeked.map(|p| p.map(|(_, len)| len)));
    let what = || {
        format!(
            "{} bytes, record_bytes_max {record_bytes_max}, {salt:?}: {decoded:?}, peek_header {peeked:?}",
            buf.len()
        )
    };
    match decoded {
        Decoded::Zero => {
            assert!(buf.len() >= FRAME_HEADER_BYTES && buf[..FRAME_HEADER_BYTES].iter().all(|&b| b == 0), "{}", what());
            assert_eq!(peeked, Ok(None), "{}", what());
        }
        Decoded::Invalid(Invalid::Truncated) => {
            assert!(buf.len() < FRAME_HEADER_BYTES, "{}", what());
            assert_eq!(peeked, Err(Invalid::Truncated), "{}", what());
        }
        Decoded::Invalid(Invalid::BadMagic) => assert_eq!(peeked, Err(Invalid::BadMagic), "{}", what()),
        Decoded::Invalid(Invalid::BadLength) => {
            // The header alone cannot see that the frame overruns the buffer.
            let agrees = match peeked {
                Err(Invalid::BadLength) => true,
                Ok(Some((_, len))) => len > buf.len(),
                _ => false,
            };
            assert!(agrees, "{}", what());
        }
        Decoded::Invalid(Invalid::BadChecksum | Invalid::BadPadding) => {
            assert!(matches!(peeked, Ok(Some((_, len))) if len <= buf.len()), "{}", what());
        }
        Decoded::Frame(f) => {
            let key_len = f.key.map_or(0, <[u8]>::len);
            assert!(key_len + f.payload.len() <= record_bytes_max as usize, "{}", what());
            assert_eq!(f.len, record::frame_bytes(key_len, f.payload.len()), "{}", what());
            assert!(f.len <= buf.len() && f.len.is_multiple_of(FRAME_ALIGN), "{}", what());
            assert_eq!(peeked, Ok(Some((f.meta.offset, f.len))), "{}", what());
            // A reader borrows exactly one frame (`Segment::frame_at`).
            assert_eq!(record::decode(&buf[..f.len], record_bytes_max, salt), Decoded::Frame(f), "{}", what());
            let padding = &buf[FRAME_HEADER_BYTES + key_len + f.payload.len()..f.len];
            assert!(
                padding.iter().all(|&b| b == 0),
                "a frame whose padding is not zero ({padding:?}) decodes; docs/FORMAT.md says zeros: {}",
                what()
            );
            let encoded = record::encode(f.meta, f.key, f.payload, salt);
            assert!(
                encoded[..] == buf[..f.len],
                "a frame decodes but re-encodes to other bytes ({}): {}",
                first_difference(&buf[..f.len], &encoded),
                what()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// segment_recover

/// Dispatches on the mode byte (see the module table).
pub fn segment_recover(data: &[u8]) {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => segment_damaged(rest),
        Some((_, rest)) => segment_image(rest),
        None => {}
    }
}

/// `base_offset: u64`, `record_bytes_max: u32`, `synced_end: u64`, then a
/// whole segment image: the header parsers, the salt finder and
/// `recovery::scan` never panic, and the scan under the salt recovery
/// would use is consistent with the image ([`check_scan`]).
pub fn segment_image(data: &[u8]) {
    let mut input = Input::new(data);
    let base_offset = input.u64();
    let record_bytes_max = input.u32();
    let synced_end = input.u64();
    let seg = input.rest();
    let _ = segment::decode_synced_end(seg);
    let _ = segment::check_header(seg, Path::new("fuzz.seg"), 0, base_offset, seg.len() as u64);
    let salt = found_salt(seg, base_offset, record_bytes_max);
    let scan = recovery::scan(seg, base_offset, record_bytes_max, synced_end, salt);
    check_scan(seg, base_offset, record_bytes_max, synced_end, salt, &scan);
    check_known_zeros(seg, base_offset, record_bytes_max, synced_end, salt, &scan);
}

/// The salt recovery walks `seg` with (`partition::recover`), the same
/// whether it is told where the zeros begin or not.
fn found_salt(seg: &[u8], base_offset: u64, record_bytes_max: u32) -> Salt {
    let salt = recovery::segment_salt(seg, base_offset, record_bytes_max, seg.len());
    let zeros_from = seg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert_eq!(recovery::segment_salt(seg, base_offset, record_bytes_max, zeros_from), salt, "told the zeros");
    // None: no frame validates under any salt; recovery gives the segment a
    // fresh one, which the walk cannot tell from this.
    salt.unwrap_or(Salt::UNSALTED)
}

/// Told where the zeros of `seg` begin (as exactly as can be, and at the next
/// 4 KiB as a file system would), `recovery::scan_known_zeros` gives what
/// the plain scan gave.
pub fn check_known_zeros(
    seg: &[u8],
    base_offset: u64,
    record_bytes_max: u32,
    synced_end: u64,
    salt: Salt,
    scan: &Scan,
) {
    let zeros_from = seg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    for hint in [zeros_from, zeros_from.next_multiple_of(4096).min(seg.len())] {
        let told = recovery::scan_known_zeros(seg, base_offset, record_bytes_max, synced_end, hint, salt);
        assert_eq!(&told, scan, "the scan told the zeros begin at {hint} differs from the plain scan");
    }
}

/// A frame the re-walk of a scan passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Its byte position.
    pub pos: usize,
    /// Its offset.
    pub offset: u64,
}

/// Re-walks `seg` from its header to `scan.tail_pos` and checks that the scan
/// says what the bytes say: every position the walk passes holds a frame that
/// decodes (checksum included) with the next offset, except the reported
/// damage, where the walk resumes at `resumed_at`; no batch is left
/// unfinished at the tail; the tail is in bounds; everything after the tail
/// (or after the torn range to zero) is zero. Returns the frames walked.
pub fn check_scan(
    seg: &[u8],
    base_offset: u64,
    record_bytes_max: u32,
    synced_end: u64,
    salt: Salt,
    scan: &Scan,
) -> Vec<Walked> {
    let what = || {
        format!(
            "scan of a {}-byte image (base {base_offset}, record_bytes_max {record_bytes_max}, synced_end {synced_end}): {scan:?}",
            seg.len()
        )
    };
    let tail = scan.tail_pos;
    assert!(tail <= seg.len(), "tail past the end: {}", what());
    if seg.len().is_multiple_of(FRAME_ALIGN) {
        assert!(tail.is_multiple_of(FRAME_ALIGN), "unaligned tail: {}", what());
    }
    let mut walked = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES.min(seg.len());
    let mut expected = base_offset;
    let mut damage = scan.damaged.iter().peekable();
    let mut ended_by_damage = false;
    let mut last_continues = false;
    while pos < tail {
        if let Some(d) = damage.next_if(|d| d.pos == pos) {
            assert_eq!(d.offset, expected, "damage at byte {pos} names the wrong offset: {}", what());
            assert!(
                d.resumed_at > pos && d.resumed_at <= tail,
                "damage at byte {pos} resumes out of order: {}",
                what()
            );
            let damaged_at = pos;
            pos = d.resumed_at;
            last_continues = false;
            match record::decode(&seg[pos..], record_bytes_max, salt) {
                Decoded::Frame(f) => {
                    assert!(f.meta.offset > d.offset, "the walk resumes at byte {pos} at an old offset: {}", what());
                    // It resumes at the first plausible frame (docs in
                    // recovery.rs: one at `n` bytes past the damage carries
                    // at most offset `d.offset + n / FRAME_HEADER_BYTES`),
                    // looked for at every aligned position, zeros or not.
                    let most = d.offset.saturating_add(((pos - damaged_at) / FRAME_HEADER_BYTES) as u64);
                    assert!(
                        f.meta.offset <= most,
                        "the walk resumes at byte {pos} at offset {}, more records than fit since byte {damaged_at}: {}",
                        f.meta.offset,
                        what()
                    );
                    expected = f.meta.offset;
                    for at in (damaged_at + FRAME_ALIGN..pos).step_by(FRAME_ALIGN) {
                        if let Decoded::Frame(skipped) = record::decode(&seg[at..], record_bytes_max, salt) {
                            let most = d.offset.saturating_add(((at - damaged_at) / FRAME_HEADER_BYTES) as u64);
                            assert!(
                                skipped.meta.offset <= d.offset || skipped.meta.offset > most,
                                "the walk skipped the plausible frame at byte {at} for byte {pos}: {}",
                                what()
                            );
                        }
                    }
                }
                other => {
                    // Nothing valid after the damage: appends go after it,
                    // with offsets past every acknowledged one.
                    assert_eq!(pos, tail, "the walk resumes at byte {pos} where no frame is ({other:?}): {}", what());
                    assert!(scan.torn.is_none(), "{}", what());
                    // (At the end of the offset space there is no offset
                    // past it: the partition is full, and appends refuse.)
                    let past = scan.next_offset > d.offset || scan.next_offset == u64::MAX;
                    assert!(past && scan.next_offset >= synced_end, "{}", what());
                    ended_by_damage = true;
                }
            }
            continue;
        }
        let f = match record::decode(&seg[pos..], record_bytes_max, salt) {
            Decoded::Frame(f) => f,
            other => panic!("byte {pos}, before the tail, holds no valid frame ({other:?}): {}", what()),
        };
        assert_eq!(f.meta.offset, expected, "the frame at byte {pos} has the wrong offset: {}", what());
        walked.push(Walked { pos, offset: expected });
        last_continues = f.meta.batch_continues;
        pos += f.len;
        expected = expected.checked_add(1).unwrap_or_else(|| panic!("offsets overflow at byte {pos}: {}", what()));
    }
    assert_eq!(pos, tail, "the last frame before the tail overruns it: {}", what());
    let unwalked: Vec<_> = damage.collect();
    assert!(unwalked.is_empty(), "damage reported where the walk never is: {unwalked:?}: {}", what());
    assert!(!last_continues, "the tail leaves a batch unfinished: {}", what());
    if !ended_by_damage {
        assert_eq!(scan.next_offset, expected, "next offset is not the one after the last frame: {}", what());
    }
    let zeros_from = match scan.torn {
        Some(t) => {
            assert_eq!(t.from, tail, "{}", what());
            assert!(t.from <= t.to && t.to <= seg.len(), "torn range out of bounds: {}", what());
            assert!(t.walked_to >= scan.next_offset, "{}", what());
            t.to
        }
        None => tail,
    };
    if let Some(at) = seg[zeros_from..].iter().position(|&b| b != 0) {
        panic!("byte {} after the tail is not zero and is not zeroed: {}", zeros_from + at, what());
    }
    walked
}

/// The salt of a built version-2 segment.
pub const BUILT_SALT: Salt = Salt::new(0x5a17_c0de);

/// The most frames a built segment has.
pub const BUILT_RECORDS_MAX: u8 = 32;

/// A valid last segment built from the input, then damaged, maybe cut
/// short, and judged and recovered as `partition::recover` does, with
/// evidence from outside the log (a group's checkpoint) that some of its
/// records existed: no record whose frame ends before the first damaged or
/// cut byte is lost, and no byte of any record is zeroed (all of them were
/// acknowledged); a segment whose evidence or bytes show it held a record
/// is never taken for a creation cut short, the open going on from there
/// never reuses an offset the evidence proves, and what a power cut during
/// the creation leaves is never refused.
///
/// Layout: `flags: u8` (bit 0: key and payload of each record are one
/// repeated byte, which can never hold a frame; bit 1: a version-1 segment,
/// unsalted, else version 2 with [`BUILT_SALT`]), `count: u8`
/// (mod [`BUILT_RECORDS_MAX`] + 1), `base_offset: u64`, then per record
/// `shape: u8` (bit 0: has a key; bits 1..=4: key length) and
/// `payload_len: u16` (low 10 bits), then either one fill byte (bit 0 of
/// `flags`) or the key's and the payload's bytes; then `trailing: u8`
/// (words of zeros after the last frame), `limit_extra: u8` (added to the
/// largest record for `record_bytes_max`), `damage_at: u32` (mod the image
/// length), `mask: u8` (XORed in; 0 = no damage), `run: u8` (1 + run % 8
/// bytes damaged), `cut: u16` (0: the file keeps its length; else it is
/// cut to `(cut - 1) % length` bytes) and `evidence: u8` (mod 4: none, a
/// checkpoint at the base, past the first record, past every record).
///
/// Every record is its own batch with `durable_lag` 0, as a `Sync` queue
/// writes it: each frame proves every earlier record durable, and the
/// header's `synced_end` covers all of them.
pub fn segment_damaged(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let constant_bodies = flags & 1 != 0;
    let built_salt = if flags & 2 != 0 { Salt::UNSALTED } else { BUILT_SALT };
    let count = input.u8() % (BUILT_RECORDS_MAX + 1);
    let base_offset = input.u64().min(u64::MAX - u64::from(count));
    let mut records = Vec::new();
    for _ in 0..count {
        let shape = input.u8();
        let has_key = shape & 1 != 0;
        let key_len = usize::from(shape >> 1 & 0x0f);
        let payload_len = usize::from(input.u16() & 0x3ff);
        let (key, payload) = if constant_bodies {
            let fill = input.u8();
            (has_key.then(|| vec![fill; key_len]), vec![fill; payload_len])
        } else {
            let key = has_key.then(|| input.bytes(key_len));
            (key, input.bytes(payload_len))
        };
        records.push((key, payload));
    }
    let trailing = usize::from(input.u8()) * FRAME_ALIGN;
    let largest = records.iter().map(|(k, p)| k.as_ref().map_or(0, Vec::len) + p.len()).max().unwrap_or(0);
    let record_bytes_max = (largest as u32 + u32::from(input.u8())).max(1);
    let damage_at = input.u32() as usize;
    let mask = input.u8();
    let run = 1 + usize::from(input.u8() % 8);

    let synced_end = base_offset + u64::from(count);
    let mut frames = Vec::new();
    let mut spans = Vec::new();
    for (i, (key, payload)) in records.iter().enumerate() {
        let meta = FrameMeta {
            offset: base_offset + i as u64,
            timestamp_ms: 1_700_000_000_000 + i as u64,
            durable_lag: 0,
            batch_continues: false,
        };
        let start = SEGMENT_HEADER_BYTES + frames.len();
        frames.extend_from_slice(&record::encode(meta, key.as_deref(), payload, built_salt));
        spans.push((start, SEGMENT_HEADER_BYTES + frames.len()));
    }
    let frames_end = SEGMENT_HEADER_BYTES + frames.len();
    let len = frames_end + trailing;
    let mut seg = segment::encode_header(0, base_offset, len as u64, built_salt).to_vec();
    // What the header says after the last sync: every record is durable.
    seg[40..48].copy_from_slice(&synced_end.to_le_bytes());
    seg[48..52].copy_from_slice(&crc32fast::hash(&synced_end.to_le_bytes()).to_le_bytes());
    assert_eq!(segment::decode_synced_end(&seg), Some(synced_end), "docs/FORMAT.md: synced_end at byte 40");
    seg.extend_from_slice(&frames);
    seg.resize(len, 0);
    let from = damage_at % len;
    let to = (from + run).min(len);
    if mask != 0 {
        seg[from..to].iter_mut().for_each(|b| *b ^= mask);
    }

    let cut = input.u16();
    let evidence_kind = input.u8() % 4;
    let cut_to = if cut == 0 { len } else { (usize::from(cut) - 1) % len };
    let proven_end = match evidence_kind {
        0 => None,
        1 => Some(base_offset),
        2 => Some(base_offset + u64::from(count.min(1))),
        _ => Some(synced_end),
    };
    let evidence = proven_end.map(|end| Evidence { end, source: format!("a checkpoint at {end}") });
    let proven_end = proven_end.unwrap_or(0);
    let describe = |scan: Option<&Scan>| {
        format!(
            "{count} records at {spans:?} (bodies {}), {mask:#04x} XORed into bytes {from}..{to}, cut to {cut_to} of {len} bytes, evidence {proven_end}: {scan:?}",
            if constant_bodies { "constant" } else { "raw" }
        )
    };
    // Damage before the first record, or no record at all, and the file
    // whole or emptied: what a power cut during the segment's creation can
    // leave (it writes no record before the header is durable). Never
    // refused, whatever the evidence of records before the base says.
    let creation_cut_short = count == 0 && (cut_to == 0 || cut_to == len) && (mask == 0 || to <= SEGMENT_HEADER_BYTES);
    let path = Path::new("fuzz.seg");
    let verdict = match recovery::check_last_file(&seg[..cut_to], path, 0, base_offset, len as u64, evidence.as_ref()) {
        Ok(verdict) => verdict,
        Err(e) => {
            assert!(!creation_cut_short, "a creation cut short is refused ({e}): {}", describe(None));
            assert!(mask != 0 || cut_to < len, "an intact segment is refused ({e}): {}", describe(None));
            // The open fails with `Error::Corrupt`: nothing is delivered or repaired.
            return;
        }
    };
    // A record whose frame the damage and the cut left whole.
    let intact = |&(start, end): &(usize, usize)| end <= cut_to && (mask == 0 || end <= from || to <= start);
    if verdict == LastFile::NeverWritten {
        // Started afresh, its offsets reused: only if nothing says a record
        // reached it.
        assert!(
            proven_end <= base_offset,
            "a segment evidence proves held records is started afresh: {}",
            describe(None)
        );
        assert!(!spans.iter().any(intact), "a segment holding an intact record is started afresh: {}", describe(None));
        return;
    }
    // Recovery grows a cut file back with zeros before it walks it.
    seg.truncate(cut_to);
    seg.resize(len, 0);
    let synced_end_read = match verdict {
        LastFile::Whole => segment::decode_synced_end(&seg).unwrap_or(base_offset),
        LastFile::HeaderLost | LastFile::NeverWritten => base_offset,
    };
    let salt = found_salt(&seg, base_offset, record_bytes_max);
    let scan = recovery::scan(&seg, base_offset, record_bytes_max, synced_end_read, salt);
    let walked = check_scan(&seg, base_offset, record_bytes_max, synced_end_read, salt, &scan);
    check_known_zeros(&seg, base_offset, record_bytes_max, synced_end_read, salt, &scan);
    if recovery::check_end(scan.next_offset, evidence.as_ref(), path, scan.tail_pos).is_err() {
        // The open fails with `Error::Corrupt`: the log ends before records
        // the evidence proves, whose offsets it would otherwise reuse.
        return;
    }
    assert!(scan.next_offset >= proven_end, "an offset the evidence proves is reused: {}", describe(Some(&scan)));
    // Every record was acknowledged, and the header says so: unless the
    // damage hit that proof itself (`synced_end`, bytes 40..52), an open that
    // goes on keeps all their offsets, damaged or cut off or not.
    let proof_damaged = mask != 0 && from < 52 && to > 40;
    if verdict == LastFile::Whole && !proof_damaged {
        let what = describe(Some(&scan));
        assert!(scan.next_offset >= synced_end, "the log goes on before acknowledged records: {what}");
    }
    let what = || describe(Some(&scan));
    // Every record is acknowledged (`synced_end` covers them all, and each
    // frame proves the ones before it): recovery may refuse to deliver a
    // damaged one, but must never zero any of their bytes.
    if let Some(t) = scan.torn {
        assert!(t.from >= frames_end, "recovery zeroes bytes {}..{} of acknowledged records: {}", t.from, t.to, what());
    }
    let undamaged = mask == 0 && cut_to == len;
    if undamaged {
        assert_eq!((scan.tail_pos, scan.next_offset), (frames_end, synced_end), "{}", what());
        assert!(scan.torn.is_none() && scan.damaged.is_empty(), "{}", what());
    }
    let first_damaged = if mask == 0 { cut_to } else { from.min(cut_to) };
    for (i, (span, (key, payload))) in spans.iter().zip(&records).enumerate() {
        let (start, end) = *span;
        let offset = base_offset + i as u64;
        // After damage the walk looks for the next valid frame, and a raw
        // payload may hold one (a frame a queue carries as a payload): which
        // records the walk can still deliver then is not pinned here (that
        // none is zeroed is, above). Bodies of one repeated byte hold no
        // frame, so there every intact record must be kept, after the damage
        // too.
        if !(end <= first_damaged || constant_bodies && intact(span)) {
            continue;
        }
        let kept = walked.binary_search_by_key(&start, |w| w.pos).is_ok_and(|at| walked[at].offset == offset);
        assert!(kept, "record {offset} (bytes {start}..{end}) is lost: {}", what());
        assert!(offset < scan.next_offset, "record {offset} is past the next offset: {}", what());
        let Decoded::Frame(f) = record::decode(&seg[start..], record_bytes_max, salt) else { unreachable!("walked") };
        assert!(f.key == key.as_deref() && f.payload == &payload[..], "record {offset} changed: {}", what());
    }
    if constant_bodies || spans.iter().all(|&(_, end)| end <= first_damaged) {
        assert_eq!(scan.next_offset, synced_end, "offsets of acknowledged records are lost or reused: {}", what());
    }
}

// ---------------------------------------------------------------------------
// checkpoint_decode

/// The reserved bytes of a checkpoint copy, from docs/FORMAT.md.
const CHECKPOINT_RESERVED: std::ops::Range<usize> = 56..60;

/// A whole checkpoint file: each copy decodes to a typed error or a state
/// that re-encodes to exactly its bytes, and `decode_file` picks the valid
/// copy of the highest generation (the earlier one on a tie), or fails with
/// `Error::Corrupt`.
pub fn checkpoint_decode(data: &[u8]) {
    let partition = CHECKPOINT_PARTITION;
    let mut in_force: Option<checkpoint::CheckpointState> = None;
    let mut copies = Vec::new();
    for at in checkpoint::COPIES_AT {
        let bytes = data.get(at..).unwrap_or(&[]);
        let copy = checkpoint::decode_copy(bytes, partition);
        if let Ok(state) = &copy {
            assert_eq!(state.partition, partition);
            let stored = &bytes[..checkpoint::COPY_BYTES];
            assert!(
                stored[CHECKPOINT_RESERVED].iter().all(|&b| b == 0),
                "the copy at byte {at} decodes as {state:?} with reserved bytes {:?} not zero; docs/FORMAT.md says zeros",
                &stored[CHECKPOINT_RESERVED]
            );
            let encoded = checkpoint::encode_copy(state);
            assert!(
                encoded == stored,
                "the copy at byte {at} decodes as {state:?} but re-encodes to other bytes ({})",
                first_difference(stored, &encoded)
            );
            if in_force.is_none_or(|best| state.generation > best.generation) {
                in_force = Some(*state);
            }
        }
        copies.push(copy);
    }
    match (checkpoint::decode_file(data, partition, Path::new("fuzz.ckpt")), in_force) {
        (Ok(got), Some(want)) => assert_eq!(got, want),
        (Err(Error::Corrupt { .. }), None) => {}
        (got, want) => panic!("decode_file gave {got:?}, the copies say {want:?} ({copies:?})"),
    }
}

// ---------------------------------------------------------------------------
// lease_decode

/// The same bytes as a lease, a dead letter and a meta file: a typed error or
/// a value, never a panic, and every decoded value re-encodes to its bytes.
pub fn lease_decode(data: &[u8]) {
    lease_record(data);
    dead_letter_envelope(data);
    meta_file(data);
}

/// Lease fields, from docs/FORMAT.md: every field but the host name and the
/// reserved bytes.
const LEASE_FIXED_FIELDS: [std::ops::Range<usize>; 3] = [0..44, 48..72, 104..112];
const LEASE_HOST: std::ops::Range<usize> = 72..104;

fn lease_record(data: &[u8]) {
    let Ok(l) = lease::decode(data, LEASE_SLOT) else { return };
    assert_eq!(l.slot, LEASE_SLOT);
    let encoded = lease::encode(&l);
    for field in LEASE_FIXED_FIELDS {
        assert_eq!(encoded[field.clone()], data[field.clone()], "lease bytes {field:?} re-encode differently: {l:?}");
    }
    // The host name is for humans: decoding is lossy and encoding truncates,
    // so only a well-formed one must come back byte for byte.
    let host = &data[LEASE_HOST];
    let host_len = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    if std::str::from_utf8(&host[..host_len]).is_ok() && host[host_len..].iter().all(|&b| b == 0) {
        assert_eq!(encoded[LEASE_HOST], *host, "a well-formed host name re-encodes differently: {l:?}");
    }
    let again = lease::decode(&encoded, LEASE_SLOT).expect("a re-encoded lease decodes");
    assert!(l.host.starts_with(&again.host), "{l:?} became {again:?}");
    assert_eq!(lease::Lease { host: l.host.clone(), ..again }, l);
}

fn dead_letter_envelope(data: &[u8]) {
    let Ok(d) = dead_letter::decode(data) else { return };
    assert_eq!(data.len(), 40 + d.error.len() + d.payload.len(), "{d:?}");
    // Longer error texts are accepted but never written (encode cuts them).
    if d.error.len() <= dead_letter::ERROR_BYTES_MAX {
        let encoded = dead_letter::encode(&d);
        assert!(encoded == data, "a dead letter re-encodes differently ({})", first_difference(data, &encoded));
    }
}

fn meta_file(data: &[u8]) {
    let path = Path::new("durq.meta");
    match meta::decode(data, path) {
        Ok(config) => {
            let encoded = meta::encode(&config);
            // Bytes 40..60 are reserved; every field before them must match.
            assert_eq!(encoded[..40], data[..40], "meta fields re-encode differently: {config:?}");
            assert_eq!(meta::decode(&encoded, path).expect("a re-encoded meta file decodes"), config);
        }
        Err(Error::NotAQueue { .. } | Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => {}
        Err(e) => panic!("meta::decode failed with an unexpected kind of error: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Reads parameters from the front of an input; past its end every read
/// gives zeros, so every input means something.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.bytes.len());
        out[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// `n` bytes, zero-padded past the end of the input.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = self.bytes[..n.min(self.bytes.len())].to_vec();
        self.bytes = &self.bytes[out.len()..];
        out.resize(n, 0);
        out
    }

    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

fn first_difference(stored: &[u8], encoded: &[u8]) -> String {
    match stored.iter().zip(encoded).position(|(a, b)| a != b) {
        Some(i) => format!("first at byte {i}: stored {:#04x}, encoded {:#04x}", stored[i], encoded[i]),
        None => format!("stored {} bytes, encoded {}", stored.len(), encoded.len()),
    }
}

/// Counts the bytes each thread allocates, so a check can prove a parser
/// allocates nothing. Installed as the global allocator of every includer.
pub struct CountingAlloc;

thread_local! {
    static ALLOCATED_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: a thread being torn down has no counter left.
    let _ = ALLOCATED_BYTES.try_with(|a| a.set(a.get().saturating_add(bytes)));
}

// SAFETY: every method forwards to `System` with its own arguments; counting
// touches only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING_ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns what it returned and the bytes it allocated.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED_BYTES.with(Cell::get);
    let r = f();
    (r, ALLOCATED_BYTES.with(Cell::get) - before)
}

// ---------------------------------------------------------------------------
// queue_ops

/// A random sequence of sends, batches, flushes, members joining and
/// leaving, processed batches (`Ok` or an error: libFuzzer aborts on any
/// panic, caught or not), reopens and power cuts on the simulated disk:
/// after every power cut and at the end, every acknowledged durable send is
/// there, intact, at its position, each partition is an intact prefix of
/// what was sent, and the group's position is at least every acknowledged
/// commit and at most the end of its partition (`power::run_steps`).
pub fn queue_ops(data: &[u8]) {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (durability, steps) = power::decode_steps(data, false);
    let base = power::scratch_base();
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = base.join(format!("durq-queue-ops-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _remove = Remove(&scratch);
    power::run_steps(&scratch, durability, &steps);
}

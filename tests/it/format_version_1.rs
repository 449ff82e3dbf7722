//! A queue written before segments had a salt (segment format version 1)
//! opens, reads and goes on under this build.
//!
//! The version-1 queue is made the way the old writer made it: a queue
//! written by this build has every segment rewritten with the encoders in
//! their version-1 mode (`Salt::UNSALTED`: a version-1 header, frames
//! checksummed with plain CRC32). That those are the old bytes is pinned by
//! the golden tests `frame_golden_bytes` (the same checksum as before the
//! salt) and `segment_header_version_1_golden_bytes_still_read_unsalted`.
//! Then: `verify` finds nothing wrong, every record reads back, a group goes
//! on from its checkpoint, appends go on unsalted in the version-1 tail
//! segment and salted in the version-2 segments that rolls create, and a
//! version-1 last segment whose header was lost gets a version-1 header
//! back, its frames kept.

use crate::common;

use std::path::Path;

use common::{segment_path, segments, small, take};
use durq::internals::log::record::{self, Decoded};
use durq::internals::log::salt::Salt;
use durq::internals::log::segment;
use durq::{ConsumerOptions, Durability, Queue};

const RECORD_BYTES_MAX: u32 = 16 << 10;

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} ").repeat(100).into_bytes()
}

fn version(seg: &Path) -> u32 {
    let bytes = std::fs::read(seg).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

/// Rewrites the segment file at `path` as a version-1 segment: the same
/// header fields (its `synced_end` too) and the same frames, unsalted.
fn to_version_1(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let salt = segment::header_salt(&bytes).expect("a whole header");
    assert_ne!(salt, Salt::UNSALTED, "this build writes version 2");
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let partition = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    let (base, size) = (field(16), field(24));
    let synced_end = segment::decode_synced_end(&bytes).unwrap();
    let header = segment::encode_header_synced_to(partition, base, size, synced_end, Salt::UNSALTED);
    let mut pos = 64;
    while let Decoded::Frame(f) = record::decode(&bytes[pos..], RECORD_BYTES_MAX, salt) {
        let (len, unsalted) = (f.len, record::encode(f.meta, f.key, f.payload, Salt::UNSALTED));
        assert_eq!(unsalted[4..], bytes[pos + 4..pos + len], "only the checksum depends on the salt");
        bytes[pos..pos + len].copy_from_slice(&unsalted);
        pos += len;
    }
    assert!(bytes[pos..].iter().all(|&b| b == 0), "{}: a frame that does not decode at {pos}", path.display());
    bytes[..64].copy_from_slice(&header);
    std::fs::write(path, &bytes).unwrap();
}

/// A closed `Sync` queue at `dir/q` with `n` records over several segments,
/// group `g` having processed the first `processed`, every segment then
/// rewritten as version 1.
fn version_1_queue(dir: &Path, n: u64, processed: u64) -> std::path::PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    let producer = queue.producer();
    for i in 0..n {
        assert_eq!(producer.send(payload(i)).unwrap().offset, i);
    }
    let mut group = queue.consumer_with("g", ConsumerOptions::default().max_batch(processed as usize)).unwrap();
    assert_eq!(take(&mut group, processed as usize).len(), processed as usize);
    drop((group, producer, queue));
    let files = segments(&path, 0);
    assert!(files.len() >= 3, "{} segments", files.len());
    for seg in &files {
        to_version_1(seg);
        assert_eq!(version(seg), 1);
    }
    path
}

#[test]
fn a_version_1_queue_opens_reads_every_record_and_goes_on_in_version_2() {
    const N: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = version_1_queue(dir.path(), N, 50);
    let old_segments = segments(&path, 0);
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:?}");
    assert_eq!(report.records, N);

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N));
    let mut fresh = queue.consumer("fresh").unwrap();
    assert_eq!(take(&mut fresh, N as usize), (0..N).map(payload).collect::<Vec<_>>());
    let mut group = queue.consumer_with("g", ConsumerOptions::default().max_batch(1)).unwrap();
    assert_eq!(take(&mut group, 1), vec![payload(50)], "the group goes on from its checkpoint");

    // Appends go on in the version-1 tail segment, then roll into new,
    // salted ones.
    let producer = queue.producer();
    for i in N..2 * N {
        assert_eq!(producer.send(payload(i)).unwrap().offset, i);
    }
    assert_eq!(take(&mut fresh, N as usize), (N..2 * N).map(payload).collect::<Vec<_>>());
    drop((fresh, group, producer, queue));
    let all = segments(&path, 0);
    assert!(all.len() > old_segments.len(), "the appends rolled");
    for seg in &all {
        let want = if old_segments.contains(seg) { 1 } else { 2 };
        assert_eq!(version(seg), want, "{}", seg.display());
    }
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:?}");
    assert_eq!(report.records, 2 * N);
    let queue = Queue::open_existing(&path).unwrap();
    let mut again = queue.consumer("again").unwrap();
    assert_eq!(take(&mut again, 2 * N as usize), (0..2 * N).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_version_1_last_segment_whose_header_was_lost_gets_a_version_1_header_back() {
    // Row 5z: the header's sector lost to zeros, the frames after it whole.
    // Their salt is found again from the first of them (none: version 1),
    // and the header rewritten as it was, bar `synced_end` (at the base).
    const N: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let path = version_1_queue(dir.path(), N, 10);
    let last = segments(&path, 0).pop().unwrap();
    let before = std::fs::read(&last).unwrap();
    common::write_at(&last, 0, &[0u8; 64]);

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N), "every record kept");
    let after = std::fs::read(&last).unwrap();
    assert_eq!((version(&last), after[..36] == before[..36], after[52..] == before[52..]), (1, true, true));
    let mut fresh = queue.consumer("fresh").unwrap();
    assert_eq!(take(&mut fresh, N as usize), (0..N).map(payload).collect::<Vec<_>>());
    assert_eq!(queue.producer().send(payload(N)).unwrap().offset, N);
    assert_eq!(take(&mut fresh, 1), vec![payload(N)]);
    drop((fresh, queue));
    assert_eq!(segment_path(&path, 0, 0), segments(&path, 0)[0]);
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:?}");
}

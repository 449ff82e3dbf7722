//! A handle that works through a long log keeps only a few segments mapped.
//!
//! The producer and the consumer here go through about fifty small segments
//! while the test counts the segment mappings in `/proc/self/maps`: the
//! count must stay bounded, not grow with the log. Passed segments are
//! unmapped, so reading an old offset again (`read_at`, a group reset to the
//! earliest record) must map it again and return the same records, and a
//! message lent to a closure must stay readable while the producer rolls far
//! past its segment.

use crate::common;

use std::time::Duration;

use common::{TestQueue, drain, mapped_segments, message, small};
use durq::{Durability, Queue, ResetTo};

/// Records that fill about fifty 64 KiB segments.
const RECORDS: u64 = 3000;
/// Segment mappings a handle may hold for one partition: the two most
/// recently used, which it keeps, and one more that a reader, or the
/// prefault thread in the middle of a request, still uses (a request still
/// queued holds no mapping: `log::prefault`).
const MAPPED_MAX: usize = 3;

/// `message(i)` padded to about 1 KiB, so a segment holds about 60 records.
fn record(i: u64) -> Vec<u8> {
    let mut r = message(i);
    r.resize(1000, b'.');
    r
}

fn options() -> durq::Options {
    small().durability(Durability::Buffered)
}

#[test]
fn a_producer_unmaps_the_segments_it_rolled_past() {
    let t = TestQueue::new(options());
    let p = t.queue.producer();
    let mut most = 0;
    for i in 0..RECORDS {
        p.send(record(i)).unwrap();
        most = most.max(mapped_segments(&t.path()));
    }
    let on_disk = common::segments(&t.path(), 0).len();
    assert!(on_disk > 40, "the log spans many segments: {on_disk}");
    assert!(most <= MAPPED_MAX, "at most {MAPPED_MAX} of {on_disk} segments mapped at once, saw {most}");
}

#[test]
fn a_consumer_unmaps_the_segments_it_has_passed_and_maps_old_ones_again_on_demand() {
    let t = TestQueue::new(options());
    let path = t.path();
    let p = t.queue.producer();
    for i in 0..RECORDS {
        p.send(record(i)).unwrap();
    }
    p.flush().unwrap();
    drop((p, t.queue));
    // A fresh handle, so only reading maps segments.
    let q = Queue::open_existing(&path).unwrap();
    let expected: Vec<Vec<u8>> = (0..RECORDS).map(record).collect();
    let mut c = q.consumer("g").unwrap();
    let mut most = 0;
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let n = c
            .process_timeout(Duration::from_secs(1), |batch| {
                most = most.max(mapped_segments(&path));
                seen.extend(batch.iter().map(|m| m.payload().to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        assert!(n > 0, "only {} of {RECORDS} records arrived", seen.len());
    }
    assert_eq!(seen, expected);
    assert!(most <= MAPPED_MAX, "at most {MAPPED_MAX} segments mapped while consuming, saw {most}");

    // Long passed and unmapped: read again from their files.
    let old = q.read_at(0, 0, 3).unwrap();
    assert_eq!(old.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), expected[..3]);
    let middle = q.read_at(0, RECORDS / 2, 100).unwrap();
    assert_eq!(middle.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), expected[RECORDS as usize / 2..][..100]);
    assert!(mapped_segments(&path) <= MAPPED_MAX);

    drop(c);
    q.reset_group("g", ResetTo::Earliest).unwrap();
    let mut c = q.consumer("g").unwrap();
    assert_eq!(drain(&mut c), expected, "the whole log again after a reset to the earliest record");
}

#[test]
fn a_lent_message_stays_readable_while_the_producer_rolls_far_past_its_segment() {
    let t = TestQueue::new(options());
    let p = t.queue.producer();
    p.send(record(0)).unwrap();
    let mut c = t.queue.consumer("g").unwrap();
    let delivery = c.poll(Duration::from_secs(1)).unwrap().expect("record 0");
    for i in 1..RECORDS {
        p.send(record(i)).unwrap();
    }
    // The cache has long dropped segment 0; the delivery still holds it.
    assert_eq!(delivery.messages()[0].payload(), record(0));
    // Under `Buffered` the sealer thread may still be syncing a segment the
    // cache let go (it fell behind, and the last roll sealed it too): that
    // mapping goes when its sync returns. Alone it goes within
    // milliseconds (also beside a `dd oflag=dsync` load); once, in a CI
    // rehearsal of the whole suite on a slow disk (2026-12-07), it was
    // still there after 5 s. The bound is a liveness bound: a mapping that
    // never goes still fails here.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while mapped_segments(&t.path()) > MAPPED_MAX {
        assert!(std::time::Instant::now() < deadline, "{} segments stay mapped", mapped_segments(&t.path()));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(delivery.commit().unwrap(), 1);
    let rest = drain(&mut c);
    assert_eq!(rest, (1..RECORDS).map(record).collect::<Vec<_>>());
}

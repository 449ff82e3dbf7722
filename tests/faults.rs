//! I/O faults at every sync: an msync, fdatasync or fsync that fails with EIO
//! (or ENOSPC) must reach the caller, must never be followed by an
//! acknowledgement of the record it was syncing, and must stop the handle
//! (fail-stop: a retried fsync can report success for pages the kernel
//! already dropped). After the fault is gone, a reopened queue holds every
//! acknowledged record, intact, at its acknowledged position.
//!
//! Faults come from the `failpoints` feature (src/storage/failpoints.rs):
//! one process-wide table, so the tests here run one at a time.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::small;
use durq::failpoints;
use durq::{ConsumerOptions, Durability, Error, Position, Queue};

static SERIAL: Mutex<()> = Mutex::new(());

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 50) as usize * 40)).into_bytes()
}

/// Sends under `Sync` until an error; returns the acknowledged positions
/// and the error.
fn send_until_error(queue: &Queue, max: u64) -> (Vec<Position>, Option<Error>) {
    let producer = queue.producer();
    let mut acked = Vec::new();
    for i in 0..max {
        match producer.send(payload(i)) {
            Ok(pos) => acked.push(pos),
            Err(e) => return (acked, Some(e)),
        }
    }
    (acked, None)
}

fn assert_acked_intact(path: &std::path::Path, acked: &[Position]) {
    let queue = Queue::open_existing(path).unwrap();
    let stored = queue.read_at(0, 0, usize::MAX).unwrap();
    assert!(stored.len() >= acked.len(), "{} stored, {} acknowledged", stored.len(), acked.len());
    for (i, pos) in acked.iter().enumerate() {
        assert_eq!(stored[pos.offset as usize].payload, payload(i as u64), "acknowledged record {i} at {pos:?}");
    }
}

#[test]
fn every_sync_failing_once_or_for_good_stops_the_handle_and_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Every sync of a workload that rolls segments (fewer than 30 syncs),
    // failing once or for good; ENOSPC from a sync on a few of them.
    let cases = [(libc::EIO, false, 30), (libc::EIO, true, 30), (libc::ENOSPC, false, 8)];
    for (errno, sticky, syncs) in cases {
        for skip in 0..syncs {
            let t = common::TestQueue::new(small().durability(Durability::Sync));
            failpoints::arm(skip, errno, sticky);
            let (acked, error) = send_until_error(&t.queue, 200);
            failpoints::disarm();
            let context = format!("errno {errno}, sticky {sticky}, skip {skip}");
            let error = error.unwrap_or_else(|| panic!("{context}: the fault never surfaced"));
            assert!(matches!(error, Error::Io { .. }), "{context}: the sync error itself: {error}");
            // Fail-stop: the same handle refuses every later write, even
            // with the fault gone, instead of retrying into silent loss.
            let producer = t.queue.producer();
            assert!(matches!(producer.send(b"after"), Err(Error::Stopped { .. })), "{context}");
            assert!(matches!(producer.flush(), Err(Error::Stopped { .. })), "{context}");
            drop((producer, t.queue));
            assert_acked_intact(&t.dir.path().join("q"), &acked);
        }
    }
}

#[test]
fn a_failed_interval_flush_is_reported_to_the_next_send_and_flush() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = common::TestQueue::new(small().durability(Durability::Interval(Duration::from_millis(5))));
    let producer = t.queue.producer();
    producer.send(b"one").unwrap();
    producer.flush().unwrap();
    failpoints::arm(0, libc::EIO, false);
    producer.send(b"two").unwrap(); // in the mapping; the flusher's sync fails
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match producer.send(b"more") {
            Err(Error::Stopped { cause }) => {
                assert!(cause.contains("msync"), "{cause}");
                break;
            }
            Ok(_) => assert!(std::time::Instant::now() < deadline, "the flusher's failure never surfaced"),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    failpoints::disarm();
    assert!(matches!(producer.flush(), Err(Error::Stopped { .. })));
}

#[test]
fn a_failed_checkpoint_sync_stops_the_consumer_and_skips_nothing_unprocessed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = common::TestQueue::new(small());
    t.queue.producer().send_batch(["a", "b"]).unwrap();
    let options = || ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]);
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    failpoints::arm(0, libc::EIO, false);
    let error = consumer.process(|_| Ok::<(), std::io::Error>(())).unwrap_err();
    failpoints::disarm();
    assert!(matches!(error, Error::Io { op: "fdatasync", .. }), "{error}");
    assert!(matches!(
        consumer.process_timeout(Duration::ZERO, |_| Ok::<(), std::io::Error>(())),
        Err(Error::Stopped { .. })
    ));
    drop(consumer);
    // After a failed fdatasync the page cache may or may not hold the new
    // position: the next member gets the batch again or not, and both are
    // fine since the closure had finished it. Nothing is skipped unprocessed.
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    let again = common::drain(&mut consumer);
    assert!(again.is_empty() || again == [b"a".to_vec(), b"b".to_vec()], "{again:?}");
}

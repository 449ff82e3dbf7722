//! The public API end to end in one process: send in every form, consume,
//! commit only on `Ok`, redeliver on `Err` and panic, reopen.

use crate::common;

use std::time::Duration;

use common::{TestQueue, drain, small};
use durq::{ConsumerOptions, Durability, Error, Options, Queue};

#[test]
fn sent_messages_are_consumed_in_order_across_segment_rolls() {
    let t = TestQueue::new(small());
    let p = t.queue.producer();
    let payloads: Vec<Vec<u8>> = (0..2000).map(|i| format!("order {i} {}", "x".repeat(i % 300)).into_bytes()).collect();
    for (i, m) in payloads.iter().enumerate() {
        assert_eq!(p.send(m).unwrap().offset, i as u64);
    }
    assert!(common::segments(&t.path(), 0).len() > 3, "small segments rolled");
    let mut c = t.queue.consumer("g").unwrap();
    assert_eq!(drain(&mut c), payloads);
    drop(c);
    drop(p);
    drop(t.queue);
    // Reopen: nothing is redelivered, new sends continue the offsets.
    let q = Queue::open(t.dir.path().join("q")).unwrap();
    let mut c = q.consumer("g").unwrap();
    assert!(drain(&mut c).is_empty());
    assert_eq!(q.producer().send(b"after").unwrap().offset, 2000);
    assert_eq!(drain(&mut c), vec![b"after".to_vec()]);
}

#[test]
fn failed_or_panicking_closure_commits_nothing_and_gets_the_records_again_one_by_one() {
    let t = TestQueue::new(Options::default());
    t.queue.producer().send_batch(["a", "b", "c"]).unwrap();
    let options = ConsumerOptions::default().max_batch(2).retry_backoff(vec![Duration::ZERO]);
    let mut c = t.queue.consumer_with("g", options).unwrap();
    let err = c.process(|_| Err(std::io::Error::other("db down"))).unwrap_err();
    assert!(matches!(err, Error::Process(_)), "{err}");
    let err = c.process(|_| -> Result<(), std::io::Error> { panic!("bug in handler") }).unwrap_err();
    assert!(matches!(err, Error::ProcessPanicked(ref m) if m.contains("bug in handler")), "{err}");
    assert_eq!(c.committed().unwrap(), vec![0]);
    // The failed batch comes again one record at a time, so a poison record
    // can be told apart, each with its delivery count; then batches resume.
    let mut seen = Vec::new();
    for _ in 0..3 {
        c.process(|b| {
            seen.extend(b.iter().map(|m| (m.payload().to_vec(), m.delivery_count())));
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    }
    assert_eq!(seen, [(b"a".to_vec(), 3), (b"b".to_vec(), 2), (b"c".to_vec(), 1)]);
    assert_eq!(c.committed().unwrap(), vec![3]);
}

#[test]
fn keyed_sends_stick_to_one_partition_and_batches_are_contiguous() {
    let t = TestQueue::new(Options::default().partitions(4));
    let p = t.queue.producer();
    let first = p.send_keyed("user-1", "a").unwrap();
    for _ in 0..10 {
        assert_eq!(p.send_keyed("user-1", "b").unwrap().partition, first.partition);
    }
    let batch = p.send_batch(vec![b"x".to_vec(); 5]).unwrap();
    assert!(batch.windows(2).all(|w| w[0].partition == w[1].partition && w[1].offset == w[0].offset + 1));
    let mut c = t.queue.consumer("g").unwrap();
    let mut keyed = 0;
    loop {
        let n = c
            .process_timeout(Duration::from_millis(20), |b| {
                keyed += b.iter().filter(|m| m.key() == Some(b"user-1")).count();
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(keyed, 11);
}

#[test]
fn oversize_message_is_refused_and_nothing_is_written() {
    let t = TestQueue::new(small());
    let p = t.queue.producer();
    let err = p.send(vec![0u8; (16 << 10) + 1]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { max: 16384, .. }), "{err}");
    let err = p.send_batch([vec![1u8; 10], vec![0u8; 1 << 20]]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }));
    assert_eq!(t.queue.offsets(0).unwrap(), (0, 0));
    assert_eq!(p.send(vec![0u8; 16 << 10]).unwrap().offset, 0);
}

#[test]
fn every_durability_mode_delivers_after_send_or_flush() {
    for d in [Durability::Sync, Durability::Buffered, Durability::Interval(Duration::from_millis(5))] {
        let t = TestQueue::new(Options::default().durability(d));
        let p = t.queue.producer();
        p.send(b"m").unwrap();
        p.flush().unwrap();
        let mut c = t.queue.consumer("g").unwrap();
        assert_eq!(drain(&mut c), vec![b"m".to_vec()], "{d}");
    }
}

#[test]
fn under_interval_a_full_segment_becomes_visible_when_its_background_sync_is_done() {
    // An hour between flushes: only the sealer's sync of the full segment,
    // after the roll, can make its records durable, and so visible.
    let t = TestQueue::new(small().durability(Durability::Interval(Duration::from_secs(3600))));
    let payloads: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 1000]).collect();
    for m in &payloads {
        t.queue.producer().send(m).unwrap();
    }
    assert_eq!(common::segments(&t.path(), 0).len(), 2, "63 records fill a segment");
    let mut c = t.queue.consumer("g").unwrap();
    assert_eq!(common::take(&mut c, 63), payloads[..63]);
    assert!(drain(&mut c).is_empty(), "records of the tail wait for a flush");
    t.queue.producer().flush().unwrap();
    assert_eq!(drain(&mut c), payloads[63..]);
}

#[test]
fn a_flush_through_another_handle_covers_a_full_segment_this_one_has_not_synced_yet() {
    // Two handles of one queue behave as two processes: each has its own
    // sealer, and a flush cannot wait for the other's.
    let t = TestQueue::new(small().durability(Durability::Interval(Duration::from_secs(3600))));
    let other = Queue::open_existing(t.path()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 1000]).collect();
    for m in &payloads {
        t.queue.producer().send(m).unwrap();
    }
    other.producer().flush().unwrap();
    // The flush returned only after the segment before the tail was synced
    // and its header said so.
    let seg63 = std::fs::read(common::segment_path(&t.path(), 0, 63)).unwrap();
    assert_eq!(durq::internals::log::segment::decode_synced_end(&seg63), Some(126));
    let mut c = other.consumer("g").unwrap();
    assert_eq!(common::take(&mut c, payloads.len()), payloads);
}

#[test]
fn a_second_member_stands_by_and_takes_over_when_the_first_leaves() {
    let t = TestQueue::new(Options::default());
    t.queue.producer().send_batch(["a", "b"]).unwrap();
    let mut first = t.queue.consumer_with("g", ConsumerOptions::default().max_batch(1)).unwrap();
    let mut second = t.queue.consumer("g").unwrap();
    assert_eq!(first.held_partitions(), [0]);
    assert_eq!(drain(&mut first), [b"a".to_vec(), b"b".to_vec()]);
    t.queue.producer().send("c").unwrap();
    assert!(drain(&mut second).is_empty(), "a standby holds nothing");
    drop(first);
    assert_eq!(drain(&mut second), [b"c".to_vec()], "the standby resumes exactly where the first left off");
}

#[test]
fn invalid_group_names_are_refused_before_touching_disk() {
    let t = TestQueue::new(Options::default());
    for bad in ["../x", "", &"g".repeat(65)] {
        assert!(matches!(t.queue.consumer(bad), Err(Error::InvalidGroupName { .. })), "{bad:?}");
    }
    assert!(!t.dir.path().join("x").exists());
}

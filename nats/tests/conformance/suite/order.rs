//! Per-partition order: each partition's records are processed in offset
//! order, and each key's in the order it was sent, across failed batches
//! and two members sharing the partitions.
//!
//! The story: six keys, forty records each, sent interleaved with
//! `send_keyed` into three partitions. Two members (threads) consume
//! together; every fifth batch a member's closure fails once, so that batch
//! comes again. Each successful batch must start exactly where the
//! partition's last committed batch ended and run on without a gap, and
//! each key's sequence numbers must come out 0, 1, 2, …

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, partition_of_key};

use super::{backend, join};
use crate::conformance::procs;

const PARTITIONS: u32 = 3;
const KEYS: u32 = 6;
const PER_KEY: u32 = 40;

/// What the members have committed so far: per partition the next offset,
/// per key the next sequence number.
#[derive(Default)]
struct Progress {
    next_offset: HashMap<u32, u64>,
    next_seq: HashMap<String, u32>,
    batches: usize,
    failed: usize,
}

#[test]
fn each_partition_is_processed_in_offset_order_and_each_key_in_send_order() {
    let place = backend::Place::new();
    let spec = place.spec("order");
    let queue = backend::create(&spec, Options::default().partitions(PARTITIONS));
    let producer = queue.producer();
    let mut ends = vec![0u64; PARTITIONS as usize];
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("key{k}");
            let position = producer.send_keyed(&key, format!("{key} {seq}")).expect("send_keyed");
            assert_eq!(
                position.partition,
                partition_of_key(key.as_bytes(), PARTITIONS),
                "{key} goes where its hash says"
            );
            assert_eq!(position.offset, ends[position.partition as usize], "offsets are dense");
            ends[position.partition as usize] += 1;
        }
    }

    let progress = Arc::new(Mutex::new(Progress::default()));
    let options = ConsumerOptions::default().max_batch(7).retry_backoff(vec![Duration::ZERO]);
    let members: Vec<_> = (0..2)
        .map(|_| {
            let mut consumer = join(&queue, options.clone()).expect("join");
            let (progress, ends) = (progress.clone(), ends.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + procs::PATIENCE;
                let mut calls = 0u32;
                loop {
                    let done = {
                        let p = progress.lock().expect("progress");
                        (0..PARTITIONS).all(|s| p.next_offset.get(&s).copied().unwrap_or(0) == ends[s as usize])
                    };
                    if done {
                        return;
                    }
                    assert!(Instant::now() < deadline, "the members did not finish");
                    calls += 1;
                    let fail_this_one = calls.is_multiple_of(5);
                    let outcome = consumer.process_timeout(Duration::from_millis(50), |batch| {
                        if fail_this_one {
                            progress.lock().expect("progress").failed += 1;
                            return Err(std::io::Error::other("failed on purpose, once"));
                        }
                        check_and_record(&mut progress.lock().expect("progress"), batch);
                        Ok(())
                    });
                    match outcome {
                        Ok(_) | Err(durq::Error::Process(_)) => {}
                        Err(e) => panic!("process: {e}"),
                    }
                }
            })
        })
        .collect();
    for member in members {
        member.join().expect("a member");
    }
    let p = progress.lock().expect("progress");
    assert!(p.failed > 0, "some batches failed and came again");
    assert!(p.next_seq.values().all(|&n| n == PER_KEY), "every key to its end: {:?}", p.next_seq);
    eprintln!(
        "{}: {} records in {} batches by two members, {} failed batches delivered again; order kept",
        backend::NAME,
        KEYS * PER_KEY,
        p.batches,
        p.failed
    );
}

/// Checks a batch about to be committed against what was committed before
/// it, and records it. It runs under the lock, so the two members' batches
/// are checked in the order they commit (a partition has one holder at a
/// time, and gives it up only between batches).
fn check_and_record(p: &mut Progress, batch: &[backend::Message<'_>]) {
    let partition = batch[0].position().partition;
    let next = p.next_offset.entry(partition).or_insert(0);
    for m in batch {
        let position = m.position();
        assert_eq!(position.partition, partition, "a batch is from one partition");
        assert_eq!(position.offset, *next, "partition {partition}: offset {} follows {}", position.offset, *next);
        *next += 1;
        let text = std::str::from_utf8(m.payload()).expect("utf-8");
        let (key, seq) = text.split_once(' ').expect("key and sequence number");
        assert_eq!(m.key(), Some(key.as_bytes()), "the record carries its key");
        let expected = p.next_seq.entry(key.to_owned()).or_insert(0);
        assert_eq!(seq.parse::<u32>().expect("a sequence number"), *expected, "{key} in send order");
        *expected += 1;
    }
    p.batches += 1;
}

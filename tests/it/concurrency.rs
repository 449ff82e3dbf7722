//! Many threads of one process sending at once under `Durability::Sync`.
//!
//! The story: eight threads share one producer and each sends 10,000 records
//! as fast as `send` returns (group commit turns their syncs into a few
//! shared ones). Afterwards a consumer reads the queue back and the
//! [`procs::Ledger`] checks what the crate promises: every offset from 0 to
//! the end exactly once per partition, every payload intact (each encodes
//! `t<thread>-<seq>` and a filler derived from it), each thread's records
//! in its own send order within a partition, and every record at exactly the
//! position its `send` returned. A consumer thread reads *while* the
//! producers write, so it also checks that a reader never sees a record
//! before it is complete.
//!
//! Threads only here; multi_process.rs and the crash tests run real
//! processes.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestQueue;
use common::procs::{Ledger, Rng, payload};
use durq::{Durability, Options, Position, Producer};

const THREADS: usize = 8;
const SENDS: usize = 10_000;

/// Sends `SENDS` records from each of `THREADS` threads through clones of
/// one producer; returns each thread's acknowledged positions in send order.
fn send_from_threads(producer: &Producer, threads: usize, sends: usize) -> Vec<Vec<(Position, String)>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let producer = producer.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(t as u64 + 1);
                    (0..sends)
                        .map(|seq| {
                            let id = format!("t{t}-{seq}");
                            let pos = producer.send(payload(&id, rng.below(120) as usize)).expect("send");
                            (pos, id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sender thread")).collect()
    })
}

fn check_sends(partitions: u32, durability: Durability) {
    let t = TestQueue::new(Options::default().partitions(partitions).durability(durability));
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // A reader that runs while the producers write.
    let reader = {
        let queue = t.queue.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut ledger = Ledger::new(partitions);
            let mut consumer = queue.consumer("live").expect("consumer");
            while !done.load(Ordering::SeqCst) {
                ledger.drain(&mut consumer, Duration::from_millis(20));
            }
            ledger.drain(&mut consumer, Duration::from_millis(100));
            ledger
        })
    };
    let sent = send_from_threads(&t.queue.producer(), THREADS, SENDS);
    let send_time = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let live = reader.join().expect("reader thread");

    // Each thread's positions grow within a partition: its sends were
    // ordered, so the log must order them the same way.
    for (thread, positions) in sent.iter().enumerate() {
        for p in 0..partitions {
            let offsets: Vec<u64> =
                positions.iter().filter(|(pos, _)| pos.partition == p).map(|(pos, _)| pos.offset).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "thread {thread}: offsets in partition {p} not increasing"
            );
        }
    }
    // A fresh group reads everything back after the fact.
    let mut ledger = Ledger::new(partitions);
    for (pos, id) in sent.iter().flatten() {
        ledger.ack(id, *pos);
    }
    let mut consumer = t.queue.consumer("after").expect("consumer");
    let read = ledger.drain(&mut consumer, Duration::from_millis(100));
    assert_eq!(read, THREADS * SENDS, "records read back");
    ledger.check_acked();
    let total: u64 = ledger.next.iter().sum();
    assert_eq!(total, (THREADS * SENDS) as u64);
    for p in 0..partitions {
        assert_eq!(t.queue.offsets(p).unwrap(), (0, ledger.next[p as usize]), "partition {p}'s offsets");
    }
    // The live reader saw exactly the same log.
    assert_eq!(live.next, ledger.next, "live reader's end");
    assert_eq!(live.seen, ledger.seen, "live reader's records");
    eprintln!(
        "{THREADS} threads x {SENDS} sends, {partitions} partition(s), {durability}: sent in {send_time:?}, all checked in {:?}",
        started.elapsed()
    );
}

#[test]
fn eight_threads_sync_one_partition_every_offset_once_in_thread_order() {
    check_sends(1, Durability::Sync);
}

#[test]
fn eight_threads_sync_four_partitions_every_offset_once_in_thread_order() {
    check_sends(4, Durability::Sync);
}

#[test]
fn concurrent_batches_stay_contiguous_and_unsplit() {
    // Small segments, so batches that do not fit force a roll under
    // contention: a batch must still land in one piece.
    let t = TestQueue::new(common::small().partitions(2));
    let producer = t.queue.producer();
    let batches: Vec<Vec<(Position, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|thread| {
                let producer = producer.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(100 + thread);
                    let mut out = Vec::new();
                    for b in 0..300 {
                        let ids: Vec<String> = (0..7).map(|i| format!("b{thread}x{b}-{i}")).collect();
                        let payloads: Vec<Vec<u8>> =
                            ids.iter().map(|id| payload(id, rng.below(900) as usize)).collect();
                        let positions = producer.send_batch(&payloads).expect("send_batch");
                        assert_eq!(positions.len(), 7);
                        out.push(positions.into_iter().zip(ids).collect());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("batch thread")).collect()
    });
    let mut ledger = Ledger::new(2);
    for batch in &batches {
        let first = batch[0].0;
        for (i, (pos, id)) in batch.iter().enumerate() {
            assert_eq!(*pos, Position { partition: first.partition, offset: first.offset + i as u64 }, "batch split");
            ledger.ack(id, *pos);
        }
    }
    let mut consumer = t.queue.consumer("g").expect("consumer");
    assert_eq!(ledger.drain(&mut consumer, Duration::from_millis(100)), 4 * 300 * 7);
    ledger.check_acked();
    assert!(common::segments(&t.path(), 0).len() > 3, "segments rolled during the test");
}

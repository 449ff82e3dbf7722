//! The consumer's commit modes (`ConsumerOptions::commit`), read from the
//! checkpoint files themselves.
//!
//! Under `commit(Interval(d))` and `commit(Buffered)` a commit is stored in
//! the checkpoint file's mapping (the mark copies at byte 4096) and synced
//! later into the synced copies (bytes 0 and 512), which is what a power
//! cut keeps. These tests read the synced copies to show when a position
//! becomes durable: within `d` by the background sync, on `flush`, before a
//! slot is handed over; and that a fenced member's commits never take
//! effect. tests/it/power_loss.rs cuts the power at every step of such a
//! group, tests/it/crash_consumer.rs SIGKILLs its members.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use durq::internals::group::checkpoint;
use durq::internals::sim::{CrashMode, OpKind, SimDisk};
use durq::{ConsumerOptions, Durability, Queue};

/// How long a background sync may take on a loaded machine before a test
/// gives up on it (the tests wait for it, they do not time it).
const PATIENCE: Duration = Duration::from_secs(20);

/// A `Sync` queue of `partitions` partitions holding `n` records per
/// partition.
fn filled(dir: &Path, partitions: u32, n: u64) -> Queue {
    let queue = Queue::open_with(dir.join("q"), common::small().partitions(partitions)).unwrap();
    let producer = queue.producer();
    for p in 0..partitions {
        let key = (0u32..).map(|k| format!("key {k}")).find(|k| durq::partition_of_key(k.as_bytes(), partitions) == p);
        let key = key.unwrap();
        for i in 0..n {
            assert_eq!(producer.send_keyed(&key, format!("p{p} m{i}")).unwrap().partition, p);
        }
    }
    queue
}

/// The position the newest checkpoint file of the group's slot `p` holds
/// in its synced copies: what a power cut now would leave.
fn synced_position(queue: &Queue, group: &str, p: u32) -> u64 {
    let path = common::checkpoint_file(queue.path(), group, p);
    let bytes = std::fs::read(&path).unwrap();
    checkpoint::decode_file_synced(&bytes, p, &path).unwrap().next_offset
}

/// Processes one batch, returning the position after it.
fn process_one(consumer: &mut durq::Consumer) -> (u32, u64) {
    let mut end = None;
    let n = consumer
        .process_timeout(Duration::from_secs(5), |batch| {
            let last = batch.last().unwrap().position();
            end = Some((last.partition, last.offset + 1));
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert!(n > 0, "a record was ready");
    end.unwrap()
}

fn options(commit: Durability) -> ConsumerOptions {
    ConsumerOptions::default().max_batch(3).commit(commit)
}

#[test]
fn sync_commits_are_durable_when_process_returns() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 1, 10);
    let mut consumer = queue.consumer_with("g", options(Durability::Sync)).unwrap();
    for _ in 0..3 {
        let (p, next) = process_one(&mut consumer);
        assert_eq!(synced_position(&queue, "g", p), next);
    }
}

/// Processes one batch, returning its offsets and, as the closure saw it,
/// the end of what the checkpoint in force says was delivered.
fn process_offsets(consumer: &mut durq::Consumer, queue: &Queue) -> (Vec<u64>, u64) {
    let (mut offsets, mut delivered_end) = (Vec::new(), 0);
    consumer
        .process_timeout(Duration::from_secs(5), |batch| {
            offsets = batch.iter().map(|m| m.position().offset).collect();
            let path = common::checkpoint_file(queue.path(), "g", 0);
            delivered_end = checkpoint::decode_file(&std::fs::read(&path).unwrap(), 0, &path).unwrap().delivered_end;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    (offsets, delivered_end)
}

#[test]
fn a_sync_commit_reads_the_next_batch_while_its_msync_is_in_flight() {
    // Under `Sync`, `process` reads the batch after one of 64 records or
    // more while the commit's msync waits for the disk, and its next call
    // delivers those records: the ones visible when the msync started,
    // though more came since. The commit is durable when `process`
    // returns, and the records read ahead are marked delivered before the
    // closure sees them, as any batch.
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 1, 100);
    let disk = SimDisk::attach(dir.path()).unwrap();
    let mut consumer = queue.consumer_with("g", options(Durability::Sync).max_batch(64)).unwrap();
    let in_msync = disk.hold_next(OpKind::SyncRange, "ckpt");
    let first = std::thread::scope(|s| {
        let first = s.spawn(|| process_one(&mut consumer));
        assert!(in_msync.reached(PATIENCE), "the commit's msync never started");
        let producer = queue.producer();
        for i in 100..130 {
            producer.send(format!("p0 m{i}")).unwrap();
        }
        drop(in_msync);
        first.join().unwrap()
    });
    assert_eq!(first, (0, 64));
    assert_eq!(synced_position(&queue, "g", 0), 64, "the commit was durable when `process` returned");
    let read_during_msync = process_offsets(&mut consumer, &queue);
    assert_eq!(read_during_msync, ((64..100).collect(), 100), "the records read during the msync");
    assert_eq!(process_offsets(&mut consumer, &queue), ((100..130).collect(), 130));
    assert_eq!(synced_position(&queue, "g", 0), 130);
}

#[test]
fn interval_commits_are_synced_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 2, 10);
    let mut consumer = queue.consumer_with("g", options(Durability::Interval(Duration::from_millis(5)))).unwrap();
    // No call into the consumer after the commits: only its background
    // thread can sync them, for both slots.
    let ends = [process_one(&mut consumer), process_one(&mut consumer)];
    assert_ne!(ends[0].0, ends[1].0, "one batch from each partition");
    let start = Instant::now();
    while ends.iter().any(|&(p, next)| synced_position(&queue, "g", p) != next) {
        assert!(start.elapsed() < PATIENCE, "the background sync never made {ends:?} durable");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(consumer.committed().unwrap(), vec![3, 3]);
}

/// The position in force in the newest checkpoint file of the group's
/// slot `p`, as the page cache holds it: what another member would take
/// over from.
fn stored_position(queue: &Queue, group: &str, p: u32) -> u64 {
    let path = common::checkpoint_file(queue.path(), group, p);
    let bytes = std::fs::read(&path).unwrap();
    checkpoint::decode_file(&bytes, p, &path).unwrap().next_offset
}

#[test]
fn an_interval_commit_completes_while_the_background_sync_is_in_its_msync() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 1, 10);
    let disk = SimDisk::attach(dir.path()).unwrap();
    // The background sync's msync of the checkpoint file waits here until
    // let go (taking the slot syncs with fdatasync, not msync).
    let in_msync = disk.hold_next(OpKind::SyncRange, "ckpt");
    let mut consumer = queue.consumer_with("g", options(Durability::Interval(Duration::from_millis(5)))).unwrap();
    let (p, first) = process_one(&mut consumer);
    assert!(in_msync.reached(PATIENCE), "the background sync of {first} never started");
    // The next batch is delivered and committed (two stores into the
    // file) while that sync is in flight. The channel only turns a commit
    // that waits for the sync (forever, while it is held) into a failure.
    let next_write = disk.hold_next(OpKind::Write, "ckpt");
    let (done, committed) = std::sync::mpsc::channel();
    let second = std::thread::scope(|s| {
        s.spawn(|| done.send(process_one(&mut consumer)).unwrap());
        let second = committed.recv_timeout(PATIENCE);
        drop(in_msync);
        second
    });
    let (_, second) = second.expect("the commit waited for the background sync's msync");
    // The sync of `first` completed; the syncer's next pass, which must
    // sync `second`, is held at its write. The commit stored during the
    // sync stays in force over the synced write, which a power cut now
    // keeps.
    assert!(next_write.reached(PATIENCE), "the stored commit of {second} was never synced");
    assert_eq!((synced_position(&queue, "g", p), stored_position(&queue, "g", p)), (first, second));
    let cut = disk.crash_point_now();
    drop(next_write);
    consumer.flush().unwrap();
    assert_eq!(synced_position(&queue, "g", p), second);
    // After a power cut at that moment the group resumes at the synced
    // position or at the stored one (if writeback wrote its page), never
    // before the sync nor past what was processed.
    assert!(disk.problems().is_empty(), "{:?}", disk.problems());
    let images = tempfile::tempdir().unwrap();
    for mode in CrashMode::ALL {
        for seed in 0..4 {
            let image = images.path().join(format!("{mode:?}-{seed}"));
            disk.crash_image(cut, mode, seed, &image).unwrap();
            let after = Queue::open_existing(image.join("q")).unwrap();
            let resumed = after.stat().unwrap().groups[0].committed[p as usize].unwrap();
            assert!(resumed == first || resumed == second, "{mode:?} seed {seed}: resumed at {resumed}");
        }
    }
}

#[test]
fn buffered_commits_are_stored_at_once_and_synced_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 1, 10);
    let mut consumer = queue.consumer_with("g", options(Durability::Buffered)).unwrap();
    let (p, first) = process_one(&mut consumer);
    let (_, second) = process_one(&mut consumer);
    // Stored: another member, or `stat`, reads it through the page cache...
    assert_eq!(queue.stat().unwrap().groups[0].committed, vec![Some(second)]);
    // ...but a power cut now would bring the group back to where it took
    // the slot.
    assert_eq!(synced_position(&queue, "g", p), 0, "nothing synced before the flush ({first}, {second})");
    consumer.flush().unwrap();
    assert_eq!(synced_position(&queue, "g", p), second);
    // Dropping the consumer flushes too.
    let (_, third) = process_one(&mut consumer);
    assert_eq!(synced_position(&queue, "g", p), second);
    drop(consumer);
    assert_eq!(synced_position(&queue, "g", p), third);
}

#[test]
fn a_slot_is_synced_before_it_is_handed_to_a_new_member() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 2, 30);
    let rebalance = Duration::from_millis(1);
    let buffered = options(Durability::Buffered).rebalance_interval(rebalance);
    let mut a = queue.consumer_with("g", buffered.clone()).unwrap();
    let mut stored = [0u64; 2];
    for _ in 0..4 {
        let (p, next) = process_one(&mut a);
        stored[p as usize] = next;
    }
    assert_eq!((synced_position(&queue, "g", 0), synced_position(&queue, "g", 1)), (0, 0), "nothing synced yet");
    // B joins; A still holds both slots, so B takes none yet. A gives one
    // back at its next rebalance, between batches.
    let b = queue.consumer_with("g", buffered).unwrap();
    assert!(b.held_partitions().is_empty());
    while a.held_partitions().len() == 2 {
        std::thread::sleep(rebalance);
        let (p, next) = process_one(&mut a);
        stored[p as usize] = next;
    }
    let given = (0..2).find(|p| !a.held_partitions().contains(p)).unwrap();
    // B has not looked again: the file is still A's, synced before the
    // lease was released.
    assert_eq!(synced_position(&queue, "g", given), stored[given as usize], "the slot given back was synced first");
    let kept = 1 - given;
    assert!(synced_position(&queue, "g", kept) < stored[kept as usize], "the slot A keeps is not synced yet");
}

#[test]
fn a_fenced_interval_member_stores_into_a_file_nobody_reads_and_its_flush_says_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let queue = filled(dir.path(), 1, 20);
    let lease_timeout = Duration::from_millis(100);
    let interval = |d| {
        ConsumerOptions::default()
            .max_batch(2)
            .lease_timeout(lease_timeout)
            .rebalance_interval(Duration::from_millis(10))
            .commit(Durability::Interval(d))
    };
    let mut a = queue.consumer_with("g", interval(Duration::from_secs(3600))).unwrap();
    assert_eq!(process_one(&mut a), (0, 2));
    let mut b = None;
    // A stalls inside its batch past its lease timeout (no heartbeat runs
    // inside the closure): B presumes it hung and takes the slot over at a
    // new epoch, from A's stored position 2. Then A's commit of 2..4
    // returns `Ok`: it is a store, with no system call to notice the fence.
    a.process(|batch| {
        assert_eq!(batch[0].position().offset, 2);
        std::thread::sleep(lease_timeout * 3);
        let taker = queue.consumer_with("g", interval(Duration::from_secs(3600))).unwrap();
        assert_eq!(taker.held_partitions(), vec![0], "B took the hung member's slot");
        b = Some(taker);
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    let mut b = b.unwrap();
    // A's store landed in its own epoch's file, which nobody reads: the
    // group stays at 2, where B took it.
    assert_eq!(queue.stat().unwrap().groups[0].committed, vec![Some(2)]);
    assert_eq!(b.committed().unwrap(), vec![2]);
    assert!(matches!(a.flush(), Err(durq::Error::Fenced { partition: 0, .. })), "A learns it was fenced");
    assert_eq!(queue.stat().unwrap().groups[0].committed, vec![Some(2)], "A's sync did not move the group");
    // B redelivers what A stored past the fence, one at a time (as after
    // any takeover of records a predecessor was handed).
    let again = b
        .process(|batch| {
            assert_eq!(batch[0].position().offset, 2);
            assert_eq!(batch[0].delivery_count(), 2, "A's delivery was counted");
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert_eq!(again, 1);
    b.flush().unwrap();
    assert_eq!(synced_position(&queue, "g", 0), 3);
}

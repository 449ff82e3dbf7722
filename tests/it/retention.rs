//! Retention in one process: what stops it and what must not. Entries of
//! `groups/` that are not groups are ignored; a pass that fails is counted
//! where `stat` shows it, never swallowed, and never fails the send it
//! followed; `reclaim` (`durq gc`) returns the failure. The full
//! disk itself is tests/it/full_disk.rs; the retention rule (nothing before
//! every group passed it) is in tests/it/groups.rs and tests/it/model.rs.

use crate::common;

use std::time::Duration;

use common::{TestQueue, small};
use durq::internals::sim::{HeldOp, OpKind, SimDisk};
use durq::{Consumer, ConsumerOptions, Error};

fn quick() -> ConsumerOptions {
    ConsumerOptions::default().rebalance_interval(Duration::from_millis(5)).max_batch(1000)
}

fn drain(consumer: &mut Consumer) -> usize {
    let mut n = 0;
    while let k @ 1.. = consumer.process_timeout(Duration::from_millis(10), |_| Ok::<(), std::io::Error>(())).unwrap() {
        n += k;
    }
    n
}

/// Sends `n` records of 1,000 bytes: 64 of them fill a 64 KiB segment.
fn send(t: &TestQueue, n: usize) {
    let producer = t.queue.producer();
    for _ in 0..n {
        producer.send([7u8; 1000]).unwrap();
    }
}

#[test]
fn entries_of_groups_that_are_not_groups_neither_stop_retention_nor_break_stat() {
    let t = TestQueue::new(small());
    let mut g = t.queue.consumer_with("g", quick()).unwrap();
    let groups = t.path().join("groups");
    std::fs::write(groups.join("notes.txt"), b"ask ops before deleting g").unwrap();
    std::fs::write(groups.join(".DS_Store"), b"").unwrap();
    std::fs::create_dir(groups.join("not a group")).unwrap();
    send(&t, 300);
    assert_eq!(drain(&mut g), 300);
    send(&t, 70); // rolls: retention runs
    let (first, next) = t.queue.offsets(0).unwrap();
    assert!(first > 0, "retention ran: first offset {first}");
    assert!(common::segments(&t.path(), 0).len() <= 3, "{:?}", common::segments(&t.path(), 0));
    assert_eq!(t.queue.groups().unwrap(), ["g"]);
    let stat = t.queue.stat().unwrap();
    let names: Vec<&str> = stat.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["g"]);
    assert_eq!(stat.groups[0].lag, [Some(next - 300)]);
}

/// Replaces a segment file by a directory of the same name, which no
/// unlink can remove: a pass that reaches it fails.
fn make_unremovable(segment: &std::path::Path) {
    std::fs::remove_file(segment).unwrap();
    std::fs::create_dir(segment).unwrap();
    std::fs::write(segment.join("keep"), b"").unwrap();
}

#[test]
fn a_failed_pass_is_counted_for_stat_and_fails_no_send_and_reclaim_returns_it() {
    let t = TestQueue::new(small());
    let mut g = t.queue.consumer_with("g", quick()).unwrap();
    drop(t.queue.consumer("slow").unwrap()); // holds every segment
    send(&t, 300);
    assert_eq!(drain(&mut g), 300);
    assert_eq!(t.queue.stat().unwrap().retention_failures, Ok(None));
    let first_segment = common::segments(&t.path(), 0)[0].clone();
    make_unremovable(&first_segment);
    t.queue.delete_group("slow").unwrap();

    send(&t, 130); // two rolls, each followed by a pass that fails
    assert_eq!(drain(&mut g), 130);
    let failures = t.queue.stat().unwrap().retention_failures.unwrap().expect("the failures were counted");
    assert!(failures.count >= 2, "{failures:?}");
    assert_eq!(failures.partition, 0);
    let name = first_segment.file_name().unwrap().to_str().unwrap();
    assert!(failures.last_error.contains(name) && failures.last_error.contains("directory"), "{failures:?}");
    let age_ms = durq_now_ms().saturating_sub(failures.last_ms);
    assert!(age_ms < 600_000, "the last failure is recent: {age_ms} ms ago");

    // By hand, the failure is the answer.
    match t.queue.reclaim() {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains(name), "{e}"),
        other => panic!("reclaim must report the failure: {other:?}"),
    }
    // Once the obstacle is gone, the next pass removes what was passed.
    std::fs::remove_dir_all(&first_segment).unwrap();
    let reclaimed = t.queue.reclaim().unwrap();
    assert!(reclaimed[0].segments_removed >= 1, "{reclaimed:?}");
    assert_eq!(common::segments(&t.path(), 0).len(), 2);
}

fn durq_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A reset reads the first offset, claims a new epoch (an empty file,
/// which a pass skips) and only then writes the position: a pass in
/// between would still see the old, far-ahead position and remove segments
/// below the offset the reset is about to write, and the group's next take
/// would find no segment at its position. Both run under the floor lock;
/// the deterministic interleavings are the two `..._while_a_pass_decides_...`
/// tests below, this one races them.
#[test]
fn a_reset_to_earliest_racing_retention_starts_the_group_at_a_retained_offset() {
    let t = TestQueue::new(small());
    for round in 0..60 {
        // The group processed everything: every sealed segment but the
        // last two is passed, and the reset will move the group back.
        send(&t, 200);
        let mut g = t.queue.consumer_with("g", quick()).unwrap();
        drain(&mut g);
        drop(g);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let target = std::thread::scope(|s| {
            let gc = s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    t.queue.reclaim().unwrap();
                }
            });
            let target = t.queue.reset_group("g", durq::ResetTo::Earliest).unwrap()[0];
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            gc.join().unwrap();
            target
        });
        let (first, _) = t.queue.offsets(0).unwrap();
        assert!(target >= first, "round {round}: reset to {target}, but retention removed up to {first}");
        let mut g = t.queue.consumer_with("g", quick()).unwrap();
        let mut seen = None;
        g.process_timeout(Duration::from_millis(50), |batch| {
            seen = batch.first().map(|m| m.position().offset);
            Ok::<(), std::io::Error>(())
        })
        .unwrap_or_else(|e| panic!("round {round}: the first take after the reset to {target}: {e}"));
        assert_eq!(seen, Some(target), "round {round}");
        drain(&mut g);
    }
}

/// How long a test waits for a held operation or a thread before it
/// fails (never to time anything).
const PATIENCE: Duration = Duration::from_secs(20);

/// A queue whose group `g` processed 300 records (about 5 segments, every
/// one but the last two passed) with no retention pass since: under a
/// limit far above its size, which removes nothing by itself but makes the
/// next pass prepare `g`'s skip record right after its look at the groups.
/// The simulated disk can hold the pass there, its decision made and not
/// yet carried out. Returns the disk and the hold of that point.
fn deciding_pass(t: &TestQueue) -> (SimDisk, HeldOp) {
    send(t, 300); // no group yet: no pass runs, nothing is prepared
    let mut g = t.queue.consumer_with("g", quick()).unwrap();
    assert_eq!(drain(&mut g), 300);
    drop(g);
    let disk = SimDisk::attach(&t.path()).unwrap();
    let deciding = disk.hold_next(OpKind::Lock, "skipped");
    (disk, deciding)
}

/// Waits until `thread` has finished, or the disk's trace shows it (or
/// anyone) taking the queue's `durq.lock` after operation `from`: either
/// it got through, or it waits for the pass. Panics if neither happens.
fn through_or_waiting_for_the_pass<T>(disk: &SimDisk, from: usize, thread: &std::thread::ScopedJoinHandle<'_, T>) {
    let start = std::time::Instant::now();
    let at_floor_lock =
        || disk.trace()[from..].iter().any(|op| op.kind == OpKind::Lock && op.path.ends_with("durq.lock"));
    while !thread.is_finished() && !at_floor_lock() {
        assert!(start.elapsed() < PATIENCE, "neither through nor waiting at the floor lock");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The offset of the first record in the partition's first segment file.
fn first_segment_base(t: &TestQueue) -> u64 {
    let first = common::segments(&t.path(), 0).into_iter().next().expect("a segment");
    first.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// The offsets `group` is delivered from where it stands to the end.
fn delivered(t: &TestQueue, group: &str) -> Vec<u64> {
    let mut c = t.queue.consumer_with(group, quick()).unwrap();
    let mut offsets = Vec::new();
    while c
        .process_timeout(Duration::from_millis(50), |batch| {
            offsets.extend(batch.iter().map(|m| m.position().offset));
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
        > 0
    {}
    offsets
}

/// A group that registers while a pass has decided, from the groups it
/// saw, how far to go must not end up below the earliest retained offset
/// with its records still on disk: its first take would move it up to that
/// offset, silently past them. It registers after the pass (the floor
/// lock), and so starts where the files start.
#[test]
fn a_group_registering_while_a_pass_decides_starts_where_the_remaining_files_start() {
    let t = TestQueue::new(small().retention_max_bytes(1 << 40));
    let (disk, deciding) = deciding_pass(&t);
    std::thread::scope(|s| {
        let pass = s.spawn(|| t.queue.reclaim().unwrap());
        assert!(deciding.reached(PATIENCE), "the pass never reached its decision");
        let from = disk.trace().len();
        let joining = s.spawn(|| drop(t.queue.consumer_with("new", quick()).unwrap()));
        through_or_waiting_for_the_pass(&disk, from, &joining);
        drop(deciding);
        assert!(pass.join().unwrap()[0].segments_removed > 0, "the pass removed what `g` passed");
        joining.join().unwrap();
    });
    let (first, next) = t.queue.offsets(0).unwrap();
    assert_eq!(first_segment_base(&t), first, "the earliest retained offset is where the files start");
    assert_eq!(delivered(&t, "new"), (first..next).collect::<Vec<_>>(), "the new group starts there");
}

/// A reset to the earliest record while a pass has decided, from the old
/// position, how far to go: the reset waits for the pass (the floor lock)
/// and puts the group at the earliest record that is still there, not
/// below an earliest retained offset raised after it looked.
#[test]
fn a_reset_to_earliest_while_a_pass_decides_lands_where_the_remaining_files_start() {
    let t = TestQueue::new(small().retention_max_bytes(1 << 40));
    let (disk, deciding) = deciding_pass(&t);
    let target = std::thread::scope(|s| {
        let pass = s.spawn(|| t.queue.reclaim().unwrap());
        assert!(deciding.reached(PATIENCE), "the pass never reached its decision");
        let from = disk.trace().len();
        let reset = s.spawn(|| t.queue.reset_group("g", durq::ResetTo::Earliest).unwrap()[0]);
        through_or_waiting_for_the_pass(&disk, from, &reset);
        drop(deciding);
        assert!(pass.join().unwrap()[0].segments_removed > 0, "the pass removed what `g` passed");
        reset.join().unwrap()
    });
    let (first, next) = t.queue.offsets(0).unwrap();
    assert_eq!(target, first, "reset to the earliest retained record");
    assert_eq!(first_segment_base(&t), first, "the earliest retained offset is where the files start");
    assert_eq!(delivered(&t, "g"), (first..next).collect::<Vec<_>>());
}

/// A process stopped while it holds the floor lock (here this test holds
/// it, on a file description of its own) must not stall other processes'
/// sends: the pass after a roll waits for the lock a bounded time, then
/// counts itself failed, naming the lock file, for `stat`; the send
/// succeeds. Once the lock is free, the next roll's pass removes what the
/// group passed.
#[test]
fn a_floor_lock_held_elsewhere_fails_the_pass_after_a_roll_not_the_send() {
    let t = TestQueue::new(small());
    let mut g = t.queue.consumer_with("g", quick()).unwrap();
    send(&t, 300);
    assert_eq!(drain(&mut g), 300);
    let (first, _) = t.queue.offsets(0).unwrap();
    let held = std::fs::OpenOptions::new().read(true).write(true).open(t.path().join("durq.lock")).unwrap();
    held.lock().unwrap();
    let returned = std::thread::scope(|s| {
        let (sent, done) = std::sync::mpsc::channel();
        let t = &t;
        s.spawn(move || {
            send(t, 70); // a roll, and its pass
            let _ = sent.send(()); // nobody listens after a timeout
        });
        let returned = done.recv_timeout(PATIENCE).is_ok();
        if !returned {
            held.unlock().unwrap(); // so that the scope's join ends
        }
        returned
    });
    assert!(returned, "the sends never returned while another held the floor lock");
    assert_eq!(t.queue.offsets(0).unwrap().0, first, "no pass ran");
    let failures = t.queue.stat().unwrap().retention_failures.unwrap().expect("the skipped pass was counted");
    assert!(
        failures.last_error.contains("durq.lock") && failures.last_error.contains("held elsewhere"),
        "{failures:?}"
    );
    drop(held);
    send(&t, 70);
    assert!(t.queue.offsets(0).unwrap().0 > first, "the next roll's pass ran");
}

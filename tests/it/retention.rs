//! Retention in one process: what stops it and what must not. Entries of
//! `groups/` that are not groups are ignored; a pass that fails is counted
//! where `stat` shows it, never swallowed, and never fails the send it
//! followed; `reclaim` (`durq gc`) returns the failure. The full
//! disk itself is tests/it/full_disk.rs; the retention rule (nothing before
//! every group passed it) is in tests/it/groups.rs and tests/it/model.rs.

use crate::common;

use std::time::Duration;

use common::{TestQueue, small};
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
/// between still sees the old, far-ahead position and removes segments
/// below the offset the reset is about to write. The reset must notice,
/// or the group's next take finds no segment at its position.
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

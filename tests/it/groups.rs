//! Consumer groups in one process: fair and sticky shares, graceful
//! rebalance without duplicates, takeover from a member that left, poison
//! records to the dead-letter queue and back, per-record verdicts, the
//! manual-commit form, retention and the admin operations.
//! Process kills, stops and fencing are in `tests/chaos.rs`.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestQueue, small};
use durq::{ConsumerOptions, Error, Options, Position, Queue, ResetTo, Verdict};

fn quick() -> ConsumerOptions {
    ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]).rebalance_interval(Duration::from_millis(5))
}

fn ok() -> Result<(), std::io::Error> {
    Ok(())
}

#[test]
fn members_share_the_slots_fairly_and_a_newcomer_takes_only_its_share() {
    let t = TestQueue::new(Options::default().partitions(4));
    let mut a = t.queue.consumer_with("g", quick()).unwrap();
    assert_eq!(a.held_partitions(), [0, 1, 2, 3]);
    let mut b = t.queue.consumer_with("g", quick()).unwrap();
    // `a` gives back two slots at its next batch boundary; `b` takes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.held_partitions().len() != 2 || b.held_partitions().len() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rebalance: {:?} {:?}",
            a.held_partitions(),
            b.held_partitions()
        );
        a.process_timeout(Duration::from_millis(5), |_| ok()).unwrap();
        b.process_timeout(Duration::from_millis(5), |_| ok()).unwrap();
    }
    let mut all: Vec<u32> = a.held_partitions().into_iter().chain(b.held_partitions()).collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3]);
}

#[test]
fn a_member_joining_a_busy_group_causes_no_duplicate_processing() {
    let t = TestQueue::new(Options::default().partitions(4));
    let producer = t.queue.producer();
    let total = 4000u64;
    let mut a = t.queue.consumer_with("g", quick().max_batch(16)).unwrap();
    let mut seen: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut b = None;
    let mut sent = 0;
    let record = |batch: &[durq::Message<'_>], seen: &mut BTreeMap<Vec<u8>, u32>| {
        for m in batch {
            *seen.entry(m.payload().to_vec()).or_default() += 1;
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < total {
        assert!(std::time::Instant::now() < deadline, "only {} of {total} processed", seen.len());
        if sent < total {
            producer.send_batch((sent..sent + 100).map(|i| format!("m{i}"))).unwrap();
            sent += 100;
        }
        if sent == total / 2 && b.is_none() {
            b = Some(t.queue.consumer_with("g", quick().max_batch(16)).unwrap());
        }
        a.process_timeout(Duration::from_millis(1), |batch| {
            record(batch, &mut seen);
            ok()
        })
        .unwrap();
        if let Some(b) = b.as_mut() {
            b.process_timeout(Duration::from_millis(1), |batch| {
                record(batch, &mut seen);
                ok()
            })
            .unwrap();
        }
    }
    let b = b.unwrap();
    assert!(!b.held_partitions().is_empty(), "the newcomer got a share");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
}

#[test]
fn a_poison_record_goes_to_the_dead_letter_queue_after_max_deliveries_and_the_rest_flows() {
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["ok 0", "poison", "ok 2", "ok 3"]).unwrap();
    let mut c = t.queue.consumer_with("g", quick().max_deliveries(3).max_batch(4)).unwrap();
    let mut processed = Vec::new();
    let mut failures = 0;
    for _ in 0..20 {
        let r = c.process_timeout(Duration::from_millis(20), |batch| {
            if batch.iter().any(|m| m.payload() == b"poison") {
                return Err(std::io::Error::other("cannot parse"));
            }
            processed.extend(batch.iter().map(|m| m.payload().to_vec()));
            ok()
        });
        match r {
            Ok(0) => break,
            Ok(_) => {}
            Err(Error::Process(_)) => failures += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(processed, [b"ok 0".to_vec(), b"ok 2".to_vec(), b"ok 3".to_vec()]);
    // One failure of the whole batch, then the poison alone until its third.
    assert_eq!(failures, 3);
    let dead = t.queue.dead_letters("g", 10).unwrap();
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!((letter.dlq_offset, letter.original, letter.deliveries), (0, Position { partition: 0, offset: 1 }, 3));
    assert_eq!((&letter.payload[..], &letter.reason[..]), (&b"poison"[..], "cannot parse"));
    assert_eq!(c.committed().unwrap(), vec![4]);
    // Replay sends it back; it is gone from the DLQ once the re-send is durable.
    drop(c);
    assert_eq!(t.queue.replay_dead_letters("g").unwrap(), 1);
    assert!(t.queue.dead_letters("g", 10).unwrap().is_empty());
    assert_eq!(t.queue.read_at(0, 4, 10).unwrap()[0].payload, b"poison");
    let stat = t.queue.stat().unwrap();
    assert_eq!(stat.groups[0].dead_letters, Ok(0));
}

#[test]
fn a_record_in_the_dead_letter_queue_that_is_not_a_dead_letter_is_corrupt_and_named() {
    let t = TestQueue::new(small());
    t.queue.producer().send("poison").unwrap();
    let mut c = t.queue.consumer_with("g", quick().max_deliveries(1)).unwrap();
    assert!(c.process(|_| Err(std::io::Error::other("no"))).is_err());
    drop(c);
    // The dead-letter queue is a queue like any other: anyone may send to it.
    let dlq = t.path().join("groups/g/dlq");
    Queue::open_existing(&dlq).unwrap().producer().send("not an envelope").unwrap();

    let err = t.queue.dead_letters("g", 10).unwrap_err();
    let Error::Corrupt { file, position, offset, .. } = &err else { panic!("{err}") };
    assert!(file.starts_with(&dlq) && file.extension().is_some_and(|e| e == "seg"), "{err}");
    assert_eq!(offset, &Some(1), "{err}");
    assert!(std::fs::read(file).unwrap()[*position as usize..].starts_with(b"not an envelope"), "{err}");
    assert_eq!(t.queue.dead_letters("g", 1).unwrap()[0].payload, b"poison", "the letter before it still reads");
}

#[test]
fn the_attempt_count_survives_reopening_the_consumer() {
    let t = TestQueue::new(small());
    t.queue.producer().send("poison").unwrap();
    let options = || quick().max_deliveries(4);
    for attempt in 1..=3 {
        let mut c = t.queue.consumer_with("g", options()).unwrap();
        let err = c
            .process(|batch| {
                assert_eq!(batch[0].delivery_count(), attempt);
                Err(std::io::Error::other("still broken"))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Process(_)));
    }
    let mut c = t.queue.consumer_with("g", options()).unwrap();
    assert!(c.process(|_| Err(std::io::Error::other("fourth"))).is_err());
    assert_eq!(t.queue.dead_letters("g", 10).unwrap().len(), 1, "the fourth delivery was the last");
}

#[test]
fn per_record_verdicts_commit_done_records_and_retry_or_dead_letter_the_rest() {
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["a", "bad", "b", "later", "c"]).unwrap();
    let mut c = t.queue.consumer_with("g", quick().max_batch(10)).unwrap();
    let mut seen = Vec::new();
    let n = c
        .process_each(Duration::from_secs(1), |m| {
            seen.push(m.payload().to_vec());
            match m.payload() {
                b"bad" => Verdict::DeadLetter("malformed".into()),
                b"later" => Verdict::Retry(Some(Duration::ZERO)),
                _ => Verdict::Done,
            }
        })
        .unwrap();
    assert_eq!(n, 3, "a, bad (dead-lettered) and b are committed");
    assert_eq!(seen, [&b"a"[..], b"bad", b"b", b"later"]);
    assert_eq!(c.committed().unwrap(), vec![3]);
    let mut again = Vec::new();
    c.process_each(Duration::from_secs(1), |m| {
        again.push((m.payload().to_vec(), m.delivery_count()));
        Verdict::Done
    })
    .unwrap();
    assert_eq!(again[0], (b"later".to_vec(), 2));
    assert_eq!(t.queue.dead_letters("g", 10).unwrap().len(), 1);
}

#[test]
fn a_dropped_delivery_is_redelivered_and_a_committed_one_is_not() {
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["x", "y"]).unwrap();
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    {
        let d = c.poll(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(d.len(), 2);
        // Dropped without commit: a failed delivery.
    }
    let d = c.poll(Duration::from_secs(1)).unwrap().unwrap();
    let first = d.messages()[0].delivery_count();
    assert_eq!((d.len(), first), (1, 2), "redelivered, one record at a time");
    assert_eq!(d.commit().unwrap(), 1);
    let d = c.poll(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(d.messages()[0].payload(), b"y");
    d.commit().unwrap();
    assert!(c.poll(Duration::from_millis(10)).unwrap().is_none());
}

#[test]
fn segments_go_once_every_group_has_passed_them_and_never_before() {
    let t = TestQueue::new(small());
    let producer = t.queue.producer();
    let mut fast = t.queue.consumer_with("fast", quick().max_batch(1000)).unwrap();
    let mut slow = t.queue.consumer_with("slow", quick().max_batch(1000)).unwrap();
    let payload = vec![7u8; 1000];
    for _ in 0..300 {
        producer.send(&payload).unwrap();
    }
    let segments = common::segments(&t.path(), 0).len();
    assert!(segments >= 4, "{segments}");
    while fast.process_timeout(Duration::from_millis(10), |_| ok()).unwrap() > 0 {}
    producer.send(&payload).unwrap();
    for _ in 0..70 {
        producer.send(&payload).unwrap(); // rolls at least once: retention runs
    }
    assert!(common::segments(&t.path(), 0).len() > segments, "the slow group holds every segment");
    assert_eq!(t.queue.offsets(0).unwrap().0, 0);
    while slow.process_timeout(Duration::from_millis(10), |_| ok()).unwrap() > 0 {}
    while fast.process_timeout(Duration::from_millis(10), |_| ok()).unwrap() > 0 {}
    for _ in 0..70 {
        producer.send(&payload).unwrap();
    }
    let (first, next) = t.queue.offsets(0).unwrap();
    assert!(first > 0, "passed segments were removed");
    assert!(common::segments(&t.path(), 0).len() <= 3);
    // What is left is intact, and a new group starts at the first retained record.
    let mut late = t.queue.consumer_with("late", quick().max_batch(1000)).unwrap();
    let mut count = 0;
    while let n @ 1.. = late.process_timeout(Duration::from_millis(10), |_| ok()).unwrap() {
        count += n as u64;
    }
    assert_eq!(count, next - first);
}

#[test]
fn reset_and_delete_need_a_group_without_live_members() {
    let t = TestQueue::new(Options::default().partitions(2));
    t.queue.producer().send_batch(["a", "b", "c"]).unwrap();
    let c = t.queue.consumer_with("g", quick()).unwrap();
    assert!(matches!(t.queue.reset_group("g", ResetTo::Latest), Err(Error::GroupBusy { .. })));
    assert!(matches!(t.queue.delete_group("g"), Err(Error::GroupBusy { .. })));
    drop(c);
    let latest = t.queue.reset_group("g", ResetTo::Latest).unwrap();
    assert_eq!(latest.iter().sum::<u64>(), 3);
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    assert!(common::drain(&mut c).is_empty(), "reset to latest skips what was sent");
    drop(c);
    assert_eq!(t.queue.reset_group("g", ResetTo::Earliest).unwrap(), [0, 0]);
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    assert_eq!(common::drain(&mut c).len(), 3);
    drop(c);
    t.queue.delete_group("g").unwrap();
    assert!(t.queue.groups().unwrap().is_empty());
    assert!(matches!(t.queue.reset_group("nope", ResetTo::Latest), Err(Error::InvalidOption { .. })));
}

/// A member that joined after the reset found none alive, and is between
/// claiming an epoch and writing its lease (it holds the lease's lock, and
/// its claim is past the lease's epoch): the reset waits for it as a taking
/// member would, and moves nothing, instead of fencing it half way.
#[test]
fn a_reset_meeting_a_take_in_progress_is_busy_and_changes_nothing() {
    let t = TestQueue::new(Options::default());
    t.queue.producer().send_batch(["a", "b", "c"]).unwrap();
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    assert_eq!(common::drain(&mut c).len(), 3);
    drop(c);
    let slot_dir = durq::internals::group::slot::dir(&t.path().join("groups/g"), 0);
    let taker =
        std::fs::File::options().read(true).write(true).open(slot_dir.join(durq::internals::group::slot::LEASE_FILE));
    let taker = taker.unwrap();
    taker.lock().unwrap();
    let leased = durq::internals::group::slot::read_lease(&slot_dir, 0).unwrap().unwrap().epoch;
    let claim = slot_dir.join(durq::internals::group::checkpoint::file_name(leased + 1));
    std::fs::File::create_new(&claim).unwrap();
    let before: Vec<_> = std::fs::read_dir(&slot_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    match t.queue.reset_group("g", ResetTo::Earliest) {
        Err(Error::GroupBusy { lock, .. }) => assert_eq!(lock, slot_dir),
        other => panic!("a reset must not fence a take in progress: {other:?}"),
    }
    let after: Vec<_> = std::fs::read_dir(&slot_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(after, before, "no epoch claimed, no file written");
    assert_eq!(t.queue.stat().unwrap().groups[0].committed, [Some(3)]);
}

#[test]
fn stat_shows_members_slots_holders_and_lag() {
    let t = TestQueue::new(Options::default().partitions(2));
    t.queue.producer().send_batch(["a", "b"]).unwrap();
    let _c = t.queue.consumer_with("g", quick()).unwrap();
    let stat = t.queue.stat().unwrap();
    let g = &stat.groups[0];
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].liveness, durq::stat::Liveness::Alive);
    assert!(g.slots.iter().all(|s| s.holder == durq::stat::Holder::Member(durq::stat::Liveness::Alive)));
    assert!(g.slots.iter().all(|s| s.epoch >= 1));
    assert_eq!(g.lag.iter().map(|l| l.expect("no slot is damaged")).sum::<u64>(), 2);
}

/// Writes `bytes` as slot 0's lease of group `g` (the group exists, nobody
/// holds the slot).
fn write_lease(t: &TestQueue, bytes: &[u8]) -> std::path::PathBuf {
    let lease =
        durq::internals::group::slot::dir(&t.path().join("groups/g"), 0).join(durq::internals::group::slot::LEASE_FILE);
    std::fs::write(&lease, bytes).unwrap();
    lease
}

#[test]
fn a_corrupt_lease_counts_as_no_live_holder_only_while_its_lock_is_free() {
    let t = TestQueue::new(Options::default());
    t.queue.producer().send("m").unwrap();
    drop(t.queue.consumer_with("g", quick()).unwrap());
    let lease = write_lease(&t, b"garbage, not a lease record");
    // Somebody alive holds the lease's lock: the slot stays theirs.
    let holder = std::fs::File::options().read(true).write(true).open(&lease).unwrap();
    holder.lock().unwrap();
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    assert!(c.held_partitions().is_empty());
    assert!(c.process_timeout(Duration::from_millis(50), |_| ok()).unwrap() == 0);
    let stat = t.queue.stat().unwrap();
    let unreadable = stat.groups[0].slots[0].lease.as_ref().map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(unreadable, Err("lease record cut short".into()), "stat reports why the lease is unreadable");
    // The lock goes (its holder died): the slot is taken and resumes.
    drop(holder);
    assert_eq!(common::drain(&mut c), [b"m".to_vec()]);
}

#[test]
fn a_lease_from_another_boot_or_a_dead_member_is_stale_and_taken() {
    let t = TestQueue::new(Options::default());
    t.queue.producer().send("m").unwrap();
    drop(t.queue.consumer_with("g", quick()).unwrap());
    let lease = durq::internals::group::lease::Lease {
        slot: 0,
        epoch: 41,
        member: [9; 16],
        pid: 1,
        boot_id: [0xee; 16],
        heartbeat_ms: u64::MAX / 2, // "fresh" by the clock: only liveness decides
        host: "elsewhere".into(),
        timeout_ms: 10_000,
    };
    write_lease(&t, &durq::internals::group::lease::encode(&lease));
    let mut c = t.queue.consumer_with("g", quick()).unwrap();
    assert_eq!(c.held_partitions(), [0], "member 0909.. has no live member file: dead");
    assert_eq!(common::drain(&mut c), [b"m".to_vec()]);
    let stat = t.queue.stat().unwrap();
    assert!(stat.groups[0].slots[0].epoch > 41, "the new epoch is past the stale lease's");
}

#[test]
fn a_poison_record_of_the_largest_size_still_fits_the_dead_letter_queue() {
    let t = TestQueue::new(small());
    let largest = vec![b'p'; 16 << 10]; // small() allows 16 KiB records
    t.queue.producer().send_batch([largest.clone(), b"next".to_vec()]).unwrap();
    let mut c = t.queue.consumer_with("g", quick().max_deliveries(1).max_batch(1)).unwrap();
    let err = c.process(|_| Err(std::io::Error::other("x".repeat(10_000)))).unwrap_err();
    assert!(matches!(err, Error::Process(_)), "{err}");
    assert_eq!(c.committed().unwrap(), vec![1], "dead-lettered and passed");
    let dead = t.queue.dead_letters("g", 10).unwrap();
    assert_eq!(dead[0].payload, largest);
    assert_eq!(common::drain(&mut c), [b"next".to_vec()]);
}

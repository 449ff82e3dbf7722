//! I/O faults at every storage operation, on the simulated disk
//! (`durq::internals::sim`): for each operation index N of the power-loss workload
//! (tests/common/power.rs), fail operation N once, and fail it and every
//! operation after it, with the errors that operation can really return
//! (EIO from a write or any sync, ENOSPC from a write, a create or a space
//! reservation). Then:
//!
//! - the error reaches the caller: the workload saw it;
//! - nothing whose sync failed is acknowledged, and the handle is
//!   fail-stop: after a failed sync of the log, no send is acknowledged
//!   again (a retried fsync can report success for pages the kernel already
//!   dropped, the "fsyncgate" lesson);
//! - with the fault gone, reopening the directory as it is (a process
//!   crash) and the image a power cut right then would leave both satisfy
//!   every invariant of the power-loss test (`power::check`).
//!
//! The real full disk is tests/it/full_disk.rs.

use crate::common;

use std::time::Duration;

use common::power::{self, Ledger};
use common::small;
use durq::internals::sim::{CrashMode, Fault, OpKind, SimDisk, TracedOp};
use durq::{ConsumerOptions, Durability, Error};

/// The errors an operation of this kind can return on Linux.
fn errnos(kind: OpKind) -> &'static [i32] {
    match kind {
        OpKind::Write | OpKind::Create | OpKind::CreateDir => &[libc::EIO, libc::ENOSPC],
        OpKind::Reserve => &[libc::ENOSPC],
        OpKind::SyncFile | OpKind::SyncRange | OpKind::SyncDir => &[libc::EIO],
        OpKind::Rename | OpKind::Remove | OpKind::RemoveTree | OpKind::Lock => &[libc::EIO],
    }
}

/// Failures durq absorbs by design, so the workload need not see them:
/// removing files it no longer needs (an old checkpoint, its own member
/// file on leaving, retention's segments, and retention's directory sync
/// after them), which a later scan, taker or roll does again. A send whose
/// record is stored is not failed because clean-up failed: neither by a
/// failed removal nor by a retention pass that could not take the floor
/// lock (`durq.lock`), which it counts in `durq.retention` instead (its
/// next operation). And a new segment that found no space, which the roll
/// created again once retention had removed segments every group had
/// passed.
///
/// Under `Buffered` the sealer thread's msyncs of full segments (its only
/// operations) may fall between a removal and its directory sync, so they
/// are skipped when looking back, and forward.
fn absorbed(trace: &[TracedOp], fault: Fault) -> bool {
    let at = fault.at;
    let kind = |i: u64| trace.get(i as usize).map(|op| op.kind);
    let before = trace[..(at as usize).min(trace.len())].iter().rev().find(|op| !is_log_sync(op));
    let after = trace.get(at as usize + 1..).and_then(|ops| ops.iter().find(|op| !is_log_sync(op)));
    let failed_pass_counted =
        trace.get(at as usize).is_some_and(|op| op.kind == OpKind::Lock && op.path.ends_with("durq.lock"))
            && after.is_some_and(|op| op.path.ends_with("durq.retention"));
    kind(at) == Some(OpKind::Remove)
        || (kind(at) == Some(OpKind::SyncDir) && before.is_some_and(|op| op.kind == OpKind::Remove))
        || failed_pass_counted
        || (fault.errno == libc::ENOSPC && created_again_after_retention(trace, at))
}

/// True if the segment being created when operation `at` failed (the last
/// one created before it) was created again after retention removed a
/// segment: the roll found no space and retried.
fn created_again_after_retention(trace: &[TracedOp], at: u64) -> bool {
    let is_segment = |op: &TracedOp| op.path.extension().is_some_and(|e| e == "seg");
    let upto = (at as usize + 1).min(trace.len());
    let Some(creating) = trace[..upto].iter().rev().find(|op| op.kind == OpKind::Create && is_segment(op)) else {
        return false;
    };
    let mut after = trace[upto..].iter();
    after.any(|op| op.kind == OpKind::Remove && is_segment(op))
        && after.any(|op| op.kind == OpKind::Create && op.path == creating.path)
}

/// An msync of a segment. (The other msyncs are checkpoint commits.)
fn is_log_sync(op: &TracedOp) -> bool {
    op.kind == OpKind::SyncRange && op.path.extension().is_some_and(|e| e == "seg")
}

/// Runs the workload with `fault` armed and checks the outcome. Returns the
/// kind of the operation that failed, if the run got that far. (Timing can
/// shift a few operations between runs, so it is read from this run's own
/// trace.)
fn run_with_fault(durability: Durability, fault: Fault) -> Result<Option<OpKind>, String> {
    run_checked(durability, fault).map_err(|(op, e)| format!("{e} (the failed operation of this run: {op:?})"))
}

fn run_checked(durability: Durability, fault: Fault) -> Result<Option<OpKind>, (Option<TracedOp>, String)> {
    let scratch = tempfile::tempdir_in(power::scratch_base()).unwrap();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    disk.fail(fault);
    let mut ledger = Ledger::default();
    let error = power::workload(&queue_dir, durability, &disk, &mut ledger);
    let trace = disk.trace();
    let failed = trace.get(fault.at as usize).cloned();
    let hit = failed.as_ref().map(|op| op.kind);
    let fail = |e: String| (failed.clone(), e);
    disk.heal();
    let end = disk.ops();
    disk.crash_point_now();
    if let Some(kind) = hit
        && error.is_none()
        && !absorbed(&trace, fault)
        && !ledger.quiet.iter().any(|r| r.contains(&fault.at))
    {
        let from = (fault.at as usize).saturating_sub(3);
        let before = &trace[from..(fault.at as usize).min(trace.len())];
        return Err(fail(format!("the failed {kind:?} never reached the caller (after {before:?})")));
    }
    // Under `Sync` every acknowledgement is a durability promise, given on
    // the sending thread right after its own sync. Under `Buffered` a send
    // promises nothing durable, and the failed msync may be the sealer
    // thread's, running while a send goes on that the operation count puts
    // after it: there, fail-stop means no flush that begins after it
    // succeeds (and later sends fail,
    // `a_failed_background_sync_of_a_full_segment_fails_the_next_flush`). A
    // flush that began before it may have finished its own syncs before it
    // and rightly return `Ok` after it, as the operation count reads. (Two
    // syncs of one segment never overlap, and a sync after a failed one
    // fails: `Segment::sync_locked`.)
    let promised_after = |a: &power::Ack| match durability {
        Durability::Sync => a.acked_at > fault.at,
        _ => a.flush_began.is_some_and(|at| at > fault.at),
    };
    if failed.as_ref().is_some_and(is_log_sync)
        && let Some(late) = ledger.acks.values().find(|a| promised_after(a))
    {
        return Err(fail(format!("seq {} acknowledged after the log's sync failed: not fail-stop", late.seq)));
    }
    power::check(&queue_dir, durability, &ledger, end).map_err(|e| fail(format!("reopened as it was: {e}")))?;
    let image = scratch.path().join("power-cut");
    disk.crash_image(0, CrashMode::DropPending, 0, &image).unwrap();
    power::check(&image.join("q"), durability, &ledger, end).map_err(|e| fail(format!("after a power cut: {e}")))?;
    Ok(hit)
}

fn every_operation_failing(durability: Durability) {
    // A clean run gives the trace: the operation kinds to fail, by index.
    let scratch = tempfile::tempdir().unwrap();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    let mut ledger = Ledger::default();
    assert!(power::workload(&queue_dir, durability, &disk, &mut ledger).is_none());
    let trace = disk.trace();
    drop(disk);
    let mut faults = 0;
    for op in &trace {
        for &errno in errnos(op.kind) {
            for sticky in [false, true] {
                let fault = Fault { at: op.index, errno, sticky };
                match run_with_fault(durability, fault) {
                    Ok(_) => faults += 1,
                    Err(e) => panic!("{durability:?}: {fault:?} (in the clean run, {op:?}): {e}"),
                }
            }
        }
    }
    eprintln!("{durability:?}: {} operations, {faults} faulted runs", trace.len());
    assert!(faults > 2 * trace.len());
}

#[test]
fn sync_every_operation_failing_once_or_for_good_loses_nothing_acknowledged() {
    every_operation_failing(Durability::Sync);
}

#[test]
fn buffered_every_operation_failing_once_or_for_good_loses_nothing_flushed() {
    every_operation_failing(Durability::Buffered);
}

#[test]
fn a_failed_interval_flush_is_reported_to_the_next_send_and_flush() {
    let t = common::TestQueue::new(small().durability(Durability::Interval(Duration::from_millis(5))));
    let disk = SimDisk::attach(t.dir.path()).unwrap();
    let producer = t.queue.producer();
    producer.send(b"one").unwrap();
    producer.flush().unwrap();
    disk.fail_next(OpKind::SyncRange, libc::EIO, false);
    producer.send(b"two").unwrap(); // in the mapping; the flusher's sync fails
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match producer.send(b"more") {
            Err(Error::Stopped { cause, .. }) => {
                assert!(cause.contains("msync"), "{cause}");
                break;
            }
            Ok(_) => assert!(std::time::Instant::now() < deadline, "the flusher's failure never surfaced"),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    disk.heal();
    assert!(matches!(producer.flush(), Err(Error::Stopped { .. })));
}

#[test]
fn a_failed_background_sync_of_a_full_segment_fails_the_next_flush() {
    let t = common::TestQueue::new(small().durability(Durability::Buffered));
    let disk = SimDisk::attach(t.dir.path()).unwrap();
    let producer = t.queue.producer();
    let record = [7u8; 1000];
    for _ in 0..63 {
        producer.send(record).unwrap(); // 63 fill the first segment
    }
    // The next send rolls: under `Buffered` no send syncs, so the next msync
    // is the one of the full segment, on the sealer thread or in the flush
    // that got to it first.
    disk.fail_next(OpKind::SyncRange, libc::EIO, false);
    producer.send(record).unwrap();
    let error = producer.flush().unwrap_err();
    disk.heal();
    assert!(matches!(error, Error::Io { op: "msync", .. } | Error::Stopped { .. }), "{error}");
    assert!(matches!(producer.send(b"after"), Err(Error::Stopped { .. })));
    assert!(matches!(producer.flush(), Err(Error::Stopped { .. })));
    assert_eq!(disk.trace().iter().filter(|op| op.kind == OpKind::SyncRange).count(), 1, "stopped: no msync after it");
    drop((producer, t.queue));
    let queue = durq::Queue::open_existing(t.dir.path().join("q")).unwrap();
    assert_eq!(queue.read_at(0, 0, usize::MAX).unwrap().len(), 64, "the page cache kept every record");
    assert!(disk.problems().is_empty(), "{:?}", disk.problems());
}

#[test]
fn a_send_that_cannot_reserve_its_space_fails_with_no_space_and_stops_nothing() {
    // Segments large enough to be reserved in several chunks (2 MiB with
    // 4 KiB pages): the first is reserved at creation, the next ones as the
    // writer gets there.
    let options = durq::Options::default().segment_bytes(64 << 20).record_bytes_max(64 << 10);
    let t = common::TestQueue::new(options.durability(Durability::Buffered));
    let disk = SimDisk::attach(t.dir.path()).unwrap();
    let producer = t.queue.producer();
    let record = vec![7u8; 60 << 10];
    producer.send(&record).unwrap();
    // The disk is full from the next reservation on: the sends that fit
    // what the segment has reserved pass, the first that needs more fails.
    disk.fail_next(OpKind::Reserve, libc::ENOSPC, true);
    let mut sent = 1;
    let error = loop {
        match producer.send(&record) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1000, "every send found space in a full 64 MiB segment");
    };
    disk.heal();
    assert!(error.is_no_space() && error.to_string().contains("reserve space"), "{error}");
    assert!(
        !disk.trace().iter().any(|op| op.kind == OpKind::Create && op.path.extension().is_some_and(|e| e == "seg")),
        "the send failed inside the first segment, not at a roll"
    );
    assert_eq!(t.queue.read_at(0, 0, usize::MAX).unwrap().len(), sent, "the failed send wrote nothing");
    assert_eq!(producer.send(&record).unwrap().offset, sent as u64, "not stopped: the next send passes");
    producer.flush().unwrap();
    assert!(disk.problems().is_empty(), "{:?}", disk.problems());
}

#[test]
fn a_failed_checkpoint_sync_stops_the_consumer_and_skips_nothing_unprocessed() {
    let t = common::TestQueue::new(small());
    let disk = SimDisk::attach(t.dir.path()).unwrap();
    t.queue.producer().send_batch(["a", "b"]).unwrap();
    let options = || ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]);
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    // The commit's sync of the checkpoint file (an msync of its first page;
    // under `Sync` the log needs none).
    disk.fail_next(OpKind::SyncRange, libc::EIO, false);
    let error = consumer.process(|_| Ok::<(), std::io::Error>(())).unwrap_err();
    disk.heal();
    assert!(
        matches!(&error, Error::Io { op: "msync", path, .. } if path.extension().is_some_and(|e| e == "ckpt")),
        "{error}"
    );
    assert!(matches!(
        consumer.process_timeout(Duration::ZERO, |_| Ok::<(), std::io::Error>(())),
        Err(Error::Stopped { .. })
    ));
    drop(consumer);
    // After a failed sync the page cache may or may not hold the new
    // position: the next member gets the batch again or not, and both are
    // fine since the closure had finished it. Nothing is skipped unprocessed.
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    let again = common::drain(&mut consumer);
    assert!(again.is_empty() || again == [b"a".to_vec(), b"b".to_vec()], "{again:?}");
}

#[test]
fn a_failed_checkpoint_sync_after_a_read_ahead_stops_the_consumer_and_delivers_nothing_it_read() {
    // Under `Sync`, `process` reads the next batch (records 64 and 65)
    // while the commit of a 64-record batch is in its sync. When that sync
    // fails, the consumer stops before delivering them, and the next member
    // gets them as never delivered: the read ahead marked nothing.
    let t = common::TestQueue::new(small());
    let disk = SimDisk::attach(t.dir.path()).unwrap();
    let records: Vec<String> = (0..66).map(|i| format!("r{i}")).collect();
    t.queue.producer().send_batch(&records).unwrap();
    let options = || ConsumerOptions::default().max_batch(64).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    disk.fail_next(OpKind::SyncRange, libc::EIO, false);
    let error = consumer.process(|_| Ok::<(), std::io::Error>(())).unwrap_err();
    disk.heal();
    assert!(matches!(&error, Error::Io { op: "msync", .. }), "{error}");
    let delivered = consumer.process_timeout(Duration::ZERO, |_| Ok::<(), std::io::Error>(()));
    assert!(matches!(delivered, Err(Error::Stopped { .. })), "{delivered:?}");
    drop(consumer);
    let mut consumer = t.queue.consumer_with("g", options()).unwrap();
    let mut seen = Vec::new();
    while consumer
        .process_timeout(Duration::from_millis(50), |batch| {
            seen.extend(batch.iter().map(|m| (m.position().offset, m.delivery_count())));
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
        > 0
    {}
    let tail: Vec<_> = seen.iter().filter(|(offset, _)| *offset >= 64).collect();
    assert_eq!(tail, [&(64, 1), &(65, 1)], "{seen:?}");
}

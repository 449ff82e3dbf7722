//! The async API (feature `tokio`, enabled for the crate's own tests by its
//! dev-dependency on itself) on multi-threaded runtimes: the same results
//! as the blocking API, commits only after the future resolved `Ok`, the
//! same retry and dead-letter paths, redelivery after a dropped future and
//! after a SIGKILL mid-batch, group commit shared by async and blocking
//! senders, and slots kept while a long batch is awaited.
//!
//! The crash story: the test re-runs its own binary as a child consumer
//! (`common::procs`), which processes batches with `process_async`, writes
//! one line per record after an `.await` inside the batch's future, and
//! SIGKILLs itself in the middle of its second batch. The parent then checks
//! that only the first batch was committed, consumes the rest itself, and
//! finds every record processed, the in-flight batch's first record
//! delivered again with a delivery count of 2, and no record done twice
//! except those the killed batch had done.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::procs::{self, fail, say};
use common::{TestQueue, small};
use durq::internals::sim::{OpKind, SimDisk};
use durq::{Batch, Consumer, ConsumerOptions, Durability, Error, Position, Queue};

/// Generous bound on a wait that must end: a hang becomes a failure.
const PATIENCE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn quick() -> ConsumerOptions {
    ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]).rebalance_interval(Duration::from_millis(5))
}

fn ok() -> Result<(), std::io::Error> {
    Ok(())
}

/// Processes records with `process_async` until `n` were committed;
/// returns their payloads in order.
async fn take_async(consumer: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < n {
        let payloads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = payloads.clone();
        let step = consumer.process_async(move |batch| async move {
            seen.lock().unwrap().extend(batch.iter().map(|m| m.payload().to_vec()));
            ok()
        });
        let got = tokio::time::timeout(PATIENCE, step).await.expect("records arrive").expect("process_async");
        let payloads = std::mem::take(&mut *payloads.lock().unwrap());
        assert_eq!(got, payloads.len());
        out.extend(payloads);
    }
    out
}

#[test]
fn process_async_hands_an_owned_batch_and_commits_after_the_future_resolves() {
    let t = TestQueue::new(small());
    runtime().block_on(async {
        let producer = t.queue.producer();
        let first = producer.send_async(b"a").await.unwrap();
        let keyed = producer.send_keyed_async(b"k", b"b").await.unwrap();
        let batch = producer.send_batch_async([b"c", b"d"]).await.unwrap();
        producer.flush_async().await.unwrap();
        assert_eq!(first, Position { partition: 0, offset: 0 });
        assert_eq!(keyed.offset, 1);
        assert_eq!(batch.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);

        let mut consumer = t.queue.consumer_with("g", quick()).unwrap();
        let committed_inside = Arc::new(std::sync::Mutex::new(None));
        let n = {
            let inside = committed_inside.clone();
            let queue = &t.queue;
            consumer
                .process_async(move |batch: Batch| async move {
                    assert_eq!(batch.len(), 4);
                    assert!(!batch.is_empty());
                    let payloads: Vec<&[u8]> = (&batch).into_iter().map(|m| m.payload()).collect();
                    assert_eq!(payloads, [b"a", b"b", b"c", b"d"]);
                    assert_eq!(batch.iter().nth(1).unwrap().key(), Some(&b"k"[..]));
                    // Handed to another task and awaited there: the batch is owned.
                    let batch = tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        batch
                    })
                    .await
                    .unwrap();
                    assert_eq!(batch.iter().last().unwrap().position().offset, 3);
                    // Nothing is committed while the future runs.
                    *inside.lock().unwrap() = Some(queue.stat().unwrap().groups[0].committed.clone());
                    ok()
                })
                .await
                .unwrap()
        };
        assert_eq!(n, 4);
        assert_eq!(*committed_inside.lock().unwrap(), Some(vec![Some(0)]));
        assert_eq!(consumer.committed().unwrap(), [4]);
    });
}

#[test]
fn a_process_async_future_dropped_mid_batch_commits_nothing_and_the_batch_comes_again() {
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["r0", "r1", "r2"]).unwrap();
    runtime().block_on(async {
        let mut consumer = t.queue.consumer_with("g", quick()).unwrap();
        let started = Arc::new(tokio::sync::Notify::new());
        let step = consumer.process_async({
            let started = started.clone();
            move |_batch| async move {
                started.notify_one();
                std::future::pending::<()>().await;
                ok()
            }
        });
        // Dropped once the batch is in the future's hands.
        tokio::select! {
            r = step => panic!("the batch's future never resolves, yet process_async returned {r:?}"),
            () = started.notified() => {}
        }
        assert_eq!(consumer.committed().unwrap(), [0]);
        // Usable, and the batch comes again: its first record first, alone,
        // as after any failed delivery.
        let again = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = again.clone();
        let n = consumer
            .process_async(move |batch| async move {
                seen.lock().unwrap().extend(batch.iter().map(|m| (m.payload().to_vec(), m.delivery_count())));
                ok()
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(*again.lock().unwrap(), [(b"r0".to_vec(), 2)]);
        assert_eq!(take_async(&mut consumer, 2).await, [b"r1".to_vec(), b"r2".to_vec()]);
        assert_eq!(consumer.committed().unwrap(), [3]);
    });
}

#[test]
fn a_process_async_future_dropped_while_it_waits_changes_nothing() {
    let t = TestQueue::new(small());
    runtime().block_on(async {
        let mut consumer = t.queue.consumer_with("g", quick()).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(30), consumer.process_async(|_b| async { ok() })).await;
        assert!(waited.is_err(), "no record was sent, yet process_async returned {waited:?}");
        t.queue.producer().send_async(b"late").await.unwrap();
        let got = take_async(&mut consumer, 1).await;
        assert_eq!(got, [b"late".to_vec()]);
    });
}

#[test]
fn waiting_for_records_leaves_the_runtime_thread_free() {
    // One runtime thread: the consumer waits on it first, and the sender
    // can only run if that wait does not block the thread.
    let t = TestQueue::new(small().durability(Durability::Sync));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut consumer = t.queue.consumer("g").unwrap();
        let producer = t.queue.producer();
        let consume = async {
            let payload = Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = payload.clone();
            consumer
                .process_async(move |batch| async move {
                    seen.lock().unwrap().extend(batch.iter().map(|m| m.payload().to_vec()));
                    ok()
                })
                .await
                .unwrap();
            std::mem::take(&mut *payload.lock().unwrap())
        };
        let send = async {
            tokio::task::yield_now().await;
            producer.send_async(b"wake up").await.unwrap()
        };
        let (got, pos) = tokio::time::timeout(PATIENCE, async { tokio::join!(consume, send) }).await.expect("no hang");
        assert_eq!(got, [b"wake up".to_vec()]);
        assert_eq!(pos.offset, 0);
    });
}

#[test]
fn an_err_or_a_panic_in_the_future_commits_nothing_and_retries_then_dead_letters() {
    common::quiet_injected_panics("injected");
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["ok 0", "poison", "ok 2"]).unwrap();
    runtime().block_on(async {
        let mut consumer = t.queue.consumer_with("g", quick().max_deliveries(3).max_batch(3)).unwrap();
        // An Err: the whole batch fails.
        let r = consumer.process_async(|_b| async { Err(std::io::Error::other("database down")) }).await;
        assert!(matches!(r, Err(Error::Process(ref e)) if e.to_string() == "database down"), "{r:?}");
        assert_eq!(consumer.committed().unwrap(), [0]);
        // A panic inside the future, after an await.
        let r = consumer
            .process_async(|batch| async move {
                tokio::task::yield_now().await;
                assert_eq!(batch.len(), 1, "after a failure, one record at a time");
                panic!("injected panic in the future");
                #[allow(unreachable_code)]
                ok()
            })
            .await;
        assert!(matches!(r, Err(Error::ProcessPanicked(ref m)) if m == "injected panic in the future"), "{r:?}");
        // A panic in the closure itself, before it returns a future.
        let r = consumer
            .process_async(|_batch| -> std::future::Ready<Result<(), std::io::Error>> {
                panic!("injected panic in the closure")
            })
            .await;
        assert!(matches!(r, Err(Error::ProcessPanicked(ref m)) if m == "injected panic in the closure"), "{r:?}");
        // That was the third failed delivery of "ok 0" (max_deliveries): it
        // went to the dead-letter queue. "poison", delivered once in the
        // first batch, fails alone twice more and follows it; the rest
        // flows.
        let processed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut failures = 0;
        while consumer.committed().unwrap() != [3] {
            let seen = processed.clone();
            let r = consumer
                .process_async(move |batch| async move {
                    if batch.iter().any(|m| m.payload() == b"poison") {
                        return Err(std::io::Error::other("cannot parse"));
                    }
                    seen.lock().unwrap().extend(batch.iter().map(|m| m.payload().to_vec()));
                    ok()
                })
                .await;
            match r {
                Ok(_) => {}
                Err(Error::Process(_)) => failures += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(failures <= 2, "poison delivered more than max_deliveries times");
        }
        assert_eq!(failures, 2);
        let dead = t.queue.dead_letters("g", 10).unwrap();
        let dead: Vec<(&[u8], u32)> = dead.iter().map(|d| (&d.payload[..], d.deliveries)).collect();
        assert_eq!(dead, [(&b"ok 0"[..], 3), (&b"poison"[..], 3)]);
        assert_eq!(*processed.lock().unwrap(), [b"ok 2".to_vec()]);
    });
}

#[test]
fn process_async_can_be_spawned_with_the_consumer_moved_in() {
    fn send<T: Send>(_: &T) {}
    let t = TestQueue::new(small());
    t.queue.producer().send(b"x").unwrap();
    let mut consumer = t.queue.consumer_with("g", quick()).unwrap();
    {
        let future = consumer.process_async(|_batch| async { ok() });
        send(&future);
    }
    let n = runtime()
        .block_on(async move { tokio::spawn(async move { consumer.process_async(|_b| async { ok() }).await }).await })
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn send_async_under_sync_from_many_tasks_shares_syncs_with_blocking_senders() {
    const TASKS: usize = 32;
    const THREADS: usize = 4;
    const EACH: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q");
    drop(Queue::open_with(&path, small().durability(Durability::Sync)).unwrap());
    let disk = SimDisk::attach(tmp.path()).unwrap();
    let queue = Queue::open_existing(&path).unwrap();
    let before = disk.trace().len();
    let mut positions: Vec<Position> = std::thread::scope(|s| {
        let blocking: Vec<_> = (0..THREADS)
            .map(|th| {
                let producer = queue.producer();
                s.spawn(move || {
                    (0..EACH).map(|i| producer.send(format!("thread {th} {i}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let asynchronous = runtime().block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| {
                    let producer = queue.producer();
                    tokio::spawn(async move {
                        let mut positions = Vec::new();
                        for i in 0..EACH {
                            positions.push(producer.send_async(format!("task {task} {i}")).await.unwrap());
                        }
                        positions
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        });
        blocking.into_iter().flat_map(|h| h.join().unwrap()).chain(asynchronous).collect()
    });
    let sends = (TASKS + THREADS) * EACH;
    let syncs = disk.trace()[before..]
        .iter()
        .filter(|op| matches!(op.kind, OpKind::SyncFile | OpKind::SyncRange))
        .filter(|op| op.path.to_string_lossy().contains(".seg"))
        .count();
    assert!(syncs > 0 && syncs < sends, "{syncs} segment syncs for {sends} sends: no sync was shared");
    positions.sort_by_key(|p| p.offset);
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (0..sends as u64).collect::<Vec<_>>(), "every send acknowledged once, at its own offset");
    // Acknowledged under Sync: a power cut right now keeps every one.
    let point = disk.crash_point_now();
    drop(queue);
    let image = tempfile::tempdir().unwrap();
    disk.crash_image(point, durq::internals::sim::CrashMode::DropPending, 0, image.path()).unwrap();
    assert_eq!(disk.problems(), Vec::<String>::new());
    drop(disk);
    let reopened = Queue::open_existing(image.path().join("q")).unwrap();
    let mut c = reopened.consumer("check").unwrap();
    assert_eq!(common::drain(&mut c).len(), sends);
}

#[test]
fn a_failed_sync_fails_the_waiting_async_senders_and_stops_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q");
    drop(Queue::open_with(&path, small().durability(Durability::Sync)).unwrap());
    let disk = SimDisk::attach(tmp.path()).unwrap();
    let queue = Queue::open_existing(&path).unwrap();
    runtime().block_on(async {
        let producer = queue.producer();
        producer.send_async(b"before").await.unwrap();
        // A segment's sync is an msync of its dirty range.
        disk.fail_next(OpKind::SyncRange, libc::EIO, false);
        let r = producer.send_async(b"lost sync").await;
        assert!(r.is_err(), "a send whose sync failed was acknowledged");
        disk.heal();
        let again = producer.send_async(b"after").await;
        assert!(matches!(again, Err(Error::Stopped { .. })), "fail-stop: no retried sync; got {again:?}");
    });
}

#[test]
fn a_long_awaited_batch_keeps_its_slot_while_another_member_waits() {
    let t = TestQueue::new(small());
    t.queue.producer().send_batch(["slow 0", "slow 1"]).unwrap();
    let options = quick().lease_timeout(Duration::from_millis(200)).rebalance_interval(Duration::from_millis(20));
    let mut holder = t.queue.consumer_with("g", options.clone()).unwrap();
    let rt = runtime();
    let in_batch = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let holding = {
        let (in_batch, release) = (in_batch.clone(), release.clone());
        rt.spawn(async move {
            let n = holder
                .process_async(move |_batch| async move {
                    in_batch.notify_one();
                    release.notified().await;
                    ok()
                })
                .await;
            (n, holder)
        })
    };
    rt.block_on(in_batch.notified());
    // Another member tries for several lease timeouts, on a thread of its
    // own: the holder's slot must stay with the holder.
    let mut other = t.queue.consumer_with("g", options).unwrap();
    let mut stolen = 0;
    for _ in 0..10 {
        stolen += other.process_timeout(Duration::from_millis(100), |_b| ok()).unwrap();
    }
    assert_eq!(stolen, 0, "the other member was handed the batch being awaited");
    assert!(other.held_partitions().is_empty());
    release.notify_one();
    let (n, holder) = rt.block_on(holding).unwrap();
    assert_eq!(n.unwrap(), 2, "the holder's commit must stand (not fenced)");
    assert_eq!(holder.committed().unwrap(), [2]);
}

// ---- The SIGKILLed async consumer ----

const GROUP: &str = "work";
const RECORDS: usize = 30;
const MAX_BATCH: usize = 10;

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("async-consumer") => run_async_consumer(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// Processes with `process_async` on a multi-threaded runtime, one output
/// line per record after an `.await`, and SIGKILLs itself half way through
/// its second batch. Settings: `DURQ_DIR`, `DURQ_OUT`.
fn run_async_consumer() -> ! {
    let dir = procs::var("DURQ_DIR");
    let out_path = procs::var("DURQ_OUT");
    let queue = Queue::open_existing(&dir).unwrap_or_else(|e| fail(format_args!("open {dir}: {e}")));
    let mut consumer = procs::join(&queue, GROUP, ConsumerOptions::default().max_batch(MAX_BATCH))
        .unwrap_or_else(|e| fail(format_args!("join group: {e}")));
    runtime().block_on(async {
        for batch_number in 1.. {
            let out_path = out_path.clone();
            consumer
                .process_async(move |batch| async move {
                    let first = batch.iter().next().unwrap().position().offset;
                    say(format_args!("batch {first} {}", batch.len()));
                    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(out_path).unwrap();
                    for (i, m) in batch.iter().enumerate() {
                        if batch_number == 2 && i == batch.len() / 2 {
                            procs::sigkill_self();
                        }
                        tokio::task::yield_now().await;
                        out.write_all(format!("{}\n", String::from_utf8_lossy(m.payload())).as_bytes()).unwrap();
                    }
                    ok()
                })
                .await
                .unwrap_or_else(|e| fail(format_args!("process_async: {e}")));
        }
    });
    unreachable!("the child kills itself in its second batch")
}

#[test]
fn an_async_consumer_sigkilled_mid_batch_loses_nothing_and_its_batch_comes_again() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q");
    let out = tmp.path().join("processed.txt");
    {
        let q = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
        let ids: Vec<String> = (0..RECORDS).map(|i| format!("m-{i}")).collect();
        q.producer().send_batch(&ids).unwrap();
    }
    let mut child = procs::spawn(
        module_path!(),
        "async consumer",
        "async-consumer",
        &[("DURQ_DIR", path.display().to_string()), ("DURQ_OUT", out.display().to_string())],
    );
    child.wait_killed();
    let announced: Vec<&String> = child.lines.iter().filter(|l| l.starts_with("batch ")).collect();
    assert_eq!(announced, ["batch 0 10", "batch 10 10"], "{:?}", child.lines);

    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = procs::join(&queue, GROUP, ConsumerOptions::default().max_batch(MAX_BATCH)).unwrap();
    assert_eq!(consumer.committed().unwrap(), [10], "the first batch committed, the killed one not");
    let redelivered = Arc::new(AtomicUsize::new(0));
    let rest = runtime().block_on(async {
        let seen = redelivered.clone();
        let first = consumer
            .process_async(move |batch| async move {
                let m = batch.iter().next().unwrap();
                assert_eq!(m.position().offset, 10);
                seen.store(m.delivery_count() as usize, Ordering::SeqCst);
                ok()
            })
            .await
            .unwrap();
        assert_eq!(first, 1, "the killed batch comes again one record at a time");
        take_async(&mut consumer, RECORDS - 11).await
    });
    assert_eq!(redelivered.load(Ordering::SeqCst), 2);
    assert_eq!(rest.len(), RECORDS - 11);
    assert_eq!(consumer.committed().unwrap(), [RECORDS as u64]);

    // The child's work: every record before the kill exactly once, and the
    // killed batch's first half; nothing the parent then did was done twice
    // by the child except those.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *counts.entry(line).or_default() += 1;
    }
    let done_by_child: BTreeSet<String> = counts.keys().map(|s| s.to_string()).collect();
    let expected: BTreeSet<String> = (0..15).map(|i| format!("m-{i}")).collect();
    assert_eq!(done_by_child, expected);
    assert!(counts.values().all(|&c| c == 1), "the child did a record twice: {counts:?}");
    let mut by_parent: Vec<String> = rest.iter().map(|p| String::from_utf8(p.clone()).unwrap()).collect();
    by_parent.insert(0, "m-10".into());
    let by_parent: BTreeSet<String> = by_parent.into_iter().collect();
    let all: BTreeSet<String> = done_by_child.union(&by_parent).cloned().collect();
    assert_eq!(all.len(), RECORDS, "a record was lost");
}

/// The future `process_async` returns is `Send` when the closure's is:
/// checked at compile time.
#[allow(dead_code)]
fn process_async_is_send<'c, F: Future<Output = Result<(), std::io::Error>> + Send + 'static>(
    consumer: &'c mut Consumer,
    f: impl FnOnce(Batch) -> F + Send + 'c,
) -> impl Future<Output = durq::Result<usize>> + Send + 'c {
    consumer.process_async(f)
}

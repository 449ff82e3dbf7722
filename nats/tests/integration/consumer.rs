//! The consumer against a real server: a batch committed only after `Ok`
//! and delivered again after an error, in offset order per partition; a
//! member SIGKILLed mid-batch whose batch the survivor gets (and how long
//! the takeover took); a SIGSTOPped member fenced when it wakes; rebalancing
//! when a member joins and leaves; manual commit.
//!
//! The members that are killed or stopped are child processes: this test
//! binary run again (`--exact consumer::child_member`) with
//! `DURQ_NATS_CHILD_URL` set, which holds a batch and commits it when told
//! on stdin.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::NatsServer;
use durq::{ConsumerOptions, Options, Position};
use durq_nats::Queue;

const LEASE: Duration = Duration::from_secs(1);
const WITHIN: Duration = Duration::from_secs(30);

fn open(url: &str, name: &str, partitions: u32) -> Queue {
    Queue::open_with(&format!("{url}/{name}"), Options::default().partitions(partitions)).expect("open")
}

fn options() -> ConsumerOptions {
    ConsumerOptions::default().lease_timeout(LEASE).retry_backoff(vec![Duration::ZERO])
}

/// Consumes with `consumer` until `n` records were processed; returns them
/// as (position, payload, delivery count) in the order processed.
fn consume(consumer: &mut durq_nats::Consumer, n: usize) -> Vec<(Position, String, u32)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while seen.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records came: {seen:?}", seen.len());
        consumer
            .process_timeout(Duration::from_millis(200), |batch| {
                for m in batch {
                    seen.push((m.position(), String::from_utf8_lossy(m.payload()).into_owned(), m.delivery_count()));
                }
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
    }
    seen
}

#[test]
fn a_batch_is_committed_only_after_ok_and_comes_again_in_order_after_an_error() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "basic", 2);
    let producer = queue.producer();
    let mut sent = BTreeMap::new();
    for i in 0..20 {
        let payload = format!("record {i}");
        sent.insert(producer.send_keyed(format!("key {}", i % 4), &payload).unwrap(), payload);
    }
    let mut consumer = queue.consumer_with("billing", options()).expect("consumer");
    assert_eq!(consumer.held_partitions(), [0, 1], "the only member holds every slot");

    let mut failed = Vec::new();
    let err = consumer
        .process_timeout(WITHIN, |batch| {
            failed.extend(batch.iter().map(|m| (m.position(), m.delivery_count())));
            Err(std::io::Error::other("database down"))
        })
        .expect_err("the closure failed");
    assert!(matches!(err, durq::Error::Process(_)), "{err:?}");
    assert!(failed.iter().all(|(_, count)| *count == 1), "{failed:?}");
    assert_eq!(consumer.committed().unwrap(), [0, 0], "nothing committed after an error");

    let seen = consume(&mut consumer, 20);
    // Every record once, each partition in offset order from 0.
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (position, payload, _) in &seen {
        assert_eq!(sent.get(position), Some(payload), "{position:?}");
        by_partition.entry(position.partition).or_default().push(position.offset);
    }
    for (partition, offsets) in &by_partition {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &expected, "partition {partition} in order, each record once");
    }
    // The failed batch came again, its first record counted twice.
    let again = seen.iter().find(|(p, _, _)| *p == failed[0].0).expect("the failed record came again");
    assert_eq!(again.2, 2, "{again:?}");
    let counts: Vec<u64> = (0..2).map(|p| by_partition.get(&p).map_or(0, |o| o.len() as u64)).collect();
    assert_eq!(consumer.committed().unwrap(), counts);
    assert_eq!(consumer.process_timeout(Duration::from_millis(100), |_| Ok::<(), std::io::Error>(())).unwrap(), 0);

    // A second member of the group starts from the committed positions.
    drop(consumer);
    let mut again = queue.consumer_with("billing", options()).expect("consumer");
    producer.send("after").unwrap();
    let seen = consume(&mut again, 1);
    assert_eq!(seen[0].1, "after");
}

#[test]
fn a_delivery_dropped_uncommitted_comes_again_and_a_committed_one_does_not() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "manual", 1);
    queue.producer().send_batch(["a", "b", "c"]).unwrap();
    let mut consumer = queue.consumer_with("g", options()).expect("consumer");
    let delivery = consumer.poll(WITHIN).unwrap().expect("records");
    assert_eq!(delivery.len(), 3, "a batch takes the records the stream holds");
    drop(delivery);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let delivery = consumer.poll(WITHIN).unwrap().expect("the records again, one at a time");
        assert_eq!(delivery.len(), 1, "isolated after a failed delivery");
        seen.extend(delivery.messages().iter().map(|m| (m.payload().to_vec(), m.is_redelivery())));
        assert_eq!(delivery.commit().unwrap(), 1);
    }
    assert_eq!(seen, [(b"a".to_vec(), true), (b"b".to_vec(), true), (b"c".to_vec(), true)]);
    assert!(consumer.poll(Duration::from_millis(200)).unwrap().is_none());
    assert_eq!(consumer.committed().unwrap(), [3]);
}

/// The local queue's blocking calls just block when called from async code
/// (a mistake, but not a crash); the NATS backend's must do the same, not
/// panic with "Cannot start a runtime from within a runtime".
#[test]
fn blocking_calls_made_inside_an_async_runtime_block_instead_of_panicking() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "inside", 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let producer = queue.producer();
        assert_eq!(producer.send("in a task").unwrap().offset, 0);
        let mut consumer = queue.consumer_with("g", options()).expect("consumer");
        let mut seen = Vec::new();
        let n = consumer
            .process_timeout(WITHIN, |batch| {
                seen.extend(batch.iter().map(|m| m.payload().to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .expect("process inside a runtime");
        assert_eq!((n, seen), (1, vec![b"in a task".to_vec()]));
        assert_eq!(consumer.committed().unwrap(), [1]);
    });
}

#[test]
fn rebalancing_shares_the_slots_when_a_member_joins_and_gives_them_back_when_it_leaves() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "rebalance", 4);
    let first = queue.consumer_with("g", options()).expect("first member");
    assert_eq!(first.held_partitions(), [0, 1, 2, 3]);
    let stop = Arc::new(AtomicBool::new(false));
    let (report, held_by_first) = std::sync::mpsc::channel();
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut first = first;
            while !stop.load(Ordering::Relaxed) {
                first.process_timeout(Duration::from_millis(50), |_| Ok::<(), std::io::Error>(())).unwrap();
                report.send(first.held_partitions()).unwrap();
            }
        })
    };
    let wait_for = |want: usize| {
        let deadline = Instant::now() + WITHIN;
        loop {
            let held = held_by_first.recv_timeout(WITHIN).expect("the first member reports");
            if held.len() == want {
                return held;
            }
            assert!(Instant::now() < deadline, "first member still holds {held:?}");
        }
    };

    let joined = Instant::now();
    let mut second = queue.consumer_with("g", options()).expect("second member");
    let deadline = Instant::now() + WITHIN;
    while second.held_partitions().len() < 2 {
        assert!(Instant::now() < deadline, "the second member holds {:?}", second.held_partitions());
        second.process_timeout(Duration::from_millis(50), |_| Ok::<(), std::io::Error>(())).unwrap();
    }
    let kept = wait_for(2);
    println!("rebalanced 2 + 2 {:?} after the second member joined", joined.elapsed());
    let mut all: Vec<u32> = kept.iter().chain(&second.held_partitions()).copied().collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3], "each slot held once");

    let left = Instant::now();
    drop(second);
    wait_for(4);
    println!("the first member held all 4 again {:?} after the second left", left.elapsed());
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
}

/// A member in a child process: holds a batch, says so on stdout, and
/// commits it when a line comes on stdin. Not a test by itself: it returns
/// at once unless the parent set `DURQ_NATS_CHILD_URL`.
/// The writes to the group's bucket and to its marks' bucket so far: their
/// streams' last sequences.
fn bucket_writes(url: &str, queue: &str, group: &str) -> (u64, u64) {
    let bucket = durq_nats::group_names::group_bucket(queue, group).expect("a bucket name");
    let marks = durq_nats::group_names::marks_bucket(&bucket).expect("a marks bucket name");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url.trim_start_matches("nats://")).await.expect("raw connect");
        let jetstream = async_nats::jetstream::new(client);
        let mut last = [0; 2];
        for (bucket, last) in [bucket, marks].iter().zip(&mut last) {
            let mut stream = jetstream.get_stream(format!("KV_{bucket}")).await.expect("the bucket's stream");
            *last = stream.info().await.expect("stream info").state.last_sequence;
        }
        (last[0], last[1])
    })
}

#[test]
fn a_member_that_keeps_up_commits_a_batch_and_marks_the_next_in_one_write_and_gives_unhanded_marks_back() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "marks", 1);
    let producer = queue.producer();
    for i in 0..60 {
        producer.send(format!("record {i}")).unwrap();
    }
    // A lease long enough that no heartbeat writes during the test.
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(120)).max_batch(10);
    let mut consumer = queue.consumer_with("keeps-up", options.clone()).expect("consumer");
    let before = bucket_writes(&server.url(), "marks", "keeps-up");
    let seen = consume(&mut consumer, 50);
    let after = bucket_writes(&server.url(), "marks", "keeps-up");
    let (slot_writes, marks) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(seen.len(), 50, "five batches of 10");
    assert!(seen.iter().all(|(_, _, count)| *count == 1), "{seen:?}");
    // One synced write per batch: its commit and the next batch's mark (two
    // per batch would be 10). The member's first heartbeat (its timer's
    // first tick comes at once) rewrites the slot too, and on a loaded
    // machine it now and then lands after the count began (6 seen once in a
    // full run). The first batch's mark goes to the marks' bucket (in
    // memory), as does the mark of a batch the cursor had not fetched yet
    // when the batch before it was committed: also now and then.
    assert!((5..=6).contains(&slot_writes), "{slot_writes} synced writes to the slot for five batches");
    assert!((1..=2).contains(&marks), "{marks} marks in memory for five batches");

    // The sixth batch was marked by the fifth's commit and never handed
    // over: the member leaving gives the mark back, so the next member gets
    // it as a first delivery, in one batch (not one record at a time, as
    // records a predecessor was handed come).
    drop(consumer);
    let mut next = queue.consumer_with("keeps-up", options).expect("the next member");
    let again = consume(&mut next, 10);
    let offsets: Vec<u64> = again.iter().map(|(p, _, _)| p.offset).collect();
    assert_eq!(offsets, (50..60).collect::<Vec<_>>());
    assert!(again.iter().all(|(_, _, count)| *count == 1), "counted as delivered before: {again:?}");
}

#[test]
fn child_member() {
    let Ok(url) = std::env::var("DURQ_NATS_CHILD_URL") else { return };
    let queue = Queue::open(&url).expect("child: open");
    let mut consumer = queue.consumer_with("g", options()).expect("child: consumer");
    let delivery = consumer.poll(WITHIN).expect("child: poll").expect("child: a batch");
    let messages = delivery.messages();
    println!("HOLDING {} {}", messages[0].position().offset, messages.len());
    drop(messages);
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match delivery.commit() {
        Ok(n) => println!("COMMITTED {n}"),
        Err(durq::Error::Fenced { partition, epoch }) => println!("FENCED {partition} {epoch}"),
        Err(e) => println!("FAILED {e}"),
    }
    std::io::stdout().flush().unwrap();
}

/// A child member of group `g` of the queue at `url`, once it holds a batch:
/// the child, its stdout, and the batch's first offset and length.
fn spawn_holder(url: &str) -> (Child, BufReader<ChildStdout>, u64, usize) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "consumer::child_member", "--nocapture", "--test-threads=1"])
        .env("DURQ_NATS_CHILD_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a child member");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let line = read_line_with(&mut stdout, &["HOLDING"]);
    let mut words = line.split_whitespace().skip(1);
    let first = words.next().unwrap().parse().unwrap();
    let len = words.next().unwrap().parse().unwrap();
    (child, stdout, first, len)
}

/// The next line of the child's that has one of `words`, from that word on
/// (the test harness may print its own text before it on the same line).
fn read_line_with(stdout: &mut BufReader<ChildStdout>, words: &[&str]) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended before printing one of {words:?}");
        if let Some(at) = words.iter().filter_map(|w| line.find(w)).min() {
            return line[at..].to_owned();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

#[test]
fn a_member_killed_mid_batch_is_taken_over_and_its_batch_delivered_again() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/killed", server.url());
    let queue = open(&server.url(), "killed", 1);
    let sent: Vec<Position> = (0..10).map(|i| queue.producer().send(format!("r{i}")).unwrap()).collect();
    let (mut child, _stdout, first, len) = spawn_holder(&url);
    assert_eq!((first, len), (0, 10), "the child holds the whole batch");
    let mut survivor = queue.consumer_with("g", options()).expect("survivor");
    assert!(survivor.held_partitions().is_empty(), "the child holds the only slot");

    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    let mut takeover = None;
    let mut seen = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while seen.len() < sent.len() {
        assert!(Instant::now() < deadline, "the survivor got {seen:?}");
        survivor
            .process_timeout(Duration::from_millis(50), |batch| {
                takeover.get_or_insert_with(|| killed.elapsed());
                seen.extend(batch.iter().map(|m| (m.position(), m.delivery_count())));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    let takeover = takeover.unwrap();
    println!("takeover of a SIGKILLed member, lease 1 s: its batch redelivered {takeover:?} after the kill");
    assert_eq!(seen.iter().map(|(p, _)| *p).collect::<Vec<_>>(), sent, "every record, in order");
    assert_eq!(seen[0].1, 2, "the killed member's delivery counted");
    assert_eq!(survivor.committed().unwrap(), [10]);
}

#[test]
fn a_stopped_member_is_fenced_when_it_wakes_and_its_commit_moves_nothing() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/zombie", server.url());
    let queue = open(&server.url(), "zombie", 1);
    for i in 0..5 {
        queue.producer().send(format!("r{i}")).unwrap();
    }
    let (mut child, mut stdout, first, len) = spawn_holder(&url);
    assert_eq!((first, len), (0, 5));
    let mut survivor = queue.consumer_with("g", options()).expect("survivor");
    signal(&child, "STOP");
    let stopped = Instant::now();
    let seen = consume(&mut survivor, 5);
    println!("takeover of a SIGSTOPped member, lease 1 s: {:?}", stopped.elapsed());
    assert_eq!(seen.iter().map(|(p, _, _)| p.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(survivor.committed().unwrap(), [5]);
    queue.producer().send("r5").unwrap();

    signal(&child, "CONT");
    child.stdin.as_mut().unwrap().write_all(b"commit\n").unwrap();
    let outcome = read_line_with(&mut stdout, &["FENCED", "COMMITTED", "FAILED"]);
    assert!(outcome.starts_with("FENCED 0 "), "the woken member's commit: {outcome}");
    child.wait().unwrap();
    // Its commit moved nothing: the survivor's stands, and the next record
    // is the survivor's.
    assert_eq!(survivor.committed().unwrap(), [5]);
    let next = consume(&mut survivor, 1);
    assert_eq!(next[0].0.offset, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_async_commits_after_ok_redelivers_after_an_error_or_a_dropped_future() {
    let server = NatsServer::start().await;
    let queue = Queue::open_async(&format!("{}/async", server.url()), Options::default()).await.expect("open");
    queue.producer().send_async("order 1").await.unwrap();
    let mut consumer = queue.consumer_with("billing", options()).expect("a consumer opens inside a runtime");

    let err = consumer
        .process_async(|batch| async move {
            assert_eq!(batch.iter().next().unwrap().delivery_count(), 1);
            Err(std::io::Error::other("database down"))
        })
        .await
        .expect_err("failed");
    assert!(matches!(err, durq::Error::Process(_)), "{err:?}");

    // Dropped while the batch is out: nothing committed, the batch comes again.
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        consumer.process_async(|_batch| async move {
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        }),
    )
    .await;
    assert!(dropped.is_err(), "the future was dropped mid-batch");

    // The consumer moves into a spawned task; the batch comes a third time.
    let task = tokio::spawn(async move {
        let mut counts = Vec::new();
        let n = consumer
            .process_async(|batch| {
                counts.extend(batch.iter().map(|m| (m.payload().to_vec(), m.delivery_count())));
                async move { Ok::<(), std::io::Error>(()) }
            })
            .await
            .unwrap();
        (n, counts, consumer.committed().unwrap())
    });
    let (n, counts, committed) = task.await.unwrap();
    assert_eq!((n, counts, committed), (1, vec![(b"order 1".to_vec(), 3)], vec![1]));
}

#[test]
fn a_member_judges_another_by_the_lease_that_one_announced_not_by_its_own() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "leases", 2);
    // Heartbeats every 2 s: a 1 s lease would see its keys lapse between two.
    let long = ConsumerOptions::default().lease_timeout(Duration::from_secs(6));
    let mut first = queue.consumer_with("g", long).expect("the long-leased member");
    assert_eq!(first.held_partitions(), [0, 1]);
    let mut second = queue.consumer_with("g", options()).expect("a member with a 1 s lease");
    // The fair share gives the second member a slot, which the first gives
    // back only between its batches: it makes none here, so the slot stays
    // held by a live member, and the second must not take it.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        second.process_timeout(Duration::from_millis(100), |_| Ok::<(), std::io::Error>(())).expect("second");
        assert!(
            second.held_partitions().is_empty(),
            "took {:?} from a live member {:?} after it joined",
            second.held_partitions(),
            watched.elapsed()
        );
    }
    // One record in each partition: the first member gives one slot back
    // at its first look (the fair share), and keeps the other.
    let producer = queue.producer();
    let partitions: Vec<u32> = (0..2).map(|_| producer.send("r").unwrap().partition).collect();
    assert_eq!(partitions, [0, 1]);
    let mut n = 0;
    let deadline = Instant::now() + WITHIN;
    while n == 0 {
        assert!(Instant::now() < deadline, "the first member never got its record");
        n = first
            .process_timeout(Duration::from_millis(100), |_| Ok::<(), std::io::Error>(()))
            .expect("the first member was never fenced");
    }
}

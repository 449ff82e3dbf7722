//! The mark of a batch handed to a member that waited: a put into the
//! group's marks bucket (memory storage), flushed into the connection's
//! socket before the hand-over, not awaited, and not a write of the slot
//! (whose writes are synced): the slot moves only at the commit. A lone
//! record after a commit needs no mark at all: the commit stood one for it
//! (consumer.rs, "Marking"); a member killed holding it is counted exactly,
//! one killed waiting for it once too often. A member stalled
//! right after the hand-over (its writes held in a proxy, `common::proxy`)
//! is fenced at its commit, the batch goes to the new holder, and its late
//! mark counts for nobody. And members SIGKILLed inside `process`, right
//! after the hand-over, each leave their mark on the server: the
//! successor's count says so.
//!
//! The members that die are child processes: this test binary run again
//! (`--exact mark::child_member_dying_in_process`) with
//! `DURQ_NATS_DYING_CHILD_URL` set.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::NatsServer;
use crate::common::proxy::{Hold, Proxy};
use async_nats::jetstream::stream::StorageType;
use durq::{ConsumerOptions, Options};
use durq_nats::{Consumer, Progress, Queue, Slots, connect};

const WITHIN: Duration = Duration::from_secs(30);

fn open(url: &str, name: &str) -> Queue {
    Queue::open_with(&format!("{url}/{name}"), Options::default().partitions(1)).expect("open")
}

/// What the member on its thread reports: the batch it was handed (offsets
/// and delivery counts), then what `process` returned.
#[derive(Debug)]
enum Event {
    HandedOver(Vec<(u64, u32)>),
    Returned(durq::Result<usize>),
}

/// Runs one `process` of `member` on a thread. The closure reports its
/// batch and returns `Ok` once the test sends on the returned sender.
fn process_on_a_thread(mut member: Consumer) -> (mpsc::Receiver<Event>, mpsc::Sender<()>, JoinHandle<Consumer>) {
    let (events, event) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let returned = member.process(|batch| {
            let seen = batch.iter().map(|m| (m.position().offset, m.delivery_count())).collect();
            events.send(Event::HandedOver(seen)).unwrap();
            wait.recv().unwrap();
            Ok::<(), std::io::Error>(())
        });
        events.send(Event::Returned(returned)).unwrap();
        member
    });
    (event, go, worker)
}

/// The batch handed over, or a failure naming what came instead.
fn handed_over(events: &mpsc::Receiver<Event>, what: &str) -> Vec<(u64, u32)> {
    match events.recv_timeout(WITHIN) {
        Ok(Event::HandedOver(batch)) => batch,
        other => panic!("{what}: the batch should be handed over before its mark is acknowledged, got {other:?}"),
    }
}

fn returned(events: &mpsc::Receiver<Event>) -> durq::Result<usize> {
    match events.recv_timeout(WITHIN) {
        Ok(Event::Returned(returned)) => returned,
        other => panic!("process should have returned, got {other:?}"),
    }
}

/// Sends and processes a first record, so that `member`'s cursor is open and
/// caught up before its connection is stalled.
fn warm_up(member: &mut Consumer, queue: &Queue) {
    queue.producer().send("r0").unwrap();
    let deadline = Instant::now() + WITHIN;
    while member.process_timeout(Duration::from_millis(100), |_| Ok::<(), std::io::Error>(())).expect("warm up") == 0 {
        assert!(Instant::now() < deadline, "the first record never came");
    }
}

/// The slot of partition 0 of group `g` of `queue` and its last mark, read
/// on a connection of its own, and the storage of the marks' bucket.
fn stored(url: &str, queue: &str) -> (durq_nats::SlotState, Option<durq_nats::Mark>, StorageType) {
    let bucket = durq_nats::group_names::group_bucket(queue, "g").expect("a bucket name");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let client = connect(url).await.expect("connect");
        let slots = Slots::open(&client, &bucket, 1).await.expect("the group's bucket");
        let key = durq_nats::group_names::slot_key(0);
        let slot = slots.read(&key).await.expect("read the slot").expect("a written slot");
        let mark = slots.read_mark(&key).await.expect("read the mark");
        let raw = async_nats::jetstream::new(async_nats::connect(url).await.expect("raw connect"));
        let mut stream = raw.get_stream(format!("KV_{}", slots.marks_bucket())).await.expect("the marks' stream");
        let storage = stream.info().await.expect("its info").config.storage;
        (slot, mark, storage)
    })
}

#[test]
fn an_idle_members_mark_goes_to_memory_before_the_hand_over_and_the_slot_moves_only_at_the_commit() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "early");
    // A lease long enough that no heartbeat writes during the test.
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(120));
    let mut member = queue.consumer_with("g", options).expect("member");
    warm_up(&mut member, &queue);
    let epoch = stored(&server.url(), "early").0.epoch().expect("held");
    for i in 1..4 {
        queue.producer().send(format!("r{i}")).unwrap();
    }

    let (events, go, worker) = process_on_a_thread(member);
    let batch = handed_over(&events, "an idle member");
    assert_eq!(batch[0], (1, 1), "the record after the first, first delivery: {batch:?}");
    let end = 1 + batch.len() as u64;
    // The mark was flushed before the hand-over, not awaited: the server
    // stores it at its own pace.
    let deadline = Instant::now() + WITHIN;
    let (slot, mark, storage) = loop {
        let seen = stored(&server.url(), "early");
        if seen.1.is_some_and(|m| m.progress.checkpoint == 1) {
            break seen;
        }
        assert!(Instant::now() < deadline, "the mark never reached the marks bucket: {:?}", seen.1);
        std::thread::sleep(Duration::from_millis(10));
    };
    let marked = Progress { checkpoint: 1, delivered_end: end, attempts: 1 };
    assert_eq!(mark, Some(durq_nats::Mark { epoch, progress: marked }));
    assert_eq!(storage, StorageType::Memory, "a mark is not synced");
    let p = slot.progress();
    assert_eq!(
        (p.checkpoint, p.delivered_end, p.attempts),
        (1, 2, 1),
        "the slot holds the warm-up's commit only, with the mark it stood for one record"
    );

    go.send(()).unwrap();
    assert_eq!(returned(&events).expect("the commit"), batch.len());
    let member = worker.join().unwrap();
    assert_eq!(member.committed().unwrap(), [end]);
    assert_eq!(stored(&server.url(), "early").0.checkpoint(), end);
}

#[test]
fn a_member_stalled_after_the_hand_over_is_fenced_at_its_commit_and_its_late_mark_counts_for_nobody() {
    let server = NatsServer::start_blocking();
    let proxy = Proxy::start(&server.url());
    let direct = open(&server.url(), "refused");
    let behind_proxy = open(&proxy.url(), "refused");
    // The successor judges the member by the lease it announced: 2 s, its
    // heartbeats held in the proxy with its other writes.
    let mut member = behind_proxy
        .consumer_with("g", ConsumerOptions::default().lease_timeout(Duration::from_secs(2)))
        .expect("member");
    warm_up(&mut member, &direct);
    for i in 1..4 {
        direct.producer().send(format!("r{i}")).unwrap();
    }

    // The mark, and everything after it, stays in the proxy: to the others
    // the member went silent.
    proxy.hold(Hold::KvWrites);
    let (events, go, worker) = process_on_a_thread(member);
    let batch = handed_over(&events, "writes held");
    assert_eq!(batch[0], (1, 1));
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(1)).retry_backoff(vec![Duration::ZERO]);
    let mut successor = direct.consumer_with("g", options).expect("successor");
    let mut seen = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "the successor got only {seen:?}");
        successor
            .process_timeout(Duration::from_millis(100), |b| {
                seen.extend(b.iter().map(|m| m.position().offset));
                Ok::<(), std::io::Error>(())
            })
            .expect("the successor's process");
    }
    assert_eq!(seen, [1, 2, 3], "the stalled member's batch, taken over");

    // The mark reaches the server now, after the successor's writes: it
    // names the old holding, and the commit after it is refused.
    proxy.release();
    go.send(()).unwrap();
    match returned(&events) {
        Err(durq::Error::Fenced { partition: 0, .. }) => {}
        other => panic!("the commit of a member taken over: {other:?}"),
    }
    drop(worker.join().unwrap());
    assert_eq!(successor.committed().unwrap(), [4], "the successor's commit stands");
    direct.producer().send("r4").unwrap();
    let next = next_batch(&mut successor);
    assert_eq!(next, [(4, 1)], "the next record, delivered once: the late mark counted for nobody");
}

/// A member in a child process that SIGKILLs itself as soon as `process`
/// hands it a batch; with `DURQ_NATS_DYING_CHILD_AT_DIE` set, only a batch
/// holding a record `die`: the others it commits, printing `COMMITTED`
/// and the next offset. Not a test by itself: it returns at once unless
/// the parent set `DURQ_NATS_DYING_CHILD_URL`.
#[test]
fn child_member_dying_in_process() {
    let Ok(url) = std::env::var("DURQ_NATS_DYING_CHILD_URL") else { return };
    let only_at_die = std::env::var_os("DURQ_NATS_DYING_CHILD_AT_DIE").is_some();
    let queue = Queue::open(&url).expect("child: open");
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(1));
    let mut consumer = queue.consumer_with("g", options).expect("child: consumer");
    loop {
        consumer
            .process(|batch| {
                if !only_at_die || batch.iter().any(|m| m.payload() == b"die") {
                    println!("HANDED {}", batch[0].position().offset);
                    std::io::stdout().flush().unwrap();
                    // SAFETY: kill(2) on this process's own pid with a valid
                    // signal number; it touches no memory of this process.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                Ok::<(), std::io::Error>(())
            })
            .expect("child: process");
        println!("COMMITTED {}", consumer.committed().expect("child: committed")[0]);
        std::io::stdout().flush().unwrap();
    }
}

/// A child member (`child_member_dying_in_process`) on `url`, dying only
/// at a record `die`, and its output, line by line.
fn child_dying_at_die(url: &str) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mark::child_member_dying_in_process", "--nocapture", "--test-threads=1"])
        .env("DURQ_NATS_DYING_CHILD_URL", url)
        .env("DURQ_NATS_DYING_CHILD_AT_DIE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a child member");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads `lines` up to one that ends with `expected`.
fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, expected: &str) {
    for line in lines.by_ref() {
        // The test harness prints the test's name before the first line.
        if line.expect("the child's output").ends_with(expected) {
            return;
        }
    }
    panic!("the child ended before it printed {expected:?}");
}

/// The first batch a new member of group `g` of `queue` gets, as
/// [`next_batch`]; the member leaves after it.
fn successors_first_batch(queue: &Queue) -> Vec<(u64, u32)> {
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(1));
    next_batch(&mut queue.consumer_with("g", options).expect("successor"))
}

/// The next batch `member` processes and commits: (offset, delivery count)
/// of each record.
fn next_batch(member: &mut Consumer) -> Vec<(u64, u32)> {
    let mut batch = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while batch.is_empty() {
        assert!(Instant::now() < deadline, "no batch came within {WITHIN:?}");
        member
            .process_timeout(Duration::from_millis(100), |b| {
                batch.extend(b.iter().map(|m| (m.position().offset, m.delivery_count())));
                Ok::<(), std::io::Error>(())
            })
            .expect("the member's process");
    }
    batch
}

#[test]
fn a_lone_record_after_a_commit_goes_under_its_standing_mark_counted_exactly_or_once_too_often_if_never_handed() {
    let server = NatsServer::start_blocking();

    // Killed holding the record: the standing mark counted it, no other
    // mark was put, and the successor's delivery is its second.
    let queue = open(&server.url(), "standing");
    let (mut child, mut lines) = child_dying_at_die(&format!("{}/standing", server.url()));
    queue.producer().send("ok").unwrap();
    wait_for_line(&mut lines, "COMMITTED 1");
    queue.producer().send("die").unwrap();
    wait_for_line(&mut lines, "HANDED 1");
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let (slot, mark, _) = stored(&server.url(), "standing");
    let p = slot.progress();
    assert_eq!((p.checkpoint, p.delivered_end, p.attempts), (1, 2, 1), "the commit's standing mark");
    assert!(mark.is_none_or(|m| m.progress.checkpoint == 0), "no mark was put for the lone record: {mark:?}");
    assert_eq!(successors_first_batch(&queue), [(1, 2)], "handed once before, under the standing mark");

    // Killed waiting: the record it never had counts one delivery too many,
    // the one after it none.
    let queue = open(&server.url(), "idle");
    let (mut child, mut lines) = child_dying_at_die(&format!("{}/idle", server.url()));
    queue.producer().send("ok").unwrap();
    wait_for_line(&mut lines, "COMMITTED 1");
    child.kill().expect("SIGKILL the waiting child");
    child.wait().unwrap();
    queue.producer().send("late").unwrap();
    assert_eq!(successors_first_batch(&queue), [(1, 2)], "one delivery too many, alone in its batch");
    queue.producer().send("later").unwrap();
    // A member that leaves gives back the standing mark of its commit.
    assert_eq!(successors_first_batch(&queue), [(2, 1)], "the record after it, counted once");
}

#[test]
fn members_sigkilled_right_after_the_hand_over_leave_their_marks_on_the_server() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/dying", server.url());
    let queue = open(&server.url(), "dying");
    for i in 0..5 {
        queue.producer().send(format!("r{i}")).unwrap();
    }
    const KILLS: u32 = 3;
    for _ in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "mark::child_member_dying_in_process", "--nocapture", "--test-threads=1"])
            .env("DURQ_NATS_DYING_CHILD_URL", &url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child member");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut handed = false;
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            handed |= line.contains("HANDED 0");
            line.clear();
        }
        let status = child.wait().unwrap();
        assert!(handed, "the child was handed the batch at offset 0 before it died ({status})");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    }
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(1));
    let mut successor = queue.consumer_with("g", options).expect("successor");
    let mut first = None;
    let deadline = Instant::now() + WITHIN;
    while first.is_none() {
        assert!(Instant::now() < deadline, "the successor got nothing");
        successor
            .process_timeout(Duration::from_millis(100), |b| {
                first = Some((b[0].position().offset, b[0].delivery_count()));
                Ok::<(), std::io::Error>(())
            })
            .expect("the successor's process");
    }
    assert_eq!(first, Some((0, KILLS + 1)), "each killed member's delivery counted, then the successor's");
}

#[test]
fn a_member_that_leaves_takes_its_unused_standing_mark_back() {
    let server = NatsServer::start_blocking();
    let queue = open(&server.url(), "leaving");
    let mut member = queue.consumer("g").expect("member");
    warm_up(&mut member, &queue);
    let p = stored(&server.url(), "leaving").0.progress();
    assert_eq!((p.checkpoint, p.delivered_end, p.attempts), (1, 2, 1), "the warm-up's commit stood a mark");
    drop(member);
    let p = stored(&server.url(), "leaving").0.progress();
    assert_eq!((p.checkpoint, p.delivered_end, p.attempts), (1, 1, 0), "the release took it back");
    queue.producer().send("r1").unwrap();
    assert_eq!(successors_first_batch(&queue), [(1, 1)], "a first delivery, counted once");
}

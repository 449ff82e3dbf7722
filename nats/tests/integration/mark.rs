//! The mark of a batch sent ahead of its acknowledgement: a member hands the
//! batch over once the mark is written into its connection's socket, and
//! awaits the acknowledgement only before the batch's commit. Shown with a
//! proxy that stalls the member's connection at the instant of the mark
//! (`common::proxy`): the batch is out while the mark's acknowledgement is
//! held back, and committed once it came; a mark the server refuses
//! (another member took the slot over meanwhile) fails the commit with
//! `Fenced`. And members SIGKILLed inside `process`, right after the
//! hand-over, each leave their mark on the server: the successor's count
//! says so.
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
use durq::{ConsumerOptions, Options};
use durq_nats::{Consumer, Queue, Slots, connect};

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

/// The slot of partition 0 of group `g` of `queue`, read on a connection of
/// its own.
fn stored_slot(url: &str, queue: &str) -> durq_nats::SlotState {
    let bucket = durq_nats::group_names::group_bucket(queue, "g").expect("a bucket name");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let client = connect(url).await.expect("connect");
        let slots = Slots::open(&client, &bucket, 1).await.expect("the group's bucket");
        slots.read(&durq_nats::group_names::slot_key(0)).await.expect("read the slot").expect("a written slot")
    })
}

#[test]
fn a_batch_is_handed_over_before_its_marks_acknowledgement_and_committed_once_it_came() {
    let server = NatsServer::start_blocking();
    let proxy = Proxy::start(&server.url());
    let direct = open(&server.url(), "early");
    let behind_proxy = open(&proxy.url(), "early");
    // A lease long enough that no heartbeat writes during the test.
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(120));
    let mut member = behind_proxy.consumer_with("g", options).expect("member");
    warm_up(&mut member, &direct);
    for i in 1..4 {
        direct.producer().send(format!("r{i}")).unwrap();
    }

    proxy.hold(Hold::KvAcks);
    let (events, go, worker) = process_on_a_thread(member);
    let batch = handed_over(&events, "acknowledgements held");
    assert_eq!(batch[0], (1, 1), "the record after the first, first delivery: {batch:?}");
    // The server stored the mark and acknowledged it; the acknowledgement
    // is held in the proxy while the batch is out.
    let deadline = Instant::now() + WITHIN;
    while proxy.held_total() == 0 {
        assert!(Instant::now() < deadline, "the server never acknowledged the mark");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stored = stored_slot(&server.url(), "early").progress();
    let end = 1 + batch.len() as u64;
    assert_eq!((stored.checkpoint, stored.delivered_end, stored.attempts), (1, end, 1));

    proxy.release();
    go.send(()).unwrap();
    assert_eq!(returned(&events).expect("the commit after the mark's acknowledgement"), batch.len());
    let member = worker.join().unwrap();
    assert_eq!(member.committed().unwrap(), [end]);
    assert_eq!(stored_slot(&server.url(), "early").checkpoint(), end);
}

#[test]
fn a_mark_refused_after_the_hand_over_fails_the_commit_with_fenced_and_the_batch_goes_to_the_new_holder() {
    let server = NatsServer::start_blocking();
    let proxy = Proxy::start(&server.url());
    let direct = open(&server.url(), "refused");
    let behind_proxy = open(&proxy.url(), "refused");
    let mut member = behind_proxy
        .consumer_with("g", ConsumerOptions::default().lease_timeout(Duration::from_secs(120)))
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

    // The mark reaches the server now, after the successor's writes: it is
    // refused, and so is the batch's commit.
    proxy.release();
    go.send(()).unwrap();
    match returned(&events) {
        Err(durq::Error::Fenced { partition: 0, .. }) => {}
        other => panic!("the commit of a batch whose mark was refused: {other:?}"),
    }
    drop(worker.join().unwrap());
    assert_eq!(successor.committed().unwrap(), [4], "the successor's commit stands");
    direct.producer().send("r4").unwrap();
    let mut next = Vec::new();
    while next.is_empty() {
        assert!(Instant::now() < deadline, "r4 never came to the successor");
        successor
            .process_timeout(Duration::from_millis(100), |b| {
                next.extend(b.iter().map(|m| m.position().offset));
                Ok::<(), std::io::Error>(())
            })
            .expect("the successor's process");
    }
    assert_eq!(next, [4]);
}

/// A member in a child process that SIGKILLs itself as soon as `process`
/// hands it a batch. Not a test by itself: it returns at once unless the
/// parent set `DURQ_NATS_DYING_CHILD_URL`.
#[test]
fn child_member_dying_in_process() {
    let Ok(url) = std::env::var("DURQ_NATS_DYING_CHILD_URL") else { return };
    let queue = Queue::open(&url).expect("child: open");
    let options = ConsumerOptions::default().lease_timeout(Duration::from_secs(1));
    let mut consumer = queue.consumer_with("g", options).expect("child: consumer");
    consumer
        .process(|batch| {
            println!("HANDED {}", batch[0].position().offset);
            std::io::stdout().flush().unwrap();
            // SAFETY: kill(2) on this process's own pid with a valid signal
            // number; it touches no memory of this process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            Ok::<(), std::io::Error>(())
        })
        .expect("child: process");
    unreachable!("the child killed itself inside process");
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

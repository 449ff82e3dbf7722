//! Several processes sharing one queue at once.
//!
//! The story: the test re-runs its own binary as child processes
//! (`current_exe() --exact child`, with `DURQ_CHILD_ROLE` naming the role;
//! see `common::procs`), which talk back in `@@durq`-marked lines on stdout.
//! Three producer children open the same queue, wait for a `go` on stdin so
//! they really append at the same time, and send 3,000 records each,
//! printing `ack <partition> <offset> <id>` per acknowledged send. A reader
//! child consumes concurrently in yet another process and checks every
//! record it is handed as it goes (dense offsets, intact payload, no
//! duplicate, each writer in order); the parent then reads the whole queue
//! again and checks every acknowledged record is where its `send` said. This
//! runs under `Sync` (cross-process group commit through the shared
//! `durable` watermark) and `Buffered` (readers see records the moment they
//! are published, so a torn read would show at once).
//!
//! Last, a consumer child blocks in `process` with no timeout and the parent
//! sends: the futex in the shared control file must wake it across the
//! process boundary. Its fallback re-check every 100 ms would also deliver,
//! so the test measures the delay and demands it be well below that.

use crate::common;

use std::time::{Duration, Instant};

use common::procs::{self, Ledger, Proc, fail, parse_payload, payload, say, spawn_producer};
use durq::{Durability, Queue};

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("producer") => procs::run_producer(),
        Some("reader") => run_reader(),
        Some("waiter") => run_waiter(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// Reads `DURQ_EXPECT` records of the queue at `DURQ_DIR` as group
/// `reader`, checking each with a [`Ledger`] (a failed check panics, and the
/// child exits non-zero), and prints `got <partition> <offset> <id>` for each.
fn run_reader() -> ! {
    let dir = procs::var("DURQ_DIR");
    let expect = procs::num("DURQ_EXPECT") as usize;
    let queue = Queue::open_existing(&dir).unwrap_or_else(|e| fail(format_args!("open {dir}: {e}")));
    let mut ledger = Ledger::new(queue.config().partitions);
    let mut consumer = queue.consumer("reader").unwrap_or_else(|e| fail(format_args!("join: {e}")));
    say("ready");
    while ledger.seen.len() < expect {
        consumer
            .process(|batch| {
                for m in batch {
                    ledger.absorb(m.position(), m.payload());
                    let id = parse_payload(m.payload()).expect("checked by absorb");
                    say(format_args!("got {} {} {id}", m.position().partition, m.position().offset));
                }
                Ok::<(), std::io::Error>(())
            })
            .unwrap_or_else(|e| fail(format_args!("process: {e}")));
    }
    say("done");
    std::process::exit(0)
}

/// Blocks in `process` (no timeout) `DURQ_EXPECT` times, printing `waiting`
/// before each call and `got <id>` as soon as a record arrives.
fn run_waiter() -> ! {
    let dir = procs::var("DURQ_DIR");
    let queue = Queue::open_existing(&dir).unwrap_or_else(|e| fail(format_args!("open {dir}: {e}")));
    let mut consumer = queue.consumer("waiter").unwrap_or_else(|e| fail(format_args!("join: {e}")));
    for _ in 0..procs::num("DURQ_EXPECT") {
        say("waiting");
        consumer
            .process(|batch| {
                for m in batch {
                    say(format_args!("got {}", parse_payload(m.payload()).unwrap_or_else(|e| fail(e))));
                }
                Ok::<(), std::io::Error>(())
            })
            .unwrap_or_else(|e| fail(format_args!("process: {e}")));
    }
    say("done");
    std::process::exit(0)
}

fn producers_at_once(durability: Durability, per_producer: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let q = Queue::open_with(&path, common::small().durability(durability)).expect("create");
    // Register the audit group now: retention keeps every segment a
    // registered group has not passed, so the audit can read from offset 0.
    drop(q.consumer("audit").expect("register the audit group"));
    drop(q);
    let started = Instant::now();
    let mut reader = procs::spawn(
        module_path!(),
        "reader",
        "reader",
        &[("DURQ_DIR", path.display().to_string()), ("DURQ_EXPECT", (3 * per_producer).to_string())],
    );
    reader.wait_line("ready");
    let mut producers: Vec<Proc> =
        (0..3).map(|i| spawn_producer(module_path!(), &path, &format!("p{i}"), per_producer, i, 400, true)).collect();
    for p in &mut producers {
        p.wait_line("ready");
    }
    for p in &mut producers {
        p.tell("go");
    }
    let mut ledger = Ledger::new(1);
    for p in &mut producers {
        p.finish();
        ledger.ack_lines(&p.lines);
        assert_eq!(p.acks().count() as u64, per_producer, "{} acknowledged every send", p.name);
    }
    let send_time = started.elapsed();
    reader.finish();
    let q = Queue::open_existing(&path).expect("open");
    let read = ledger.drain(&mut q.consumer("audit").expect("audit"), Duration::from_millis(50));
    assert_eq!(read as u64, 3 * per_producer, "records in the queue");
    ledger.check_acked();
    assert_eq!(q.offsets(0).unwrap(), (0, 3 * per_producer));
    // The concurrent reader in its own process saw the very same log.
    let mut got = 0;
    for l in &reader.lines {
        if let Some(rest) = l.strip_prefix("got ") {
            let mut w = rest.split(' ');
            let offset: u64 = w.nth(1).unwrap().parse().unwrap();
            let id = w.next().unwrap();
            assert_eq!(ledger.seen[id].offset, offset, "reader process saw {id} elsewhere");
            got += 1;
        }
    }
    assert_eq!(got, 3 * per_producer, "reader process records");
    // Producers really interleaved: the log is not three runs one after another.
    let mut writers: Vec<(u64, String)> =
        ledger.seen.iter().map(|(id, pos)| (pos.offset, procs::split_id(id).0.to_owned())).collect();
    writers.sort();
    let switches = writers.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert!(switches > 2, "producers never overlapped ({switches} switches)");
    assert!(common::segments(&path, 0).len() > 3, "segments rolled");
    eprintln!(
        "3 producer processes x {per_producer} under {durability}: sent in {send_time:?}, {switches} writer switches, total {:?}",
        started.elapsed()
    );
}

#[test]
fn three_producer_processes_sync_every_acknowledged_record_once_and_intact() {
    producers_at_once(Durability::Sync, 3000);
}

#[test]
fn three_producer_processes_buffered_every_acknowledged_record_once_and_intact() {
    producers_at_once(Durability::Buffered, 10_000);
}

#[test]
fn blocked_consumer_process_is_woken_by_another_process_sending() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    let q = Queue::open_with(&path, durq::Options::default()).expect("create");
    let producer = q.producer();
    let pings = 20;
    let mut waiter = procs::spawn(
        module_path!(),
        "waiter",
        "waiter",
        &[("DURQ_DIR", path.display().to_string()), ("DURQ_EXPECT", pings.to_string())],
    );
    let mut delays = Vec::new();
    for i in 0..pings {
        waiter.wait_line("waiting");
        // Give it time to go to sleep on the futex.
        std::thread::sleep(Duration::from_millis(20));
        let id = format!("ping-{i}");
        producer.send(payload(&id, 0)).expect("send");
        let sent = Instant::now();
        waiter.wait_for(Duration::from_secs(5), |l| l == format!("got {id}"));
        delays.push(sent.elapsed());
    }
    waiter.finish();
    delays.sort();
    let median = delays[delays.len() / 2];
    eprintln!("cross-process wake-up delays: median {median:?}, max {:?}", delays[delays.len() - 1]);
    // Without a working wake-up the waiter would only notice on its 100 ms
    // re-check, about 80 ms after each send here.
    assert!(median < Duration::from_millis(40), "waiter not woken by the send: median delay {median:?}");
}

//! Consumers SIGKILLed inside `process` lose nothing, and redeliver only the
//! batch that was in flight.
//!
//! The story: the test re-runs its own binary as a child consumer process
//! (`current_exe() --exact child`, `DURQ_CHILD_ROLE=consumer`; see
//! `common::procs`). The child joins group `work` with `max_batch` 10 and,
//! inside its `process` closure, first prints `batch <partition> <first>
//! <last> <delivery count of the first>` to the parent, then appends one line `<id> <partition> <offset>`
//! per record to an output file (`O_APPEND`, one `write` per line; SIGKILL
//! keeps the page cache, so no sync is needed). That file is the "work done":
//! a record processed twice shows up twice.
//!
//! The child dies by SIGKILL, either by its own hand at a chosen point
//! (`before` writing the batch's output, in the `mid`dle of it, or `after` it
//! but before the closure returns) or from the parent at a random moment. A
//! fresh child of the same group then carries on. At the end the multiset of
//! processed ids must be every id at least once, and an id may appear more
//! than once only because a kill caught it in the in-flight batch: the group
//! never skips work, and never redoes committed work. After each kill the
//! parent also opens the group itself and checks its committed offsets: every
//! batch before the in-flight one is committed, the in-flight one is
//! committed wholly or not at all.

use crate::common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::procs::{self, Proc, Rng, fail, parse_payload, payload, say};
use durq::{ConsumerOptions, Durability, Position, Queue};

const GROUP: &str = "work";
const MAX_BATCH: usize = 10;

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("consumer") => run_consumer(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// The consumer role. Settings: `DURQ_DIR`, `DURQ_OUT` (output file),
/// `DURQ_TOTAL` (stop once the group committed this many records),
/// `DURQ_KILL` (`none`, or `<before|mid|after>:<n>`: SIGKILL itself in its
/// n-th batch), `DURQ_WORK_US` (pretend work per record), `DURQ_COMMIT`
/// (the consumer's commit mode: `sync`, `interval:MS`, `buffered`).
fn run_consumer() -> ! {
    let dir = procs::var("DURQ_DIR");
    let total = procs::num("DURQ_TOTAL");
    let work = Duration::from_micros(procs::num("DURQ_WORK_US"));
    let kill = procs::var("DURQ_KILL");
    let (mode, kill_at) = match kill.split_once(':') {
        Some((mode, n)) => (mode.to_owned(), n.parse::<u32>().expect("DURQ_KILL batch")),
        None => (kill.clone(), 0),
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(procs::var("DURQ_OUT"))
        .unwrap_or_else(|e| fail(format_args!("open output: {e}")));
    let queue = Queue::open_existing(&dir).unwrap_or_else(|e| fail(format_args!("open {dir}: {e}")));
    let commit: Durability = procs::var("DURQ_COMMIT").parse().unwrap_or_else(|e| fail(e));
    let mut consumer = procs::join(&queue, GROUP, ConsumerOptions::default().max_batch(MAX_BATCH).commit(commit))
        .unwrap_or_else(|e| fail(format_args!("join group: {e}")));
    say("ready");
    let mut batches = 0;
    loop {
        if consumer.committed().expect("committed").iter().sum::<u64>() >= total {
            say("done");
            std::process::exit(0);
        }
        consumer
            .process(|batch| {
                batches += 1;
                let first = batch[0].position();
                let last = batch[batch.len() - 1].position().offset;
                say(format_args!("batch {} {} {last} {}", first.partition, first.offset, batch[0].delivery_count()));
                let here = batches == kill_at;
                if here && mode == "before" {
                    procs::sigkill_self();
                }
                for (i, m) in batch.iter().enumerate() {
                    if here && mode == "mid" && i == batch.len() / 2 {
                        procs::sigkill_self();
                    }
                    let id = parse_payload(m.payload()).unwrap_or_else(|e| fail(e));
                    let pos = m.position();
                    out.write_all(format!("{id} {} {}\n", pos.partition, pos.offset).as_bytes())
                        .unwrap_or_else(|e| fail(format_args!("write output: {e}")));
                    std::thread::sleep(work);
                }
                if here && mode == "after" {
                    procs::sigkill_self();
                }
                Ok::<(), std::io::Error>(())
            })
            .unwrap_or_else(|e| fail(format_args!("process: {e}")));
    }
}

/// A batch as the child announced it: partition, first..=last offset, and
/// how many times its first record has been delivered.
#[derive(Debug, Clone, Copy)]
struct Batch {
    partition: u32,
    first: u64,
    last: u64,
    delivery_count: u32,
}

impl Batch {
    fn parse(line: &str) -> Option<Batch> {
        let mut w = line.strip_prefix("batch ")?.split(' ').map(|x| x.parse::<u64>().ok());
        Some(Batch {
            partition: w.next()?? as u32,
            first: w.next()??,
            last: w.next()??,
            delivery_count: w.next()?? as u32,
        })
    }

    fn contains(&self, pos: Position) -> bool {
        pos.partition == self.partition && (self.first..=self.last).contains(&pos.offset)
    }
}

/// The batches a child announced, in order.
fn batches(p: &Proc) -> Vec<Batch> {
    p.lines.iter().filter_map(|l| Batch::parse(l)).collect()
}

/// A queue filled with `n` records `m-<i>` over `partitions`, and where each
/// landed.
struct Work {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    out: PathBuf,
    positions: HashMap<String, Position>,
    /// The children's commit mode.
    commit: Durability,
}

impl Work {
    /// A new queue of `partitions` partitions, for children that commit
    /// under `commit`.
    fn committing(partitions: u32, commit: Durability) -> Work {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("q");
        let out = tmp.path().join("processed.txt");
        drop(
            Queue::open_with(&path, common::small().partitions(partitions).durability(Durability::Sync))
                .expect("create"),
        );
        Work { _tmp: tmp, path, out, positions: HashMap::new(), commit }
    }

    fn spawn(&self, name: &str, total: usize, kill: &str, work_us: u64) -> Proc {
        let mut p = self.start(name, total, kill, work_us);
        p.wait_line("ready");
        p
    }

    /// As [`Work::spawn`], without waiting for the child to be ready.
    fn start(&self, name: &str, total: usize, kill: &str, work_us: u64) -> Proc {
        procs::spawn(
            module_path!(),
            name,
            "consumer",
            &[
                ("DURQ_DIR", self.path.display().to_string()),
                ("DURQ_OUT", self.out.display().to_string()),
                ("DURQ_TOTAL", total.to_string()),
                ("DURQ_KILL", kill.to_owned()),
                ("DURQ_WORK_US", work_us.to_string()),
                ("DURQ_COMMIT", self.commit.to_string()),
            ],
        )
    }

    /// The group's committed offsets, as a fresh member sees them.
    fn committed(&self) -> Vec<u64> {
        let q = Queue::open_existing(&self.path).expect("open");
        procs::join(&q, GROUP, ConsumerOptions::default())
            .expect("join group after the kill")
            .committed()
            .expect("committed")
    }

    /// How often each id was processed, checking each output line's
    /// position against where the record really is.
    fn processed(&self) -> HashMap<String, u32> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut counts = HashMap::new();
        for line in text.lines() {
            let mut w = line.split(' ');
            let (Some(id), Some(p), Some(o), None) = (w.next(), w.next(), w.next(), w.next()) else {
                panic!("bad output line {line:?}");
            };
            let pos = Position { partition: p.parse().unwrap(), offset: o.parse().unwrap() };
            assert_eq!(self.positions.get(id), Some(&pos), "{id} processed at the wrong position");
            *counts.entry(id.to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

/// Checks the committed offsets after `child` died: every batch it finished
/// before the in-flight one is committed; the in-flight one is committed
/// wholly or not at all (`exact` demands not at all). Updates `expect`.
fn check_committed(work: &Work, child: &Proc, expect: &mut [u64], exact: bool) -> Option<Batch> {
    let announced = batches(child);
    let in_flight = announced.last().copied();
    if let Some((_, done)) = announced.split_last() {
        for b in done {
            expect[b.partition as usize] = b.last + 1;
        }
    }
    let committed = work.committed();
    if let Some(b) = in_flight {
        let p = b.partition as usize;
        let c = committed[p];
        assert!(
            c == b.first || (!exact && c == b.last + 1),
            "{}: in-flight batch {b:?} half committed or lost: committed {c}",
            child.name
        );
        expect[p] = c;
    }
    assert_eq!(committed, expect, "{}: committed offsets after the kill", child.name);
    in_flight
}

#[test]
fn consumer_killed_inside_process_redelivers_only_the_in_flight_batch() {
    killed_inside_process_redelivers_only_the_in_flight_batch(Durability::Sync);
}

/// Under `commit(Interval)` a commit is a store into the checkpoint's
/// shared mapping, synced later (here: never, before the kills): the page
/// cache keeps it across a SIGKILL, so a kill still redelivers only the
/// batch in flight.
#[test]
fn interval_committing_consumer_killed_inside_process_redelivers_only_the_in_flight_batch() {
    killed_inside_process_redelivers_only_the_in_flight_batch(Durability::Interval(Duration::from_secs(3600)));
}

#[test]
fn buffered_committing_consumer_killed_inside_process_redelivers_only_the_in_flight_batch() {
    killed_inside_process_redelivers_only_the_in_flight_batch(Durability::Buffered);
}

fn killed_inside_process_redelivers_only_the_in_flight_batch(commit: Durability) {
    let mut work = Work::committing(2, commit);
    let q = Queue::open_existing(&work.path).expect("open");
    let producer = q.producer();
    let total = 400;
    for i in 0..total {
        let id = format!("m-{i}");
        let pos = producer.send(payload(&id, i % 200)).expect("send");
        work.positions.insert(id, pos);
    }
    drop((producer, q));
    let plan = [
        ("before", 1),
        ("mid", 3),
        ("after", 2),
        ("before", 4),
        ("after", 1),
        ("mid", 1),
        ("after", 5),
        ("mid", 2),
        ("before", 2),
    ];
    let mut expect_committed = vec![0, 0];
    let mut expected: HashMap<&String, u32> = work.positions.keys().map(|id| (id, 1)).collect();
    let mut deliveries = HashMap::new();
    for (k, (mode, at)) in plan.iter().enumerate() {
        let mut child = work.spawn(&format!("{mode}{at}#{k}"), total, &format!("{mode}:{at}"), 0);
        child.wait_killed();
        check_delivery_counts(&child, &mut deliveries);
        let b = check_committed(&work, &child, &mut expect_committed, true).expect("a batch was in flight");
        assert_eq!(batches(&child).len(), *at as usize, "{}: killed in batch {at}", child.name);
        // What the kill left done in the output will be done again.
        let len = b.last - b.first + 1;
        let done_before_kill = match *mode {
            "before" => 0,
            "mid" => len / 2,
            _ => len,
        };
        for (id, pos) in &work.positions {
            if b.contains(*pos) && pos.offset - b.first < done_before_kill {
                *expected.get_mut(id).unwrap() += 1;
            }
        }
    }
    let mut last = work.spawn("final", total, "none", 0);
    last.finish();
    check_delivery_counts(&last, &mut deliveries);
    assert!(deliveries.values().any(|&n| n > 1), "the kills caused redeliveries");
    assert_eq!(work.committed(), vec![q_end(&work.path, 0), q_end(&work.path, 1)]);
    let processed = work.processed();
    let expected: HashMap<String, u32> = expected.into_iter().map(|(id, n)| (id.clone(), n)).collect();
    let mut wrong: Vec<_> = expected.iter().filter(|(id, n)| processed.get(*id) != Some(n)).collect();
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "{} ids processed a wrong number of times, e.g. {:?} expected {} got {:?}",
        wrong.len(),
        wrong[0].0,
        wrong[0].1,
        processed.get(wrong[0].0)
    );
    assert_eq!(processed.len(), total, "only records of the queue were processed");
}

/// Every batch `child` announced counts its first record's deliveries
/// exactly, across the SIGKILLs of the children before it: one more than the
/// batches announced before that held that record (a committed record is
/// never announced again). The count is written before the closure runs,
/// without a sync, so this checks that the write survives the kill.
fn check_delivery_counts(child: &Proc, deliveries: &mut HashMap<(u32, u64), u32>) {
    for b in batches(child) {
        let before = deliveries.get(&(b.partition, b.first)).copied().unwrap_or(0);
        assert_eq!(
            b.delivery_count,
            before + 1,
            "{}: batch {}:{}..={}, its first record delivered {before} times before",
            child.name,
            b.partition,
            b.first,
            b.last
        );
        for offset in b.first..=b.last {
            *deliveries.entry((b.partition, offset)).or_insert(0) += 1;
        }
    }
}

fn q_end(path: &Path, p: u32) -> u64 {
    Queue::open_existing(path).expect("open").offsets(p).unwrap().1
}

#[test]
fn consumer_killed_at_random_moments_while_records_arrive_loses_nothing() {
    killed_at_random_moments_loses_nothing(Durability::Sync);
}

/// With the background sync running every 2 ms, kills land before, during
/// and after its syncs.
#[test]
fn interval_committing_consumer_killed_at_random_moments_while_records_arrive_loses_nothing() {
    killed_at_random_moments_loses_nothing(Durability::Interval(Duration::from_millis(2)));
}

fn killed_at_random_moments_loses_nothing(commit: Durability) {
    let mut rng = Rng::new(procs::seed(0x5eed_0004));
    let mut work = Work::committing(2, commit);
    let total = 1500;
    // The parent produces while consumers come and go.
    let q = Queue::open_existing(&work.path).expect("open");
    let producer = q.producer();
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(7);
        (0..total)
            .map(|i| {
                let id = format!("m-{i}");
                if i % 50 == 0 {
                    std::thread::sleep(rng.millis(20));
                }
                let pos = producer.send(payload(&id, rng.below(300) as usize)).expect("send");
                (id, pos)
            })
            .collect::<Vec<_>>()
    });
    let started = Instant::now();
    let mut expect_committed = vec![0, 0];
    let mut in_flight = Vec::new();
    let mut kills = 0;
    for k in 0..16 {
        let mut child = work.start(&format!("random#{k}"), total, "none", 100);
        if k % 4 == 3 {
            // Now and then while it starts: joining the group, or creating
            // its checkpoints.
            std::thread::sleep(rng.millis(10));
        } else {
            child.wait_line("ready");
            std::thread::sleep(rng.millis(30));
        }
        child.sigkill();
        kills += 1;
        in_flight.extend(check_committed(&work, &child, &mut expect_committed, false));
    }
    work.positions = sender.join().expect("sender").into_iter().collect();
    let mut last = work.spawn("final", total, "none", 0);
    last.finish();
    assert_eq!(work.committed(), vec![q_end(&work.path, 0), q_end(&work.path, 1)]);
    drop(q);
    let processed = work.processed();
    for (id, pos) in &work.positions {
        let n = processed.get(id).copied().unwrap_or(0);
        let may_repeat = in_flight.iter().filter(|b| b.contains(*pos)).count() as u32;
        assert!(n >= 1, "{id} at {pos:?} was never processed");
        assert!(
            n <= 1 + may_repeat,
            "{id} at {pos:?} processed {n} times, but only {may_repeat} kills caught it in flight"
        );
    }
    assert_eq!(processed.len(), total, "only records of the queue were processed");
    let repeats: u32 = processed.values().map(|n| n - 1).sum();
    eprintln!(
        "{kills} random consumer kills ({} after announcing a batch), {repeats} repeated records, in {:?}",
        in_flight.len(),
        started.elapsed()
    );
}

/// A standby that scans the member files once an hour, joined while a
/// child process holds the only slot: within a test, only the holder's exit,
/// watched through a pidfd, can make it look again.
fn standby_beside_a_holder(work: &Work, queue: &Queue) -> (durq::Consumer, Proc) {
    let holder = work.spawn("holder", 1_000_000, "none", 0);
    let hourly = ConsumerOptions::default()
        .lease_timeout(Duration::from_secs(7200))
        .rebalance_interval(Duration::from_secs(3600));
    let standby = procs::join(queue, GROUP, hourly).expect("join");
    assert!(standby.held_partitions().is_empty(), "the holder is alive and keeps its slot");
    (standby, holder)
}

/// Kills `holder` once the standby is (very likely) waiting, then sends a
/// record; returns where it went. Killed earlier, the standby still takes
/// over, by a shorter path (the flag is up before it waits).
fn kill_while_waiting(queue: &Queue, mut holder: Proc) -> std::thread::JoinHandle<Position> {
    let producer = queue.producer();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        holder.sigkill();
        producer.send(payload("after-the-kill", 16)).expect("send")
    })
}

#[test]
fn a_waiting_member_takes_over_a_killed_holder_at_once_not_at_its_next_scan() {
    let work = Work::committing(1, Durability::Sync);
    let queue = Queue::open_existing(&work.path).expect("open");
    let (mut standby, holder) = standby_beside_a_holder(&work, &queue);
    let killer = kill_while_waiting(&queue, holder);
    // `process` waits up to the next scan (an hour) unless woken: on a
    // thread of its own, so that the test can give up after 30 s.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let n = standby.process(|batch| {
            seen.extend(batch.iter().map(|m| m.position()));
            Ok::<(), std::io::Error>(())
        });
        let _ = tx.send((n.map_err(|e| e.to_string()), seen));
    });
    let (n, seen) = rx.recv_timeout(Duration::from_secs(30)).expect("the standby took the slot over within 30 s");
    let sent = killer.join().expect("the killer thread");
    assert_eq!((n, seen), (Ok(1), vec![sent]), "the standby processed the new record");
}

#[test]
fn an_async_member_waiting_for_records_takes_over_a_killed_holder_at_once() {
    // As above, awaiting `process_async`: its companion thread, which waits
    // on its behalf, is woken by the exit too.
    let work = Work::committing(1, Durability::Sync);
    let queue = Queue::open_existing(&work.path).expect("open");
    let (mut standby, holder) = standby_beside_a_holder(&work, &queue);
    let killer = kill_while_waiting(&queue, holder);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut seen = Vec::new();
    let n = runtime.block_on(async {
        let processing = standby.process_async(|batch| {
            seen.extend(batch.iter().map(|m| m.position()));
            async { Ok::<(), std::io::Error>(()) }
        });
        tokio::time::timeout(Duration::from_secs(30), processing).await
    });
    let sent = killer.join().expect("the killer thread");
    assert_eq!(n.expect("the standby took the slot over within 30 s").expect("process_async"), 1);
    assert_eq!(seen, vec![sent]);
}

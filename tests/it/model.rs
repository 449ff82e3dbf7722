//! The whole queue against a model. Proptest drives random sequences of
//! operations (sends, batches, flushes, members joining and leaving,
//! batches processed with `Ok`, an error or a panic, per-record verdicts,
//! reopening the queue, reads without a group) against a real queue in a
//! temp dir, small segments so retention runs, and against a model that is
//! nothing but a list of records per partition and, per group, a committed
//! offset per partition, the dead letters, and how often the group's
//! closures saw each record. After every step the queue must agree with the
//! model: the logs, the positions `send` returned, what each batch held and
//! what it committed, delivery counts, dead letters, retention.
//!
//! The model does not predict which partition a consumer serves next (one
//! partition per batch, round-robin over the slots it holds, shared with
//! other members): it checks each batch from what was delivered. Any batch
//! must start at the group's committed offset and be a run of the model's
//! records; an `Ok` commits exactly it, an error or a panic nothing.
//!
//! `PROPTEST_CASES=1000 cargo test --release --test it model::` for a longer run
//! (the default is sized for well under a minute in debug).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use durq::{Consumer, ConsumerOptions, Durability, Error, Message, Options, Producer, Queue, Verdict};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const GROUPS: [&str; 2] = ["g0", "g1"];
const KEYS: [&[u8]; 4] = [b"", b"user-7", b"k", b"order-42"];
/// Every injected failure says this, so the panic hook can keep quiet.
const INJECTED: &str = "model: injected";
const ERROR: &str = "model: injected error";
const PANIC: &str = "model: injected panic";
const REASON: &str = "model: dead letter verdict";
/// The error a dead letter carries when `Verdict::Retry` was its last straw.
const RETRY_ERROR: &str = "closure asked for a retry";
/// Cases of the random test; `PROPTEST_CASES` overrides.
const CASES: u32 = 100;
/// Payload bytes of a [`Op::Fill`] record.
const BIG: usize = 3900;

type Check = Result<(), TestCaseError>;

trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, TestCaseError>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> Result<T, TestCaseError> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
    }
}

// ---- Operations ----

/// What a case is run on.
#[derive(Debug, Clone)]
struct Setup {
    partitions: u32,
    durability: Durability,
    max_deliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Done,
    Retry,
    DeadLetter,
    Panic,
}

/// One step. Payload sizes, not bytes: each payload starts with its send's
/// sequence number, so every record is different and shrunk cases stay
/// readable. Indexes (`who`, `partition`, `offset`) are taken modulo what
/// exists.
#[derive(Debug, Clone)]
enum Op {
    Send {
        len: usize,
        key: Option<usize>,
    },
    SendBatch(Vec<usize>),
    /// A batch of this many records of [`BIG`] bytes: 16 fill a segment.
    Fill(usize),
    Flush,
    Join {
        group: usize,
        max_batch: usize,
    },
    Leave {
        group: usize,
        who: usize,
    },
    Process {
        group: usize,
        who: usize,
        outcome: Outcome,
    },
    ProcessEach {
        group: usize,
        who: usize,
        verdicts: Vec<Kind>,
    },
    Reopen,
    ReadAt {
        partition: u32,
        offset: u64,
        max: usize,
    },
}

fn setup() -> impl Strategy<Value = Setup> {
    (1..=3u32, prop_oneof![Just(Durability::Sync), Just(Durability::Buffered)], 1..=4u32)
        .prop_map(|(partitions, durability, max_deliveries)| Setup { partitions, durability, max_deliveries })
}

fn len() -> impl Strategy<Value = usize> {
    // Mostly small; sometimes big enough that a few roll a 64 KiB segment.
    prop_oneof![5 => 0..20usize, 1 => 3000..4000usize]
}

fn op() -> impl Strategy<Value = Op> {
    let group = 0..GROUPS.len();
    let outcome = prop_oneof![3 => Just(Outcome::Ok), 1 => Just(Outcome::Err), 1 => Just(Outcome::Panic)];
    let kind = prop_oneof![
        4 => Just(Kind::Done),
        2 => Just(Kind::Retry),
        1 => Just(Kind::DeadLetter),
        1 => Just(Kind::Panic)
    ];
    prop_oneof![
        6 => (len(), proptest::option::of(0..KEYS.len())).prop_map(|(len, key)| Op::Send { len, key }),
        2 => vec(len(), 0..8).prop_map(Op::SendBatch),
        2 => (1..=20usize).prop_map(Op::Fill),
        1 => Just(Op::Flush),
        2 => (group.clone(), prop_oneof![Just(1usize), 2..=4usize, Just(64)])
            .prop_map(|(group, max_batch)| Op::Join { group, max_batch }),
        1 => (group.clone(), 0..2usize).prop_map(|(group, who)| Op::Leave { group, who }),
        7 => (group.clone(), 0..2usize, outcome).prop_map(|(group, who, outcome)| Op::Process { group, who, outcome }),
        3 => (group, 0..2usize, vec(kind, 0..4))
            .prop_map(|(group, who, verdicts)| Op::ProcessEach { group, who, verdicts }),
        2 => Just(Op::Reopen),
        1 => (0..3u32, 0..64u64, 1..8usize).prop_map(|(partition, offset, max)| Op::ReadAt { partition, offset, max }),
    ]
}

// ---- The model ----

#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// The timestamp the queue gave it, once read; it must never change.
    ts: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Dead {
    partition: u32,
    offset: u64,
    delivery_count: u32,
    error: String,
}

#[derive(Debug, Default)]
struct Group {
    /// Next offset to process, per partition.
    committed: Vec<u64>,
    /// How many times a closure was handed each record.
    handed: BTreeMap<(u32, u64), u32>,
    /// Records that may have been in a batch behind a `Retry` or a panic of
    /// `process_each`, handed to the group but never to the closure.
    unseen: BTreeSet<(u32, u64)>,
    /// Dead letters, in the order they were written.
    dead: Vec<Dead>,
}

#[derive(Debug)]
struct Model {
    max_deliveries: u32,
    logs: Vec<Vec<Rec>>,
    /// First retained offset per partition, as last observed.
    first: Vec<u64>,
    /// The round-robin counter of unkeyed sends: per queue handle.
    round_robin: u32,
    sends: u64,
    groups: BTreeMap<usize, Group>,
}

/// A message as a closure saw it.
#[derive(Debug, Clone)]
struct Seen {
    partition: u32,
    offset: u64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    ts: u64,
    count: u32,
}

impl Seen {
    fn of(m: &Message<'_>) -> Seen {
        Seen {
            partition: m.position().partition,
            offset: m.position().offset,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().to_vec(),
            ts: m.timestamp_ms(),
            count: m.delivery_count(),
        }
    }
}

impl Model {
    fn new(setup: &Setup) -> Model {
        Model {
            max_deliveries: setup.max_deliveries,
            logs: vec![Vec::new(); setup.partitions as usize],
            first: vec![0; setup.partitions as usize],
            round_robin: 0,
            sends: 0,
            groups: BTreeMap::new(),
        }
    }

    fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    fn len(&self, p: u32) -> u64 {
        self.logs[p as usize].len() as u64
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        let mut v = format!("#{}:", self.sends).into_bytes();
        v.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        self.sends += 1;
        v
    }

    /// The partition of the next unkeyed send (or send_batch).
    fn next_round_robin(&mut self) -> u32 {
        let p = self.round_robin % self.partitions();
        self.round_robin += 1;
        p
    }

    fn pending(&self, g: usize) -> Vec<u32> {
        (0..self.partitions()).filter(|&p| self.groups[&g].committed[p as usize] < self.len(p)).collect()
    }

    /// Checks a batch handed to a closure of group `g` (all of it, or up to
    /// where the closure stopped) and counts it as handed.
    fn deliver(&mut self, g: usize, batch: &[Seen], max_batch: usize) -> Check {
        prop_assert!(!batch.is_empty());
        prop_assert!(batch.len() <= max_batch, "{} records in a batch, max_batch {max_batch}", batch.len());
        let p = batch[0].partition;
        prop_assert!(p < self.partitions(), "partition {p} does not exist");
        let from = self.groups[&g].committed[p as usize];
        for (i, m) in batch.iter().enumerate() {
            prop_assert_eq!(m.partition, p, "a batch comes from one partition");
            prop_assert_eq!(m.offset, from + i as u64, "a batch is the run of records from the committed offset");
            let rec = self.logs[p as usize].get(m.offset as usize);
            let Some(rec) = rec else {
                return Err(TestCaseError::fail(format!(
                    "delivered {p}/{} but only {} were sent",
                    m.offset,
                    self.len(p)
                )));
            };
            prop_assert_eq!((&m.key, &m.payload), (&rec.key, &rec.payload), "record {}/{}", p, m.offset);
            prop_assert_eq!(Some(m.ts), rec.ts, "timestamp of {}/{}", p, m.offset);
            let group = self.groups.get_mut(&g).expect("delivering to a known group");
            let before = group.handed.get(&(p, m.offset)).copied().unwrap_or(0);
            let unseen = group.unseen.contains(&(p, m.offset));
            let what = format!("delivery_count of {p}/{} (head: {}, handed {before} times before)", m.offset, i == 0);
            match (i == 0, unseen) {
                // The first record of a batch carries its exact count.
                (true, false) => prop_assert_eq!(m.count, before + 1, "{}", what),
                (true, true) => prop_assert!(m.count > before, "{what}: {}", m.count),
                // Others: 1 on the first delivery, at least 2 after.
                (false, _) if before > 0 => prop_assert!(m.count >= 2, "{what}: {}", m.count),
                (false, false) => prop_assert_eq!(m.count, 1, "{}", what),
                (false, true) => prop_assert!(m.count >= 1, "{what}: {}", m.count),
            }
            *group.handed.entry((p, m.offset)).or_default() += 1;
        }
        Ok(())
    }

    /// `head` failed (an error, a panic, or a retry verdict for it): it is
    /// a dead letter if it was alone in what was left of its batch and its
    /// delivery count reached `max_deliveries`; otherwise nothing moves.
    fn failed(&mut self, g: usize, head: &Seen, alone: bool, error: &str) {
        if alone && head.count >= self.max_deliveries {
            self.dead_letter(g, head, error);
        }
    }

    fn commit(&mut self, g: usize, p: u32, n: usize) {
        self.groups.get_mut(&g).expect("known group").committed[p as usize] += n as u64;
    }

    /// `m`, the record at the group's committed offset, goes to the DLQ and
    /// the group moves past it.
    fn dead_letter(&mut self, g: usize, m: &Seen, error: &str) {
        let group = self.groups.get_mut(&g).expect("known group");
        assert_eq!(group.committed[m.partition as usize], m.offset, "dead letters are taken at the committed offset");
        group.dead.push(Dead {
            partition: m.partition,
            offset: m.offset,
            delivery_count: m.count,
            error: error.into(),
        });
        group.committed[m.partition as usize] += 1;
    }
}

// ---- The real queue ----

struct Member {
    consumer: Consumer,
    max_batch: usize,
}

struct World {
    path: PathBuf,
    max_deliveries: u32,
    // Field order is drop order: members, the producer, the queue, the dir.
    members: Vec<Vec<Member>>,
    producer: Option<Producer>,
    queue: Option<Queue>,
    _dir: tempfile::TempDir,
}

fn consumer_options(max_batch: usize, max_deliveries: u32) -> ConsumerOptions {
    ConsumerOptions::default()
        .max_batch(max_batch)
        .max_deliveries(max_deliveries)
        .retry_backoff(vec![Duration::ZERO])
        .rebalance_interval(Duration::from_millis(2))
}

impl World {
    fn new(setup: &Setup) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let options = Options::default()
            .segment_bytes(64 << 10)
            .record_bytes_max(4096)
            .partitions(setup.partitions)
            .durability(setup.durability);
        let queue = Queue::open_with(&path, options).expect("create queue");
        World {
            path,
            max_deliveries: setup.max_deliveries,
            members: GROUPS.iter().map(|_| Vec::new()).collect(),
            producer: Some(queue.producer()),
            queue: Some(queue),
            _dir: dir,
        }
    }

    fn queue(&self) -> &Queue {
        self.queue.as_ref().expect("open")
    }

    fn producer(&self) -> &Producer {
        self.producer.as_ref().expect("open")
    }

    fn join(&mut self, g: usize, max_batch: usize) -> Check {
        let options = consumer_options(max_batch, self.max_deliveries);
        let consumer = self.queue().consumer_with(GROUPS[g], options).or_fail("join")?;
        self.members[g].push(Member { consumer, max_batch });
        Ok(())
    }

    fn apply(&mut self, m: &mut Model, op: &Op) -> Check {
        match op {
            Op::Send { len, key } => {
                let payload = m.payload(*len);
                let (pos, p, key) = match key {
                    Some(k) => {
                        let key = KEYS[*k];
                        let pos = self.producer().send_keyed(key, &payload).or_fail("send_keyed")?;
                        (pos, crc32fast::hash(key) % m.partitions(), Some(key.to_vec()))
                    }
                    None => (self.producer().send(&payload).or_fail("send")?, m.next_round_robin(), None),
                };
                prop_assert_eq!((pos.partition, pos.offset), (p, m.len(p)), "position of send");
                m.logs[p as usize].push(Rec { key, payload, ts: None });
            }
            Op::SendBatch(lens) => self.send_batch(m, lens)?,
            Op::Fill(n) => self.send_batch(m, &vec![BIG; *n])?,
            Op::Flush => self.producer().flush().or_fail("flush")?,
            Op::Join { group, max_batch } => {
                if self.members[*group].len() < 2 {
                    // A new group starts at the earliest retained record.
                    let first = m.first.clone();
                    m.groups.entry(*group).or_insert_with(|| Group { committed: first, ..Group::default() });
                    self.join(*group, *max_batch)?;
                }
            }
            Op::Leave { group, who } => {
                let members = &mut self.members[*group];
                if !members.is_empty() {
                    let i = who % members.len();
                    drop(members.remove(i));
                }
            }
            Op::Process { group, who, outcome } => {
                if let Some((i, timeout, must)) = self.pick(m, *group, *who) {
                    self.process(m, *group, i, timeout, must, *outcome)?;
                }
            }
            Op::ProcessEach { group, who, verdicts } => {
                if let Some((i, timeout, must)) = self.pick(m, *group, *who) {
                    self.process_each(m, (*group, i), timeout, must, verdicts)?;
                }
            }
            Op::Reopen => {
                let shape: Vec<Vec<usize>> =
                    self.members.iter().map(|ms| ms.iter().map(|x| x.max_batch).collect()).collect();
                self.members.iter_mut().for_each(Vec::clear);
                self.producer = None;
                self.queue = None;
                let queue = Queue::open_existing(&self.path).or_fail("reopen")?;
                self.producer = Some(queue.producer());
                self.queue = Some(queue);
                m.round_robin = 0;
                for (g, batches) in shape.into_iter().enumerate() {
                    for max_batch in batches {
                        self.join(g, max_batch)?;
                    }
                }
            }
            Op::ReadAt { partition, offset, max } => {
                let p = partition % m.partitions();
                let offset = offset % (m.len(p) + 2);
                let got = self.queue().read_at(p, offset, *max).or_fail("read_at")?;
                let from = offset.max(m.first[p as usize]);
                let to = m.len(p).min(from + *max as u64).max(from);
                prop_assert_eq!(got.len() as u64, to - from, "read_at({}, {}, {})", p, offset, max);
                for (r, o) in got.iter().zip(from..to) {
                    let rec = &m.logs[p as usize][o as usize];
                    prop_assert_eq!((r.position.partition, r.position.offset), (p, o));
                    prop_assert_eq!((&r.key, &r.payload, Some(r.timestamp_ms)), (&rec.key, &rec.payload, rec.ts));
                }
            }
        }
        Ok(())
    }

    fn send_batch(&mut self, m: &mut Model, lens: &[usize]) -> Check {
        let payloads: Vec<Vec<u8>> = lens.iter().map(|&l| m.payload(l)).collect();
        let positions = self.producer().send_batch(&payloads).or_fail("send_batch")?;
        if payloads.is_empty() {
            prop_assert!(positions.is_empty());
            return Ok(());
        }
        let p = m.next_round_robin();
        let expected: Vec<(u32, u64)> = (m.len(p)..m.len(p) + lens.len() as u64).map(|o| (p, o)).collect();
        let got: Vec<(u32, u64)> = positions.iter().map(|pos| (pos.partition, pos.offset)).collect();
        prop_assert_eq!(got, expected, "positions of send_batch");
        m.logs[p as usize].extend(payloads.into_iter().map(|payload| Rec { key: None, payload, ts: None }));
        Ok(())
    }

    /// Which member of group `g` processes: one that holds a partition with
    /// records pending, if any. With the timeout to wait, and whether a
    /// batch must come (the sole member of a group with records pending).
    fn pick(&self, m: &Model, g: usize, who: usize) -> Option<(usize, Duration, bool)> {
        let members = &self.members[g];
        if members.is_empty() {
            return None;
        }
        let pending = m.pending(g);
        match members.len() {
            1 if pending.is_empty() => Some((0, Duration::from_millis(5), false)),
            1 => Some((0, Duration::from_secs(5), true)),
            n => {
                let holders: Vec<usize> = (0..n)
                    .filter(|&i| members[i].consumer.held_partitions().iter().any(|p| pending.contains(p)))
                    .collect();
                Some(match holders.len() {
                    0 => (who % n, Duration::from_millis(10), false),
                    h => (holders[who % h], Duration::from_millis(100), false),
                })
            }
        }
    }

    /// `process_timeout` on member `i` of group `g`, the closure ending with
    /// `outcome`.
    fn process(&mut self, m: &mut Model, g: usize, i: usize, timeout: Duration, must: bool, outcome: Outcome) -> Check {
        let member = &mut self.members[g][i];
        let mut seen = Vec::new();
        let r = member.consumer.process_timeout(timeout, |batch| {
            seen = batch.iter().map(Seen::of).collect();
            match outcome {
                Outcome::Ok => Ok(()),
                Outcome::Err => Err(std::io::Error::other(ERROR)),
                Outcome::Panic => std::panic::panic_any(PANIC),
            }
        });
        if seen.is_empty() {
            return nothing_delivered(m, g, &r, must, timeout);
        }
        m.deliver(g, &seen, member.max_batch)?;
        let (head, alone) = (&seen[0], seen.len() == 1);
        match (outcome, r) {
            (Outcome::Ok, Ok(n)) => {
                prop_assert_eq!(n, seen.len(), "process returns the batch's length");
                m.commit(g, head.partition, n);
            }
            (Outcome::Err, Err(Error::Process(e))) if e.to_string() == ERROR => m.failed(g, head, alone, ERROR),
            (Outcome::Panic, Err(Error::ProcessPanicked(text))) if text == PANIC => m.failed(g, head, alone, PANIC),
            (outcome, r) => return Err(TestCaseError::fail(format!("closure said {outcome:?}, process said {r:?}"))),
        }
        Ok(())
    }

    /// `process_each` on member `i` of group `g`, with `verdicts` for the
    /// batch's first records and `Done` for the rest.
    fn process_each(
        &mut self,
        m: &mut Model,
        (g, i): (usize, usize),
        timeout: Duration,
        must: bool,
        verdicts: &[Kind],
    ) -> Check {
        let member = &mut self.members[g][i];
        let kind = |k: usize| verdicts.get(k).copied().unwrap_or(Kind::Done);
        let mut seen = Vec::new();
        let r = member.consumer.process_each(timeout, |msg| {
            seen.push(Seen::of(msg));
            match kind(seen.len() - 1) {
                Kind::Done => Verdict::Done,
                Kind::Retry => Verdict::Retry(Some(Duration::ZERO)),
                Kind::DeadLetter => Verdict::DeadLetter(REASON.into()),
                Kind::Panic => std::panic::panic_any(PANIC),
            }
        });
        if seen.is_empty() {
            return nothing_delivered(m, g, &r, must, timeout);
        }
        let max_batch = member.max_batch;
        m.deliver(g, &seen, max_batch)?;
        let last = seen.len() - 1;
        let stop = kind(last);
        if !matches!(stop, Kind::Retry | Kind::Panic) {
            // The closure saw the whole batch.
            prop_assert_eq!(r.as_ref().ok().copied(), Some(seen.len()), "process_each: {:?}", r);
            for (k, s) in seen.iter().enumerate() {
                match kind(k) {
                    Kind::DeadLetter => m.dead_letter(g, s, REASON),
                    _ => m.commit(g, s.partition, 1),
                }
            }
            return Ok(());
        }
        // The batch may go on past the record it stopped at: those records
        // count as delivered without the closure seeing them.
        let p = seen[0].partition;
        let end = (seen[0].offset + max_batch as u64).min(m.len(p));
        m.groups.get_mut(&g).expect("known group").unseen.extend((seen[last].offset + 1..end).map(|o| (p, o)));
        let batch_ends_at_last = (seen[last].offset + 1 == m.len(p) || last + 1 == max_batch).then_some(true);
        if stop == Kind::Panic {
            // Nothing committed, not even the records before; the head may
            // be a dead letter if it was alone and out of deliveries.
            match &r {
                Err(Error::ProcessPanicked(text)) if text == PANIC => {}
                r => return Err(TestCaseError::fail(format!("the closure panicked, process_each said {r:?}"))),
            }
            let alone = if last > 0 { Some(false) } else { batch_ends_at_last };
            return self.failed_maybe_alone(m, (g, i), &seen[0], alone, PANIC);
        }
        // Records before the retried one are committed (dead letters first
        // written); the retried one comes again, or is a dead letter.
        prop_assert_eq!(r.as_ref().ok().copied(), Some(last), "process_each returns the records committed: {:?}", r);
        for (k, s) in seen[..last].iter().enumerate() {
            match kind(k) {
                Kind::DeadLetter => m.dead_letter(g, s, REASON),
                _ => m.commit(g, s.partition, 1),
            }
        }
        self.failed_maybe_alone(m, (g, i), &seen[last], batch_ends_at_last, RETRY_ERROR)
    }

    /// [`Model::failed`] when the model may not know whether `s` was the
    /// last record of its batch (`alone` is `None`): then the consumer's
    /// committed offset says whether it became a dead letter, and the checks
    /// after the step hold the dead-letter queue to that.
    fn failed_maybe_alone(
        &self,
        m: &mut Model,
        (g, i): (usize, usize),
        s: &Seen,
        alone: Option<bool>,
        error: &str,
    ) -> Check {
        let alone = match alone {
            Some(alone) => alone,
            None if s.count < m.max_deliveries => false,
            None => {
                let now = self.members[g][i].consumer.committed().or_fail("committed")?[s.partition as usize];
                let before = m.groups[&g].committed[s.partition as usize];
                prop_assert!(now == before || now == before + 1, "committed {} after a failure at {}", now, before);
                now == before + 1
            }
        };
        m.failed(g, s, alone, error);
        Ok(())
    }

    /// Everything the queue says must match the model.
    fn check(&self, m: &mut Model) -> Check {
        let queue = self.queue();
        let stat = queue.stat().or_fail("stat")?;
        for p in 0..m.partitions() {
            let (first, next) = queue.offsets(p).unwrap();
            prop_assert_eq!(next, m.len(p), "next offset of partition {}", p);
            // Retention: the first offset only moves forward, never past a
            // group's position, and not at all without a group.
            prop_assert!(first >= m.first[p as usize], "partition {p}: first offset went back to {first}");
            let least = m.groups.values().map(|g| g.committed[p as usize]).min().unwrap_or(0);
            prop_assert!(first <= least, "partition {p}: retention removed up to {first}, a group is at {least}");
            m.first[p as usize] = first;
            let ps = &stat.partitions[p as usize];
            prop_assert_eq!((ps.first_offset, ps.next_offset), (first, next));
            let log = queue.read_at(p, first, usize::MAX).or_fail("read_at")?;
            prop_assert_eq!(log.len() as u64, next - first, "records of partition {} from {}", p, first);
            for (r, o) in log.iter().zip(first..) {
                let rec = &mut m.logs[p as usize][o as usize];
                prop_assert_eq!((r.position.partition, r.position.offset), (p, o));
                prop_assert_eq!((&r.key, &r.payload), (&rec.key, &rec.payload), "record {}/{}", p, o);
                let ts = *rec.ts.get_or_insert(r.timestamp_ms);
                prop_assert_eq!(r.timestamp_ms, ts, "timestamp of {}/{}", p, o);
            }
        }
        let names: Vec<&str> = stat.groups.iter().map(|g| g.name.as_str()).collect();
        let registered: Vec<&str> = m.groups.keys().map(|&g| GROUPS[g]).collect();
        prop_assert_eq!(names, registered, "groups");
        for (&g, group) in &m.groups {
            let gs = stat.groups.iter().find(|s| s.name == GROUPS[g]).expect("listed");
            let committed: Vec<Option<u64>> = group.committed.iter().copied().map(Some).collect();
            prop_assert_eq!(&gs.committed, &committed, "committed offsets of {} (stat)", GROUPS[g]);
            let lag: Vec<Option<u64>> =
                (0..m.partitions()).map(|p| Some(m.len(p) - group.committed[p as usize])).collect();
            prop_assert_eq!(&gs.lag, &lag, "lag of {}", GROUPS[g]);
            prop_assert_eq!(&gs.dead_letters, &Ok(group.dead.len() as u64), "dead letters of {} (stat)", GROUPS[g]);
            let mut held = BTreeSet::new();
            for member in &self.members[g] {
                let c = member.consumer.committed().or_fail("committed")?;
                prop_assert_eq!(&c, &group.committed, "committed offsets of {} (a member)", GROUPS[g]);
                for p in member.consumer.held_partitions() {
                    prop_assert!(held.insert(p), "two members of {} hold partition {}", GROUPS[g], p);
                }
            }
            if !group.dead.is_empty() {
                let letters = queue.dead_letters(GROUPS[g], 1 << 20).or_fail("dead_letters")?;
                let mut got = Vec::new();
                for d in letters {
                    let rec = &m.logs[d.original.partition as usize][d.original.offset as usize];
                    prop_assert_eq!((&d.key, &d.payload, Some(d.timestamp_ms)), (&rec.key, &rec.payload, rec.ts));
                    got.push(Dead {
                        partition: d.original.partition,
                        offset: d.original.offset,
                        delivery_count: d.deliveries,
                        error: d.reason,
                    });
                }
                prop_assert_eq!(&got, &group.dead, "dead letters of {}", GROUPS[g]);
            }
        }
        Ok(())
    }

    /// Every group processes everything: nothing sent is ever lost.
    fn drain(&mut self, m: &mut Model) -> Check {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (g, _) in GROUPS.iter().enumerate() {
            if !m.groups.contains_key(&g) {
                continue;
            }
            if self.members[g].is_empty() {
                self.join(g, 64)?;
            }
            while !m.pending(g).is_empty() {
                prop_assert!(
                    Instant::now() < deadline,
                    "{} never got {:?}: {:?}",
                    GROUPS[g],
                    m.pending(g),
                    m.groups[&g]
                );
                for i in 0..self.members[g].len() {
                    self.process(m, g, i, Duration::from_millis(20), false, Outcome::Ok)?;
                    self.check(m)?;
                }
            }
        }
        Ok(())
    }
}

/// A call that returned without calling the closure: it must say `Ok(0)`,
/// and may do so only if the member is not the sole one of a group with
/// records pending.
fn nothing_delivered(m: &Model, g: usize, r: &durq::Result<usize>, must: bool, timeout: Duration) -> Check {
    prop_assert!(matches!(r, Ok(0)), "no batch, yet {:?}", r);
    prop_assert!(
        !must,
        "the sole member of {} delivered nothing in {:?}; pending: {:?}",
        GROUPS[g],
        timeout,
        m.pending(g)
    );
    Ok(())
}

/// Runs `ops` on a fresh queue and the model, checking after every step,
/// then has every group process everything. Returns the model at the end.
fn run(setup: &Setup, ops: &[Op]) -> Result<Model, TestCaseError> {
    common::quiet_injected_panics(INJECTED);
    let mut world = World::new(setup);
    let mut model = Model::new(setup);
    world.check(&mut model)?;
    for (n, op) in ops.iter().enumerate() {
        world.apply(&mut model, op).map_err(|e| TestCaseError::fail(format!("step {n} {op:?}: {e}")))?;
        world.check(&mut model).map_err(|e| TestCaseError::fail(format!("after step {n} {op:?}: {e}")))?;
    }
    world.drain(&mut model).map_err(|e| TestCaseError::fail(format!("draining: {e}")))?;
    Ok(model)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_agrees_with_its_model_after_every_step_of_any_sequence(
        setup in setup(),
        ops in vec(op(), 1..50),
    ) {
        run(&setup, &ops)?;
    }
}

// ---- Fixed sequences: paths the random test must be able to take ----

fn process(group: usize, outcome: Outcome) -> Op {
    Op::Process { group, who: 0, outcome }
}

#[test]
fn the_model_follows_failures_isolation_verdicts_and_dead_letters_across_a_reopen() {
    use Outcome::*;
    let ops = [
        Op::SendBatch(vec![1, 2, 3, 4]),
        Op::Send { len: 5, key: Some(0) },
        Op::Join { group: 0, max_batch: 4 },
        process(0, Err),
        process(0, Panic), // the head alone, on its second delivery: a dead letter
        Op::Reopen,
        process(0, Ok), // record 1 alone: records delivered and not committed come one at a time
        Op::SendBatch(vec![6, 7, 8]),
        Op::ProcessEach { group: 0, who: 0, verdicts: vec![Kind::DeadLetter, Kind::Retry] },
        Op::ProcessEach { group: 0, who: 0, verdicts: vec![Kind::Retry] },
        Op::ReadAt { partition: 0, offset: 1, max: 3 },
    ];
    let setup = Setup { partitions: 1, durability: Durability::Sync, max_deliveries: 2 };
    let model = run(&setup, &ops).unwrap();
    let dead: Vec<(u64, &str)> = model.groups[&0].dead.iter().map(|d| (d.offset, d.error.as_str())).collect();
    // Record 2 is dead-lettered by its verdict; record 3, delivered once in
    // the failed batch and once now, reaches max_deliveries with its retry.
    assert_eq!(dead, [(0, PANIC), (2, REASON), (3, RETRY_ERROR)]);
}

#[test]
fn the_model_follows_two_groups_of_two_members_over_rolled_and_removed_segments() {
    let mut ops = vec![
        Op::Join { group: 0, max_batch: 3 },
        Op::Join { group: 1, max_batch: 64 },
        Op::Join { group: 0, max_batch: 1 },
        Op::Join { group: 1, max_batch: 2 },
    ];
    for round in 0..60 {
        ops.push(Op::Send { len: BIG, key: (round % 3 == 0).then_some(round % KEYS.len()) });
        ops.push(Op::Process { group: round % 2, who: round / 2, outcome: Outcome::Ok });
        ops.push(Op::Process { group: 0, who: 1, outcome: Outcome::Ok });
    }
    ops.extend([Op::Leave { group: 0, who: 0 }, Op::Reopen]);
    // Both groups catch up; then each partition rolls again (mid-batch),
    // and the segments both groups have passed go.
    ops.extend((0..40).map(|i| Op::Process { group: i % 2, who: i / 2, outcome: Outcome::Ok }));
    ops.extend([Op::Fill(20), Op::Fill(20), Op::Flush]);
    let setup = Setup { partitions: 2, durability: Durability::Buffered, max_deliveries: 3 };
    let model = run(&setup, &ops).unwrap();
    assert!(model.first.iter().all(|&f| f > 0), "retention ran in every partition: {:?}", model.first);
}

// ---- Bugs the random test found, shrunk ----

/// A batch fails, the queue is reopened (any takeover does the same: the
/// new holder does not isolate a batch that failed only once), the whole
/// batch comes again and fails again. Record 1 has now been handed to the
/// group twice, so its next delivery is its third; but once record 0 is
/// committed, record 1 arrives as the head of a batch with delivery count 2.
/// The checkpoint keeps one attempt count, for the record at its position,
/// and `read_batch` reports `(attempts + 1).max(2)` for any head below
/// `delivered_end`. So a poison record can fail more than `max_deliveries`
/// times before it is dead-lettered, and its dead letter under-reports.
#[test]
fn a_record_that_failed_twice_inside_a_batch_arrives_as_head_with_delivery_count_three() {
    use Outcome::*;
    let ops = [
        Op::Join { group: 1, max_batch: 2 },
        Op::SendBatch(vec![0, 0]),
        process(1, Err),
        Op::Reopen,
        process(1, Err),
        process(1, Ok), // record 0, alone: its third delivery
        process(1, Ok), // record 1, alone: its third delivery, reported as the second
    ];
    let setup = Setup { partitions: 1, durability: Durability::Sync, max_deliveries: 1 };
    run(&setup, &ops).unwrap();
}

//! Power-loss checking on the simulated disk (`durq::internals::sim`): a ledger of what
//! a workload was told, a deterministic workload, and the invariants every
//! queue recovered from a crash image must satisfy. Shared by
//! tests/it/power_loss.rs, tests/it/io_faults.rs and the `queue_ops` fuzz target
//! (which includes this file by path), so it depends on nothing else in
//! tests/common.
#![allow(dead_code)] // each user takes its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use durq::internals::sim::SimDisk;
use durq::{Consumer, ConsumerOptions, Durability, Options, Position, Queue};

pub const GROUP: &str = "g";

/// Where scratch directories go: tmpfs where there is one (syncs cost
/// nothing there, and images are many), else the temp dir.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// A simulated disk over a new, empty `live` directory under `scratch`;
/// the workload's queue goes in the returned `live/q`.
pub fn live_disk(scratch: &Path) -> (PathBuf, SimDisk) {
    let live = scratch.join("live");
    std::fs::create_dir(&live).unwrap();
    let disk = SimDisk::attach(&live).unwrap();
    (live.join("q"), disk)
}

/// The options every power-loss workload uses: two partitions and the
/// smallest segments, so a few dozen records roll segments.
pub fn options(durability: Durability) -> Options {
    Options::default().partitions(2).segment_bytes(64 << 10).record_bytes_max(16 << 10).durability(durability)
}

/// Consumer options that hand slots over quickly inside one thread.
pub fn consumer_options(max_batch: usize) -> ConsumerOptions {
    ConsumerOptions::default()
        .max_batch(max_batch)
        .rebalance_interval(Duration::from_millis(1))
        .retry_backoff(vec![Duration::ZERO])
}

/// The payload of send number `seq`: names its number, and its length
/// varies (up to about 6 KiB) so segments roll at different records.
pub fn payload(seq: u64) -> Vec<u8> {
    let len = [16usize, 100, 700, 3000, 40, 6000][(seq % 6) as usize];
    let mut p = format!("seq {seq:08} ").into_bytes();
    p.extend((0..len).map(|i| b'a' + ((seq as usize + i) % 26) as u8));
    p
}

/// The sequence number in a payload that [`payload`] made, if it is one,
/// intact.
pub fn seq_of(bytes: &[u8]) -> Option<u64> {
    let seq = std::str::from_utf8(bytes.get(4..12)?).ok()?.parse().ok()?;
    (payload(seq) == bytes).then_some(seq)
}

/// One acknowledged send.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub seq: u64,
    pub position: Position,
    /// The simulated disk's operation count when `send` returned.
    pub acked_at: u64,
    /// The operation count when it was known durable (`Sync`, or a
    /// completed `flush()` after it).
    pub durable_at: Option<u64>,
    /// For a send made durable by a `flush()`, the operation count when
    /// that flush began. A flush that began before a failed sync may have
    /// finished its own syncs before it, and rightly return `Ok` after it.
    pub flush_began: Option<u64>,
}

/// What a workload was told: every acknowledgement with the operation
/// count it came at, so a crash before operation `k` knows what was
/// promised.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Sends attempted: sequence numbers `0..attempted`.
    pub attempted: u64,
    pub acks: BTreeMap<u64, Ack>,
    /// Acknowledged commits: (partition, next offset, operation count).
    pub commits: Vec<(u32, u64, u64)>,
    /// Ranges of operations whose failures durq absorbs by design, so no
    /// caller hears of them: a consumer leaving (its locks go with it) and
    /// the handles closing at the end.
    pub quiet: Vec<std::ops::Range<u64>>,
}

impl Ledger {
    pub fn next_seq(&mut self) -> u64 {
        self.attempted += 1;
        self.attempted - 1
    }

    pub fn ack(&mut self, seq: u64, position: Position, at: u64, durable: bool) {
        self.acks
            .insert(seq, Ack { seq, position, acked_at: at, durable_at: durable.then_some(at), flush_began: None });
    }

    /// A `flush()` that began at operation count `began` returned `Ok` at
    /// `at`: every send acknowledged before it is durable.
    pub fn flushed(&mut self, began: u64, at: u64) {
        for ack in self.acks.values_mut() {
            if ack.durable_at.is_none() {
                ack.durable_at = Some(at);
                ack.flush_began = Some(began);
            }
        }
    }
}

/// What a recovered queue holds: each partition's first retained offset
/// and sequence numbers in offset order from there, and the group's
/// committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub logs: Vec<(u64, Vec<u64>)>,
    pub committed: Option<Vec<u64>>,
}

/// Opens the queue at `dir` as an application restarting after a crash
/// would (with the options it was created with), and checks it against
/// everything the ledger promised before operation `k`:
///
/// - every send acknowledged as durable is there, intact, at its position,
///   unless retention removed it after the group had committed past it;
/// - each partition holds only records that were sent, intact, in the order
///   they were sent, and an acknowledged record only at its acknowledged
///   position: a prefix of what was attempted, without holes;
/// - the group's committed offset is at least its last acknowledged commit
///   and at most the end of the partition.
pub fn check(dir: &Path, durability: Durability, ledger: &Ledger, k: u64) -> Result<Recovered, String> {
    let queue = Queue::open_with(dir, options(durability)).map_err(|e| format!("reopen: {e}"))?;
    let partitions = queue.config().partitions;
    let mut logs = Vec::new();
    for p in 0..partitions {
        let records = queue.read_at(p, 0, usize::MAX).map_err(|e| format!("read partition {p}: {e}"))?;
        let first = records.first().map_or(queue.offsets(p).unwrap().0, |r| r.position.offset);
        let mut seqs: Vec<u64> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let offset = r.position.offset;
            if offset != first + i as u64 {
                return Err(format!("partition {p}: offset {offset} where {} belongs", first + i as u64));
            }
            let seq = seq_of(&r.payload)
                .ok_or_else(|| format!("partition {p} offset {offset}: a record that was never sent, or damaged"))?;
            if seq >= ledger.attempted {
                return Err(format!("partition {p} offset {offset}: seq {seq} was never sent"));
            }
            if let Some(&prev) = seqs.last()
                && prev >= seq
            {
                return Err(format!("partition {p} offset {offset}: seq {seq} after seq {prev}"));
            }
            if let Some(ack) = ledger.acks.get(&seq)
                && (ack.position.partition != p || ack.position.offset != offset)
            {
                return Err(format!("seq {seq} is at {p}/{offset}, but was acknowledged at {:?}", ack.position));
            }
            seqs.push(seq);
        }
        logs.push((first, seqs));
    }
    let stat = queue.stat().map_err(|e| format!("stat: {e}"))?;
    let committed = match stat.groups.iter().find(|g| g.name == GROUP) {
        Some(g) => Some(
            g.committed
                .iter()
                .map(|c| c.ok_or("stat: the group's checkpoint is damaged"))
                .collect::<Result<Vec<u64>, _>>()?,
        ),
        None => None,
    };
    for ack in ledger.acks.values() {
        if ack.durable_at.is_some_and(|at| at <= k) {
            let (p, offset) = (ack.position.partition as usize, ack.position.offset);
            let (first, log) = &logs[p];
            if offset < *first {
                // Retention removed it: only after the group passed it.
                if committed.as_ref().is_none_or(|c| c[p] <= offset) {
                    return Err(format!(
                        "durable seq {} at {:?} removed before the group processed it",
                        ack.seq, ack.position
                    ));
                }
                continue;
            }
            let held = log.get((offset - first) as usize);
            if held != Some(&ack.seq) {
                return Err(format!(
                    "durable seq {} lost: {:?} holds {held:?} (partition has offsets {first}..{})",
                    ack.seq,
                    ack.position,
                    first + log.len() as u64
                ));
            }
        }
    }
    let promised = ledger.commits.iter().filter(|c| c.2 <= k);
    for &(p, next, _) in promised {
        let have = committed.as_ref().map_or(0, |c| c[p as usize]);
        if have < next {
            return Err(format!(
                "group {GROUP} partition {p}: committed {have}, but a commit to {next} was acknowledged"
            ));
        }
    }
    if let Some(c) = &committed {
        for (p, &next) in c.iter().enumerate() {
            let end = logs[p].0 + logs[p].1.len() as u64;
            if next > end {
                return Err(format!("group {GROUP} partition {p}: committed {next} past the end {end}"));
            }
        }
    }
    Ok(Recovered { logs, committed })
}

/// Processes one batch; records the commit in the ledger if it was
/// acknowledged. Errors (an injected fault) are returned, not raised.
pub fn process(consumer: &mut Consumer, disk: &SimDisk, ledger: &mut Ledger) -> durq::Result<usize> {
    let mut end = None;
    let n = consumer.process_timeout(Duration::from_millis(2), |batch| {
        let last = batch.last().expect("batches are never empty").position();
        end = Some((last.partition, last.offset + 1));
        Ok::<(), std::io::Error>(())
    })?;
    if let Some((p, next)) = end {
        ledger.commits.push((p, next, disk.ops()));
    }
    Ok(n)
}

/// The workload every crash point is taken from: two producers' sends
/// (single, batched, keyed) under `durability`, flushes, segment rolls in
/// both partitions, a group consuming and committing, a second member
/// joining (a slot handed over) and the first leaving (the rest taken
/// over). Runs to the end even when operations fail (an injected fault),
/// recording only what was acknowledged; returns the first error.
pub fn workload(dir: &Path, durability: Durability, disk: &SimDisk, ledger: &mut Ledger) -> Option<durq::Error> {
    let mut first_error = None;
    let mut note = |r: durq::Error| {
        first_error.get_or_insert(r);
    };
    let sync = durability == Durability::Sync;
    let queue = match Queue::open_with(dir, options(durability)) {
        Ok(q) => q,
        Err(e) => return Some(e),
    };
    let (a, b) = (queue.producer(), queue.producer());
    let mut first = queue.consumer_with(GROUP, consumer_options(4)).map_err(&mut note).ok();
    let mut second: Option<Consumer> = None;
    const ROUNDS: u64 = 40;
    for round in 0..ROUNDS {
        let seq = ledger.next_seq();
        match a.send(payload(seq)) {
            Ok(pos) => ledger.ack(seq, pos, disk.ops(), sync),
            Err(e) => note(e),
        }
        let seqs: Vec<u64> = (0..3).map(|_| ledger.next_seq()).collect();
        match b.send_batch(seqs.iter().map(|&s| payload(s))) {
            Ok(positions) => {
                for (s, pos) in seqs.iter().zip(positions) {
                    ledger.ack(*s, pos, disk.ops(), sync);
                }
            }
            Err(e) => note(e),
        }
        let seq = ledger.next_seq();
        match a.send_keyed(format!("user-{}", round % 3), payload(seq)) {
            Ok(pos) => ledger.ack(seq, pos, disk.ops(), sync),
            Err(e) => note(e),
        }
        if round % 3 == 2 {
            let began = disk.ops();
            match b.flush() {
                Ok(()) => ledger.flushed(began, disk.ops()),
                Err(e) => note(e),
            }
        }
        if round == ROUNDS / 2 {
            second = queue.consumer_with(GROUP, consumer_options(3)).map_err(&mut note).ok();
        }
        if round == 3 * ROUNDS / 4 {
            // Leaves: the second member takes its slots over.
            let from = disk.ops();
            first = None;
            ledger.quiet.push(from..disk.ops());
        }
        if round % 2 == 1 {
            for c in first.iter_mut().chain(second.iter_mut()) {
                if let Err(e) = process(c, disk, ledger) {
                    note(e);
                }
            }
        }
    }
    let from = disk.ops();
    drop((first, second, a, b, queue));
    ledger.quiet.push(from..disk.ops());
    first_error
}

// ---- Random operation sequences: the `queue_ops` fuzz target and the
// ---- proptest in tests/it/power_loss.rs

/// What an injected closure panic says (tests keep it off stderr).
pub const INJECTED_PANIC: &str = "power: injected panic";

/// How a closure given to `process` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err,
    /// Only where a panic may be caught: libFuzzer aborts on any panic.
    Panic,
}

/// One step of a random sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Send,
    SendBatch(u8),
    Flush,
    Join(u8),
    Leave(u8),
    Process(u8, Outcome),
    /// Drop every handle and open the queue again (a clean restart).
    Reopen,
    /// A power cut: the image a crash now leaves, in mode `.0` (modulo the
    /// number of modes), from seed `.1`, is checked and the run goes on
    /// from it.
    PowerCut(u8, u64),
}

/// Decodes a fuzzer's bytes into a durability and at most 48 steps.
pub fn decode_steps(data: &[u8], panics: bool) -> (Durability, Vec<Step>) {
    let durability = match data.first().copied().unwrap_or(0) % 3 {
        0 => Durability::Sync,
        1 => Durability::Buffered,
        _ => Durability::Interval(Duration::from_secs(3600)),
    };
    let mut steps = Vec::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let outcome = match arg % 4 {
            0 | 1 => Outcome::Ok,
            2 => Outcome::Err,
            _ if panics => Outcome::Panic,
            _ => Outcome::Err,
        };
        steps.push(match op % 9 {
            0 | 1 => Step::Send,
            2 => Step::SendBatch(*arg),
            3 => Step::Flush,
            4 => Step::Join(*arg),
            5 => Step::Leave(*arg),
            6 => Step::Process(*arg, outcome),
            7 => Step::Reopen,
            _ => {
                let mut seed = [0u8; 8];
                let n = rest.len().min(8);
                seed[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                Step::PowerCut(*arg, u64::from_le_bytes(seed))
            }
        });
        if steps.len() == 48 {
            break;
        }
    }
    (durability, steps)
}

/// The ledger of a queue that has just recovered into `r`: everything it
/// holds is durable now (recovery syncs what it keeps), and the group's
/// position is whatever it recovered to.
fn ledger_after_recovery(ledger: &Ledger, r: &Recovered) -> Ledger {
    let mut next = Ledger { attempted: ledger.attempted, ..Ledger::default() };
    for (p, (first, seqs)) in r.logs.iter().enumerate() {
        for (i, seq) in seqs.iter().enumerate() {
            let position = Position { partition: p as u32, offset: first + i as u64 };
            next.acks.insert(*seq, Ack { seq: *seq, position, acked_at: 0, durable_at: Some(0), flush_began: None });
        }
    }
    if let Some(c) = &r.committed {
        next.commits = c.iter().enumerate().map(|(p, &n)| (p as u32, n, 0)).collect();
    }
    next
}

/// Runs `steps` on a simulated disk under `scratch` and checks, at every
/// power cut and at the end, everything `check` checks; the ledger is the
/// model: what was acknowledged, as durable or not, and what was committed.
/// Panics with the step and the reason on the first violation.
pub fn run_steps(scratch: &Path, durability: Durability, steps: &[Step]) {
    let mut generation = 0;
    let mut dir = scratch.join("gen-0");
    std::fs::create_dir_all(&dir).unwrap();
    let mut disk = SimDisk::attach(&dir).unwrap();
    let mut ledger = Ledger::default();
    let mut queue = Some(Queue::open_with(dir.join("q"), options(durability)).unwrap());
    let mut members: [Option<Consumer>; 2] = [None, None];
    let sync = durability == Durability::Sync;
    for (i, step) in steps.iter().enumerate() {
        let q = queue.as_ref().expect("reopened after every restart");
        let at = |what: &str| format!("step {i} ({step:?}) of {steps:?}: {what}");
        match *step {
            Step::Send => {
                let seq = ledger.next_seq();
                let pos = q.producer().send(payload(seq)).unwrap_or_else(|e| panic!("{}", at(&e.to_string())));
                ledger.ack(seq, pos, disk.ops(), sync);
            }
            Step::SendBatch(n) => {
                let seqs: Vec<u64> = (0..n % 5 + 1).map(|_| ledger.next_seq()).collect();
                let positions = q
                    .producer()
                    .send_batch(seqs.iter().map(|&s| payload(s)))
                    .unwrap_or_else(|e| panic!("{}", at(&e.to_string())));
                for (s, pos) in seqs.iter().zip(positions) {
                    ledger.ack(*s, pos, disk.ops(), sync);
                }
            }
            Step::Flush => {
                let began = disk.ops();
                q.producer().flush().unwrap_or_else(|e| panic!("{}", at(&e.to_string())));
                ledger.flushed(began, disk.ops());
            }
            Step::Join(w) => {
                let slot = &mut members[w as usize % 2];
                if slot.is_none() {
                    let options = consumer_options(w as usize % 4 + 1);
                    *slot = Some(q.consumer_with(GROUP, options).unwrap_or_else(|e| panic!("{}", at(&e.to_string()))));
                }
            }
            Step::Leave(w) => members[w as usize % 2] = None,
            Step::Process(w, outcome) => {
                let Some(consumer) = members[w as usize % 2].as_mut() else { continue };
                let mut end = None;
                let r = consumer.process_timeout(Duration::from_millis(1), |batch| {
                    let last = batch.last().expect("batches are never empty").position();
                    end = Some((last.partition, last.offset + 1));
                    match outcome {
                        Outcome::Ok => Ok(()),
                        Outcome::Err => Err(std::io::Error::other("queue_ops: injected error")),
                        Outcome::Panic => std::panic::panic_any(INJECTED_PANIC),
                    }
                });
                match (outcome, r, end) {
                    (Outcome::Ok, Ok(_), Some((p, next))) => ledger.commits.push((p, next, disk.ops())),
                    (Outcome::Ok, Ok(0), None) => {}
                    (Outcome::Err, Err(durq::Error::Process(_)), Some(_))
                    | (Outcome::Panic, Err(durq::Error::ProcessPanicked(_)), Some(_))
                    | (_, Ok(0), None) => {}
                    (_, r, end) => panic!("{}", at(&format!("process gave {r:?} for a batch ending at {end:?}"))),
                }
            }
            Step::Reopen => {
                members = [None, None];
                drop(queue.take()); // closed before it is opened again
                queue = Some(Queue::open_with(dir.join("q"), options(durability)).unwrap());
            }
            Step::PowerCut(mode, seed) => {
                let point = disk.crash_point_now();
                generation += 1;
                let image = scratch.join(format!("gen-{generation}"));
                let mode =
                    durq::internals::sim::CrashMode::ALL[mode as usize % durq::internals::sim::CrashMode::ALL.len()];
                disk.crash_image(point, mode, seed, &image).unwrap();
                members = [None, None];
                drop(queue.take());
                drop(disk);
                let recovered = check(&image.join("q"), durability, &ledger, u64::MAX).unwrap_or_else(|e| {
                    panic!("{}", at(&format!("after a power cut ({mode:?}, seed {seed:#x}): {e}")))
                });
                ledger = ledger_after_recovery(&ledger, &recovered);
                dir = image;
                disk = SimDisk::attach(&dir).unwrap();
                queue = Some(Queue::open_with(dir.join("q"), options(durability)).unwrap());
            }
        }
    }
    let point = disk.crash_point_now();
    let image = scratch.join("final");
    disk.crash_image(point, durq::internals::sim::CrashMode::DropPending, 0, &image).unwrap();
    drop((members, queue, disk));
    check(&image.join("q"), durability, &ledger, u64::MAX)
        .unwrap_or_else(|e| panic!("{steps:?}: after a power cut at the end: {e}"));
}

//! Producers SIGKILLed at random moments lose no acknowledged record.
//!
//! The story: a test re-runs its own binary as child producer processes
//! (`current_exe() --exact child`, with `DURQ_CHILD_ROLE=producer`; see
//! `common::procs`). A child opens the queue, prints `ready`, then sends
//! records under `Durability::Sync`, printing `ack <partition> <offset> <id>`
//! after each `send` returned `Ok`. The parent SIGKILLs it at a random
//! moment (seeded, replayable with `DURQ_SEED`), collects every `ack` line
//! it printed before it died, reopens the queue (in the parent, or by letting
//! the next child carry on), and reads it with a durable audit group. The
//! [`Ledger`] checks every record as it is read: offsets dense and each
//! delivered once, payloads intact, no id twice (children never retry, so
//! there is nothing to deduplicate), each writer in send order, and every
//! acknowledged record present at the offset its `send` returned. Any
//! consumer error (`Error::Corrupt` above all) fails the test.
//!
//! Segments are 64 KiB, so kills also land in segment rolls. Kills come in
//! three kinds: one producer at a time with the parent holding the queue open
//! or not (so the next opener runs recovery, or the next locker repairs);
//! three producers at once where one dies while the others must carry on;
//! a producer frozen with SIGSTOP *while it holds the partition's append
//! mutex* and killed there, which forces the robust mutex's owner-died repair
//! every time; and a producer frozen and killed in the middle of writing a
//! `send_batch`, whose batch must come back all or nothing.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{self, FUTEX_OWNER_DIED, FUTEX_TID_MASK, Ledger, Proc, Rng, payload, spawn_producer};
use durq::{Consumer, ConsumerOptions, Durability, Options, Queue};

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("producer") => procs::run_producer(),
        Some("batcher") => run_batcher(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// Larger payloads mean more segment rolls, which hold the append mutex.
const MAX_LEN: u64 = 3000;
/// Effectively endless: these producers are killed, never finish.
const ENDLESS: u64 = 1_000_000;
/// Kills of a producer caught holding the append mutex.
const KILLS_HOLDING: usize = 16;

fn create(path: &Path, partitions: u32) {
    drop(Queue::open_with(path, common::small().partitions(partitions).durability(Durability::Sync)).expect("create"));
}

fn audit(queue: &Queue) -> Consumer {
    procs::join(queue, "audit", ConsumerOptions::default()).expect("audit consumer")
}

#[test]
fn sync_producer_killed_at_random_moments_loses_no_acknowledged_record() {
    let mut rng = Rng::new(procs::seed(0x5eed_0001));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    create(&path, 1);
    let mut ledger = Ledger::new(1);
    let (mut kills, mut early_kills, mut died_holding_mutex) = (0, 0, 0);
    for round in 0..8 {
        // Even rounds: the parent keeps the queue open, so children join the
        // live control file and a dead holder's mutex is repaired by the next
        // locker. Odd rounds: nobody has the queue open between children, so
        // every reopen runs recovery from the files.
        let mut held = (round % 2 == 0).then(|| {
            let q = Queue::open_existing(&path).expect("open");
            let c = audit(&q);
            (q, c)
        });
        for k in 0..5 {
            let writer = format!("r{round}k{k}");
            let mut child = spawn_producer(module_path!(), &path, &writer, ENDLESS, rng.next_u64(), MAX_LEN, false);
            if rng.below(5) == 0 {
                // Sometimes before `ready`: in exec, or in the open, which may
                // be running recovery under the open lock.
                std::thread::sleep(rng.millis(10));
                early_kills += 1;
            } else {
                child.wait_line("ready");
                std::thread::sleep(rng.millis(30));
            }
            child.sigkill();
            kills += 1;
            if procs::mutex_word(&path, 0) & FUTEX_OWNER_DIED != 0 {
                died_holding_mutex += 1;
            }
            ledger.ack_lines(&child.lines);
            match &mut held {
                Some((_, c)) => {
                    ledger.drain(c, Duration::from_millis(20));
                }
                None => {
                    let q = Queue::open_existing(&path).expect("reopen after kill");
                    ledger.drain(&mut audit(&q), Duration::from_millis(20));
                }
            }
            ledger.check_acked();
        }
    }
    let q = Queue::open_existing(&path).expect("final reopen");
    ledger.drain_to(&mut audit(&q), &[q.offsets(0).unwrap().1]);
    ledger.check_acked();
    assert_eq!(q.offsets(0).unwrap().1, ledger.next[0], "the audit read the whole log");
    // The kills must have hit producers at work, or this proves nothing.
    assert!(ledger.acked.len() >= 40, "only {} acknowledged sends", ledger.acked.len());
    // Rolled: several segments, or retention already removed the ones the
    // audit group passed.
    assert!(common::segments(&path, 0).len() > 3 || q.offsets(0).unwrap().0 > 0, "segments rolled");
    eprintln!(
        "{kills} kills ({early_kills} before ready, {died_holding_mutex} holding the append mutex), {} acknowledged, {} stored",
        ledger.acked.len(),
        ledger.next[0]
    );
}

#[test]
fn concurrent_producers_carry_on_after_a_peer_is_killed() {
    let mut rng = Rng::new(procs::seed(0x5eed_0002));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    create(&path, 2);
    let mut ledger = Ledger::new(2);
    let (mut kills, mut owner_died_seen, mut killed_holding, mut spawned) = (0, 0, 0, 0);
    let mut spawn = |rng: &mut Rng| {
        spawned += 1;
        let mut p =
            spawn_producer(module_path!(), &path, &format!("c{spawned}"), ENDLESS, rng.next_u64(), MAX_LEN, false);
        p.wait_line("ready");
        p
    };
    // The parent holds the queue open throughout, so the children share one
    // live control file: a dead holder's mutex can only be repaired by the
    // next locker, never by a fresh open.
    let q = Queue::open_existing(&path).expect("open");
    let mut c = audit(&q);
    for _round in 0..4 {
        let mut live: Vec<Proc> = (0..3).map(|_| spawn(&mut rng)).collect();
        for k in 0..5 {
            std::thread::sleep(rng.millis(30));
            let mut victim = live.swap_remove(rng.below(live.len() as u64) as usize);
            if cfg!(target_env = "gnu") && k % 2 == 1 {
                // Killed holding a mutex the survivors are queueing for: the
                // kernel hands it to a waiter, marked owner-died. (Finding
                // the holder reads glibc's mutex layout.)
                kill_while_holding_the_mutex(&mut victim, &path, 2, &mut rng);
                killed_holding += 1;
            } else {
                victim.sigkill();
            }
            kills += 1;
            if (0..2).any(|p| procs::mutex_word(&path, p) & FUTEX_OWNER_DIED != 0) {
                owner_died_seen += 1;
            }
            ledger.ack_lines(&victim.lines);
            ledger.drain_acked(&mut c);
            // The survivors must keep going: a mutex left locked or
            // inconsistent by the dead one would stop them. An offset at or
            // past the end of the log at this moment was appended after the
            // kill.
            let end = [q.offsets(0).unwrap().1, q.offsets(1).unwrap().1];
            for s in &mut live {
                s.wait_for(procs::PATIENCE, |l| {
                    procs::parse_ack(l).is_some_and(|(pos, _)| pos.offset >= end[pos.partition as usize])
                });
            }
            live.push(spawn(&mut rng));
        }
        for mut p in live {
            p.sigkill();
            kills += 1;
            ledger.ack_lines(&p.lines);
        }
    }
    // Records a killed producer published but never synced are not visible
    // yet: only what was acknowledged is sure to be readable here.
    ledger.drain_acked(&mut c);
    drop(c);
    drop(q);
    // Nobody has it open now: the reopen runs recovery from the files.
    let q = Queue::open_existing(&path).expect("final reopen");
    ledger.drain_to(&mut audit(&q), &[q.offsets(0).unwrap().1, q.offsets(1).unwrap().1]);
    ledger.check_acked();
    assert_eq!(
        (q.offsets(0).unwrap().1, q.offsets(1).unwrap().1),
        (ledger.next[0], ledger.next[1]),
        "the audit read the whole log"
    );
    assert!(ledger.acked.len() >= 40, "only {} acknowledged sends", ledger.acked.len());
    eprintln!(
        "{kills} kills of concurrent producers ({killed_holding} holding an append mutex, {owner_died_seen} seen marked \
         owner-died), {} acknowledged, {:?} stored",
        ledger.acked.len(),
        ledger.next
    );
}

/// Freezes `child` at random moments until it is caught holding the append
/// mutex of one of the first `partitions` partitions, then SIGKILLs it there.
/// Returns how many freezes it took.
fn kill_while_holding_the_mutex(child: &mut Proc, path: &Path, partitions: u32, rng: &mut Rng) -> u32 {
    for attempt in 1..=5000 {
        std::thread::sleep(rng.millis(2));
        procs::freeze(child);
        let tids = procs::threads(child.pid());
        if (0..partitions).any(|p| tids.contains(&(procs::mutex_word(path, p) & FUTEX_TID_MASK))) {
            child.sigkill();
            return attempt;
        }
        procs::thaw(child);
    }
    panic!("never caught {} holding an append mutex", child.name);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn producer_killed_holding_the_append_mutex_is_repaired_by_the_next_locker() {
    let mut rng = Rng::new(procs::seed(0x5eed_0003));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    create(&path, 1);
    let mut ledger = Ledger::new(1);
    // Held open throughout: the control file (and the dead holder's mark in
    // the mutex) stays live, so only the owner-died repair can fix it.
    let q = Queue::open_existing(&path).expect("open");
    let mut c = audit(&q);
    let producer = q.producer();
    let started = Instant::now();
    let mut freezes = 0;
    for k in 0..KILLS_HOLDING {
        let mut child =
            spawn_producer(module_path!(), &path, &format!("m{k}"), ENDLESS, rng.next_u64(), MAX_LEN, false);
        child.wait_line("ready");
        freezes += kill_while_holding_the_mutex(&mut child, &path, 1, &mut rng);
        let word = procs::mutex_word(&path, 0);
        assert!(
            word & FUTEX_OWNER_DIED != 0 && word & FUTEX_TID_MASK == 0,
            "kill {k}: the kernel must mark the dead holder's mutex owner-died, word is {word:#x}"
        );
        ledger.ack_lines(&child.lines);
        // What the dead holder acknowledged is visible before any repair.
        ledger.drain_acked(&mut c);
        if k % 2 == 0 {
            // The parent is the next locker: its send repairs the tail (a torn
            // frame of the dead holder is zeroed) and lands right after the
            // last complete record.
            let id = format!("parent-{k}");
            let pos = producer.send(payload(&id, 10)).expect("send after the holder died");
            ledger.ack(&id, pos);
        }
        // Odd kills: the next child is the next locker. Either way every
        // later send needs the mutex: had the repair not marked it
        // consistent, it would now be unrecoverable and they would fail.
    }
    let mut last = spawn_producer(module_path!(), &path, "last", 50, rng.next_u64(), MAX_LEN, false);
    last.finish();
    ledger.ack_lines(&last.lines);
    ledger.drain_to(&mut c, &[q.offsets(0).unwrap().1]);
    ledger.check_acked();
    assert_eq!(q.offsets(0).unwrap().1, ledger.next[0], "the audit read the whole log");
    drop((c, producer, q));
    let q = Queue::open_existing(&path).expect("reopen");
    assert_eq!(ledger.drain(&mut audit(&q), Duration::from_millis(50)), 0, "nothing new after recovery");
    ledger.check_acked();
    eprintln!(
        "{KILLS_HOLDING} kills holding the append mutex ({freezes} freezes), {} acknowledged, {} stored, in {:?}",
        ledger.acked.len(),
        ledger.next[0],
        started.elapsed()
    );
}

/// Records per batch of the batch test; with 4 KB each, writing one batch
/// takes long enough that a freeze often lands inside it.
const BATCH: usize = 200;

/// The batcher role: endless `send_batch`es of [`BATCH`] records
/// `<writer>x<batch>-<i>`, printing `batch <first offset> <writer>x<batch>`
/// after each returned `Ok`.
fn run_batcher() -> ! {
    let queue = Queue::open_existing(procs::var("DURQ_DIR")).unwrap_or_else(|e| procs::fail(e));
    let writer = procs::var("DURQ_WRITER");
    let producer = queue.producer();
    procs::say("ready");
    for b in 0.. {
        let name = format!("{writer}x{b}");
        let batch: Vec<Vec<u8>> = (0..BATCH).map(|i| payload(&format!("{name}-{i}"), 4000)).collect();
        match producer.send_batch(&batch) {
            Ok(pos) => procs::say(format_args!("batch {} {name}", pos[0].offset)),
            Err(e) => procs::fail(format_args!("send_batch {name}: {e}")),
        }
    }
    unreachable!()
}

/// Freezes `child` at random moments until it is caught holding the append
/// mutex with bytes already written past the published tail (inside an
/// append, before it publishes), then SIGKILLs it there. Returns how many
/// freezes it took.
fn kill_mid_write(child: &mut Proc, path: &Path, rng: &mut Rng) -> u32 {
    use std::os::unix::fs::FileExt;
    for attempt in 1..=20_000 {
        std::thread::sleep(rng.millis(1));
        procs::freeze(child);
        let owner = procs::mutex_word(path, 0) & FUTEX_TID_MASK;
        if owner != 0 && procs::threads(child.pid()).contains(&owner) {
            let (base, tail) = procs::published_tail(path, 0);
            let seg = std::fs::File::open(path.join("p0000").join(format!("{base:020}.seg"))).expect("tail segment");
            let mut past_tail = [0u8; 64];
            seg.read_exact_at(&mut past_tail, tail).expect("read past the tail");
            if past_tail.iter().any(|&b| b != 0) {
                child.sigkill();
                return attempt;
            }
        }
        procs::thaw(child);
    }
    panic!("never caught {} in the middle of an append", child.name);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn batch_cut_short_by_sigkill_comes_back_all_or_nothing() {
    // `Partition::append` (src/log/partition.rs) says a batch that fits one
    // segment "is written to one segment, all or nothing". A producer killed
    // while writing one must therefore leave either the whole batch or none
    // of it, after recovery by the next locker or by the next open.
    let mut rng = Rng::new(procs::seed(0x5eed_0005));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("q");
    drop(Queue::open_with(&path, Options::default().segment_bytes(16 << 20)).expect("create"));
    let mut acked = Vec::new();
    let mut freezes = 0;
    for k in 0..4 {
        let mut child = procs::spawn(
            module_path!(),
            &format!("batcher{k}"),
            "batcher",
            &[("DURQ_DIR", path.display().to_string()), ("DURQ_WRITER", format!("b{k}"))],
        );
        child.wait_line("ready");
        freezes += kill_mid_write(&mut child, &path, &mut rng);
        acked.extend(child.lines.iter().filter_map(|l| l.strip_prefix("batch ")?.split(' ').nth(1)).map(str::to_owned));
    }
    let q = Queue::open_existing(&path).expect("reopen");
    let mut ledger = Ledger::new(1);
    ledger.drain(&mut audit(&q), Duration::from_millis(50));
    let mut per_batch: std::collections::BTreeMap<&str, usize> = Default::default();
    for id in ledger.seen.keys() {
        *per_batch.entry(procs::split_id(id).0).or_default() += 1;
    }
    for name in &acked {
        assert_eq!(per_batch.get(name.as_str()), Some(&BATCH), "acknowledged batch {name} incomplete");
    }
    let partial: Vec<_> = per_batch.iter().filter(|(_, n)| **n != BATCH).collect();
    eprintln!("4 kills inside send_batch ({freezes} freezes), {} batches acknowledged", acked.len());
    assert!(partial.is_empty(), "batches cut short by a kill survive in part (records kept of {BATCH}): {partial:?}");
}

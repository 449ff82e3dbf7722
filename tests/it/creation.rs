//! Many processes creating one new queue at once.
//!
//! The story: every round, several children of this test binary (see
//! `common::procs`) are started, open nothing, and say `ready`; the parent
//! then tells all of them `go`, and each calls `Queue::open_with` on the
//! same path, which does not exist yet, so they really race to create it.
//! A creator that opened the queue sends a few records and reports each
//! acknowledgement; one that was refused reports why.
//!
//! With identical options, every creator must succeed and every
//! acknowledged record must be where its `send` said. With options that
//! differ (the partition count), the stored options are those of one
//! creator; every creator that asked for them succeeds, every other one
//! fails with `Error::OptionsConflict`, and the directory holds exactly the
//! winner's queue: no partition directory of a loser left behind.
//!
//! `DURQ_CREATION_ROUNDS` sets the rounds per test (default 40; 8 creators
//! each). Before creation took the open lock, 1 to 4 creators in 400 with
//! the same options failed (`create …/p0000/00000000000000000000.seg: File
//! exists`, or `… is not a durq queue: it is not empty (found "durq.meta")
//! and has no durq.meta`), and with differing options most rounds left a
//! loser's partition directory behind in the winner's queue.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::procs::{self, Ledger, Proc, Rng, payload, say};
use durq::{Error, Options, Position, Queue};

/// Creators started at once in every round.
const CREATORS: usize = 8;
/// Records each successful creator sends.
const SENDS: u64 = 3;
/// Each creator waits a random time below this after the `go`, so that
/// over the rounds every step of one creation meets another's.
const DELAY_US_MAX: u64 = 3000;

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("creator") => run_creator(),
        Some(other) => panic!("unknown role {other}"),
    }
}

fn options(partitions: u32) -> Options {
    Options::default().partitions(partitions).segment_bytes(64 << 10).record_bytes_max(4096)
}

/// Says `ready`, waits for a line on stdin, then opens or creates the queue
/// at `DURQ_DIR` with `DURQ_PARTITIONS` partitions. Prints `opened`, then
/// `ack <p> <offset> <id>` per send and `done`; or `conflict <option>` if
/// the stored options differ; or `failed <error>` for any other error.
fn run_creator() -> ! {
    let dir = procs::var("DURQ_DIR");
    let writer = procs::var("DURQ_WRITER");
    let partitions = procs::num("DURQ_PARTITIONS") as u32;
    say("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("read go");
    std::thread::sleep(Duration::from_micros(procs::num("DURQ_DELAY_US")));
    match Queue::open_with(&dir, options(partitions)) {
        Ok(queue) => {
            say("opened");
            let producer = queue.producer();
            for seq in 0..SENDS {
                let id = format!("{writer}-{seq}");
                match producer.send(payload(&id, 40)) {
                    Ok(pos) => say(format_args!("ack {} {} {id}", pos.partition, pos.offset)),
                    Err(e) => say(format_args!("failed send {id}: {e}")),
                }
            }
        }
        Err(Error::OptionsConflict { option, .. }) => say(format_args!("conflict {option}")),
        Err(e) => say(format_args!("failed {e}")),
    }
    say("done");
    std::process::exit(0)
}

/// What one creator reported.
#[derive(Debug)]
enum Outcome {
    Opened,
    Conflict(String),
    Failed(String),
}

/// Starts `partitions.len()` creators on the new queue at `dir` (creator
/// `i` asks for `partitions[i]`), lets them go at once, and returns what
/// each reported, and every acknowledged send.
fn race(dir: &Path, round: usize, partitions: &[u32]) -> (Vec<Outcome>, Vec<(Position, String)>) {
    let mut rng = Rng::new(round as u64);
    let mut creators: Vec<Proc> = partitions
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let writer = format!("r{round}c{i}");
            procs::spawn(
                module_path!(),
                &writer,
                "creator",
                &[
                    ("DURQ_DIR", dir.display().to_string()),
                    ("DURQ_WRITER", writer.clone()),
                    ("DURQ_PARTITIONS", n.to_string()),
                    ("DURQ_DELAY_US", rng.below(DELAY_US_MAX).to_string()),
                ],
            )
        })
        .collect();
    for c in &mut creators {
        c.wait_line("ready");
    }
    for c in &mut creators {
        c.tell("go");
    }
    let mut acks = Vec::new();
    let outcomes = creators
        .iter_mut()
        .map(|c| {
            c.finish();
            acks.extend(c.acks().map(|(pos, id)| (pos, id.to_owned())));
            let outcome = c.lines.iter().find_map(|l| {
                if l == "opened" {
                    Some(Outcome::Opened)
                } else if let Some(option) = l.strip_prefix("conflict ") {
                    Some(Outcome::Conflict(option.to_owned()))
                } else {
                    l.strip_prefix("failed ").map(|e| Outcome::Failed(e.to_owned()))
                }
            });
            let failed_send = c.lines.iter().find(|l| l.starts_with("failed send"));
            match (outcome, failed_send) {
                (_, Some(send)) => Outcome::Failed(send.clone()),
                (Some(outcome), None) => outcome,
                (None, None) => panic!("creator {} reported nothing: {:?}", c.name, c.lines),
            }
        })
        .collect();
    (outcomes, acks)
}

/// Reads the whole queue at `dir` and checks it holds `acks`: dense
/// offsets, intact payloads, every acknowledged record where `send` said.
fn check_records(dir: &Path, acks: &[(Position, String)]) {
    let queue = Queue::open_existing(dir).expect("reopen");
    let mut ledger = Ledger::new(queue.config().partitions);
    for (pos, id) in acks {
        ledger.ack(id, *pos);
    }
    for p in 0..queue.config().partitions {
        for r in queue.read_at(p, 0, usize::MAX).expect("read") {
            ledger.absorb(r.position, &r.payload);
        }
    }
    ledger.check_acked();
}

fn rounds() -> usize {
    std::env::var("DURQ_CREATION_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
}

/// The errors creators reported, with their round.
fn failures(round: usize, results: &[Outcome]) -> impl Iterator<Item = String> + '_ {
    results.iter().filter_map(move |o| match o {
        Outcome::Failed(e) => Some(format!("round {round}: {e}")),
        _ => None,
    })
}

#[test]
fn creators_with_the_same_options_all_open_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut tried, mut failed) = (0, Vec::new());
    for round in 0..rounds() {
        let dir = tmp.path().join(format!("q{round}"));
        let (results, acks) = race(&dir, round, &[2; CREATORS]);
        tried += CREATORS;
        failed.extend(failures(round, &results));
        check_records(&dir, &acks);
    }
    eprintln!("{tried} concurrent creators with the same options, {} failed", failed.len());
    assert!(failed.is_empty(), "{} of {tried} creators failed; the first: {}", failed.len(), failed[0]);
}

#[test]
fn creators_with_different_options_one_wins_the_others_get_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let asked: Vec<u32> = (0..CREATORS as u32).map(|i| 1 + i % 3).collect();
    let (mut tried, mut failed) = (0, Vec::new());
    let mut stored_per_round = [0usize; 4];
    for round in 0..rounds() {
        let dir = tmp.path().join(format!("q{round}"));
        let (results, acks) = race(&dir, round, &asked);
        tried += CREATORS;
        failed.extend(failures(round, &results));
        let stored = Queue::open_existing(&dir).expect("a creator made the queue").config().partitions;
        stored_per_round[stored as usize] += 1;
        for (i, o) in results.iter().enumerate() {
            match o {
                Outcome::Opened => assert_eq!(asked[i], stored, "round {round}: creator {i} opened other options"),
                Outcome::Conflict(option) => {
                    assert_eq!(option, "partitions", "round {round}: creator {i}");
                    assert_ne!(asked[i], stored, "round {round}: creator {i} was refused the stored options");
                }
                Outcome::Failed(_) => {}
            }
        }
        // Nothing a loser made is left: only the winner's partitions.
        let partition_dirs: Vec<String> = names(&dir).into_iter().filter(|n| n.starts_with('p')).collect();
        let expected: Vec<String> = (0..stored).map(|p| format!("p{p:04}")).collect();
        if partition_dirs != expected {
            failed.push(format!("round {round}: a queue of {stored} partitions holds {partition_dirs:?}"));
        }
        check_records(&dir, &acks);
    }
    eprintln!(
        "{tried} concurrent creators with differing options, {} failures; rounds won by 1, 2, 3 partitions: {:?}",
        failed.len(),
        &stored_per_round[1..]
    );
    assert!(failed.is_empty(), "{} failures among {tried} creators; the first: {}", failed.len(), failed[0]);
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

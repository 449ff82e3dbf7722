//! A worker pool: several processes in one consumer group share a queue's
//! partitions, and when one is killed the others take its partitions over.
//!
//! The example is its own worker: run without arguments, it creates a queue
//! of 4 partitions, sends 300 orders and starts 3 copies of itself as
//! workers of the group "red-packet". Each partition is a slot that one
//! live member holds; the members split the slots fairly (2, 1, 1), and
//! each worker prints the slots it holds whenever they change. Once the
//! split is made, the example SIGKILLs one worker in the middle of its work:
//! the kernel releases the dead process's locks at once, a survivor takes
//! its slots at its next membership check and resumes from their
//! checkpoints. The audit at the end counts the orders processed: all 300,
//! plus a few twice (the dead worker's batch in flight, which it never
//! committed: at-least-once).
//!
//! Run: `cargo run --release --example worker_pool`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, Queue};

const GROUP: &str = "red-packet";
const PARTITIONS: u32 = 4;
const WORKERS: usize = 3;
const ORDERS: u64 = 300;
/// One order's work: long enough that the kill lands in the middle of it.
const WORK: Duration = Duration::from_millis(5);
/// The example gives up (and fails) if the pool has not finished by then.
const DEADLINE: Duration = Duration::from_secs(60);

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.as_slice() {
        [_, mode, dir] if mode == "worker" => worker(Path::new(dir)),
        _ => pool(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker_pool: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One worker: processes orders until the group has processed them all,
/// printing `holds P,P` when its slots change, `done P O` per order and
/// `leaves` at the end.
fn worker(dir: &Path) -> Result<(), Failure> {
    let queue = Queue::open_existing(dir)?;
    let mut consumer = queue.consumer_with(GROUP, ConsumerOptions::default().max_batch(10))?;
    let mut held = Vec::new();
    loop {
        consumer.process_timeout(Duration::from_millis(50), |batch| {
            for m in batch {
                std::thread::sleep(WORK); // the work: granting a red packet
                println!("done {} {}", m.position().partition, m.position().offset);
            }
            Ok::<(), std::io::Error>(())
        })?;
        // Slots change hands between batches, never in the middle of one.
        if consumer.held_partitions() != held {
            held = consumer.held_partitions();
            let list: Vec<String> = held.iter().map(u32::to_string).collect();
            println!("holds {}", list.join(","));
        }
        // `committed` reads the checkpoints of the slots others hold.
        if consumer.committed()?.iter().sum::<u64>() == ORDERS {
            println!("leaves");
            return Ok(());
        }
    }
}

/// The pool: the queue, the orders, the workers, the kill and the audit.
fn pool() -> Result<(), Failure> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("orders");
    let queue = Queue::open_with(&dir, Options::default().partitions(PARTITIONS))?;
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("order {i}")).collect();
    // A batch goes to one partition, the next batch to the next one: a
    // quarter of the orders in each, with one sync per batch.
    for quarter in orders.chunks((ORDERS / u64::from(PARTITIONS)) as usize) {
        queue.producer().send_batch(quarter)?; // durable when it returns
    }
    drop(queue);

    let (lines, from_workers) = mpsc::channel();
    let mut workers: Vec<Child> = Vec::new();
    for id in 0..WORKERS {
        let mut child =
            Command::new(std::env::current_exe()?).arg("worker").arg(&dir).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send((id, line));
            }
        });
        workers.push(child);
    }
    drop(lines); // the channel closes once every worker's stdout has

    let started = Instant::now();
    let mut holds: BTreeMap<usize, String> = BTreeMap::new();
    let mut done: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let mut killed = false;
    let mut done_by_0_since_split = 0;
    loop {
        let (id, line) = match from_workers.recv_timeout(DEADLINE.saturating_sub(started.elapsed())) {
            Ok(said) => said,
            // Every worker closed its stdout: they are leaving.
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                for w in &mut workers {
                    w.kill()?;
                }
                return Err(format!("the pool did not finish within {DEADLINE:?}").into());
            }
        };
        let at_ms = started.elapsed().as_millis();
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("holds"), slots, None) => {
                let slots = slots.unwrap_or_default();
                println!("{at_ms:>5} ms  worker {id} holds partitions [{slots}]");
                holds.insert(id, slots.to_owned());
            }
            (Some("leaves"), None, None) => println!("{at_ms:>5} ms  worker {id} leaves: the group is done"),
            (Some("done"), Some(p), Some(o)) => *done.entry((p.parse()?, o.parse()?)).or_default() += 1,
            _ => return Err(format!("worker {id} said {line:?}").into()),
        }
        // Once every worker holds a slot, let worker 0 start a batch (its
        // `holds` line comes between batches), and kill it three orders in.
        if holds.values().filter(|slots| !slots.is_empty()).count() == WORKERS && !killed {
            if id == 0 && line.starts_with("done") {
                done_by_0_since_split += 1;
            }
            if done_by_0_since_split == 3 {
                workers[0].kill()?; // SIGKILL: no destructor, no goodbye
                println!("{at_ms:>5} ms  killed worker 0 in the middle of a batch; it held [{}]", holds[&0]);
                killed = true;
            }
        }
    }
    for mut w in workers {
        w.wait()?;
    }

    let processed = done.len() as u64;
    let redelivered: u32 = done.values().map(|n| n - 1).sum();
    println!(
        "orders: {ORDERS} sent, {processed} processed, {redelivered} processed twice, {} lost",
        ORDERS - processed
    );
    if processed != ORDERS {
        return Err("orders were lost".into());
    }
    Ok(())
}

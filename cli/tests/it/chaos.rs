//! Chaos, in the style of Jepsen's "total queue" test: one producer process
//! fed unique ids at a steady pace, three `durq consume` members of one
//! group, and for several seconds random SIGKILLs (followed by a restart)
//! and SIGSTOPs longer than the lease timeout (the member is then "hung",
//! its slots are taken over with a new fencing epoch, and its in-flight
//! batch is refused when it resumes). Then the producer stops, the members
//! leave, and a last member drains the group.
//!
//! Checked: every acknowledged id was processed at least once (lost = 0);
//! nothing was processed that was never sent; duplicates come only from
//! batches in flight when their holder died or was fenced, so there are at
//! most `(kills + stops) * MAX_BATCH` of them; the group ends committed at
//! the end of every partition. The schedule is random but seeded: the seed
//! is printed, and `DURQ_SEED=<seed>` replays it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::rng::Rng;
use crate::common::{PATIENCE, Proc};

const PARTITIONS: usize = 4;
const CONSUMERS: usize = 3;
const MAX_BATCH: usize = 16;
/// How long kills and stops go on.
const CHAOS: Duration = Duration::from_secs(7);
/// One new id per this many milliseconds (about 500 per second).
const PACE_MS: u128 = 2;
/// The members' lease timeout, in seconds; stops last longer.
const LEASE_TIMEOUT_SECS: &str = "1";
const STOP_MS: (u64, u64) = (1500, 2500);
/// Pause between two chaos events.
const BETWEEN_MS: (u64, u64) = (300, 900);

/// One consumer position in the test: its current process, and every
/// earlier incarnation (killed) with how many times each was stopped.
struct Member {
    current: Proc,
    current_stops: u32,
    stopped_until: Option<Instant>,
    past: Vec<(Proc, u32)>,
}

fn consume_args(dir: &str) -> Vec<String> {
    let max_batch = MAX_BATCH.to_string();
    ["consume", dir, "--group", "g", "--lease-timeout", LEASE_TIMEOUT_SECS, "--max-batch", &max_batch]
        .map(String::from)
        .to_vec()
}

#[test]
fn acknowledged_messages_survive_kills_and_stalls_of_consumers() {
    let seed = crate::common::seed();
    eprintln!("chaos: seed {seed} (replay with DURQ_SEED={seed})");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("q");
    let dir = dir_path.to_str().unwrap().to_owned();

    // The producer: ids on stdin at a steady pace, acknowledgements on stdout.
    let partitions = PARTITIONS.to_string();
    let mut producer = Proc::spawn(
        "producer",
        &[
            "produce",
            &dir,
            "--partitions",
            &partitions,
            "--durability",
            "sync",
            // Small segments: partitions roll (and retention runs) mid-chaos.
            "--segment-bytes",
            "65536",
            "--record-bytes-max",
            "1024",
        ],
        true,
    );
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (sent, stop) = (sent.clone(), stop_feeding.clone());
        let mut stdin = producer.take_stdin();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = 0u128;
            while !stop.load(Ordering::Relaxed) {
                let due = start.elapsed().as_millis() / PACE_MS + 1;
                let mut chunk = String::new();
                {
                    let mut sent = sent.lock().unwrap();
                    while next < due {
                        let id = format!("m{next:06}");
                        chunk.push_str(&id);
                        chunk.push('\n');
                        // Recorded before it is written: anything a consumer
                        // prints must have been sent.
                        sent.push(id);
                        next += 1;
                    }
                }
                stdin.write_all(chunk.as_bytes()).expect("write to the producer");
                std::thread::sleep(Duration::from_millis(5));
            }
            // Dropping stdin ends the producer's input.
        })
    };
    assert!(producer.wait_stdout(PATIENCE, |l| !l.is_empty()), "the producer acknowledged nothing");

    let args = consume_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut members: Vec<Member> = (0..CONSUMERS)
        .map(|i| Member {
            current: Proc::spawn(&format!("consumer {i}.0"), &args, false),
            current_stops: 0,
            stopped_until: None,
            past: Vec::new(),
        })
        .collect();

    // Chaos.
    let (mut kills, mut stops) = (0u32, 0u32);
    let start = Instant::now();
    let mut next_event = start + rng.millis_between(BETWEEN_MS.0, BETWEEN_MS.1);
    loop {
        let now = Instant::now();
        let chaos = now < start + CHAOS;
        if !chaos && members.iter().all(|m| m.stopped_until.is_none()) {
            break;
        }
        for m in &mut members {
            if m.stopped_until.is_some_and(|t| now >= t) {
                m.current.cont();
                m.stopped_until = None;
            }
            if let Some(status) = m.current.exited() {
                panic!("{} ended on its own ({status}); stderr: {:?}", m.current.name, m.current.stderr_lines());
            }
        }
        if chaos && now >= next_event {
            let running: Vec<usize> = (0..CONSUMERS).filter(|&i| members[i].stopped_until.is_none()).collect();
            let someone_stopped = running.len() < CONSUMERS;
            let i = running[rng.below(running.len() as u64) as usize];
            let m = &mut members[i];
            // At most one member is stopped at a time, so the group always
            // has live members to take its slots over.
            if someone_stopped || rng.below(2) == 0 {
                m.current.kill();
                kills += 1;
                let name = format!("consumer {i}.{}", m.past.len() + 1);
                let old = std::mem::replace(&mut m.current, Proc::spawn(&name, &args, false));
                m.past.push((old, m.current_stops));
                m.current_stops = 0;
                eprintln!(
                    "chaos: {:>5} ms: SIGKILL {} and restart",
                    start.elapsed().as_millis(),
                    m.past.last().unwrap().0.name
                );
            } else {
                let pause = rng.millis_between(STOP_MS.0, STOP_MS.1);
                m.current.stop();
                stops += 1;
                m.current_stops += 1;
                m.stopped_until = Some(Instant::now() + pause);
                eprintln!("chaos: {:>5} ms: SIGSTOP {} for {pause:?}", start.elapsed().as_millis(), m.current.name);
            }
            next_event = Instant::now() + rng.millis_between(BETWEEN_MS.0, BETWEEN_MS.1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // The producer stops: end of input, then every id it read is acknowledged.
    stop_feeding.store(true, Ordering::Relaxed);
    feeder.join().expect("feeder");
    producer.close_stdin();
    let status = producer.wait(PATIENCE);
    assert!(status.success(), "producer failed ({status}): {:?}", producer.stderr_lines());
    let sent = sent.lock().unwrap().clone();
    let acks = producer.lines();
    // Acknowledgements come in input order: the i-th is the i-th id's.
    assert_eq!(acks.len(), sent.len(), "the producer exited 0, so it acknowledged every line it read");
    let mut per_partition = vec![0u64; PARTITIONS];
    for ack in &acks {
        let (p, o) = ack.split_once(' ').unwrap_or_else(|| panic!("bad ack {ack:?}"));
        let (p, o): (usize, u64) = (p.parse().unwrap(), o.parse().unwrap());
        assert_eq!(o, per_partition[p], "partition {p}: acknowledged offsets must be dense");
        per_partition[p] += 1;
    }

    // The members leave (SIGTERM: finish the batch, exit 0); then one more
    // drains whatever is left.
    for m in &mut members {
        let status = m.current.terminate(PATIENCE);
        assert!(status.success(), "{} failed ({status}): {:?}", m.current.name, m.current.stderr_lines());
    }
    let mut drain = Proc::spawn("drain", &["consume", &dir, "--group", "g", "--idle-exit", "2"], false);
    let status = drain.wait(PATIENCE);
    assert!(status.success(), "drain failed ({status}): {:?}", drain.stderr_lines());

    // Every output line of every incarnation is evidence of processing.
    let mut incarnations: Vec<(&Proc, u32)> = Vec::new();
    for m in &members {
        incarnations.extend(m.past.iter().map(|(p, s)| (p, *s)));
        incarnations.push((&m.current, m.current_stops));
    }
    let mut fenced = 0usize;
    let mut unexplained_fences = 0usize;
    for (p, stopped) in &incarnations {
        let errors = p.stderr_lines();
        let unexpected: Vec<&String> = errors.iter().filter(|l| !l.contains("fenced")).collect();
        assert!(unexpected.is_empty(), "{} reported errors: {unexpected:?}", p.name);
        fenced += errors.len();
        for (at, line) in p.stderr_lines_timed() {
            eprintln!(
                "chaos: {:>5} ms: {} (stopped {stopped} times): {line}",
                at.duration_since(start).as_millis(),
                p.name
            );
        }
        // A member fenced without being stopped was either slow for longer
        // than the lease timeout on its own (a loaded machine), or taken for
        // dead by a member whose view predated its join (see fencing.rs,
        // `a_member_that_joined_after_anothers_scan_is_not_taken_for_dead`).
        unexplained_fences += errors.len().saturating_sub(*stopped as usize);
    }
    let mut processed: HashMap<&str, usize> = HashMap::new();
    let mut lines = 0usize;
    for p in incarnations.iter().map(|(p, _)| *p).chain(std::iter::once(&drain)) {
        for line in p.lines() {
            lines += 1;
            *processed
                .entry(
                    sent_id(&sent, &line)
                        .unwrap_or_else(|| panic!("{} processed {line:?}, which was never sent", p.name)),
                )
                .or_default() += 1;
        }
    }
    let lost: Vec<&String> = sent.iter().filter(|id| !processed.contains_key(id.as_str())).collect();
    let duplicates = lines - processed.len();
    let bound = (kills as usize + stops as usize) * MAX_BATCH;
    eprintln!(
        "chaos: seed {seed}: messages {}, kills {kills}, stops {stops}, fenced batches {fenced} \
         (unexplained {unexplained_fences}), lost {}, duplicates {duplicates} (bound {bound}), \
         processed by the drain {}",
        sent.len(),
        lost.len(),
        drain.line_count()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged messages never processed, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(duplicates <= bound, "{duplicates} duplicates, more than (kills + stops) * max_batch = {bound}");

    // The group ends exactly at the end of every partition.
    let stat = crate::common::stat(&dir_path);
    assert_eq!(crate::common::next_offsets(&stat), per_partition, "partitions hold exactly the acknowledged messages");
    assert_eq!(crate::common::committed(&stat, "g"), per_partition, "the group committed everything");
}

/// The sent id a consumer's output line names, if it was sent.
fn sent_id<'a>(sent: &'a [String], line: &str) -> Option<&'a str> {
    let n: usize = line.strip_prefix('m')?.parse().ok()?;
    let id = sent.get(n)?;
    (id == line).then_some(id.as_str())
}

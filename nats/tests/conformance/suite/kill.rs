//! Zero loss when consumer processes are SIGKILLed mid-batch.
//!
//! The story: the parent sends records and keeps every acknowledged
//! position. Members (child processes, `member.rs`) come and go: first one
//! at a time, each killing itself at a chosen point of a chosen batch
//! (before its work, halfway, after it but before `process` returns), so
//! the batch in flight is known exactly; then two at a time while the
//! parent sends more, SIGKILLed by the parent at random moments. A last
//! member finishes the work. Then every acknowledged record must have been
//! processed at least once, every record of a batch a member died in must
//! have been delivered again (with a delivery count above 1) to a later
//! member, and no record may have been processed more often than the kills
//! and refused commits that caught it in flight allow: the group never
//! skips work and never redoes committed work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use durq::{Options, Position};

use super::backend;
use super::member::{self, Kill, KillPoint, Settings};
use crate::conformance::procs::Proc;
use crate::conformance::rng::Rng;

const PARTITIONS: u32 = 2;
/// Records sent before the members start, and while they come and go.
const BEFORE: usize = 200;
const DURING: usize = 100;
const TOTAL: u64 = (BEFORE + DURING) as u64;

#[test]
fn consumers_sigkilled_mid_batch_lose_no_acknowledged_message() {
    let started = Instant::now();
    let place = backend::Place::new();
    let spec = place.spec("kill");
    let out = place.file("processed.txt");
    let queue = backend::create(&spec, Options::default().partitions(PARTITIONS));
    let producer = queue.producer();
    let mut acknowledged: HashMap<String, Position> = HashMap::new();
    for i in 0..BEFORE {
        let id = format!("m-{i}");
        acknowledged.insert(id.clone(), producer.send(&id).expect("send"));
    }
    let mut tag = 0;
    let mut settings = |kill, work| {
        tag += 1;
        Settings { spec: &spec, out: &out, tag, partitions: PARTITIONS, total: TOTAL, kill, max_batch: 8, work }
    };

    // One at a time, each killed in a batch it chose: that batch, and only
    // that one, is in flight.
    let plan = [
        (KillPoint::Before, 1),
        (KillPoint::Mid, 2),
        (KillPoint::After, 1),
        (KillPoint::Mid, 1),
        (KillPoint::Before, 3),
        (KillPoint::After, 2),
    ];
    let mut in_flight = Vec::new();
    let mut may_repeat = Vec::new();
    for (at, n) in plan {
        let s = settings(Kill::InBatch(at, n), Duration::ZERO);
        let mut child = member::start(&format!("{at:?}:{n}"), &s);
        child.wait_killed();
        let batches = member::announced(&child);
        assert_eq!(batches.len(), n as usize, "{} died in its batch {n}", child.name);
        in_flight.push((s.tag, *batches.last().expect("a batch")));
        may_repeat.extend(member::may_repeat(&child));
    }

    // Two at a time while records arrive, killed at random moments.
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(7);
        let mut sent = Vec::new();
        for i in BEFORE..BEFORE + DURING {
            if i % 10 == 0 {
                std::thread::sleep(rng.millis(30));
            }
            let id = format!("m-{i}");
            let position = producer.send(&id).expect("send");
            sent.push((id, position));
        }
        sent
    });
    let mut rng = Rng::new(0x5eed_c0de);
    let mut kills = plan.len();
    for round in 0..3 {
        let mut pair: Vec<Proc> = (0..2)
            .map(|k| member::start(&format!("random{round}.{k}"), &settings(Kill::Never, Duration::from_millis(10))))
            .collect();
        for member in &mut pair {
            std::thread::sleep(rng.millis_between(50, 400));
            kills += usize::from(member.sigkill_unless_done());
            may_repeat.extend(member::may_repeat(member));
        }
    }
    acknowledged.extend(sender.join().expect("sender"));

    let mut last = member::start("last", &settings(Kill::Never, Duration::ZERO));
    last.finish();
    may_repeat.extend(member::may_repeat(&last));

    let processed = member::processed(&out);
    let counts = member::counts(&acknowledged, &processed);
    let lost: Vec<&String> = counts.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id).collect();
    for (killed, batch) in &in_flight {
        for offset in batch.first..=batch.last {
            let position = Position { partition: batch.partition, offset };
            assert!(
                processed.iter().any(|p| p.tag > *killed && p.position == position && p.delivery_count > 1),
                "{position:?}, in flight when member {killed} died in batch {batch:?}, was not delivered again"
            );
        }
    }
    for (id, &n) in &counts {
        let position = acknowledged[id];
        let allowed = 1 + may_repeat.iter().filter(|b| b.contains(position)).count() as u32;
        assert!(
            n <= allowed,
            "{id} at {position:?} processed {n} times; only {} kills caught it in flight",
            allowed - 1
        );
    }
    let redelivered: u32 = counts.values().map(|n| n.saturating_sub(1)).sum();
    eprintln!(
        "{}: {kills} members SIGKILLed; acknowledged {}, processed {}, redelivered {redelivered}, lost {}, in {:?}",
        backend::NAME,
        acknowledged.len(),
        counts.values().filter(|n| **n > 0).count(),
        lost.len(),
        started.elapsed()
    );
    assert!(lost.is_empty(), "{} acknowledged records never processed, e.g. {:?}", lost.len(), lost.first());
}

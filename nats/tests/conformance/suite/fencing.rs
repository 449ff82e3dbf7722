//! A hung member is fenced: its late commit is refused, and nothing is
//! lost.
//!
//! The story: member H (a child process) takes a batch and, inside
//! `process`, waits for a word from the parent. The parent SIGSTOPs it: no
//! heartbeat, no thread of it runs. Member B (the parent) joins, takes the
//! partition over once H's lease expired, and processes every record, H's
//! batch included. The parent SIGCONTs H and lets its closure return `Ok`:
//! H's commit must be refused with `Fenced`, and the group's position must
//! stay B's (a zombie's commit neither moves it back nor forward).

use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options};

use super::{backend, join};
use crate::conformance::procs::{self, fail, say};

const RECORDS: u64 = 10;

/// The holder role: takes one batch and holds it until the parent says
/// `commit`, then reports how its commit went.
pub fn run_holder() -> ! {
    let spec = procs::var("DURQ_SPEC");
    let queue = backend::open(&spec).unwrap_or_else(|e| fail(format_args!("open {spec}: {e}")));
    let options = ConsumerOptions::default().lease_timeout(backend::LEASE).max_batch(4);
    let mut consumer = join(&queue, options).unwrap_or_else(|e| fail(format_args!("join: {e}")));
    let outcome = consumer.process(|batch| {
        let (first, last) = (batch[0].position(), batch[batch.len() - 1].position());
        say(format_args!("holding {} {} {}", first.partition, first.offset, last.offset));
        let word = procs::wait_for_parent();
        assert_eq!(word, "commit");
        Ok::<(), std::io::Error>(())
    });
    match outcome {
        Ok(n) => say(format_args!("commit ok {n}")),
        Err(durq::Error::Fenced { partition, .. }) => say(format_args!("commit fenced {partition}")),
        Err(e) => fail(format_args!("commit failed otherwise: {e}")),
    }
    std::process::exit(0)
}

#[test]
fn a_sigstopped_member_that_wakes_after_its_lease_expired_is_fenced() {
    let place = backend::Place::new();
    let spec = place.spec("fencing");
    let queue = backend::create(&spec, Options::default());
    let producer = queue.producer();
    for i in 0..RECORDS {
        producer.send(format!("m-{i}")).expect("send");
    }
    let mut holder = procs::spawn(&super::child_entry(), "H", "holder", &[("DURQ_SPEC", spec.clone())]);
    let held = holder.wait_for(|l| l.starts_with("holding "));
    assert_eq!(held, "holding 0 0 3", "H holds the first batch");
    holder.signal(libc::SIGSTOP);
    let stopped = Instant::now();

    let options = ConsumerOptions::default().lease_timeout(backend::LEASE);
    let mut b = join(&queue, options).expect("B joins");
    let mut batches = Vec::new();
    let deadline = Instant::now() + procs::PATIENCE;
    while b.committed().expect("committed") != [RECORDS] {
        assert!(Instant::now() < deadline, "B never finished the partition H held: {batches:?}");
        b.process_timeout(Duration::from_millis(100), |batch| {
            let first = batch[0].position().offset;
            batches.push((first, batch.len(), batch[0].delivery_count(), stopped.elapsed()));
            Ok::<(), std::io::Error>(())
        })
        .expect("B processes");
    }
    let (first, _, delivery_count, took_over_after) = batches[0];
    assert_eq!((first, delivery_count), (0, 2), "B starts with H's batch, delivered for the second time");
    assert_eq!(batches.iter().map(|b| b.1 as u64).sum::<u64>(), RECORDS, "B processed each record once: {batches:?}");

    holder.signal(libc::SIGCONT);
    holder.tell("commit");
    let outcome = holder.wait_for(|l| l.starts_with("commit "));
    holder.finish();
    assert_eq!(outcome, "commit fenced 0", "the woken member's commit is refused");

    // The position is B's: a new member finds nothing left.
    assert_eq!(b.committed().expect("committed"), [RECORDS]);
    drop(b);
    let mut c = join(&queue, ConsumerOptions::default()).expect("C joins");
    assert_eq!(c.committed().expect("committed"), [RECORDS], "the fenced commit moved nothing");
    let more = c.process_timeout(Duration::from_millis(300), |_| Ok::<(), std::io::Error>(())).expect("C");
    assert_eq!(more, 0, "nothing comes again after the fenced commit");
    eprintln!(
        "{}: a SIGSTOPped member's partition taken over {took_over_after:?} after it stopped (lease {:?}); its \
         late commit refused with Fenced; {} batches by the new holder, nothing lost",
        backend::NAME,
        backend::LEASE,
        batches.len()
    );
}

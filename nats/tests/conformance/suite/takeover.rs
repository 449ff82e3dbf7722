//! A dead member's partitions are taken over, from its checkpoint.
//!
//! The story: member A (a child process) joins first and holds both
//! partitions; member B (a thread of the parent) joins, and A gives one
//! partition up at its next batch boundary. In its first batch after that,
//! A kills itself halfway. B must take A's partition over (at once on the
//! local queue, after A's lease on NATS), start at the batch A died in,
//! with its delivery count one higher, and finish both partitions. The
//! time from A's death to B's first batch there is printed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options};

use super::member::{self, Announced, Kill, KillPoint, Settings};
use super::{backend, join};
use crate::conformance::procs;

const PER_PARTITION: u64 = 300;

#[test]
fn a_sigkilled_members_partition_is_taken_over_from_its_checkpoint() {
    let place = backend::Place::new();
    let spec = place.spec("takeover");
    let out = place.file("processed.txt");
    let queue = backend::create(&spec, Options::default().partitions(2));
    let producer = queue.producer();
    for i in 0..2 * PER_PARTITION {
        producer.send(format!("m-{i}")).expect("send");
    }
    let total = 2 * PER_PARTITION;
    // Slow enough (5 ms a record, 3 s for all) that A still has work when
    // B has joined and taken a partition.
    let settings = Settings {
        spec: &spec,
        out: &out,
        tag: 1,
        partitions: 2,
        total,
        kill: Kill::WhenShared(KillPoint::Mid),
        max_batch: 5,
        work: Duration::from_millis(5),
    };
    let mut a = member::start("A", &settings);
    a.wait_line("ready");

    // B: (partition, first offset, delivery count of the first, when).
    let seen: Arc<Mutex<Vec<(Announced, Instant)>>> = Arc::default();
    let options = ConsumerOptions::default().lease_timeout(backend::LEASE).max_batch(5);
    let mut b = join(&queue, options).expect("B joins");
    let b_thread = {
        let seen = seen.clone();
        let deadline = Instant::now() + procs::PATIENCE;
        std::thread::spawn(move || {
            while Instant::now() < deadline {
                let committed: u64 = b.committed().expect("committed").iter().sum();
                if committed >= total {
                    break;
                }
                b.process_timeout(Duration::from_millis(50), |batch| {
                    let (first, last) = (batch[0].position(), batch[batch.len() - 1].position());
                    let announced = Announced {
                        partition: first.partition,
                        first: first.offset,
                        last: last.offset,
                        delivery_count: batch[0].delivery_count(),
                    };
                    seen.lock().expect("seen").push((announced, Instant::now()));
                    Ok::<(), std::io::Error>(())
                })
                .expect("B processes");
            }
            b
        })
    };
    let died = a.wait_killed();
    let in_flight = *member::announced(&a).last().expect("A died in a batch");
    let b = b_thread.join().expect("B");

    let seen = seen.lock().expect("seen");
    let (resumed, at) = seen
        .iter()
        .find(|(batch, _)| batch.partition == in_flight.partition && batch.first >= in_flight.first)
        .copied()
        .unwrap_or_else(|| panic!("B never took partition {} over", in_flight.partition));
    assert_eq!(resumed.first, in_flight.first, "B resumes at the batch A died in ({in_flight:?}), not {resumed:?}");
    assert_eq!(
        resumed.delivery_count,
        in_flight.delivery_count + 1,
        "the batch A died in counts A's delivery: {in_flight:?}, then {resumed:?}"
    );
    assert_eq!(b.held_partitions(), [0, 1], "B holds both partitions now");
    assert_eq!(b.committed().expect("committed"), [PER_PARTITION, PER_PARTITION]);
    // Every record was processed, by A (its output file) or by B.
    let by_a = member::processed(&out);
    for partition in 0..2 {
        for offset in 0..PER_PARTITION {
            let position = durq::Position { partition, offset };
            assert!(
                by_a.iter().any(|p| p.position == position) || seen.iter().any(|(batch, _)| batch.contains(position)),
                "{position:?} was never processed"
            );
        }
    }
    eprintln!(
        "{}: partition {} taken over {:?} after its member was SIGKILLed (expected: {}); A processed {} records, B \
         {} batches",
        backend::NAME,
        in_flight.partition,
        at.saturating_duration_since(died),
        backend::DEAD_MEMBER_TAKEN_OVER,
        by_a.len(),
        seen.len()
    );
}

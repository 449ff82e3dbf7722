//! Retries and the dead-letter queue: `Verdict`s, and `max_deliveries` for
//! a record whose batch keeps failing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, Position, Verdict};

use super::{GROUP, backend, join};
use crate::conformance::procs;

/// Sends `payloads` into a new one-partition queue of this test's place.
fn queue_of(place: &backend::Place, name: &str, payloads: &[&str]) -> backend::Queue {
    let queue = backend::create(&place.spec(name), Options::default());
    let producer = queue.producer();
    for p in payloads {
        producer.send(p).expect("send");
    }
    queue
}

/// The story: six records; `r1` is retried twice (`Retry`) and then done,
/// `r3` is refused (`DeadLetter`). Every record before a retry is
/// committed, so it is never processed again; the retried one comes back
/// with its delivery count raised; the refused one is in the dead-letter
/// queue with its reason, and the group moves past it.
#[test]
fn verdicts_retry_a_record_and_dead_letter_another_and_commit_the_rest() {
    let place = backend::Place::new();
    let queue = queue_of(&place, "verdicts", &["r0", "r1", "r2", "r3", "r4", "r5"]);
    let options = ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]);
    let mut consumer = join(&queue, options).expect("join");
    let mut seen: Vec<(String, u32)> = Vec::new();
    let deadline = Instant::now() + procs::PATIENCE;
    while consumer.committed().expect("committed") != [6] {
        assert!(Instant::now() < deadline, "not all committed: {seen:?}");
        consumer
            .process_each(Duration::from_millis(100), |m| {
                let payload = String::from_utf8(m.payload().to_vec()).expect("utf-8");
                seen.push((payload.clone(), m.delivery_count()));
                match payload.as_str() {
                    "r1" if m.delivery_count() < 3 => Verdict::Retry(Some(Duration::ZERO)),
                    "r3" => Verdict::DeadLetter("amount is not a number".into()),
                    _ => Verdict::Done,
                }
            })
            .expect("process_each");
    }
    let order: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        order,
        ["r0", "r1", "r1", "r1", "r2", "r3", "r4", "r5"],
        "r0 committed before r1's retry, r1 three times, everything else once"
    );
    let r1: Vec<u32> = seen.iter().filter(|(p, _)| p == "r1").map(|(_, n)| *n).collect();
    assert_eq!(r1, [1, 2, 3], "each retry raises r1's delivery count");
    let letters = queue.dead_letters(GROUP, 10).expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].payload, b"r3");
    assert_eq!(letters[0].reason, "amount is not a number");
    assert_eq!(letters[0].original, Position { partition: 0, offset: 3 });
    let more = consumer.process_each(Duration::from_millis(200), |_| Verdict::Done).expect("process_each");
    assert_eq!(more, 0, "nothing comes again");
}

/// The story: five records; any batch holding `p2` fails. The batch fails
/// as a whole, then its records come one at a time: `p0` and `p1` succeed,
/// `p2` fails until it has been delivered `max_deliveries` (3) times and
/// goes to the dead-letter queue by itself, with the last error as its
/// reason; `p3` and `p4` follow. A poison record never blocks its
/// partition, and no other record is lost or processed twice.
#[test]
fn a_record_that_fails_max_deliveries_times_goes_to_the_dead_letter_queue() {
    let place = backend::Place::new();
    let queue = queue_of(&place, "poison", &["p0", "p1", "p2", "p3", "p4"]);
    let options = ConsumerOptions::default().max_deliveries(3).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = join(&queue, options).expect("join");
    let mut done: HashMap<String, u32> = HashMap::new();
    let mut poison_counts = Vec::new();
    let deadline = Instant::now() + procs::PATIENCE;
    while consumer.committed().expect("committed") != [5] {
        assert!(Instant::now() < deadline, "not all committed; done {done:?}, p2 delivered {poison_counts:?}");
        let outcome = consumer.process_timeout(Duration::from_millis(100), |batch| {
            let payloads: Vec<String> =
                batch.iter().map(|m| String::from_utf8(m.payload().to_vec()).expect("utf-8")).collect();
            if let Some(i) = payloads.iter().position(|p| p == "p2") {
                poison_counts.push(batch[i].delivery_count());
                return Err(std::io::Error::other("p2 is poison"));
            }
            for p in payloads {
                *done.entry(p).or_insert(0) += 1;
            }
            Ok(())
        });
        match outcome {
            Ok(_) | Err(durq::Error::Process(_)) => {}
            Err(e) => panic!("process: {e}"),
        }
    }
    assert_eq!(poison_counts, [1, 2, 3], "p2 delivered max_deliveries times, counted");
    let expected: HashMap<String, u32> = ["p0", "p1", "p3", "p4"].iter().map(|p| (p.to_string(), 1)).collect();
    assert_eq!(done, expected, "every other record processed once");
    let letters = queue.dead_letters(GROUP, 10).expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].payload.as_slice(), letters[0].deliveries), (&b"p2"[..], 3));
    assert_eq!(letters[0].reason, "p2 is poison");
    assert_eq!(letters[0].original, Position { partition: 0, offset: 2 });
}

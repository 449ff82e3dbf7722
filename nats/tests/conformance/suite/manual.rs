//! Manual commit: `poll` hands a `Delivery` that counts only once
//! committed. Dropped uncommitted, its records come again, one at a time
//! and marked as redelivered; committed, it moves the group's position,
//! which a later member resumes from. (How many records a delivery holds,
//! up to `max_batch`, is the backend's: the local queue hands all that are
//! there, NATS may hand what has arrived so far.)

use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options};

use super::{backend, join};
use crate::conformance::procs;

const RECORDS: usize = 6;

#[test]
fn a_polled_delivery_counts_only_once_committed() {
    let place = backend::Place::new();
    let queue = backend::create(&place.spec("manual"), Options::default());
    let producer = queue.producer();
    for i in 0..RECORDS {
        producer.send(format!("m-{i}")).expect("send");
    }
    let options = ConsumerOptions::default().max_batch(3).retry_backoff(vec![Duration::ZERO]);
    let records = |d: &backend::Delivery<'_>| -> Vec<(String, u32)> {
        d.messages()
            .iter()
            .map(|m| (String::from_utf8(m.payload().to_vec()).expect("utf-8"), m.delivery_count()))
            .collect()
    };
    let in_order = |from: usize, n: usize| -> Vec<String> { (from..from + n).map(|i| format!("m-{i}")).collect() };
    let mut consumer = join(&queue, options.clone()).expect("join");

    let first = consumer.poll(Duration::from_secs(5)).expect("poll").expect("a delivery");
    let held = records(&first);
    assert!((1..=3).contains(&held.len()), "at most max_batch: {held:?}");
    assert_eq!(held.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), in_order(0, held.len()));
    assert!(held.iter().all(|r| r.1 == 1), "first deliveries: {held:?}");
    drop(first);
    assert_eq!(consumer.committed().expect("committed"), [0], "a dropped delivery commits nothing");

    let mut again = Vec::new();
    while again.len() < held.len() {
        let d = consumer.poll(Duration::from_secs(5)).expect("poll").expect("the dropped records again");
        let got = records(&d);
        assert_eq!(got.len(), 1, "one at a time after a failure: {got:?}");
        assert!(d.messages().iter().all(|m| m.is_redelivery()), "marked as redelivered: {got:?}");
        assert_eq!(d.commit().expect("commit"), 1);
        again.push(got[0].0.clone());
    }
    assert_eq!(again, in_order(0, held.len()), "the dropped records, in order");
    assert_eq!(consumer.committed().expect("committed"), [held.len() as u64]);
    drop(consumer);

    // A new member resumes where the commits left the group.
    let mut later = join(&queue, options).expect("join again");
    assert_eq!(later.committed().expect("committed"), [held.len() as u64]);
    let mut rest = Vec::new();
    let deadline = Instant::now() + procs::PATIENCE;
    while held.len() + rest.len() < RECORDS {
        assert!(Instant::now() < deadline, "the rest never came: {rest:?}");
        let Some(d) = later.poll(Duration::from_millis(100)).expect("poll") else { continue };
        let got = records(&d);
        assert_eq!(d.commit().expect("commit"), got.len());
        rest.extend(got);
    }
    assert_eq!(rest.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), in_order(held.len(), RECORDS - held.len()));
    assert!(rest.iter().all(|r| r.1 == 1), "never delivered before: {rest:?}");
    assert_eq!(later.committed().expect("committed"), [RECORDS as u64]);
    assert!(later.poll(Duration::from_millis(200)).expect("poll").is_none(), "nothing left");
}

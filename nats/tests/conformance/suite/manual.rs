//! Manual commit: `poll` hands a `Delivery` that counts only once
//! committed. Dropped uncommitted, it comes again, marked as a redelivery;
//! committed, it moves the group's position, which a later member resumes
//! from.

use std::time::Duration;

use durq::{ConsumerOptions, Options};

use super::{backend, join};

#[test]
fn a_polled_delivery_counts_only_once_committed() {
    let place = backend::Place::new();
    let queue = backend::create(&place.spec("manual"), Options::default());
    let producer = queue.producer();
    for i in 0..6 {
        producer.send(format!("m-{i}")).expect("send");
    }
    let options = ConsumerOptions::default().max_batch(3).retry_backoff(vec![Duration::ZERO]);
    let payloads = |d: &backend::Delivery<'_>| -> Vec<(String, u32)> {
        d.messages()
            .iter()
            .map(|m| (String::from_utf8(m.payload().to_vec()).expect("utf-8"), m.delivery_count()))
            .collect()
    };
    let mut consumer = join(&queue, options.clone()).expect("join");

    let first = consumer.poll(Duration::from_secs(5)).expect("poll").expect("a delivery");
    assert_eq!(payloads(&first), [("m-0".into(), 1), ("m-1".into(), 1), ("m-2".into(), 1)]);
    drop(first);
    assert_eq!(consumer.committed().expect("committed"), [0], "a dropped delivery commits nothing");

    // After a failure the records come one at a time, each marked.
    let mut again = Vec::new();
    while again.len() < 3 {
        let d = consumer.poll(Duration::from_secs(5)).expect("poll").expect("the dropped records again");
        let records = payloads(&d);
        assert_eq!(records.len(), 1, "one at a time after a failure: {records:?}");
        assert!(d.messages().iter().all(|m| m.is_redelivery()), "marked as redelivered: {records:?}");
        assert_eq!(d.commit().expect("commit"), 1);
        again.extend(records);
    }
    assert_eq!(again.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["m-0", "m-1", "m-2"]);
    assert_eq!(consumer.committed().expect("committed"), [3]);
    drop(consumer);

    // A new member resumes where the commits left the group.
    let mut later = join(&queue, options).expect("join again");
    assert_eq!(later.committed().expect("committed"), [3]);
    let rest = later.poll(Duration::from_secs(5)).expect("poll").expect("the rest");
    assert_eq!(payloads(&rest), [("m-3".into(), 1), ("m-4".into(), 1), ("m-5".into(), 1)]);
    assert_eq!(rest.commit().expect("commit"), 3);
    assert_eq!(later.committed().expect("committed"), [6]);
    assert!(later.poll(Duration::from_millis(200)).expect("poll").is_none(), "nothing left");
}

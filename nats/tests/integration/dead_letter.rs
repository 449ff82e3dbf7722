//! Retries, the dead-letter stream and the group's administration against a
//! real server: a record that keeps failing goes to the dead-letter stream
//! after `max_deliveries` (counted), `process_each`'s verdicts, listing and
//! replaying dead letters, and a group reset or delete refused while a
//! member is alive.

use std::time::{Duration, Instant};

use crate::common::NatsServer;
use durq::{ConsumerOptions, Options, ResetTo, Verdict};
use durq_nats::Queue;

const WITHIN: Duration = Duration::from_secs(30);

fn open(server: &NatsServer, name: &str) -> Queue {
    Queue::open_with(&format!("{}/{name}", server.url()), Options::default()).expect("open")
}

/// The names of the streams that belong to queue `queue`, sorted.
fn streams_of(server: &NatsServer, queue: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(server.url().trim_start_matches("nats://")).await.expect("raw connect");
        let names: Vec<String> =
            async_nats::jetstream::new(client).stream_names().map(|name| name.expect("a stream name")).collect().await;
        let mut names: Vec<String> = names.into_iter().filter(|n| n.contains(&format!("_{queue}_"))).collect();
        names.sort();
        names
    })
}

fn options() -> ConsumerOptions {
    ConsumerOptions::default().lease_timeout(Duration::from_secs(1)).retry_backoff(vec![Duration::ZERO])
}

#[test]
fn a_record_failing_max_deliveries_times_is_dead_lettered_then_replayed() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "poison");
    let producer = queue.producer();
    producer.send("good 1").unwrap();
    let poison = producer.send_keyed("user-7", "poison").unwrap();
    producer.send("good 2").unwrap();
    let mut consumer = queue.consumer_with("g", options().max_deliveries(3)).expect("consumer");
    let mut processed = Vec::new();
    let mut poison_counts = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while processed.len() < 2 {
        assert!(Instant::now() < deadline, "processed {processed:?}");
        let _ = consumer.process_timeout(Duration::from_millis(100), |batch| {
            if let Some(m) = batch.iter().find(|m| m.payload() == b"poison") {
                poison_counts.push(m.delivery_count());
                return Err(std::io::Error::other("poison record"));
            }
            processed.extend(batch.iter().map(|m| String::from_utf8_lossy(m.payload()).into_owned()));
            Ok(())
        });
    }
    assert_eq!(processed, ["good 1", "good 2"]);
    assert_eq!(poison_counts.last(), Some(&3), "delivered three times: {poison_counts:?}");
    assert_eq!(consumer.committed().unwrap(), [3], "the group moved past the dead letter");

    let letters = queue.dead_letters("g", 10).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original, poison);
    assert_eq!(letters[0].payload, b"poison");
    assert_eq!(letters[0].key.as_deref(), Some(&b"user-7"[..]));
    assert_eq!(letters[0].deliveries, 3);
    assert_eq!(letters[0].reason, "poison record");

    assert_eq!(queue.replay_dead_letters("g").unwrap(), 1);
    assert!(queue.dead_letters("g", 10).unwrap().is_empty(), "replayed letters are removed");
    let mut again = Vec::new();
    while again.is_empty() {
        consumer
            .process_timeout(WITHIN, |batch| {
                again.extend(batch.iter().map(|m| (m.payload().to_vec(), m.key().map(<[u8]>::to_vec))));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    assert_eq!(again, [(b"poison".to_vec(), Some(b"user-7".to_vec()))], "replayed with its key");
}

#[test]
fn process_each_commits_done_records_dead_letters_and_retries_one() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "verdicts");
    queue.producer().send_batch(["ok 1", "bad", "later", "ok 2"]).unwrap();
    let mut consumer = queue.consumer_with("g", options()).expect("consumer");
    let mut calls = Vec::new();
    let committed = consumer
        .process_each(WITHIN, |m| {
            calls.push((m.payload().to_vec(), m.delivery_count()));
            match m.payload() {
                b"bad" => Verdict::DeadLetter("not an order".into()),
                b"later" => Verdict::Retry(None),
                _ => Verdict::Done,
            }
        })
        .unwrap();
    assert_eq!(committed, 2, "the records before the retried one");
    assert_eq!(consumer.committed().unwrap(), [2]);
    let mut rest = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while rest.len() < 2 {
        assert!(Instant::now() < deadline, "{rest:?}");
        consumer
            .process_each(Duration::from_millis(100), |m| {
                rest.push((m.payload().to_vec(), m.delivery_count()));
                Verdict::Done
            })
            .unwrap();
    }
    // "ok 2" was in the first batch too (handed out, not reached): it counts
    // as delivered before, as on the local queue.
    assert_eq!(rest, [(b"later".to_vec(), 2), (b"ok 2".to_vec(), 2)]);
    let letters = queue.dead_letters("g", 10).unwrap();
    assert_eq!(
        (letters.len(), letters[0].payload.as_slice(), letters[0].reason.as_str()),
        (1, &b"bad"[..], "not an order")
    );
}

#[test]
fn a_group_is_reset_and_deleted_only_without_a_live_member() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "admin");
    queue.producer().send_batch(["a", "b", "c", "d", "e"]).unwrap();
    let mut consumer = queue.consumer_with("g", options()).expect("consumer");
    let mut n = 0;
    while n < 5 {
        n += consumer.process_timeout(WITHIN, |_| Ok::<(), std::io::Error>(())).unwrap();
    }
    // The member heartbeats from its own task while it is idle.
    let err = queue.reset_group("g", ResetTo::Earliest).expect_err("a live member");
    assert!(matches!(err, durq::Error::GroupBusy { .. }), "{err:?}");
    let err = queue.delete_group("g").expect_err("a live member");
    assert!(matches!(err, durq::Error::GroupBusy { .. }), "{err:?}");
    assert_eq!(consumer.committed().unwrap(), [5], "nothing moved");

    drop(consumer);
    assert_eq!(queue.groups().unwrap(), ["g"]);
    assert_eq!(queue.reset_group("g", ResetTo::Offset(3)).unwrap(), [3]);
    assert_eq!(queue.reset_group("g", ResetTo::Latest).unwrap(), [5]);
    assert_eq!(queue.reset_group("g", ResetTo::Offset(99)).unwrap(), [5], "clamped");
    assert_eq!(queue.reset_group("g", ResetTo::Earliest).unwrap(), [0]);
    let mut consumer = queue.consumer_with("g", options()).expect("consumer");
    let mut first = None;
    while first.is_none() {
        consumer
            .process_timeout(WITHIN, |batch| {
                first = Some(batch[0].position().offset);
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    assert_eq!(first, Some(0), "the reset group starts over");
    drop(consumer);

    queue.delete_group("g").unwrap();
    assert!(queue.groups().unwrap().is_empty());
    assert_eq!(streams_of(&server, "admin"), ["DURQ_admin_P0000"], "the slots' and the marks' buckets are gone");
    let err = queue.reset_group("g", ResetTo::Earliest).expect_err("deleted");
    assert!(matches!(err, durq::Error::InvalidOption { option: "group", .. }), "{err:?}");
}

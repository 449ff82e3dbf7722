//! `send_batch` on both pinned servers: atomic on 2.12 (every partition's
//! stream allows atomic batch publish), pipelined on 2.10.25, as
//! `producer.rs` documents.
//!
//! On 2.12: batches sent at once by four producers each land whole, at
//! contiguous positions; a batch the stream refuses (a limit of 3 messages,
//! new ones discarded) stores none of its records, where 2.10 stores the
//! prefix before the refused one; a producer SIGKILLed while it sends
//! batches leaves whole batches only (the killed producer is this test
//! binary run again, `--exact atomic_batch::child_sending_batches`, with
//! `DURQ_NATS_BATCH_CHILD_URL` set); a batch whose commit acknowledgement
//! is lost is sent again and stored once, its positions those of the
//! stored copy; and a queue whose streams lack the setting gets it at
//! `Queue::open`, not at `Queue::open_existing`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::stream::DiscardPolicy;
use durq::{Options, Position};
use durq_nats::{Queue, record};

use crate::common::proxy::{Hold, Proxy};
use crate::common::{NatsServer, raw_jetstream, runtime, stream_messages};

/// Records per batch of the producer that is killed: each one atomic batch
/// (the server takes 1,000).
const BATCH: usize = 200;

fn open(server: &NatsServer, name: &str) -> Queue {
    Queue::open_with(&format!("{}/{name}", server.url()), Options::default().partitions(1)).expect("open")
}

/// The stream's configuration as the server reports it.
async fn config(raw: &async_nats::jetstream::Context, stream: &str) -> async_nats::jetstream::stream::Config {
    raw.get_stream(stream).await.expect("the stream").cached_info().config.clone()
}

/// Payloads saying which batch and which record of it they are.
fn payloads(batch: usize, records: usize) -> Vec<String> {
    (0..records).map(|i| format!("batch {batch} record {i}")).collect()
}

#[test]
fn on_2_12_batches_sent_at_once_are_each_stored_whole_at_contiguous_positions() {
    let server = NatsServer::start_2_12_blocking();
    let rt = runtime();
    let queue = open(&server, "whole");
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stream = record::stream_name("whole", 0);
    assert!(rt.block_on(config(&raw, &stream)).allow_atomic_publish, "created with atomic batch publish allowed");

    // Four producers, five batches of 50 each, all at once into one stream.
    let sent: Vec<(Vec<Position>, Vec<String>)> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|producer| {
                let producer_handle = queue.producer();
                scope.spawn(move || {
                    (0..5)
                        .map(|b| {
                            let batch = payloads(producer * 100 + b, 50);
                            (producer_handle.send_batch(&batch).expect("send_batch"), batch)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders.into_iter().flat_map(|s| s.join().expect("a sender")).collect()
    });

    // Over the server's limit: consecutive atomic batches of 1,000, each
    // whole; with one producer, contiguous throughout.
    let large = payloads(99, 1200);
    let positions = queue.producer().send_batch(&large).expect("a batch of 1,200");
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1000..2200).collect::<Vec<_>>());

    let stored = rt.block_on(stream_messages(&raw, &stream));
    assert_eq!(stored.len(), 2200);
    for (positions, batch) in sent.iter().chain([&(positions, large)]) {
        assert!(positions.windows(2).all(|w| w[1].offset == w[0].offset + 1), "contiguous: {positions:?}");
        for (position, payload) in positions.iter().zip(batch) {
            let message = &stored[position.offset as usize];
            assert_eq!(message.payload, payload.as_bytes(), "at {position:?}");
            assert!(message.headers.get("Nats-Batch-Id").is_some(), "stored by an atomic batch");
        }
    }

    let batch_ids: Vec<&str> =
        stored[1000..].iter().map(|m| m.headers.get("Nats-Batch-Id").expect("a batch id").as_str()).collect();
    assert!(batch_ids[..1000].iter().all(|id| *id == batch_ids[0]), "the first 1,000: one batch");
    assert!(batch_ids[1000..].iter().all(|id| *id == batch_ids[1000]), "the last 200: one batch");
    assert_ne!(batch_ids[0], batch_ids[1000], "two batches");
}

/// Sends five records in one `send_batch` to a stream that takes three
/// (discarding new ones past that) and returns the error and how many of
/// the records were stored.
fn send_five_to_a_stream_of_three(server: &NatsServer, name: &str) -> (durq::Error, usize, bool) {
    let rt = runtime();
    let queue = open(server, name);
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stream = record::stream_name(name, 0);
    let mut limited = rt.block_on(config(&raw, &stream));
    limited.max_messages = 3;
    limited.discard = DiscardPolicy::New;
    rt.block_on(raw.update_stream(&limited)).expect("limit the stream to 3 messages");
    let err = queue.producer().send_batch(payloads(0, 5)).expect_err("the stream takes 3 of 5");
    let stored = rt.block_on(stream_messages(&raw, &stream)).len();
    (err, stored, limited.allow_atomic_publish)
}

#[test]
fn on_2_12_a_batch_the_stream_refuses_stores_none_of_its_records() {
    let server = NatsServer::start_2_12_blocking();
    let (err, stored, atomic) = send_five_to_a_stream_of_three(&server, "refused");
    assert!(atomic, "the stream allows atomic batches");
    assert_eq!(stored, 0, "none of the batch ({err})");
    let text = err.to_string();
    assert!(text.contains("maximum messages exceeded") && text.contains("none of its records is stored"), "{text}");
}

#[test]
fn on_2_10_a_batch_the_stream_refuses_stores_the_records_before_the_refused_one() {
    // The documented non-atomic behaviour of the pinned server.
    let server = NatsServer::start_blocking();
    let (err, stored, atomic) = send_five_to_a_stream_of_three(&server, "prefix");
    assert!(!atomic, "2.10 has no atomic batches");
    assert_eq!(stored, 3, "the prefix the stream took ({err})");
}

/// The producer that is SIGKILLed: sends batches of [`BATCH`] records, each
/// saying which batch it is, and prints `STORED <n> <µs>` after each, with
/// the time the batch took; a no-op unless `DURQ_NATS_BATCH_CHILD_URL` is
/// set.
#[test]
fn child_sending_batches() {
    let Ok(url) = std::env::var("DURQ_NATS_BATCH_CHILD_URL") else { return };
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches
    // no memory; a child outliving a failed test dies with it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let producer = Queue::open(&url).expect("child: open").producer();
    for b in 0.. {
        let batch = payloads(b, BATCH);
        let started = std::time::Instant::now();
        producer.send_batch(&batch).expect("child: send_batch");
        println!("STORED {} {}", b + 1, started.elapsed().as_micros());
    }
}

#[test]
fn on_2_12_a_producer_sigkilled_while_sending_batches_leaves_whole_batches() {
    let server = NatsServer::start_2_12_blocking();
    let rt = runtime();
    drop(open(&server, "killed"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "atomic_batch::child_sending_batches", "--nocapture", "--test-threads=1"])
        .env("DURQ_NATS_BATCH_CHILD_URL", format!("{}/killed", server.url()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the producer");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("STORED 2 ") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the producer ended before two batches");
    }
    // Half-way through the third batch, going by the second's time: its
    // records are on their way, its commit not yet.
    let took: u64 = line.trim_end().rsplit(' ').next().unwrap().parse().expect("the batch's time");
    std::thread::sleep(Duration::from_micros(took / 2));
    child.kill().expect("SIGKILL the producer");
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));

    // A commit sent just before the kill may still be being stored: wait
    // until two looks a moment apart agree.
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stream = record::stream_name("killed", 0);
    let count = || rt.block_on(async { raw.get_stream(&stream).await.unwrap().info().await.unwrap().state.messages });
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == last {
            break;
        }
        last = now;
    }
    let stored = rt.block_on(stream_messages(&raw, &stream));
    assert!(stored.len() >= 2 * BATCH, "the two acknowledged batches: {}", stored.len());
    assert_eq!(stored.len() % BATCH, 0, "whole batches only, never a prefix: {} records", stored.len());
    for (offset, message) in stored.iter().enumerate() {
        let expected = format!("batch {} record {}", offset / BATCH, offset % BATCH);
        assert_eq!(message.payload, expected.as_bytes(), "at offset {offset}");
    }
}

#[test]
fn on_2_12_a_batch_whose_commit_acknowledgement_is_lost_is_stored_once() {
    let server = NatsServer::start_2_12_blocking();
    let rt = runtime();
    let proxy = Proxy::start(&server.url());
    let queue = Queue::open_with(&format!("{}/lost", proxy.url()), Options::default().partitions(1)).expect("open");
    let producer = queue.producer();
    producer.send_batch(["before"; 2]).expect("a first batch");
    proxy.hold(Hold::LoseBatchAck);
    // The commit is stored, its acknowledgement lost: after the reply's
    // timeout the batch goes again (same message ids, a new batch id), the
    // server refuses it as holding stored ids, and the last record sent
    // alone is acknowledged as a duplicate where it is stored.
    let positions = producer.send_batch(["a", "b", "c"]).expect("stored, acknowledged after the retry");
    assert_eq!(proxy.dropped(), 1, "the commit's acknowledgement was lost");
    assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3, 4]);
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stored = rt.block_on(stream_messages(&raw, &record::stream_name("lost", 0)));
    let payloads: Vec<&[u8]> = stored.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"before"[..], b"before", b"a", b"b", b"c"], "stored once");
}

#[test]
fn an_existing_stream_gets_atomic_batches_at_open_not_at_open_existing() {
    let server = NatsServer::start_2_12_blocking();
    let rt = runtime();
    let url = format!("{}/upgraded", server.url());
    drop(open(&server, "upgraded"));
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stream = record::stream_name("upgraded", 0);
    // As a queue created under 2.10 and opened after the server's upgrade.
    let mut older = rt.block_on(config(&raw, &stream));
    older.allow_atomic_publish = false;
    rt.block_on(raw.update_stream(&older)).expect("turn atomic batches off");
    let batch_ids = |from: usize| -> Vec<bool> {
        let stored = rt.block_on(stream_messages(&raw, &stream));
        stored[from..].iter().map(|m| m.headers.get("Nats-Batch-Id").is_some()).collect()
    };

    let looked_at = Queue::open_existing(&url).expect("open_existing");
    assert!(!rt.block_on(config(&raw, &stream)).allow_atomic_publish, "open_existing changes nothing");
    looked_at.producer().send_batch(["a", "b"]).expect("pipelined");
    assert_eq!(batch_ids(0), [false, false], "published one by one");

    let opened = Queue::open(&url).expect("open");
    assert!(rt.block_on(config(&raw, &stream)).allow_atomic_publish, "open allowed atomic batches");
    let positions = opened.producer().send_batch(["c", "d"]).expect("atomic");
    assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(batch_ids(2), [true, true], "one atomic batch");
    drop(Queue::open(&url).expect("a second open: the update is not repeated, nor refused"));
}

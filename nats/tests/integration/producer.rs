//! The producer against a real server: positions that start at offset 0 in
//! every partition and are the stored records' (stream sequence − 1), keys
//! routed by the local queue's map and stored, a resent message id that is
//! not a second record, limits checked before anything is sent, and the
//! async forms.

use std::collections::HashSet;

use crate::common::{NatsServer, raw_jetstream, runtime, stream_messages};
use durq::{Options, Position};
use durq_nats::{Queue, record};

fn open(server: &NatsServer, name: &str, options: Options) -> Queue {
    Queue::open_with(&format!("{}/{name}", server.url()), options).expect("open")
}

#[test]
fn positions_start_at_offset_0_and_are_where_the_records_are_stored() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let queue = open(&server, "pos", Options::default().partitions(2));
    let producer = queue.producer();
    let mut sent = Vec::new();
    for i in 0..4 {
        let payload = format!("single {i}");
        sent.push((producer.send(&payload).expect("send"), payload));
    }
    let singles: Vec<Position> = sent.iter().map(|(p, _)| *p).collect();
    let at = |partition, offset| Position { partition, offset };
    assert_eq!(singles, [at(0, 0), at(1, 0), at(0, 1), at(1, 1)], "round robin, each partition from 0");

    let batch: Vec<String> = (0..5).map(|i| format!("batch {i}")).collect();
    let positions = producer.send_batch(&batch).expect("send_batch");
    assert_eq!(positions.len(), 5);
    assert!(positions.iter().all(|p| p.partition == positions[0].partition), "one partition: {positions:?}");
    assert!(positions.windows(2).all(|w| w[1].offset == w[0].offset + 1), "in order: {positions:?}");
    sent.extend(positions.into_iter().zip(batch));
    producer.flush().expect("flush");

    let raw = rt.block_on(raw_jetstream(&server.url()));
    for partition in 0..2 {
        let stored = rt.block_on(stream_messages(&raw, &record::stream_name("pos", partition)));
        let mut expected: Vec<(u64, &str)> = sent
            .iter()
            .filter(|(p, _)| p.partition == partition)
            .map(|(p, payload)| (p.offset, payload.as_str()))
            .collect();
        expected.sort();
        let found: Vec<(u64, &str)> =
            stored.iter().map(|m| (m.sequence - 1, std::str::from_utf8(&m.payload).expect("utf-8"))).collect();
        assert_eq!(found, expected, "partition {partition}");
        assert!(stored.iter().all(|m| m.headers.get(record::KEY_HEADER).is_none()), "unkeyed records");
    }
}

#[test]
fn keyed_records_go_where_the_local_queue_puts_them_and_carry_their_key() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let queue = open(&server, "keyed", Options::default().partitions(8));
    let producer = queue.producer();
    let raw = rt.block_on(raw_jetstream(&server.url()));
    for key in [&b"user-7"[..], b"order 42", b"", b"\x00\xff%\r\n"] {
        let position = producer.send_keyed(key, b"payload").expect("send_keyed");
        assert_eq!(position.partition, durq::partition_of_key(key, 8), "{key:?}");
        let stream = rt.block_on(raw.get_stream(record::stream_name("keyed", position.partition))).expect("stream");
        let stored = rt.block_on(stream.get_raw_message(position.offset + 1)).expect("the stored record");
        let header = stored.headers.get(record::KEY_HEADER).expect("a key header");
        assert_eq!(record::decode_key(header.as_str()).as_deref(), Some(key), "{key:?}");
    }
}

#[test]
fn a_resent_message_id_is_not_a_second_record() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let queue = open(&server, "dedup", Options::default());
    let producer = queue.producer();
    let first = producer.send(b"once").expect("send");
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let stream = record::stream_name("dedup", 0);
    let stored = rt.block_on(stream_messages(&raw, &stream));
    let id = stored[0].headers.get("Nats-Msg-Id").expect("a message id").as_str().to_owned();

    // The same message again with its id, as the producer resends a record
    // whose acknowledgement was lost.
    let resend = async_nats::jetstream::message::PublishMessage::build().message_id(&id).payload("once".into());
    let ack = rt
        .block_on(async { raw.send_publish(record::subject("dedup", 0), resend).await?.await })
        .expect("the resend is acknowledged");
    assert!(ack.duplicate, "{ack:?}");
    assert_eq!(ack.sequence - 1, first.offset, "acknowledged at the first copy's position");
    assert_eq!(rt.block_on(stream_messages(&raw, &stream)).len(), 1, "one record");

    // Every record of a producer, and of its clones, has an id of its own.
    let clone = producer.clone();
    for i in 0..10 {
        let p = if i % 2 == 0 { &producer } else { &clone };
        p.send(b"more").expect("send");
    }
    clone.send_batch([b"x", b"y"]).expect("send_batch");
    let ids: HashSet<String> = rt
        .block_on(stream_messages(&raw, &stream))
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").expect("an id").as_str().to_owned())
        .collect();
    assert_eq!(ids.len(), 13, "{ids:?}");
    assert_eq!(producer.send(b"next").expect("send").offset, 13);
}

#[test]
fn a_record_over_the_limits_is_refused_and_nothing_is_sent() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "limits", Options::default().record_bytes_max(100));
    let producer = queue.producer();
    let err = producer.send([0_u8; 101]).expect_err("too large");
    assert!(matches!(err, durq::Error::RecordTooLarge { bytes: 101, max: 100 }), "{err:?}");
    let err = producer.send_keyed([b'k'; 60], [0_u8; 41]).expect_err("key and payload too large together");
    assert!(matches!(err, durq::Error::RecordTooLarge { bytes: 101, max: 100 }), "{err:?}");
    let err = producer.send_batch([&[0_u8; 10][..], &[0; 101], &[0; 10]]).expect_err("one too large");
    assert!(matches!(err, durq::Error::RecordTooLarge { .. }), "{err:?}");
    assert_eq!(producer.send([0_u8; 100]).expect("at the limit").offset, 0, "nothing was stored before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_forms_send_from_async_code() {
    let server = NatsServer::start().await;
    let url = format!("{}/async", server.url());
    let queue = Queue::open_async(&url, Options::default().partitions(2)).await.expect("open");
    let producer = queue.producer();
    assert_eq!(producer.send_async(b"a").await.expect("send").offset, 0);
    let keyed = producer.send_keyed_async(b"k", b"b").await.expect("send_keyed");
    assert_eq!(keyed.partition, durq::partition_of_key(b"k", 2));
    let batch = producer.send_batch_async([b"c", b"d"]).await.expect("send_batch");
    assert_eq!(batch.len(), 2);
    producer.flush_async().await.expect("flush");
    // Dropping the queue inside a runtime does not panic.
    drop(producer);
    drop(queue);
}

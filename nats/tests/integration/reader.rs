//! The partition reader against a real server: records come in offset
//! order from where the reader starts, with their key, timestamp and
//! position; a reader waits for records without being handed any, and wakes
//! when one is sent.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::NatsServer;
use durq::{Options, Position, ResetTo};
use durq_nats::Queue;

fn open(server: &NatsServer, name: &str, partitions: u32) -> Queue {
    Queue::open_with(&format!("{}/{name}", server.url()), Options::default().partitions(partitions)).expect("open")
}

#[test]
fn a_partition_reads_in_offset_order_from_an_offset_with_keys_and_timestamps() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "read", 2);
    let producer = queue.producer();
    let before_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // Partition 1 gets keyed records (by the local hash) and a batch.
    let key = (0..).map(|i| format!("k{i}")).find(|k| durq::partition_of_key(k.as_bytes(), 2) == 1).unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        let payload = format!("keyed {i}");
        sent.push((producer.send_keyed(key.as_bytes(), &payload).unwrap(), Some(key.clone()), payload));
    }
    assert!(sent.iter().all(|(p, _, _)| p.partition == 1));

    let mut reader = queue.partition_reader(1, ResetTo::Offset(2)).expect("reader");
    assert!(reader.wait(Some(Duration::from_secs(10))), "records are there");
    let mut read = Vec::new();
    while read.len() < 3 {
        read.extend(reader.read(2).expect("read"));
        if read.len() < 3 {
            assert!(reader.wait(Some(Duration::from_secs(10))));
        }
    }
    let positions: Vec<Position> = read.iter().map(|r| r.position).collect();
    assert_eq!(positions, (2..5).map(|offset| Position { partition: 1, offset }).collect::<Vec<_>>());
    for (r, (_, key, payload)) in read.iter().zip(&sent[2..]) {
        assert_eq!(r.payload, payload.as_bytes());
        assert_eq!(r.key.as_deref(), key.as_ref().map(|k| k.as_bytes()));
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!((before_ms.saturating_sub(1000)..=now_ms + 1000).contains(&r.timestamp_ms), "{r:?}");
    }
    assert_eq!(reader.positions(), [Position { partition: 1, offset: 5 }]);
    assert!(reader.read(10).expect("read").is_empty(), "caught up");

    // Nothing comes: the wait ends at its timeout.
    assert!(!reader.wait(Some(Duration::from_millis(200))));
    // A record sent from another thread wakes the wait.
    let sender = {
        let producer = queue.producer();
        let key = key.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            producer.send_keyed(key.as_bytes(), "late").unwrap()
        })
    };
    let waited = Instant::now();
    assert!(reader.wait(Some(Duration::from_secs(30))), "woken by the send");
    println!("reader woke {:?} after the wait began (the send came after 200 ms)", waited.elapsed());
    let late = sender.join().unwrap();
    let records = reader.read(10).expect("read");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].position, records[0].payload.as_slice()), (late, &b"late"[..]));
}

#[test]
fn a_reader_of_every_partition_takes_turns_and_starts_where_asked() {
    let server = NatsServer::start_blocking();
    let queue = open(&server, "turns", 2);
    let producer = queue.producer();
    let positions: Vec<Position> = (0..6).map(|i| producer.send(format!("r{i}")).unwrap()).collect();
    let mut reader = queue.reader(ResetTo::Earliest).expect("reader");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 6 && Instant::now() < deadline {
        reader.wait(Some(Duration::from_secs(1)));
        seen.extend(reader.read(100).unwrap().into_iter().map(|r| r.position));
    }
    let mut expected = positions.clone();
    expected.sort_by_key(|p| (p.partition, p.offset));
    seen.sort_by_key(|p| (p.partition, p.offset));
    assert_eq!(seen, expected);

    let mut latest = queue.reader(ResetTo::Latest).expect("reader");
    assert!(!latest.wait(Some(Duration::from_millis(200))), "nothing sent after it started");
    let new = producer.send("new").unwrap();
    assert!(latest.wait(Some(Duration::from_secs(30))));
    assert_eq!(latest.read(10).unwrap().iter().map(|r| r.position).collect::<Vec<_>>(), [new]);
    assert!(matches!(queue.partition_reader(2, ResetTo::Earliest), Err(durq::Error::InvalidOption { .. })));
}

/// The client recreates a cursor's server-side consumer when it is lost (a
/// server's death; here, its deletion). A cursor that had received nothing
/// yet is recreated from the stream's first record: the reader must still
/// go on from where it was, never hand out an earlier record.
#[test]
fn a_reader_whose_server_side_consumer_is_lost_goes_on_from_where_it_was() {
    use futures_util::TryStreamExt;
    let server = NatsServer::start_blocking();
    let queue = open(&server, "lost", 1);
    let producer = queue.producer();
    for i in 0..10 {
        producer.send(format!("early {i}")).unwrap();
    }
    // At the end of the partition: nothing received yet.
    let mut reader = queue.partition_reader(0, ResetTo::Offset(10)).expect("reader");
    assert!(!reader.wait(Some(Duration::from_millis(200))), "nothing past offset 10 yet");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deleted = runtime.block_on(async {
        let client = async_nats::connect(server.url().trim_start_matches("nats://")).await.expect("raw connect");
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream.get_stream(durq_nats::record::stream_name("lost", 0)).await.expect("stream");
        let names: Vec<String> = stream.consumer_names().try_collect().await.expect("consumer names");
        for name in &names {
            stream.delete_consumer(name).await.expect("delete the reader's consumer");
        }
        names.len()
    });
    assert_eq!(deleted, 1, "the reader's one consumer");

    producer.send("late").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    while read.is_empty() {
        assert!(Instant::now() < deadline, "the reader never went on");
        if reader.wait(Some(Duration::from_millis(500))) {
            read.extend(reader.read(10).expect("read"));
        }
    }
    let offsets: Vec<u64> = read.iter().map(|r| r.position.offset).collect();
    assert_eq!(offsets, [10], "records: {read:?}");
    assert_eq!(read[0].payload, b"late");
}

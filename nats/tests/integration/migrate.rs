//! Migration of a local queue to a real server: the records from the lowest
//! group position on keep their offsets, keys and payloads; each group's
//! slots hold its local position, free; producing goes on at the next
//! offsets; the local queue is only read; a target that exists, or a group
//! the local queue lacks, is refused; a migration that stopped part-way is
//! finished by running it again, with nothing copied twice.

use std::path::Path;

use crate::common::{NatsServer, raw_jetstream, runtime};
use durq::{Options, Position, ResetTo, StoredRecord};
use durq_nats::{Error, Queue, group_names, migrate, record};

/// Partitions of the local queue in these tests.
const PARTITIONS: u32 = 3;

/// A local queue of `PARTITIONS` partitions with keyed and unkeyed records
/// (over 128 per partition: more than two windows of the migration's
/// pipeline), group `ahead` at offset 9 and group `behind` at
/// offset 4 of every partition.
fn local_queue(dir: &Path) {
    let queue = durq::Queue::open_with(dir, Options::default().partitions(PARTITIONS)).expect("open local");
    let producer = queue.producer();
    for i in 0..400 {
        producer.send(format!("unkeyed {i}")).expect("send");
        producer.send_keyed(format!("user-{}", i % 5), format!("keyed {i}")).expect("send_keyed");
    }
    producer.send_keyed(b"bytes \x00\xff key", b"binary key").expect("send_keyed");
    producer.flush().expect("flush");
    for (group, offset) in [("ahead", 9), ("behind", 4)] {
        drop(queue.consumer(group).expect("register the group"));
        queue.reset_group(group, ResetTo::Offset(offset)).expect("position the group");
    }
}

/// Every record of partition `p` of the local queue from `offset`.
fn local_records(dir: &Path, p: u32, offset: u64) -> Vec<StoredRecord> {
    let queue = durq::Queue::open_existing(dir).expect("reopen local");
    queue.read_at(p, offset, usize::MAX).expect("read local")
}

/// Records as `(offset, key, payload)`.
type Records = Vec<(u64, Option<Vec<u8>>, Vec<u8>)>;

/// Every message of partition `p`'s stream, and the stream's first offset.
fn stored(url: &str, queue: &str, p: u32) -> (u64, Records) {
    runtime().block_on(async {
        let jetstream = raw_jetstream(url).await;
        let stream = jetstream.get_stream(record::stream_name(queue, p)).await.expect("the stream exists");
        let state = stream.get_info().await.expect("stream info").state;
        let mut messages = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            let m = stream.get_raw_message(sequence).await.expect("a stored message");
            let key = m.headers.get(record::KEY_HEADER).map(|k| record::decode_key(k.as_str()).expect("a durq key"));
            messages.push((m.sequence - 1, key, m.payload.to_vec()));
        }
        (state.first_sequence - 1, messages)
    })
}

fn as_tuples(records: &[StoredRecord]) -> Records {
    records.iter().map(|r| (r.position.offset, r.key.clone(), r.payload.clone())).collect()
}

fn groups() -> Vec<String> {
    vec!["ahead".to_owned(), "behind".to_owned()]
}

fn refusal(e: &durq::Error) -> &str {
    match Error::of(e) {
        Some(Error::MigrationRefused { reason, .. }) => reason,
        _ => panic!("not a refused migration: {e:?}"),
    }
}

#[test]
fn records_keep_offsets_keys_and_payloads_groups_keep_positions_and_producing_goes_on() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    local_queue(&dir);
    let before = durq::stat::stat(&dir).expect("stat local");
    let url = format!("{}/moved", server.url());

    let mut reported = Vec::new();
    let migrated = migrate(&dir, &url, &groups(), |positions: &[Position]| {
        reported.extend_from_slice(positions);
        Ok(())
    })
    .expect("migrate");

    let mut expected_reports = Vec::new();
    for p in 0..PARTITIONS {
        let local = local_records(&dir, p, 4);
        let (first, messages) = stored(&server.url(), "moved", p);
        assert_eq!(first, 4, "partition {p} starts at the lowest group position");
        assert_eq!(messages, as_tuples(&local), "partition {p}: offsets, keys and payloads");
        assert_eq!(migrated.partitions[p as usize].offsets, 4..4 + local.len() as u64);
        expected_reports.extend(local.iter().map(|r| r.position));
    }
    assert_eq!(reported, expected_reports, "every record reported once, in order");

    let queue = Queue::open(&url).expect("open the migrated queue");
    assert_eq!(queue.partitions(), PARTITIONS);
    let stat = queue.stat().expect("stat");
    let names: Vec<&str> = stat.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["ahead", "behind"]);
    for (group, offset) in stat.groups.iter().zip([9, 4]) {
        assert_eq!(group.committed(), vec![offset; PARTITIONS as usize], "group {}", group.name);
        for slot in group.slots.iter().map(|s| s.as_ref().expect("written")) {
            assert_eq!(slot.holder(), None, "group {}: the slot is left free", group.name);
        }
        assert_eq!(group.bucket, group_names::group_bucket("moved", &group.name).expect("a valid name"));
    }

    let producer = queue.producer();
    let key = b"user-3";
    let partition = durq::partition_of_key(key, PARTITIONS);
    let next = stat.partitions[partition as usize].next_offset;
    assert_eq!(next, 4 + local_records(&dir, partition, 4).len() as u64);
    assert_eq!(producer.send_keyed(key, b"after the move").expect("send"), Position { partition, offset: next });

    // Only read: the local queue's offsets and groups are as they were.
    let after = durq::stat::stat(&dir).expect("stat local");
    assert_eq!(after.partitions, before.partitions);
    assert_eq!(after.groups.iter().map(|g| &g.committed).collect::<Vec<_>>(), [&vec![Some(9); 3], &vec![Some(4); 3]]);

    let again = migrate(&dir, &url, &groups(), |_: &[Position]| Ok(())).unwrap_err();
    assert!(refusal(&again).contains("the queue exists on the server"), "{again}");
}

#[test]
fn without_groups_every_kept_record_moves_and_a_missing_group_is_refused() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    local_queue(&dir);

    let missing = migrate(&dir, &format!("{}/nogroup", server.url()), &["absent".to_owned()], |_: &[Position]| Ok(()))
        .unwrap_err();
    assert!(refusal(&missing).contains("the local queue has no group \"absent\""), "{missing}");
    assert!(missing.to_string().contains(&dir.display().to_string()), "names the local queue: {missing}");

    let url = format!("{}/all", server.url());
    let migrated = migrate(&dir, &url, &[], |_: &[Position]| Ok(())).expect("migrate");
    assert!(migrated.groups.is_empty());
    for p in 0..PARTITIONS {
        let (first, messages) = stored(&server.url(), "all", p);
        assert_eq!(first, 0);
        assert_eq!(messages, as_tuples(&local_records(&dir, p, 0)), "partition {p}");
    }
    assert!(Queue::open(&url).expect("open").stat().expect("stat").groups.is_empty());
}

#[test]
fn a_migration_stopped_part_way_is_finished_by_running_it_again_without_duplicates() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    local_queue(&dir);
    let url = format!("{}/resumed", server.url());

    // The first run stops after partition 0 and two windows of partition 1.
    let mut copied_of_1 = 0;
    let stopped = migrate(&dir, &url, &groups(), |positions: &[Position]| {
        if positions[0].partition == 1 {
            copied_of_1 += positions.len() as u64;
            if copied_of_1 > 64 {
                return Err(durq::Error::Process("stopped on purpose".into()));
            }
        }
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(stopped, durq::Error::Process(_)), "{stopped:?}");

    // Until it is finished, the queue cannot be opened (and so not written).
    let half = Queue::open(&url).err().expect("a half-migrated queue is refused");
    assert!(half.to_string().contains("create stream DURQ_resumed_P0000"), "{half}");

    let mut reported = Vec::new();
    let finished = migrate(&dir, &url, &groups(), |positions: &[Position]| {
        reported.extend_from_slice(positions);
        Ok(())
    })
    .expect("run again");
    let partition_0 = local_records(&dir, 0, 4).len() as u64;
    assert!(local_records(&dir, 1, 4).len() > 128, "partition 1 has a third window");
    assert_eq!(finished.partitions[0].resumed_at, 4 + partition_0, "partition 0 was copied whole");
    assert_eq!(finished.partitions[1].resumed_at, 4 + 128, "two windows of partition 1 were stored before the stop");
    assert_eq!(reported.first().copied(), Some(Position { partition: 1, offset: 4 + 128 }), "goes on where it stopped");
    assert!(reported.iter().all(|p| p.partition >= 1), "partition 0 is not copied again: {reported:?}");

    for p in 0..PARTITIONS {
        let (first, messages) = stored(&server.url(), "resumed", p);
        assert_eq!(first, 4);
        assert_eq!(messages, as_tuples(&local_records(&dir, p, 4)), "partition {p}: no record twice");
    }
    let stat = Queue::open(&url).expect("open").stat().expect("stat");
    assert_eq!(stat.groups.iter().map(|g| g.committed()).collect::<Vec<_>>(), [vec![9; 3], vec![4; 3]]);
}

/// A local queue of one partition whose group `g` dead-lettered two of its
/// four records (one keyed) and processed the others.
fn local_queue_with_dead_letters(dir: &Path) -> Vec<durq::DeadLetter> {
    let queue = durq::Queue::open_with(dir, Options::default().partitions(1)).expect("open local");
    let producer = queue.producer();
    producer.send("ok 0").unwrap();
    producer.send_keyed(b"user-\x00", "bad 1").unwrap();
    producer.send("ok 2").unwrap();
    producer.send("bad 3").unwrap();
    producer.flush().unwrap();
    let mut consumer = queue.consumer("g").expect("consumer");
    let mut seen = 0;
    while seen < 4 {
        seen += consumer
            .process_each(std::time::Duration::from_secs(10), |m| {
                if m.payload().starts_with(b"bad") {
                    durq::Verdict::DeadLetter(format!("not an order: {}", String::from_utf8_lossy(m.payload())))
                } else {
                    durq::Verdict::Done
                }
            })
            .expect("process_each");
    }
    drop(consumer);
    let letters = queue.dead_letters("g", 10).expect("local dead letters");
    assert_eq!(letters.len(), 2);
    letters
}

/// A dead letter's original position, append time, deliveries, reason, key
/// and payload.
type Letter = (Position, u64, u32, String, Option<Vec<u8>>, Vec<u8>);

/// The dead letters as compared across backends: where, when, how often,
/// why, key and payload (not their place in the dead-letter queue, nor when
/// they failed: the stream stamps its own time).
fn comparable(letters: &[durq::DeadLetter]) -> Vec<Letter> {
    letters
        .iter()
        .map(|l| (l.original, l.timestamp_ms, l.deliveries, l.reason.clone(), l.key.clone(), l.payload.clone()))
        .collect()
}

/// Group `g`'s dead-letter stream of queue `queue` as durq creates it.
fn dead_letter_stream(queue: &str) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: format!("DURQ_{queue}_DLQ_g"),
        description: Some(format!("durq queue {queue}: dead letters")),
        subjects: vec![format!("durq.{queue}.dlq.g")],
        duplicate_window: durq_nats::DUPLICATE_WINDOW,
        ..Default::default()
    }
}

#[test]
fn a_groups_dead_letters_move_with_it_once_and_replay_on_nats() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    let local = local_queue_with_dead_letters(&dir);
    let url = format!("{}/letters", server.url());
    // An earlier run that stopped after the first letter, as it left the
    // dead-letter stream.
    runtime().block_on(async {
        let jetstream = raw_jetstream(&server.url()).await;
        jetstream.create_stream(dead_letter_stream("letters")).await.expect("create");
        let first = &local[0];
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(record::KEY_HEADER, record::encode_key(first.key.as_deref().unwrap()).as_str());
        for (name, value) in [
            ("Durq-Partition", first.original.partition.to_string()),
            ("Durq-Offset", first.original.offset.to_string()),
            ("Durq-Timestamp-Ms", first.timestamp_ms.to_string()),
            ("Durq-Deliveries", first.deliveries.to_string()),
            ("Durq-Reason", record::encode_key(first.reason.as_bytes())),
            ("Nats-Msg-Id", format!("durq-migrate-dlq-{}", first.dlq_offset)),
        ] {
            headers.insert(name, value.as_str());
        }
        let payload = first.payload.clone().into();
        jetstream.publish_with_headers("durq.letters.dlq.g", headers, payload).await.unwrap().await.unwrap();
    });

    let migrated = migrate(&dir, &url, &["g".to_owned()], |_: &[Position]| Ok(())).expect("migrate");
    assert_eq!(migrated.groups[0].dead_letters, 2);
    let queue = Queue::open(&url).expect("open the migrated queue");
    let moved = queue.dead_letters("g", 10).expect("dead letters on NATS");
    assert_eq!(comparable(&moved), comparable(&local), "each letter once, in order, as it was");
    assert_eq!(queue.replay_dead_letters("g").expect("replay"), 2);
    let mut reader = queue.reader(ResetTo::Offset(4)).expect("reader");
    let mut replayed: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    while replayed.len() < 2 && reader.wait(Some(std::time::Duration::from_secs(10))) {
        replayed.extend(reader.read(10).expect("read").into_iter().map(|r| (r.key, r.payload)));
    }
    assert_eq!(
        replayed,
        [(Some(b"user-\x00".to_vec()), b"bad 1".to_vec()), (None, b"bad 3".to_vec())],
        "replayed with their keys"
    );
}

#[test]
fn a_dead_letter_stream_with_letters_a_migration_did_not_write_is_refused() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    local_queue_with_dead_letters(&dir);
    runtime().block_on(async {
        let jetstream = raw_jetstream(&server.url()).await;
        let config = dead_letter_stream("foreign");
        jetstream.create_stream(config).await.expect("create");
        jetstream.publish("durq.foreign.dlq.g", "not a migrated letter".into()).await.unwrap().await.unwrap();
    });
    let url = format!("{}/foreign", server.url());
    let err = migrate(&dir, &url, &["g".to_owned()], |_: &[Position]| Ok(())).unwrap_err();
    assert!(refusal(&err).contains("dead-letter stream DURQ_foreign_DLQ_g exists"), "{err}");
}

#[test]
fn more_dead_letters_than_are_published_at_once_move_in_order() {
    let server = NatsServer::start_blocking();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local");
    // More than the 64 the migration publishes before it awaits their
    // acknowledgements.
    const LETTERS: usize = 150;
    {
        let queue = durq::Queue::open_with(&dir, Options::default().partitions(1)).expect("open local");
        let producer = queue.producer();
        for i in 0..LETTERS {
            producer.send(format!("bad {i}")).unwrap();
        }
        let mut consumer = queue.consumer("g").expect("consumer");
        let mut seen = 0;
        while seen < LETTERS {
            seen += consumer
                .process_each(std::time::Duration::from_secs(10), |_| durq::Verdict::DeadLetter("bad".into()))
                .expect("process_each");
        }
    }
    let url = format!("{}/many", server.url());
    let migrated = migrate(&dir, &url, &["g".to_owned()], |_: &[Position]| Ok(())).expect("migrate");
    assert_eq!(migrated.groups[0].dead_letters, LETTERS as u64);
    let queue = Queue::open(&url).expect("open the migrated queue");
    let moved: Vec<(u64, Vec<u8>)> = queue
        .dead_letters("g", 2 * LETTERS)
        .expect("dead letters on NATS")
        .into_iter()
        .map(|l| (l.original.offset, l.payload))
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = (0..LETTERS).map(|i| (i as u64, format!("bad {i}").into_bytes())).collect();
    assert_eq!(moved, expected, "each letter once, in order");
}

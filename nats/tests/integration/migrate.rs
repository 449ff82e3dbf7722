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

//! What durq does with input it must refuse: directories that are not
//! queues, damaged or newer meta files, conflicting or invalid options,
//! oversize records, and a checkpoint that points past the end of its log.
//!
//! Every refusal is a typed error that names the culprit, and none of them
//! changes a byte on disk: a queue that cannot be opened is left exactly as
//! it was found, for a human (or a newer build) to look at.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{data_snapshot, small, snapshot, take};
use durq::internals::group::checkpoint::{self, CheckpointState};
use durq::internals::meta::{self, META_FILE};
use durq::{Durability, Error, Options, Queue, QueueConfig};

/// Opens `path` every way there is and returns the errors.
fn open_errors(path: &Path) -> Vec<Error> {
    vec![
        Queue::open(path).err().expect("open must fail"),
        Queue::open_with(path, small()).err().expect("open_with must fail"),
        Queue::open_existing(path).err().expect("open_existing must fail"),
    ]
}

/// A closed queue at `dir/q` with a few records.
fn closed_queue(dir: &Path, options: Options) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, options).unwrap();
    queue.producer().send_batch(["a", "b", "c"]).unwrap();
    path
}

#[test]
fn a_directory_with_foreign_files_is_not_a_queue_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photos");
    std::fs::create_dir_all(path.join("2024")).unwrap();
    std::fs::write(path.join("cat.jpg"), b"\xff\xd8\xff not really a jpeg").unwrap();
    std::fs::write(path.join("2024/dog.jpg"), b"woof").unwrap();
    let before = snapshot(&path);
    for e in open_errors(&path) {
        assert!(matches!(&e, Error::NotAQueue { path: p, .. } if *p == path), "{e}");
    }
    assert!(matches!(durq::verify::verify(&path), Err(Error::Io { .. } | Error::NotAQueue { .. })));
    assert!(snapshot(&path) == before, "a refused directory was modified");
}

#[test]
fn a_foreign_file_named_like_the_meta_file_is_not_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    std::fs::create_dir(&path).unwrap();
    for contents in [&b""[..], b"DURQ", b"hello, this is somebody else's durq.meta file with 64 bytes......"] {
        std::fs::write(path.join(META_FILE), contents).unwrap();
        let before = snapshot(&path);
        for e in open_errors(&path) {
            assert!(matches!(e, Error::NotAQueue { .. }), "{contents:?}: {e}");
        }
        assert!(matches!(durq::verify::verify(&path), Err(Error::NotAQueue { .. })));
        assert!(snapshot(&path) == before);
    }
}

#[test]
fn a_file_where_the_queue_directory_should_be_is_not_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    std::fs::write(&path, b"just a file").unwrap();
    for e in open_errors(&path) {
        assert!(matches!(&e, Error::NotAQueue { path: p, .. } if *p == path), "{e}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"just a file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was created next to it");
}

#[test]
fn opening_a_missing_queue_with_open_existing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    assert!(matches!(Queue::open_existing(&path), Err(Error::NotAQueue { .. })));
    assert!(!path.exists());
}

#[test]
fn creating_a_queue_whose_parent_directory_is_missing_creates_nothing_and_names_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("ordres");
    let path = typo.join("q");
    for e in open_errors(&path) {
        assert!(matches!(&e, Error::NotAQueue { path: p, .. } if *p == path), "{e}");
    }
    let e = Queue::open(&path).err().unwrap();
    assert!(e.to_string().contains(&format!("parent directory {} does not exist", typo.display())), "{e}");
    assert!(!typo.exists(), "the missing parent was created");
}

/// Damage to the meta file: (what, how, which error).
type MetaDamage = (&'static str, fn(&Path), fn(&Error) -> bool);

#[test]
fn a_damaged_truncated_or_newer_meta_file_is_refused_with_a_typed_error_and_left_untouched() {
    let cases: [MetaDamage; 5] = [
        (
            "cut to 30 bytes",
            |m| std::fs::OpenOptions::new().write(true).open(m).unwrap().set_len(30).unwrap(),
            |e| matches!(e, Error::Corrupt { .. }),
        ),
        ("grown by a byte", |m| common::write_at(m, 64, b"x"), |e| matches!(e, Error::Corrupt { .. })),
        (
            "partitions flipped",
            |m| common::flip_byte(m, 12, 0x02),
            |e| matches!(e, Error::Corrupt { position: 60, .. }),
        ),
        ("checksum flipped", |m| common::flip_byte(m, 62, 0x80), |e| matches!(e, Error::Corrupt { position: 60, .. })),
        (
            "written by format version 2",
            |m| {
                let mut bytes: [u8; 64] = std::fs::read(m).unwrap().try_into().unwrap();
                bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
                let crc = crc32fast::hash(&bytes[..60]);
                bytes[60..].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(m, bytes).unwrap();
            },
            |e| matches!(e, Error::UnsupportedVersion { found: 2, supported: 1, .. }),
        ),
    ];
    for (what, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), small());
        let meta_path = path.join(META_FILE);
        damage(&meta_path);
        let before = snapshot(&path);
        for e in open_errors(&path) {
            assert!(expected(&e), "{what}: {e}");
            let names_meta = match &e {
                Error::Corrupt { file, .. } => *file == meta_path,
                Error::UnsupportedVersion { path: p, .. } => *p == meta_path,
                _ => false,
            };
            assert!(names_meta, "{what}: the error names the meta file: {e}");
        }
        match durq::verify::verify(&path) {
            // Damage: the one problem verify can report, with how to recover.
            Ok(report) => assert!(
                report.problems.len() == 1
                    && report.problems[0].file == meta_path
                    && report.notes.iter().any(|n| n.contains("to recover durq.meta")),
                "{what}: verify: {report:?}"
            ),
            // A newer format is no damage.
            Err(e) => assert!(matches!(e, Error::UnsupportedVersion { .. }) && expected(&e), "{what}: verify: {e}"),
        }
        assert!(snapshot(&path) == before, "{what}: a refused queue was modified");
    }
}

#[test]
fn a_meta_file_with_a_valid_checksum_but_impossible_options_is_corrupt() {
    let bad = [
        QueueConfig {
            partitions: 0,
            durability: Durability::Sync,
            segment_bytes: 64 << 10,
            record_bytes_max: 100,
            retention: Default::default(),
        },
        QueueConfig {
            partitions: 1,
            durability: Durability::Sync,
            segment_bytes: 1000,
            record_bytes_max: 100,
            retention: Default::default(),
        },
        QueueConfig {
            partitions: 1,
            durability: Durability::Sync,
            segment_bytes: 64 << 10,
            record_bytes_max: 1 << 20,
            retention: Default::default(),
        },
    ];
    for config in bad {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), small());
        std::fs::write(path.join(META_FILE), meta::encode(&config)).unwrap();
        let before = snapshot(&path);
        for e in open_errors(&path) {
            assert!(matches!(e, Error::Corrupt { .. }), "{config:?}: {e}");
        }
        assert!(snapshot(&path) == before);
    }
}

#[test]
fn a_segment_written_by_a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), small());
    let seg = common::segment_path(&path, 0, 0);
    let salt = durq::internals::log::salt::Salt::new(0x5a17);
    let mut header = durq::internals::log::segment::encode_header(0, 0, 64 << 10, salt);
    header[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..32]);
    header[32..36].copy_from_slice(&crc.to_le_bytes());
    common::write_at(&seg, 0, &header);
    let before = data_snapshot(&path);
    let e = Queue::open_existing(&path).err().expect("open must fail");
    assert!(matches!(&e, Error::UnsupportedVersion { path: p, found: 3, supported: 2 } if *p == seg), "{e}");
    assert!(data_snapshot(&path) == before);
}

#[test]
fn a_stray_file_or_a_missing_partition_directory_fails_the_open_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), small().partitions(2));
    let stray = path.join("p0001").join("notes.txt");
    std::fs::write(&stray, b"mine").unwrap();
    let before = data_snapshot(&path);
    match Queue::open_existing(&path) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, stray),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a stray file in a partition directory was accepted"),
    }
    assert!(data_snapshot(&path) == before);

    std::fs::remove_dir_all(path.join("p0001")).unwrap();
    match Queue::open_existing(&path) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, path.join("p0001")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a queue missing a partition was opened"),
    }
    assert!(!path.join("p0001").exists(), "a missing partition is not silently recreated empty");
}

#[test]
fn reopening_with_a_conflicting_option_is_refused_and_omitted_options_take_the_stored_values() {
    let dir = tempfile::tempdir().unwrap();
    let created = Options::default()
        .partitions(2)
        .durability(Durability::Interval(Duration::from_millis(5)))
        .segment_bytes(128 << 10)
        .record_bytes_max(1000);
    let path = closed_queue(dir.path(), created.clone());
    let stored = QueueConfig {
        partitions: 2,
        durability: Durability::Interval(Duration::from_millis(5)),
        segment_bytes: 128 << 10,
        record_bytes_max: 1000,
        retention: Default::default(),
    };
    let conflicts = [
        ("partitions", Options::default().partitions(3), "2", "3"),
        ("partitions", Options::default().partitions(1), "2", "1"),
        ("durability", Options::default().durability(Durability::Sync), "interval:5", "sync"),
        (
            "durability",
            Options::default().durability(Durability::Interval(Duration::from_millis(6))),
            "interval:5",
            "interval:6",
        ),
        ("segment_bytes", Options::default().segment_bytes(64 << 10), "131072", "65536"),
        ("record_bytes_max", Options::default().record_bytes_max(999), "1000", "999"),
    ];
    let before = data_snapshot(&path);
    for (option, options, stored_value, requested_value) in conflicts {
        match Queue::open_with(&path, options) {
            Err(Error::OptionsConflict { path: p, option: o, stored: s, requested: r }) => {
                assert_eq!((p, o, s.as_str(), r.as_str()), (path.clone(), option, stored_value, requested_value));
            }
            Err(e) => panic!("{option}: {e}"),
            Ok(_) => panic!("{option}: a conflicting option was accepted"),
        }
    }
    assert!(data_snapshot(&path) == before, "a refused reopen changed the queue");
    for options in [Options::default(), Options::default().partitions(2).record_bytes_max(1000), created] {
        let queue = Queue::open_with(&path, options).unwrap();
        assert_eq!(queue.config(), stored);
        assert_eq!(queue.offsets(0).unwrap().1 + queue.offsets(1).unwrap().1, 3);
    }
    assert_eq!(Queue::open(&path).unwrap().config(), stored);
    assert_eq!(Queue::open_existing(&path).unwrap().config(), stored);
}

#[test]
fn invalid_options_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let fits = (64 << 10) - 64 - 32 - 8; // the largest record one 64 KiB segment holds
    let cases = [
        ("partitions", Options::default().partitions(0)),
        ("partitions", Options::default().partitions(1025)),
        ("segment_bytes", Options::default().segment_bytes((64 << 10) + 100)),
        ("segment_bytes", Options::default().segment_bytes(32 << 10)),
        ("segment_bytes", Options::default().segment_bytes((1 << 30) + 4096)),
        ("record_bytes_max", Options::default().segment_bytes(64 << 10)), // the 1 MiB default does not fit
        ("record_bytes_max", Options::default().segment_bytes(64 << 10).record_bytes_max(fits + 1)),
        ("record_bytes_max", Options::default().record_bytes_max(0)),
        ("durability", Options::default().durability(Durability::Interval(Duration::ZERO))),
        ("durability", Options::default().durability(Durability::Interval(Duration::from_secs(3601)))),
    ];
    for (option, options) in cases {
        let path = dir.path().join("q");
        match Queue::open_with(&path, options.clone()) {
            Err(Error::InvalidOption { option: o, .. }) => assert_eq!(o, option, "{options:?}"),
            Err(e) => panic!("{options:?}: {e}"),
            Ok(_) => panic!("{options:?} was accepted"),
        }
        assert!(!path.exists(), "{options:?}: a refused queue left a directory behind");
    }
    // The boundary itself is valid, and such a record really fits.
    let queue = Queue::open_with(dir.path().join("q"), small().record_bytes_max(fits)).unwrap();
    let producer = queue.producer();
    assert_eq!(producer.send(vec![7u8; fits as usize]).unwrap().offset, 0);
    assert_eq!(producer.send(vec![8u8; fits as usize]).unwrap().offset, 1);
    assert_eq!(common::segments(queue.path(), 0).len(), 2, "one maximal record per segment");
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 2), vec![vec![7u8; fits as usize], vec![8u8; fits as usize]]);
}

#[test]
fn a_partition_the_queue_does_not_have_is_an_error_for_offsets_as_for_read_at() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open_with(dir.path().join("q"), small().partitions(2)).unwrap();
    assert_eq!(queue.offsets(1).unwrap(), (0, 0));
    for p in [2, u32::MAX] {
        for e in [queue.offsets(p).err(), queue.read_at(p, 0, 1).err()] {
            match e {
                Some(Error::InvalidOption { option, reason }) => {
                    assert_eq!((option, reason), ("partition", format!("{p} is not below 2")));
                }
                other => panic!("partition {p} of 2: {other:?}"),
            }
        }
    }
}

#[test]
fn oversize_keyed_records_and_keys_over_65535_bytes_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let max = 100_000u32;
    let queue = Queue::open_with(&path, Options::default().segment_bytes(256 << 10).record_bytes_max(max)).unwrap();
    let producer = queue.producer();
    producer.send(b"before").unwrap();
    let before = data_snapshot(&path);
    let refused: [(Vec<u8>, Vec<u8>); 4] = [
        (vec![b'k'; 10], vec![0; max as usize - 9]), // key + payload one byte over
        (vec![b'k'; max as usize + 1], vec![]),      // the key alone is over
        (vec![b'k'; 65_536], vec![]),                // under the limit, but a key is at most 65535 bytes
        (vec![b'k'; 65_536], vec![0; 1000]),         // the same with a payload
    ];
    for (key, payload) in &refused {
        match producer.send_keyed(key, payload) {
            Err(Error::KeyTooLarge { bytes, max: 65_535 }) => assert_eq!(bytes, key.len()),
            Err(Error::RecordTooLarge { bytes, max: m }) => {
                assert!(key.len() <= 65_535, "a too-long key is reported as such");
                assert_eq!((bytes, m), (key.len() + payload.len(), max));
            }
            Err(e) => panic!("key {} + payload {}: {e}", key.len(), payload.len()),
            Ok(pos) => panic!("key {} + payload {} was written at {pos:?}", key.len(), payload.len()),
        }
    }
    assert_eq!(queue.offsets(0).unwrap(), (0, 1));
    assert!(data_snapshot(&path) == before, "a refused record changed the queue's files");
    // The limits themselves are accepted, keyed and not.
    let accepted =
        [(vec![b'k'; 65_535], vec![1u8; max as usize - 65_535]), (vec![b'j'; 10], vec![2u8; max as usize - 10])];
    for (key, payload) in &accepted {
        producer.send_keyed(key, payload).unwrap();
    }
    let mut consumer = queue.consumer("g").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        consumer
            .process(|batch| {
                seen.extend(batch.iter().map(|m| (m.key().map(<[u8]>::to_vec), m.payload().to_vec())));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    assert_eq!(seen[0], (None, b"before".to_vec()));
    assert_eq!(seen[1..], accepted.map(|(k, p)| (Some(k), p)));
}

/// Writes a checkpoint file holding one valid copy with this state.
fn write_checkpoint(file: &Path, state: CheckpointState) {
    let mut bytes = vec![0u8; checkpoint::FILE_BYTES];
    bytes[..checkpoint::COPY_BYTES].copy_from_slice(&checkpoint::encode_copy(&state));
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_checkpoint_past_the_end_of_the_log_fails_the_consumer_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A long queue whose group consumed 50 records...
    let long = dir.path().join("long");
    let queue = Queue::open_with(&long, small()).unwrap();
    queue.producer().send_batch((0..50).map(|i| format!("m{i}"))).unwrap();
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 50).len(), 50);
    drop((consumer, queue));
    // ...and a short one (3 records) that gets the long one's checkpoint.
    let short = closed_queue(dir.path(), small());
    let queue = Queue::open_existing(&short).unwrap();
    drop(queue.consumer("g").unwrap());
    let ckpt = common::checkpoint_file(&short, "g", 0);
    std::fs::copy(common::checkpoint_file(&long, "g", 0), &ckpt).unwrap();
    let before = data_snapshot(&short);
    for _ in 0..2 {
        match queue.consumer("g") {
            Err(Error::Corrupt { file, offset, .. }) => assert_eq!((file, offset), (ckpt.clone(), Some(50))),
            Err(e) => panic!("{e}"),
            Ok(c) => panic!("a checkpoint past the end was accepted at {:?}", c.committed().unwrap()),
        }
    }
    drop(queue);
    assert!(data_snapshot(&short) == before, "the refused checkpoint was rewritten");
    let report = durq::verify::verify(&short).unwrap();
    assert!(
        report.problems.iter().any(|p| p.file == ckpt && p.offset == Some(50)),
        "verify reports the checkpoint: {report:#?}"
    );

    // Exactly at the end is fine: the group has processed everything.
    write_checkpoint(
        &ckpt,
        CheckpointState {
            partition: 0,
            generation: 7,
            epoch: 0,
            next_offset: 3,
            delivered_end: 3,
            attempts: 0,
            range_attempts: 0,
        },
    );
    let queue = Queue::open_existing(&short).unwrap();
    assert_eq!(queue.consumer("g").unwrap().committed().unwrap(), vec![3]);
    // One past it is not (each open takes a new epoch: find its file again).
    let ckpt = common::checkpoint_file(&short, "g", 0);
    write_checkpoint(
        &ckpt,
        CheckpointState {
            partition: 0,
            generation: 7,
            epoch: 0,
            next_offset: 4,
            delivered_end: 4,
            attempts: 0,
            range_attempts: 0,
        },
    );
    assert!(matches!(queue.consumer("g"), Err(Error::Corrupt { offset: Some(4), .. })));
}

#[test]
fn a_checkpoint_of_another_partition_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), small().partitions(2));
    let queue = Queue::open_existing(&path).unwrap();
    drop(queue.consumer("g").unwrap());
    let p0 = common::checkpoint_file(&path, "g", 0);
    // A valid copy that says it belongs to partition 1, in partition 0's file.
    write_checkpoint(
        &p0,
        CheckpointState {
            partition: 1,
            generation: 9,
            epoch: 0,
            next_offset: 0,
            delivered_end: 0,
            attempts: 0,
            range_attempts: 0,
        },
    );
    match queue.consumer("g") {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, p0),
        Err(e) => panic!("{e}"),
        Ok(c) => panic!("accepted at {:?}", c.committed().unwrap()),
    }
}

#[test]
fn a_segment_file_whose_header_belongs_elsewhere_or_no_segment_at_all_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), small().partitions(2));
    let (p0, p1) = (common::segment_path(&path, 0, 0), common::segment_path(&path, 1, 0));
    let originals = (std::fs::read(&p0).unwrap(), std::fs::read(&p1).unwrap());
    // Partition 1's segment copied over partition 0's: a valid header, for
    // another partition.
    std::fs::write(&p0, &originals.1).unwrap();
    match Queue::open_existing(&path) {
        Err(Error::Corrupt { file, position: 0, .. }) => assert_eq!(file, p0),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("partition 1's segment was accepted as partition 0's"),
    }
    assert_eq!(std::fs::read(&p0).unwrap(), originals.1);
    // Segment 0 renamed to segment 5: its header says base offset 0.
    std::fs::write(&p0, &originals.0).unwrap();
    let renamed = common::segment_path(&path, 0, 5);
    std::fs::rename(&p0, &renamed).unwrap();
    match Queue::open_existing(&path) {
        Err(Error::Corrupt { file, position: 0, .. }) => assert_eq!(file, renamed),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a renamed segment was accepted"),
    }
    // No segment file at all.
    std::fs::remove_file(&renamed).unwrap();
    match Queue::open_existing(&path) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, path.join("p0000")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a partition without segments was opened"),
    }
    assert_eq!(std::fs::read_dir(path.join("p0000")).unwrap().count(), 0, "nothing was recreated");
}

#[test]
fn durability_changes_only_while_no_process_has_the_queue_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    queue.producer().send(b"before").unwrap();
    assert!(matches!(Queue::change_durability(&path, Durability::Buffered), Err(Error::QueueBusy { .. })));
    drop(queue);
    let changed = Queue::change_durability(&path, Durability::Buffered).unwrap();
    assert_eq!(changed.durability, Durability::Buffered);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.config().durability, Durability::Buffered);
    assert!(matches!(
        Queue::open_with(&path, small().durability(Durability::Sync)),
        Err(Error::OptionsConflict { option: "durability", .. })
    ));
    assert_eq!(queue.read_at(0, 0, 10).unwrap()[0].payload, b"before");
}

#[test]
fn a_partition_whose_offsets_are_used_up_refuses_appends_instead_of_wrapping_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    drop(Queue::open_with(&path, small()).unwrap());
    // Segment 0 moved, header and name, to base offset 2^64 - 2 (a hostile
    // or damaged file: no log gets there): room for one more record.
    let base = u64::MAX - 1;
    let moved = common::segment_path(&path, 0, base);
    std::fs::rename(common::segment_path(&path, 0, 0), &moved).unwrap();
    common::write_at(&moved, 16, &base.to_le_bytes());
    let fixed = std::fs::read(&moved).unwrap()[..32].to_vec();
    common::write_at(&moved, 32, &crc32fast::hash(&fixed).to_le_bytes());
    common::set_synced_end(&moved, base);
    let queue = Queue::open_existing(&path).unwrap();
    let producer = queue.producer();
    assert_eq!(producer.send(b"last").unwrap().offset, base);
    for _ in 0..2 {
        match producer.send(b"one too many") {
            Err(Error::Corrupt { file, offset: Some(offset), .. }) => {
                assert_eq!((file, offset), (path.join("p0000"), u64::MAX))
            }
            other => panic!("an append past offset 2^64 - 2: {other:?}"),
        }
    }
    assert_eq!(queue.offsets(0).unwrap(), (base, u64::MAX), "nothing wrapped around to offset 0");
    assert_eq!(queue.read_at(0, base, 10).unwrap().len(), 1);
}

//! Damage to acknowledged data, through real files.
//!
//! A record that was acknowledged and later damaged (bit rot, a stray write)
//! must never be delivered and never be skipped: a consumer gets every record
//! before it, then `Error::Corrupt` naming the file, byte position and offset,
//! as often as it asks. `durq::verify` must report the same place, must not
//! report anything on an intact queue, and must never change a byte. The same
//! holds for sealed segments and for consumer-group checkpoints, whose damage
//! falls back to the older copy (redelivery) or fails the open, never resets.

use crate::common;

use std::path::{Path, PathBuf};

use common::{frame_starts, message, messages, process_error, segment_path, small, take};
use durq::internals::group::checkpoint::{self, COPIES_AT, COPY_BYTES, MARK_COPY_AT, SECOND_COPY_AT};
use durq::{ConsumerOptions, Error, Queue};

/// A closed queue at `dir/q` holding `message(0..n)`, sent one at a time
/// under `Sync`.
fn closed_queue(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small()).unwrap();
    let producer = queue.producer();
    for i in 0..n {
        producer.send(message(i)).unwrap();
    }
    path
}

/// Asserts that `e` is `Corrupt` at exactly this place.
#[track_caller]
fn assert_corrupt_at(e: &Error, file: &Path, position: usize, offset: Option<u64>) {
    match e {
        Error::Corrupt { file: f, position: p, offset: o, .. } => {
            assert_eq!((f.as_path(), *p, *o), (file, position as u64, offset), "{e}");
        }
        other => panic!("expected Corrupt at {}:{position}, got {other}", file.display()),
    }
}

/// Runs verify on a closed queue and checks that it did not change a byte.
fn verify_read_only(path: &Path) -> durq::verify::Report {
    let before = common::snapshot(path);
    let report = durq::verify::verify(path).unwrap();
    assert!(common::snapshot(path) == before, "verify modified the queue directory");
    report
}

#[track_caller]
fn assert_problem(report: &durq::verify::Report, file: &Path, position: usize, offset: Option<u64>) {
    assert!(
        report.problems.iter().any(|p| (p.file.as_path(), p.position, p.offset) == (file, position as u64, offset)),
        "no problem reported at {}:{position} {offset:?}: {report:#?}",
        file.display()
    );
}

#[test]
fn verify_finds_nothing_wrong_with_an_intact_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().partitions(2)).unwrap();
    let producer = queue.producer();
    for i in 0..300u64 {
        producer.send_keyed(format!("k{}", i % 7), vec![i as u8; 500]).unwrap();
    }
    let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(10)).unwrap();
    take(&mut consumer, 100);
    drop((consumer, producer, queue));
    let report = verify_read_only(&path);
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:#?}");
    assert_eq!((report.records, report.checkpoints), (300, 2));
    assert!(report.segments > 2, "the test rolled segments");
}

#[test]
fn flipped_byte_in_an_acknowledged_record_is_reported_never_delivered_never_skipped() {
    const N: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    // A group that committed exactly up to the record that will be damaged.
    let queue = Queue::open_existing(&path).unwrap();
    let mut early = queue.consumer_with("early", ConsumerOptions::default().max_batch(3)).unwrap();
    assert_eq!(take(&mut early, 3), messages(0..3));
    drop((early, queue));

    let seg = segment_path(&path, 0, 0);
    let s = frame_starts((0..N).map(|i| message(i).len()));
    common::flip_byte(&seg, s[3] + 37, 0x02);

    let report = verify_read_only(&path);
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert_problem(&report, &seg, s[3], Some(3));
    assert_eq!(report.records, N);
    // What `durq verify` prints after "problem: ", and what a reader gets.
    let says = format!("frame checksum mismatch in acknowledged data (valid records follow at byte {})", s[4]);
    assert!(report.problems[0].to_string().ends_with(&says), "{}", report.problems[0]);

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N));
    for group in ["fresh", "early"] {
        let mut consumer = queue.consumer(group).unwrap();
        if group == "fresh" {
            assert_eq!(take(&mut consumer, 3), messages(0..3), "the records before the damage");
        }
        for _ in 0..3 {
            let e = process_error(&mut consumer);
            assert_corrupt_at(&e, &seg, s[3], Some(3));
            assert!(e.to_string().ends_with("(record offset 3): frame checksum mismatch"), "{e}");
        }
        assert_eq!(consumer.committed().unwrap(), vec![3], "{group}: never skipped");
    }
    // Producers are not affected: the log goes on after the damaged record.
    assert_eq!(queue.producer().send(b"later").unwrap().offset, N);
}

#[test]
fn every_single_byte_flip_in_an_acknowledged_record_stops_readers_at_that_record() {
    const N: u64 = 6;
    let pristine = tempfile::tempdir().unwrap();
    let original = closed_queue(pristine.path(), N);
    let s = frame_starts((0..N).map(|i| message(i).len()));
    for at in s[3]..s[4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg = segment_path(&path, 0, 0);
        common::flip_byte(&seg, at, 0x10);
        let report = verify_read_only(&path);
        assert_eq!(report.problems.len(), 1, "flip at {at}: {report:#?}");
        assert_problem(&report, &seg, s[3], Some(3));

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, N), "flip at {at}");
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(take(&mut consumer, 3), messages(0..3), "flip at {at}");
        assert_corrupt_at(&process_error(&mut consumer), &seg, s[3], Some(3));
    }
}

#[test]
fn a_zeroed_header_of_an_acknowledged_record_is_reported_at_that_record() {
    const N: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let seg = segment_path(&path, 0, 0);
    let s = frame_starts((0..N).map(|i| message(i).len()));
    common::write_at(&seg, s[3], &[0u8; 32]);

    let report = verify_read_only(&path);
    assert_problem(&report, &seg, s[3], Some(3));
    let says = format!("zeros followed by data in acknowledged data (valid records follow at byte {})", s[4]);
    assert!(report.problems[0].to_string().ends_with(&says), "{report:#?}");
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N), "record 4's watermark proves record 3 was acknowledged");
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 3), messages(0..3));
    assert_corrupt_at(&process_error(&mut consumer), &seg, s[3], Some(3));
}

#[test]
fn a_group_already_past_a_damaged_record_still_opens_and_reads_on() {
    // Damage behind a group's checkpoint is in data it no longer needs: it
    // must not stop the group from reading the intact records after it.
    const N: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(4)).unwrap();
    assert_eq!(take(&mut consumer, 8), messages(0..8));
    drop((consumer, queue));
    let s = frame_starts((0..N).map(|i| message(i).len()));
    common::flip_byte(&segment_path(&path, 0, 0), s[3] + 40, 0x01);

    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = queue.consumer("g").expect("a group past the damage reopens");
    assert_eq!(take(&mut consumer, 2), messages(8..10));
}

/// Records of 1000 bytes: 63 fit one 64 KiB segment, so 150 of them fill
/// segments 0 and 63 and start segment 126.
const BIG: usize = 1000;
const BIG_N: u64 = 150;
const PER_SEGMENT: u64 = 63;

fn big(i: u64) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; BIG];
    v[..8].copy_from_slice(format!("{i:08}").as_bytes());
    v
}

fn big_queue(dir: &Path) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small()).unwrap();
    let producer = queue.producer();
    for i in 0..BIG_N {
        producer.send(big(i)).unwrap();
    }
    drop((producer, queue));
    let bases: Vec<PathBuf> = common::segments(&path, 0);
    assert_eq!(
        bases,
        [0, PER_SEGMENT, 2 * PER_SEGMENT].map(|b| segment_path(&path, 0, b)),
        "1000-byte records roll where the test expects"
    );
    path
}

fn big_pos(i: u64) -> usize {
    64 + (i % PER_SEGMENT) as usize * common::frame_len(0, BIG)
}

#[test]
fn damage_in_sealed_segments_is_reported_where_it_is_and_never_skipped() {
    let pristine = tempfile::tempdir().unwrap();
    let original = big_queue(pristine.path());
    // (what, the damaged record, the byte of its frame that is flipped, how)
    let cases: [(&str, u64, usize, u8); 4] = [
        ("a payload byte of a record inside sealed segment 0", 10, 500, 0x80),
        ("the timestamp of the last record of sealed segment 0", 62, 20, 0x04),
        ("the offset of a record inside sealed segment 63", 100, 8, 0x01),
        ("the magic of the first record of sealed segment 63", 63, 27, 0xff),
    ];
    for (what, good, at_in_frame, mask) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg = segment_path(&path, 0, good / PER_SEGMENT * PER_SEGMENT);
        let (position, offset) = (big_pos(good), Some(good));
        common::flip_byte(&seg, position + at_in_frame, mask);
        let report = verify_read_only(&path);
        assert_problem(&report, &seg, position, offset);

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, BIG_N), "{what}: recovery looks at the last segment only");
        let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(1000)).unwrap();
        let delivered = take(&mut consumer, good as usize);
        assert!(delivered.iter().zip(0..).all(|(m, i)| *m == big(i)), "{what}");
        for _ in 0..2 {
            assert_corrupt_at(&process_error(&mut consumer), &seg, position, offset);
        }
        assert_eq!(consumer.committed().unwrap(), vec![good], "{what}");
    }
}

#[test]
fn a_damaged_truncated_or_missing_sealed_segment_file_is_an_error_not_a_crash_or_a_skip() {
    let pristine = tempfile::tempdir().unwrap();
    let original = big_queue(pristine.path());
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("zeroed header", |f| common::write_at(f, 0, &[0u8; 64])),
        ("flipped header byte", |f| common::flip_byte(f, 17, 0x01)),
        ("file cut to 4 KiB", |f| std::fs::OpenOptions::new().write(true).open(f).unwrap().set_len(4096).unwrap()),
        ("file missing", |f| std::fs::remove_file(f).unwrap()),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg63 = segment_path(&path, 0, PER_SEGMENT);
        damage(&seg63);
        let report = verify_read_only(&path);
        assert!(!report.problems.is_empty(), "{what}: {report:#?}");

        let queue = Queue::open_existing(&path).unwrap();
        let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(1000)).unwrap();
        assert_eq!(take(&mut consumer, PER_SEGMENT as usize).len(), PER_SEGMENT as usize, "{what}");
        for _ in 0..2 {
            match process_error(&mut consumer) {
                Error::Corrupt { file, offset, .. } => {
                    let named = file == seg63 || (file == segment_path(&path, 0, 0) && offset == Some(PER_SEGMENT));
                    assert!(named, "{what}: error names {} offset {offset:?}", file.display());
                }
                e => panic!("{what}: {e}"),
            }
        }
        assert_eq!(consumer.committed().unwrap(), vec![PER_SEGMENT], "{what}");
    }
}

/// A closed queue with 10 records whose group "g" committed batches of 4, 4
/// and 2: the synced checkpoint copies hold next offsets 8 (older) and 10
/// (newest), the mark copy at byte 4096 the delivery of the last batch (8,
/// up to 10), the one beside it that of the batch before.
/// Returns the queue path, the checkpoint path and where the newest copy is.
fn committed_group(dir: &Path) -> (PathBuf, PathBuf, usize) {
    let path = closed_queue(dir, 10);
    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(4)).unwrap();
    assert_eq!(take(&mut consumer, 10), messages(0..10));
    drop((consumer, queue));
    let ckpt = common::checkpoint_file(&path, "g", 0);
    let bytes = std::fs::read(&ckpt).unwrap();
    let copies: Vec<_> = [0, SECOND_COPY_AT].map(|at| checkpoint::decode_copy(&bytes[at..], 0).unwrap()).into();
    let newest = if copies[1].generation > copies[0].generation { SECOND_COPY_AT } else { 0 };
    let older = SECOND_COPY_AT - newest;
    assert_eq!(checkpoint::decode_copy(&bytes[newest..], 0).unwrap().next_offset, 10);
    assert_eq!(checkpoint::decode_copy(&bytes[older..], 0).unwrap().next_offset, 8);
    let mark = checkpoint::decode_copy(&bytes[MARK_COPY_AT..], 0).unwrap();
    assert_eq!((mark.next_offset, mark.delivered_end), (8, 10));
    (path, ckpt, newest)
}

#[test]
fn a_damaged_newest_checkpoint_copy_falls_back_to_the_older_one_and_redelivers() {
    for at_in_copy in [0, 9, 20, 33, 45, 61] {
        let dir = tempfile::tempdir().unwrap();
        let (path, ckpt, newest) = committed_group(dir.path());
        common::flip_byte(&ckpt, newest + at_in_copy, 0x01);
        let report = verify_read_only(&path);
        assert!(report.problems.is_empty(), "one good copy is not damage: {report:#?}");
        assert_eq!(report.notes.len(), 1, "{report:#?}");
        let why = if at_in_copy == 0 { "bad magic" } else { "checksum mismatch" };
        let says = format!("{}: copy at byte {newest}: {why}; another copy is used", ckpt.display());
        assert_eq!(report.notes[0], says);

        let queue = Queue::open_existing(&path).unwrap();
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(consumer.committed().unwrap(), vec![8], "byte {at_in_copy}: the older copy is in force");
        assert_eq!(take(&mut consumer, 2), messages(8..10), "the last committed batch comes again");
        drop((consumer, queue));
        // The commit overwrote the damaged copy; the next open is at the end.
        let queue = Queue::open_existing(&path).unwrap();
        let consumer = queue.consumer("g").unwrap();
        assert_eq!(consumer.committed().unwrap(), vec![10]);
        drop((consumer, queue));
        let report = verify_read_only(&path);
        assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:#?}");
    }
}

#[test]
fn with_both_synced_checkpoint_copies_damaged_the_last_delivery_mark_still_holds_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ckpt, _) = committed_group(dir.path());
    common::flip_byte(&ckpt, 35, 0x01);
    common::write_at(&ckpt, SECOND_COPY_AT, &[0u8; COPY_BYTES]);
    let report = verify_read_only(&path);
    assert!(report.problems.is_empty(), "the mark copy is valid: {report:#?}");
    assert_eq!(report.notes.len(), 2, "a note per damaged copy, zeros included: {report:#?}");
    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(consumer.committed().unwrap(), vec![8], "the mark's position: a redelivery, not a reset");
    let again = consumer.poll(std::time::Duration::ZERO).unwrap().expect("the last batch again");
    assert_eq!(again.messages()[0].delivery_count(), 2, "the mark also counted the delivery");
}

#[test]
fn a_checkpoint_with_no_valid_copy_fails_the_open_never_resets() {
    type Damage = fn(&Path);
    // With what the error says (`Error::Corrupt`'s text, which `durq
    // verify` prints too).
    let cases: [(&str, Damage, &str); 3] = [
        (
            "every copy flipped",
            |f| {
                for at in COPIES_AT {
                    common::flip_byte(f, at + 35, 0x01);
                }
            },
            "every checkpoint copy is invalid (copy at 0: checksum mismatch; copy at 512: checksum mismatch; \
             copy at 4096: checksum mismatch; copy at 4160: checksum mismatch)",
        ),
        (
            "file emptied",
            |f| std::fs::write(f, b"").unwrap(),
            "checkpoint file is empty, but the lease says epoch 1 filled it",
        ),
        (
            "every magic gone",
            |f| {
                for at in COPIES_AT {
                    common::write_at(f, at, &[0u8; COPY_BYTES]);
                }
            },
            "every checkpoint copy is invalid (copy at 0: bad magic; copy at 512: bad magic; copy at 4096: bad magic; \
             copy at 4160: bad magic)",
        ),
    ];
    for (what, damage, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (path, ckpt, _) = committed_group(dir.path());
        damage(&ckpt);
        let before = common::data_snapshot(&path);
        let report = verify_read_only(&path);
        assert_problem(&report, &ckpt, 0, None);
        assert!(report.problems.iter().any(|p| p.what == says), "{what}: {report:#?}");

        let queue = Queue::open_existing(&path).unwrap();
        for _ in 0..2 {
            match queue.consumer("g") {
                Err(e) => {
                    assert_corrupt_at(&e, &ckpt, 0, None);
                    assert_eq!(e.to_string(), format!("corrupt {} at byte 0: {says}", ckpt.display()));
                }
                Ok(c) => panic!("{what}: group reopened at {:?}", c.committed().unwrap()),
            }
        }
        drop(queue);
        assert!(common::data_snapshot(&path) == before, "{what}: the failed open rewrote the checkpoint");
    }
}

#[test]
fn a_damaged_lease_is_a_note_that_says_what_is_wrong() {
    // Leases are for liveness and for humans; fencing does not depend on
    // them, so damage is a note, worded for the operator who reads it.
    let dir = tempfile::tempdir().unwrap();
    let (path, ckpt, _) = committed_group(dir.path());
    let lease = ckpt.with_file_name(durq::internals::group::slot::LEASE_FILE);
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 2] = [
        ("flipped byte", |f| common::flip_byte(f, 30, 0x01), "lease checksum mismatch"),
        ("cut short", |f| std::fs::write(f, b"DURQLEAS").unwrap(), "lease record cut short"),
    ];
    for (what, damage, says) in cases {
        damage(&lease);
        let report = verify_read_only(&path);
        assert!(report.problems.is_empty(), "{what}: {report:#?}");
        assert_eq!(report.notes, [format!("{}: {says}", lease.display())], "{what}");
    }
}

#[test]
fn verify_blames_only_a_segment_whose_header_is_damaged_not_the_intact_files_after_it() {
    // A segment whose header cannot be read says nothing about where its
    // records end. verify used to guess from its base: the next segment
    // then seemed to start at the wrong offset, and a group's checkpoint
    // past that base seemed to point past the end of the log.
    let pristine = tempfile::tempdir().unwrap();
    let original = big_queue(pristine.path());
    let queue = Queue::open_existing(&original).unwrap();
    // Batches of 7 end exactly at 140 (63 records fill a segment).
    let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(7)).unwrap();
    assert_eq!(take(&mut consumer, 140).len(), 140, "the group's checkpoint is in the last segment");
    drop((consumer, queue));
    for (what, base) in [("sealed", PER_SEGMENT), ("last", 2 * PER_SEGMENT)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg = segment_path(&path, 0, base);
        common::write_at(&seg, 0, &[0u8; 64]);
        let report = verify_read_only(&path);
        assert_problem(&report, &seg, 0, None);
        assert!(report.problems.iter().all(|p| p.file == seg), "{what}: only the damaged segment: {report:#?}");
    }
}

#[test]
fn a_sealed_segment_cut_at_a_frame_start_is_reported_where_its_records_stop() {
    // Its header says every record up to the next segment was synced, so
    // the cut is damage to this segment, not a gap in front of the next one.
    let dir = tempfile::tempdir().unwrap();
    let path = big_queue(dir.path());
    let seg0 = segment_path(&path, 0, 0);
    std::fs::OpenOptions::new().write(true).open(&seg0).unwrap().set_len(big_pos(40) as u64).unwrap();
    let report = verify_read_only(&path);
    assert_problem(&report, &seg0, big_pos(40), Some(40));
    assert!(report.problems.iter().all(|p| p.file == seg0), "only the cut segment: {report:#?}");
}

/// Every byte position a text names ("byte N").
fn bytes_named(text: &str) -> Vec<u64> {
    text.split("byte ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[test]
fn verify_names_no_position_past_the_end_of_a_cut_segment() {
    // A sealed segment cut anywhere from its first record on (at frame
    // starts and inside frames): every position verify names, as a
    // problem's position or in any text, lies in the file or at its end,
    // where the cut is. (It named "valid records follow at byte 42032" for a
    // file cut to 30,000 bytes: a position inside the zeros it walked in
    // place of the missing bytes.)
    let pristine = tempfile::tempdir().unwrap();
    let original = big_queue(pristine.path());
    let lens = (1..62).map(|i| big_pos(i) as u64).chain((200..64_000).step_by(2_999)).chain([30_000]);
    for len in lens {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg0 = segment_path(&path, 0, 0);
        std::fs::OpenOptions::new().write(true).open(&seg0).unwrap().set_len(len).unwrap();
        let report = verify_read_only(&path);
        assert!(!report.problems.is_empty(), "cut to {len}: {report:#?}");
        for p in &report.problems {
            assert_eq!(p.file, seg0, "cut to {len}: only the cut segment: {report:#?}");
            let named = bytes_named(&p.what).into_iter().chain([p.position]).max().unwrap();
            assert!(named <= len, "cut to {len}: {p}");
        }
        for n in &report.notes {
            assert!(bytes_named(n).into_iter().all(|b| b <= len), "cut to {len}: {n}");
        }
    }
}

#[test]
fn a_damaged_record_in_one_partition_does_not_stop_deliveries_from_the_others() {
    // Two partitions; round-robin sends put even messages in p0, odd in p1.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().partitions(2)).unwrap();
    for i in 0..10 {
        queue.producer().send(message(i)).unwrap();
    }
    drop(queue);
    let seg = segment_path(&path, 0, 0);
    let p0: Vec<u64> = (0..10).step_by(2).collect();
    let s = frame_starts(p0.iter().map(|&i| message(i).len()));
    common::flip_byte(&seg, s[1] + 37, 0x02); // p0's offset 1

    let queue = Queue::open_existing(&path).unwrap();
    // Batches of 2: p1's five records need three turns, between p0's.
    let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(2)).unwrap();
    let (mut delivered, mut errors) = (Vec::new(), 0);
    for _ in 0..8 {
        match consumer.process_timeout(std::time::Duration::from_millis(200), |batch| {
            delivered.extend(batch.iter().map(|m| m.payload().to_vec()));
            Ok::<(), std::io::Error>(())
        }) {
            Ok(_) => {}
            Err(e) => {
                assert_corrupt_at(&e, &seg, s[1], Some(1));
                errors += 1;
            }
        }
    }
    // p0's first record, then its damage reported each time it comes round;
    // all of p1, which the damage in p0 must not hold up.
    delivered.sort();
    let mut expected: Vec<Vec<u8>> = (1..10).step_by(2).map(message).collect();
    expected.push(message(0));
    expected.sort();
    assert_eq!(delivered, expected);
    assert!(errors >= 2, "the damage is reported every time it comes round, not skipped: {errors}");
    assert_eq!(consumer.committed().unwrap(), vec![1, 5]);
}

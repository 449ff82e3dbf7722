//! Crash recovery through real files.
//!
//! Every test here builds a queue through the public API, closes every handle
//! (so the next open is alone and runs recovery), damages the segment files
//! the way a crash or a torn write would, reopens the queue, and checks what
//! survived: every record some later frame proves durable, and nothing else.
//! The rows of the decision table in `src/log/recovery.rs` are exercised one
//! by one, then the segment-header rows, then idempotence, then the segment
//! before the last as a roll under `Buffered` leaves it to a background sync,
//! then a last segment of which nothing (or only part of its header) is left,
//! judged with what group checkpoints and dead letters prove.

use crate::common;

use std::path::{Path, PathBuf};

use common::{frame_starts, message, messages, segment_path, small, take};
use durq::internals::log::record::{self, FrameMeta};
use durq::internals::log::salt::Salt;
use durq::internals::log::segment;
use durq::{Durability, Error, Queue};

/// A closed queue at `dir/q` holding records `0..n`, each sent alone under
/// `Sync` (so record `i + 1`'s watermark proves record `i` durable). The
/// segment header's `synced_end` is set back to `n - 1`, as a power loss
/// before the header's last update reached the disk leaves it: nothing but
/// the frames proves the last record, so damage to it is a torn tail.
fn closed_queue(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    let producer = queue.producer();
    for i in 0..n {
        assert_eq!(producer.send(message(i)).unwrap().offset, i);
    }
    drop((producer, queue));
    common::set_synced_end(&segment_path(&path, 0, 0), n.saturating_sub(1));
    path
}

/// A closed `Buffered` queue at `path`: `payload(0..flushed)` sent and
/// flushed (no flush at all when `flushed` is 0), then
/// `payload(flushed..total)` sent and never flushed.
fn closed_buffered(path: &Path, payload: fn(u64) -> Vec<u8>, flushed: u64, total: u64) {
    let queue = Queue::open_with(path, small().durability(Durability::Buffered)).unwrap();
    let producer = queue.producer();
    for i in 0..flushed {
        producer.send(payload(i)).unwrap();
    }
    if flushed > 0 {
        producer.flush().unwrap();
    }
    for i in flushed..total {
        producer.send(payload(i)).unwrap();
    }
}

/// The header a new segment of partition 0 at `base` has, with the salt the
/// segment file `bytes` has (a version-2 header: checked).
fn header_salted_as(bytes: &[u8], base: u64) -> [u8; 64] {
    let salt = segment::header_salt(bytes).expect("a whole header");
    assert_ne!(salt, Salt::UNSALTED, "new segments are salted");
    segment::encode_header(0, base, 64 << 10, salt)
}

/// Frame starts of `closed_queue`'s records, plus the end of the last one.
fn starts(n: u64) -> Vec<usize> {
    frame_starts((0..n).map(|i| message(i).len()))
}

/// Reopens the queue at `path` and checks the outcome of recovery: the
/// partition holds exactly `survivors` (records `0..survivors`), every byte
/// of the segment past them is zero, a fresh group reads exactly them, and a
/// new send reuses the next offset and is delivered intact.
fn assert_recovered_to(path: &Path, survivors: u64, kept_bytes: &[u8], context: &str) {
    let seg = segment_path(path, 0, 0);
    let queue = Queue::open_existing(path).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    assert_eq!(queue.offsets(0).unwrap(), (0, survivors), "{context}: next offset after recovery");
    let after = std::fs::read(&seg).unwrap();
    let tail = kept_bytes.len();
    // The header's `synced_end` (bytes 40..52) moves with every sync.
    assert_eq!(after[..36], kept_bytes[..36], "{context}: recovery changed the segment header");
    assert_eq!(after[52..64], kept_bytes[52..64], "{context}: recovery changed the frames' salt");
    assert_eq!(after[64..tail], kept_bytes[64..], "{context}: recovery changed a byte it keeps");
    if let Some(i) = after[tail..].iter().position(|&b| b != 0) {
        panic!("{context}: byte {} past the recovered tail {tail} is not zero", tail + i);
    }
    let mut consumer = queue.consumer("fresh").unwrap();
    assert_eq!(take(&mut consumer, survivors as usize), messages(0..survivors), "{context}");
    let sent = queue.producer().send(b"after the crash").unwrap();
    assert_eq!(sent.offset, survivors, "{context}: the first unacknowledged offset is reused");
    assert_eq!(take(&mut consumer, 1), vec![b"after the crash".to_vec()], "{context}");
    assert_eq!(consumer.committed().unwrap(), vec![survivors + 1], "{context}");
    drop((consumer, queue));
    let report = durq::verify::verify(path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{context}: {report:?}");
    assert_eq!(report.records, survivors + 1, "{context}");
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_loses_only_that_record() {
    const N: u64 = 5;
    let pristine = tempfile::tempdir().unwrap();
    let original_path = closed_queue(pristine.path(), N);
    let original = std::fs::read(segment_path(&original_path, 0, 0)).unwrap();
    let s = starts(N);
    let (last, end) = (s[N as usize - 1], s[N as usize]);
    let mut cuts_that_tore = 0;
    for cut in last..end {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original_path, &path);
        let seg = segment_path(&path, 0, 0);
        common::write_at(&seg, cut, &vec![0u8; end - cut]);
        let torn = std::fs::read(&seg).unwrap() != original;
        let survivors = if torn { N - 1 } else { N };
        cuts_that_tore += usize::from(torn);
        let kept = &original[..s[survivors as usize]];
        assert_recovered_to(&path, survivors, kept, &format!("cut at byte {cut} (record {} at {last})", N - 1));
    }
    // Only cuts inside the frame's zero padding leave the record whole.
    let padding = end - last - 32 - message(N - 1).len();
    assert_eq!(cuts_that_tore, end - last - padding);
}

#[test]
fn garbage_after_the_last_record_is_zeroed_and_the_log_continues() {
    const N: u64 = 5;
    let s = starts(N);
    let end = s[N as usize];
    // (where the garbage starts, how long it is, records that survive)
    let cases = [
        (end, 1, N),
        (end, 8, N),
        (end, 33, N),
        (end, 5000, N),
        (s[N as usize - 1] + 13, 200, N - 1),
        (s[N as usize - 1], 48, N - 1),
        ((64 << 10) - 3, 3, N), // a stray write at the very end of the segment
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for (from, len, survivors) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        let seg = segment_path(&path, 0, 0);
        let original = std::fs::read(&seg).unwrap();
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 255 + 1) as u8 // never zero
            })
            .collect();
        common::write_at(&seg, from, &garbage);
        // Before the reopen, verify calls it an unrecovered torn tail: a note,
        // not damage.
        let report = durq::verify::verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.notes.len(), 1, "{report:?}");
        let context = format!("{len} garbage bytes at {from}");
        assert_recovered_to(&path, survivors, &original[..s[survivors as usize]], &context);
    }
}

#[test]
fn recovery_row_1_an_intact_log_is_reopened_without_changing_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 5);
    let before = common::data_snapshot(&path);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 5));
    drop(queue);
    assert_eq!(common::data_snapshot(&path), before);
    let original = std::fs::read(segment_path(&path, 0, 0)).unwrap();
    assert_recovered_to(&path, 5, &original[..starts(5)[5]], "clean reopen");
}

#[test]
fn recovery_row_2_a_segment_filled_to_its_last_bytes_is_complete_and_the_next_send_rolls() {
    // Frames fill 64 KiB - 64 header bytes, leaving `left` bytes: fewer than
    // a frame header, so no further record fits.
    for left in [0usize, 8, 24] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let queue = Queue::open_with(&path, small()).unwrap();
        let producer = queue.producer();
        let payloads: Vec<Vec<u8>> = vec![vec![1; 16352], vec![2; 16352], vec![3; 16352], vec![4; 16320 - 32 - left]];
        for p in &payloads {
            producer.send(p).unwrap();
        }
        drop((producer, queue));
        let seg = segment_path(&path, 0, 0);
        let tail = *frame_starts(payloads.iter().map(Vec::len)).last().unwrap();
        assert_eq!(tail, (64 << 10) - left, "the test fills the segment as intended");
        let original = std::fs::read(&seg).unwrap();

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, 4), "{left} bytes left");
        assert_eq!(std::fs::read(&seg).unwrap(), original, "a full segment is not repaired");
        assert_eq!(queue.producer().send(b"next").unwrap().offset, 4);
        assert!(segment_path(&path, 0, 4).exists(), "the next record rolled into a new segment");
        let mut consumer = queue.consumer("g").unwrap();
        let mut expected = payloads.clone();
        expected.push(b"next".to_vec());
        assert_eq!(take(&mut consumer, 5), expected);
    }
}

#[test]
fn recovery_row_3_a_zeroed_header_with_bytes_after_it_is_a_torn_tail() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    let s = starts(N);
    common::write_at(&seg, s[4], &[0u8; 32]); // the payload stays behind
    assert_recovered_to(&path, 4, &original[..s[4]], "hole at the last record");
}

#[test]
fn recovery_row_3_a_valid_frame_with_the_wrong_offset_at_the_tail_is_torn() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    let s = starts(N);
    // A well-formed frame from elsewhere in the log's history, where record 5
    // would go (of this segment's salt: a frame of another fails as bad
    // checksum, see the next test).
    let stale = record::encode(
        FrameMeta { offset: 2, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
        None,
        b"stale",
        segment::header_salt(&original).unwrap(),
    );
    common::write_at(&seg, s[5], &stale);
    assert_recovered_to(&path, N, &original[..s[5]], "stale frame after the tail");
}

#[test]
fn recovery_row_3_a_frame_of_another_salt_at_the_tail_is_not_written_even_with_the_right_offset() {
    // What a recycled file, or a payload carrying a frame of another
    // segment, leaves after the tail: a whole frame, the offset the walk
    // expects, a watermark that would prove everything below it durable,
    // checksummed under another segment's salt (or none: version 1). It is
    // not a record of this segment: a torn tail, zeroed, its offset reused.
    const N: u64 = 5;
    let s = starts(N);
    let others: [fn(Salt) -> Salt; 3] = [|own| Salt::new(own.get() ^ 1), Salt::fresh, |_| Salt::UNSALTED];
    for other in others {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        let seg = segment_path(&path, 0, 0);
        let original = std::fs::read(&seg).unwrap();
        let other = other(segment::header_salt(&original).unwrap());
        let stale = record::encode(
            FrameMeta { offset: N, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
            None,
            &message(N),
            other,
        );
        common::write_at(&seg, s[N as usize], &stale);
        let report = durq::verify::verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{other:?}: not a record, so no damage either: {report:?}");
        assert!(report.notes.iter().any(|n| n.contains("torn tail")), "{other:?}: {report:?}");
        assert_recovered_to(&path, N, &original[..s[N as usize]], &format!("frame of salt {other:?}"));
    }
}

#[test]
fn recovery_row_4_a_frame_of_another_salt_proves_nothing_about_the_damage_before_it() {
    // Record 3 torn; after it, a frame of another salt carrying offset 4 and
    // a watermark of 4 (it would prove record 3 acknowledged, and damaged:
    // row 4, kept forever and refused to every reader). It is not a record
    // of this segment, so nothing proves record 3 durable: a torn tail.
    const N: u64 = 5;
    let s = starts(N);
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N - 1);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    let other = Salt::fresh(segment::header_salt(&original).unwrap());
    let stale = record::encode(
        FrameMeta { offset: N - 1, timestamp_ms: 1, durable_lag: 0, batch_continues: false },
        None,
        &message(N - 1),
        other,
    );
    common::write_at(&seg, s[N as usize - 1], &stale);
    common::flip_byte(&seg, s[N as usize - 2] + 40, 0x04);
    assert_recovered_to(&path, N - 2, &original[..s[N as usize - 2]], "damage before a frame of another salt");
}

#[test]
fn recovery_row_3_damage_followed_only_by_unflushed_records_drops_them_all() {
    // Buffered: nothing was flushed, so every frame says the durable watermark
    // was 0. Damage at record 2 with records 3 and 4 intact behind it is a torn
    // tail: none of 2..5 was ever acknowledged as durable.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    closed_buffered(&path, message, 0, 5);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    let s = starts(5);
    common::flip_byte(&seg, s[2] + 35, 0x40);
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty(), "an unacknowledged tail is not damage: {report:?}");
    assert_recovered_to(&path, 2, &original[..s[2]], "damage before unflushed records");
}

#[test]
fn recovery_row_3_after_a_flush_only_the_records_since_the_flush_can_be_torn() {
    // Buffered: records 0..3 flushed, 3..6 not. Damage at 4: record 5 was
    // written when the watermark was 3, so it proves nothing about 4.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    closed_buffered(&path, message, 3, 6);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    let s = starts(6);
    common::flip_byte(&seg, s[4] + 40, 0x01);
    assert_recovered_to(&path, 4, &original[..s[4]], "damage after the flush");
}

#[test]
fn recovery_row_4_damaged_acknowledged_record_is_kept_byte_for_byte_and_the_log_continues() {
    const N: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let seg = segment_path(&path, 0, 0);
    let s = starts(N);
    common::flip_byte(&seg, s[3] + 36, 0x08);
    let damaged = std::fs::read(&seg).unwrap();

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N), "records after the damage are kept");
    assert_eq!(std::fs::read(&seg).unwrap(), damaged, "recovery repairs nothing away");
    assert_eq!(queue.producer().send(b"next").unwrap().offset, N);
    let after = std::fs::read(&seg).unwrap();
    // All but the header's `synced_end`, which the new send's sync raised.
    assert_eq!(after[..36], damaged[..36]);
    assert_eq!(after[64..s[N as usize]], damaged[64..s[N as usize]]);
}

#[test]
fn segment_header_row_an_empty_segment_with_a_zeroed_header_gets_it_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 0);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    assert_eq!(original[..64], header_salted_as(&original, 0), "documented header layout");
    common::write_at(&seg, 0, &[0u8; 64]);
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.len() == 1, "{report:?}");

    let queue = Queue::open_existing(&path).unwrap();
    let rewritten = std::fs::read(&seg).unwrap();
    // Nothing was written under the lost salt: the new header has a fresh one.
    assert_eq!(rewritten[..64], header_salted_as(&rewritten, 0), "header rewritten");
    assert_eq!(rewritten[..52], original[..52]);
    assert_eq!(rewritten[64..], original[64..]);
    assert_eq!(queue.offsets(0).unwrap(), (0, 0));
    drop(queue);
    assert_recovered_to(&path, 0, &rewritten[..64], "rewritten header");
}

#[test]
fn segment_header_row_a_zeroed_header_in_front_of_records_is_rewritten_and_they_are_kept() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    let seg = segment_path(&path, 0, 0);
    let original = std::fs::read(&seg).unwrap();
    common::write_at(&seg, 0, &[0u8; 64]);
    assert_recovered_to(&path, N, &original[..starts(N)[5]], "zeroed header before records");
}

#[test]
fn segment_header_row_a_next_segment_cut_short_during_creation_is_completed() {
    const N: u64 = 5;
    for created_bytes in [0usize, 64, 64 << 10] {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        // The crash hit after the roll synced segment 0 and created the file
        // of segment 5, before its header was durable.
        let next = segment_path(&path, 0, N);
        std::fs::write(&next, vec![0u8; created_bytes]).unwrap();

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, N), "{created_bytes}-byte file");
        let bytes = std::fs::read(&next).unwrap();
        assert_eq!(bytes.len(), 64 << 10, "grown to full size");
        assert_eq!(bytes[..64], header_salted_as(&bytes, N));
        assert!(bytes[64..].iter().all(|&b| b == 0));
        let producer = queue.producer();
        assert_eq!(producer.send(message(N)).unwrap().offset, N);
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(take(&mut consumer, N as usize + 1), messages(0..N + 1));
    }
}

#[test]
fn segment_header_row_a_torn_header_over_zeros_is_a_creation_cut_short_for_verify_and_recovery_alike() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), N);
    // The power went while the new segment's header was being written: the
    // first 20 bytes reached the disk, the rest of the header did not.
    let next = segment_path(&path, 0, N);
    let mut torn = vec![0u8; 64 << 10];
    torn[..20].copy_from_slice(&segment::encode_header(0, N, 64 << 10, Salt::new(0x5a17))[..20]);
    std::fs::write(&next, &torn).unwrap();

    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty(), "{report:#?}");
    assert!(report.notes.iter().any(|n| n.contains("creation was cut short")), "{report:#?}");
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, N));
    let rewritten = std::fs::read(&next).unwrap();
    assert_eq!(rewritten[..64], header_salted_as(&rewritten, N));
}

#[test]
fn segment_header_row_any_damaged_nonzero_header_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 3);
    let seg = segment_path(&path, 0, 0);
    // The fixed part (bytes 0..36) is checked; damage to the `synced_end`
    // field after it only takes away a proof (see the next test).
    for at in 0..36 {
        common::flip_byte(&seg, at, 0x20);
        let before = std::fs::read(&seg).unwrap();
        match Queue::open_existing(&path) {
            Err(Error::Corrupt { file, position, .. }) => assert_eq!((file, position), (seg.clone(), 0), "byte {at}"),
            Err(e) => panic!("byte {at}: {e}"),
            Ok(_) => panic!("byte {at}: a damaged segment header was accepted"),
        }
        assert_eq!(std::fs::read(&seg).unwrap(), before, "byte {at}: the failed open changed the segment");
        common::flip_byte(&seg, at, 0x20);
    }
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 3));
}

#[test]
fn segment_header_row_a_damaged_synced_end_proves_nothing_and_the_log_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 3);
    let seg = segment_path(&path, 0, 0);
    for at in 40..52 {
        common::flip_byte(&seg, at, 0x20);
        let queue = Queue::open_existing(&path).unwrap_or_else(|e| panic!("byte {at}: {e}"));
        assert_eq!(queue.offsets(0).unwrap(), (0, 3), "byte {at}");
        drop(queue);
        common::set_synced_end(&seg, 2);
    }
}

#[test]
fn damage_to_the_last_acknowledged_batch_is_reported_never_wiped() {
    // Two records sent as one batch and synced: no later frame can prove
    // them, but the segment header's `synced_end` does.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small()).unwrap();
    queue.producer().send_batch([message(0), message(1)]).unwrap();
    drop(queue);
    let seg = segment_path(&path, 0, 0);
    common::flip_byte(&seg, starts(2)[0] + 33, 0x01);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 2), "nothing acknowledged was dropped");
    let mut consumer = queue.consumer("g").unwrap();
    let e = common::process_error(&mut consumer);
    assert!(matches!(&e, Error::Corrupt { offset: Some(0), .. }), "{e}");
    assert_eq!(queue.producer().send(b"next").unwrap().offset, 2, "offsets are never reused");
    drop((consumer, queue));
    let report = durq::verify::verify(&path).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
}

#[test]
fn synced_records_lost_to_zeros_from_a_frame_start_are_damage_never_an_end_whose_offsets_are_reused() {
    // A cleanly closed queue: the header's `synced_end` says all ten
    // records were synced. Then the last four are gone, from exactly the
    // start of a frame: zeroed (a lost write), or the file cut there.
    const N: u64 = 10;
    let s = starts(N);
    for cut in [false, true] {
        let what = if cut { "file cut at a frame start" } else { "zeros from a frame start" };
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        let seg = segment_path(&path, 0, 0);
        common::set_synced_end(&seg, N);
        if cut {
            std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(s[6] as u64).unwrap();
        } else {
            common::write_at(&seg, s[6], &vec![0u8; s[N as usize] - s[6]]);
        }
        let report = durq::verify::verify(&path).unwrap();
        assert!(
            report.problems.iter().any(|p| (&p.file, p.position, p.offset) == (&seg, s[6] as u64, Some(6))),
            "{what}: verify names the first lost record: {report:#?}"
        );

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, N), "{what}: acknowledged offsets are kept");
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(take(&mut consumer, 6), messages(0..6), "{what}");
        for _ in 0..2 {
            let e = common::process_error(&mut consumer);
            assert!(matches!(&e, Error::Corrupt { file, offset: Some(6), .. } if *file == seg), "{what}: {e}");
        }
        assert_eq!(queue.producer().send(b"after the loss").unwrap().offset, N, "{what}: offsets are never reused");
        drop((consumer, queue));
        // The record sent after the loss survives the next recovery too.
        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, N + 1), "{what}");
        assert_eq!(queue.read_at(0, N, 1).unwrap()[0].payload, b"after the loss", "{what}");
        assert!(matches!(queue.read_at(0, 8, 1), Err(Error::Corrupt { .. })), "{what}: lost record 8");
    }
}

#[test]
fn recovery_is_idempotent_a_second_reopen_finds_the_same_log() {
    const N: u64 = 10;
    let s = starts(N);
    // (what damage, where, bytes) — a torn tail, damage before acknowledged
    // data, and a hole.
    let cases: [(&str, usize, Vec<u8>); 3] = [
        ("garbage tail", s[9] + 5, vec![0xa5; 300]),
        ("damaged middle", s[4] + 33, vec![0xff]),
        ("hole at the end", s[9], vec![0u8; 32]),
    ];
    for (what, at, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        common::write_at(&segment_path(&path, 0, 0), at, &bytes);
        let queue = Queue::open_existing(&path).unwrap();
        let first = (queue.offsets(0).unwrap(), common::data_snapshot(&path));
        drop(queue);
        let queue = Queue::open_existing(&path).unwrap();
        let second = (queue.offsets(0).unwrap(), common::data_snapshot(&path));
        assert!(first == second, "{what}: the second recovery changed the log");
        drop(queue);
        let report = durq::verify::verify(&path).unwrap();
        assert!(report.notes.is_empty(), "{what}: nothing left for a next open to repair: {report:?}");
    }
}

#[test]
fn a_torn_tail_in_one_partition_leaves_the_other_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().partitions(2)).unwrap();
    let producer = queue.producer();
    for i in 0..6 {
        // Round-robin: even records to p0, odd ones to p1.
        assert_eq!(producer.send(message(i)).unwrap().partition, (i % 2) as u32);
    }
    drop((producer, queue));
    let p0 = std::fs::read(segment_path(&path, 0, 0)).unwrap();
    let s1 = frame_starts([9, 9, 9]);
    // As if power failed before the header's proof of the last record landed.
    common::set_synced_end(&segment_path(&path, 1, 0), 2);
    common::write_at(&segment_path(&path, 1, 0), s1[2] + 3, &[0x77; 20]);

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!((queue.offsets(0).unwrap(), queue.offsets(1).unwrap()), ((0, 3), (0, 2)));
    assert_eq!(std::fs::read(segment_path(&path, 0, 0)).unwrap(), p0);
    let mut consumer = queue.consumer("g").unwrap();
    let mut got = take(&mut consumer, 5);
    got.sort();
    assert_eq!(got, messages(0..5));
}

#[test]
fn a_commit_makes_the_unflushed_records_it_covers_durable_so_a_power_cut_keeps_them_and_the_group_position() {
    // Buffered consumers see records before they are durable. A checkpoint
    // past what a power cut keeps would skip the records later sent to those
    // offsets, so a commit syncs the log up to it first. (Before, a power cut
    // here left the group at 5 over an empty log: the simulated disk found
    // it. A checkpoint past the end is still refused: tests/it/bad_input.rs.)
    let dir = tempfile::tempdir().unwrap();
    let disk = durq::internals::sim::SimDisk::attach(dir.path()).unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Buffered)).unwrap();
    let producer = queue.producer();
    for i in 0..5 {
        producer.send(message(i)).unwrap();
    }
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 5), messages(0..5));
    let point = disk.crash_point_now();
    let cut = dir.path().join("after-power-cut");
    disk.crash_image(point, durq::internals::sim::CrashMode::DropPending, 0, &cut).unwrap();
    drop((consumer, producer, queue, disk));

    let queue = Queue::open_existing(cut.join("q")).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 5));
    assert_eq!(queue.consumer("g").unwrap().committed().unwrap(), [5]);
    let stored: Vec<Vec<u8>> = queue.read_at(0, 0, 10).unwrap().into_iter().map(|r| r.payload).collect();
    assert_eq!(stored, messages(0..5));
}

// ---- The segment before the last, left unsynced by a roll ----
//
// Under `Buffered` and `Interval` a roll leaves the full segment to the
// sealer thread. The on-disk state a power loss leaves before that thread
// finished is built from a cleanly closed queue: the sealer's proof in the
// full segment's header is set back (a header write that never reached the
// disk), and the bytes that did not reach the disk are zeroed or torn.

/// Payload bytes of a record in these tests: 63 fill a 64 KiB segment.
const BIG: usize = 1000;
const PER_SEGMENT: u64 = 63;

fn big(i: u64) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; BIG];
    v[..8].copy_from_slice(format!("{i:08}").as_bytes());
    v
}

fn bigs(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(big).collect()
}

/// Where record `i` starts in its segment.
fn big_pos(i: u64) -> usize {
    64 + (i % PER_SEGMENT) as usize * common::frame_len(0, BIG)
}

/// Where the frames of a full segment end.
fn full_end() -> usize {
    big_pos(PER_SEGMENT - 1) + common::frame_len(0, BIG)
}

fn synced_end(segment: &Path) -> Option<u64> {
    durq::internals::log::segment::decode_synced_end(&std::fs::read(segment).unwrap())
}

/// A closed `Buffered` queue at `dir/q…` holding `big(0..n)` in segments 0
/// and 63, never flushed, as a power loss right after the roll leaves it:
/// segment 0's header without the sealer's proof. Segment 63's header,
/// written while nothing was durable, claims nothing, and neither do its
/// frames: each was written before the sealer's sync of segment 0 ended.
/// That is a race the sends usually win; a machine whose sync beat them
/// (a CI rehearsal, 2026-12-07: frames of segment 63 proved record 50
/// durable, so its damage was reported) writes the queue again, in a new
/// directory, until the state is the one the caller is about.
fn unsynced_roll(dir: &Path, n: u64) -> PathBuf {
    for attempt in 0..20 {
        let path = dir.join(format!("q{attempt}"));
        closed_buffered(&path, big, 0, n);
        let (seg0, seg63) = (segment_path(&path, 0, 0), segment_path(&path, 0, PER_SEGMENT));
        assert_eq!(common::segments(&path, 0), [seg0.clone(), seg63.clone()], "records roll where the test expects");
        assert_eq!(synced_end(&seg0), Some(PER_SEGMENT), "the sealer synced segment 0 and recorded it");
        assert_eq!(synced_end(&seg63), Some(0), "segment 63 was created while nothing was durable");
        let last = std::fs::read(&seg63).unwrap();
        let salt = segment::header_salt(&last).expect("segment 63's header is whole");
        let record_bytes_max = 16 << 10; // `common::small`'s
        if durq::internals::log::recovery::scan(&last, PER_SEGMENT, record_bytes_max, 0, salt).watermark == 0 {
            common::set_synced_end(&seg0, 0);
            return path;
        }
    }
    panic!("in 20 attempts, the sealer's sync of segment 0 always ended before segment 63's first frame");
}

#[test]
fn a_full_segment_torn_by_a_power_loss_before_its_background_sync_ends_the_log_there() {
    // Nothing was flushed, so no record from the damage on was acknowledged;
    // segment 63's records follow a hole and go with it.
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 3] = [
        ("the pages of records 50..63 never written", |f| {
            common::write_at(f, big_pos(50), &vec![0; full_end() - big_pos(50)])
        }),
        ("record 50 torn", |f| common::write_at(f, big_pos(50) + 700, &[0u8; 332])),
        ("a byte of record 50 wrong", |f| common::flip_byte(f, big_pos(50) + 100, 0x04)),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = unsynced_roll(dir.path(), 80);
        let (seg0, seg63) = (segment_path(&path, 0, 0), segment_path(&path, 0, PER_SEGMENT));
        damage(&seg0);
        let damaged = std::fs::read(&seg0).unwrap();
        let report = durq::verify::verify(&path).unwrap();
        assert!(report.problems.is_empty(), "{what}: an unacknowledged tail is not damage: {report:?}");
        assert_eq!(report.notes.len(), 1, "{what}: {report:?}");
        assert!(report.notes[0].contains("cuts the log"), "{what}: {report:?}");

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, 50), "{what}");
        assert!(!seg63.exists(), "{what}: the segment after the hole is removed");
        let after = std::fs::read(&seg0).unwrap();
        assert_eq!(after[..36], damaged[..36], "{what}: the header's fixed part");
        assert_eq!(after[64..big_pos(50)], damaged[64..big_pos(50)], "{what}: a kept byte changed");
        assert!(after[big_pos(50)..].iter().all(|&b| b == 0), "{what}: bytes past the cut are zero");
        assert_eq!(synced_end(&seg0), Some(50), "{what}: the kept records are proven synced");
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(take(&mut consumer, 50), bigs(0..50), "{what}");
        assert_eq!(queue.producer().send(big(50)).unwrap().offset, 50, "{what}: offsets go on from the cut");
        assert_eq!(take(&mut consumer, 1), bigs(50..51), "{what}");
        drop((consumer, queue));
        let report = durq::verify::verify(&path).unwrap();
        assert!(report.problems.is_empty() && report.notes.is_empty(), "{what}: {report:?}");
        assert_eq!(report.records, 51, "{what}");
    }
}

#[test]
fn a_full_segment_found_whole_after_a_power_loss_is_kept_synced_and_proven() {
    let dir = tempfile::tempdir().unwrap();
    let path = unsynced_roll(dir.path(), 80);
    let seg0 = segment_path(&path, 0, 0);
    let before = std::fs::read(&seg0).unwrap();
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:?}");

    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 80));
    let after = std::fs::read(&seg0).unwrap();
    assert_eq!((&after[..40], &after[52..]), (&before[..40], &before[52..]), "only the proof changed");
    assert_eq!(synced_end(&seg0), Some(PER_SEGMENT), "recovery recorded that segment 0 is synced");
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 80), bigs(0..80));
    drop((consumer, queue));
    // The next open trusts the proof: a byte flipped now is damage it reports,
    // never a reason to cut.
    common::flip_byte(&seg0, big_pos(10) + 100, 0x04);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 80));
}

#[test]
fn damage_in_a_full_segment_that_a_later_frame_proves_flushed_is_reported_never_cut() {
    // Records 0..70 were flushed (segment 0 sealed and synced), 70..75 sent
    // after: their frames say everything below 70 was durable. Both headers'
    // proofs are set back, so only those frames prove segment 0 synced, and
    // its damaged record 40 is acknowledged data. Then the same with the
    // proofs damaged instead: a proof that cannot be read may have been one.
    let pristine = tempfile::tempdir().unwrap();
    let original = pristine.path().join("q");
    closed_buffered(&original, big, 70, 75);
    type Unprove = fn(&Path, &Path);
    let cases: [(&str, Unprove); 2] = [
        ("proofs set back", |seg0, seg63| {
            common::set_synced_end(seg0, 0);
            common::set_synced_end(seg63, 0);
        }),
        ("proofs damaged", |seg0, seg63| {
            common::flip_byte(seg0, 44, 0x01);
            common::flip_byte(seg63, 44, 0x01);
        }),
    ];
    for (what, unprove) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let (seg0, seg63) = (segment_path(&path, 0, 0), segment_path(&path, 0, PER_SEGMENT));
        unprove(&seg0, &seg63);
        common::flip_byte(&seg0, big_pos(40) + 100, 0x04);
        let report = durq::verify::verify(&path).unwrap();
        assert_eq!(report.problems.len(), 1, "{what}: {report:?}");

        let queue = Queue::open_existing(&path).unwrap();
        assert_eq!(queue.offsets(0).unwrap(), (0, 75), "{what}: nothing acknowledged is cut away");
        assert!(seg63.exists(), "{what}");
        let mut consumer = queue.consumer("g").unwrap();
        assert_eq!(take(&mut consumer, 40), bigs(0..40), "{what}");
        let e = common::process_error(&mut consumer);
        assert!(matches!(&e, Error::Corrupt { offset: Some(40), .. }), "{what}: {e}");
    }
}

#[test]
fn a_segment_created_by_an_unsynced_roll_and_cut_short_waits_for_the_full_one_to_be_checked() {
    // The crash came while the roll created segment 63, before its header
    // was durable (the file is empty): record 63 was never written.
    for torn in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = unsynced_roll(dir.path(), 64);
        let (seg0, seg63) = (segment_path(&path, 0, 0), segment_path(&path, 0, PER_SEGMENT));
        std::fs::write(&seg63, b"").unwrap();
        if torn {
            common::write_at(&seg0, big_pos(50), &vec![0; full_end() - big_pos(50)]);
        }
        let queue = Queue::open_existing(&path).unwrap();
        let mut consumer = queue.consumer("g").unwrap();
        if torn {
            assert_eq!(queue.offsets(0).unwrap(), (0, 50));
            assert!(!seg63.exists(), "the empty segment after the hole is removed");
            assert_eq!(take(&mut consumer, 50), bigs(0..50));
        } else {
            assert_eq!(queue.offsets(0).unwrap(), (0, PER_SEGMENT));
            assert_eq!(synced_end(&seg0), Some(PER_SEGMENT), "segment 0 is proven before segment 63 claims it");
            let bytes = std::fs::read(&seg63).unwrap();
            assert_eq!(bytes[..64], header_salted_as(&bytes, PER_SEGMENT));
            assert_eq!(take(&mut consumer, PER_SEGMENT as usize), bigs(0..PER_SEGMENT));
        }
    }
}

// ---- The last segment's file, judged with the evidence outside the log ----
//
// A last segment of which nothing is left looks exactly like one whose
// creation a power cut interrupted. Files outside the log tell them apart:
// a group's checkpoint, or a dead letter, past the segment's base proves
// that records reached it (docs/FORMAT.md, rows 5 to 7).

/// A closed `Sync` queue at `dir/q` holding `big(0..n)`: segment 0 full
/// (records 0..63), segment 63 the last.
fn two_segments(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    let producer = queue.producer();
    for i in 0..n {
        producer.send(big(i)).unwrap();
    }
    drop((producer, queue));
    assert_eq!(common::segments(&path, 0).len(), 2, "records roll where the test expects");
    path
}

/// Cuts `file` to `len` bytes.
fn cut_to(file: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
}

/// `verify` reports a problem naming `file` (and nothing about any other
/// file), and the open fails with `Error::Corrupt` naming it, changing
/// nothing, as often as it is tried.
#[track_caller]
fn assert_refused(path: &Path, file: &Path, reason_names: &str, context: &str) {
    let report = durq::verify::verify(path).unwrap();
    assert!(report.problems.iter().all(|p| p.file == file), "{context}: {report:#?}");
    assert_open_refused(path, file, reason_names, context);
}

/// `verify` reports a problem naming `file`, and the open fails with
/// `Error::Corrupt` naming it, changing nothing, as often as it is tried.
#[track_caller]
fn assert_open_refused(path: &Path, file: &Path, reason_names: &str, context: &str) {
    let report = durq::verify::verify(path).unwrap();
    let named = report.problems.iter().any(|p| p.file == file && p.what.contains(reason_names));
    assert!(named, "{context}: {report:#?}");
    let before = common::data_snapshot(path);
    for _ in 0..2 {
        match Queue::open_existing(path) {
            Err(Error::Corrupt { file: f, reason, .. }) => {
                assert_eq!(f, file, "{context}: {reason}");
                assert!(reason.contains(reason_names), "{context}: {reason}");
            }
            Err(e) => panic!("{context}: {e}"),
            Ok(q) => {
                panic!("{context}: opened at {:?}, the lost records' offsets free for reuse", q.offsets(0).unwrap())
            }
        }
        assert!(common::data_snapshot(path) == before, "{context}: the refused open changed the queue");
    }
}

#[test]
fn a_last_segment_cut_inside_its_header_is_refused_never_started_afresh() {
    // 17 acknowledged records in segment 63. Cut inside its first 60 bytes,
    // the header's fixed part, the proof of what was synced or the frames'
    // salt are gone or torn: nothing can say which of its records were
    // acknowledged, or read them.
    let pristine = tempfile::tempdir().unwrap();
    let original = two_segments(pristine.path(), 80);
    for len in [1, 20, 35, 36, 40, 51, 52, 59] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        common::copy_dir(&original, &path);
        let seg63 = segment_path(&path, 0, PER_SEGMENT);
        cut_to(&seg63, len);
        let reason = if len < 36 { "segment header" } else { "cut to" };
        assert_refused(&path, &seg63, reason, &format!("cut to {len} bytes"));
    }
    // From byte 60 the header still proves its records synced: the open
    // keeps their offsets and reports them lost (recovery row 4).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    common::copy_dir(&original, &path);
    cut_to(&segment_path(&path, 0, PER_SEGMENT), 60);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 80));
    assert!(matches!(queue.read_at(0, PER_SEGMENT, 1), Err(Error::Corrupt { .. })));
}

#[test]
fn a_last_segment_emptied_after_a_group_processed_records_in_it_is_refused() {
    // The group committed past segment 63's base: records 63.. existed and
    // were synced before the commit. Emptied, the segment cannot be a
    // creation cut short.
    let dir = tempfile::tempdir().unwrap();
    let path = two_segments(dir.path(), 80);
    let queue = Queue::open_existing(&path).unwrap();
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 80), bigs(0..80));
    drop((consumer, queue));
    let seg63 = segment_path(&path, 0, PER_SEGMENT);
    std::fs::write(&seg63, b"").unwrap();
    assert_refused(&path, &seg63, "group g's checkpoint", "emptied, group at 80");
    // The same with the reserved file of zeros a creation leaves.
    std::fs::write(&seg63, vec![0u8; 64 << 10]).unwrap();
    assert_refused(&path, &seg63, "group g's checkpoint", "zeroed, group at 80");
}

#[test]
fn a_group_at_a_segments_base_proves_nothing_about_it_and_an_empty_segment_is_a_creation_cut_short() {
    // The power went while the roll created segment 63: its file is empty.
    // A group that processed every record before it (its checkpoint at 63,
    // the base) proves only those: the segment is completed, nothing lost.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    for i in 0..PER_SEGMENT {
        queue.producer().send(big(i)).unwrap();
    }
    let mut consumer = queue.consumer("g").unwrap();
    assert_eq!(take(&mut consumer, 63), bigs(0..63));
    assert_eq!(consumer.committed().unwrap(), [PER_SEGMENT]);
    drop((consumer, queue));
    let seg63 = segment_path(&path, 0, PER_SEGMENT);
    std::fs::write(&seg63, b"").unwrap();

    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty(), "a creation cut short is no damage: {report:#?}");
    assert_eq!(report.notes.len(), 1, "{report:#?}");
    assert!(report.notes[0].contains("creation was cut short"), "{report:#?}");
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, PER_SEGMENT));
    assert_eq!(std::fs::read(&seg63).unwrap().len(), 64 << 10, "grown back to full size");
    assert_eq!(queue.producer().send(big(63)).unwrap().offset, PER_SEGMENT);
    drop(queue);
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.is_empty() && report.notes.is_empty(), "{report:#?}");
}

#[test]
fn a_dead_letter_past_an_emptied_segments_base_proves_it_held_records() {
    // Record 65 went to the dead-letter queue; then the group was reset to
    // the start, so its checkpoint proves nothing past 0. The dead letter
    // still proves records 63..=65 existed in segment 63.
    let dir = tempfile::tempdir().unwrap();
    let path = two_segments(dir.path(), 80);
    let queue = Queue::open_existing(&path).unwrap();
    let options = durq::ConsumerOptions::default().max_batch(1).max_deliveries(1);
    let mut consumer = queue.consumer_with("g", options).unwrap();
    assert_eq!(take(&mut consumer, 65), bigs(0..65));
    let err = consumer.process(|_| Err(std::io::Error::other("poison"))).unwrap_err();
    assert!(matches!(err, Error::Process(_)), "{err}");
    assert_eq!(consumer.committed().unwrap(), [66], "dead-lettered and passed");
    drop(consumer);
    assert_eq!(queue.reset_group("g", durq::ResetTo::Earliest).unwrap(), [0]);
    drop(queue);
    let seg63 = segment_path(&path, 0, PER_SEGMENT);
    std::fs::write(&seg63, b"").unwrap();
    assert_refused(&path, &seg63, "dead letter of offset 65", "emptied, dead letter of 65");
}

#[test]
fn a_reset_and_a_dead_letter_make_the_log_durable_first_so_a_power_cut_keeps_what_they_prove() {
    // Under `Buffered` a consumer sees records before they are synced.
    // Recovery trusts a checkpoint and a dead letter as proofs that their
    // records were synced (a lost one is damage, never cut); so a reset, and
    // a dead letter, first make the log durable up to them. Before, a power
    // cut right after either left it proving records the log no longer had.
    type Act = fn(&Queue);
    let acts: [(&str, Act); 2] = [
        ("reset to the end", |queue| {
            assert_eq!(queue.reset_group("g", durq::ResetTo::Latest).unwrap(), [5]);
        }),
        ("dead letter", |queue| {
            let options = durq::ConsumerOptions::default().max_batch(1).max_deliveries(1);
            let mut consumer = queue.consumer_with("g", options).unwrap();
            let err = consumer.process(|_| Err(std::io::Error::other("poison"))).unwrap_err();
            assert!(matches!(err, Error::Process(_)), "{err}");
        }),
    ];
    for (what, act) in acts {
        let dir = tempfile::tempdir().unwrap();
        let disk = durq::internals::sim::SimDisk::attach(dir.path()).unwrap();
        let path = dir.path().join("q");
        let queue = Queue::open_with(&path, small().durability(Durability::Buffered)).unwrap();
        drop(queue.consumer("g").unwrap());
        let producer = queue.producer();
        for i in 0..5 {
            producer.send(message(i)).unwrap();
        }
        disk.record_crash_points(true);
        act(&queue);
        disk.crash_point_now();
        disk.record_crash_points(false);
        let images = tempfile::tempdir().unwrap();
        let mut checked = 0;
        for point in 0..disk.crash_points().len() {
            for (seed, mode) in durq::internals::sim::CrashMode::ALL.into_iter().enumerate() {
                let image = images.path().join(format!("{point}-{seed}"));
                disk.crash_image(point, mode, seed as u64, &image).unwrap();
                let context = format!("{what}: power cut at crash point {point}, {mode:?}");
                let queue = Queue::open_existing(image.join("q")).unwrap_or_else(|e| panic!("{context}: {e}"));
                let (_, end) = queue.offsets(0).unwrap();
                let stored: Vec<Vec<u8>> = (0..end)
                    .map(|o| {
                        queue.read_at(0, o, 1).unwrap_or_else(|e| panic!("{context}: offset {o}: {e}"))[0]
                            .payload
                            .clone()
                    })
                    .collect();
                assert_eq!(stored, messages(0..end), "{context}");
                checked += 1;
            }
        }
        assert!(checked > 4, "{what}: {checked} images");
        drop((producer, queue, disk));
    }
}

/// Overwrites group `group`'s checkpoint of partition 0 with one valid copy
/// at `next_offset`, as if it had committed there.
fn plant_checkpoint(path: &Path, group: &str, next_offset: u64) -> PathBuf {
    use durq::internals::group::checkpoint::{self, CheckpointState};
    let file = common::checkpoint_file(path, group, 0);
    let state = CheckpointState {
        partition: 0,
        generation: 9,
        epoch: 1,
        next_offset,
        delivered_end: next_offset,
        attempts: 0,
        range_attempts: 0,
    };
    let mut bytes = vec![0u8; checkpoint::FILE_BYTES];
    bytes[..checkpoint::COPY_BYTES].copy_from_slice(&checkpoint::encode_copy(&state));
    std::fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn a_log_that_recovers_to_an_end_before_a_checkpoint_is_refused_and_nothing_is_marked_lost() {
    // The checkpoint and the log disagree: records the checkpoint proves
    // were lost, or the checkpoint is not this queue's (here: planted). The
    // open cannot know which, so it refuses, naming the segment where the
    // log ends and the checkpoint, and changes neither. Going on would reuse
    // offsets the group already passed, and the group would skip the records
    // sent to them.
    let dir = tempfile::tempdir().unwrap();
    let path = two_segments(dir.path(), 80);
    drop(Queue::open_existing(&path).unwrap().consumer("g").unwrap());
    let ckpt = plant_checkpoint(&path, "g", 90);
    let seg63 = segment_path(&path, 0, PER_SEGMENT);
    assert_open_refused(&path, &seg63, "up to 89 existed", "a checkpoint at 90 past a log ending at 80");
    let report = durq::verify::verify(&path).unwrap();
    assert!(report.problems.iter().any(|p| p.file == ckpt), "verify names the checkpoint too: {report:#?}");
    // At the end of the log it proves nothing missing.
    plant_checkpoint(&path, "g", 80);
    assert_eq!(Queue::open_existing(&path).unwrap().offsets(0).unwrap(), (0, 80));

    // The segment before the last, torn by a power loss before its
    // background sync: recovery would cut the log inside it, at record 50.
    // A checkpoint past that says those records were acknowledged: refused,
    // nothing zeroed, the last segment not removed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    closed_buffered(&path, big, 0, 80);
    drop(Queue::open_existing(&path).unwrap().consumer("g").unwrap());
    let (seg0, seg63) = (segment_path(&path, 0, 0), segment_path(&path, 0, PER_SEGMENT));
    common::set_synced_end(&seg0, 0);
    assert_eq!(synced_end(&seg63), Some(0), "nothing proves segment 0 synced");
    common::flip_byte(&seg0, big_pos(50) + 100, 0x04);
    plant_checkpoint(&path, "g", 51);
    assert_open_refused(&path, &seg0, "up to 50 existed", "a checkpoint past a cut in the segment before the last");
    assert!(seg63.exists());
    plant_checkpoint(&path, "g", 50);
    let queue = Queue::open_existing(&path).unwrap();
    assert_eq!(queue.offsets(0).unwrap(), (0, 50), "a checkpoint at the cut proves nothing past it");
    assert!(!seg63.exists());
}

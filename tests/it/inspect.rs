//! Inspection agrees with recovery, and changes nothing.
//!
//! `stat` of a queue that no process has open does not recover it: it
//! finds, read-only, where the next open will find each partition's log
//! ending (`log::survey`, which takes recovery's decisions without its
//! writes) and says whether that open will repair anything. Each test here
//! damages a closed queue the way a crash or bit rot would, takes `stat`
//! (which must change no byte), then opens the queue (which recovers it)
//! and checks that `stat` foretold both: the end the open recovered to, and
//! whether it changed a byte. The damage covers every kind of decision
//! recovery takes: torn tails at every byte of the last record, garbage, a
//! header lost to a creation cut short, a short file, damage proven
//! acknowledged, and the segment before the last cut, kept or proven after
//! a roll under `Buffered`.

use crate::common;

use std::path::{Path, PathBuf};

use common::{frame_starts, message, segment_path, small};
use durq::{Durability, Error, Queue};

/// A closed `Sync` queue at `dir/q` with records `0..n` sent one at a time;
/// its header's proof is set back to `n - 1`, as a power loss before the
/// last update reached the disk leaves it (only frames prove the last one).
fn closed_queue(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Sync)).unwrap();
    for i in 0..n {
        queue.producer().send(message(i)).unwrap();
    }
    drop(queue);
    common::set_synced_end(&segment_path(&path, 0, 0), n.saturating_sub(1));
    path
}

/// Payload bytes of the records of the unsynced-roll cases: 63 fill a
/// 64 KiB segment.
const BIG: usize = 1000;
const PER_SEGMENT: u64 = 63;

fn big_pos(i: u64) -> usize {
    64 + (i % PER_SEGMENT) as usize * common::frame_len(0, BIG)
}

/// A closed `Buffered` queue at `dir/q` with 80 records in segments 0 and
/// 63, flushed up to `flushed`, and both headers' proofs set back: as a
/// power loss right after the roll leaves it, before the background sync
/// of segment 0 recorded itself.
fn unsynced_roll(dir: &Path, flushed: u64) -> PathBuf {
    let path = dir.join("q");
    let queue = Queue::open_with(&path, small().durability(Durability::Buffered)).unwrap();
    for i in 0..80u64 {
        queue.producer().send(vec![b'a' + (i % 26) as u8; BIG]).unwrap();
        if i + 1 == flushed {
            queue.producer().flush().unwrap();
        }
    }
    drop(queue);
    common::set_synced_end(&segment_path(&path, 0, 0), 0);
    common::set_synced_end(&segment_path(&path, 0, PER_SEGMENT), 0);
    path
}

/// Takes `stat` of the closed queue at `path`, checks it changed nothing,
/// then opens the queue and checks that `stat` foretold where its log ends
/// and whether the open changes a byte. Returns what `stat` said.
fn stat_foretells_the_open(path: &Path, what: &str) -> Option<String> {
    let before = common::snapshot(path);
    let stat = durq::stat::stat(path).unwrap_or_else(|e| panic!("{what}: stat failed: {e}"));
    assert_eq!(common::snapshot(path), before, "{what}: stat changed the queue");
    assert!(!stat.open, "{what}");
    let p = &stat.partitions[0];
    let before = common::data_snapshot(path);
    let queue = Queue::open_existing(path).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(queue.offsets(0).unwrap(), (p.first_offset, p.next_offset), "{what}: the end stat found");
    drop(queue);
    let changed = common::data_snapshot(path) != before;
    assert_eq!(
        p.needs_recovery.is_some(),
        changed,
        "{what}: stat said {:?}, the open changed a byte: {changed}",
        p.needs_recovery
    );
    p.needs_recovery.clone()
}

#[test]
fn an_intact_queue_needs_no_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 5);
    common::set_synced_end(&segment_path(&path, 0, 0), 5);
    assert_eq!(stat_foretells_the_open(&path, "intact"), None);
}

#[test]
fn a_torn_tail_at_every_byte_of_the_last_record_is_foretold() {
    const N: u64 = 5;
    let starts = frame_starts((0..N).map(|i| message(i).len()));
    let mut torn = 0;
    for cut in starts[N as usize - 1]..starts[N as usize] {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), N);
        common::write_at(&segment_path(&path, 0, 0), cut, &vec![0; starts[N as usize] - cut]);
        let what = format!("last record cut at byte {cut}");
        let said = stat_foretells_the_open(&path, &what);
        if let Some(said) = said {
            assert!(said.contains("torn tail") && said.contains("(offset 4)"), "{what}: {said}");
            torn += 1;
        }
    }
    // A cut at the frame's start leaves zeros, a clean end; one in its
    // padding changes nothing.
    assert!(torn >= 32, "only {torn} cuts tore the record");
}

#[test]
fn garbage_after_the_log_a_lost_header_and_a_short_file_are_foretold() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 3] = [
        ("garbage after the last record", |seg| common::write_at(seg, tail(5), &[0x77; 50]), "torn tail at byte 304"),
        ("a zeroed header in front of records", |seg| common::write_at(seg, 0, &[0; 64]), "rewrites its header"),
        ("a file cut short", |seg| cut_file(seg, 32 << 10), "grows it back"),
    ];
    for (what, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_queue(dir.path(), 5);
        common::set_synced_end(&segment_path(&path, 0, 0), 5);
        damage(&segment_path(&path, 0, 0));
        let said = stat_foretells_the_open(&path, what).unwrap_or_else(|| panic!("{what}: no repair foretold"));
        assert!(said.contains(expected), "{what}: {said}");
    }
}

/// A last segment cut inside its header has lost the proof of what it
/// synced (recovery row 7h): the next open refuses it, and `stat` says so
/// the same way, naming the file, without changing a byte.
#[test]
fn a_file_cut_inside_its_header_is_refused_by_stat_as_by_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 5);
    let seg = segment_path(&path, 0, 0);
    cut_file(&seg, 20);
    let before = common::snapshot(&path);
    let shown = seg.display().to_string();
    match durq::stat::stat(&path) {
        Err(e @ durq::Error::Corrupt { .. }) => assert!(e.to_string().contains(&shown), "{e}"),
        other => panic!("stat of a segment cut inside its header: {other:?}"),
    }
    match Queue::open_existing(&path) {
        Err(e @ durq::Error::Corrupt { .. }) => assert!(e.to_string().contains(&shown), "{e}"),
        other => panic!("open of a segment cut inside its header: {:?}", other.map(|_| ())),
    }
    assert_eq!(common::snapshot(&path), before, "neither stat nor the refused open changed a byte");
}

/// Where the log of `closed_queue(_, n)` ends in its segment.
fn tail(n: u64) -> usize {
    *frame_starts((0..n).map(|i| message(i).len())).last().unwrap()
}

fn cut_file(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

#[test]
fn damage_proven_acknowledged_is_no_repair_and_the_log_goes_on_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 5);
    common::set_synced_end(&segment_path(&path, 0, 0), 5);
    common::flip_byte(&segment_path(&path, 0, 0), 64 + 40 + 33, 0x04);
    assert_eq!(stat_foretells_the_open(&path, "record 1 damaged"), None);
}

#[test]
fn the_segment_before_the_last_cut_kept_or_proven_after_an_unsynced_roll_is_foretold() {
    type Damage = fn(&Path);
    let cases: [(&str, u64, Damage, Option<&str>); 4] = [
        ("whole, never proven", 0, |_| {}, Some("never proven synced")),
        (
            "torn, nothing acknowledged",
            0,
            |seg0| common::write_at(seg0, big_pos(50) + 700, &[0; 332]),
            Some("cuts the log"),
        ),
        (
            "zeros where its last records were",
            0,
            |seg0| common::write_at(seg0, big_pos(50), &vec![0; 13 * 1040]),
            Some("cuts the log"),
        ),
        (
            "damage a later frame proves flushed",
            70,
            |seg0| common::flip_byte(seg0, big_pos(40) + 100, 4),
            Some("never proven synced"),
        ),
    ];
    for (what, flushed, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = unsynced_roll(dir.path(), flushed);
        damage(&segment_path(&path, 0, 0));
        let said = stat_foretells_the_open(&path, what);
        match (expected, said) {
            (Some(expected), Some(said)) => assert!(said.contains(expected), "{what}: {said}"),
            (expected, said) => assert_eq!(expected.map(str::to_owned), said, "{what}"),
        }
    }
    // Proven by its own header: the segment before the last is not read.
    let dir = tempfile::tempdir().unwrap();
    let path = unsynced_roll(dir.path(), 0);
    common::set_synced_end(&segment_path(&path, 0, 0), PER_SEGMENT);
    assert_eq!(stat_foretells_the_open(&path, "proven"), None);
}

#[test]
fn a_damaged_segment_header_fails_stat_as_it_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_queue(dir.path(), 5);
    let seg = segment_path(&path, 0, 0);
    common::flip_byte(&seg, 17, 0x01);
    let before = common::snapshot(&path);
    match durq::stat::stat(&path) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, seg),
        other => panic!("{other:?}"),
    }
    assert_eq!(common::snapshot(&path), before);
    assert!(matches!(Queue::open_existing(&path), Err(Error::Corrupt { .. })));
}

#[test]
fn stat_of_an_open_queue_reads_its_live_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open_with(dir.path().join("q"), small().partitions(2)).unwrap();
    queue.producer().send_batch(["a", "b", "c"]).unwrap();
    let stat = durq::stat::stat(queue.path()).unwrap();
    assert!(stat.open);
    let offsets: Vec<(u64, u64)> = stat.partitions.iter().map(|p| (p.first_offset, p.next_offset)).collect();
    assert_eq!(offsets, [queue.offsets(0).unwrap(), queue.offsets(1).unwrap()]);
    assert!(stat.partitions.iter().all(|p| p.needs_recovery.is_none()));
    drop(queue);
    assert!(!durq::stat::stat(&dir.path().join("q")).unwrap().open, "closed");
}

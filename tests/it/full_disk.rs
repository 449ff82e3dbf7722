//! A real full disk: the queue lives on a small tmpfs, mounted inside a
//! user and mount namespace (`unshare --user --map-root-user --mount`, no
//! privileges needed). Each test re-runs this binary in there, as the child
//! test it names.
//!
//! - The disk fills until `send` fails: the error says "no space", nothing
//!   acknowledged was lost, and once space is freed the same handle accepts
//!   sends again (a full disk is not a failed sync: no fail-stop).
//! - The disk fills with records a group then consumes (the issue's
//!   reproduction): the next send's roll, which finds no space, first
//!   removes the segments the group passed, and succeeds; round after
//!   round, with no command run and nothing lost.
//! - The disk fills while a second group holds every segment: sends keep
//!   failing with "no space" until that group is gone; then the very next
//!   send succeeds the same way. By hand: `Queue::reclaim` (`durq gc`)
//!   frees the disk.
//! - The disk fills through partition 1, and the group consumes it; then
//!   keyed traffic goes to partition 0 only: its roll, which finds no
//!   space, frees the segments passed in partition 1, and sends succeed.
//!
//! - With a retention limit the disk does not reach, a lagging group keeps
//!   every record and the disk fills as without one (a limit removes only
//!   what it is set to). Lowered below what the disk holds, the next
//!   send's roll on the full disk removes past it, having recorded the
//!   group's loss in its skip record, which earlier limited passes sized
//!   while there was room (without that, recording needs a block the disk
//!   does not have, and the send fails "no space"); the group resumes at
//!   the first kept record.
//!
//! - A store into a mapped page the disk has no block for would kill the
//!   child with SIGBUS: space is reserved before every store, a few chunks
//!   ahead of the writer, so the disk can also fill in the middle of a
//!   segment, which one child makes happen.
//!
//! Where namespaces are unavailable the tests say so and skip, never
//! silently.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use durq::{Durability, Options, Queue};

const ROLE: &str = "DURQ_FULL_DISK_ROLE";
const PAYLOAD_BYTES: usize = 4000;
/// A frame of a [`PAYLOAD_BYTES`] payload: 32-byte header, padded to 8.
const FRAME_BYTES: u64 = 4032;

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("record {i} ").into_bytes();
    p.resize(PAYLOAD_BYTES, b'0' + (i % 10) as u8);
    p
}

/// Runs the test `child` of this module inside a user and mount namespace,
/// on a tmpfs of `size` (as `mount -o size=` takes it), and returns the
/// `@@` lines it printed; `None`, with the reason printed, where namespaces
/// are unavailable.
fn run_on_tmpfs(child: &str, size: &str) -> Option<Vec<String>> {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = crate::common::procs::test_name(module_path!(), child);
    let script = format!(
        r#"mount -t tmpfs -o size={size} none "$DURQ_DIR" && exec "$0" --exact {child} --nocapture --test-threads=1"#
    );
    let probe = Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!("SKIPPED: user namespaces unavailable: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run unshare: {e}");
            return None;
        }
    }
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .arg(&exe)
        .env(ROLE, "child")
        .env("DURQ_DIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    // libtest may print its own text in front of the child's lines.
    let lines: Vec<String> = stdout.lines().filter_map(|l| l.find("@@").map(|i| l[i..].to_owned())).collect();
    eprintln!("{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l == "@@done"), "{stdout}");
    Some(lines)
}

/// The tmpfs the child runs on, or `None` in the parent run.
fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var(ROLE).ok().map(|_| std::path::PathBuf::from(std::env::var("DURQ_DIR").unwrap()))
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing_and_passes_when_space_returns() {
    if let Some(lines) = run_on_tmpfs("child_on_a_full_disk", "512k") {
        assert!(lines.iter().any(|l| l.starts_with("@@no-space ")), "{lines:?}");
    }
}

/// The child: runs inside the namespace, on the tmpfs.
#[test]
fn child_on_a_full_disk() {
    let Some(dir) = child_dir() else { return };
    let options = Options::default().segment_bytes(64 << 10).record_bytes_max(8 << 10).durability(Durability::Sync);
    let queue = Queue::open_with(dir.join("q"), options).unwrap();
    drop(queue.consumer("g").unwrap()); // registered before the disk fills
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 200 << 10]).unwrap();
    let producer = queue.producer();
    let mut acked = 0u64;
    let error = loop {
        match producer.send(payload(acked)) {
            Ok(pos) => {
                assert_eq!(pos.offset, acked);
                acked += 1;
                assert!(acked < 10_000, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    println!("@@no-space after {acked} acknowledged records: {error}");
    assert!(error.is_no_space(), "the error says the disk is full: {error}");
    assert!(acked > 10);
    let stored = queue.read_at(0, 0, acked as usize + 1).unwrap();
    assert_eq!(stored.len() as u64, acked, "every acknowledged record is there, and no more");
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.payload, payload(i as u64), "record {i} intact");
    }
    std::fs::remove_file(&ballast).unwrap();
    for i in acked..acked + 20 {
        assert_eq!(producer.send(payload(i)).unwrap().offset, i, "sends work again once there is room");
    }
    let mut consumer = queue.consumer("g").unwrap();
    let seen = consume_checked(&mut consumer, payload);
    assert_eq!(seen, acked + 20);
    println!("@@recovered: {} records consumed after space returned", seen);
    println!("@@done");
}

#[test]
fn a_disk_that_fills_in_the_middle_of_a_segment_fails_the_send_that_needed_the_space() {
    if let Some(lines) = run_on_tmpfs("child_filling_the_middle_of_a_segment", "8m") {
        assert!(lines.iter().any(|l| l.starts_with("@@no-space ")), "{lines:?}");
    }
}

/// The second child: a 16 MiB segment on an 8 MiB disk that a ballast file
/// fills further, so the disk fills while the writer is in the segment's
/// second or third chunk (2 MiB each with 4 KiB pages), whose space was not
/// reserved yet. Two handles (as two processes would) send in turn: the
/// reserved watermark they share in the control file is what each checks.
/// The queue is closed and opened again while the disk is full.
#[test]
fn child_filling_the_middle_of_a_segment() {
    let Some(dir) = child_dir() else { return };
    let segment_bytes: u64 = 16 << 20;
    let options =
        Options::default().segment_bytes(segment_bytes).record_bytes_max(8 << 10).durability(Durability::Sync);
    let queue = Queue::open_with(dir.join("q"), options).unwrap();
    let other = Queue::open_existing(dir.join("q")).unwrap();
    drop(queue.consumer("g").unwrap()); // registered before the disk fills
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 3 << 20]).unwrap();
    let producers = [queue.producer(), other.producer()];
    let mut acked = 0u64;
    let error = loop {
        match producers[acked as usize % 2].send(payload(acked)) {
            Ok(pos) => {
                assert_eq!(pos.offset, acked);
                acked += 1;
                assert!(acked * FRAME_BYTES < segment_bytes, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    println!("@@no-space after {acked} acknowledged records: {error}");
    assert!(error.is_no_space(), "the error says the disk is full: {error}");
    let segments: Vec<_> = std::fs::read_dir(dir.join("q/p0000")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(segments.len(), 1, "still in the first segment: {segments:?}");
    let meta = std::fs::metadata(&segments[0]).unwrap();
    let reserved = meta.blocks() * 512;
    println!("@@stopped at byte {} of {segment_bytes}, {reserved} bytes reserved", 64 + acked * FRAME_BYTES);
    assert!(error.to_string().contains(&segments[0].display().to_string()), "names the segment: {error}");
    assert!(acked * FRAME_BYTES > 2 << 20, "the disk filled past the first chunks: {acked} records");
    assert!(reserved < segment_bytes / 2, "the later chunks were never reserved: {reserved} bytes are");
    assert_eq!(meta.len(), segment_bytes, "the file keeps its full length");
    // Closed and opened again while the disk is still full: recovery
    // reserves only what has blocks already, so the queue opens, to be read.
    drop((producers, queue, other));
    let queue = Queue::open_existing(dir.join("q")).unwrap();
    let other = Queue::open_existing(dir.join("q")).unwrap();
    for q in [&queue, &other] {
        let stored = q.read_at(0, 0, acked as usize + 1).unwrap();
        assert_eq!(stored.len() as u64, acked, "every acknowledged record is there, and no more");
        for (i, r) in stored.iter().enumerate() {
            assert_eq!(r.payload, payload(i as u64), "record {i} intact");
        }
    }
    let producers = [queue.producer(), other.producer()];
    assert!(producers[0].send(payload(acked)).unwrap_err().is_no_space(), "still full");
    std::fs::remove_file(&ballast).unwrap();
    for i in acked..acked + 100 {
        assert_eq!(
            producers[i as usize % 2].send(payload(i)).unwrap().offset,
            i,
            "sends work again once there is room"
        );
    }
    let mut consumer = queue.consumer("g").unwrap();
    let seen = consume_checked(&mut consumer, payload);
    assert_eq!(seen, acked + 100);
    println!("@@recovered: {seen} records consumed after space returned");
    println!("@@done");
}

/// Records of the issue's reproduction: 1 KiB records at most, 64 KiB
/// segments, on a 1 MiB disk (about 15 segments).
const SMALL_PAYLOAD_BYTES: usize = 900;

fn small_payload(i: u64) -> Vec<u8> {
    let mut p = format!("record {i} ").into_bytes();
    p.resize(SMALL_PAYLOAD_BYTES, b'a' + (i % 26) as u8);
    p
}

fn small_queue(dir: &std::path::Path) -> Queue {
    let options = Options::default().segment_bytes(64 << 10).record_bytes_max(1024).durability(Durability::Sync);
    Queue::open_with(dir.join("q"), options).unwrap()
}

/// Sends from offset `next` until the disk is full; returns the next offset
/// and the error, which must say "no space".
fn fill(producer: &durq::Producer, mut next: u64) -> (u64, durq::Error) {
    let start = next;
    loop {
        match producer.send(small_payload(next)) {
            Ok(pos) => {
                assert_eq!(pos.offset, next);
                next += 1;
                assert!(next - start < 100_000, "the disk never filled");
            }
            Err(e) => {
                assert!(e.is_no_space(), "the error says the disk is full: {e}");
                return (next, e);
            }
        }
    }
}

/// Processes everything visible as `consumer`'s group, checking each record
/// is `sent(offset)`, the one sent at its offset; returns how many.
fn consume_checked(consumer: &mut durq::Consumer, sent: fn(u64) -> Vec<u8>) -> u64 {
    let mut seen = 0u64;
    while let n @ 1.. = consumer
        .process_timeout(std::time::Duration::from_millis(50), |batch| {
            for m in batch {
                assert_eq!(m.payload(), sent(m.position().offset), "offset {}", m.position().offset);
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
    {
        seen += n as u64;
    }
    seen
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("q/p0000")).unwrap().count()
}

#[test]
fn once_the_groups_consumed_a_full_disk_the_next_send_frees_it_round_after_round() {
    run_on_tmpfs("child_sends_again_once_consumed", "1m");
}

#[test]
fn child_sends_again_once_consumed() {
    let Some(dir) = child_dir() else { return };
    let queue = small_queue(&dir);
    let mut consumer = queue.consumer("g").unwrap();
    let producer = queue.producer();
    let mut next = 0;
    for round in 0..3 {
        let (filled, error) = fill(&producer, next);
        let acked = filled - next;
        let full = segment_files(&dir);
        println!("@@round {round}: {acked} records acknowledged in {full} segments, then: {error}");
        assert!(acked > 500, "round {round}: a disk of about 15 segments took only {acked} records");
        assert_eq!(
            consume_checked(&mut consumer, small_payload),
            acked,
            "round {round}: every acknowledged record, once"
        );
        // The send that failed is tried again: its roll finds no space,
        // removes what the group passed, and creates its segment.
        assert_eq!(producer.send(small_payload(filled)).unwrap().offset, filled, "round {round}");
        let left = segment_files(&dir);
        println!("@@round {round}: consumed, sent again; {left} segment files left");
        assert!(left <= 3, "round {round}: {left} of {full} segments left after the group passed them");
        assert_eq!(consume_checked(&mut consumer, small_payload), 1);
        next = filled + 1;
    }
    println!("@@done");
}

#[test]
fn a_roll_on_a_full_disk_first_removes_what_every_group_passed_and_gc_does_it_by_hand() {
    run_on_tmpfs("child_rolls_reclaim_on_a_full_disk", "1m");
}

#[test]
fn child_rolls_reclaim_on_a_full_disk() {
    let Some(dir) = child_dir() else { return };
    let queue = small_queue(&dir);
    let mut fast = queue.consumer("fast").unwrap();
    drop(queue.consumer("slow").unwrap()); // registered at offset 0
    let producer = queue.producer();

    // The slow group holds every segment: consuming frees nothing, and
    // sends keep failing.
    let (next, error) = fill(&producer, 0);
    println!("@@filled: {next} records, then: {error}");
    let full = segment_files(&dir);
    assert_eq!(consume_checked(&mut fast, small_payload), next);
    assert_eq!(segment_files(&dir), full, "the slow group holds every segment");
    assert!(producer.send(small_payload(next)).unwrap_err().is_no_space());

    // Without the slow group, the next send's roll first removes what the
    // fast group passed: no consume, no command in between.
    queue.delete_group("slow").unwrap();
    assert_eq!(producer.send(small_payload(next)).unwrap().offset, next, "the roll reclaimed space");
    let left = segment_files(&dir);
    println!("@@after the roll on a full disk: {left} of {full} segment files");
    assert!(left <= 3, "{left} of {full}");
    let next = next + 1;

    // By hand: a slow group again, the disk full again; moving the group
    // frees nothing until `reclaim` (`durq gc`) runs.
    drop(queue.consumer("slow").unwrap());
    queue.reset_group("slow", durq::ResetTo::Offset(next)).unwrap();
    let (filled, error) = fill(&producer, next);
    println!("@@filled again: {} records, then: {error}", filled - next);
    assert_eq!(consume_checked(&mut fast, small_payload), filled - next + 1);
    queue.reset_group("slow", durq::ResetTo::Latest).unwrap();
    let before = segment_files(&dir);
    let reclaimed = queue.reclaim().unwrap();
    assert_eq!(reclaimed.len(), 1);
    let r = &reclaimed[0];
    println!("@@reclaim: {r:?}");
    assert_eq!(r.segments_removed, before - 2, "everything but the last two segments");
    assert_eq!((r.segments_kept, r.bytes_removed), (2, r.segments_removed as u64 * (64 << 10)));
    assert_eq!(r.first_offset, queue.offsets(0).unwrap().0);
    assert_eq!(segment_files(&dir), 2);
    let (refilled, _) = fill(&producer, filled);
    assert!(refilled - filled > 500, "sends work again: {} records", refilled - filled);
    // Nothing acknowledged was lost on the way.
    assert_eq!(consume_checked(&mut fast, small_payload), refilled - filled);
    println!("@@done");
}

#[test]
fn a_roll_on_a_full_disk_frees_what_the_groups_passed_in_other_partitions() {
    run_on_tmpfs("child_rolls_in_one_partition_free_another", "1m");
}

/// A key that `send_keyed` puts in partition `p` of 2.
fn key_for(p: u32) -> Vec<u8> {
    (0u32..).map(|i| format!("key-{i}").into_bytes()).find(|k| crc32fast::hash(k) % 2 == p).unwrap()
}

#[test]
fn child_rolls_in_one_partition_free_another() {
    let Some(dir) = child_dir() else { return };
    let options =
        Options::default().partitions(2).segment_bytes(64 << 10).record_bytes_max(1024).durability(Durability::Sync);
    let queue = Queue::open_with(dir.join("q"), options).unwrap();
    let mut consumer = queue.consumer("g").unwrap();
    let producer = queue.producer();
    let (key0, key1) = (key_for(0), key_for(1));
    let mut filled = 0;
    let error = loop {
        match producer.send_keyed(&key1, small_payload(filled)) {
            Ok(pos) => {
                assert_eq!((pos.partition, pos.offset), (1, filled));
                filled += 1;
                assert!(filled < 100_000, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    println!("@@filled partition 1: {filled} records, then: {error}");
    assert!(error.is_no_space(), "{error}");
    assert_eq!(consume_checked(&mut consumer, small_payload), filled);
    // Partition 0 has room in its first segment only; 300 records roll it
    // about four times, each roll on a disk that partition 1 filled.
    for i in 0..300 {
        let sent = producer.send_keyed(&key0, small_payload(i));
        assert_eq!(sent.unwrap_or_else(|e| panic!("keyed send {i} to partition 0: {e}")).offset, i);
    }
    let left = std::fs::read_dir(dir.join("q/p0001")).unwrap().count();
    println!("@@sent 300 to partition 0; {left} segment files left in partition 1");
    assert!(left <= 3, "{left}");
    assert_eq!(consume_checked(&mut consumer, small_payload), 300);
    println!("@@done");
}

#[test]
fn a_reservation_on_a_full_disk_in_the_middle_of_a_segment_first_removes_what_every_group_passed() {
    if let Some(lines) = run_on_tmpfs("child_reserves_once_consumed", "40m") {
        assert!(lines.iter().any(|l| l.starts_with("@@mid-segment ")), "{lines:?}");
    }
}

/// The same under `Buffered`, whose writer stores its frames through the
/// mapping (under `Sync` it writes them with `pwrite`, which a full disk
/// fails with ENOSPC): a store into a page without a block would kill the
/// child with SIGBUS, so this is the test of the reservation ahead of
/// stores.
#[test]
fn a_reservation_ahead_of_stores_through_the_mapping_on_a_full_disk_in_the_middle_of_a_segment() {
    if let Some(lines) = run_on_tmpfs("child_reserves_once_consumed_buffered", "40m") {
        assert!(lines.iter().any(|l| l.starts_with("@@mid-segment ")), "{lines:?}");
    }
}

/// 16 MiB segments (eight 2 MiB chunks, reserved a few ahead of the writer)
/// on a 40 MiB disk: it fills while the writer is inside the third segment,
/// where no roll will come to run retention. Once the group has consumed
/// everything, the send that failed is tried again: its reservation finds
/// no space, removes the segment every group passed, and succeeds.
#[test]
fn child_reserves_once_consumed() {
    reserves_once_consumed(Durability::Sync);
}

#[test]
fn child_reserves_once_consumed_buffered() {
    reserves_once_consumed(Durability::Buffered);
}

fn reserves_once_consumed(durability: Durability) {
    let Some(dir) = child_dir() else { return };
    let segment_bytes: u64 = 16 << 20;
    let options = Options::default().segment_bytes(segment_bytes).record_bytes_max(8 << 10).durability(durability);
    let queue = Queue::open_with(dir.join("q"), options).unwrap();
    let mut consumer = queue.consumer("g").unwrap();
    let producer = queue.producer();
    let mut next = 0u64;
    let error = loop {
        match producer.send(payload(next)) {
            Ok(pos) => {
                assert_eq!(pos.offset, next);
                next += 1;
                assert!(next * FRAME_BYTES < 64 << 20, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    assert!(error.is_no_space(), "the error says the disk is full: {error}");
    let bases: Vec<u64> = std::fs::read_dir(dir.join("q/p0000"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    let tail_base = *bases.iter().max().unwrap();
    let used = 64 + (next - tail_base) * FRAME_BYTES;
    assert!(
        used + FRAME_BYTES <= segment_bytes,
        "the failed send fit its segment: no roll was due ({used} bytes used)"
    );
    assert!(bases.len() >= 3, "segments passed before the tail: {bases:?}");
    let seen = consume_checked(&mut consumer, payload);
    assert_eq!(seen, next, "every acknowledged record, once");
    assert_eq!(producer.send(payload(next)).unwrap().offset, next, "the send that failed, tried again");
    let left = segment_files(&dir);
    println!("@@mid-segment full after {next} records in {} segments; consumed, sent again; {left} left", bases.len());
    assert!(left < bases.len(), "the passed segments were removed: {left} of {} left", bases.len());
    println!("@@done");
}

#[test]
fn a_retention_limit_removes_only_what_it_is_set_to_and_once_lowered_frees_a_full_disk_with_the_loss_recorded() {
    if let Some(lines) = run_on_tmpfs("child_limited_on_a_full_disk", "1m") {
        assert!(lines.iter().any(|l| l.starts_with("@@limit lowered")), "{lines:?}");
    }
}

#[test]
fn child_limited_on_a_full_disk() {
    let Some(dir) = child_dir() else { return };
    let path = dir.join("q");
    // A limit the 1 MiB disk never reaches.
    let options = Options::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(1024)
        .durability(Durability::Sync)
        .retention_max_bytes(4 << 20);
    let queue = Queue::open_with(&path, options).unwrap();
    drop(queue.consumer("slow").unwrap()); // registered at offset 0, never consumes
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 8 << 10]).unwrap();
    let producer = queue.producer();
    let (next, error) = fill(&producer, 0);
    println!("@@filled under a 4 MiB limit: {next} records, then: {error}");
    assert_eq!(queue.offsets(0).unwrap(), (0, next), "a limit not reached removes nothing, full disk or not");
    let stored = queue.read_at(0, 0, next as usize + 1).unwrap();
    assert_eq!(stored.len() as u64, next, "every acknowledged record is there");
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.payload, small_payload(i as u64), "record {i} intact");
    }
    assert_eq!(queue.stat().unwrap().groups[0].slots[0].skipped.as_ref().unwrap().count, 0);
    drop((producer, queue));

    // Lowered below what the disk holds (room for the meta file's rewrite
    // is lent by the ballast, then taken back).
    std::fs::remove_file(&ballast).unwrap();
    let lowered = durq::Retention { max_bytes: Some(256 << 10), max_age: None };
    Queue::change_retention(&path, lowered).unwrap();
    let queue = Queue::open(&path).unwrap();
    let producer = queue.producer();
    // Every page the disk has left goes to the ballast: recording the loss
    // must need no new block.
    let mut ballast = std::fs::OpenOptions::new().create(true).append(true).open(&ballast).unwrap();
    while std::io::Write::write_all(&mut ballast, &[1u8; 4096]).and_then(|()| ballast.sync_all()).is_ok() {}
    // The send's roll finds no space; its pass removes past the limit,
    // having recorded the group's loss in the file earlier passes sized
    // while there was room.
    assert_eq!(producer.send(small_payload(next)).unwrap().offset, next, "the limit freed the full disk");
    let (first, _) = queue.offsets(0).unwrap();
    assert!(first > 0);
    let skipped = queue.stat().unwrap().groups[0].slots[0].skipped.clone().unwrap();
    assert_eq!((skipped.count, skipped.last_from, skipped.last_to), (first, 0, first), "{skipped:?}");
    println!("@@limit lowered: the roll on the full disk removed offsets 0..{first}, recorded as group slow's loss");
    let mut slow = queue.consumer("slow").unwrap();
    assert_eq!(consume_checked(&mut slow, small_payload), next + 1 - first, "slow gets everything kept");
    println!("@@done");
}

//! Disk use that matches what was written: what `du` says, measured as the
//! blocks the file system allocated (`st_blocks`), not the files' lengths.
//! Segment files keep their full length (the format does not change); only
//! the part the writer reached, and a lead of a few chunks after it, has
//! blocks. A chunk is the page cache's largest folio, 2 MiB with 4 KiB
//! pages (`src/log/reservation.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use durq::{Durability, Options, Queue, Verdict};

const MIB: u64 = 1 << 20;

/// Blocks allocated to the files under `dir`, in bytes (`du`), and the sum
/// of the segment files' lengths.
fn disk_use(dir: &Path) -> (u64, u64) {
    let (mut allocated, mut segment_lengths) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            let (a, s) = disk_use(&entry.path());
            allocated += a;
            segment_lengths += s;
        } else {
            allocated += meta.blocks() * 512;
            if entry.path().extension().is_some_and(|e| e == "seg") {
                segment_lengths += meta.len();
            }
        }
    }
    (allocated, segment_lengths)
}

#[test]
fn a_new_four_partition_queue_with_a_group_and_its_dead_letter_queue_takes_a_few_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q");
    let queue = Queue::open_with(&path, Options::default().partitions(4)).unwrap();
    let producer = queue.producer();
    for i in 0..8u32 {
        producer.send(format!("order {i}")).unwrap();
    }
    let mut consumer = queue.consumer("g").unwrap();
    let mut seen = 0;
    while seen < 8 {
        seen += consumer
            .process_each(Duration::from_secs(5), |m| {
                if m.payload() == b"order 0" {
                    Verdict::DeadLetter("cannot be processed".into())
                } else {
                    Verdict::Done
                }
            })
            .unwrap();
    }
    assert_eq!(queue.dead_letters("g", 10).unwrap().len(), 1, "the group's dead-letter queue exists and holds one");

    let (allocated, segment_lengths) = disk_use(&path);
    eprintln!("allocated {allocated} bytes; segment files {segment_lengths} bytes long");
    assert_eq!(segment_lengths, 5 * 64 * MIB, "4 partitions and the DLQ's one, each a full-length 64 MiB file");
    // Each of the five segments has its first 2 MiB chunk.
    assert!(allocated <= 12 * MIB, "du of a small queue is a few MiB, not {} MiB", allocated / MIB);
}

#[test]
fn disk_use_grows_with_what_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q");
    let queue = Queue::open_with(&path, Options::default().durability(Durability::Buffered)).unwrap();
    let producer = queue.producer();
    let payload = vec![7u8; 4000];
    let mut written = 0u64;
    let mut last = disk_use(&path).0;
    for _ in 0..12 {
        for _ in 0..256 {
            producer.send(&payload).unwrap();
            written += 4032; // 32-byte frame header, payload padded to 8
        }
        let (allocated, _) = disk_use(&path);
        assert!(allocated >= last, "blocks are never given back while the segment is in use");
        assert!(allocated >= written, "{written} bytes written need as many reserved, not {allocated}");
        assert!(
            allocated <= 2 * written + 3 * MIB,
            "after {written} bytes, {allocated} allocated: at most twice what was written and a chunk"
        );
        last = allocated;
    }
    producer.flush().unwrap();
    let records = queue.read_at(0, 0, 4000).unwrap();
    assert_eq!(records.len(), 12 * 256);
    assert!(records.iter().all(|r| r.payload == payload));
}

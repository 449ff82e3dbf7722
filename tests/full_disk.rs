//! A real full disk: the queue lives on a small tmpfs, mounted inside a
//! user and mount namespace (`unshare --user --map-root-user --mount`, no
//! privileges needed). The test binary re-runs itself in there as the child.
//! The child fills the disk until `send` fails, checks the error says "no
//! space", that nothing acknowledged was lost, then frees space and checks
//! the same handle accepts sends again (a full disk is not a failed sync:
//! no fail-stop). A store into a mapped page the disk has no block for
//! would kill the child with SIGBUS instead: space is reserved before every
//! store, a few chunks ahead of the writer, so the disk can also fill in
//! the middle of a segment, which the second child makes happen. Where
//! namespaces are unavailable the test says so and skips, never silently.

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

/// Runs the test `child` of this binary inside a new user and mount
/// namespace, with a tmpfs of `size` mounted on a temp dir, and returns the
/// lines it printed that start with `@@`; `None` where namespaces are
/// unavailable (the test then says so and skips).
fn run_on_a_small_tmpfs(child: &str, size: &str) -> Option<Vec<String>> {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
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
    // A SIGBUS shows here as a child killed by a signal.
    assert!(out.status.success(), "child failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    // libtest may print its own text in front of the child's lines.
    let lines: Vec<String> = stdout.lines().filter_map(|l| l.find("@@").map(|i| l[i..].to_owned())).collect();
    eprintln!("{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.starts_with("@@no-space ")), "{stdout}");
    assert!(lines.iter().any(|l| l == "@@done"), "{stdout}");
    Some(lines)
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing_and_passes_when_space_returns() {
    run_on_a_small_tmpfs("child_on_a_full_disk", "512k");
}

#[test]
fn a_disk_that_fills_in_the_middle_of_a_segment_fails_the_send_that_needed_the_space() {
    run_on_a_small_tmpfs("child_filling_the_middle_of_a_segment", "8m");
}

/// The child: runs inside the namespace, on the tmpfs.
#[test]
fn child_on_a_full_disk() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("DURQ_DIR").unwrap());
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
    let mut seen = 0u64;
    while let n @ 1.. = consumer
        .process_timeout(std::time::Duration::from_millis(50), |batch| {
            for m in batch {
                assert_eq!(m.payload(), payload(m.position().offset));
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
    {
        seen += n as u64;
    }
    assert_eq!(seen, acked + 20);
    println!("@@recovered: {} records consumed after space returned", seen);
    println!("@@done");
}

/// The second child: a 16 MiB segment on an 8 MiB disk that a ballast file
/// fills further, so the disk fills while the writer is in the segment's
/// second or third chunk (2 MiB each with 4 KiB pages), whose space was not
/// reserved yet. Two handles (as two processes would) send in turn: the
/// reserved watermark they share in the control file is what each checks.
/// The queue is closed and opened again while the disk is full.
#[test]
fn child_filling_the_middle_of_a_segment() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("DURQ_DIR").unwrap());
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
    let mut seen = 0u64;
    while let n @ 1.. = consumer
        .process_timeout(std::time::Duration::from_millis(50), |batch| {
            for m in batch {
                assert_eq!(m.payload(), payload(m.position().offset));
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
    {
        seen += n as u64;
    }
    assert_eq!(seen, acked + 100);
    println!("@@recovered: {seen} records consumed after space returned");
    println!("@@done");
}

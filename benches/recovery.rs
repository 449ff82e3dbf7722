//! Time to open a queue after a crash, by queue size: only the last segment
//! of each partition is walked, so the time must stay flat as the queue grows.
//!
//! Per size (100 MiB, 1 GiB, and 4 GiB when `DURQ_RECOVERY_4G=1`) the queue
//! is built once under `Durability::Buffered` with `send_batch` of 1,000 ×
//! 1,000-byte payloads, flushed and dropped. Before each timed
//! `Queue::open_existing`, garbage is written just after the last frame of the
//! last segment (a torn tail for recovery to find and zero). The median of
//! `DURQ_RECOVERY_RUNS` opens (default 7) is reported, with its ratio to the
//! smallest queue's. Files are in the page cache: this measures the walk, not
//! cold reads. The `cold` rows drop the partition's files from the page
//! cache (`POSIX_FADV_DONTNEED` after an fdatasync) before each open, as
//! after a reboot: then the never-written end of the last segment is a hole
//! that recovery does not read at all.
//!
//! Run: `cargo bench --bench recovery`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use durq::{Durability, Options, Queue};

const BATCH: usize = 1_000;
const PAYLOAD_BYTES: usize = 1_000;
/// Garbage written after the tail before each open.
const GARBAGE_BYTES: usize = 4096;
const MIB: u64 = 1 << 20;
/// Bytes the last segment holds in the `+fill` rows (half of a default
/// 64 MiB segment).
const FILL: u64 = 32 * MIB;

fn du(path: &Path) -> String {
    Command::new("du")
        .arg("-sh")
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn last_segment(queue_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(queue_dir.join("p0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("no segment")
}

/// Writes non-zero garbage just after the last frame of the last segment;
/// returns the segment count and the byte position of the tail.
fn damage_tail(queue_dir: &Path) -> (usize, u64) {
    let (count, tail, len) = scan_tail(queue_dir);
    let n = GARBAGE_BYTES.min(len - tail);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ tail as u64;
    let garbage: Vec<u8> = (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed as u8) | 1
        })
        .collect();
    let f = OpenOptions::new().write(true).open(last_segment(queue_dir)).unwrap();
    f.write_all_at(&garbage, tail as u64).unwrap();
    (count, tail as u64)
}

/// Segment count, tail position and length of the last segment.
fn scan_tail(queue_dir: &Path) -> (usize, usize, usize) {
    let count = std::fs::read_dir(queue_dir.join("p0000"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|e| e == "seg"))
        .count();
    let path = last_segment(queue_dir);
    let bytes = std::fs::read(&path).unwrap();
    // The header (64 bytes) is never all zero; frames end on 8-byte bounds
    // and the payloads are non-zero, so the tail is the last non-zero byte
    // rounded up to 8.
    let last = bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
    let tail = ((last + 1).div_ceil(8) * 8).max(64);
    (count, tail, bytes.len())
}

/// Appends `bytes` of records (or, with `until_tail`, until the last
/// segment holds at least that many bytes), flushes and closes.
fn build(dir: &Path, bytes: u64, until_tail: Option<u64>) {
    let q = Queue::open_with(dir, Options::default().durability(Durability::Buffered)).unwrap();
    let p = q.producer();
    let payloads = vec![[b'x'; PAYLOAD_BYTES]; BATCH];
    // 32-byte frame header + 1,000-byte payload = 1,032 bytes a record.
    let batch_bytes = (BATCH * (PAYLOAD_BYTES + 32)) as u64;
    for _ in 0..bytes.div_ceil(batch_bytes) {
        p.send_batch(&payloads).unwrap();
    }
    if let Some(want) = until_tail {
        let (_, mut tail) = tail_of(dir);
        while tail < want {
            for _ in 0..(want - tail).div_ceil(batch_bytes) {
                p.send_batch(&payloads).unwrap();
            }
            tail = tail_of(dir).1;
        }
    }
    p.flush().unwrap();
}

/// The segment count and the byte position after the last frame of the
/// last segment.
fn tail_of(queue_dir: &Path) -> (usize, u64) {
    let (count, tail, _) = scan_tail(queue_dir);
    (count, tail as u64)
}

/// Times `runs` opens, each after damaging the tail; prints one row and
/// returns the median.
/// Writes back the partition's files and drops them from the page cache.
fn evict(queue_dir: &Path) {
    for entry in std::fs::read_dir(queue_dir.join("p0000")).unwrap() {
        let f = std::fs::File::open(entry.unwrap().path()).unwrap();
        f.sync_data().unwrap();
        // SAFETY: posix_fadvise only reads its integer arguments; the
        // descriptor is owned by `f`, which outlives the call.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
}

fn measure(label: &str, dir: &Path, runs: usize, cold: bool, base: &mut Option<Duration>) {
    let mut times = Vec::with_capacity(runs);
    let mut segments_tail = (0, 0);
    for _ in 0..runs {
        segments_tail = damage_tail(dir);
        if cold {
            evict(dir);
        }
        let start = Instant::now();
        let q = Queue::open_existing(dir).unwrap();
        times.push(start.elapsed());
        drop(q);
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let base = *base.get_or_insert(median);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<20} {:>6} {:>9} {:>14} {:>10.3} {:>10.3} {:>10.3} {:>7.2}x",
        label,
        du(dir),
        segments_tail.0,
        segments_tail.1,
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        median.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("DURQ_RECOVERY_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(7).max(1);
    let mut sizes = vec![("100 MiB", 100 * MIB), ("1 GiB", 1024 * MIB)];
    if std::env::var("DURQ_RECOVERY_4G").is_ok_and(|v| v == "1") {
        sizes.push(("4 GiB", 4096 * MIB));
    }
    if !benching {
        // `cargo test --benches`: only check that everything runs.
        sizes = vec![("8 MiB", 8 * MIB)];
    }

    println!("open_existing after a torn tail, median of {runs} opens (page cache warm; cold rows: dropped first)");
    println!("rows marked +fill were topped up until the last segment holds >= {} MiB,", FILL / MIB);
    println!("so every size walks a comparably full last segment");
    println!(
        "{:<20} {:>6} {:>9} {:>14} {:>10} {:>10} {:>10} {:>8}",
        "queue", "du", "segments", "last seg tail", "median ms", "min ms", "max ms", "ratio"
    );
    let (mut base, mut base_cold, mut base_fill, mut base_fill_cold) = (None, None, None, None);
    let mut fill_rows = Vec::new();
    for (label, bytes) in sizes {
        let tmp = tempfile::Builder::new().prefix("durq-recovery-").tempdir_in("/tmp").unwrap();
        let dir = tmp.path().join("q");
        let built = Instant::now();
        build(&dir, bytes, None);
        eprintln!("  ({label} built in {:.1} s)", built.elapsed().as_secs_f64());
        measure(label, &dir, runs, false, &mut base);
        measure(&format!("{label} cold"), &dir, runs, true, &mut base_cold);
        if benching {
            // Top up (re-opening recovers the last damage) to a half-full
            // last segment, and measure again.
            build(&dir, 0, Some(FILL));
            fill_rows.push((label, tmp));
        }
    }
    for (label, tmp) in &fill_rows {
        let dir = tmp.path().join("q");
        measure(&format!("{label} +fill"), &dir, runs, false, &mut base_fill);
        measure(&format!("{label} +fill cold"), &dir, runs, true, &mut base_fill_cold);
    }
    drop(fill_rows);
}

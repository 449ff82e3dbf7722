//! Group commit under `Durability::Sync`: 1, 4, 16 and 64 threads each send
//! one 100-byte message at a time into one queue (one partition). For each
//! thread count it prints acknowledged messages/s and the p50/p99 latency of
//! `send`, beside the raw `pwrite` (100 B) + `fdatasync` latency of the same
//! disk, measured in the same run on a preallocated file.
//!
//! Run: `cargo bench --bench group_commit`. Each configuration runs for
//! `DURQ_BENCH_SECS` seconds (default 4) after a short warm-up;
//! `DURQ_BENCH_THREADS=32` (or `8,32`) runs those thread counts instead (W6
//! of the comparison has 32 senders: the profile in docs/BENCHMARKS.md,
//! "Where the time goes", ran this one row).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use durq::{Durability, Options, Queue};

const PAYLOAD: [u8; 100] = [b'x'; 100];
const THREADS: [usize; 4] = [1, 4, 16, 64];
const WARMUP: Duration = Duration::from_millis(300);

fn run_for() -> Duration {
    let secs = std::env::var("DURQ_BENCH_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(4.0);
    Duration::from_secs_f64(secs)
}

/// The value at quantile `q` (0..=1) of sorted `v`, nearest rank.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Row {
    label: String,
    ops: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Row {
    fn new(label: String, mut lat: Vec<Duration>, elapsed: Duration) -> Row {
        lat.sort_unstable();
        Row { label, ops: lat.len(), elapsed, p50: percentile(&lat, 0.50), p99: percentile(&lat, 0.99) }
    }

    fn print(&self) {
        println!(
            "{:<34} {:>10} {:>12.0} {:>12.1} {:>12.1}",
            self.label,
            self.ops,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            us(self.p50),
            us(self.p99)
        );
    }
}

/// `pwrite` of 100 bytes + `fdatasync`, in a loop, on a file whose blocks
/// were written and synced beforehand (no allocation or size change per sync).
fn raw_fdatasync(dir: &std::path::Path, run_for: Duration) -> Row {
    const FILE_BYTES: usize = 64 << 20;
    let path = dir.join("prealloc");
    let mut f = OpenOptions::new().create(true).read(true).write(true).truncate(true).open(&path).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..FILE_BYTES / zeros.len() {
        f.write_all(&zeros).unwrap();
    }
    f.sync_all().unwrap();
    let frame = [7u8; 100];
    let mut pos = 0u64;
    let mut step = |lat: Option<&mut Vec<Duration>>| {
        let t = Instant::now();
        f.write_all_at(&frame, pos).unwrap();
        f.sync_data().unwrap();
        if let Some(lat) = lat {
            lat.push(t.elapsed());
        }
        pos = (pos + 104) % (FILE_BYTES as u64 - 104);
    };
    let warm = Instant::now();
    while warm.elapsed() < WARMUP {
        step(None);
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run_for {
        step(Some(&mut lat));
    }
    let elapsed = start.elapsed();
    Row::new("reference: pwrite 100B + fdatasync".into(), lat, elapsed)
}

/// `threads` threads each sending one message at a time until the deadline.
fn durq_sync(dir: &std::path::Path, threads: usize, run_for: Duration) -> Row {
    let q = Queue::open_with(
        dir.join(format!("q{threads}")),
        Options::default().durability(Durability::Sync).partitions(1),
    )
    .unwrap();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let p = q.producer();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let warm = Instant::now();
                while warm.elapsed() < WARMUP {
                    p.send(PAYLOAD).unwrap();
                }
                barrier.wait();
                let start = Instant::now();
                let mut lat = Vec::with_capacity(1 << 14);
                while start.elapsed() < run_for {
                    let t = Instant::now();
                    p.send(PAYLOAD).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    barrier.wait();
    let start = Instant::now();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().unwrap());
    }
    let elapsed = start.elapsed();
    drop(q);
    Row::new(format!("durq Sync send 100B, {threads:>2} threads"), lat, elapsed)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // only check that everything runs, briefly.
    let benching = std::env::args().any(|a| a == "--bench");
    let run_for = if benching { run_for() } else { Duration::from_millis(50) };
    let dir = tempfile::tempdir().unwrap();
    println!(
        "group commit, 1 partition, Durability::Sync, {:.1} s per row (dir {})",
        run_for.as_secs_f64(),
        dir.path().display()
    );
    println!("{:<34} {:>10} {:>12} {:>12} {:>12}", "configuration", "acked", "msgs/s", "p50 us", "p99 us");
    raw_fdatasync(dir.path(), run_for).print();
    let threads: Vec<usize> = match std::env::var("DURQ_BENCH_THREADS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("DURQ_BENCH_THREADS: thread counts")).collect(),
        Err(_) => THREADS.to_vec(),
    };
    for threads in threads {
        durq_sync(dir.path(), threads, run_for).print();
    }
}

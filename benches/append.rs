//! Append throughput under each durability mode, beside the hardware's own
//! limits measured in the same run:
//!
//! - `reference/write_then_fdatasync`: `write(2)` of the same 100-byte frames
//!   to a plain file, one `fdatasync` at the end: the floor for `Buffered`.
//! - `reference/fdatasync_per_write`: append + `fdatasync` per message: what
//!   one durable message per sync can cost at best, the floor for `Sync`.
//! - `durq/buffered_send_100B`, `durq/sync_send_100B`: one thread.
//! - `durq/sync_send_100B_threads/N`: N threads each sending one message at a
//!   time under `Sync`: group commit shares each sync.
//!
//! Run: `cargo bench --bench append`. Throughput is reported in messages/s.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use durq::{Durability, Options, Queue};

const PAYLOAD: [u8; 100] = [b'x'; 100];
/// A frame of a 100-byte payload: 32-byte header + payload, padded to 8.
const FRAME_BYTES: usize = 136;

fn queue(durability: Durability) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path().join("q"), Options::default().durability(durability)).unwrap();
    (dir, q)
}

fn references(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    let dir = tempfile::tempdir().unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_then_fdatasync", |b| {
        b.iter_custom(|iters| {
            let path = dir.path().join("plain");
            let mut f = std::io::BufWriter::with_capacity(
                1 << 20,
                OpenOptions::new().create(true).write(true).truncate(true).open(&path).unwrap(),
            );
            let frame = [7u8; FRAME_BYTES];
            let start = Instant::now();
            for _ in 0..iters {
                f.write_all(&frame).unwrap();
            }
            f.flush().unwrap();
            f.get_ref().sync_data().unwrap();
            start.elapsed()
        })
    });
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("fdatasync_per_write", |b| {
        let path = dir.path().join("synced");
        let f = OpenOptions::new().create(true).write(true).truncate(true).open(&path).unwrap();
        let frame = [7u8; FRAME_BYTES];
        let mut pos = 0u64;
        b.iter(|| {
            f.write_all_at(&frame, pos).unwrap();
            pos += FRAME_BYTES as u64;
            f.sync_data().unwrap();
        })
    });
    g.finish();
}

fn durq_single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("durq");
    g.throughput(Throughput::Elements(1));
    let (_dir, q) = queue(Durability::Buffered);
    let p = q.producer();
    g.bench_function("buffered_send_100B", |b| b.iter(|| p.send(PAYLOAD).unwrap()));
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let (_dir, q) = queue(Durability::Sync);
    let p = q.producer();
    g.bench_function("sync_send_100B", |b| b.iter(|| p.send(PAYLOAD).unwrap()));
    g.finish();
}

fn durq_group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("durq/sync_send_100B_threads");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for threads in [1u64, 32] {
        g.throughput(Throughput::Elements(threads));
        let (_dir, q) = queue(Durability::Sync);
        let p = Arc::new(q.producer());
        g.bench_function(threads.to_string(), |b| {
            // One iteration = every thread sends one message.
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        let p = p.clone();
                        s.spawn(move || {
                            for _ in 0..iters {
                                p.send(PAYLOAD).unwrap();
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, references, durq_single_thread, durq_group_commit);
criterion_main!(benches);

//! Consuming 100-byte messages, in batches of 1,000 and one at a time
//! (`max_batch(1)`), under the consumer's commit modes: `commit(Sync)` (one
//! checkpoint msync per batch) and `commit(Interval(10 ms))` (a store per
//! batch, synced in the background). Throughput is reported in messages/s,
//! beside the bare reference for `Sync` one at a time: a 64-byte `pwrite`
//! and an `fdatasync` of a small file, the least a durable commit costs.
//!
//! Run: `cargo bench --bench consume` (or one of them:
//! `cargo bench --bench consume -- batch_1_`).

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use durq::{ConsumerOptions, Durability, Options, Queue};

const MESSAGES: u64 = 1_000_000;
const BATCH: usize = 1_000;
/// Messages per round one at a time under `commit(Sync)`: one sync each,
/// so a few thousand take seconds.
const SYNCED_ONE_AT_A_TIME: u64 = 2_000;

fn consume(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path().join("q"), Options::default().durability(Durability::Buffered)).unwrap();
    let p = q.producer();
    let payloads = vec![[b'x'; 100]; BATCH];
    for _ in 0..MESSAGES / BATCH as u64 {
        p.send_batch(&payloads).unwrap();
    }
    p.flush().unwrap();

    let mut g = c.benchmark_group("consume");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let interval = Durability::Interval(Duration::from_millis(10));
    let mut round = 0;
    let mut bench = |g: &mut BenchmarkGroup<'_, WallTime>, name: &str, max_batch, commit, messages| {
        g.throughput(Throughput::Elements(messages));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    // A fresh group per round reads the queue from offset 0.
                    let options = ConsumerOptions::default().max_batch(max_batch).commit(commit);
                    let mut consumer = q.consumer_with(&format!("g{round}"), options).unwrap();
                    let start = Instant::now();
                    let mut seen = 0u64;
                    while seen < messages {
                        seen += consumer
                            .process(|batch| {
                                std::hint::black_box(batch.iter().map(|m| m.payload().len()).sum::<usize>());
                                Ok::<(), std::io::Error>(())
                            })
                            .unwrap() as u64;
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    };
    bench(&mut g, "batch_1000_checkpointed_100B", BATCH, Durability::Sync, MESSAGES);
    bench(&mut g, "batch_1000_interval_10ms_100B", BATCH, interval, MESSAGES);
    bench(&mut g, "batch_1_checkpointed_100B", 1, Durability::Sync, SYNCED_ONE_AT_A_TIME);
    bench(&mut g, "batch_1_interval_10ms_100B", 1, interval, MESSAGES);

    // The bare reference for a durable commit: a 64-byte write into a
    // small file and its fdatasync, on the same file system.
    g.throughput(Throughput::Elements(SYNCED_ONE_AT_A_TIME));
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.path().join("raw"))
        .unwrap();
    file.write_all_at(&[0; 4096], 0).unwrap();
    file.sync_all().unwrap();
    g.bench_function("raw_pwrite_64B_fdatasync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters * SYNCED_ONE_AT_A_TIME {
                file.write_all_at(&i.to_le_bytes().repeat(8), 0).unwrap();
                file.sync_data().unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, consume);
criterion_main!(benches);

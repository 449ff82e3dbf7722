//! Consuming 100-byte messages in batches of 1,000 with a durable checkpoint
//! (one fdatasync) per batch. Throughput is reported in messages/s.
//!
//! Run: `cargo bench --bench consume`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use durq::{ConsumerOptions, Durability, Options, Queue};

const MESSAGES: u64 = 1_000_000;
const BATCH: usize = 1_000;

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
    g.throughput(Throughput::Elements(MESSAGES));
    let mut round = 0;
    g.bench_function("batch_1000_checkpointed_100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                // A fresh group per round reads the whole queue from offset 0.
                let mut consumer =
                    q.consumer_with(&format!("g{round}"), ConsumerOptions::default().max_batch(BATCH)).unwrap();
                let start = Instant::now();
                let mut seen = 0u64;
                while seen < MESSAGES {
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
    g.finish();
}

criterion_group!(benches, consume);
criterion_main!(benches);

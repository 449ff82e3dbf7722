//! The async API beside the blocking one, in the same run:
//! - `consume`: `process_async` (one task on a multi-threaded runtime) vs
//!   `process`, reading 100-byte messages in batches of 1,000 with a
//!   durable checkpoint per batch (as `benches/consume.rs`);
//! - `send_sync`: under `Durability::Sync`, 32 tasks each awaiting
//!   `send_async` of one 100-byte message at a time vs 32 threads each
//!   calling `send` (both sharing group commit).
//!
//! Throughput is in messages/s. Run: `cargo bench --bench async_api`
//! (feature `tokio`, which the crate's dev-dependency on itself enables).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use durq::{ConsumerOptions, Durability, Options, Queue};

const MESSAGES: u64 = 200_000;
const BATCH: usize = 1_000;
const SENDERS: usize = 32;
const SENDS_EACH: usize = 50;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn consume(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path().join("q"), Options::default().durability(Durability::Buffered)).unwrap();
    let p = q.producer();
    let payloads = vec![[b'x'; 100]; BATCH];
    for _ in 0..MESSAGES / BATCH as u64 {
        p.send_batch(&payloads).unwrap();
    }
    p.flush().unwrap();
    let rt = runtime();

    let mut g = c.benchmark_group("consume");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(MESSAGES));
    let mut round = 0;
    let mut fresh_consumer = || {
        round += 1;
        // A fresh group per round reads the whole queue from offset 0.
        q.consumer_with(&format!("g{round}"), ConsumerOptions::default().max_batch(BATCH)).unwrap()
    };
    g.bench_function("process_batch_1000_100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut consumer = fresh_consumer();
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
    g.bench_function("process_async_batch_1000_100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut consumer = fresh_consumer();
                total += rt.block_on(async {
                    let start = Instant::now();
                    let mut seen = 0u64;
                    while seen < MESSAGES {
                        seen += consumer
                            .process_async(|batch| async move {
                                std::hint::black_box(batch.iter().map(|m| m.payload().len()).sum::<usize>());
                                Ok::<(), std::io::Error>(())
                            })
                            .await
                            .unwrap() as u64;
                    }
                    start.elapsed()
                });
            }
            total
        })
    });
    g.finish();
}

fn send_sync(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open_with(dir.path().join("q"), Options::default().durability(Durability::Sync)).unwrap();
    let rt = runtime();
    let payload = [b'x'; 100];

    let mut g = c.benchmark_group("send_sync");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements((SENDERS * SENDS_EACH) as u64));
    g.bench_function("send_32_threads_100B", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    for _ in 0..SENDERS {
                        let producer = q.producer();
                        s.spawn(move || {
                            for _ in 0..SENDS_EACH {
                                producer.send(payload).unwrap();
                            }
                        });
                    }
                });
            }
            start.elapsed()
        })
    });
    g.bench_function("send_async_32_tasks_100B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..SENDERS)
                        .map(|_| {
                            let producer = q.producer();
                            tokio::spawn(async move {
                                for _ in 0..SENDS_EACH {
                                    producer.send_async(payload).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, consume, send_sync);
criterion_main!(benches);

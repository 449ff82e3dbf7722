//! The async forms keep the contract: `send_async` acknowledges where the
//! record is; `process_async` commits only once the batch's future
//! resolves `Ok`. A future that resolves `Err`, or is dropped while its
//! batch is out, commits nothing: the batch comes again, marked as
//! redelivered, and every record is processed once it succeeds.
//!
//! Only the async forms run on the runtime: a backend's blocking calls
//! (joining, `committed`, dropping the consumer) may not run on one (the
//! NATS backend's wait on its own runtime), so they run between the phases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, Position};

use super::{backend, join};
use crate::conformance::procs;

const RECORDS: usize = 20;

#[test]
fn send_async_and_process_async_commit_only_what_resolved_ok() {
    let place = backend::Place::new();
    let queue = backend::create(&place.spec("async"), Options::default().partitions(2));
    let producer = queue.producer();
    let options = ConsumerOptions::default().max_batch(4).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = join(&queue, options).expect("join");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // Sends, a batch whose future fails, and one whose future is dropped.
    let (sent, failed, dropped) = runtime.block_on(async {
        let mut sent: HashMap<String, Position> = HashMap::new();
        for i in 0..RECORDS {
            let id = format!("m-{i}");
            sent.insert(id.clone(), producer.send_async(&id).await.expect("send_async"));
        }
        let mut failed = Vec::new();
        let outcome = consumer
            .process_async(|batch| {
                failed.extend(batch.iter().map(|m| m.position()));
                async move { Err::<(), _>(std::io::Error::other("not now")) }
            })
            .await;
        assert!(matches!(outcome, Err(durq::Error::Process(_))), "{:?}", outcome.err());
        let mut dropped = Vec::new();
        let timed_out = tokio::time::timeout(
            Duration::from_millis(300),
            consumer.process_async(|batch| {
                dropped.extend(batch.iter().map(|m| m.position()));
                async move {
                    std::future::pending::<()>().await;
                    Ok::<(), std::io::Error>(())
                }
            }),
        )
        .await;
        assert!(timed_out.is_err(), "the batch's future never resolves");
        (sent, failed, dropped)
    });
    assert!(!dropped.is_empty(), "the dropped future had its batch");
    assert_eq!(consumer.committed().expect("committed"), [0, 0], "nothing committed yet");

    // Then every record, until each was processed.
    let processed = runtime.block_on(async {
        let mut processed: Vec<(Position, u32, String)> = Vec::new();
        let deadline = Instant::now() + procs::PATIENCE;
        let mut ids = std::collections::HashSet::new();
        while ids.len() < RECORDS {
            assert!(Instant::now() < deadline, "not all processed: {processed:?}");
            let out = &mut processed;
            consumer
                .process_async(|batch| {
                    let records: Vec<_> = batch
                        .iter()
                        .map(|m| {
                            let payload = String::from_utf8(m.payload().to_vec()).expect("utf-8");
                            (m.position(), m.delivery_count(), payload)
                        })
                        .collect();
                    async move {
                        tokio::task::yield_now().await;
                        out.extend(records);
                        Ok::<(), std::io::Error>(())
                    }
                })
                .await
                .expect("process_async");
            ids = processed.iter().map(|(_, _, id)| id.clone()).collect();
        }
        processed
    });
    let ends: Vec<u64> = (0..2).map(|p| sent.values().filter(|x| x.partition == p).count() as u64).collect();
    assert_eq!(consumer.committed().expect("committed"), ends, "everything committed");
    let mut once: HashMap<&String, u32> = HashMap::new();
    for (position, delivery_count, id) in &processed {
        assert_eq!(sent.get(id), Some(position), "{id} where send_async said");
        *once.entry(id).or_insert(0) += 1;
        if failed.contains(position) || dropped.contains(position) {
            assert!(*delivery_count > 1, "{id} was handed out before: {delivery_count}");
        }
    }
    assert!(once.values().all(|&n| n == 1), "each once, after its failures: {once:?}");
    eprintln!(
        "{}: {RECORDS} records by send_async; a failed batch of {} and a dropped one of {} came again; all committed",
        backend::NAME,
        failed.len(),
        dropped.len()
    );
}

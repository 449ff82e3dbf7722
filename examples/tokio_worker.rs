//! A tokio service around durq: 8 producer tasks await durable sends
//! (`send_async` under `Sync`: each wakes when the group commit covering
//! its record is on disk, sharing syncs, holding no runtime thread), and a
//! worker task awaits batches with `process_async`, doing its work
//! asynchronously; the checkpoint moves only once the batch's future
//! returns `Ok`. The metrics go to a Prometheus recorder, rendered once at
//! the end.
//!
//! ```sh
//! cargo run --release --example tokio_worker --features tokio,metrics
//! ```

use std::time::Duration;

use durq::{ConsumerOptions, Queue};
use metrics_exporter_prometheus::PrometheusBuilder;

const TASKS: usize = 8;
const PER_TASK: usize = 250;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Installed before the queue opens: the queue registers its metrics then.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let dir = tempfile::tempdir()?;
    let queue = Queue::open(dir.path().join("orders"))?;

    let mut worker = queue.consumer_with("billing", ConsumerOptions::default().max_batch(100))?;
    let total = TASKS * PER_TASK;
    let work = tokio::spawn(async move {
        let mut done = 0;
        while done < total {
            done += worker
                .process_async(|batch| async move {
                    // The work: awaiting something (a database, a service).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    println!("billed {} orders", batch.len());
                    Ok::<(), std::io::Error>(()) // only now is the batch committed
                })
                .await?;
        }
        Ok::<usize, durq::Error>(done)
    });

    let mut senders = Vec::new();
    for task in 0..TASKS {
        let producer = queue.producer();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                producer.send_async(format!("order {task}-{i}")).await?; // durable when it returns
            }
            Ok::<(), durq::Error>(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let billed = work.await??;

    let stats = queue.stats();
    println!("sent {total}, billed {billed}, {} syncs for {} durable sends", stats.syncs, stats.messages_synced);
    let shown = ["durq_messages_appended_total", "durq_messages_consumed_total", "durq_syncs_total"];
    for line in prometheus.render().lines().filter(|l| shown.iter().any(|name| l.starts_with(name))) {
        println!("{line}");
    }
    if billed != total || stats.messages_consumed != total as u64 {
        return Err(format!("billed {billed} of {total}").into());
    }
    Ok(())
}

//! Manual commit: `poll` hands out a batch as a `Delivery`, and
//! `Delivery::commit` commits it, for a caller that cannot do its work
//! inside a closure (it hands the records to another component, say).
//!
//! The rule is the same as with `process`: commit only once the work is
//! done and durable on your side. Committing first is the classic way a
//! consumer loses messages (it crashes between the commit and the work);
//! dropping a `Delivery` without committing it is always safe: its records
//! come again, marked as redeliveries.
//!
//! Run: `cargo run --release --example manual_commit`

use std::time::Duration;

use durq::{ConsumerOptions, Queue};

const WAIT: Duration = Duration::from_millis(200);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let queue = Queue::open(work.path().join("orders"))?;
    queue.producer().send_batch(["order 1", "order 2", "order 3"])?;

    // A dropped delivery counts as a failed one, and failed deliveries come
    // again after the retry backoff (1 s at first); no pause here, so the
    // example runs at once.
    let options = ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]);
    let mut consumer = queue.consumer_with("red-packet", options)?;

    // First attempt: the work fails half-way, and the delivery is dropped
    // uncommitted (as it would be by a `?` or a panic). Nothing is lost.
    if let Some(delivery) = consumer.poll(WAIT)? {
        println!("got {} orders; the ledger is down, so none is committed", delivery.len());
        drop(delivery);
    }

    // Second attempt: the same records come again, one at a time (durq
    // narrows a failed batch down to find the record that fails), each
    // marked as a redelivery with its delivery count.
    while let Some(delivery) = consumer.poll(WAIT)? {
        for m in delivery.messages() {
            println!(
                "granted a red packet for {:?} (offset {}, delivery {}, redelivery: {})",
                String::from_utf8_lossy(m.payload()),
                m.position().offset,
                m.delivery_count(),
                m.is_redelivery()
            );
        }
        // The work is done: only now commit. `commit` returns once the
        // group's checkpoint is durable; `Error::Fenced` would mean another
        // member took this slot over meanwhile, and the commit did not count.
        let committed = delivery.commit()?;
        println!("committed {committed}");
    }
    println!("the group's position: {:?}", consumer.committed()?);
    Ok(())
}

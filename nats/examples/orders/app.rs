//! The orders application itself, written once: it names the backend only
//! as `super::Queue`, which its two examples (`orders` on the local queue,
//! `orders_on_nats` on NATS JetStream) each bring in with one `use`. The
//! open call, the producer, the consumer group, the verdicts, the dead
//! letters and the errors are this code, type-checked against both.
//!
//! It sends a few orders keyed by customer (each customer's orders stay in
//! order, in one partition), then bills them with the group `billing`: an
//! order whose amount is not a number goes to the group's dead-letter
//! queue, with the reason.

use std::time::Duration;

use durq::{ConsumerOptions, Options, Verdict};

use super::Queue;

const ORDERS: [(&str, &str); 6] =
    [("alice", "100"), ("bob", "250"), ("alice", "one hundred"), ("carol", "66"), ("bob", "75"), ("alice", "30")];

pub fn main() -> Result<(), durq::Error> {
    let Some(place) = std::env::args().nth(1) else {
        eprintln!("usage: orders <queue directory | nats://host:port/QUEUE>");
        std::process::exit(2);
    };
    let queue = Queue::open_with(place.as_str(), Options::default().partitions(4))?;

    let producer = queue.producer();
    for (customer, amount) in ORDERS {
        let position = producer.send_keyed(customer, format!("{customer} {amount}"))?;
        println!("sent {customer:<5} {amount:>11} -> partition {} offset {}", position.partition, position.offset);
    }

    let mut billing = queue.consumer_with("billing", ConsumerOptions::default())?;
    let mut billed = 0u64;
    loop {
        let committed = billing.process_each(Duration::from_millis(500), |order| {
            let text = String::from_utf8_lossy(order.payload());
            match text.rsplit(' ').next().and_then(|amount| amount.parse::<u64>().ok()) {
                Some(amount) => {
                    billed += amount;
                    Verdict::Done
                }
                None => Verdict::DeadLetter(format!("{text:?}: the amount is not a number")),
            }
        })?;
        // Nothing came within half a second: every order is billed.
        if committed == 0 {
            break;
        }
    }
    println!("billed {billed} in all; committed {:?}", billing.committed()?);
    for letter in queue.dead_letters("billing", 10)? {
        println!("dead letter from {:?}: {}", letter.original, letter.reason);
    }
    Ok(())
}

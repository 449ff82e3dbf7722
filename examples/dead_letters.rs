//! Per-record verdicts with `process_each`, the dead-letter queue, and
//! replaying dead letters once the bug that sent them there is fixed (what
//! `durq dlq list` and `durq dlq replay` do from the command line).
//!
//! Each record gets a `Verdict`:
//! - `Done`: processed, commit it;
//! - `Retry(pause)`: not now (a dependency is down): the records before it
//!   are committed, and this one comes again after the pause;
//! - `DeadLetter(reason)`: never (the record itself is bad): it goes to the
//!   group's dead-letter queue with the reason, durably, before the group
//!   moves past it. Nothing is dropped without a trace.
//!
//! A record that is retried `max_deliveries` times goes to the dead-letter
//! queue by itself, so one poison record cannot block its partition.
//!
//! Run: `cargo run --release --example dead_letters`

use std::time::Duration;

use durq::{Consumer, ConsumerOptions, Message, Queue, Verdict};

const GROUP: &str = "red-packet";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let queue = Queue::open(work.path().join("orders"))?;
    queue.producer().send_batch([
        "order 1: alice 100",
        "order 2: bob one hundred", // malformed amount: a bad record
        "order 3: carol 66",        // the wallet service fails once for carol
        "order 4: mallory 88",      // and for mallory until it is fixed
        "order 5: dave 50",
    ])?;

    // Three deliveries before giving up on a record, and no pause between
    // retries, so the example runs at once (the defaults: 16 deliveries,
    // backoff from 1 s to 30 min).
    let options = ConsumerOptions::default().max_deliveries(3).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = queue.consumer_with(GROUP, options)?;

    println!("-- first pass: the amount parser cannot read words, the wallet service fails");
    drain(&queue, &mut consumer, |m| grant(m, false))?;

    // What is in the dead-letter queue, and why (`durq dlq list`).
    for letter in queue.dead_letters(GROUP, 100)? {
        println!(
            "dead letter {}: {:?} from partition {} offset {}, after {} deliveries: {}",
            letter.dlq_offset,
            String::from_utf8_lossy(&letter.payload),
            letter.original.partition,
            letter.original.offset,
            letter.deliveries,
            letter.reason
        );
    }

    // The parser and the wallet service are fixed: send the dead
    // letters back into the queue (`durq dlq replay`). Each is re-sent
    // durably, with its key, before it leaves the dead-letter queue; it is
    // a new record, at a new offset.
    let replayed = queue.replay_dead_letters(GROUP)?;
    println!("-- replayed {replayed} dead letters; second pass, with both fixed");
    drain(&queue, &mut consumer, |m| grant(m, true))?;
    println!("dead letters left: {}", queue.dead_letters(GROUP, 100)?.len());
    Ok(())
}

/// Processes records until the group has passed every record sent so far.
/// A call that only asked for a retry commits nothing and returns 0, so
/// "0" does not mean "drained": the group's position says. It gets there,
/// since a record retried `max_deliveries` times becomes a dead letter.
fn drain(queue: &Queue, consumer: &mut Consumer, mut verdict: impl FnMut(&Message<'_>) -> Verdict) -> durq::Result<()> {
    let end: Vec<u64> =
        (0..queue.config().partitions).map(|p| queue.offsets(p).map(|(_, next)| next)).collect::<durq::Result<_>>()?;
    while consumer.committed()? != end {
        consumer.process_each(Duration::from_millis(200), &mut verdict)?;
    }
    Ok(())
}

/// The red-packet service's verdict on one order.
fn grant(m: &Message<'_>, fixed: bool) -> Verdict {
    let order = String::from_utf8_lossy(m.payload());
    // The wallet service is down for carol on her order's first delivery,
    // and for mallory until it is fixed (then mallory's order is retried
    // until `max_deliveries`, and becomes a dead letter).
    let wallet_down = (order.contains("carol") && m.delivery_count() == 1) || (order.contains("mallory") && !fixed);
    let verdict = if order.contains("one hundred") && !fixed {
        Verdict::DeadLetter("amount is not a number".into())
    } else if wallet_down {
        Verdict::Retry(None) // after the backoff schedule's pause
    } else {
        Verdict::Done
    };
    println!("{order:?} (delivery {}): {verdict:?}", m.delivery_count());
    verdict
}

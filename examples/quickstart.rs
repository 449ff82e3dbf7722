//! A producer and a consumer in one file: the smallest whole use of durq.
//!
//! The order service sends three orders; the red-packet service, a consumer
//! group, grants one red packet per order. The group's position moves only
//! after the `process` closure returned `Ok`, so an order whose red packet
//! was not granted (an error, a panic, a crash) comes again.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Duration;

use durq::{Options, Queue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A queue is a directory. This one lives in a temporary directory, so
    // the example leaves nothing behind; a real one has a fixed path and
    // outlives the process.
    let work = tempfile::tempdir()?;
    let queue = Queue::open_with(work.path().join("orders"), Options::default().partitions(2))?;

    // Under the default durability (`Sync`), `send` returns only once the
    // record is on stable storage: an acknowledged order survives a crash
    // and a power cut. The position says where it went.
    let producer = queue.producer();
    for order in ["order 1: 100 yuan", "order 2: 88 yuan", "order 3: 66 yuan"] {
        let position = producer.send(order)?;
        println!("sent {order:?} to partition {} at offset {}", position.partition, position.offset);
    }

    // A consumer joins the group "red-packet"; the group remembers how far
    // it got, across restarts. `process_timeout` waits at most the timeout
    // for records and returns 0 when none came: the loop ends once the
    // queue is drained.
    let mut red_packets = queue.consumer("red-packet")?;
    let mut granted = 0;
    loop {
        let n = red_packets.process_timeout(Duration::from_millis(200), |batch| {
            for m in batch {
                println!("granted a red packet for {:?}", String::from_utf8_lossy(m.payload()));
            }
            // Only now, after the work, is the batch committed (durably).
            Ok::<(), std::io::Error>(())
        })?;
        if n == 0 {
            break;
        }
        granted += n;
    }
    println!("granted {granted} red packets; the group's position per partition: {:?}", red_packets.committed()?);
    Ok(())
}

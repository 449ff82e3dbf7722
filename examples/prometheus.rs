//! durq's metrics in Prometheus: installs `metrics-exporter-prometheus` with
//! its HTTP listener on a loopback port, sends and consumes a few thousand
//! messages, scrapes its own `/metrics` endpoint once, prints the `durq_*`
//! lines and exits 0.
//!
//! ```sh
//! cargo run --release --example prometheus --features metrics
//! ```
//!
//! Every metric is listed in docs/OBSERVABILITY.md. The recorder is
//! installed before the queue is opened: the queue registers its
//! queue-wide metrics when it opens.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Options, Queue};
use metrics_exporter_prometheus::PrometheusBuilder;

const MESSAGES: usize = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    PrometheusBuilder::new().with_http_listener(address).install()?;

    let dir = tempfile::tempdir()?;
    // `Interval`: a few thousand sends in well under a second, synced in
    // the background; the commits below make what they pass durable first.
    let options = Options::default().partitions(2).durability(Durability::Interval(Duration::from_millis(5)));
    let queue = Queue::open_with(dir.path().join("orders"), options)?;
    let producer = queue.producer();
    for i in 0..MESSAGES {
        producer.send_keyed(format!("user-{}", i % 10), format!("order {i}"))?;
    }
    producer.flush()?;

    let mut consumer = queue.consumer_with("billing", ConsumerOptions::default().max_batch(256))?;
    let mut consumed = 0;
    while consumed < MESSAGES {
        consumed += consumer.process_timeout(Duration::from_secs(5), |batch| {
            // The work: here, nothing. The checkpoint moves after `Ok`.
            let _ = batch.len();
            Ok::<(), std::io::Error>(())
        })?;
    }

    let page = scrape(address)?;
    let lines: Vec<&str> = page.lines().filter(|l| l.starts_with("durq_")).collect();
    for line in &lines {
        println!("{line}");
    }
    let stats = queue.stats();
    println!("# Queue::stats(): {stats:?}");
    if lines.is_empty() || stats.messages_consumed != MESSAGES as u64 {
        return Err(format!("expected durq_* metrics and {MESSAGES} consumed, scraped:\n{page}").into());
    }
    Ok(())
}

/// A loopback port nothing listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// `GET /metrics` from the exporter at `address`, waiting for its listener
/// (started on a thread of its own) to come up.
fn scrape(address: SocketAddr) -> Result<String, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("the exporter at {address} did not come up: {e}").into()),
        }
    };
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("scrape failed: {head}").into());
    }
    Ok(body.to_owned())
}

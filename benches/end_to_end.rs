//! End-to-end latency: from `send` returning in one process to the
//! consumer's closure seeing the message in another, with the consumer
//! blocked (not spinning) between messages. Prints p50/p99/p99.9 for
//! `Buffered` and `Sync`.
//!
//! Run: `cargo bench --bench end_to_end`. `DURQ_E2E_MESSAGES` sets the count
//! (default 2,000 per mode, one every 500 µs). Both processes read
//! CLOCK_MONOTONIC, one clock for the whole host. A message carries the
//! instant just before its `send`; the consumer reports the time from then
//! to its closure, and the producer subtracts the send's own duration, which
//! it measured.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use durq::{ConsumerOptions, Durability, Options, Queue};

const ROLE: &str = "DURQ_E2E_ROLE";

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the local `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var(ROLE).is_ok() {
        consume(&args[args.len() - 2], args[args.len() - 1].parse().expect("count"));
        return;
    }
    let count: usize = std::env::var("DURQ_E2E_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "durability", "messages", "p50 us", "p99 us", "p99.9 us", "max us"
    );
    for (name, durability) in [("buffered", Durability::Buffered), ("sync", Durability::Sync)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let queue = Queue::open_with(&path, Options::default().durability(durability)).expect("open");
        drop(queue.consumer("e2e").expect("register the group"));
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg(path.to_str().expect("utf-8 path"))
            .arg(count.to_string())
            .env(ROLE, "consumer")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn consumer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().expect("ready").expect("read"), "ready");
        let producer = queue.producer();
        let mut send_ns = Vec::with_capacity(count);
        for _ in 0..count {
            std::thread::sleep(Duration::from_micros(500));
            let before = monotonic_ns();
            producer.send(before.to_le_bytes()).expect("send");
            send_ns.push(monotonic_ns() - before);
        }
        // The consumer reports, per message, the time from before `send`
        // to its closure; subtract the send's own duration.
        let mut latencies: Vec<u64> = lines
            .take(count)
            .map(|l| l.expect("read").parse::<u64>().expect("latency"))
            .zip(&send_ns)
            .map(|(total, send)| total.saturating_sub(*send))
            .collect();
        child.wait().expect("consumer exit");
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0;
        println!(
            "{name:<10} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            latencies.len(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            *latencies.last().expect("some") as f64 / 1000.0
        );
    }
}

fn consume(path: &str, count: usize) {
    let queue = Queue::open_existing(path).expect("open");
    let mut consumer = queue.consumer_with("e2e", ConsumerOptions::default().max_batch(1)).expect("join");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").expect("write");
    out.flush().expect("flush");
    let mut seen = 0;
    while seen < count {
        seen += consumer
            .process(|batch| {
                let now = monotonic_ns();
                let sent = u64::from_le_bytes(batch[0].payload().try_into().expect("8 bytes"));
                writeln!(out, "{}", now - sent)
            })
            .expect("process");
    }
    out.flush().expect("flush");
}

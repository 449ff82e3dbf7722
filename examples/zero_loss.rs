//! The zero-loss demo: the seed article's red-packet scenario in miniature.
//!
//! An order service produces orders into a durq queue; a red-packet service,
//! running as a separate process, grants one red packet per order and writes
//! it to a ledger file. In the middle of a batch the red-packet process is
//! killed with SIGKILL, the way an OOM killer or a power switch would do it,
//! and then started again. The final audit compares what was sent with what
//! the ledger shows: every order must have its red packet (lost = 0). Orders
//! of the batch that was in flight at the kill are granted twice
//! (redelivered), which is what at-least-once means; a real service dedupes
//! them by order id.
//!
//! Run: `cargo run --release --example zero_loss [-- ORDERS]`

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Options, Queue};

const GROUP: &str = "red-packet";
const BATCH: usize = 100;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("red-packet-service") => red_packet_service(Path::new(&args[2]), Path::new(&args[3])),
        other => {
            let orders = other.and_then(|n| n.parse().ok()).unwrap_or(20_000);
            match run_demo(orders) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("zero_loss: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_demo(orders: u64) -> Result<bool, Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let queue_dir = work.path().join("orders");
    let ledger = work.path().join("red-packets.ledger");
    let queue = Queue::open_with(&queue_dir, Options::default().durability(Durability::Sync))?;

    println!("order service: producing {orders} orders (each acknowledged only once durable)");
    let producer = queue.producer();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut service = start_service(&queue_dir, &ledger)?;
    // Produce in batches of 100 orders, one fdatasync per batch.
    for chunk_start in (0..orders).step_by(BATCH) {
        let chunk: Vec<String> =
            (chunk_start..(chunk_start + BATCH as u64).min(orders)).map(|id| format!("order-{id:08} 88.88")).collect();
        sent += producer.send_batch(&chunk)?.len() as u64;
    }
    println!("order service: {sent} orders acknowledged in {:.2?}", started.elapsed());

    // Kill the red-packet service mid-batch once it is about a third through.
    wait_for_ledger_lines(&ledger, orders / 3)?;
    service.kill()?; // SIGKILL: no destructor, no flush, no goodbye
    service.wait()?;
    let at_kill = count_lines(&ledger)?;
    println!("chaos: red-packet service SIGKILLed after {at_kill} ledger lines");

    println!("red-packet service: restarting; it resumes from its last checkpoint");
    let restarted = Instant::now();
    let mut service = start_service(&queue_dir, &ledger)?;
    let status = service.wait()?;
    if !status.success() {
        return Err(format!("restarted red-packet service failed: {status}").into());
    }
    println!("red-packet service: drained the queue in {:.2?}", restarted.elapsed());

    audit(sent, &ledger)
}

fn start_service(queue_dir: &Path, ledger: &Path) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?).arg("red-packet-service").arg(queue_dir).arg(ledger).spawn()
}

/// The red-packet service: grants one red packet per order, writing it to
/// the ledger inside `process`. The checkpoint moves only after the closure
/// returns, so a kill at any point redelivers the unfinished batch.
fn red_packet_service(queue_dir: &Path, ledger: &Path) -> ExitCode {
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let queue = Queue::open_existing(queue_dir)?;
        let mut consumer = queue.consumer_with(GROUP, ConsumerOptions::default().max_batch(BATCH))?;
        let mut ledger = OpenOptions::new().create(true).append(true).open(ledger)?;
        loop {
            let n = consumer.process_timeout(Duration::from_millis(500), |orders| {
                for order in orders {
                    let order = std::str::from_utf8(order.payload()).map_err(std::io::Error::other)?;
                    // Granting takes a little while; the kill lands mid-batch.
                    std::thread::sleep(Duration::from_micros(20));
                    writeln!(ledger, "{order}")?;
                }
                ledger.flush()
            })?;
            if n == 0 {
                return Ok(());
            }
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("red-packet service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn audit(sent: u64, ledger: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(ledger)?;
    let mut grants: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let order = line.split(' ').next().unwrap_or(line);
        *grants.entry(order).or_default() += 1;
    }
    let processed = grants.len() as u64;
    let redelivered: u64 = grants.values().map(|&n| n - 1).sum();
    let unknown = grants.keys().filter(|k| !is_sent(k, sent)).count();
    let lost = sent.saturating_sub(processed - unknown as u64);
    println!();
    println!("audit");
    println!("  sent (acknowledged)     {sent:>8}");
    println!("  processed (distinct)    {processed:>8}");
    println!("  redelivered (in flight) {redelivered:>8}");
    println!("  never sent              {unknown:>8}");
    println!("  lost                    {lost:>8}");
    let ok = lost == 0 && unknown == 0 && redelivered <= BATCH as u64;
    println!("{}", if ok { "ZERO LOSS: every acknowledged order got its red packet" } else { "FAILED" });
    Ok(ok)
}

fn is_sent(order: &str, sent: u64) -> bool {
    order.strip_prefix("order-").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n < sent)
}

fn wait_for_ledger_lines(ledger: &Path, lines: u64) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_lines(ledger)? < lines {
        if Instant::now() > deadline {
            return Err("the red-packet service made no progress".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.iter().filter(|&&b| b == b'\n').count() as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

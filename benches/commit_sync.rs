//! One durable commit per message (W7's shape), beside the bare I/O it must
//! do, interleaved so that both see the same disk.
//!
//! The comparison program runs W7's durq cell and its bare-I/O row one
//! after the other, seconds apart; on a shared disk whose sync rate moves
//! several-fold from one minute to the next, their ratio said more about
//! the disk than about durq. Here the two alternate in rounds of
//! `DURQ_COMMIT_ROUND` messages (default 500), for `DURQ_COMMIT_ROUNDS`
//! rounds (default 10; 2 when run without `--bench`, as
//! `cargo test --benches` does):
//!
//! - **durq**: `process` with `max_batch(1)` and the default
//!   `commit(Sync)`, on a `Sync` queue of 100-byte records: per message a
//!   read, a delivery mark (a store), the closure, and the commit (a store
//!   into the checkpoint's first page, an msync of it, two `statx` for the
//!   fencing check).
//! - **bare**: per message a `pread` of 100 bytes and an 8-byte cursor
//!   `pwrite` + `fdatasync` to a small file: the W7 bare-I/O row.
//!
//! Each side goes first every other round.
//!
//! It prints each pair's rates and durq's share, and the median share.
//! Run: `cargo bench --bench commit_sync`; the files live in the temp
//! directory (`TMPDIR`). With `strace -f -w -c` or `perf trace -s` around
//! it, the system calls of each side can be counted and timed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, Queue};

const ROUND_ENV: &str = "DURQ_COMMIT_ROUND";
const ROUNDS_ENV: &str = "DURQ_COMMIT_ROUNDS";
const PAYLOAD_BYTES: usize = 100;

fn count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(n) => n.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("{var}={n:?}: not a count")),
        Err(_) => default,
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let round = count(ROUND_ENV, 500);
    let rounds = count(ROUNDS_ENV, if benching { 10 } else { 2 });
    let dir = tempfile::tempdir().expect("a temp directory");
    let total = round * rounds;
    let queue = Queue::open_with(dir.path().join("q"), Options::default().partitions(1)).expect("open the queue");
    let payload = [7u8; PAYLOAD_BYTES];
    let producer = queue.producer();
    for chunk in 0..total.div_ceil(1000) {
        let n = 1000.min(total - chunk * 1000);
        producer.send_batch((0..n).map(|_| payload)).expect("preload");
    }
    let mut consumer = queue.consumer_with("bench", ConsumerOptions::default().max_batch(1)).expect("join the group");
    let bare = Bare::new(dir.path(), total);

    println!("one durable commit per message, {rounds} rounds of {round}, in {}", std::env::temp_dir().display());
    println!();
    println!("{:>5} {:>12} {:>12} {:>8}", "round", "durq msg/s", "bare msg/s", "durq/bare");
    let mut shares = Vec::with_capacity(rounds);
    let (mut durq_total, mut bare_total) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        let mut durq_round = || {
            let start = Instant::now();
            for _ in 0..round {
                let n = consumer
                    .process(|batch| {
                        assert_eq!(batch.len(), 1);
                        Ok::<(), std::io::Error>(())
                    })
                    .expect("process");
                assert_eq!(n, 1);
            }
            start.elapsed()
        };
        let bare_round = || {
            let start = Instant::now();
            for i in 0..round {
                bare.consume(r * round + i);
            }
            start.elapsed()
        };
        // Each goes first every other round: neither always follows the
        // other's writeback.
        let (durq_took, bare_took) = if r % 2 == 0 {
            let d = durq_round();
            (d, bare_round())
        } else {
            let b = bare_round();
            (durq_round(), b)
        };
        durq_total += durq_took;
        bare_total += bare_took;
        let durq = round as f64 / durq_took.as_secs_f64();
        let bare_rate = round as f64 / bare_took.as_secs_f64();
        shares.push(durq / bare_rate);
        println!("{r:>5} {durq:>12.0} {bare_rate:>12.0} {:>8.2}", durq / bare_rate);
    }
    shares.sort_by(f64::total_cmp);
    println!();
    println!("median durq/bare: {:.2} (min {:.2}, max {:.2})", shares[rounds / 2], shares[0], shares[rounds - 1]);
    let each = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    println!(
        "in all: durq {:.3} s ({:.0} µs a message), bare {:.3} s ({:.0} µs a message): durq/bare {:.2}",
        durq_total.as_secs_f64(),
        each(durq_total),
        bare_total.as_secs_f64(),
        each(bare_total),
        bare_total.as_secs_f64() / durq_total.as_secs_f64()
    );
}

/// The bare-I/O reference: records in a file, a cursor in another.
struct Bare {
    log: File,
    cursor: File,
}

impl Bare {
    fn new(dir: &Path, records: usize) -> Bare {
        let log = OpenOptions::new().read(true).write(true).create_new(true).open(dir.join("bare.log")).expect("log");
        log.write_all_at(&vec![7u8; records * PAYLOAD_BYTES], 0).expect("fill the log");
        log.sync_all().expect("sync the log");
        let cursor = OpenOptions::new().write(true).create_new(true).open(dir.join("bare.cursor")).expect("cursor");
        cursor.write_all_at(&0u64.to_le_bytes(), 0).expect("cursor");
        cursor.sync_all().expect("sync the cursor");
        Bare { log, cursor }
    }

    /// Reads record `i` and durably moves the cursor past it.
    fn consume(&self, i: usize) {
        let mut record = [0u8; PAYLOAD_BYTES];
        self.log.read_exact_at(&mut record, (i * PAYLOAD_BYTES) as u64).expect("read");
        self.cursor.write_all_at(&(i as u64 + 1).to_le_bytes(), 0).expect("cursor");
        self.cursor.sync_data().expect("fdatasync");
    }
}

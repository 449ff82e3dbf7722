//! Takeover latency: from the SIGKILL of a slot's holder to the first message
//! processed by a standby member of the same group.
//!
//! Each trial uses a fresh one-partition `Sync` queue holding four messages.
//! A holder process (this binary, run again with `DURQ_TAKEOVER_ROLE=holder`)
//! joins group `g`, processes and commits messages 0 and 1, then takes the
//! batch [2, 3] and sleeps inside `process` forever: it dies mid-batch. A
//! standby `Consumer` joins `g` on a thread of this process (it gets no slot:
//! the holder is alive and keeps its own) and waits in `process`. After a
//! random pause of up to two rebalance intervals, this process takes T0 and
//! SIGKILLs the holder; the standby's closure takes T1 when it first sees a
//! message, which must be message 2, redelivered. The latency is T1 − T0: the
//! kernel releasing the dead holder's locks, the standby's next membership
//! check (every `rebalance_interval`), taking the slot (claim file,
//! checkpoint copy with an fdatasync and a directory fsync, the lease
//! written), and reading the batch. Beside it, the `take's syncs` column
//! times the same two syncs done by hand in the same directory just before
//! each trial (create + write + fdatasync a file, fsync the directory): the
//! disk's share under the load of the moment.
//!
//! Run: `cargo bench --bench takeover`. `DURQ_TAKEOVER_TRIALS=N` sets the
//! trials per row (default 50; 3 when run without `--bench`, as
//! `cargo test --benches` does). `DURQ_TAKEOVER_LOAD=N` loads the machine
//! while it runs: N threads of this process send 100-byte records to
//! queues of their own in the same temp directory, each send durable
//! (`Sync`) before the next, so the take's syncs queue behind theirs and
//! the standby competes with them for the cores. The queues live in the
//! temp directory (`TMPDIR`): put it on the disk you want to measure.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durq::internals::group::checkpoint;
use durq::{ConsumerOptions, Durability, Options, Queue};

const ROLE_ENV: &str = "DURQ_TAKEOVER_ROLE";
const QUEUE_ENV: &str = "DURQ_TAKEOVER_QUEUE";
const TRIALS_ENV: &str = "DURQ_TAKEOVER_TRIALS";
const LOAD_ENV: &str = "DURQ_TAKEOVER_LOAD";
const GROUP: &str = "g";
/// The offset of the first message of the batch the holder dies in.
const IN_FLIGHT: u64 = 2;

type Failure = Box<dyn std::error::Error>;

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("holder") {
        holder();
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let benching = std::env::args().any(|a| a == "--bench");
    let trials = match std::env::var(TRIALS_ENV) {
        Ok(n) => n.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| panic!("{TRIALS_ENV}={n:?}: not a count")),
        Err(_) if benching => 50,
        Err(_) => 3,
    };
    let writers = match std::env::var(LOAD_ENV) {
        Ok(n) => n.parse().unwrap_or_else(|_| panic!("{LOAD_ENV}={n:?}: not a count")),
        Err(_) => 0,
    };
    let load = Load::start(writers);
    let mut rng = Rng::seeded();
    println!(
        "takeover: SIGKILL of a slot's holder -> first message processed by a standby \
         (1 partition, Sync, queues in {})",
        std::env::temp_dir().display()
    );
    println!("load: {writers} writer thread(s), each sending durable 100 B records to a queue of its own");
    println!();
    println!(
        "{:<22} {:>6} {:>8} {:>8} {:>8} {:>8}   {:>15} {:>15}",
        "rebalance_interval", "trials", "min", "median", "p99", "max", "kill->reaped", "take's syncs"
    );
    let mut odd = Vec::new();
    for (interval, label) in [(Duration::from_millis(20), "20 ms (default)"), (Duration::from_millis(5), "5 ms")] {
        let mut latencies = Vec::with_capacity(trials);
        let mut reaped = Vec::with_capacity(trials);
        let mut syncs = Vec::with_capacity(trials);
        for n in 0..trials {
            match trial(interval, &mut rng) {
                Ok(t) => {
                    if let Some(note) = t.odd {
                        odd.push(format!("{label}, trial {n}: {note}"));
                    }
                    latencies.push(t.latency);
                    reaped.push(t.reaped);
                    syncs.push(t.syncs);
                }
                Err(e) => panic!("{label}, trial {n}: {e}"),
            }
        }
        let s = Stats::of(&mut latencies);
        let r = Stats::of(&mut reaped);
        let y = Stats::of(&mut syncs);
        println!(
            "{label:<22} {trials:>6} {:>8} {:>8} {:>8} {:>8}   {:>15} {:>15}",
            ms(s.min),
            ms(s.median),
            ms(s.p99),
            ms(s.max),
            format!("{} median", ms(r.median)),
            format!("{} median", ms(y.median))
        );
    }
    let (sent, seconds) = load.stop();
    println!();
    if writers > 0 {
        println!("the load sent {sent} durable records in {seconds:.1} s ({:.0}/s)", sent as f64 / seconds);
    }
    println!("times in ms; p99 is nearest-rank, so with fewer than 100 trials it is the max");
    println!("other options: ConsumerOptions::default() (lease_timeout 10 s); holder max_batch 2");
    for note in &odd {
        println!("odd: {note}");
    }
}

/// What one trial measured.
struct Trial {
    /// From just before the SIGKILL to the standby's closure seeing a message.
    latency: Duration,
    /// From just before the SIGKILL to `wait` returning for the holder.
    reaped: Duration,
    /// The three syncs of taking a slot, done by hand just before.
    syncs: Duration,
    /// Anything unexpected about the takeover.
    odd: Option<String>,
}

fn trial(interval: Duration, rng: &mut Rng) -> Result<Trial, Failure> {
    let dir = tempfile::tempdir()?;
    let syncs = take_syncs(dir.path())?;
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, Options::default().partitions(1).durability(Durability::Sync))?;
    queue.producer().send_batch([b"m0", b"m1", b"m2", b"m3"])?;

    let mut holder = Holder::start(&path)?;
    let offset = holder.wait_until_mid_batch()?;
    if offset != IN_FLIGHT {
        return Err(format!("the holder is in a batch from offset {offset}, not {IN_FLIGHT}").into());
    }

    let (ready_tx, ready_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let options = ConsumerOptions::default().rebalance_interval(interval);
    let standby = std::thread::spawn(move || -> durq::Result<()> {
        let mut standby = queue.consumer_with(GROUP, options)?;
        let _ = ready_tx.send(standby.held_partitions());
        standby.process(|batch| {
            let t1 = Instant::now();
            let first = batch[0];
            let _ = seen_tx.send((t1, first.position().offset, first.delivery_count()));
            Ok::<(), std::io::Error>(())
        })?;
        Ok(())
    });
    let held = ready_rx.recv_timeout(Duration::from_secs(30))?;
    if !held.is_empty() {
        return Err(format!("the standby took {held:?} while the holder was alive").into());
    }
    // Let the standby settle into `process`, then kill at a random phase of
    // its membership checks.
    std::thread::sleep(Duration::from_millis(5) + interval.mul_f64(2.0 * rng.unit()));

    let t0 = Instant::now();
    holder.child.kill()?; // SIGKILL
    holder.child.wait()?;
    let reaped = t0.elapsed();
    let (t1, offset, deliveries) = seen_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the standby saw no message within 30 s of the kill")?;
    standby.join().map_err(|_| "the standby panicked")??;

    let odd = (offset != IN_FLIGHT || deliveries < 2).then(|| {
        format!("the standby's first message was offset {offset}, delivery {deliveries} (expected {IN_FLIGHT}, >= 2)")
    });
    Ok(Trial { latency: t1.duration_since(t0), reaped, syncs, odd })
}

/// Times what taking a slot syncs: a new checkpoint file (fdatasync) and
/// its directory entry (fsync).
fn take_syncs(dir: &Path) -> std::io::Result<Duration> {
    let sub = dir.join("syncs");
    std::fs::create_dir(&sub)?;
    std::fs::File::open(&sub)?.sync_all()?;
    let start = Instant::now();
    let ckpt = std::fs::File::create_new(sub.join("1.ckpt"))?;
    ckpt.write_all_at(&[2; checkpoint::FILE_BYTES], 0)?;
    ckpt.sync_data()?;
    std::fs::File::open(&sub)?.sync_all()?;
    Ok(start.elapsed())
}

/// Writer threads that keep the disk and the cores busy while the trials
/// run: each sends 100-byte records to a queue of its own, each send
/// durable before the next.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Load {
    fn start(writers: usize) -> Load {
        let dir = tempfile::tempdir().expect("a temp directory for the load");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..writers)
            .map(|n| {
                let queue = Queue::open_with(dir.path().join(format!("load{n}")), Options::default().partitions(1))
                    .expect("open the load's queue");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let producer = queue.producer();
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        producer.send([7u8; 100]).expect("a load send");
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        Load { stop, threads, started: Instant::now(), _dir: dir }
    }

    /// Stops the writers; what they sent, over how many seconds.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.threads.into_iter().map(|t| t.join().expect("a load writer panicked")).sum();
        (sent, self.started.elapsed().as_secs_f64())
    }
}

/// The holder process. Killed when dropped; exits by itself if this process
/// dies (its stdin closes).
struct Holder {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(queue: &Path) -> Result<Holder, Failure> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "holder")
            .env(QUEUE_ENV, queue)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Holder { child, stdout })
    }

    /// Waits for the holder's "holding <offset>" line: it is inside
    /// `process` with the batch starting at that offset.
    fn wait_until_mid_batch(&mut self) -> Result<u64, Failure> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim()
            .strip_prefix("holding ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("the holder said {line:?} instead of \"holding <offset>\"").into())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The holder's role: commit one batch, then hold the next one forever.
fn holder() -> ! {
    // Never outlive the bench: its end closes our stdin.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(3);
    });
    let path = std::env::var_os(QUEUE_ENV).expect("the bench sets the queue's path");
    let queue = Queue::open_existing(path).expect("open the queue");
    let mut consumer = queue.consumer_with(GROUP, ConsumerOptions::default().max_batch(2)).expect("join the group");
    let n = consumer.process(|_| Ok::<(), std::io::Error>(())).expect("process the first batch");
    assert_eq!(n, 2, "the first batch is messages 0 and 1");
    let _ = consumer.process(|batch| -> Result<(), std::io::Error> {
        println!("holding {}", batch[0].position().offset);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    unreachable!("the holder never returns from its second batch")
}

struct Stats {
    min: Duration,
    median: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Stats { min: samples[0], median: rank(0.5), p99: rank(0.99), max: samples[samples.len() - 1] }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// xorshift64*, enough to spread the kill over the rebalance phase.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

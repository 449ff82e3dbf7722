//! Memory of a producer and of a consumer working through a large queue: the
//! target is that each keeps its private anonymous memory under 64 MiB, and
//! that the segments it has passed do not stay mapped.
//!
//! Phase `produce` opens a fresh queue (default options: one partition,
//! 64 MiB segments) under `Durability::Buffered`, sends DURQ_MEMORY_GB GiB
//! (default 4) of 1 KiB payloads one `send` at a time, calls `flush` once at
//! the end, and drops the handle. Phase `consume` opens the queue again and
//! processes everything with a consumer group (`process`, batches of up to
//! 1,000, a durable checkpoint per batch), checking that every offset comes
//! once and in order. Each phase has its own queue handle.
//!
//! A sampler thread reads `/proc/self/smaps_rollup` (`Anonymous`,
//! `Private_Dirty`, `Rss`), the segment files' lines in `/proc/self/maps`,
//! and the system's `Dirty` from `/proc/meminfo` every 20 ms; a phase reports
//! the peaks, the segment mappings still held when its work is done (handle
//! still open), and the elapsed time. `Anonymous` is the target: the pages of
//! a shared file mapping are page cache and count in `Rss` (and, while
//! dirty and mapped only here, in `Private_Dirty`), not in `Anonymous`.
//!
//! Every roll msyncs the sealed segment in full, so under `Buffered` the
//! dirty page cache stays around one segment, and the queue directory
//! (under the system temp dir) is removed at the end, which frees its page
//! cache.
//!
//! Run: `DURQ_MEMORY_GB=1 cargo bench --bench memory` (fractions such as
//! 0.25 work; default 4). Needs about that much free disk and page cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Options, Queue};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const PAYLOAD_BYTES: usize = 1024;
const MAX_BATCH: usize = 1000;
/// The target for private anonymous memory, per handle.
const ANONYMOUS_TARGET_BYTES: u64 = 64 * MIB;
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One reading of the process's memory.
#[derive(Default, Clone, Copy)]
struct Sample {
    anonymous: u64,
    private_dirty: u64,
    rss: u64,
    segment_maps: u64,
    segment_map_bytes: u64,
    system_dirty: u64,
}

/// `Name:   1234 kB` lines of a /proc file, in bytes.
fn kb_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Count and total size of this process's mappings of segment files under
/// `queue_dir` (removed files included: they still hold their pages).
fn segment_maps(queue_dir: &Path) -> (u64, u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let prefix = queue_dir.to_str().expect("utf-8 path");
    let mut count = 0;
    let mut bytes = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap_or("");
        let path = fields.nth(4).unwrap_or("");
        if path.starts_with(prefix) && path.ends_with(".seg") {
            let (start, end) = range.split_once('-').expect("address range");
            count += 1;
            bytes += u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap();
        }
    }
    (count, bytes)
}

fn sample(queue_dir: &Path) -> Sample {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (segment_maps, segment_map_bytes) = segment_maps(queue_dir);
    Sample {
        anonymous: kb_field(&rollup, "Anonymous"),
        private_dirty: kb_field(&rollup, "Private_Dirty"),
        rss: kb_field(&rollup, "Rss"),
        segment_maps,
        segment_map_bytes,
        system_dirty: kb_field(&meminfo, "Dirty"),
    }
}

impl Sample {
    fn max(self, o: Sample) -> Sample {
        Sample {
            anonymous: self.anonymous.max(o.anonymous),
            private_dirty: self.private_dirty.max(o.private_dirty),
            rss: self.rss.max(o.rss),
            segment_maps: self.segment_maps.max(o.segment_maps),
            segment_map_bytes: self.segment_map_bytes.max(o.segment_map_bytes),
            system_dirty: self.system_dirty.max(o.system_dirty),
        }
    }
}

/// The peaks of the current phase. A sample counts only for the phase in
/// which it was started, so a slow reading cannot leak into the next one.
#[derive(Default)]
struct Peaks {
    /// The phase number and its peaks so far.
    state: Mutex<(u64, Sample)>,
}

impl Peaks {
    /// Takes a sample and raises the peaks with it.
    fn sample(&self, dir: &Path) -> Sample {
        let phase = self.state.lock().unwrap().0;
        let s = sample(dir);
        let mut state = self.state.lock().unwrap();
        if state.0 == phase {
            state.1 = state.1.max(s);
        }
        s
    }

    /// The peaks of the phase that ends, and a fresh start for the next.
    fn next_phase(&self) -> Sample {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        std::mem::take(&mut state.1)
    }
}

/// One row of the table.
struct Phase {
    name: &'static str,
    elapsed: Duration,
    messages: u64,
    before: Sample,
    peak: Sample,
    /// When the work was done, the handle still open.
    end: Sample,
}

/// Runs `work` as one phase. `work` returns the number of messages and its
/// end sample, taken (through `peaks`) before it drops its queue handle.
fn phase(name: &'static str, dir: &Path, peaks: &Peaks, work: impl FnOnce() -> (Sample, u64)) -> Phase {
    peaks.next_phase();
    let before = peaks.sample(dir);
    let start = Instant::now();
    let (end, messages) = work();
    let elapsed = start.elapsed();
    let peak = peaks.next_phase();
    Phase { name, elapsed, messages, before, peak, end }
}

fn produce(dir: &Path, messages: u64, options: Options, peaks: &Peaks) -> (Sample, u64) {
    let queue = Queue::open_with(dir, options).expect("create queue");
    let producer = queue.producer();
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    for i in 0..messages {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        producer.send(&payload).expect("send");
        if i % 65_536 == 0 {
            // Between sampler ticks too, so a short peak is not missed.
            peaks.sample(dir);
        }
    }
    producer.flush().expect("flush");
    (peaks.sample(dir), messages)
}

fn consume(dir: &Path, messages: u64, peaks: &Peaks) -> (Sample, u64) {
    let queue = Queue::open_existing(dir).expect("open queue");
    let mut consumer = queue.consumer_with("memory", ConsumerOptions::default().max_batch(MAX_BATCH)).expect("join");
    let mut next = 0u64;
    while next < messages {
        let n = consumer
            .process_timeout(Duration::from_secs(10), |batch| {
                for m in batch {
                    assert_eq!(m.position().offset, next, "offsets come once, in order");
                    assert_eq!(m.payload()[..8], next.to_le_bytes(), "payload of offset {next}");
                    assert_eq!(m.payload().len(), PAYLOAD_BYTES);
                    next += 1;
                }
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
        assert!(n > 0, "no record within 10 s at offset {next} of {messages}");
        if next % 65_536 < n as u64 {
            peaks.sample(dir);
        }
    }
    (peaks.sample(dir), next)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let gib: f64 = std::env::var("DURQ_MEMORY_GB").ok().and_then(|v| v.parse().ok()).unwrap_or(4.0);
    // Default options but the durability: 64 MiB segments, 1 MiB records.
    let mut options = Options::default().durability(Durability::Buffered);
    let (mut total_bytes, mut segment_bytes) = ((gib * GIB as f64) as u64, 64 * MIB);
    if !benching {
        // `cargo test --benches` only checks that everything runs: 8 MiB in
        // 1 MiB segments, so it still rolls.
        (total_bytes, segment_bytes) = (8 * MIB, MIB);
        options = options.segment_bytes(segment_bytes).record_bytes_max(64 << 10);
    }
    let messages = total_bytes / PAYLOAD_BYTES as u64;

    let tmp = tempfile::Builder::new().prefix("durq-memory-").tempdir_in(std::env::temp_dir()).expect("temp dir");
    let dir: PathBuf = tmp.path().join("q");
    let peaks = Arc::new(Peaks::default());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, done, dir) = (peaks.clone(), done.clone(), dir.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peaks.sample(&dir);
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };

    println!(
        "{messages} messages of {PAYLOAD_BYTES} B ({} MiB of payload), {} MiB segments, Buffered, in {}",
        mib(total_bytes),
        mib(segment_bytes),
        dir.display()
    );
    let produced = phase("produce", &dir, &peaks, || produce(&dir, messages, options, &peaks));
    let consumed = phase("consume", &dir, &peaks, || consume(&dir, messages, &peaks));
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    tmp.close().expect("remove the queue directory");

    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "phase",
        "elapsed s",
        "msgs/s",
        "MiB/s",
        "anon MiB",
        "anon peak",
        "pdirty pk",
        "rss peak",
        "maps peak",
        "maps at end",
        "dirty pk"
    );
    for p in [&produced, &consumed] {
        let secs = p.elapsed.as_secs_f64();
        println!(
            "{:<8} {:>9.2} {:>10.0} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
            p.name,
            secs,
            p.messages as f64 / secs,
            (p.messages * PAYLOAD_BYTES as u64) as f64 / MIB as f64 / secs,
            mib(p.before.anonymous),
            mib(p.peak.anonymous),
            mib(p.peak.private_dirty),
            mib(p.peak.rss),
            p.peak.segment_maps,
            format!("{} ({} MiB)", p.end.segment_maps, mib(p.end.segment_map_bytes)),
            mib(p.peak.system_dirty),
        );
    }
    println!(
        "anon MiB: Anonymous before the phase; anon/pdirty/rss peak: smaps_rollup Anonymous, Private_Dirty, Rss \
         (MiB); maps: segment mappings held; dirty pk: the system's Dirty (MiB, other processes included)"
    );
    let worst = produced.peak.anonymous.max(consumed.peak.anonymous);
    let verdict = if worst < ANONYMOUS_TARGET_BYTES { "PASS" } else { "FAIL" };
    println!(
        "verdict: {verdict}: peak private anonymous memory {} MiB against a target of {} MiB",
        mib(worst),
        mib(ANONYMOUS_TARGET_BYTES)
    );
}

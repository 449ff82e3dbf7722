//! What every system is measured on: the workloads, the outcome of one
//! measurement, and small helpers shared by the peers.

use std::path::Path;
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// How a workload makes its messages durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Append every message, then one sync at the end (W1, W5).
    SyncAtEnd,
    /// Each message durable before the next is sent (W2).
    EachDurable,
    /// Batches of this many messages, one sync per batch (W3).
    Batches(usize),
    /// Consume a preloaded queue with a durable commit every `batch` messages
    /// (W4: 1,000; W7: 1).
    Consume { batch: usize },
    /// This many threads, each send durable before it returns (W6).
    Concurrent { threads: usize },
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub id: &'static str,
    pub title: String,
    pub kind: Kind,
    /// Total messages (for `Concurrent`, over all threads).
    pub messages: u64,
    pub payload: usize,
    /// A cell stops sending after this long and reports the rate over what
    /// it did; the table says so. `SyncAtEnd` still pays its final sync.
    pub cap: Duration,
}

/// `1234567.8` → `1,234,568`; small numbers keep a decimal.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// How often a consumer commits, for the notes: "per message", "per 1,000".
pub fn per_commit(batch: usize) -> String {
    if batch == 1 { "per message".to_owned() } else { format!("per {}", thousands(batch as f64)) }
}

/// One measurement of one system on one workload.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done {
        messages: u64,
        secs: f64,
        /// How the system was driven, when it is not obvious.
        note: Option<String>,
        /// The system cannot make this workload durable; the row is shown
        /// for what it is and never counted as the fastest.
        not_durable: bool,
    },
    /// The system cannot do this workload honestly; the reason goes in the table.
    Skip(String),
}

impl Outcome {
    pub fn done(messages: u64, start: Instant) -> Outcome {
        Outcome::Done { messages, secs: start.elapsed().as_secs_f64(), note: None, not_durable: false }
    }

    pub fn with_note(self, text: &str) -> Outcome {
        match self {
            Outcome::Done { messages, secs, not_durable, .. } => {
                Outcome::Done { messages, secs, note: Some(text.to_owned()), not_durable }
            }
            skip => skip,
        }
    }

    pub fn not_durable(self) -> Outcome {
        match self {
            Outcome::Done { messages, secs, note, .. } => Outcome::Done { messages, secs, note, not_durable: true },
            skip => skip,
        }
    }
}

/// A system under test.
pub trait System: Sync {
    fn name(&self) -> String;
    /// Runs one repetition of `w` in the empty directory `dir`. Setup (opening,
    /// preloading for `Consume`) is not timed; the sends or reads and their
    /// syncs are.
    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome>;
}

/// Payload bytes that no engine can compress: a fixed pseudo-random buffer;
/// [`stamp`] writes the message number into its first 8 bytes.
pub fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn stamp(buf: &mut [u8], i: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&i.to_le_bytes()[..n]);
}

/// Time budget of one cell.
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    pub fn new(cap: Duration) -> Deadline {
        Deadline { end: Instant::now() + cap }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Splits `total` messages over `threads` senders.
pub fn per_thread(total: u64, threads: usize) -> u64 {
    total.div_ceil(threads as u64)
}

/// Runs `threads` senders at once: `setup(t)` builds each one's handle
/// before the clock starts, then every thread calls `send(handle, t, i)` for
/// its `i` in `0..each` until done or `cap` has passed. Returns the messages
/// sent and the time from the common start until the last thread finished.
pub fn concurrent<S: Send>(
    threads: usize,
    each: u64,
    cap: Duration,
    mut setup: impl FnMut(usize) -> Result<S>,
    send: impl Fn(&mut S, usize, u64) -> Result<()> + Sync,
) -> Result<Outcome> {
    let handles = (0..threads).map(&mut setup).collect::<Result<Vec<S>>>()?;
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(t, mut h)| {
                let (barrier, send) = (&barrier, &send);
                s.spawn(move || -> Result<u64> {
                    barrier.wait();
                    let deadline = Deadline::new(cap);
                    let mut n = 0;
                    while n < each && !deadline.passed() {
                        send(&mut h, t, n)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut total = 0;
        let mut first_error = None;
        for j in joins {
            match j.join().expect("a sender thread panicked") {
                Ok(n) => total += n,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Outcome::done(total, start)),
        }
    })
}

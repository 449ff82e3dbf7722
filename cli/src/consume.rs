//! `durq consume`: payloads out, one per line, committed only once written.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Durability, Message};

use crate::backend::{self, Backend, Member, OnQueue};
use crate::record_line::{Format, RecordLine};
use crate::target::Target;
use crate::{CliResult, report, stream_error};

/// Longest wait for records before checking for a stop signal or idleness.
const POLL: Duration = Duration::from_millis(100);
/// Bytes of output gathered before a write; each batch is flushed whole.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Print each message's payload followed by a newline (or, with `--format
/// json`, one JSON object), as a member of a consumer group. A batch is committed only after its output was flushed;
/// SIGINT and SIGTERM finish the current batch, then exit 0. A closed stdout
/// (`| head -1`) ends it with exit 1, the batch being written not committed.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  durq consume /var/lib/orders --group billing --format json --idle-exit 5\n  \
                  durq consume nats://127.0.0.1:4222/orders --group billing --idle-exit 5")]
pub struct Args {
    /// Queue directory, or a queue on NATS (nats://HOST:PORT/QUEUE); it
    /// must exist.
    #[arg(value_name = "QUEUE")]
    dir: Target,
    /// Consumer group to process messages for.
    #[arg(long, value_name = "G")]
    group: String,
    /// Most messages processed and committed at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_batch: usize,
    /// Exit after exactly N messages have been processed and committed.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Exit after SECS (decimals allowed) with nothing to consume.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    idle_exit: Option<Duration>,
    /// Seconds without a heartbeat after which other members take this
    /// one's slots over (it must exceed the time one batch takes).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs, default_value = "10")]
    lease_timeout: Duration,
    /// What a commit survives: `sync` (on disk before the next batch),
    /// `interval:MS` (a crash of this process loses nothing; synced in the
    /// background within MS ms, so a power cut brings back at most the last
    /// MS ms of commits), `buffered` (synced on exit and hand-over only)
    /// [default: sync]. On NATS every commit is acknowledged by the servers
    /// (their sync_interval decides what it survives): only `sync`.
    #[arg(long, value_name = "sync|interval:MS|buffered")]
    commit: Option<Durability>,
    /// How to print each message; `json` adds `deliveries`, how many times
    /// the group delivered it (more than 1 after a failure or a takeover).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args) -> CliResult<()> {
    // Before anything else, so a signal never finds the default handler
    // (which would kill the process mid-batch) once work has started.
    install_stop_handlers()?;
    if let (Target::Nats(url), Some(commit @ (Durability::Interval(_) | Durability::Buffered))) =
        (&args.dir, args.commit)
    {
        return Err(format!(
            "`durq consume --commit {commit}` has no meaning on nats://: every commit is acknowledged by the \
             servers, whose sync_interval decides what it survives (leave --commit out): {url}"
        )
        .into());
    }
    backend::with_existing(&args.dir, &args)
}

impl OnQueue<()> for &Args {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<()> {
        consume(queue, self)
    }
}

fn consume<Q: Backend>(queue: &Q, args: &Args) -> CliResult<()> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, io::stdout().lock());
    let mut batch_size = batch_size(args.max_batch, args.limit);
    let mut consumer = join(queue, args, batch_size)?;
    let mut processed = 0u64;
    let mut last_work = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        let remaining = args.limit.map(|limit| limit.saturating_sub(processed));
        if remaining == Some(0) || args.idle_exit.is_some_and(|idle| last_work.elapsed() >= idle) {
            break;
        }
        // A batch is committed whole, so --limit is exact only if no batch
        // is larger than what remains. The batch size is fixed when a member
        // joins: leave the group and join again with a smaller one. Another
        // process may take the group in between; that is reported as busy.
        if let Some(remaining) = remaining
            && remaining < batch_size as u64
        {
            batch_size = remaining as usize;
            drop(consumer);
            consumer = join(queue, args, batch_size)?;
        }
        let n = match consumer.process_timeout(POLL, |batch| write_batch(&mut out, batch, args.format)) {
            Ok(n) => n,
            // Another member took a slot over while this one was stalled:
            // the batch just written does not count and will be processed
            // again by the new holder. Carry on with the slots still held.
            Err(e @ durq::Error::Fenced { .. }) => {
                report(e);
                0
            }
            Err(e) => return Err(e.into()),
        };
        if n > 0 {
            processed += n as u64;
            last_work = Instant::now();
        }
    }
    Ok(())
}

fn join<Q: Backend>(queue: &Q, args: &Args, batch_size: usize) -> durq::Result<Q::Consumer> {
    let options = ConsumerOptions::default()
        .max_batch(batch_size)
        .lease_timeout(args.lease_timeout)
        .commit(args.commit.unwrap_or(Durability::Sync));
    queue.consumer_with(&args.group, options)
}

/// The batch size to join with: `--max-batch`, capped by `--limit`.
/// Zero is left for the library to reject with its own message.
fn batch_size(max_batch: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) if limit < max_batch as u64 => (limit as usize).max(1),
        _ => max_batch,
    }
}

/// Writes the batch's messages and flushes them: the batch is committed
/// when this returns `Ok`, so its output must have left the process by then.
/// An error (a closed pipe, say) commits nothing.
fn write_batch(out: &mut impl Write, batch: &[Message<'_>], format: Format) -> io::Result<()> {
    for m in batch {
        let line = RecordLine {
            partition: m.position().partition,
            offset: m.position().offset,
            timestamp_ms: m.timestamp_ms(),
            deliveries: Some(m.delivery_count()),
            key: m.key(),
            payload: m.payload(),
        };
        line.write(out, format).map_err(stream_error("writing stdout"))?;
    }
    out.flush().map_err(stream_error("writing stdout"))
}

/// Set by SIGINT and SIGTERM; the consume loop stops between batches.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_handlers() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `action` is fully initialised (zeroed, then its handler,
        // flags and mask set) before sigaction reads it; the handler only
        // stores to an atomic. SA_RESTART keeps the library's and std's
        // blocking calls from seeing EINTR.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

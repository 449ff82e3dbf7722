//! `durq tail`: print records without joining or moving any group.

use std::io::{self, BufWriter, Write};

use durq::ResetTo;

use crate::backend::{self, Backend, OnQueue, Tail};
use crate::group::parse_reset_to;
use crate::record_line::{Format, RecordLine};
use crate::target::Target;
use crate::{CliResult, report, stream_error};

/// Records copied out of the queue at a time.
const READ_MAX: usize = 256;
/// Bytes of output gathered before a write; output is also flushed
/// whenever the reader has caught up.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Print a queue's records without joining or moving any consumer group.
///
/// Nothing is committed and no group is created: a tail changes no group's
/// position and holds back no retention. Without --partition, the
/// partitions take turns. Records that retention removes before a slow
/// tail reads them are reported on stderr, and the tail goes on from the
/// earliest retained record.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  durq tail /var/lib/orders --from latest -f --format json\n  \
                  durq tail nats://127.0.0.1:4222/orders --partition 0 --from 100")]
pub struct Args {
    /// Queue directory, or a queue on NATS (nats://HOST:PORT/QUEUE); it
    /// must exist.
    #[arg(value_name = "QUEUE")]
    dir: Target,
    /// Where to start, in each partition: `earliest`, `latest` (only what
    /// is sent from now on), an offset, or a time: the first record
    /// appended at or after it. A time is RFC 3339
    /// (2026-11-28T01:02:03Z) or `@<unix-ms>`.
    #[arg(long, value_name = "earliest|latest|OFFSET|TIME", value_parser = parse_reset_to, default_value = "earliest")]
    from: ResetTo,
    /// Read this partition only.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Keep printing records as they become visible (until interrupted),
    /// woken by the producers as consumers are.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How to print each record.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args) -> CliResult<()> {
    backend::with_existing(&args.dir, &args)
}

impl OnQueue<()> for &Args {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<()> {
        tail(queue, self)
    }
}

fn tail<Q: Backend>(queue: &Q, args: &Args) -> CliResult<()> {
    let mut reader = match args.partition {
        Some(p) => queue.partition_reader(p, args.from)?,
        None => queue.reader(args.from)?,
    };
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, io::stdout().lock());
    loop {
        let records = reader.read(READ_MAX)?;
        for s in reader.take_skipped() {
            report(format_args!(
                "partition {}: records {}..{} were removed by retention before tail read them",
                s.partition, s.from, s.to
            ));
        }
        if records.is_empty() {
            out.flush().map_err(stream_error("writing stdout"))?;
            if !args.follow && reader.caught_up() {
                return Ok(());
            }
            reader.wait();
            continue;
        }
        for r in &records {
            let line = RecordLine {
                partition: r.position.partition,
                offset: r.position.offset,
                timestamp_ms: r.timestamp_ms,
                deliveries: None,
                key: r.key.as_deref(),
                payload: &r.payload,
            };
            line.write(&mut out, args.format).map_err(stream_error("writing stdout"))?;
        }
    }
}

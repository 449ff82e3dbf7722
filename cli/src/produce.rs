//! `durq produce`: stdin lines in, acknowledged positions out, into a
//! local queue or one on NATS (the same output either way).

use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::AsFd;

use durq::{Durability, Options, Position};

use crate::progress::Progress;
use crate::target::Target;
use crate::{CliResult, stream_error};

/// Most lines sent in one batch (one sync under `sync` durability).
const BATCH_LINES: usize = 1000;
/// Bytes read from stdin at a time; a batch never waits for more than this.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Send each line of stdin as one message (without its newline), and print
/// `<partition> <offset>` for each once it is acknowledged, in input order.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  seq 1 1000 | durq produce /var/lib/orders --partitions 4 --durability sync\n  \
                  seq 1 1000 | durq produce nats://127.0.0.1:4222/orders --partitions 4")]
pub struct Args {
    /// Queue directory, created if it does not exist (its parent must); or
    /// a queue on NATS, nats://HOST:PORT/QUEUE (several servers:
    /// nats://H1:P1,H2:P2/QUEUE), created on the servers if it does not
    /// exist.
    #[arg(value_name = "QUEUE")]
    queue: Target,
    /// Number of partitions, if this creates the queue [default: 1]. An
    /// existing queue keeps its own: leave this out, or give the same.
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// What an acknowledgement means, if this creates the queue [default:
    /// sync]. An existing queue keeps its own: leave this out, or give the
    /// same.
    #[arg(long, value_name = "sync|interval:MS|buffered")]
    durability: Option<Durability>,
    /// Size of each segment file, if this creates a local queue: a multiple of
    /// 4096 from 64 KiB to 1 GiB [default: 64 MiB]; a message must fit one,
    /// so below about 1 MiB also lower --record-bytes-max. An existing queue
    /// keeps its own: leave this out, or give the same.
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Largest key + payload of one message, if this creates the queue
    /// [default: 1 MiB]. An existing queue keeps its own: leave this out, or
    /// give the same.
    #[arg(long, value_name = "BYTES")]
    record_bytes_max: Option<u32>,
    /// Send the part of a line before the first C as its key, the rest as
    /// its payload; a line without C is sent without a key. Records with the
    /// same key go to the same partition.
    #[arg(long, value_name = "C")]
    key_sep: Option<char>,
}

impl Args {
    /// Only options given on the command line are set, so an existing queue
    /// is opened with its stored values for the rest.
    fn options(&self) -> Options {
        let mut options = Options::default();
        if let Some(n) = self.partitions {
            options = options.partitions(n);
        }
        if let Some(d) = self.durability {
            options = options.durability(d);
        }
        if let Some(bytes) = self.segment_bytes {
            options = options.segment_bytes(bytes);
        }
        if let Some(bytes) = self.record_bytes_max {
            options = options.record_bytes_max(bytes);
        }
        options
    }
}

pub fn run(args: Args) -> CliResult<()> {
    match &args.queue {
        Target::Dir(dir) => produce(&durq::Queue::open_with(dir, args.options())?.producer(), &args),
        Target::Nats(url) => produce(&durq_nats::Queue::open_with(url, args.options())?.producer(), &args),
    }
}

/// What `durq produce` asks of a producer, on either backend.
trait Sender {
    fn send_keyed(&self, key: &[u8], payload: &[u8]) -> durq::Result<Position>;
    fn send_batch(&self, payloads: Vec<&[u8]>) -> durq::Result<Vec<Position>>;
    fn flush(&self) -> durq::Result<()>;
}

impl Sender for durq::Producer {
    fn send_keyed(&self, key: &[u8], payload: &[u8]) -> durq::Result<Position> {
        durq::Producer::send_keyed(self, key, payload)
    }

    fn send_batch(&self, payloads: Vec<&[u8]>) -> durq::Result<Vec<Position>> {
        durq::Producer::send_batch(self, payloads)
    }

    fn flush(&self) -> durq::Result<()> {
        durq::Producer::flush(self)
    }
}

/// Not atomic per batch on NATS (docs/SCALE_OUT.md, "The producer"): a
/// batch that fails part-way has stored, and printed, a prefix.
impl Sender for durq_nats::Producer {
    fn send_keyed(&self, key: &[u8], payload: &[u8]) -> durq::Result<Position> {
        durq_nats::Producer::send_keyed(self, key, payload)
    }

    fn send_batch(&self, payloads: Vec<&[u8]>) -> durq::Result<Vec<Position>> {
        durq_nats::Producer::send_batch(self, payloads)
    }

    fn flush(&self) -> durq::Result<()> {
        durq_nats::Producer::flush(self)
    }
}

fn produce(producer: &impl Sender, args: &Args) -> CliResult<()> {
    let key_sep = args.key_sep.map(|c| c.to_string().into_bytes());
    let progress = input_progress();
    let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin().lock());
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        let lines = read_batch(&mut input).map_err(stream_error("reading stdin"))?;
        if lines.is_empty() {
            break;
        }
        // Each line and the newline it was read with (the last line may
        // have none: the bar then stops one byte short, and is cleared).
        progress.advance(lines.iter().map(|l| l.len() as u64 + 1).sum());
        let sent = send_lines(producer, &lines, key_sep.as_deref(), &mut out);
        // Positions printed before a failed send are acknowledged records:
        // show them even when the batch fails part-way.
        let flushed = out.flush().map_err(stream_error("writing stdout"));
        sent?;
        flushed?;
    }
    // Under interval and buffered durability an acknowledged record survives
    // a crash of this process but not yet a power loss; make it durable
    // before reporting success. Under sync this finds nothing to do.
    producer.flush()?;
    Ok(())
}

/// A bar of stdin's bytes still to read when it is a regular file (`<
/// big-file`), a spinner otherwise: only on a terminal (see `progress`).
fn input_progress() -> Progress {
    // A duplicate of fd 0: it shares the offset, and closing it leaves
    // stdin open.
    let remaining = io::stdin().as_fd().try_clone_to_owned().ok().and_then(|fd| {
        let mut file = std::fs::File::from(fd);
        let metadata = file.metadata().ok().filter(std::fs::Metadata::is_file)?;
        Some(metadata.len().saturating_sub(file.stream_position().ok()?))
    });
    match remaining {
        Some(bytes) => Progress::bytes("sending", bytes),
        None => Progress::spinner("sending"),
    }
}

/// Reads at least one line (blocking), then more only while whole lines are
/// already buffered: waiting for more input would hold back the
/// acknowledgements of lines already read. Empty at end of input.
fn read_batch<R: Read>(input: &mut BufReader<R>) -> io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(lines);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        lines.push(line);
        if lines.len() == BATCH_LINES || !input.buffer().contains(&b'\n') {
            return Ok(lines);
        }
    }
}

/// Sends `lines` in order, runs of unkeyed lines as one batch each, and
/// writes each position to `out` as soon as its send is acknowledged.
fn send_lines(
    producer: &impl Sender,
    lines: &[Vec<u8>],
    key_sep: Option<&[u8]>,
    out: &mut impl Write,
) -> CliResult<()> {
    let mut unkeyed: Vec<&[u8]> = Vec::new();
    for line in lines {
        match key_sep.and_then(|sep| split_key(line, sep)) {
            None => unkeyed.push(line),
            Some((key, payload)) => {
                // Keep input order: everything before this line goes first.
                send_unkeyed(producer, &mut unkeyed, out)?;
                write_position(out, producer.send_keyed(key, payload)?)?;
            }
        }
    }
    send_unkeyed(producer, &mut unkeyed, out)
}

fn send_unkeyed(producer: &impl Sender, payloads: &mut Vec<&[u8]>, out: &mut impl Write) -> CliResult<()> {
    // An empty batch would take a turn of the NATS producer's round robin
    // (not the local one's), and the two would then print different
    // partitions for the same input.
    if payloads.is_empty() {
        return Ok(());
    }
    for position in producer.send_batch(std::mem::take(payloads))? {
        write_position(out, position)?;
    }
    Ok(())
}

fn write_position(out: &mut impl Write, position: Position) -> io::Result<()> {
    writeln!(out, "{} {}", position.partition, position.offset).map_err(stream_error("writing stdout"))
}

/// `(key, payload)` around the first `sep`, or `None` if `line` has none.
fn split_key<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..at], &line[at + sep.len()..]))
}

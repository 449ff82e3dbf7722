//! `durq-compare nats`: the NATS backend (durq-nats) beside raw async-nats
//! on the same kind of stream (the engine's ceiling) and beside the local
//! queue, in one run, each cell repeated; the table goes into
//! docs/BENCHMARKS.md, section "NATS backend" (between the `nats:begin` and
//! `nats:end` markers, inside the notes block the main run keeps).
//!
//! Every NATS cell starts its own `nats-server` (the test harness's
//! configuration: JetStream with `sync_interval: always`, `server.rs`) in a
//! fresh temporary directory and kills it afterwards; every local cell gets
//! a fresh directory. One partition everywhere, 100 B records.

mod consume;
mod latency;
mod produce;
mod raw;
mod server;
mod takeover;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{Outcome, Result, thousands};
use crate::report::ratio;

const HELP: &str = "\
durq-compare nats: durq-nats beside raw async-nats and the local queue.

USAGE: cargo run --release -p durq-compare -- nats [OPTIONS]

OPTIONS:
  --quick        every row 10 times smaller, 1 repetition: a smoke test
                 (nothing written unless --out)
  --reps N       repetitions per cell; the table shows medians and ranges (default 3)
  --cap SECS     a throughput cell stops after this long and reports its rate (default 10)
  --rows a,b     only rows whose title contains one of these (e.g. `produce`, `consume`)
  --dir PATH     where servers' stores and local queues go (default: the system temp dir)
  --out DIR      where BENCHMARKS.md is (default: the repo's docs/)
  --no-write     print the table only
";

const BEGIN: &str = "<!-- nats:begin (written by `durq-compare nats`) -->";
const END: &str = "<!-- nats:end -->";

/// How much one cell does.
pub struct Size {
    pub messages: u64,
    pub payload: usize,
    pub cap: Duration,
}

/// What one cell measured.
#[derive(Debug, Clone)]
pub enum Measured {
    Rate {
        messages: u64,
        secs: f64,
    },
    Latency {
        messages: usize,
        p50: Duration,
        p99: Duration,
    },
    Takeover(Duration),
    /// Not measured by this program, and why.
    NotHere(String),
}

impl Measured {
    pub fn rate(messages: u64, start: Instant) -> Measured {
        Measured::Rate { messages, secs: start.elapsed().as_secs_f64() }
    }

    fn from_outcome(outcome: Outcome) -> Result<Measured> {
        match outcome {
            Outcome::Done { messages, secs, .. } => Ok(Measured::Rate { messages, secs }),
            Outcome::Skip(why) => Ok(Measured::NotHere(why)),
        }
    }

    /// p50 and p99 of `seen[i] − sent[i]`; every record must have been seen.
    fn latencies(sent: &[Instant], seen: &[Option<Instant>]) -> Result<Measured> {
        let mut each = sent
            .iter()
            .zip(seen)
            .enumerate()
            .map(|(i, (sent, seen))| {
                seen.map(|seen| seen.saturating_duration_since(*sent)).ok_or_else(|| format!("record {i} never seen"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if each.is_empty() {
            return Err("no records".into());
        }
        each.sort_unstable();
        let at = |q: f64| each[((each.len() as f64 * q) as usize).min(each.len() - 1)];
        Ok(Measured::Latency { messages: each.len(), p50: at(0.50), p99: at(0.99) })
    }

    /// The figure that is compared: messages/s, or for latency and
    /// takeover the inverse of the time (so that above raw is better).
    fn score(&self) -> Option<f64> {
        match self {
            Measured::Rate { messages, secs } => Some(*messages as f64 / secs),
            Measured::Latency { p50, .. } => Some(1.0 / p50.as_secs_f64()),
            Measured::Takeover(d) => Some(1.0 / d.as_secs_f64()),
            Measured::NotHere(_) => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum System {
    DurqNats,
    /// durq-nats's `Reader`, which joins no group (latency only): what a
    /// record costs to reach a reader that writes nothing, as raw's does.
    DurqNatsReader,
    Raw,
    /// Raw with a `Nats-Msg-Id` per message, as durq-nats's records carry
    /// (produce and consume rows).
    RawWithIds,
    /// Raw through a durable consumer with explicit acknowledgements, each
    /// record acknowledged and the server's confirmation awaited before the
    /// next is taken (latency only): a record counts as processed only once
    /// the engine confirmed it, as a group member's does.
    RawAcking,
    /// Raw's plain reader, each record committed by a synced compare-and-set
    /// of the group's key in a key-value bucket, awaited before the next is
    /// taken (latency only): a group member's job with its durability.
    RawCommitting,
    Local,
}

impl System {
    const ALL: [System; 7] = [
        System::DurqNats,
        System::DurqNatsReader,
        System::Raw,
        System::RawWithIds,
        System::RawAcking,
        System::RawCommitting,
        System::Local,
    ];

    fn name(self) -> &'static str {
        match self {
            System::DurqNats => "durq-nats",
            System::DurqNatsReader => "durq-nats `Reader`",
            System::Raw => "raw async-nats",
            System::RawWithIds => "raw + message ids",
            System::RawAcking => "raw acking each",
            System::RawCommitting => "raw + synced commit each",
            System::Local => "local durq",
        }
    }

    fn needs_server(self) -> bool {
        self != System::Local
    }

    /// Whether the system has a cell in `row` (message ids matter to
    /// sends, and to a consumer reading the messages that carry them; a
    /// reader outside a group, and a reader acknowledging each record one at
    /// a time, have only a latency).
    fn measures(self, row: Row) -> bool {
        match self {
            System::RawWithIds => matches!(row, Row::ProduceOne | Row::ProduceConcurrent(_) | Row::Consume { .. }),
            System::DurqNatsReader | System::RawAcking | System::RawCommitting => matches!(row, Row::Latency),
            _ => true,
        }
    }
}

#[derive(Clone, Copy)]
enum Row {
    ProduceOne,
    ProduceConcurrent(usize),
    Latency,
    Consume { batch: u64 },
    Takeover,
}

struct Spec {
    row: Row,
    title: String,
    size: Size,
}

struct Config {
    quick: bool,
    reps: usize,
    cap: Duration,
    rows: Vec<String>,
    dir: PathBuf,
    out: Option<PathBuf>,
    args: String,
}

fn parse(args: &[String]) -> std::result::Result<Config, String> {
    let mut c = Config {
        quick: false,
        reps: 3,
        cap: Duration::from_secs(10),
        rows: Vec::new(),
        dir: std::env::temp_dir(),
        out: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("docs")),
        args: args.iter().map(|a| format!(" {a}")).collect(),
    };
    let (mut reps, mut out, mut no_write) = (None, None, false);
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => c.quick = true,
            "--reps" => reps = Some(value()?.parse::<usize>().map_err(|e| format!("--reps: {e}"))?),
            "--cap" => c.cap = Duration::from_secs_f64(value()?.parse::<f64>().map_err(|e| format!("--cap: {e}"))?),
            "--rows" => c.rows = value()?.split(',').map(|s| s.trim().to_lowercase()).collect(),
            "--dir" => c.dir = PathBuf::from(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--no-write" => no_write = true,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    if c.quick {
        c.reps = 1;
        c.out = None;
    }
    if let Some(r) = reps {
        c.reps = r.max(1);
    }
    if out.is_some() {
        c.out = out;
    }
    if no_write {
        c.out = None;
    }
    Ok(c)
}

fn specs(c: &Config) -> Vec<Spec> {
    let scale = if c.quick { 10 } else { 1 };
    let spec = |row, title: &str, messages: u64| Spec {
        row,
        title: title.to_owned(),
        size: Size { messages: messages / scale, payload: 100, cap: c.cap },
    };
    vec![
        spec(Row::ProduceOne, "produce, `Sync`, 1 sender, 3,000 × 100 B", 3_000),
        spec(Row::ProduceConcurrent(32), "produce, `Sync`, 32 concurrent senders × 500 × 100 B", 16_000),
        spec(Row::Latency, "end-to-end latency, `Sync`, 1,000 × 100 B one at a time (p50 / p99)", 1_000),
        spec(Row::Consume { batch: 1000 }, "consume 100,000 × 100 B, a durable commit per 1,000", 100_000),
        spec(Row::Takeover, "takeover, 1 s lease: holder dead → standby has the record", 1),
    ]
    .into_iter()
    .filter(|s| c.rows.is_empty() || c.rows.iter().any(|r| s.title.to_lowercase().contains(r.as_str())))
    .collect()
}

/// The entry point of `durq-compare nats ARGS`.
pub fn main(args: &[String]) {
    if let [arg, spec] = args
        && arg == takeover::HOLDER_ARG
    {
        if let Err(e) = takeover::holder(spec) {
            eprintln!("durq-compare nats {}: {e}", takeover::HOLDER_ARG);
            std::process::exit(1);
        }
        return;
    }
    let config = parse(args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    if let Err(e) = run(&config) {
        eprintln!("durq-compare nats: {e}");
        std::process::exit(1);
    }
}

type Cells = BTreeMap<(usize, System), Vec<Measured>>;

fn run(config: &Config) -> Result<()> {
    let binary = server::binary()?;
    let server_version = server::version(&binary);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let load_before = crate::machine::loadavg();
    println!("{server_version}; load average before: {load_before}");
    let started = SystemTime::now();
    let specs = specs(config);
    let mut cells = Cells::new();
    for (i, spec) in specs.iter().enumerate() {
        println!("{} (load average {})", spec.title, crate::machine::loadavg());
        for rep in 0..config.reps {
            for system in System::ALL.into_iter().filter(|s| s.measures(spec.row)) {
                let dir = tempfile::Builder::new().prefix("durq-compare-nats-").tempdir_in(&config.dir)?;
                // A failed cell is reported in the table, and the run goes on.
                let measured = measure(spec, system, &binary, &runtime, dir.path())
                    .unwrap_or_else(|e| Measured::NotHere(format!("**error**: {e}")));
                println!("  {:<15} rep {}/{}: {}", system.name(), rep + 1, config.reps, one(&measured));
                cells.entry((i, system)).or_default().push(measured);
            }
        }
    }
    let load_after = crate::machine::loadavg();
    let table = table(&specs, &cells);
    println!("\n{table}");
    if let Some(out) = &config.out {
        let machine = crate::machine::describe(&config.dir, "");
        let about = |name: &str| machine.rows.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut section = String::new();
        let _ = writeln!(
            section,
            "Written by `cargo run --release -p durq-compare -- nats{}` on {} ({server_version}; {}; {}; load average {load_before} before, {load_after} after). \
             Each cell is the median of {} repetitions, with their range; every NATS cell ran against a server of its own \
             (JetStream, `sync_interval: always`, a store in a fresh temporary directory), one partition, 100 B records. \
             **÷ raw** is the cell over raw async-nats on the same row (for latency and takeover: raw's time over the cell's), \
             so 1.00× is the engine's ceiling; the issue's target for durq-nats is 0.8×, judged on the consume row against \
             *raw + message ids* and on the latency row against *raw + synced commit each*, the raw cells doing the same job \
             (notes below).\n",
            config.args,
            crate::report::utc(started),
            about("CPU").unwrap_or_default(),
            about("Storage").unwrap_or_default(),
            config.reps,
        );
        section.push_str(&table);
        section.push_str(NOTES);
        write_section(&out.join("BENCHMARKS.md"), &section)?;
        println!("wrote the NATS section of {}", out.join("BENCHMARKS.md").display());
    }
    Ok(())
}

/// How each row was driven, below the table.
const NOTES: &str = "
- **produce**: durq-nats is a `Producer` on a one-partition queue (`Sync`): one sender calls the blocking `send`; \
concurrent senders are tokio tasks awaiting `send_async` on clones of one producer. Raw async-nats publishes to a \
stream of the same configuration (file storage, one replica, two-minute duplicate window) on one connection and \
awaits each acknowledgement, without a message id; *raw + message ids* adds a `Nats-Msg-Id` of durq-nats's length \
to each message, so the stream checks and remembers every id as it does for durq-nats. The local queue (`Durability::Sync`) uses threads sharing one \
`Producer` (group commit).
- **end-to-end latency**: from just before a send to a reader in the same process seeing the record, one record at a \
time; it includes the send's own sync. durq-nats: a group member on a thread in `process_timeout`, the time its \
closure is handed the record: behind the previous record's commit (a synced compare-and-set, which also marks the \
record when it arrived before that write), or, when the member was waiting, a lone record at once (the previous \
commit stood a mark for it: no write of its own) and several together once their mark is put into the group's \
memory-storage marks bucket and flushed into the socket (not awaited). *durq-nats `Reader`*: `Queue::reader`, which joins no group and writes nothing, blocked in `wait`, \
as raw's reader and the local row's. Raw: an ordered consumer, which acknowledges nothing. *Raw acking each*: a \
durable pull consumer with explicit acknowledgements on the same kind of stream, one record at a time: the time it \
is handed the record, then its acknowledgement sent as a request and the server's confirmation awaited \
(`double_ack`) before the next is taken; records that arrive meanwhile wait. The server confirms an acknowledgement \
without syncing it (strace of a 100-record run: 100 fsyncs, one per publish, as for the plain reader), so it does \
the member's job with a weaker record of it. *Raw + synced commit each*: raw's plain reader, and \
once a record is handed over, a compare-and-set of the group's key in a key-value bucket (file storage, history 1, \
one replica, as a group's slots are) on the revision the last one returned, awaited before the next record is \
taken; the records that arrived meanwhile are then handed over together and committed by one write, as a member's \
next batch is (one write per record, whatever arrived, fell behind the sends: p50 8 to 57 ms). It is the \
like-for-like ceiling and the cell the target is judged against on this row: the same writes as the member's (a \
publish, then a synced compare-and-set of a key per hand-over), synced as the member's commit is (strace of a \
100-record run: 194 fsyncs, one per publish and one per commit, plus the key's creation; durq-nats's member: 207), \
in the same order, the next record taken only once the commit is confirmed. What the member adds beyond it is its \
own: the mark of several records that arrived together while the member waited (a put into memory storage, \
flushed, not awaited), the cursor, `Message`s and the hand-over from the runtime to the caller's thread. Raw's plain reader is the floor of reading alone, as durq-nats's `Reader` is. Local: `Queue::reader`, blocked in `wait`.
- **consume**: the preload is not timed. durq-nats: `process` with `max_batch(1000)`; one synced compare-and-set of \
the slot per batch, which commits it and marks the next (already arrived) as delivered; the first batch's mark is \
a write of its own. Raw: an ordered consumer reads the stream and every 1,000 records \
compare-and-sets the group's key in a key-value bucket (history 1, file storage), as durq-nats commits; *raw + \
message ids* reads records preloaded with a `Nats-Msg-Id` of durq-nats's length, as durq-nats's records carry: the \
same messages, the cell the target is judged against on this row. Local: `process` with `max_batch(1000)`, `Sync` \
commit.
- **takeover**: raw is the floor of any lease-based design on this engine: a holder renews a key by compare-and-set \
every 250 ms and dies 125 ms after a renewal; a standby reading the key every 50 ms takes it by compare-and-set once \
its revision has not moved for the 1 s lease, and reads the record at the checkpoint. durq-nats: the holder is a \
child process (lease 1 s) SIGKILLed inside its closure holding the record; a standby member, joined before, blocked \
in `process_timeout`; the time from the kill to the standby's closure seeing that record (delivery count 2). The local queue's takeover is \
measured by `cargo bench --bench takeover` (a SIGKILLed holder process).
- Under `sync_interval: always` the server fsyncs once per message (strace of a run: 4,808 fsyncs for 4,800 \
messages) and has no group commit, so concurrent senders are no faster than one on NATS, raw or not.
";

fn measure(
    spec: &Spec,
    system: System,
    binary: &Path,
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
) -> Result<Measured> {
    let size = &spec.size;
    if let (Row::Takeover, System::Local) = (spec.row, system) {
        return Ok(Measured::NotHere("`cargo bench --bench takeover`".into()));
    }
    let server =
        if system.needs_server() { Some(runtime.block_on(server::NatsServer::start(binary, dir))?) } else { None };
    let url = server.as_ref().map(server::NatsServer::url).unwrap_or_default();
    let url = url.as_str();
    match (spec.row, system) {
        (Row::ProduceOne, System::DurqNats) => produce::durq_nats_one(url, size),
        (Row::ProduceOne, System::Raw) => runtime.block_on(produce::raw_one(url, size, false)),
        (Row::ProduceOne, System::RawWithIds) => runtime.block_on(produce::raw_one(url, size, true)),
        (Row::ProduceOne, System::Local) => produce::local_one(dir, size),
        (Row::ProduceConcurrent(n), System::DurqNats) => runtime.block_on(produce::durq_nats_concurrent(url, size, n)),
        (Row::ProduceConcurrent(n), System::Raw) => runtime.block_on(produce::raw_concurrent(url, size, n, false)),
        (Row::ProduceConcurrent(n), System::RawWithIds) => {
            runtime.block_on(produce::raw_concurrent(url, size, n, true))
        }
        (Row::ProduceConcurrent(n), System::Local) => produce::local_concurrent(dir, size, n),
        (Row::Latency, System::DurqNats) => latency::durq_nats(url, size),
        (Row::Latency, System::DurqNatsReader) => latency::durq_nats_reader(url, size),
        (Row::Latency, System::Raw) => runtime.block_on(latency::raw(url, size)),
        (Row::Latency, System::RawAcking) => runtime.block_on(latency::raw_acking(url, size)),
        (Row::Latency, System::RawCommitting) => runtime.block_on(latency::raw_committing(url, size)),
        (Row::Latency, System::Local) => latency::local(dir, size),
        (Row::Consume { batch }, System::DurqNats) => consume::durq_nats(url, size, batch),
        (Row::Consume { batch }, System::Raw) => runtime.block_on(consume::raw(url, size, batch, false)),
        (Row::Consume { batch }, System::RawWithIds) => runtime.block_on(consume::raw(url, size, batch, true)),
        (Row::Consume { batch }, System::Local) => consume::local(dir, size, batch),
        (Row::Takeover, System::DurqNats) => takeover::durq_nats(url),
        (Row::Takeover, System::Raw) => runtime.block_on(takeover::raw(url)),
        (Row::Latency | Row::Takeover, System::RawWithIds)
        | (
            Row::ProduceOne | Row::ProduceConcurrent(_) | Row::Consume { .. } | Row::Takeover,
            System::DurqNatsReader | System::RawAcking | System::RawCommitting,
        )
        | (Row::Takeover, System::Local) => {
            unreachable!("not measured (`System::measures`) or answered above")
        }
    }
}

fn one(m: &Measured) -> String {
    match m {
        Measured::Rate { messages, secs } => {
            format!("{messages} msgs in {secs:.3} s = {} msgs/s", thousands(*messages as f64 / secs))
        }
        Measured::Latency { messages, p50, p99 } => format!("{messages} records, p50 {} / p99 {}", ms(*p50), ms(*p99)),
        Measured::Takeover(d) => format!("took over in {}", ms(*d)),
        Measured::NotHere(why) => format!("n/a: {why}"),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.2} ms") }
}

fn median<T: Copy + PartialOrd>(mut xs: Vec<T>) -> T {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

/// The result cell: median and range over the repetitions.
fn cell(ms_: &[Measured]) -> String {
    match ms_.first() {
        Some(Measured::Rate { .. }) => {
            let rates: Vec<f64> = ms_.iter().filter_map(Measured::score).collect();
            let (lo, hi) = range(&rates);
            format!("{} msgs/s ({}–{})", thousands(median(rates.clone())), thousands(lo), thousands(hi))
        }
        Some(Measured::Latency { .. }) => {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for m in ms_ {
                if let Measured::Latency { p50, p99, .. } = m {
                    p50s.push(*p50);
                    p99s.push(*p99);
                }
            }
            let span = |xs: &[Duration]| {
                let secs: Vec<f64> = xs.iter().map(Duration::as_secs_f64).collect();
                let (lo, hi) = range(&secs);
                format!("{}–{}", ms(Duration::from_secs_f64(lo)), ms(Duration::from_secs_f64(hi)))
            };
            format!(
                "p50 {} ({}), p99 {} ({})",
                ms(median(p50s.clone())),
                span(&p50s),
                ms(median(p99s.clone())),
                span(&p99s)
            )
        }
        Some(Measured::Takeover(_)) => {
            let ds: Vec<Duration> =
                ms_.iter().filter_map(|m| if let Measured::Takeover(d) = m { Some(*d) } else { None }).collect();
            let secs: Vec<f64> = ds.iter().map(Duration::as_secs_f64).collect();
            let (lo, hi) = range(&secs);
            format!(
                "{} ({}–{})",
                ms(median(ds.clone())),
                ms(Duration::from_secs_f64(lo)),
                ms(Duration::from_secs_f64(hi))
            )
        }
        Some(Measured::NotHere(why)) => format!("n/a: {why}"),
        None => String::new(),
    }
}

fn range(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

fn median_score(ms_: &[Measured]) -> Option<f64> {
    let scores: Vec<f64> = ms_.iter().filter_map(Measured::score).collect();
    (!scores.is_empty()).then(|| median(scores))
}

/// The cell's median over raw's, and the range of the ratios repetition by
/// repetition (the two ran back to back, so they saw the machine in the
/// same seconds).
fn vs_raw(cell: &[Measured], raw: &[Measured]) -> String {
    let (Some(x), Some(r)) = (median_score(cell), median_score(raw)) else { return "—".to_owned() };
    let paired: Vec<f64> = cell.iter().zip(raw).filter_map(|(c, r)| Some(c.score()? / r.score()?)).collect();
    let (lo, hi) = range(&paired);
    if paired.len() > 1 { format!("{} ({}–{})", ratio(x / r), ratio(lo), ratio(hi)) } else { ratio(x / r) }
}

/// The table: each cell over raw, and where raw also ran with message ids
/// (the same messages as durq-nats's), acknowledging each record (a group
/// member's job, unsynced) or committing each record by a synced
/// compare-and-set (its job and durability), over that too.
fn table(specs: &[Spec], cells: &Cells) -> String {
    let mut t = String::from(
        "| row | system | median (range) | ÷ raw (range by repetition) | ÷ raw + message ids | ÷ raw acking each \
         | ÷ raw + synced commit each |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (i, spec) in specs.iter().enumerate() {
        let over = |system, base: System| match cells.get(&(i, base)) {
            Some(_) if system == base => "1.00×".to_owned(),
            Some(base) => vs_raw(&cells[&(i, system)], base),
            None => "—".to_owned(),
        };
        for system in System::ALL {
            let Some(ms_) = cells.get(&(i, system)) else { continue };
            let (vs_raw, vs_ids, vs_acking, vs_committing) = (
                over(system, System::Raw),
                over(system, System::RawWithIds),
                over(system, System::RawAcking),
                over(system, System::RawCommitting),
            );
            let _ = writeln!(
                t,
                "| {} | {} | {} | {vs_raw} | {vs_ids} | {vs_acking} | {vs_committing} |",
                spec.title,
                system.name(),
                cell(ms_)
            );
        }
    }
    t
}

/// Replaces the section between [`BEGIN`] and [`END`] in `path`, or adds
/// it, under a heading, at the end of the notes block the main run keeps.
fn write_section(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path)?;
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{BEGIN}\n{body}{}", &old[..a], &old[b..]),
        _ => {
            let at = old.find(crate::report::NOTES_END).ok_or("BENCHMARKS.md has no notes block")?;
            format!("{}\n## NATS backend (`durq-compare nats`)\n\n{BEGIN}\n{body}{END}\n{}", &old[..at], &old[at..])
        }
    };
    std::fs::write(path, new)?;
    Ok(())
}

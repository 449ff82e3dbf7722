//! durq-compare: durq and its peers on the same workloads, in one run, on
//! one machine, in one table. See `docs/BENCHMARKS.md` for what it found and
//! `--help` for how to run it.

mod common;
mod machine;
mod nats;
mod peers;
mod plot;
mod reference;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use common::{Kind, Outcome, System, Workload};
use peers::{
    durq_peer::Durq, fjall_peer::Fjall, lmdb_peer::Lmdb, naive::Naive, okaywal_peer::Okaywal,
    queue_file_peer::QueueFilePeer, redis, sqlite, yaque_peer::Yaque,
};

const HELP: &str = "\
durq-compare: durq and its peers on the same workloads, one table.

USAGE: cargo run --release -p durq-compare -- [OPTIONS]
       cargo run --release -p durq-compare -- nats [OPTIONS]   (the NATS backend; `nats --help`)

OPTIONS:
  --quick            every workload 100 times smaller, 1 repetition, 2 s cap:
                     a smoke test, not a measurement (nothing written unless --out)
  --reps N           repetitions per cell; the table shows medians (default 3)
  --cap SECS         a cell stops sending (or consuming) after this long and reports the rate
                     over what it did; the table says so (default 15)
  --only a,b         only systems whose name contains one of these (durq and
                     each workload's bare-I/O reference always run)
  --workloads W1,W4  only these workloads
  --dir PATH         where temporary queues go (default: the system temp dir)
  --out DIR          where BENCHMARKS.md and benchmarks.svg go (default: the repo's docs/)
  --no-write         print the table only
";

pub struct Config {
    pub quick: bool,
    pub reps: usize,
    pub cap: Duration,
    pub only: Vec<String>,
    pub workloads: Vec<String>,
    pub dir: PathBuf,
    pub out: Option<PathBuf>,
    /// The arguments as given, for the record.
    pub args: String,
}

fn parse() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let mut c = Config {
        quick: false,
        reps: 3,
        cap: Duration::from_secs(15),
        only: Vec::new(),
        workloads: Vec::new(),
        dir: std::env::temp_dir(),
        out: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("docs")),
        args: std::env::args().skip(1).map(|a| format!(" {a}")).collect(),
    };
    let (mut reps, mut cap, mut out, mut no_write) = (None, None, None, false);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => c.quick = true,
            "--reps" => reps = Some(value()?.parse::<usize>().map_err(|e| format!("--reps: {e}"))?),
            "--cap" => cap = Some(value()?.parse::<f64>().map_err(|e| format!("--cap: {e}"))?),
            "--only" => c.only = value()?.split(',').map(|s| s.trim().to_lowercase()).collect(),
            "--workloads" => c.workloads = value()?.split(',').map(|s| s.trim().to_uppercase()).collect(),
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
        c.cap = Duration::from_secs(2);
        c.out = None;
    }
    if let Some(r) = reps {
        c.reps = r.max(1);
    }
    if let Some(s) = cap {
        c.cap = Duration::from_secs_f64(s);
    }
    if out.is_some() {
        c.out = out;
    }
    if no_write {
        c.out = None;
    }
    Ok(c)
}

fn workloads(c: &Config) -> Vec<Workload> {
    let scale = if c.quick { 100 } else { 1 };
    let w = |id, title: &str, kind, messages: u64, payload| Workload {
        id,
        title: title.to_owned(),
        kind,
        messages: messages / scale,
        payload,
        cap: c.cap,
    };
    vec![
        w("W1", "1,000,000 × 100 B appends, one sync at the end", Kind::SyncAtEnd, 1_000_000, 100),
        w("W2", "20,000 × 100 B appends, each durable before the next", Kind::EachDurable, 20_000, 100),
        w("W3", "200,000 × 100 B appends in batches of 100 per sync", Kind::Batches(100), 200_000, 100),
        w(
            "W4",
            "consume 1,000,000 × 100 B, a durable commit every 1,000",
            Kind::Consume { batch: 1000 },
            1_000_000,
            100,
        ),
        w("W5", "200,000 × 1 KiB appends, one sync at the end", Kind::SyncAtEnd, 200_000, 1024),
        w(
            "W6",
            "32 producers × 2,000 × 100 B, each send durable before it returns",
            Kind::Concurrent { threads: 32 },
            64_000,
            100,
        ),
        w("W7", "consume 1,000,000 × 100 B, a durable commit per message", Kind::Consume { batch: 1 }, 1_000_000, 100),
    ]
    .into_iter()
    .filter(|w| c.workloads.is_empty() || c.workloads.iter().any(|x| x == w.id))
    .collect()
}

fn systems(c: &Config, notes: &mut Vec<String>) -> Vec<Box<dyn System>> {
    // durq first: every ratio in the table is against its row. The second
    // row is its consumer's `commit(Interval(10 ms))` (consume workloads).
    let mut all: Vec<Box<dyn System>> = vec![
        Box::new(Durq::SYNC),
        Box::new(Durq::INTERVAL_10_MS),
        Box::new(sqlite::Sqlite(sqlite::Variant::TxnPerMessage)),
        Box::new(sqlite::Sqlite(sqlite::Variant::Batched)),
        Box::new(Yaque),
        Box::new(QueueFilePeer),
        Box::new(Fjall),
        Box::new(Okaywal),
        Box::new(Lmdb),
        Box::new(Naive),
    ];
    match redis::find_server() {
        Some(bin) => all.push(Box::new(redis::Redis { bin })),
        None => {
            let why = "Redis Streams skipped: `redis-server` is not on PATH (e.g. `apt-get install redis-server`)";
            println!("{why}");
            notes.push(why.to_owned());
        }
    }
    all.retain(|s| {
        let name = s.name().to_lowercase();
        name == "durq" || c.only.is_empty() || c.only.iter().any(|o| name.contains(o.as_str()))
    });
    all
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("nats") {
        nats::main(&args[1..]);
        return;
    }
    let config = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut notes = Vec::new();
    let load_before = machine::loadavg();
    println!("load average before: {load_before}");
    let workloads = workloads(&config);
    let systems = systems(&config, &mut notes);
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();

    let mut results = report::Results::default();
    let mut loads = Vec::new();
    for w in &workloads {
        let load = machine::loadavg();
        println!("{}: {} (load average {load})", w.id, w.title);
        loads.push((w.id.to_owned(), load));
        for rep in 0..config.reps {
            for s in &systems {
                let name = s.name();
                if results.settled(w.id, &name) {
                    continue;
                }
                let outcome = in_temp_dir(&config, |dir| s.run(w, dir));
                print_outcome(w.id, &name, rep, config.reps, &outcome);
                results.add(w.id, &name, outcome);
                if name == "durq" {
                    // The workload's bare-I/O reference, right after durq in
                    // every repetition: on a shared disk whose sync rate
                    // moves from one minute to the next, only neighbours in
                    // time can be compared.
                    let outcome = in_temp_dir(&config, |dir| (reference::bare(w.kind).run)(w, dir));
                    print_outcome(w.id, reference::BARE, rep, config.reps, &outcome);
                    results.add(w.id, reference::BARE, outcome);
                }
            }
        }
    }

    let scale = if config.quick {
        reference::Scale { cap: Duration::from_secs(2), write_bytes: 8 << 20, copy_bytes: 1 << 30 }
    } else {
        reference::Scale { cap: config.cap, write_bytes: 512 << 20, copy_bytes: 16 << 30 }
    };
    let references = reference::machine_wide();
    loads.push(("references".to_owned(), machine::loadavg()));
    for r in &references {
        for rep in 0..config.reps {
            let outcome = in_temp_dir(&config, |dir| (r.run)(dir, scale));
            if let Ok(Outcome::Done { messages, secs, .. }) = &outcome {
                println!(
                    "ref {:<28} rep {}/{}: {:>12} /s",
                    r.name,
                    rep + 1,
                    config.reps,
                    common::thousands(*messages as f64 / secs)
                );
            }
            results.add("ref", r.name, outcome);
        }
    }
    let load_after = machine::loadavg();
    println!("load average after: {load_after}");

    let lock =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap_or_default();
    let run = report::Run {
        config: &config,
        workloads: &workloads,
        systems: systems.iter().map(|s| s.name()).collect(),
        references: &references,
        results: &results,
        machine: machine::describe(&config.dir, &lock),
        load_before,
        load_after,
        loads,
        started,
        minutes: clock.elapsed().as_secs_f64() / 60.0,
        notes,
    };
    let table = report::table(&run);
    println!("\n{table}");
    if let Some(out) = &config.out {
        if let Err(e) = std::fs::create_dir_all(out)
            .map_err(Into::into)
            .and_then(|()| plot::svg(&run, &out.join("benchmarks.svg")))
            .and_then(|()| report::write(&run, out))
        {
            eprintln!("could not write to {}: {e}", out.display());
            std::process::exit(1);
        }
        println!("wrote {} and {}", out.join("BENCHMARKS.md").display(), out.join("benchmarks.svg").display());
    }
}

fn print_outcome(workload: &str, name: &str, rep: usize, reps: usize, outcome: &std::result::Result<Outcome, String>) {
    match outcome {
        Ok(Outcome::Done { messages, secs, .. }) => println!(
            "{workload} {name:<16} rep {}/{reps}: {messages:>9} msgs in {secs:>7.3} s = {:>12} msgs/s",
            rep + 1,
            common::thousands(*messages as f64 / secs)
        ),
        Ok(Outcome::Skip(why)) => println!("{workload} {name:<16} n/a: {why}"),
        Err(e) => println!("{workload} {name:<16} rep {}/{reps}: ERROR {e}", rep + 1),
    }
}

/// Runs one measurement in a fresh temporary directory, after a `sync`.
fn in_temp_dir(
    config: &Config,
    run: impl FnOnce(&std::path::Path) -> common::Result<Outcome>,
) -> std::result::Result<Outcome, String> {
    settle();
    let dir = tempfile::Builder::new().prefix("durq-compare-").tempdir_in(&config.dir).map_err(|e| e.to_string())?;
    run(dir.path()).map_err(|e| e.to_string())
}

/// Writes back whatever the cell before left dirty (a peer that never
/// syncs, a removed directory), so that the kernel's writeback of it does
/// not compete with the next cell for the disk and the CPUs.
fn settle() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("sync(1) failed, cells may disturb each other: {e}");
    }
}

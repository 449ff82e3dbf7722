//! Medians, the one table, and docs/BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::Config;
use crate::common::{Outcome, Workload, thousands};
use crate::machine::Machine;
use crate::reference::{BARE, Reference, bare};

type Run_ = std::result::Result<Outcome, String>;

#[derive(Default)]
pub struct Results {
    cells: Vec<(String, String, Vec<Run_>)>,
}

/// What the repetitions of one cell add up to.
pub enum Summary {
    Measured {
        /// Median messages per second.
        rate: f64,
        min: f64,
        max: f64,
        runs: usize,
        /// Fewest messages any repetition did (less than the workload's
        /// count when the cap stopped it).
        messages: u64,
        note: Option<String>,
        not_durable: bool,
    },
    Skip(String),
    Error(String),
    Missing,
}

impl Results {
    pub fn add(&mut self, workload: &str, system: &str, r: Run_) {
        match self.cells.iter_mut().find(|c| c.0 == workload && c.1 == system) {
            Some(c) => c.2.push(r),
            None => self.cells.push((workload.to_owned(), system.to_owned(), vec![r])),
        }
    }

    /// True once a cell needs no more repetitions: it was skipped or failed.
    pub fn settled(&self, workload: &str, system: &str) -> bool {
        self.runs(workload, system).iter().any(|r| matches!(r, Ok(Outcome::Skip(_)) | Err(_)))
    }

    /// The rate of every measured repetition, in the order they ran.
    pub fn rates(&self, workload: &str, system: &str) -> Vec<f64> {
        self.runs(workload, system)
            .iter()
            .filter_map(|r| match r {
                Ok(Outcome::Done { messages, secs, .. }) => Some(*messages as f64 / secs),
                _ => None,
            })
            .collect()
    }

    fn runs(&self, workload: &str, system: &str) -> &[Run_] {
        self.cells.iter().find(|c| c.0 == workload && c.1 == system).map_or(&[], |c| c.2.as_slice())
    }

    pub fn summary(&self, workload: &str, system: &str) -> Summary {
        let runs = self.runs(workload, system);
        let mut rates = Vec::new();
        let mut messages = u64::MAX;
        let mut note = None;
        let mut not_durable = false;
        for r in runs {
            match r {
                Ok(Outcome::Skip(why)) => return Summary::Skip(why.clone()),
                Err(e) => return Summary::Error(e.clone()),
                Ok(Outcome::Done { messages: m, secs, note: n, not_durable: nd }) => {
                    rates.push(*m as f64 / secs);
                    messages = messages.min(*m);
                    note = note.or(n.clone());
                    not_durable |= nd;
                }
            }
        }
        if rates.is_empty() {
            return Summary::Missing;
        }
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        let rate = if rates.len() % 2 == 1 { rates[mid] } else { (rates[mid - 1] + rates[mid]) / 2.0 };
        Summary::Measured {
            rate,
            min: rates[0],
            max: rates[rates.len() - 1],
            runs: rates.len(),
            messages,
            note,
            not_durable,
        }
    }

    pub fn rate(&self, workload: &str, system: &str) -> Option<f64> {
        match self.summary(workload, system) {
            Summary::Measured { rate, .. } => Some(rate),
            _ => None,
        }
    }

    /// The rate of a system that made the workload durable.
    fn durable_rate(&self, workload: &str, system: &str) -> Option<f64> {
        match self.summary(workload, system) {
            Summary::Measured { rate, not_durable: false, .. } => Some(rate),
            _ => None,
        }
    }
}

pub struct Run<'a> {
    pub config: &'a Config,
    pub workloads: &'a [Workload],
    pub systems: Vec<String>,
    pub references: &'a [Reference],
    pub results: &'a Results,
    pub machine: Machine,
    pub load_before: String,
    pub load_after: String,
    /// The load averages when each workload (and the references) began.
    pub loads: Vec<(String, String)>,
    pub started: SystemTime,
    pub minutes: f64,
    pub notes: Vec<String>,
}

fn mb(x: f64) -> String {
    if x >= 100.0 {
        thousands(x)
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.2}×")
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The one table: every workload, its systems and its bare-I/O
/// reference, then the machine-wide references.
pub fn table(run: &Run<'_>) -> String {
    let mut t = String::new();
    t.push_str("| Workload | System | messages/s | MB/s | durq ÷ system | Notes |\n");
    t.push_str("|---|---|---:|---:|---:|---|\n");
    for w in run.workloads {
        let durq = run.results.rate(w.id, "durq");
        let best = run.systems.iter().filter_map(|s| run.results.durable_rate(w.id, s)).fold(0.0, f64::max);
        for (i, s) in run.systems.iter().chain(std::iter::once(&BARE.to_owned())).enumerate() {
            let label = if i == 0 { format!("**{}** {}", w.id, w.title) } else { String::new() };
            let is_bare = s == BARE;
            let (rate, mbs, vs, note) = match run.results.summary(w.id, s) {
                Summary::Measured { rate, min, max, runs, messages, note, not_durable } => {
                    let mut notes = Vec::new();
                    if let Some(d) = durq.filter(|_| is_bare) {
                        notes.push(format!("durq reaches {:.0}% of it", 100.0 * d / rate));
                        let pairs = paired_ratios(&run.results.rates(w.id, "durq"), &run.results.rates(w.id, s));
                        if pairs.len() > 1 {
                            let lo = pairs.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = pairs.iter().copied().fold(0.0, f64::max);
                            notes.push(format!("{:.0}–{:.0}% repetition by repetition", 100.0 * lo, 100.0 * hi));
                        }
                    }
                    if not_durable {
                        notes.push("**not durable**: never fsyncs, so never the fastest".to_owned());
                    }
                    if let Some(n) = note.as_deref().filter(|n| n.starts_with('†')) {
                        notes.push(n.split(';').nth(1).map_or(n.to_owned(), |t| format!("†{t}")));
                    }
                    if messages < w.messages {
                        notes.push(format!(
                            "capped: {} of {} msgs in {}",
                            thousands(messages as f64),
                            thousands(w.messages as f64),
                            secs(w.cap)
                        ));
                    }
                    notes.push(if runs == 1 { "1 run".to_owned() } else { format!("median of {runs}") });
                    if runs > 1 && (max - min) / rate > 0.15 {
                        notes.push(format!("runs {}–{}", thousands(min), thousands(max)));
                    }
                    let fastest = !is_bare && !not_durable && rate >= best;
                    let shown = if fastest { format!("**{}**", thousands(rate)) } else { thousands(rate) };
                    let vs = match durq {
                        Some(_) if s == "durq" => "1".to_owned(),
                        Some(d) => ratio(d / rate),
                        None => "—".to_owned(),
                    };
                    (shown, mb(rate * w.payload as f64 / 1e6), vs, notes.join("; "))
                }
                Summary::Skip(why) => ("n/a".into(), "n/a".into(), "—".into(), why),
                Summary::Error(e) => ("error".into(), "—".into(), "—".into(), format!("error: {e}")),
                Summary::Missing => continue,
            };
            let s = if is_bare { format!("*{s}*") } else { s.clone() };
            let _ = writeln!(t, "| {label} | {s} | {rate} | {mbs} | {vs} | {note} |");
        }
    }
    for (i, r) in run.references.iter().enumerate() {
        let label = if i == 0 { "**Machine references**".to_owned() } else { String::new() };
        let (rate, mbs, note) = match run.results.summary("ref", r.name) {
            Summary::Measured { rate, runs, .. } => {
                let note = if runs == 1 { "1 run".to_owned() } else { format!("median of {runs}") };
                (thousands(rate), mb(rate * 100.0 / 1e6), note)
            }
            Summary::Error(e) => ("error".into(), "—".into(), e),
            _ => continue,
        };
        let _ = writeln!(t, "| {label} | {} | {rate} | {mbs} | — | {note} |", r.name);
    }
    t
}

/// durq's rate over the reference's in each repetition (run back to back,
/// so both saw the disk in the same minute).
fn paired_ratios(durq: &[f64], reference: &[f64]) -> Vec<f64> {
    durq.iter().zip(reference).map(|(d, r)| d / r).collect()
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: SystemTime) -> String {
    let s = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

const NOTES_BEGIN: &str = "<!-- notes:begin (kept when the program rewrites this file) -->";
pub const NOTES_END: &str = "<!-- notes:end -->";

/// Writes `BENCHMARKS.md` into `out` (beside `benchmarks.svg`, which
/// `plot::svg` draws), keeping the hand-written notes block of an existing
/// `BENCHMARKS.md`.
pub fn write(run: &Run<'_>, out: &Path) -> crate::common::Result<()> {
    std::fs::create_dir_all(out)?;
    let md_path = out.join("BENCHMARKS.md");
    let kept = std::fs::read_to_string(&md_path).ok().and_then(|old| {
        let a = old.find(NOTES_BEGIN)? + NOTES_BEGIN.len();
        let b = old[a..].find(NOTES_END)? + a;
        Some(old[a..b].trim().to_owned())
    });

    let c = run.config;
    let mut md = String::new();
    md.push_str("# durq beside its peers\n\n");
    md.push_str(
        "Written by `cargo run --release -p durq-compare` (the `compare/` crate, not part of the \
         default workspace build); rerunning it rewrites this file except the notes block at the end.\n\n",
    );
    let _ = writeln!(
        md,
        "Every system ran every workload in the same run, on the same machine and file system; \
         each cell is the median of {} repetition{} (a fresh temporary directory each, after a `sync` so that no cell writes back what the one before left dirty). \
         **messages/s** counts the workload's messages from the first send (or, for W4 and W7, the first \
         read) until the last one is durable; **MB/s** is payload bytes (10⁶) per second; \
         **durq ÷ system** is durq's messages/s over the system's (above 1: durq is faster). \
         The fastest system of each workload is in bold (a row marked not durable never is). \
         Each workload ends with its *bare I/O* row: the same bytes through the same kind of I/O with \
         nothing else, measured in every repetition right after durq; its durq ÷ column is how close \
         durq comes to that limit, and its notes give the ratio repetition by repetition (the two ran \
         back to back, so they saw the disk in the same minute). Setup (opening, and W4's and W7's preload) is not timed. \
         A cell stops sending (or consuming) after {} and reports the rate over what it did (\"capped\").\n",
        c.reps,
        if c.reps == 1 { "" } else { "s" },
        secs(c.cap)
    );
    if c.quick {
        md.push_str("> **`--quick` run: workloads 100 times smaller, one repetition. Not a measurement.**\n\n");
    }
    md.push_str("## Results\n\n");
    md.push_str(&table(run));
    md.push_str("\n![messages per second by workload and system, log scale](benchmarks.svg)\n\n");

    md.push_str("## The machine\n\n| | |\n|---|---|\n");
    for (k, v) in &run.machine.rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "| Run | {}, {:.0} minutes |", utc(run.started), run.minutes);
    let _ = writeln!(md, "| Load average (1, 5, 15 min) | before: {}; after: {} |", run.load_before, run.load_after);
    let during: Vec<String> =
        run.loads.iter().map(|(what, l)| format!("{what} {}", l.split_whitespace().next().unwrap_or("?"))).collect();
    let _ = writeln!(md, "| 1-min load when each part began | {} |", during.join(", "));
    let dashes = if c.args.is_empty() { "" } else { " --" };
    let _ = writeln!(
        md,
        "| Command | `cargo run --release -p durq-compare{dashes}{}` (reps {}, cap {}) |",
        c.args,
        c.reps,
        secs(c.cap)
    );
    md.push('\n');

    md.push_str("## How each system does each workload\n\n");
    for s in &run.systems {
        let _ = writeln!(md, "- **{s}**");
        for w in run.workloads {
            let text = match run.results.summary(w.id, s) {
                Summary::Measured { note: Some(n), .. } => n.trim_start_matches('†').trim().to_owned(),
                Summary::Measured { note: None, .. } => "as the workload says".into(),
                Summary::Skip(why) => format!("not run: {why}"),
                Summary::Error(e) => format!("failed: {e}"),
                Summary::Missing => continue,
            };
            let _ = writeln!(md, "  - {}: {text}", w.id);
        }
    }
    let _ = writeln!(
        md,
        "- **{BARE}** (each workload's reference: the same bytes through the same kind of I/O, nothing else)"
    );
    for w in run.workloads {
        let _ = writeln!(md, "  - {}: {}", w.id, bare(w.kind).what);
    }
    md.push_str("\nThe machine references:\n\n");
    for r in run.references {
        let _ = writeln!(md, "- **{}**: {}", r.name, r.what);
    }
    if !run.notes.is_empty() {
        md.push('\n');
        for n in &run.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push_str("\n## Reading the numbers\n\n");
    md.push_str(NOTES_BEGIN);
    md.push_str("\n\n");
    md.push_str(kept.as_deref().unwrap_or("(No notes yet.)"));
    md.push_str("\n\n");
    md.push_str(NOTES_END);
    md.push('\n');
    std::fs::write(&md_path, md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(12.34), "12.3");
        assert_eq!(ratio(2.345), "2.35×");
        assert_eq!(ratio(43.7), "43.7×");
        assert_eq!(mb(0.031), "0.03");
    }

    #[test]
    fn ratios_pair_repetitions_in_order() {
        assert_eq!(paired_ratios(&[10.0, 30.0, 8.0], &[20.0, 30.0, 4.0]), vec![0.5, 1.0, 2.0]);
        assert_eq!(paired_ratios(&[10.0], &[]), Vec::<f64>::new());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc(t), "2024-02-29 12:34 UTC");
    }

    #[test]
    fn medians_skips_and_errors() {
        let mut r = Results::default();
        for (m, s) in [(100, 1.0), (300, 1.0), (200, 1.0)] {
            r.add("W1", "a", Ok(Outcome::Done { messages: m, secs: s, note: None, not_durable: false }));
        }
        assert_eq!(r.rate("W1", "a"), Some(200.0));
        assert!(!r.settled("W1", "a"));
        r.add("W1", "b", Ok(Outcome::Skip("no fsync".into())));
        assert!(r.settled("W1", "b"));
        assert!(matches!(r.summary("W1", "b"), Summary::Skip(w) if w == "no fsync"));
        r.add("W1", "c", Err("boom".into()));
        assert!(matches!(r.summary("W1", "c"), Summary::Error(_)));
        assert!(matches!(r.summary("W2", "a"), Summary::Missing));
    }
}

//! `durq verify`: a read-only check of every byte of a queue.

use std::io::{self, Write};

use durq::verify::Report;

use crate::progress::Progress;
use crate::target::{LOCAL_FILES_ONLY, Target};
use crate::{CliResult, stream_error};

/// Check every record and checkpoint, those of the groups' dead-letter
/// queues included, without modifying anything. Prints one line per problem
/// (file, byte position, offset, what is wrong) and exits 1 if there is
/// any; notes (such as an unrecovered torn tail, or how to recover a
/// damaged meta file) do not fail.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq verify /var/lib/orders")]
pub struct Args {
    /// Queue directory; must already hold a queue.
    dir: Target,
}

pub fn run(args: Args) -> CliResult<()> {
    let dir = args.dir.local("verify", LOCAL_FILES_ONLY)?;
    let progress = Progress::spinner(&format!("verifying {}", dir.display()));
    let report = durq::verify::verify(dir);
    drop(progress);
    let report = report?;
    let mut out = io::stdout().lock();
    print_report(&mut out, &report).map_err(stream_error("writing stdout"))?;
    match report.problems.len() {
        0 => Ok(()),
        n => Err(format!("{}: verify found {n} problem(s)", dir.display()).into()),
    }
}

fn print_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    for problem in &report.problems {
        writeln!(out, "problem: {problem}")?;
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(
        out,
        "{} records, {} segments, {} checkpoints: {} problem(s), {} note(s)",
        report.records,
        report.segments,
        report.checkpoints,
        report.problems.len(),
        report.notes.len()
    )?;
    out.flush()
}

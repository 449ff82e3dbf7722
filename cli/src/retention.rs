//! `durq retention`: shows or changes a queue's retention limits.

use std::io::{self, Write};
use std::time::Duration;

use durq::{Queue, Retention};

use crate::target::{LOCAL_FILES_ONLY, Target};
use crate::{CliResult, stream_error};

/// Show or change the retention limits of a queue (per partition; unlimited
/// by default).
///
/// With a limit set, a retention pass (after a roll, or `durq gc`) removes
/// a partition's oldest segments past it even if a consumer group has not
/// processed them: the group's loss is recorded first (`durq stat` shows
/// it) and the group resumes at the first kept record. The last two
/// segments of a partition always stay. Changing a limit needs the queue
/// closed by every process (like a change of durability), and removes
/// nothing by itself. Prints the limits in force afterwards.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq retention /var/lib/orders --max-bytes 1073741824 --max-age 604800")]
pub struct Args {
    /// Queue directory; must already hold a queue.
    dir: Target,
    /// Most bytes of segment files per partition, or `unlimited`.
    #[arg(long, value_name = "BYTES|unlimited", value_parser = parse_bytes)]
    max_bytes: Option<Limit<u64>>,
    /// Longest a segment is kept after its last record, in seconds, or
    /// `unlimited`.
    #[arg(long, value_name = "SECS|unlimited", value_parser = parse_age)]
    max_age: Option<Limit<Duration>>,
}

/// A limit as given on the command line.
#[derive(Clone, Copy)]
enum Limit<T> {
    Unlimited,
    At(T),
}

impl<T> Limit<T> {
    fn value(self) -> Option<T> {
        match self {
            Limit::Unlimited => None,
            Limit::At(v) => Some(v),
        }
    }
}

fn parse_bytes(s: &str) -> Result<Limit<u64>, String> {
    match s {
        "unlimited" => Ok(Limit::Unlimited),
        _ => s.parse().map(Limit::At).map_err(|_| format!("{s:?} is neither a number of bytes nor `unlimited`")),
    }
}

fn parse_age(s: &str) -> Result<Limit<Duration>, String> {
    match s {
        "unlimited" => Ok(Limit::Unlimited),
        _ => crate::parse_secs(s).map(Limit::At),
    }
}

pub fn run(args: Args) -> CliResult<()> {
    let dir = args.dir.local("retention", LOCAL_FILES_ONLY)?;
    let stored = Queue::open_existing(dir)?.config().retention;
    let retention = if args.max_bytes.is_none() && args.max_age.is_none() {
        stored
    } else {
        let changed = Retention {
            max_bytes: args.max_bytes.map_or(stored.max_bytes, Limit::value),
            max_age: args.max_age.map_or(stored.max_age, Limit::value),
        };
        Queue::change_retention(dir, changed)?.retention
    };
    let mut out = io::stdout().lock();
    writeln!(out, "retention limits per partition: {retention}")
        .and_then(|()| out.flush())
        .map_err(stream_error("writing stdout"))?;
    Ok(())
}

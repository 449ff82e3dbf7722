//! `durq gc`: removes, by hand, the segments every consumer group has passed.

use std::io::{self, Write};

use durq::Queue;
use durq::{Reclaimed, RetentionLimit};

use crate::json::json_string;
use crate::target::{LOCAL_FILES_ONLY, Target};
use crate::{CliResult, stream_error};

/// Remove the segments every consumer group has processed, and those the
/// retention limits let go, and say what each partition freed, what holds
/// the rest back, and which groups lost records to a limit.
///
/// This is what a roll, or a roll on a full disk, does by itself; gc does
/// it now, and reports a failure instead of counting it. Safe while
/// producers and consumers run. The last two segments of a partition always
/// stay, and a group that has not started in a partition keeps all of it.
/// Prints one line per partition, then the total.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq gc /var/lib/orders")]
pub struct Args {
    /// Queue directory; must already hold a queue.
    dir: Target,
}

pub fn run(args: Args) -> CliResult<()> {
    let queue = Queue::open_existing(args.dir.local("gc", LOCAL_FILES_ONLY)?)?;
    let reclaimed = queue.reclaim()?;
    let mut text: String = reclaimed.iter().map(partition_line).collect();
    for r in &reclaimed {
        for s in &r.skipped {
            text += &format!(
                "partition {}: group {} lost offsets {}..{} to the retention limits (recorded; durq stat shows it)\n",
                s.skipped.partition,
                json_string(&s.group),
                s.skipped.from,
                s.skipped.to
            );
        }
    }
    let segments: usize = reclaimed.iter().map(|r| r.segments_removed).sum();
    let bytes: u64 = reclaimed.iter().map(|r| r.bytes_removed).sum();
    text += &format!("removed {segments} segment(s), {bytes} bytes\n");
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}

/// `partition P: removed N segment(s), B bytes; K kept from offset F: <why>`.
fn partition_line(r: &Reclaimed) -> String {
    let why = match (&r.limit, r.limited_to) {
        (limit, Some(_)) => format!("the retention limits (the groups alone: {})", groups_limit(limit)),
        (limit, None) => groups_limit(limit),
    };
    format!(
        "partition {}: removed {} segment(s), {} bytes; {} kept from offset {}: {why}\n",
        r.partition, r.segments_removed, r.bytes_removed, r.segments_kept, r.first_offset
    )
}

/// What the groups let retention remove, in words.
fn groups_limit(limit: &RetentionLimit) -> String {
    match limit {
        RetentionLimit::NoGroup => "no consumer group, so every record stays".to_owned(),
        RetentionLimit::NotStarted(group) => format!("group {} has not started here", json_string(group)),
        RetentionLimit::Processed { offset, group } => {
            format!("every group has processed up to offset {offset} (group {})", json_string(group))
        }
    }
}

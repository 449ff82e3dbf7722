//! `durq dlq`: a group's dead letters, listed or sent back.

use std::io::{self, BufWriter, Write};

use durq::DeadLetter;

use crate::backend::{self, Backend, OnQueue};
use crate::json::json_string;
use crate::progress::Progress;
use crate::target::Target;
use crate::{CliResult, stream_error};

/// List a consumer group's dead letters (records that failed too often), or
/// send them back into the queue.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  durq dlq /var/lib/orders --group billing list --limit 20\n  \
                  durq dlq nats://127.0.0.1:4222/orders --group billing replay")]
pub struct Args {
    /// Queue directory, or a queue on NATS (nats://HOST:PORT/QUEUE); it
    /// must exist.
    #[arg(value_name = "QUEUE")]
    dir: Target,
    /// The group whose dead-letter queue to use; it must exist.
    #[arg(long, value_name = "G")]
    group: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Clone, Copy)]
enum Action {
    /// Print the dead letters not yet replayed, one per line.
    ///
    /// Oldest first, as `dlq_offset=N partition=P offset=O deliveries=D error="..."
    /// [key="..."] payload="..."`. Texts are decoded as UTF-8 (invalid bytes
    /// become U+FFFD) and quoted with JSON escapes, so a letter never spans
    /// two lines. Pages: `--limit K`, then `--from` the last dlq_offset + 1.
    #[command(
        after_help = "Example (the second page of 20):\n  durq dlq /var/lib/orders --group billing list --from 20 --limit 20"
    )]
    List {
        /// Start at this dlq_offset (earlier ones are left out).
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Print at most K dead letters.
        #[arg(long, value_name = "K")]
        limit: Option<usize>,
    },
    /// Send every dead letter back into the queue and print how many.
    ///
    /// Each goes to the end of the queue with its original key (so to the
    /// same partition if it had one), and leaves the dead-letter queue once
    /// its re-send is durable.
    #[command(after_help = "Example:\n  durq dlq /var/lib/orders --group billing replay")]
    Replay,
}

pub fn run(args: Args) -> CliResult<()> {
    backend::with_existing(&args.dir, &args)
}

impl OnQueue<()> for &Args {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<()> {
        dlq(queue, self)
    }
}

fn dlq<Q: Backend>(queue: &Q, args: &Args) -> CliResult<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    match args.action {
        Action::List { from, limit } => {
            // Read as far as the page's end: everything when it starts at
            // an offset (the replayed ones are not counted, so where that
            // offset is among the letters is not known), else `limit`.
            let max = if from.is_some() { usize::MAX } else { limit.unwrap_or(usize::MAX) };
            let letters = queue.dead_letters(&args.group, max)?;
            let page = letters.iter().filter(|l| from.is_none_or(|from| l.dlq_offset >= from));
            for letter in page.take(limit.unwrap_or(usize::MAX)) {
                writeln!(out, "{}", describe(letter)).map_err(stream_error("writing stdout"))?;
            }
            out.flush().map_err(stream_error("writing stdout"))?;
        }
        Action::Replay => {
            let progress = Progress::spinner(&format!("replaying the dead letters of group {}", args.group));
            let replayed = queue.replay_dead_letters(&args.group);
            drop(progress);
            let replayed = replayed?;
            writeln!(out, "{replayed}").and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
        }
    }
    Ok(())
}

/// One dead letter as one line.
fn describe(letter: &DeadLetter) -> String {
    let key = match &letter.key {
        Some(key) => format!(" key={}", json_string(&String::from_utf8_lossy(key))),
        None => String::new(),
    };
    format!(
        "dlq_offset={} partition={} offset={} deliveries={} error={}{key} payload={}",
        letter.dlq_offset,
        letter.original.partition,
        letter.original.offset,
        letter.deliveries,
        json_string(&letter.reason),
        json_string(&String::from_utf8_lossy(&letter.payload)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use durq::Position;

    #[test]
    fn a_dead_letter_is_one_escaped_line() {
        let letter = DeadLetter {
            dlq_offset: 7,
            original: Position { partition: 2, offset: 41 },
            timestamp_ms: 5,
            failed_at_ms: 6,
            deliveries: 3,
            reason: "bad \"json\"\nat line 2".into(),
            key: Some(b"k\n".to_vec()),
            payload: b"line 1\nline 2\r\t\xff\\".to_vec(),
        };
        assert_eq!(
            describe(&letter),
            r#"dlq_offset=7 partition=2 offset=41 deliveries=3 error="bad \"json\"\nat line 2" key="k\n" payload="line 1\nline 2\r\t�\\""#
        );
        let unkeyed = DeadLetter { key: None, payload: b"p".to_vec(), ..letter };
        assert!(
            describe(&unkeyed).ends_with(r#"error="bad \"json\"\nat line 2" payload="p""#),
            "{}",
            describe(&unkeyed)
        );
    }
}

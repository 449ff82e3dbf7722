//! `durq dlq`: a group's dead letters, listed or sent back.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use durq::group::dead_letter;
use durq::{Queue, StoredRecord};

use crate::stat::json_string;
use crate::{CliResult, stream_error};

/// List a consumer group's dead letters (records that failed too often), or
/// send them back into the queue.
#[derive(clap::Args)]
pub struct Args {
    /// Queue directory; must already hold a queue.
    dir: PathBuf,
    /// The group whose dead-letter queue to use; it must exist.
    #[arg(long, value_name = "G")]
    group: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Print the dead letters not yet replayed, one per line.
    ///
    /// Oldest first, as `dlq_offset=N partition=P offset=O deliveries=D error="..."
    /// [key="..."] payload="..."`. Texts are decoded as UTF-8 (invalid bytes
    /// become U+FFFD) and quoted with JSON escapes, so a letter never spans
    /// two lines.
    List {
        /// Print at most N dead letters.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Send every dead letter back into the queue and print how many.
    ///
    /// Each goes to the end of the queue with its original key (so to the
    /// same partition if it had one), and leaves the dead-letter queue once
    /// its re-send is durable.
    Replay,
}

pub fn run(args: Args) -> CliResult<()> {
    let queue = Queue::open_existing(&args.dir)?;
    let mut out = BufWriter::new(io::stdout().lock());
    match args.action {
        Action::List { limit } => {
            let letters = queue.dead_letters(&args.group, limit.unwrap_or(usize::MAX))?;
            let mut damaged = 0;
            for record in &letters {
                let line = describe(record).unwrap_or_else(|reason| {
                    damaged += 1;
                    format!("dlq_offset={} damaged={}", record.position.offset, json_string(reason))
                });
                writeln!(out, "{line}").map_err(stream_error("writing stdout"))?;
            }
            out.flush().map_err(stream_error("writing stdout"))?;
            if damaged > 0 {
                return Err(format!("{damaged} dead letter(s) could not be decoded").into());
            }
        }
        Action::Replay => {
            let replayed = queue.replay_dead_letters(&args.group)?;
            writeln!(out, "{replayed}").and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
        }
    }
    Ok(())
}

/// One dead letter as one line, or why its envelope cannot be decoded.
fn describe(record: &StoredRecord) -> Result<String, &'static str> {
    let letter = dead_letter::decode(&record.payload)?;
    let key = match &record.key {
        Some(key) => format!(" key={}", json_string(&String::from_utf8_lossy(key))),
        None => String::new(),
    };
    Ok(format!(
        "dlq_offset={} partition={} offset={} deliveries={} error={}{key} payload={}",
        record.position.offset,
        letter.partition,
        letter.offset,
        letter.delivery_count,
        json_string(letter.error),
        json_string(&String::from_utf8_lossy(letter.payload)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use durq::Position;
    use durq::group::dead_letter::DeadLetter;

    fn stored(key: Option<&[u8]>, payload: Vec<u8>) -> StoredRecord {
        StoredRecord {
            position: Position { partition: 0, offset: 7 },
            timestamp_ms: 1,
            key: key.map(<[u8]>::to_vec),
            payload,
        }
    }

    #[test]
    fn a_dead_letter_is_one_escaped_line() {
        let envelope = dead_letter::encode(&DeadLetter {
            partition: 2,
            offset: 41,
            timestamp_ms: 5,
            delivery_count: 3,
            error: "bad \"json\"\nat line 2",
            payload: b"line 1\nline 2\r\t\xff\\",
        });
        let line = describe(&stored(Some(b"k\n"), envelope)).unwrap();
        assert_eq!(
            line,
            r#"dlq_offset=7 partition=2 offset=41 deliveries=3 error="bad \"json\"\nat line 2" key="k\n" payload="line 1\nline 2\r\t�\\""#
        );
        assert_eq!(describe(&stored(None, b"garbage".to_vec())), Err("not a dead letter"));
    }
}

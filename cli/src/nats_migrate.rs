//! `durq migrate DIR nats://…`: a local queue's unconsumed records, at the
//! same offsets, and its groups' positions, moved to a new queue on NATS
//! (`durq_nats::migrate`; docs/SCALE_OUT.md, "Migration").

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use durq::Position;

use crate::{CliResult, stream_error};

/// Move a local queue to NATS: the records from the lowest position of the
/// groups named (all kept records if none is), at the same offsets and
/// partitions, with their keys; each group's position, and its dead letters
/// not yet replayed.
///
/// Prints `<partition> <offset>` for each record once the server stored it
/// (as `durq produce` does), then `group <G> <partition> <offset>` for each
/// group's position written, and `group <G> dead-letters <n>` for a group
/// whose dead-letter stream on NATS holds `n` > 0 letters. The local queue is only read; stop its
/// producers and consumers first (records sent later are not moved). The
/// target queue must not exist: the migration creates it, and it can be
/// opened once the migration is done. A migration that stopped (killed,
/// lost its server) is finished by running the same command again: it
/// goes on where it stopped, and copies nothing twice.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq migrate /var/lib/orders nats://127.0.0.1:4222/orders --group billing")]
pub struct Args {
    /// The local queue's directory.
    dir: PathBuf,
    /// The NATS queue to create: nats://HOST:PORT/QUEUE (several servers:
    /// nats://H1:P1,H2:P2/QUEUE).
    #[arg(value_name = "nats://HOST:PORT/QUEUE")]
    url: String,
    /// A consumer group whose position moves with the queue (repeat for
    /// several).
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
}

pub fn run(args: Args) -> CliResult<()> {
    if !args.url.starts_with("nats://") {
        return Err(format!("{}: not a NATS queue's address (nats://HOST:PORT/QUEUE)", args.url).into());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let migrated = durq_nats::migrate(&args.dir, &args.url, &args.groups, |positions: &[Position]| {
        let mut text = String::new();
        for p in positions {
            text += &format!("{} {}\n", p.partition, p.offset);
        }
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|source| durq::Error::Io {
            op: "write",
            path: "stdout".into(),
            source,
        })
    })?;
    for group in &migrated.groups {
        for (p, checkpoint) in group.checkpoints.iter().enumerate() {
            writeln!(out, "group {} {p} {checkpoint}", group.name).map_err(stream_error("writing stdout"))?;
        }
        if group.dead_letters > 0 {
            writeln!(out, "group {} dead-letters {}", group.name, group.dead_letters)
                .map_err(stream_error("writing stdout"))?;
        }
    }
    out.flush().map_err(stream_error("writing stdout"))?;
    Ok(())
}

//! `durq`: produce, consume, inspect and verify durq queues from the shell.
//!
//! - `durq produce DIR [--partitions N] [--durability D] [--segment-bytes B]
//!   [--record-bytes-max B] [--key-sep C]` sends each stdin line as one
//!   message (creating the queue, but not its parent directory, if needed)
//!   and prints `<partition> <offset>` for each once it is acknowledged, in
//!   input order. Queue options apply when it creates the queue; an existing
//!   one keeps its stored values, so they may be left out, and those given
//!   must match.
//! - `durq consume DIR --group G [--max-batch N] [--limit N] [--idle-exit SECS]
//!   [--format text|json] [--commit sync|interval:MS|buffered]` prints each payload on its own line (or a JSON
//!   object with its delivery count) as a member of group `G`; a batch is
//!   committed only after its output has been flushed. SIGINT and SIGTERM
//!   finish the current batch and exit 0.
//! - `durq stat DIR [--json] [--watch [SECS]]` shows each partition's offsets, segments and
//!   bytes; and each group's members (alive, hung or dead), each slot's
//!   holder, epoch and heartbeat, committed offsets, lag and dead letters.
//!   Read-only: no lock, no write, no recovery (a partition the next open
//!   will repair is shown as needing recovery). `--watch` repeats it every
//!   SECS (2) with rates in and out, drawn in place on a terminal.
//! - `durq tail DIR [--from earliest|latest|OFFSET|TIME] [--partition P]
//!   [-f] [--format text|json]` prints records without joining or moving
//!   any group (nothing is created or committed); `-f` follows new records
//!   as they become visible.
//! - `durq group reset DIR --group G --to earliest|latest|OFFSET|TIME` moves
//!   a group without live members and prints its new position per partition;
//!   `durq group delete DIR --group G` deletes one and says so on stdout.
//! - `durq dlq DIR --group G list [--from N] [--limit K]` prints a group's
//!   dead letters, one per line, a page at a time; `durq dlq DIR --group G
//!   replay` sends them back into the queue and prints how many.
//! - `durq verify DIR` checks every byte of the queue, its dead-letter
//!   queues included, read-only.
//! - `durq gc DIR` removes the segments every group has processed (as a
//!   roll does by itself) and prints what each partition freed and what
//!   holds the rest back, and which groups lost records to a retention
//!   limit.
//! - `durq retention DIR [--max-bytes B|unlimited] [--max-age SECS|unlimited]`
//!   shows or changes the retention limits (per partition; the queue must
//!   be closed to change them).
//! - `durq migrate DIR nats://host:port/QUEUE [--group G]...` moves a local
//!   queue's unconsumed records, at the same offsets, and the groups'
//!   positions to a new queue on NATS JetStream, printing `<partition>
//!   <offset>` per record stored and `group <G> <partition> <offset>` per
//!   position; run again, it finishes a migration that stopped.
//!
//! `produce` and `stat` take a queue on NATS, `nats://host:port/QUEUE` (or
//! `nats://h1:p1,h2:p2/QUEUE`), in place of `DIR`, with the same output;
//! the other commands refuse an address with an error that says why
//! (`target.rs`), never taking it for a path.
//! - `durq completions bash|zsh|fish|elvish|powershell` prints the shell's
//!   completion script.
//!
//! `durq -v <command>` (`-vv`, `-vvv`, or `RUST_LOG`) logs the library's
//! events (recovery, takeovers, fencing, retries, dead letters) on stderr;
//! see `logging.rs` and docs/OBSERVABILITY.md.
//!
//! Only `produce` creates a queue; the other commands refuse a directory that
//! is not one, so a typo in `DIR` is an error rather than a new empty queue.
//!
//! Exit codes: 0 success, 1 runtime error or damage found by `verify`,
//! 2 usage error. Errors are one line on stderr: `durq: <error>`. A closed
//! stdout (`durq consume DIR --group G | head -1`) is a runtime error: the
//! batch being written is not committed, and the exit code is 1 even when
//! stderr is closed too (`2>&1 | head -1`) and the line cannot be shown.

mod backend;
mod completions;
mod consume;
mod dlq;
mod gc;
mod group;
mod json;
#[cfg(feature = "tracing")]
mod logging;
mod nats_migrate;
mod nats_stat;
mod produce;
mod progress;
mod record_line;
mod retention;
mod stat;
mod table;
mod tail;
mod target;
mod verify;
mod watch;

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::target::Target;

/// An error to report as `durq: <error>` with exit code 1.
type CliError = Box<dyn std::error::Error>;
type CliResult<T> = Result<T, CliError>;

/// A number of seconds as given on the command line (decimals allowed).
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a non-negative number of seconds"))
}

/// Embedded durable message queue: produce, consume, inspect and verify.
#[derive(Parser)]
#[command(
    name = "durq",
    version,
    after_help = "Examples:\n  \
                  seq 1 5 | durq produce /tmp/q\n  \
                  durq consume /tmp/q --group g --idle-exit 1\n  \
                  durq tail /tmp/q --from latest -f\n  \
                  durq stat /tmp/q --watch\n  \
                  seq 1 5 | durq produce nats://127.0.0.1:4222/q"
)]
struct Cli {
    /// Log what durq does on stderr (before the command: `durq -v consume
    /// ...`): -v recovery, takeovers, fencing, retries and dead letters;
    /// -vv also commits and batches; -vvv every send and sync. RUST_LOG
    /// (e.g. `RUST_LOG=durq=debug`) decides instead when set.
    #[cfg(feature = "tracing")]
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Produce(produce::Args),
    Consume(consume::Args),
    Stat(stat::Args),
    Tail(tail::Args),
    /// Reset or delete a consumer group (one without live members).
    #[command(subcommand)]
    Group(group::Command),
    Dlq(dlq::Args),
    Verify(verify::Args),
    Gc(gc::Args),
    Retention(retention::Args),
    Migrate(nats_migrate::Args),
    Completions(completions::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    #[cfg(feature = "tracing")]
    if let Err(e) = logging::init(cli.verbose) {
        report(e);
        return ExitCode::from(2);
    }
    let outcome = match cli.command {
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        // `stat` is dispatched here, not in stat.rs: watch.rs draws with
        // stat.rs's pieces and nats_stat.rs with watch.rs's loop, so stat.rs
        // must call into neither.
        Command::Stat(args) => match (args.watch, &args.queue) {
            (Some(every), Target::Dir(dir)) => watch::run(dir, every, args.json),
            (Some(every), Target::Nats(url)) => nats_stat::watch(url, every, args.json),
            (None, Target::Dir(dir)) => stat::run(dir, args.json),
            (None, Target::Nats(url)) => nats_stat::run(url, args.json),
        },
        Command::Tail(args) => tail::run(args),
        Command::Group(command) => group::run(command),
        Command::Dlq(args) => dlq::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Retention(args) => retention::run(args),
        Command::Migrate(args) => nats_migrate::run(args),
        Command::Completions(args) => completions::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(e);
            ExitCode::FAILURE
        }
    }
}

/// Reports a clap error as one line (clap's own report spans several), or
/// prints `--help` / `--version`, which clap also delivers as an "error".
fn usage_error(e: clap::Error) -> ExitCode {
    // Nothing useful can be done if the stream is gone.
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // A bare `durq` gets the whole help, still as a usage error.
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    // clap's first paragraph is the error, sometimes continued on indented
    // lines (the missing arguments); usage and hints follow a blank line.
    let text = e.to_string();
    let paragraph: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let message = paragraph.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    report(format_args!("{message} (try 'durq --help')"));
    ExitCode::from(2)
}

/// Writes `durq: <message>` to stderr. Unlike `eprintln!`, which panics
/// (exit 101) when stderr is a closed pipe, a failed write is dropped: there
/// is no one left to tell, and the exit code still says what happened.
fn report(message: impl Display) {
    let _ = writeln!(std::io::stderr(), "durq: {message}");
}

/// Adds what the CLI was doing to an I/O error on a standard stream, whose
/// bare message ("Broken pipe") would not say which stream failed.
fn stream_error(what: &'static str) -> impl Fn(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and subcommand, by its full name.
    fn commands(command: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
        let name = format!("{prefix}{}", command.get_name());
        for sub in command.get_subcommands() {
            commands(sub, &format!("{name} "), out);
        }
        out.push((name, command.clone()));
    }

    #[test]
    fn every_help_ends_with_an_example() {
        let mut all = Vec::new();
        commands(&Cli::command(), "", &mut all);
        assert!(all.len() >= 14, "{}", all.len());
        for (name, mut command) in all {
            let help = command.render_long_help().to_string();
            let example = help.rfind("Example").unwrap_or_else(|| panic!("`{name} --help` has no example:\n{help}"));
            let tail = &help[example..];
            assert!(tail.contains("durq "), "`{name} --help` ends with an example that runs nothing:\n{tail}");
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

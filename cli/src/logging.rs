//! The library's `tracing` events on stderr: `-v` shows `info` (recovery,
//! slots taken and taken over, fencing, retries, dead letters), `-vv`
//! `debug` (commits, batches), `-vvv` `trace` (every send and sync);
//! `RUST_LOG`, when set, decides instead (`RUST_LOG=durq=debug`). Without
//! either, nothing is logged, so the command's stderr stays its one-line
//! errors.

use tracing_subscriber::EnvFilter;

/// Installs the stderr logger for `verbose` `-v` flags, or as `RUST_LOG`
/// says; a `RUST_LOG` that does not parse is a usage error.
pub fn init(verbose: u8) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).map_err(|e| format!("RUST_LOG={directives:?}: {e}"))?,
        Err(_) => match verbose {
            0 => return Ok(()),
            1 => EnvFilter::new("durq=info"),
            2 => EnvFilter::new("durq=debug"),
            _ => EnvFilter::new("durq=trace"),
        },
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    Ok(())
}

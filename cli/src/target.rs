//! The queue a command works on: a local directory, or a queue on NATS
//! JetStream given by address (`nats://host:port/QUEUE`, or
//! `nats://host1:port1,host2:port2/QUEUE` for a cluster).
//!
//! Every command that takes a queue takes a [`Target`], so an address is
//! never taken for a path: a command that works on NATS dispatches on it
//! (`backend.rs`), and one that does not says so and why.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::CliResult;

/// What `durq verify`, `gc` and `retention` are on NATS.
pub const LOCAL_FILES_ONLY: &str =
    "works on a local queue's files only (on NATS the servers keep the files; `durq stat` shows the queue)";

/// A command's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A queue directory.
    Dir(PathBuf),
    /// A NATS queue's address, as `durq_nats::Queue::open` takes it.
    Nats(String),
}

impl FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Target, Self::Err> {
        Ok(match s.starts_with(NATS_SCHEME) {
            true => Target::Nats(s.to_owned()),
            false => Target::Dir(PathBuf::from(s)),
        })
    }
}

/// What starts a NATS address.
const NATS_SCHEME: &str = "nats://";

impl Target {
    /// The directory, or an error saying that `durq <command>` does not
    /// work on NATS and why (`reason`).
    pub fn local(&self, command: &str, reason: &str) -> CliResult<&Path> {
        match self {
            Target::Dir(dir) => Ok(dir),
            Target::Nats(url) => Err(format!("`durq {command}` on nats:// {reason}: {url}").into()),
        }
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Dir(dir) => write!(f, "{}", dir.display()),
            Target::Nats(url) => f.write_str(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_address_is_never_a_path() {
        let parse = |s: &str| s.parse::<Target>().unwrap();
        assert_eq!(parse("nats://127.0.0.1:4222/orders"), Target::Nats("nats://127.0.0.1:4222/orders".into()));
        assert_eq!(parse("nats://a:1,b:2/orders"), Target::Nats("nats://a:1,b:2/orders".into()));
        assert_eq!(parse("/var/lib/orders"), Target::Dir("/var/lib/orders".into()));
        assert_eq!(parse("nats:/x"), Target::Dir("nats:/x".into()), "not the scheme: a relative path");
        let err = parse("nats://h:1/q").local("verify", LOCAL_FILES_ONLY).unwrap_err();
        assert!(err.to_string().starts_with("`durq verify` on nats:// works on a local queue's files only"), "{err}");
        assert_eq!(parse("q").local("verify", LOCAL_FILES_ONLY).unwrap(), Path::new("q"));
    }
}

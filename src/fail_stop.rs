//! Fail-stop after a failed sync.
//!
//! After fsync or msync reports an error, the kernel may already have dropped
//! the dirty pages and marked them clean, so a retried sync can report success
//! for data that never reached the disk (the "fsyncgate" lesson from
//! PostgreSQL). A queue handle therefore remembers the first sync failure and
//! refuses every later write with [`Error::Stopped`] until it is reopened,
//! which re-reads what is really on disk.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The first sync failure of one queue handle, shared by its producers.
#[derive(Debug, Default)]
pub(crate) struct FailStop {
    cause: OnceLock<String>,
}

impl FailStop {
    /// `Err(Stopped)` once a sync has failed.
    pub(crate) fn check(&self) -> Result<()> {
        match self.cause.get() {
            Some(cause) => Err(Error::Stopped { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Records `error` as the reason to stop (the first one wins) and returns
    /// it for the caller to report.
    pub(crate) fn stop(&self, error: Error) -> Error {
        let _ = self.cause.set(error.to_string());
        error
    }
}

//! The crate's error type.
//!
//! Every error that comes from the world (a file, the disk, a caller's input,
//! the caller's own closure) is a typed variant that names what failed and
//! where. Broken internal invariants are `assert!`s, not errors.

use std::path::PathBuf;

/// A boxed error from the caller's `process` closure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in durq.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What durq was doing (`"open"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory it was doing it to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The path exists but is not a durq queue; nothing in it was touched.
    #[error("{path} is not a durq queue: {reason}")]
    NotAQueue {
        /// The directory that was opened.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// The queue was written by a newer format version than this build reads.
    #[error("{path}: format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file that carries the version.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Options given to open an existing queue contradict the stored ones.
    #[error("{path}: the queue was created with {option} = {stored}, cannot open it with {requested}")]
    OptionsConflict {
        /// The queue directory.
        path: PathBuf,
        /// The option's name.
        option: &'static str,
        /// The value stored in the queue's meta file.
        stored: String,
        /// The value the caller asked for.
        requested: String,
    },

    /// An option is out of its allowed range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// Bytes on disk failed validation: a checksum, a magic number, a length
    /// or an offset is not what it must be. The data is never delivered.
    #[error("corrupt {file} at byte {position}{}: {reason}", offset_suffix(*.offset))]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// The byte position of the damage within the file.
        position: u64,
        /// The record offset that was expected there, where there is one.
        offset: Option<u64>,
        /// What failed validation.
        reason: String,
    },

    /// A message is larger than the queue's `record_bytes_max`; nothing was
    /// written.
    #[error("message of {bytes} bytes exceeds record_bytes_max = {max}")]
    RecordTooLarge {
        /// The size of key and payload together.
        bytes: usize,
        /// The queue's limit.
        max: u32,
    },

    /// A key is longer than a frame can carry (`KEY_BYTES_MAX`, 65,535
    /// bytes); nothing was written.
    #[error("key of {bytes} bytes exceeds the key limit of {max} bytes")]
    KeyTooLarge {
        /// The key's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },

    /// A consumer-group name breaks the naming rules.
    #[error("invalid group name {name:?}: {reason}")]
    InvalidGroupName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The group has a live member (or one is taking a slot right now), and
    /// the operation (reset, delete) needs it idle.
    #[error("consumer group {group:?} is busy: a live member holds {lock}")]
    GroupBusy {
        /// The group's name.
        group: String,
        /// The member file or slot directory in use.
        lock: PathBuf,
    },

    /// The operation needs the queue closed by every process, and some
    /// process has it open.
    #[error("{path}: the queue is open in another process")]
    QueueBusy {
        /// The queue directory.
        path: PathBuf,
    },

    /// A sync failed earlier on this queue handle. The handle refuses every
    /// further write: a retried fsync can report success for data that never
    /// reached the disk. Reopen the queue to recover.
    #[error("queue stopped accepting writes after a failed sync: {cause}")]
    #[non_exhaustive]
    Stopped {
        /// The original failure.
        cause: String,
        /// The kind of the original failure ([`std::io::ErrorKind::Other`]
        /// when it was not an I/O error): [`Error::is_no_space`] reads it.
        kind: std::io::ErrorKind,
    },

    /// This member no longer holds the slot: another member took it over
    /// (this one was presumed dead or hung) and claimed a newer epoch.
    /// Nothing this member does can move the group's position there any
    /// more; the records it was processing will be delivered to the new
    /// holder.
    #[error("fenced: slot of partition {partition} was taken over from epoch {epoch}; this commit does not count")]
    Fenced {
        /// The partition of the slot.
        partition: u32,
        /// The epoch this member held.
        epoch: u64,
    },

    /// The engine under a remote backend failed or refused, for a reason
    /// the local queue has no variant for: for the NATS backend (crate
    /// `durq-nats`), no server answered, the server is too old or runs
    /// without JetStream, a name the engine cannot use, a request that timed
    /// out or was refused. The source is the backend's own error, which names
    /// the server and what is wrong; downcast it (`durq_nats::Error::of`) to
    /// tell the cases apart. An operation that failed this way may or may
    /// not have taken effect, as with any lost reply. The local queue never
    /// returns it.
    #[error("{engine}: {source}")]
    Engine {
        /// The engine's name (`"NATS"`).
        engine: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// The caller's `process` closure returned an error; nothing was
    /// committed and the batch will be delivered again.
    #[error("process closure failed, batch not committed: {0}")]
    Process(#[source] BoxError),

    /// The caller's `process` closure panicked; nothing was committed and the
    /// batch will be delivered again.
    #[error("process closure panicked, batch not committed: {0}")]
    ProcessPanicked(String),
}

/// Shorthand for `Result<T, durq::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn offset_suffix(offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!(" (record offset {o})"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        position: u64,
        offset: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt { file: file.into(), position, offset, reason: reason.into() }
    }

    /// True when the disk is full (`ENOSPC`) or the user's disk quota is
    /// used up (`EDQUOT`), or the handle stopped after such a failure:
    /// either way, freeing space (and, after a stop, reopening) is the
    /// remedy.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            Error::Stopped { kind, .. } => {
                matches!(kind, std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            }
            _ => false,
        }
    }
}

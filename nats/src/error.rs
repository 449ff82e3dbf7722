//! The crate's error type.
//!
//! Every error names what it concerns: the server address, the bucket and
//! key, the revision. Failures of the engine keep the client's error as their
//! source. Bytes read from the server are the world's input, so a malformed
//! slot value is a typed error, never a panic.

/// A boxed error of the NATS client, kept as the source of an [`Error`].
pub type ClientError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server at the given address answered (refused, timed out, no
    /// route, bad address). Nothing was sent.
    #[error("cannot reach a NATS server at {url}: {source}")]
    Unreachable {
        /// The address (or comma-separated addresses) given to `connect`.
        url: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },

    /// The server is older than the oldest release durq accepts.
    #[error(
        "NATS server {server} at {url} runs nats-server {found}; durq needs {minimum} or later \
         (for per-write fsync of the Raft log and a correct key-value compare-and-set)"
    )]
    ServerTooOld {
        /// The address connected to.
        url: String,
        /// The server's name.
        server: String,
        /// The version string the server reported.
        found: String,
        /// The oldest release accepted.
        minimum: String,
    },

    /// The server's version string is not a release number.
    #[error("NATS server {server} at {url} reports version {found:?}, which is not MAJOR.MINOR.PATCH")]
    UnknownServerVersion {
        /// The address connected to.
        url: String,
        /// The server's name.
        server: String,
        /// The version string the server reported.
        found: String,
    },

    /// The server runs without JetStream (started without `-js` or a
    /// `jetstream` block), or JetStream is not enabled for this account.
    #[error("NATS server {server} at {url} has no JetStream: {reason}")]
    NoJetStream {
        /// The address connected to.
        url: String,
        /// The server's name.
        server: String,
        /// What showed it.
        reason: String,
    },

    /// A request to the engine failed (timed out, refused, no leader): the
    /// operation may or may not have taken effect, as with any lost reply.
    #[error("NATS {operation} failed: {source}")]
    Engine {
        /// What was being done, with the names it concerned.
        operation: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },

    /// A name the engine cannot use (a queue, bucket or key with
    /// characters NATS forbids), or a queue address without a queue.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `"queue"`, `"queue address"`, `"server address"`, `"bucket"`,
        /// `"slot"` or `"member id"`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A record in a partition's stream is not what durq writes (its key
    /// header does not decode); it was not delivered.
    #[error("bad record in stream {stream} at sequence {sequence}: {reason}")]
    BadRecord {
        /// The partition's stream.
        stream: String,
        /// The record's stream sequence (its offset + 1).
        sequence: u64,
        /// What is wrong.
        reason: String,
    },

    /// Records of a partition are gone from its stream although nothing of
    /// durq's removed them: durq sets no retention limit on a partition's
    /// stream and deletes no record, so a hole in its sequences, a first
    /// record past a position, or an end before a record already read is a
    /// loss (a damaged message block the server dropped or cut the stream
    /// at when it restarted, or a purge or delete by hand). The records
    /// after the hole are not delivered past it: a reader or group member
    /// stops there, and so does every later attempt, until an operator
    /// decides (for a group, `reset_group` past the hole). The local
    /// queue's counterpart is `durq::Error::Corrupt`, which can name a file
    /// and byte; a client of the server can name only the offsets.
    #[error("partition {partition} (stream {stream}): the records at offsets {from}..{to} are lost: {reason}")]
    RecordsLost {
        /// The partition's stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The first lost offset.
        from: u64,
        /// The offset after the last lost one.
        to: u64,
        /// What showed the loss.
        reason: String,
    },

    /// A position before the first offset a partition's stream was created
    /// with: a migrated partition starts where the migration began, and the
    /// offsets before it were never in the stream (nothing is lost). A group
    /// new to a migrated queue starts at offset 0, so it meets this until it
    /// is positioned (`Queue::reset_group` to `ResetTo::Earliest`).
    #[error(
        "partition {partition} (stream {stream}) starts at offset {first} (created there by a migration); \
         offset {offset} was never in it: position the group with a reset (e.g. to earliest)"
    )]
    BeforeStreamStart {
        /// The partition's stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The stream's first offset.
        first: u64,
    },

    /// A slot's stored value failed validation; it was not used.
    #[error("corrupt slot {bucket}/{slot} at revision {revision}, byte {position}: {reason}")]
    CorruptSlot {
        /// The key-value bucket.
        bucket: String,
        /// The slot's key.
        slot: String,
        /// The revision of the bad value.
        revision: u64,
        /// The byte position of the damage within the value.
        position: usize,
        /// What failed validation.
        reason: String,
    },

    /// A queue's meta entry failed validation; the queue was not opened.
    #[error("corrupt meta entry of queue {queue} ({bucket} at revision {revision}), byte {position}: {reason}")]
    CorruptMeta {
        /// The queue's name (the entry's key).
        queue: String,
        /// The key-value bucket of queue meta entries.
        bucket: String,
        /// The revision of the bad value.
        revision: u64,
        /// The byte position of the damage within the value.
        position: usize,
        /// What failed validation.
        reason: String,
    },

    /// A queue's meta entry names a partition whose stream is gone (deleted
    /// by hand, or lost with the servers' stores). durq does not create it
    /// again: that would restart the partition's offsets at 0 as if nothing
    /// had been lost.
    #[error(
        "queue {queue}: the stream {stream} of partition {partition} is missing, with its records; durq does \
         not recreate it (that would restart its offsets at 0)"
    )]
    MissingStream {
        /// The queue's name.
        queue: String,
        /// The stream's name.
        stream: String,
        /// The partition it held.
        partition: u32,
    },

    /// Taking a slot lost a race: the slot changed since the taker read it
    /// (another member took it first, or its holder wrote a heartbeat or a
    /// commit). Nothing was written; read the slot again and decide anew.
    #[error("slot {bucket}/{slot} changed since revision {expected}; it was not taken")]
    SlotChanged {
        /// The key-value bucket.
        bucket: String,
        /// The slot's key.
        slot: String,
        /// The revision the taker expected.
        expected: u64,
    },

    /// This holder no longer holds the slot: another member took it over
    /// (this one was presumed dead or hung). Nothing this holder does can
    /// move the slot's checkpoint any more; the records it was processing
    /// will be delivered to the new holder.
    #[error("fenced: slot {bucket}/{slot} was taken over from epoch {epoch}; this commit does not count")]
    Fenced {
        /// The key-value bucket.
        bucket: String,
        /// The slot's key.
        slot: String,
        /// The epoch this holder held (the revision of its take).
        epoch: u64,
    },

    /// A commit asked to move the checkpoint backwards; nothing was written.
    /// A checkpoint only moves forward: records before it were processed.
    #[error("slot {bucket}/{slot}: cannot commit checkpoint {requested}, it is behind the committed {committed}")]
    CheckpointBehind {
        /// The key-value bucket.
        bucket: String,
        /// The slot's key.
        slot: String,
        /// The checkpoint held.
        committed: u64,
        /// The checkpoint asked for.
        requested: u64,
    },

    /// A migration of a local queue to NATS that could not keep its
    /// records, offsets or group positions as they are: the target already
    /// exists, a group is missing or damaged, a record does not fit the
    /// server. What an earlier run copied stays, and is reused by the next.
    #[error("cannot migrate {from} to {to}: {reason}")]
    MigrationRefused {
        /// The local queue's directory.
        from: std::path::PathBuf,
        /// The target queue's address.
        to: String,
        /// What is in the way.
        reason: String,
    },
}

/// Shorthand for `Result<T, durq_nats::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The NATS error inside a [`durq::Error::Engine`], if that is what
    /// `error` is: how an application on the NATS backend tells an
    /// unreachable server from a too-old one.
    pub fn of(error: &durq::Error) -> Option<&Error> {
        match error {
            durq::Error::Engine { source, .. } => source.downcast_ref::<Error>(),
            _ => None,
        }
    }

    pub(crate) fn engine(operation: impl Into<String>, source: impl Into<ClientError>) -> Error {
        Error::Engine { operation: operation.into(), source: source.into() }
    }
}

/// The backend's user-facing API (`Queue`, `Producer`) returns
/// [`durq::Error`], so that application code compiles against both
/// backends: an engine error becomes [`durq::Error::Engine`], keeping this
/// error as its source.
///
/// A slot's [`Error::Fenced`] names a bucket and key, not a partition; the
/// consumer, which knows which partition a slot holds, turns it into
/// [`durq::Error::Fenced`] itself before it reaches this conversion.
impl From<Error> for durq::Error {
    fn from(error: Error) -> durq::Error {
        durq::Error::Engine { engine: ENGINE, source: Box::new(error) }
    }
}

/// The engine's name in [`durq::Error::Engine`].
pub const ENGINE: &str = "NATS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_error_becomes_durq_engine_and_is_found_again() {
        let nats = Error::NoJetStream { url: "nats://h:1".into(), server: "n1".into(), reason: "off".into() };
        let durq: durq::Error = nats.into();
        assert!(matches!(durq, durq::Error::Engine { engine: "NATS", .. }), "{durq:?}");
        assert_eq!(durq.to_string(), "NATS: NATS server n1 at nats://h:1 has no JetStream: off");
        assert!(matches!(Error::of(&durq), Some(Error::NoJetStream { .. })), "{durq:?}");
        let local = durq::Error::InvalidOption { option: "partitions", reason: "0".into() };
        assert!(Error::of(&local).is_none());
    }
}

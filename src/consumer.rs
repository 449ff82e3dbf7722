//! The consumer: hands batches to the caller's closure and commits them only
//! after the closure returns `Ok`.
//!
//! This is the one place where a queue classically loses messages: committing
//! the read position before the work is done (the "auto-commit" of many
//! clients). durq's API has no separate acknowledge call. The batch is a
//! borrowed slice that cannot outlive the closure, and the checkpoint moves,
//! with an fdatasync, only after the closure has returned `Ok`. An error or a
//! panic commits nothing, and the next call delivers the same records again.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{BoxError, Error, Result};
use crate::group::checkpoint::Checkpoint;
use crate::group::{GROUPS_DIR, MEMBER_LOCK_FILE, name};
use crate::log::partition::ReadCursor;
use crate::options::ConsumerOptions;
use crate::producer::Position;
use crate::queue::QueueInner;
use crate::storage::{self, Locked};

/// One record handed to a `process` closure, borrowed from the queue's
/// mapping (no copy). It lives only as long as the closure call.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    position: Position,
    timestamp_ms: u64,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The key, if the record was sent with one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// Where the record is stored.
    pub fn position(&self) -> Position {
        self.position
    }

    /// When the record was appended.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }

    /// When the record was appended, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("position", &self.position)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key", &self.key.map(String::from_utf8_lossy))
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// A member of a consumer group.
///
/// ```
/// # fn main() -> Result<(), durq::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let queue = durq::Queue::open(tmp.path().join("q"))?;
/// queue.producer().send(b"red packet for alice")?;
/// let mut consumer = queue.consumer("red-packet")?;
/// // Fails: nothing is committed, and the record comes again.
/// let failed = consumer.process(|_batch| Err(std::io::Error::other("database down")));
/// assert!(failed.is_err());
/// // Succeeds: the checkpoint moves only now, after the closure returned.
/// let n = consumer.process(|batch| {
///     assert_eq!(batch[0].payload(), b"red packet for alice");
///     Ok::<(), std::io::Error>(())
/// })?;
/// assert_eq!(n, 1);
/// let n = consumer.process_timeout(std::time::Duration::from_millis(10), |_| Ok::<(), std::io::Error>(()))?;
/// assert_eq!(n, 0);
/// # Ok(()) }
/// ```
pub struct Consumer {
    queue: Arc<QueueInner>,
    group: String,
    _member_lock: File,
    readers: Vec<PartitionReader>,
    next_partition: usize,
    max_batch: usize,
    stopped: Option<String>,
}

struct PartitionReader {
    checkpoint: Checkpoint,
    cursor: ReadCursor,
}

impl Consumer {
    pub(crate) fn open(queue: Arc<QueueInner>, group: &str, options: ConsumerOptions) -> Result<Consumer> {
        name::validate(group)?;
        options.validate()?;
        let group_dir = queue.dir.join(GROUPS_DIR).join(group);
        storage::create_dir_durable(&group_dir)?;
        let lock_path = group_dir.join(MEMBER_LOCK_FILE);
        let (member_lock, locked) = storage::try_lock_exclusive(&lock_path)?;
        if let Locked::HeldElsewhere = locked {
            return Err(Error::GroupBusy { group: group.to_owned(), lock: lock_path });
        }
        let mut readers = Vec::with_capacity(queue.partitions.len());
        for part in &queue.partitions {
            // A new group starts at the earliest retained record: a durable
            // queue's consumer must see what was sent before it first ran.
            let checkpoint = Checkpoint::open_or_create(&group_dir, part.id, part.first_offset())?;
            let next = checkpoint.state().next_offset;
            let end = part.next_offset();
            if next > end {
                return Err(Error::corrupt(
                    checkpoint.path(),
                    0,
                    Some(next),
                    format!("checkpoint is past the end of partition {} (next offset {end})", part.id),
                ));
            }
            let cursor = part.cursor_at(next)?;
            readers.push(PartitionReader { checkpoint, cursor });
        }
        Ok(Consumer {
            queue,
            group: group.to_owned(),
            _member_lock: member_lock,
            readers,
            next_partition: 0,
            max_batch: options.max_batch,
            stopped: None,
        })
    }

    /// Waits for records, hands a batch of them (from one partition, in
    /// offset order) to `f`, and commits the batch durably once `f` returns
    /// `Ok`. Returns the number of records processed.
    ///
    /// If `f` returns `Err` or panics, nothing is committed, the error is
    /// returned as [`Error::Process`] or [`Error::ProcessPanicked`], and the
    /// next call delivers the same records again.
    pub fn process<F, E>(&mut self, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(None, f)
    }

    /// As [`Consumer::process`], but returns `Ok(0)` without calling `f` if
    /// no record arrives within `timeout`.
    pub fn process_timeout<F, E>(&mut self, timeout: Duration, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        self.process_within(Some(timeout), f)
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The committed position per partition: the next offset the group
    /// will process.
    pub fn committed(&self) -> Vec<u64> {
        self.readers.iter().map(|r| r.checkpoint.state().next_offset).collect()
    }

    fn process_within<F, E>(&mut self, timeout: Option<Duration>, f: F) -> Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> std::result::Result<(), E>,
        E: Into<BoxError>,
    {
        if let Some(cause) = &self.stopped {
            return Err(Error::Stopped { cause: cause.clone() });
        }
        let p = match self.ready_partition() {
            Some(p) => p,
            None => {
                let queue = self.queue.clone();
                let readers = &self.readers;
                let ready = || readers.iter().zip(&queue.partitions).any(|(r, p)| r.cursor.next_offset < p.visible());
                if !queue.control.wait_until(timeout, ready) {
                    return Ok(0);
                }
                self.ready_partition().expect("a partition became ready")
            }
        };
        let part = self.queue.partitions[p].clone();
        let reader = &mut self.readers[p];
        let span = part.read_span(&mut reader.cursor, part.visible(), self.max_batch)?;
        assert!(!span.frames.is_empty(), "partition {p} was ready but yielded no record");
        let messages: Vec<Message<'_>> = span
            .frames
            .iter()
            .map(|fr| Message {
                position: Position { partition: part.id, offset: fr.offset },
                timestamp_ms: fr.timestamp_ms,
                key: fr.key.map(|k| span.bytes(k)),
                payload: span.bytes(fr.payload),
            })
            .collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&messages)));
        let count = messages.len();
        drop(messages);
        match outcome {
            Err(panic) => return Err(Error::ProcessPanicked(panic_message(&panic))),
            Ok(Err(e)) => return Err(Error::Process(e.into())),
            Ok(Ok(())) => {}
        }
        if let Err(e) = reader.checkpoint.commit(span.end_offset) {
            self.stopped = Some(e.to_string());
            return Err(e);
        }
        reader.cursor.advance(&span);
        self.next_partition = (p + 1) % self.readers.len();
        Ok(count)
    }

    /// The first partition, round-robin from the last one served, with a
    /// visible record this group has not processed.
    fn ready_partition(&self) -> Option<usize> {
        let n = self.readers.len();
        (0..n)
            .map(|i| (self.next_partition + i) % n)
            .find(|&p| self.readers[p].cursor.next_offset < self.queue.partitions[p].visible())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

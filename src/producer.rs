//! The producer: appends records and says when they are safe.

use std::sync::Arc;

use crate::error::Result;
use crate::log::partition::Record;
use crate::observe;
use crate::options::Durability;
use crate::position::Position;
use crate::queue::{Queue, QueueInner};
use crate::retention;

#[cfg(feature = "tokio")]
mod send_async;

/// Sends records into a queue. `Clone + Send + Sync`: share it between
/// threads or clone it; every clone appends to the same log.
///
/// What a returned `Ok` means depends on the queue's [`Durability`]: under
/// `Sync` the record is on stable storage; under `Interval` and `Buffered`
/// it survives a crash of this process, and [`Producer::flush`] makes it
/// survive a power loss.
///
/// ```
/// # fn main() -> Result<(), durq::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let queue = durq::Queue::open(tmp.path().join("q"))?;
/// let producer = queue.producer();
/// let pos = producer.send(b"order 1")?;
/// assert_eq!((pos.partition, pos.offset), (0, 0));
/// producer.send_keyed(b"user-7", b"order 2")?;
/// let positions = producer.send_batch(&[b"a".as_slice(), b"b"])?;
/// assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);
/// producer.flush()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    queue: Arc<QueueInner>,
}

// The docs above (and the README) promise `Send + Sync`.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Producer>();
};

impl Queue {
    /// A producer for this queue: `Clone + Send + Sync`.
    pub fn producer(&self) -> Producer {
        Producer { queue: self.inner.clone() }
    }
}

impl Producer {
    /// Appends one record to the next partition in round-robin order.
    pub fn send(&self, payload: impl AsRef<[u8]>) -> Result<Position> {
        let partition = self.queue.next_partition();
        self.append(partition, &[Record { key: None, payload: payload.as_ref() }])
            .map(|offset| Position { partition, offset })
    }

    /// Appends one record with a key. Records with the same key go to the same
    /// partition (CRC32 of the key modulo the partition count, stable across
    /// versions and hosts), so they are consumed in send order.
    pub fn send_keyed(&self, key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> Result<Position> {
        let key = key.as_ref();
        let partition = partition_of_key(key, self.queue.config.partitions);
        self.append(partition, &[Record { key: Some(key), payload: payload.as_ref() }])
            .map(|offset| Position { partition, offset })
    }

    /// Appends records contiguously to one partition with one sync for the
    /// whole batch. If any record is too large, nothing is written.
    pub fn send_batch<I>(&self, payloads: I) -> Result<Vec<Position>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let payloads: Vec<I::Item> = payloads.into_iter().collect();
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let records = unkeyed(&payloads);
        let partition = self.queue.next_partition();
        let first = self.append(partition, &records)?;
        Ok(positions(partition, first, records.len()))
    }

    /// Blocks until everything sent so far, by any producer of this queue,
    /// is on stable storage.
    pub fn flush(&self) -> Result<()> {
        for p in &self.queue.partitions {
            p.sync_to(p.next_offset())?;
        }
        Ok(())
    }

    /// A retention pass in every partition, whose failure is counted, not
    /// returned (see `retention::run_unattended`).
    fn run_retention(&self) -> usize {
        retention::run_unattended(&self.queue.dir, self.queue.config.segment_bytes, &self.queue.partitions)
    }

    fn append(&self, partition: u32, records: &[Record<'_>]) -> Result<u64> {
        let first = self.store(partition, records)?;
        if self.queue.config.durability == Durability::Sync {
            self.queue.partitions[partition as usize].sync_to(first + records.len() as u64)?;
        }
        Ok(first)
    }

    /// Appends `records` to `partition` without waiting for a sync (the
    /// caller does, as its durability asks), and cleans up after a roll.
    /// Returns the first record's offset.
    fn store(&self, partition: u32, records: &[Record<'_>]) -> Result<u64> {
        let p = &self.queue.partitions[partition as usize];
        let first = p.append(records, &|| self.run_retention())?;
        observe::appended(&self.queue.counters, partition, records.len(), records.iter().map(Record::bytes).sum());
        if p.take_rolled() {
            // The record is stored; a failure to clean up old segments must
            // not turn its acknowledgement into an error. It is counted for
            // `durq stat`, and the next roll tries again.
            self.run_retention();
        }
        Ok(first)
    }
}

/// The records of a batch of payloads without keys.
fn unkeyed<T: AsRef<[u8]>>(payloads: &[T]) -> Vec<Record<'_>> {
    payloads.iter().map(|p| Record { key: None, payload: p.as_ref() }).collect()
}

/// The positions of `n` records stored in `partition` from `first` on.
fn positions(partition: u32, first: u64, n: usize) -> Vec<Position> {
    (first..first + n as u64).map(|offset| Position { partition, offset }).collect()
}

/// The partition that records sent with `key` go to in a queue of
/// `partitions` partitions: CRC32 (IEEE) of the key modulo the partition
/// count. It is part of the format: it never changes between versions and
/// hosts, and every backend (the NATS one included) uses it, so that a
/// queue moved to another backend keeps each key's records in one partition
/// and in send order.
pub fn partition_of_key(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_to_partition_map_is_pinned() {
        // CRC32 (IEEE) values computed independently (Python's zlib.crc32):
        // a change here would scatter every existing key's records.
        assert_eq!(partition_of_key(b"order-42", 8), 1_475_806_942 % 8);
        assert_eq!(partition_of_key(b"user:7", 3), 2_462_476_215 % 3);
        assert_eq!(partition_of_key(b"", 8), 0);
    }
}

//! The producer's async forms (feature `tokio`): the same appends as the
//! blocking ones, and under `Sync` a wait for group commit that holds no
//! thread (`asynchronous::durable`).
//!
//! Under `Buffered` and `Interval` durability the blocking forms never
//! wait for a sync, and neither do these: they return once the record is
//! appended (a copy into the mapped segment, and on a segment roll the
//! roll's own file work), with nothing to await.

use crate::asynchronous::Durable;
use crate::error::Result;
use crate::log::partition::Record;
use crate::options::Durability;
use crate::position::Position;

use super::{Producer, partition_of_key};

impl Producer {
    /// [`Producer::send`] for async code: under `Sync` durability the task
    /// waits for the sync that covers the record without holding a runtime
    /// thread, and shares that sync with every other sender, blocking or
    /// async.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), durq::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let queue = durq::Queue::open(tmp.path().join("q"))?;
    /// let producer = queue.producer();
    /// let pos = producer.send_async(b"order 1").await?;
    /// assert_eq!((pos.partition, pos.offset), (0, 0));
    /// producer.send_keyed_async(b"user-7", b"order 2").await?;
    /// let positions = producer.send_batch_async([b"a", b"b"]).await?;
    /// assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);
    /// producer.flush_async().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_async(&self, payload: impl AsRef<[u8]>) -> Result<Position> {
        let partition = self.queue.next_partition();
        let offset = self.append_async(partition, &[Record { key: None, payload: payload.as_ref() }]).await?;
        Ok(Position { partition, offset })
    }

    /// [`Producer::send_keyed`] for async code, as [`Producer::send_async`].
    pub async fn send_keyed_async(&self, key: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> Result<Position> {
        let key = key.as_ref();
        let partition = partition_of_key(key, self.queue.config.partitions);
        let offset = self.append_async(partition, &[Record { key: Some(key), payload: payload.as_ref() }]).await?;
        Ok(Position { partition, offset })
    }

    /// [`Producer::send_batch`] for async code, as [`Producer::send_async`]:
    /// one append and one sync for the whole batch.
    pub async fn send_batch_async<I>(&self, payloads: I) -> Result<Vec<Position>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let payloads: Vec<I::Item> = payloads.into_iter().collect();
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let records = super::unkeyed(&payloads);
        let partition = self.queue.next_partition();
        let first = self.append_async(partition, &records).await?;
        Ok(super::positions(partition, first, records.len()))
    }

    /// [`Producer::flush`] for async code: resolves once everything sent so
    /// far, by any producer of this queue, is on stable storage, without
    /// holding a runtime thread while the syncs run.
    pub async fn flush_async(&self) -> Result<()> {
        for p in &self.queue.partitions {
            Durable::new(p, p.next_offset()).await?;
        }
        Ok(())
    }

    async fn append_async(&self, partition: u32, records: &[Record<'_>]) -> Result<u64> {
        let first = self.store(partition, records)?;
        if self.queue.config.durability == Durability::Sync {
            Durable::new(&self.queue.partitions[partition as usize], first + records.len() as u64).await?;
        }
        Ok(first)
    }
}

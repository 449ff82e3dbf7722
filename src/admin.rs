//! Operations on a group from outside it: reset its position, delete it,
//! replay its dead letters; reading records without a group; and running
//! retention by hand.
//!
//! Reset and delete require that the group has no live member (like
//! `kafka-consumer-groups --reset-offsets`): a member holding slots would
//! fight the change. They check the member files, and a reset then takes
//! each slot by the very steps a member takes it (`group/slot.rs`), so a
//! member that joins meanwhile either sees the result or makes the reset
//! fail with `GroupBusy`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::consumer::Message;
use crate::error::{Error, Result};
use crate::group::dead_letter::{self, DeadLetter, REPLAY_GROUP};
use crate::group::{self, Group};
use crate::log::partition::{FrameRef, Span};
use crate::options::ConsumerOptions;
use crate::position::Position;
use crate::queue::Queue;
use crate::retention::{self, Reclaimed};

/// Where [`Queue::reset_group`] puts a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The earliest retained record: everything still retained when the
    /// reset is written is processed again.
    Earliest,
    /// The end of the log: everything sent so far is skipped.
    Latest,
    /// This offset in every partition, clamped to what is retained when
    /// the reset is written (a retention pass running meanwhile may raise
    /// the earliest retained offset; the reset then moves there).
    Offset(u64),
    /// The first record appended at or after this time, per partition.
    Time(SystemTime),
}

/// A record read with [`Queue::read_at`], copied out of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Where it is stored.
    pub position: Position,
    /// When it was appended, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its key, if it has one.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Queue {
    /// Reads up to `max` records of `partition` from `offset` on, without a
    /// group and without committing anything. Stops at the first record not
    /// yet visible to consumers.
    pub fn read_at(&self, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredRecord>> {
        self.read_frames(partition, offset, max, |span, frame| {
            Ok(StoredRecord {
                position: Position { partition, offset: frame.offset },
                timestamp_ms: frame.timestamp_ms,
                key: frame.key.map(|k| span.bytes(k).to_vec()),
                payload: span.bytes(frame.payload).to_vec(),
            })
        })
    }

    /// As [`Queue::read_at`], turning each frame into a `T` with `read`.
    fn read_frames<T>(
        &self,
        partition: u32,
        offset: u64,
        max: usize,
        mut read: impl FnMut(&Span, &FrameRef) -> Result<T>,
    ) -> Result<Vec<T>> {
        let part = self.inner.partition(partition)?;
        let visible = part.visible();
        let offset = offset.max(part.first_offset());
        if offset >= visible {
            return Ok(Vec::new());
        }
        let mut cursor = part.cursor_at(offset)?;
        let mut out = Vec::new();
        while out.len() < max && cursor.next_offset < visible {
            let span = part.read_span(&mut cursor, visible, max - out.len())?;
            for frame in &span.frames {
                out.push(read(&span, frame)?);
            }
            let n = span.frames.len();
            cursor.advance(&span, n);
        }
        Ok(out)
    }

    /// Moves group `group` to `to` in every partition. The group must exist
    /// and have no live member. Returns the new position per partition.
    pub fn reset_group(&self, group: &str, to: ResetTo) -> Result<Vec<u64>> {
        let group = Group::existing(&self.inner.dir, group)?;
        group.ensure_no_member()?;
        let mut positions = Vec::new();
        for part in &self.inner.partitions {
            let next = part.next_offset();
            let wanted = match to {
                ResetTo::Earliest => 0,
                ResetTo::Latest => next,
                ResetTo::Offset(o) => o.min(next),
                ResetTo::Time(t) => self.first_at_or_after(part.id, t)?.min(next),
            };
            // Recovery takes a checkpoint as proof that the records below it
            // were synced (`group::evidence`): under `Buffered` the end of
            // the log may not be durable yet. Should the earliest retained
            // offset lie past `wanted`, the records below it are durable
            // already (retention never passes the last two segments, and
            // every one before them is synced in full).
            part.sync_to(wanted)?;
            // Under the floor lock, no retention pass removes records
            // between reading the earliest retained offset and writing the
            // position.
            let _floor = retention::lock_floor(&self.inner.dir)?;
            let target = wanted.max(part.first_offset());
            positions.push(group.force_epoch(part.id, target)?);
        }
        Ok(positions)
    }

    /// Deletes group `group` (its positions, leases and dead letters): it no
    /// longer holds back retention. It must have no live member.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let group = Group::existing(&self.inner.dir, group)?;
        group.ensure_no_member()?;
        group.delete()
    }

    /// The names of the registered groups (entries of `groups/` that are
    /// not groups are left out).
    pub fn groups(&self) -> Result<Vec<String>> {
        Ok(group::list(&self.inner.dir)?.groups.iter().map(|g| g.name().to_owned()).collect())
    }

    /// The dead letters of `group` not yet replayed, oldest first, up to
    /// `max`, decoded. An envelope that does not decode (a record somebody
    /// else put in the dead-letter queue) is [`Error::Corrupt`] naming its
    /// segment file, byte position and offset in the dead-letter queue.
    pub fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let dlq = Group::existing(&self.inner.dir, group)?.dead_letter_queue();
        if !dlq.exists() {
            return Ok(Vec::new());
        }
        // Reading clamps to the first retained offset.
        let from = dlq.replayed()?.next_offset_or(0);
        let dlq = Queue::open_existing(dlq.dir())?;
        dlq.read_frames(0, from, max, |span, frame| {
            let (envelope_at, _) = frame.payload;
            let envelope = dead_letter::decode(span.bytes(frame.payload))
                .map_err(|reason| Error::corrupt(span.file(), envelope_at as u64, Some(frame.offset), reason))?;
            let key = frame.key.map(|k| span.bytes(k));
            Ok(DeadLetter::new(frame.offset, frame.timestamp_ms, key, envelope))
        })
    }

    /// Sends every dead letter of `group` back into this queue (with its
    /// original key), and removes each from the dead-letter queue only after
    /// its re-send is durable. Returns how many were replayed.
    pub fn replay_dead_letters(&self, group: &str) -> Result<u64> {
        let dlq = Group::existing(&self.inner.dir, group)?.dead_letter_queue();
        if !dlq.exists() {
            return Ok(0);
        }
        let dlq_dir = dlq.dir().to_owned();
        let dlq = Queue::open_existing(&dlq_dir)?;
        let mut replayer = dlq.consumer_with(REPLAY_GROUP, ConsumerOptions::default().max_batch(1024))?;
        let producer = self.producer();
        let mut replayed = 0;
        loop {
            let n = replayer.process_timeout(Duration::ZERO, |batch: &[Message<'_>]| -> Result<()> {
                for m in batch {
                    let letter = dead_letter::decode(m.payload())
                        .map_err(|reason| Error::corrupt(&dlq_dir, 0, Some(m.position().offset), reason))?;
                    match m.key() {
                        Some(key) => producer.send_keyed(key, letter.payload)?,
                        None => producer.send(letter.payload)?,
                    };
                }
                // Under Interval or Buffered durability, make the re-sends
                // durable before the dead letters are committed away.
                producer.flush()
            })?;
            if n == 0 {
                return Ok(replayed);
            }
            replayed += n as u64;
        }
    }

    /// Removes, in every partition, the segments every registered group has
    /// passed, as a roll does, and says what it removed and what holds the
    /// rest back (`durq gc`). Safe while producers and consumers run in
    /// other processes. Unlike the passes durq runs by itself, a failure
    /// here is returned.
    pub fn reclaim(&self) -> Result<Vec<Reclaimed>> {
        let segment_bytes = self.inner.config.segment_bytes;
        self.inner.partitions.iter().map(|p| retention::run(&self.inner.dir, segment_bytes, p)).collect()
    }

    /// The offset of the first record of `partition` appended at or after
    /// `t`, or the end of the log if there is none.
    fn first_at_or_after(&self, partition: u32, t: SystemTime) -> Result<u64> {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let part = self.inner.partition(partition)?;
        let (mut offset, end) = (part.first_offset(), part.visible());
        while offset < end {
            let batch = self.read_at(partition, offset, 4096)?;
            if let Some(r) = batch.iter().find(|r| r.timestamp_ms >= ms) {
                return Ok(r.position.offset);
            }
            offset = batch.last().map_or(end, |r| r.position.offset + 1);
        }
        Ok(part.next_offset())
    }
}

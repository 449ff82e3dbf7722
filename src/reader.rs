//! Reading records without a consumer group: [`Reader`], for looking at a
//! queue (`durq tail`), never for processing it.
//!
//! A reader joins no group and commits nothing: it creates no group
//! directory, writes no checkpoint, and does not hold back retention. So it
//! is the wrong tool for work that must not be lost (use a
//! [`Consumer`](crate::Consumer)); it is the right one for an operator who
//! wants to see what flows through a queue without moving anybody.
//!
//! It delivers only records below `visible`, as consumers do (no phantom
//! reads), and [`Reader::wait`] sleeps on the same futex word in `durq.ctl`
//! that wakes consumers when records become visible, so following a queue
//! costs no polling.
//!
//! Retention does not wait for a reader: if the segments a slow reader
//! still had to read are removed, it moves on to the earliest retained
//! record and reports the records it could not read ([`Reader::take_skipped`]),
//! never silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::admin::{ResetTo, StoredRecord};
use crate::error::{Error, Result};
use crate::log::partition::{Partition, ReadCursor};
use crate::position::Position;
use crate::queue::{Queue, QueueInner};
use crate::retention::Skipped;

/// Records copied out per partition and read, at most: bounds the memory a
/// reader holds, and lets the partitions take turns.
const READ_BATCH_MAX: usize = 256;

/// A group-less reader of one or every partition of a queue; see the
/// module docs. An [`Iterator`] over the records visible now: it ends when
/// it has caught up, and yields more after [`Reader::wait`] returned `true`.
///
/// ```
/// # fn main() -> Result<(), durq::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let queue = durq::Queue::open(tmp.path().join("orders"))?;
/// queue.producer().send(b"order 1")?;
/// let mut reader = queue.reader(durq::ResetTo::Earliest)?;
/// let first = reader.next().expect("one record")?;
/// assert_eq!(first.payload, b"order 1");
/// assert!(reader.next().is_none(), "caught up");
/// queue.producer().send(b"order 2")?;
/// assert!(reader.wait(Some(std::time::Duration::from_secs(5))));
/// assert_eq!(reader.next().expect("the new record")?.payload, b"order 2");
/// # Ok(()) }
/// ```
pub struct Reader {
    queue: Arc<QueueInner>,
    partitions: Vec<PartitionReader>,
    /// The partition to read next: they take turns, so a busy one does not
    /// hide the others.
    turn: usize,
    buffered: VecDeque<StoredRecord>,
    skipped: Vec<Skipped>,
}

/// Where the reader is in one partition.
struct PartitionReader {
    part: Arc<Partition>,
    cursor: ReadCursor,
    /// Reading from a time: records appended before this (ms since the Unix
    /// epoch) are passed over until the first at or after it.
    not_before_ms: Option<u64>,
}

impl Queue {
    /// A reader of every partition, starting at `from` in each
    /// ([`ResetTo::Offset`] is clamped to what is retained and written;
    /// [`ResetTo::Latest`] reads only records sent from now on;
    /// [`ResetTo::Time`] starts, per partition, at the first record appended
    /// at or after that time). Joins no group and commits nothing.
    pub fn reader(&self, from: ResetTo) -> Result<Reader> {
        Reader::new(self.inner.clone(), 0..self.inner.config.partitions, from)
    }

    /// As [`Queue::reader`], for partition `partition` only.
    pub fn partition_reader(&self, partition: u32, from: ResetTo) -> Result<Reader> {
        if partition >= self.inner.config.partitions {
            return Err(Error::InvalidOption {
                option: "partition",
                reason: format!("{partition} is not below {}", self.inner.config.partitions),
            });
        }
        Reader::new(self.inner.clone(), partition..partition + 1, from)
    }
}

impl Reader {
    fn new(queue: Arc<QueueInner>, partitions: std::ops::Range<u32>, from: ResetTo) -> Result<Reader> {
        let partitions = partitions
            .map(|p| {
                let part = queue.partitions[p as usize].clone();
                let (first, next) = (part.first_offset(), part.next_offset());
                let (offset, not_before_ms) = match from {
                    ResetTo::Earliest => (first, None),
                    ResetTo::Latest => (next, None),
                    ResetTo::Offset(o) => (o.clamp(first, next), None),
                    ResetTo::Time(t) => (first, Some(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))),
                };
                let cursor = part.cursor_at(offset)?;
                Ok(PartitionReader { part, cursor, not_before_ms })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Reader { queue, partitions, turn: 0, buffered: VecDeque::new(), skipped: Vec::new() })
    }

    /// The offset the reader reads next in each of its partitions, as
    /// `(partition, offset)`.
    pub fn positions(&self) -> Vec<Position> {
        self.partitions.iter().map(|r| Position { partition: r.part.id, offset: r.cursor.next_offset }).collect()
    }

    /// Up to `max` records visible now, copied out, from one partition (the
    /// next, in turn, that has any); empty when the reader has caught up
    /// everywhere. A damaged record is an [`Error::Corrupt`] naming its
    /// file and byte position, and the reader stays before it.
    pub fn read(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        let mut out: Vec<StoredRecord> = self.buffered.drain(..max.min(self.buffered.len())).collect();
        if !out.is_empty() {
            return Ok(out);
        }
        for _ in 0..self.partitions.len() {
            let at = self.turn;
            self.turn = (self.turn + 1) % self.partitions.len();
            out = self.read_partition(at, max)?;
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// Sleeps until a record is visible to this reader, or `timeout` passes
    /// (`None`: no limit). Returns whether one is. Woken by producers in any
    /// process as consumers are, through the futex word in `durq.ctl`.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if !self.buffered.is_empty() {
            return true;
        }
        self.queue.control.wait_until(timeout, || self.partitions.iter().any(|r| r.has_more()))
    }

    /// The ranges of records that retention removed before this reader got
    /// to them, since the last call.
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.skipped)
    }

    /// Reads partition reader `at`, passing over records before its time.
    fn read_partition(&mut self, at: usize, max: usize) -> Result<Vec<StoredRecord>> {
        let r = &mut self.partitions[at];
        loop {
            if let Some(skipped) = r.skip_removed()? {
                self.skipped.push(skipped);
            }
            let records = match r.read(max) {
                Ok(records) => records,
                // Retention may have removed the next segment between the
                // check above and the read: then go on from what is kept.
                Err(_) if r.cursor.next_offset < r.part.first_offset() => continue,
                Err(e) => return Err(e),
            };
            let Some(not_before) = r.not_before_ms else { return Ok(records) };
            match records.iter().position(|rec| rec.timestamp_ms >= not_before) {
                Some(first) => {
                    r.not_before_ms = None;
                    return Ok(records.into_iter().skip(first).collect());
                }
                None if records.is_empty() => return Ok(records),
                // All before the time: read on.
                None => {}
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<StoredRecord>;

    /// The next record visible now, `None` once caught up (a later call may
    /// yield more: see [`Reader::wait`]).
    fn next(&mut self) -> Option<Result<StoredRecord>> {
        if self.buffered.is_empty() {
            match self.read(READ_BATCH_MAX) {
                Ok(records) => self.buffered.extend(records),
                Err(e) => return Some(Err(e)),
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

impl PartitionReader {
    fn has_more(&self) -> bool {
        self.cursor.next_offset < self.part.visible() || self.cursor.next_offset < self.part.first_offset()
    }

    /// Moves the cursor to the earliest retained record if retention raised
    /// `first_offset` past it (which it does before removing files), and
    /// says which records were passed.
    fn skip_removed(&mut self) -> Result<Option<Skipped>> {
        let (from, first) = (self.cursor.next_offset, self.part.first_offset());
        if from >= first {
            return Ok(None);
        }
        self.cursor = self.part.cursor_at(first)?;
        Ok(Some(Skipped { partition: self.part.id, from, to: first }))
    }

    /// Up to `max` visible records from the cursor on, copied; moves the
    /// cursor past them.
    fn read(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        let visible = self.part.visible();
        let mut out = Vec::new();
        while out.len() < max && self.cursor.next_offset < visible {
            let span = self.part.read_span(&mut self.cursor, visible, max - out.len())?;
            for frame in &span.frames {
                out.push(StoredRecord {
                    position: Position { partition: self.part.id, offset: frame.offset },
                    timestamp_ms: frame.timestamp_ms,
                    key: frame.key.map(|k| span.bytes(k).to_vec()),
                    payload: span.bytes(frame.payload).to_vec(),
                });
            }
            self.cursor.advance(&span, span.frames.len());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    fn queue(partitions: u32) -> (tempfile::TempDir, Queue) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options::default().partitions(partitions).segment_bytes(64 << 10).record_bytes_max(4096);
        let queue = Queue::open_with(tmp.path().join("q"), options).unwrap();
        (tmp, queue)
    }

    fn payloads(reader: &mut Reader) -> Vec<Vec<u8>> {
        reader.map(|r| r.unwrap().payload).collect()
    }

    #[test]
    fn a_reader_starts_where_it_is_told_and_ends_when_caught_up() {
        let (_tmp, q) = queue(1);
        let producer = q.producer();
        for i in 0..5u8 {
            producer.send([i]).unwrap();
        }
        let all: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
        assert_eq!(payloads(&mut q.reader(ResetTo::Earliest).unwrap()), all);
        assert_eq!(payloads(&mut q.reader(ResetTo::Offset(3)).unwrap()), all[3..]);
        assert_eq!(payloads(&mut q.reader(ResetTo::Offset(99)).unwrap()), Vec::<Vec<u8>>::new());
        let mut latest = q.reader(ResetTo::Latest).unwrap();
        assert_eq!(latest.next().map(|r| r.unwrap()), None);
        producer.send(b"new").unwrap();
        assert_eq!(payloads(&mut latest), vec![b"new".to_vec()]);
        assert_eq!(latest.positions(), vec![Position { partition: 0, offset: 6 }]);
    }

    #[test]
    fn a_reader_from_a_time_passes_over_older_records() {
        let (_tmp, q) = queue(1);
        let producer = q.producer();
        producer.send(b"old").unwrap();
        let old_ms = q.read_at(0, 0, 1).unwrap()[0].timestamp_ms;
        // Timestamps come from a coarse clock: send until one is later.
        let mut offset = 0;
        while q.read_at(0, offset, 1).unwrap()[0].timestamp_ms == old_ms {
            std::thread::sleep(Duration::from_millis(1));
            offset = producer.send(b"new").unwrap().offset;
        }
        let cut = UNIX_EPOCH + Duration::from_millis(old_ms + 1);
        let read: Vec<u64> = q.reader(ResetTo::Time(cut)).unwrap().map(|r| r.unwrap().position.offset).collect();
        assert_eq!(read, vec![offset]);
    }

    #[test]
    fn a_partition_reader_reads_that_partition_only() {
        let (_tmp, q) = queue(2);
        let producer = q.producer();
        producer.send_keyed(b"k", b"keyed").unwrap();
        let p = crate::producer::partition_of_key(b"k", 2);
        let records: Vec<StoredRecord> =
            q.partition_reader(p, ResetTo::Earliest).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].key.as_deref(), records[0].position.partition), (Some(&b"k"[..]), p));
        assert_eq!(q.partition_reader(1 - p, ResetTo::Earliest).unwrap().count(), 0);
        assert!(matches!(q.partition_reader(2, ResetTo::Earliest), Err(Error::InvalidOption { .. })));
    }

    #[test]
    fn a_reader_waits_for_a_record_sent_from_another_thread() {
        let (_tmp, q) = queue(3);
        let mut reader = q.reader(ResetTo::Latest).unwrap();
        assert!(!reader.wait(Some(Duration::from_millis(1))), "nothing to read yet");
        let producer = q.producer();
        let sender = std::thread::spawn(move || producer.send(b"late").unwrap());
        // No timeout: only the producer's wake-up (or the re-check) ends it.
        assert!(reader.wait(None));
        sender.join().unwrap();
        assert_eq!(payloads(&mut reader), vec![b"late".to_vec()]);
    }

    #[test]
    fn a_reader_joins_no_group() {
        let (_tmp, q) = queue(1);
        q.producer().send(b"x").unwrap();
        assert_eq!(q.reader(ResetTo::Earliest).unwrap().count(), 1);
        assert_eq!(q.groups().unwrap(), Vec::<String>::new());
        assert!(!q.path().join(crate::group::GROUPS_DIR).exists());
    }

    #[test]
    fn records_removed_before_a_slow_reader_got_to_them_are_reported_and_passed() {
        let (_tmp, q) = queue(1);
        let producer = q.producer();
        let payload = [7u8; 2000];
        // A group that has processed everything lets retention remove all
        // but the last two segments.
        let mut group = q.consumer("g").unwrap();
        let mut reader = q.reader(ResetTo::Earliest).unwrap();
        let mut sent = 0;
        while q.offsets(0).unwrap().1 < 200 {
            producer.send(payload).unwrap();
            sent += 1;
        }
        while group.process_timeout(Duration::ZERO, |_| Ok::<(), Error>(())).unwrap() > 0 {}
        // The reader maps its first segment now, so removing it does not
        // take its pages away: it must still notice the gap.
        let first = reader.read(1).unwrap();
        assert_eq!(first[0].position.offset, 0);
        q.reclaim().unwrap();
        let kept = q.offsets(0).unwrap().0;
        assert!(kept > 1, "retention removed nothing (first offset {kept})");
        let rest: Vec<u64> = reader.by_ref().map(|r| r.unwrap().position.offset).collect();
        assert_eq!(reader.take_skipped(), vec![Skipped { partition: 0, from: 1, to: kept }]);
        assert_eq!(rest, (kept..sent).collect::<Vec<u64>>());
        assert_eq!(reader.take_skipped(), Vec::new(), "reported once");
    }
}

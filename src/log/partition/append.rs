//! Appending records at a partition's tail, under the append mutex: the
//! size checks, the frames' stores into the tail segment (under `Sync`, one
//! `pwrite` per batch instead: `Segment::write_frames` says why), the
//! publication of the new tail, and the disk space reserved before any
//! store.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::control::PartitionControl;
use crate::log::record::{self, FrameMeta, KEY_BYTES_MAX};
use crate::log::segment::{SEGMENT_HEADER_BYTES, Segment};
use crate::options::Durability;
use crate::storage;

use super::{Partition, Record};

impl Partition {
    /// Appends `records` contiguously and returns the offset of the first.
    /// The records are written and published, not yet durable: see
    /// [`Partition::sync_to`]. A batch that fits one segment goes into one
    /// segment and is atomic: readers see it whole or not at all, and if the
    /// writer dies half way, recovery removes the part it wrote (frames carry
    /// a "batch continues" flag). A batch larger than a segment is split at
    /// segment boundaries, and only its last part is atomic.
    ///
    /// A roll or a reservation that finds the disk full calls `reclaim`
    /// (retention: it returns how many segments it removed) and, if it
    /// removed any, tries once more; otherwise the error is the caller's.
    pub(crate) fn append(&self, records: &[Record<'_>], reclaim: &dyn Fn() -> usize) -> Result<u64> {
        self.stop.check()?;
        let max = self.config.record_bytes_max;
        for r in records {
            let key_len = r.key.map_or(0, <[u8]>::len);
            if key_len > KEY_BYTES_MAX {
                return Err(Error::KeyTooLarge { bytes: key_len, max: KEY_BYTES_MAX });
            }
            if key_len + r.payload.len() > max as usize {
                return Err(Error::RecordTooLarge { bytes: key_len + r.payload.len(), max });
            }
        }
        let timestamp_ms = storage::coarse_now_ms();
        let c = self.shared();
        let tail = self.lock_tail(&c)?;
        let first = c.next_offset();
        if u64::MAX - first < records.len() as u64 {
            // Only damage or a hostile file puts a log near 2^64 records;
            // offsets must never wrap around to ones in use.
            return Err(Error::corrupt(&self.dir, 0, Some(first), "the partition's offsets are used up"));
        }
        let mut next = first;
        let mut pos = c.tail_pos();
        let tail_base = c.tail_segment_base();
        let new_to_us = tail.cache.as_ref().is_none_or(|seg| seg.base_offset != tail_base);
        let mut seg = self.cached_tail(tail.cache, tail_base)?;
        if new_to_us {
            self.prefaulter.starting_at(seg, pos, c.tail_reserved());
        }
        let total: usize = records.iter().map(Record::frame_bytes).sum();
        if total > seg.len() - pos && total <= seg.len() - SEGMENT_HEADER_BYTES {
            let rolled = self.roll(&c, &tail.guard, seg, pos, next, reclaim)?;
            seg = tail.cache.insert(rolled);
            pos = SEGMENT_HEADER_BYTES;
        }
        // Space for every frame that goes into this segment, before the
        // first store: a full disk fails the send here, with nothing
        // written.
        self.reserve_for(&c, seg, pos + total.min(seg.len() - pos), reclaim)?;
        let durable = c.durable();
        let start_pos = pos;
        // Under `Sync` the frames are encoded here and written with one
        // `pwrite` per segment they go into (`Segment::write_frames`).
        let mut staged = match self.config.durability {
            Durability::Sync => Some(Vec::with_capacity(total.min(seg.len() - pos))),
            Durability::Interval(_) | Durability::Buffered => None,
        };
        let mut staged_at = pos;
        for (i, r) in records.iter().enumerate() {
            let len = r.frame_bytes();
            if len > seg.len() - pos {
                if let Some(staged) = &mut staged {
                    // SAFETY: we hold the append mutex and `staged_at` is the
                    // published tail (mmap contract rule 2); the frames' space
                    // is reserved (rule 1).
                    unsafe { seg.write_frames(staged_at, staged) }?;
                    staged.clear();
                }
                c.publish_tail(pos, next);
                let rolled = self.roll(&c, &tail.guard, seg, pos, next, reclaim)?;
                seg = tail.cache.insert(rolled);
                pos = SEGMENT_HEADER_BYTES;
                staged_at = pos;
                // A batch larger than a segment: the part written so far is
                // published, the rest needs space in the new segment.
                let rest: usize = records[i..].iter().map(Record::frame_bytes).sum();
                self.reserve_for(&c, seg, pos + rest.min(seg.len() - pos), reclaim)?;
            }
            let durable_lag = u32::try_from(next - durable.min(next)).unwrap_or(u32::MAX);
            let batch_continues = i + 1 < records.len();
            let meta = FrameMeta { offset: next, timestamp_ms, durable_lag, batch_continues };
            let header = record::encode_header(meta, r.key, r.payload);
            let key = r.key.unwrap_or(&[]);
            let pad = record::padding(key.len(), r.payload.len());
            let written = match &mut staged {
                Some(staged) => record::encode_parts_into(staged, [&header, key, r.payload, pad], seg.salt()),
                // SAFETY: we hold the append mutex (`tail`) and `pos` is the
                // published tail or beyond it (mmap contract rule 2); the frame
                // fits the segment and its space is reserved (checked above,
                // rule 1).
                None => unsafe { seg.write_frame(pos, [&header, key, r.payload, pad]) },
            };
            assert_eq!(written, len, "frame of {len} bytes written as {written}");
            pos += len;
            next += 1;
        }
        if let Some(staged) = &staged {
            // SAFETY: as for the write before a roll above.
            unsafe { seg.write_frames(staged_at, staged) }?;
        }
        c.publish_tail(pos, next);
        self.sealer.after_append(seg, start_pos, pos);
        if self.config.durability.readers_see_unsynced() {
            c.raise_visible_written(next);
            self.control.notify();
        }
        Ok(first)
    }

    /// Makes sure the tail segment `seg` has blocks for its bytes below
    /// `end` before the caller stores frames there, and reserves ahead of
    /// the writer as `reservation.rs` says. One comparison when the space is
    /// there already; else an `fallocate` ([`ReserveAhead::reserve`]: the
    /// chunks the frames need, and the lead when the disk has room for it),
    /// and the prefault thread is asked to fault in what it reserved. When
    /// not even the frames' chunks fit, the send fails with ENOSPC
    /// ([`Error::is_no_space`]), with nothing written. That is not a failed
    /// sync: the handle goes on, and a later send succeeds once there is
    /// room. As a roll does, a reservation that finds the disk full first
    /// calls `reclaim` (segments every group has passed may be what fills
    /// it) and, if that removed any, tries once more. Called with the append
    /// mutex held, so the watermark it raises is the one every process's
    /// writer checks.
    ///
    /// [`ReserveAhead::reserve`]: crate::log::reservation::ReserveAhead::reserve
    fn reserve_for(
        &self,
        c: &PartitionControl<'_>,
        seg: &Arc<Segment>,
        end: usize,
        reclaim: &dyn Fn() -> usize,
    ) -> Result<()> {
        let reserved = c.tail_reserved();
        let wanted = self.reserve_ahead.for_writer_at(end);
        if wanted <= reserved {
            return Ok(());
        }
        let reserve = || {
            self.reserve_ahead.reserve(seg, reserved, end).inspect_err(|e| {
                if e.is_no_space() {
                    // Not even the frames' chunks fitted: give back what
                    // the failed call kept of them (nothing is stored past
                    // the watermark).
                    seg.release(reserved, self.reserve_ahead.needed_for(end));
                }
            })
        };
        let now = match reserve() {
            Err(e) if e.is_no_space() && reclaim() > 0 => reserve()?,
            reserved_now => reserved_now?,
        };
        if now == reserved {
            return Ok(());
        }
        c.raise_tail_reserved(now);
        self.prefaulter.reserved(seg, reserved, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Durability, Options, Queue};

    /// Page faults this thread has taken so far.
    fn minor_faults_of_this_thread() -> i64 {
        // SAFETY: `rusage` is plain integers, for which all zeros is a valid
        // value; getrusage only writes into it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable `rusage` for the whole call.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
        usage.ru_minflt
    }

    /// Under `Sync` a batch's frames go into the segment with `pwrite`, so
    /// the sender never touches the mapping: a sync write-protects the
    /// pages it wrote back, and frames stored through the mapping paid a
    /// fault (and a TLB flush) in the next batch for each such page, about
    /// five per batch of 100 × 100 B on ext4. (On tmpfs a sync writes
    /// nothing back and protects nothing, so there both ways take none.)
    /// A stored page also made its whole folio dirty, which the next sync
    /// wrote in full (docs/BENCHMARKS.md, W3).
    #[test]
    fn a_synced_sender_writes_its_batches_without_a_page_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::open_with(tmp.path().join("q"), Options::default().durability(Durability::Sync)).unwrap();
        let producer = queue.producer();
        let batch = vec![vec![7u8; 100]; 100];
        for _ in 0..10 {
            producer.send_batch(&batch).unwrap();
        }
        let before = minor_faults_of_this_thread();
        let batches = 200;
        for _ in 0..batches {
            producer.send_batch(&batch).unwrap();
        }
        let faults = minor_faults_of_this_thread() - before;
        assert!(faults < batches / 4, "{faults} page faults in the sender over {batches} synced batches");
        let read = queue.read_at(0, 0, 210 * 100).unwrap();
        assert_eq!(read.len(), 210 * 100);
        assert!(read.iter().enumerate().all(|(i, r)| r.position.offset == i as u64 && r.payload == [7u8; 100]));
    }
}

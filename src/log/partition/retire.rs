//! What retention may remove from a partition, and removing it: the
//! segments every group has passed, or the queue's retention limits let
//! go, never the last two.

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::log::segment;
use crate::storage;

use super::Partition;

impl Partition {
    /// True once after each roll by this process.
    pub(crate) fn take_rolled(&self) -> bool {
        self.rolled.load(Ordering::Relaxed) && self.rolled.swap(false, Ordering::Relaxed)
    }

    /// The segments whose records all lie below `floor` (those before the
    /// segment holding it), except the last two, which stay whatever was
    /// processed (see `retention`); and the base of the first segment kept.
    /// Every segment before the last two is synced in full (`durable` is
    /// at least `prev_segment_base`), so none holds a record a flush may
    /// still have to sync.
    pub(crate) fn passed_segments(&self, floor: u64) -> Result<(Vec<u64>, u64)> {
        let floor = floor.min(self.shared().prev_segment_base());
        let mut bases = self.segment_bases()?;
        let keep_from = bases.iter().rposition(|&b| b <= floor).unwrap_or(0);
        let first_kept = bases.get(keep_from).copied().unwrap_or(floor);
        bases.truncate(keep_from);
        Ok((bases, first_kept))
    }

    /// The number of partitions of the queue.
    pub(crate) fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Whether the queue has a retention limit.
    pub(crate) fn is_limited(&self) -> bool {
        self.config.retention.is_limited()
    }

    /// The base of the oldest segment the queue's retention limits keep at
    /// `now_ms` (0 with no limit): below it, a segment is past
    /// `max_bytes` (counting segments from the newest, a whole
    /// `segment_bytes` each, as `stat` counts them) or every record in it
    /// is older than `max_age` (its successor's first record, written after
    /// all of them, is). Only segments before the last two are judged.
    pub(crate) fn limit_floor(&self, now_ms: u64) -> Result<u64> {
        let limits = self.config.retention;
        if !limits.is_limited() {
            return Ok(0);
        }
        let bases = self.segment_bases()?;
        let judged = bases.len().saturating_sub(2);
        let mut keep_from = 0;
        if let Some(max) = limits.max_bytes {
            let fit = usize::try_from(max / self.config.segment_bytes).unwrap_or(usize::MAX);
            keep_from = bases.len().saturating_sub(fit).min(judged);
        }
        if let Some(age) = limits.max_age {
            let cutoff = now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            while keep_from < judged {
                match self.first_timestamp(bases[keep_from + 1])? {
                    Some(written) if written <= cutoff => keep_from += 1,
                    _ => break,
                }
            }
        }
        Ok(bases.get(keep_from).copied().unwrap_or(0))
    }

    /// When the first record of the segment starting at `base` was written,
    /// ms since the Unix epoch; `None` if it is not published yet.
    fn first_timestamp(&self, base: u64) -> Result<Option<u64>> {
        let end = self.next_offset();
        if base >= end {
            return Ok(None);
        }
        let mut cursor = self.cursor_at(base)?;
        let span = self.read_span(&mut cursor, base + 1, 1)?;
        Ok(span.frames.first().map(|f| f.timestamp_ms))
    }

    /// Raises the earliest retained offset to `first` (never lowers it):
    /// readers no longer look below it.
    pub(crate) fn raise_first_offset(&self, first: u64) {
        self.shared().raise_first_offset(first);
    }

    /// Removes the segment files starting at `bases`, which lie below
    /// `first_offset`, and makes their removal durable. A process that still
    /// maps one keeps its pages (mmap contract rule 1); the disk space comes
    /// back once no process maps it.
    pub(crate) fn remove_segments(&self, bases: &[u64]) -> Result<()> {
        for &base in bases {
            assert!(
                base < self.first_offset(),
                "removing segment {base} at or past first offset {}",
                self.first_offset()
            );
            self.segments.lock().remove(base);
            storage::remove_file(&self.dir.join(segment::file_name(base)))?;
        }
        storage::sync_dir(&self.dir)
    }
}

//! What retention may remove from a partition, and removing it: the
//! segments every group has passed, never the last two.

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

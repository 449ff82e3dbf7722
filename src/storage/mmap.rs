//! Shared file mappings, and the contract that makes them sound.
//!
//! # The mmap contract
//!
//! durq maps segment files and the control file `MAP_SHARED`, read-write, in
//! every process that opens the queue, and a consumer maps the checkpoint
//! file of each slot it holds. An observer (`stat`) maps the control file of
//! a live queue read-only ([`ReadOnlyMap`]) and only loads words from it, the
//! way its users store them: atomically. Handing out `&[u8]` into such a
//! mapping, or writing through a raw pointer into it, is sound only while these
//! rules hold; every `unsafe` call into this module names the rule it relies on
//! by its number here. This is the one statement of the contract
//! (ARCHITECTURE.md refers to it).
//!
//! 1. **No shrinking, and no store without a block.** durq never truncates
//!    a segment, a checkpoint file or the control file. A segment is created
//!    at its full size, so no access through a mapping can touch a page
//!    beyond the end of the file (SIGBUS). Its blocks are reserved
//!    (`fallocate`) progressively, a few chunks ahead of the writer
//!    (`log/reservation.rs`), in whole chunks the size of the largest
//!    page-cache folio ([`largest_folio_bytes`]): a store makes the file
//!    system find blocks for its page's whole folio. The tail segment's
//!    reserved watermark (`tail_reserved` in the control file) is raised,
//!    under the append mutex, only after its `fallocate` returned, and no
//!    one stores into a segment at or beyond it: the writer reserves every
//!    byte of a batch before its first store (a full disk is then an ENOSPC
//!    error of that `send`), the prefault thread faults in only reserved
//!    pages, and recovery reserves what it zeroes or rewrites first. So no
//!    store needs a block the disk no longer has (ENOSPC turned into
//!    SIGBUS). What a failed `fallocate` kept beyond the watermark is
//!    punched back: nothing is stored there. Bytes past the reserved part
//!    are a hole; readers stay below the tail, and recovery reads the last
//!    segment only up to where `SEEK_DATA` says its data ends, but a walk
//!    over damage, or over a sealed segment a large batch left early, may
//!    read holes. On ext4 and XFS that reads zeros and needs no block. On
//!    tmpfs (which the tests use, and which keeps nothing across a reboot)
//!    it takes a page, and on a full tmpfs faults. Retention removes whole
//!    segment files with `unlink`; a process that still maps one keeps its
//!    pages. A checkpoint file is mapped only once it has its full size, and
//!    a newer holder removes it with `unlink` too.
//! 2. **Append only at or beyond the published end.** Bytes of a segment below the
//!    partition's published tail (`next_offset`/`tail_pos` in the control
//!    file) are never written again by durq. Only the holder of the partition's
//!    append mutex writes, and only at or beyond the published tail (by
//!    stores into its mapping, or, under `Sync`, by `pwrite` of whole frames:
//!    the same page cache, so the same rule). Readers
//!    take slices only of frames below the visible watermark, which is at most
//!    the published tail. So a `&[u8]` handed to a reader never aliases a
//!    concurrent write by durq.
//! 3. **Repair happens where no reader looks.** Zeroing a torn tail writes
//!    only at or beyond the published tail, either by the sole process that
//!    has the queue open (recovery at open) or by the holder of the append
//!    mutex after the previous holder died. Cutting the log inside the
//!    segment before the last, and removing the last segment, is done only by
//!    the sole process that has the queue open.
//! 4. **A checkpoint file has one writer.** Only the holder of its epoch
//!    writes it, through its own mapping or (the synced copies) with
//!    `pwrite`, one write at a time (a lock orders the consumer's writes
//!    and its background syncer's). No one
//!    borrows a slice of a checkpoint mapping: others read the file with
//!    `pread`, and a copy read half-written fails its checksum like a torn
//!    one.
//! 5. **Outside writers are out of scope.** Like every mmap-based store
//!    (LMDB, Chronicle Queue), durq cannot stop another program, or a hostile
//!    local user, from writing into a mapped file. Such a write may change
//!    bytes under a reader; durq re-validates every frame (CRC) before it
//!    delivers it, so damage made before the read is detected, but a
//!    concurrent one is outside what Rust's memory model can promise.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// The largest folio (a run of pages the page cache manages as one) Linux
/// may hold a file's bytes in: a page table's worth of pages (2 MiB with
/// 4 KiB pages), at most 2^11 pages (`MAX_PAGECACHE_ORDER`). ext4 and XFS
/// keep files in such large folios, and the first store into any page of a
/// folio makes the file system find blocks for the whole folio (on a full
/// disk, a store beside a reserved page, in a folio not reserved whole,
/// faults with SIGBUS). Folios are aligned to their size, so a
/// reservation that starts and ends on multiples of this leaves no folio
/// half reserved, whoever made the folio (another process's read of the
/// hole after it included).
pub(crate) fn largest_folio_bytes() -> usize {
    const MAX_PAGECACHE_ORDER: u32 = 11;
    // SAFETY: sysconf only reads its integer argument.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
    // A page table is one page of 8-byte entries: it maps page / 8 pages.
    let pmd_order = (page / 8).trailing_zeros();
    page << pmd_order.min(MAX_PAGECACHE_ORDER)
}

/// A whole file mapped shared and read-write.
pub(crate) struct MappedFile {
    map: MmapRaw,
    len: usize,
}

impl MappedFile {
    /// Maps the first `len` bytes of `file`, which must be at least that long
    /// (the caller gave it that length).
    pub(crate) fn map(file: &File, path: &Path, len: u64) -> Result<MappedFile> {
        let len = mappable_len(file, path, len)?;
        let map = MmapOptions::new().len(len).map_raw(file).map_err(|e| Error::io("mmap", path, e))?;
        Ok(MappedFile { map, len })
    }

    /// Size of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Borrows `len` bytes at `pos`.
    ///
    /// # Safety
    /// No one may write `pos..pos + len` while the slice lives: the bytes lie
    /// below the published tail (contract rule 2), or the caller is the only
    /// process with the queue open (rule 3).
    pub(crate) unsafe fn bytes(&self, pos: usize, len: usize) -> &[u8] {
        assert!(pos <= self.len && len <= self.len - pos, "read {pos}+{len} beyond map of {}", self.len);
        // SAFETY: the range is inside the mapping (checked above), the mapping
        // lives as long as `self`, and the caller promises no concurrent write.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos), len) }
    }

    /// Copies `src` into the mapping at `pos`.
    ///
    /// # Safety
    /// The caller holds the right to write `pos..pos + src.len()`: it holds the
    /// partition's append mutex and the range lies at or beyond the published
    /// tail (contract rule 2), or it is the only process with the queue open,
    /// or it holds a checkpoint file's epoch (rule 4). The range has blocks
    /// reserved (rule 1).
    pub(crate) unsafe fn write(&self, pos: usize, src: &[u8]) {
        assert!(pos <= self.len && src.len() <= self.len - pos, "write {pos}+{} beyond map of {}", src.len(), self.len);
        // SAFETY: the range is inside the mapping (checked above); `src` is a
        // Rust slice and cannot overlap the shared mapping's unpublished
        // region, which no reference points into (rule 2).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_mut_ptr().add(pos), src.len()) }
    }

    /// Fills `pos..pos + len` with zeros. Same safety contract as [`write`].
    ///
    /// [`write`]: MappedFile::write
    pub(crate) unsafe fn zero(&self, pos: usize, len: usize) {
        assert!(pos <= self.len && len <= self.len - pos, "zero {pos}+{len} beyond map of {}", self.len);
        // SAFETY: in bounds (checked above); the caller holds the write right.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(pos), 0, len) }
    }

    /// A raw pointer to byte `pos`, for the control file's atomics.
    pub(crate) fn ptr_at(&self, pos: usize) -> *mut u8 {
        assert!(pos < self.len, "pointer {pos} beyond map of {}", self.len);
        // SAFETY: in bounds (checked above); producing the pointer is safe, its
        // users argue for each access.
        unsafe { self.map.as_mut_ptr().add(pos) }
    }

    /// Faults in the pages of `pos..pos + len` for writing ahead of time
    /// (`MADV_POPULATE_WRITE`), so appends do not stop for page faults one
    /// page at a time. Only a hint: failure (an older kernel) costs nothing
    /// but speed.
    pub(crate) fn prefault(&self, pos: usize, len: usize) {
        let len = len.min(self.len.saturating_sub(pos));
        if len > 0 {
            let _ = self.map.advise_range(memmap2::Advice::PopulateWrite, pos, len);
        }
    }

    /// Drops this process's page-table entries for `pos..pos + len`
    /// (`MADV_DONTNEED`), so that writing the pages back does not have to
    /// write-protect them one by one, each time interrupting every CPU that
    /// runs a thread of this process (a TLB shootdown per page). The mapping
    /// is shared and file-backed: dirty pages keep their data in the page
    /// cache, and a later access faults the same bytes back in. Only a hint:
    /// failure costs nothing but speed. Not an [`Op`](super::Op) for the
    /// simulated disk: it changes neither the file nor what is durable.
    pub(crate) fn drop_page_table_entries(&self, pos: usize, len: usize) {
        let len = len.min(self.len.saturating_sub(pos));
        if len > 0 {
            // SAFETY: for a shared file mapping MADV_DONTNEED changes no byte
            // that anyone can observe (madvise(2): later accesses repopulate
            // from the up-to-date contents of the file, which for a dirty
            // page is the page cache that still holds it), so slices
            // borrowed from this range stay valid and unchanged; the range
            // is inside the mapping.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, pos, len) };
        }
    }

    /// Makes `pos..pos + len` durable (msync with MS_SYNC, which on Linux is
    /// an fdatasync of that range of the file: `vfs_fsync_range`, mm/msync.c).
    /// It covers the range's bytes however they reached the page cache, by a
    /// store through any mapping of the file or by `pwrite`.
    pub(crate) fn sync_range(&self, path: &Path, pos: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        super::effect(super::Op::SyncRange(path, pos, len), || self.map.flush_range(pos, len))
            .map_err(|e| Error::io("msync", path, e))
    }
}

/// A file mapped shared and read-only: how an observer without the right to
/// write a file (`stat`) reads the live control file. It only loads whole,
/// aligned words, atomically, since the processes that use the queue store
/// them atomically while it looks.
pub(crate) struct ReadOnlyMap {
    map: MmapRaw,
    len: usize,
}

// durq is 64-bit only (README: 64-bit Linux), and this is where it says so:
// `ReadOnlyMap` loads u64 words atomically from read-only memory, which
// std::sync::atomic ("Atomic accesses to read-only memory") permits only
// for relaxed loads of atomics no wider than a pointer, since some targets
// implement wider loads as a compare-and-swap, a store that faults there.
const _: () = assert!(size_of::<u64>() <= size_of::<usize>(), "durq needs a 64-bit target");

impl ReadOnlyMap {
    /// Maps the first `len` bytes of `file`, opened read-only, which must be
    /// at least that long (rule 1: the file is never shrunk once it is).
    pub(crate) fn map(file: &File, path: &Path, len: u64) -> Result<ReadOnlyMap> {
        let len = mappable_len(file, path, len)?;
        let map = MmapOptions::new().len(len).map_raw_read_only(file).map_err(|e| Error::io("mmap", path, e))?;
        Ok(ReadOnlyMap { map, len })
    }

    /// The 8 bytes at `pos`, a multiple of 8, in memory order, loaded as one
    /// word atomically (relaxed: a snapshot of that word, ordered with
    /// nothing else).
    pub(crate) fn load_word(&self, pos: usize) -> [u8; 8] {
        assert!(
            pos.is_multiple_of(8) && pos.checked_add(8).is_some_and(|end| end <= self.len),
            "load at {pos} beyond map of {}",
            self.len
        );
        // SAFETY: the word lies inside the mapping (checked above), which
        // lives as long as `self`, stays backed by the file (rule 1) and is
        // page-aligned, so `pos` (a multiple of 8) gives an aligned word; it
        // is only loaded. std::sync::atomic allows a relaxed load from
        // read-only memory of an atomic no wider than a pointer (the module
        // asserts u64 is: 64-bit targets only). Its writers are other
        // processes: users store the live words atomically; an opener that
        // re-initialises the file stores plain bytes, which Rust's model does
        // not cover across processes (rule 5), but an aligned 8-byte load
        // never tears on durq's targets: the worst outcome is a stale word.
        let word = unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(pos).cast_mut().cast()) };
        word.load(Ordering::Relaxed).to_ne_bytes()
    }
}

/// `len`, once `file` is checked to be at least that long: a mapping past
/// the end of its file faults on access (SIGBUS).
fn mappable_len(file: &File, path: &Path, len: u64) -> Result<usize> {
    let actual = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if actual < len {
        return Err(Error::corrupt(path, actual, None, format!("file is {actual} bytes, expected at least {len}")));
    }
    usize::try_from(len)
        .map_err(|_| Error::corrupt(path, 0, None, format!("a mapping of {len} bytes does not fit this host's memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_load_past_a_short_mapping_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, [1u8; 4]).unwrap();
        let map = ReadOnlyMap::map(&File::open(&path).unwrap(), &path, 4).unwrap();
        let load = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.load_word(0)));
        assert!(load.is_err(), "8 bytes loaded from a 4-byte mapping: {load:?}");
        std::fs::write(&path, [1u8; 16]).unwrap();
        let map = ReadOnlyMap::map(&File::open(&path).unwrap(), &path, 16).unwrap();
        assert_eq!(map.load_word(8), [1; 8]);
    }
}

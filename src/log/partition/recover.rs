//! Recovery I/O: rebuilding a partition's tail from its last two segments
//! after a crash, with the decisions of `log::recovery` applied to the files.

use std::path::Path;
use std::time::Instant;

use crate::error::Result;
use crate::log::control::Tail;
use crate::log::recovery::{self, Evidence, LastFile, Scan, Sealed};
use crate::log::reservation::ReserveAhead;
use crate::log::salt::Salt;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, Segment};
use crate::observe::{self, Recovered};
use crate::options::QueueConfig;
use crate::storage;

use super::existing_segment_bases;

/// What recovery must assume happened before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// The opener is alone with the queue: the machine may have lost power,
    /// so any byte that was not synced may be lost or torn.
    PowerLoss,
    /// The holder of the append mutex died while other processes use the
    /// queue: the page cache still holds every byte it wrote, and only its
    /// last append may be unfinished.
    ProcessDeath,
}

/// Rebuilds the tail of partition `id` from its last two segments,
/// repairing a torn tail (see `recovery`), and makes everything it keeps
/// durable. The caller is the only process with the queue open
/// ([`Crash::PowerLoss`]), or holds the append mutex after its previous
/// holder died ([`Crash::ProcessDeath`]). `evidence` (files outside the log,
/// see `group::evidence`) proves records that the log must still hold; it
/// changes no verdict, it refuses a log that ends before it. Every verdict
/// is reached before any byte of the log is zeroed, cut or rewritten, so a
/// refused open leaves the log as it was (a last segment file cut short and
/// accepted by row 7 has been grown back to its size with zeros, which is
/// what it means anyway).
pub(crate) fn recover(
    dir: &Path,
    id: u32,
    config: &QueueConfig,
    crash: Crash,
    evidence: Option<&Evidence>,
) -> Result<Tail> {
    let started = Instant::now();
    let bases = existing_segment_bases(dir)?;
    let (first, last) = (bases[0], bases[bases.len() - 1]);
    let reserve_ahead = ReserveAhead::new(config.segment_bytes);
    // Judged as found, before it is grown back or its header rewritten
    // (recovery rows 5 to 7 in docs/FORMAT.md).
    let (mut seg, found) =
        Segment::open_for_recovery(dir, last, config.segment_bytes, reserve_ahead.at_creation(), |path, found| {
            recovery::check_last_file(found, path, id, last, config.segment_bytes, evidence)
        })?;
    let prev_base = bases.len().checked_sub(2).map_or(last, |i| bases[i]);
    let sealed = if prev_base != last { judge_sealed(dir, id, config, crash, prev_base, &seg)? } else { None };
    if let Some((prev, Sealed::Cut(cut))) = sealed {
        recovery::check_end(cut.next_offset, evidence, &prev.path, cut.tail_pos)?;
        let reserved = cut_sealed(dir, config, &prev, &cut, &seg)?;
        observe::recovered(id, crash, &recovered(prev_base, &cut, true), started.elapsed());
        return Ok(Tail {
            first_offset: first,
            next_offset: cut.next_offset,
            segment_base: prev_base,
            pos: cut.tail_pos as u64,
            prev_segment_base: bases.len().checked_sub(3).map_or(prev_base, |i| bases[i]),
            reserved: reserved as u64,
        });
    }
    // SAFETY: recovery's caller is alone or holds the append mutex (see
    // above), so nothing writes this segment while we read it.
    let whole = unsafe { seg.published(0, seg.len()) };
    // A lost or damaged `synced_end` proves nothing: fall back to the base.
    let synced_end = match found {
        LastFile::Whole => segment::decode_synced_end(whole).unwrap_or(last),
        LastFile::HeaderLost | LastFile::NeverWritten => last,
    };
    let (max, zeros_from) = (config.record_bytes_max, seg.data_end());
    // The header's salt; a lost header's is found again from its frames, and
    // a segment with no frame gets a fresh one with its new header.
    let salt = recovery::segment_salt(whole, last, max, zeros_from).unwrap_or_else(|| Salt::fresh(Salt::UNSALTED));
    let scan = recovery::scan_known_zeros(whole, last, max, synced_end, zeros_from, salt);
    recovery::check_end(scan.next_offset, evidence, &seg.path, scan.tail_pos)?;
    if let Some((prev, _)) = sealed {
        keep_sealed(&prev, last)?;
    }
    // Blocks for everything recovery keeps or zeroes, before any store, and
    // the writer's lead after it if the disk has room: a power cut may have
    // kept a segment's bytes but not the reservation of the blocks around
    // them. Reserving again what has blocks takes no space, so a queue on a
    // full disk still opens, to be read and to free space by retention.
    let stored_end = scan.torn.map_or(scan.tail_pos, |torn| torn.to.max(scan.tail_pos));
    let reserved = reserve_ahead.reserve(&seg, 0, stored_end)?;
    if found != LastFile::Whole {
        // The rewritten header claims every record before this segment
        // synced, which `keep_sealed` (or an earlier proof) made true.
        // SAFETY: as above; no reader can reach a segment without a header.
        // The header's chunk has blocks (`open_for_recovery` reserved it).
        unsafe { seg.rewrite_header(id, config.segment_bytes, salt) };
        seg.sync(0, SEGMENT_HEADER_BYTES)?;
    }
    if let Some(torn) = scan.torn {
        // SAFETY: as above; the torn bytes lie beyond every frame we keep,
        // and have blocks (reserved above: mmap contract rule 1).
        unsafe { seg.zero(torn.from, torn.to) };
        seg.sync(torn.from, torn.to)?;
    }
    seg.sync(SEGMENT_HEADER_BYTES, scan.tail_pos)?;
    observe::recovered(id, crash, &recovered(last, &scan, false), started.elapsed());
    Ok(Tail {
        first_offset: first,
        next_offset: scan.next_offset,
        segment_base: last,
        pos: scan.tail_pos as u64,
        prev_segment_base: prev_base,
        reserved: reserved as u64,
    })
}

/// Judges the segment before the last (`prev_base`), which a roll under
/// `Buffered` or `Interval` may have left unsynced when the crash came (see
/// `recovery::check_sealed`): `None` when a proof says it was synced, else
/// the segment and whether to keep it ([`keep_sealed`]) or cut the log
/// inside it ([`cut_sealed`]). Changes nothing. After a process death
/// nothing is lost from the page cache, so the segment is not walked, only
/// kept.
fn judge_sealed(
    dir: &Path,
    id: u32,
    config: &QueueConfig,
    crash: Crash,
    prev_base: u64,
    last: &Segment,
) -> Result<Option<(Segment, Sealed)>> {
    // SAFETY: as in `recover`: nothing writes these segments meanwhile.
    let last_bytes = unsafe { last.published(0, last.len()) };
    if segment::decode_synced_end(last_bytes).is_some_and(|end| end >= last.base_offset) {
        return Ok(None);
    }
    let prev = Segment::open(dir, id, prev_base, config.segment_bytes)?;
    // SAFETY: as above.
    let prev_bytes = unsafe { prev.published(0, prev.len()) };
    let (max, base) = (config.record_bytes_max, last.base_offset);
    let verdict = match crash {
        Crash::PowerLoss => recovery::check_sealed(prev_bytes, prev_base, last_bytes, base, max),
        Crash::ProcessDeath if recovery::proven_sealed(prev_bytes, last_bytes, base) => Sealed::Proven,
        Crash::ProcessDeath => Sealed::Kept,
    };
    Ok(match verdict {
        Sealed::Proven => None,
        verdict => Some((prev, verdict)),
    })
}

/// Keeps the segment before the last whole: syncs it in full, then records
/// in its header that every record before the last segment (starting at
/// `last_base`) is synced, and syncs that proof.
fn keep_sealed(prev: &Segment, last_base: u64) -> Result<()> {
    prev.sync(0, prev.len())?;
    // SAFETY: as in `recover`; every record of `prev` was just synced, and
    // every segment before it was synced before it was sealed.
    unsafe { prev.set_synced_end(last_base) };
    prev.sync(0, SEGMENT_HEADER_BYTES)
}

/// Cuts the log inside the segment before the last, where `cut` ends it:
/// reserves blocks for what it keeps or zeroes and the writer's lead (the
/// log goes on in this segment), zeroes its torn bytes, syncs what it
/// keeps, records the new end in its header, and removes the last segment,
/// whose records follow the hole. Returns how much of `prev`, now the
/// tail, is reserved.
fn cut_sealed(dir: &Path, config: &QueueConfig, prev: &Segment, cut: &recovery::Scan, last: &Segment) -> Result<usize> {
    let end = cut.torn.map_or(cut.tail_pos, |torn| torn.to.max(cut.tail_pos));
    let reserved = ReserveAhead::new(config.segment_bytes).reserve(prev, 0, end)?;
    if let Some(torn) = cut.torn {
        // SAFETY: as in `recover`; the torn bytes lie beyond every frame we
        // keep, and no reader was handed them: only a process alone with
        // the queue cuts (never after a process death). They have blocks
        // (reserved above: mmap contract rule 1).
        unsafe { prev.zero(torn.from, torn.to) };
    }
    prev.sync(0, end)?;
    // SAFETY: as above; every record of `prev` below the cut was just
    // synced, and every segment before it was synced before it was sealed.
    unsafe { prev.set_synced_end(cut.next_offset) };
    prev.sync(0, SEGMENT_HEADER_BYTES)?;
    storage::remove_file(&last.path)?;
    storage::sync_dir(dir)?;
    Ok(reserved)
}

/// What the recovery event reports of `scan`, the walk of the segment at
/// `base` that recovery kept (`cut`: the segment before the last, where the
/// log was cut).
fn recovered(base: u64, scan: &Scan, cut: bool) -> Recovered {
    Recovered {
        segment_base: base,
        records_scanned: scan.next_offset - base,
        bytes_scanned: scan.tail_pos as u64,
        bytes_zeroed: scan.torn.map_or(0, |t| (t.to - t.from) as u64),
        cut,
        next_offset: scan.next_offset,
    }
}

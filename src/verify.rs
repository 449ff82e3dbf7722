//! A read-only check of every byte of a queue: `durq verify`.
//!
//! Walks every frame of every segment (checksum, offset order, segment
//! contiguity) and every checkpoint, then every group's dead-letter queue
//! the same way, and reports each problem with its file, byte position and
//! offset (never one past the end of the file it names; in a dead-letter
//! queue, saying whose it is). Entries of `groups/` that are not groups are
//! noted and ignored; a missing or damaged meta file is reported with how
//! to recover. It opens files read-only and never repairs: a torn tail that
//! the next open would zero is reported as a note, and so is one in the
//! segment before the last that nothing proves was synced (the next open
//! cuts the log there, see `recovery::check_sealed`), and a last segment
//! whose creation a power cut interrupted (the next open completes it). The
//! last segment is judged as recovery judges it, with the same evidence
//! from the groups' checkpoints and dead letters (`group::evidence`): what
//! recovery would refuse or keep as damage is a problem.
//!
//! On a queue in use the walk races the queue's own work: a checkpoint
//! past the end found before it was read is judged again against an end
//! read after it (the live one when some process has the queue open), and
//! a file removed between its listing and its read (retention, a newer
//! epoch) is the queue moving on, neither damage nor an error.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::group::checkpoint::{self, COPIES_AT, CopyError};
use crate::group::{self, Committed, dead_letter, evidence};
use crate::layout::{self, GROUPS_DIR, LEASE_FILE};
use crate::log::partition;
use crate::log::record::{self, Decoded, FRAME_HEADER_BYTES};
use crate::log::recovery::{self, Evidence, LastFile};
use crate::log::salt::Salt;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};
use crate::log::{control, survey};
use crate::meta;
use crate::storage;
use crate::storage::lock_table::LockTable;

/// Everything `verify` found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Records checked, over all partitions.
    pub records: u64,
    /// Segment files checked.
    pub segments: usize,
    /// Checkpoint files checked.
    pub checkpoints: usize,
    /// Damage: the queue is not intact.
    pub problems: Vec<Problem>,
    /// Worth knowing, but not damage (an unrecovered torn tail after a crash).
    pub notes: Vec<String>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte position of the damage.
    pub position: u64,
    /// Record offset there, where one applies.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: byte {}", self.file.display(), self.position)?;
        if let Some(o) = self.offset {
            write!(f, ", offset {o}")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl Report {
    fn problem(&mut self, file: &Path, position: u64, offset: Option<u64>, what: impl Into<String>) {
        self.problems.push(Problem { file: file.into(), position, offset, what: what.into() });
    }
}

/// Checks the queue at `dir` without modifying anything. `Err` only when it
/// cannot be read as a queue at all (no such directory, none of a queue's
/// files, a newer format); a queue whose meta file is missing or damaged is
/// reported as that one problem, with how to recover.
pub fn verify(dir: &Path) -> Result<Report> {
    check(dir, None)
}

/// [`verify`]; `record_bytes_max` is the queue's when something else tells
/// it (a dead-letter queue's follows from its queue's), for the advice on a
/// damaged meta file.
fn check(dir: &Path, record_bytes_max: Option<u32>) -> Result<Report> {
    let config = match meta::read(dir) {
        Ok(config) => config,
        Err(e) => return unreadable_meta(dir, e, record_bytes_max),
    };
    let mut report = Report::default();
    let evidence = evidence::gather(dir, config.partitions)?;
    let mut ends = Vec::new();
    for (p, evidence) in (0..config.partitions).zip(&evidence) {
        let pdir = dir.join(layout::partition_dir_name(p));
        ends.push(verify_partition(&pdir, p, &config, evidence.as_ref(), &mut report)?);
    }
    let listing = group::list(dir)?;
    report.notes.extend(listing.stray_notes(dir));
    for group in &listing.groups {
        for (p, &end) in (0..config.partitions).zip(&ends) {
            let slot_dir = group.slot_dir(p);
            if !slot_dir.is_dir() {
                continue;
            }
            match group.committed(p) {
                Ok(Committed::At { epoch, .. }) => {
                    let path = group.checkpoint_path(p, epoch);
                    if let Some(next_offset) = verify_checkpoint(&path, p, &mut report)? {
                        judge_checkpoint(&path, next_offset, dir, p, &config, end, &mut report)?;
                    }
                }
                Ok(Committed::NotStarted) => {}
                Err(Error::Corrupt { file, reason, .. }) => {
                    report.checkpoints += 1;
                    report.problem(&file, 0, None, reason);
                }
                // The group was deleted since the listing.
                Err(e) if moved_on(&e) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = group.lease(p)? {
                report.notes.push(format!("{}: {e}", slot_dir.join(LEASE_FILE).display()));
            }
        }
        verify_dead_letters(group.dead_letter_queue().dir(), group.name(), &config, &mut report)?;
    }
    Ok(report)
}

/// Where partition `p`'s log ends as recovered from its own bytes
/// (`log::survey`, as `stat` finds it), which a checkpoint found past the
/// walk's end is judged against again;
/// `None` when damage the walk reports leaves it unknown: a checkpoint is
/// then not judged against an end made up here.
fn log_end(pdir: &Path, p: u32, config: &crate::QueueConfig) -> Result<Option<u64>> {
    match survey::survey(pdir, p, config, None) {
        Ok(found) => Ok(Some(found.next_offset)),
        Err(Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => Ok(None),
        Err(e) if moved_on(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `e` is a file listed a moment ago and gone since: on a queue in
/// use, retention removes segments and a new holder of a slot the files of
/// older epochs. The queue moved on; that is neither damage nor an error.
fn moved_on(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Reports the checkpoint at `path` if its position, `next_offset`, is past
/// the end of partition `p`'s log. `end` was found before the checkpoint
/// was read; on a queue in use a consumer may have committed past it since,
/// so a checkpoint past it is judged again against an end read after the
/// checkpoint: the live one if some process has the queue open
/// (`control::observe`, as `stat` reads it), otherwise the log's as it is
/// now. Records are appended before they are committed, so only damage
/// puts a checkpoint past that end.
fn judge_checkpoint(
    path: &Path,
    next_offset: u64,
    dir: &Path,
    p: u32,
    config: &crate::QueueConfig,
    end: Option<u64>,
    report: &mut Report,
) -> Result<()> {
    if end.is_none_or(|end| next_offset <= end) {
        return Ok(());
    }
    let live = control::observe(dir, config.partitions, &LockTable::read()?)?;
    let end_now = match live {
        Some(live) => Some(live[p as usize].next_offset),
        None => log_end(&dir.join(layout::partition_dir_name(p)), p, config)?,
    };
    if let Some(end) = end_now.filter(|&end| next_offset > end) {
        report.problem(path, 0, Some(next_offset), format!("checkpoint is past the end of the log ({end})"));
    }
    Ok(())
}

/// Checks a group's dead-letter queue, a durq queue of its own, the same
/// way, and adds what it finds to `report`, each problem and note saying
/// whose dead-letter queue it is in. `config`: the queue's.
fn verify_dead_letters(dlq: &Path, group: &str, config: &crate::QueueConfig, report: &mut Report) -> Result<()> {
    if !dlq.is_dir() {
        return Ok(());
    }
    let whose = format!("in the dead-letter queue of group {group:?}");
    let record_bytes_max = dead_letter::queue_options(config).resolve()?.record_bytes_max;
    let found = check(dlq, Some(record_bytes_max)).or_else(|e| match e {
        // Not even a partition folder yet.
        Error::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound && !dlq.join(layout::partition_dir_name(0)).exists() =>
        {
            Ok(Report {
                notes: vec![format!(
                    "{}: empty: its creation was cut short; the next dead letter completes it",
                    dlq.display()
                )],
                ..Report::default()
            })
        }
        e => Err(e),
    })?;
    report.records += found.records;
    report.segments += found.segments;
    report.checkpoints += found.checkpoints;
    report.problems.extend(found.problems.into_iter().map(|p| Problem { what: format!("{whose}: {}", p.what), ..p }));
    report.notes.extend(found.notes.into_iter().map(|n| format!("{whose}: {n}")));
    Ok(())
}

/// The report on a queue whose meta file cannot be read (`error`): it holds
/// the options every other file is read with, so nothing else can be
/// checked, and its one problem comes with how to recover. A directory
/// without partition folders is no queue (or nothing left to recover), and
/// a meta file of a newer format no damage: both stay errors.
fn unreadable_meta(dir: &Path, error: Error, record_bytes_max: Option<u32>) -> Result<Report> {
    let partitions = (0..).take_while(|&p| dir.join(layout::partition_dir_name(p)).is_dir()).count();
    if partitions == 0 {
        return Err(error);
    }
    let (position, what) = match &error {
        Error::Corrupt { position, reason, .. } => (*position, reason.clone()),
        Error::NotAQueue { reason, .. } => (0, reason.clone()),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            if !holds_data(dir, partitions) {
                // Creation publishes the meta file last (docs/FORMAT.md).
                return Ok(Report {
                    notes: vec![format!(
                        "{}: no {}, and nothing but empty partitions: a creation cut short, which the next open completes",
                        dir.display(),
                        layout::META_FILE
                    )],
                    ..Report::default()
                });
            }
            (0, "the meta file is missing".into())
        }
        _ => return Err(error),
    };
    let mut report = Report::default();
    report.problem(&dir.join(layout::META_FILE), position, None, what);
    report.notes.push(meta_advice(dir, partitions, record_bytes_max));
    Ok(report)
}

/// Whether a queue directory holds more than a creation that was cut short
/// before publishing its meta file can leave: groups, a second segment, or
/// a record (a non-zero byte where the first frame goes).
fn holds_data(dir: &Path, partitions: usize) -> bool {
    dir.join(GROUPS_DIR).exists()
        || (0..partitions as u32).any(|p| {
            let pdir = dir.join(layout::partition_dir_name(p));
            let bases = partition::segment_bases(&pdir).unwrap_or_default();
            bases.len() > 1
                || bases.first().is_some_and(|&base| {
                    let path = pdir.join(layout::segment_file_name(base));
                    storage::read_small(&path, SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES)
                        .map_or(true, |b| b.get(SEGMENT_HEADER_BYTES..).is_some_and(|f| f.iter().any(|&x| x != 0)))
                })
        })
}

/// How to give a queue back its meta file: a new one with the options the
/// queue was created with, which its other files, or `record_bytes_max`
/// when known, still tell.
fn meta_advice(dir: &Path, partitions: usize, record_bytes_max: Option<u32>) -> String {
    let first_segment = partition::segment_bases(&dir.join(layout::partition_dir_name(0)))
        .ok()
        .and_then(|bases| bases.first().copied())
        .map(|base| dir.join(layout::partition_dir_name(0)).join(layout::segment_file_name(base)));
    // The header names the size it was created with; a damaged header
    // leaves the file's length.
    let segment_bytes = first_segment.and_then(|path| {
        let header = storage::read_small(&path, SEGMENT_HEADER_BYTES).ok()?;
        segment::header_segment_bytes(&header).or_else(|| std::fs::metadata(&path).ok().map(|m| m.len()))
    });
    let segment_bytes = segment_bytes.map_or("SIZE (the size of its segment files)".into(), |b| b.to_string());
    let (record_bytes_max, which) = match record_bytes_max {
        Some(n) => (n.to_string(), String::new()),
        None => (
            "BYTES".into(),
            format!(
                "; BYTES must be at least the original record_bytes_max, {} unless it was set",
                crate::options::RECORD_BYTES_MAX_DEFAULT
            ),
        ),
    };
    format!(
        "to recover {meta}, with no process using the queue: create an empty queue with the options this one was created with, in a new directory NEW: `durq produce NEW --partitions {partitions} --segment-bytes {segment_bytes} --record-bytes-max {record_bytes_max} --durability sync < /dev/null` (the partitions and segment size are what its files say{which}; any durability will do), then copy NEW/{meta} to {path} and run durq verify again (docs/RELIABILITY.md, \"What to do when\")",
        meta = layout::META_FILE,
        path = dir.join(layout::META_FILE).display()
    )
}

/// Returns the partition's next offset as found on disk, or `None` when
/// the segment that would say it cannot be read: a checkpoint is then not
/// judged against an end made up here. `evidence` is what the groups prove
/// the log holds, judged as recovery judges it.
fn verify_partition(
    pdir: &Path,
    p: u32,
    config: &crate::QueueConfig,
    evidence: Option<&Evidence>,
    report: &mut Report,
) -> Result<Option<u64>> {
    let bases = match partition::segment_bases(pdir) {
        Ok(b) => b,
        Err(Error::Corrupt { file, reason, .. }) => {
            report.problem(&file, 0, None, reason);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if bases.is_empty() {
        report.problem(pdir, 0, None, "partition has no segment file");
        return Ok(None);
    }
    let mut expected = bases[0];
    let mut end_known = true;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        // A segment whose header cannot be read says nothing about where
        // its records end. The next segment's base does; after the last one
        // the end is unknown. Either way only this segment is reported, not
        // the intact files whose offsets no longer line up with a guess.
        let mut unreadable = |expected: &mut u64| match bases.get(i + 1) {
            Some(&next_base) => *expected = next_base,
            None => end_known = false,
        };
        let path = pdir.join(layout::segment_file_name(base));
        report.segments += 1;
        if base != expected {
            report.problem(
                &path,
                0,
                Some(expected),
                format!("segment starts at offset {base}, but the previous one ends at {expected}"),
            );
            expected = base;
        }
        let mut bytes = match storage::read_small(&path, config.segment_bytes as usize) {
            Ok(bytes) => bytes,
            // Removed by retention since the listing, and with it every
            // segment before it: the log now starts further on.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.segments -= 1;
                unreadable(&mut expected);
                continue;
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        if bytes.len() as u64 > config.segment_bytes {
            // Only one byte past the size was read (`read_small`).
            bytes.truncate(config.segment_bytes as usize);
            let what = format!("segment is longer than {} bytes", config.segment_bytes);
            report.problem(&path, config.segment_bytes, None, what);
        }
        // No position past the end of the file as found is ever named: a
        // cut file's missing bytes are walked as zeros (as the next open
        // grows a last segment back, recovery row 7), and reported as cut.
        let found_len = bytes.len();
        let judged = if last {
            // As recovery judges it (recovery rows 5 to 7), evidence included.
            match recovery::check_last_file(&bytes, &path, p, base, config.segment_bytes, evidence) {
                Ok(LastFile::NeverWritten) => {
                    report.notes.push(format!(
                        "{}: segment of which nothing was written ({found_len} bytes), and nothing proves a record reached it: its creation was cut short; the next open rewrites its header",
                        path.display()
                    ));
                    continue;
                }
                Ok(LastFile::HeaderLost) => {
                    let what = "segment header is all zeros in front of records (the next open rewrites it)";
                    report.problem(&path, 0, None, what);
                    LastFile::HeaderLost
                }
                Ok(LastFile::Whole) => LastFile::Whole,
                Err(e) => {
                    report_error(report, &path, e);
                    unreadable(&mut expected);
                    continue;
                }
            }
        } else {
            if found_len < SEGMENT_HEADER_BYTES {
                report.problem(&path, found_len as u64, None, cut_short(found_len, config, None));
                unreadable(&mut expected);
                continue;
            }
            if let Err(e) = segment::check_header(&bytes, &path, p, base, config.segment_bytes) {
                report_error(report, &path, e);
                if (found_len as u64) < config.segment_bytes {
                    report.problem(&path, found_len as u64, None, cut_short(found_len, config, None));
                }
                unreadable(&mut expected);
                continue;
            }
            LastFile::Whole
        };
        bytes.resize(config.segment_bytes as usize, 0);
        if i + 2 == bases.len()
            && let Some(cut) =
                unsynced_cut(&bytes, base, &pdir.join(layout::segment_file_name(bases[i + 1])), bases[i + 1], config)?
        {
            report.records += cut.next_offset - base;
            if let Err(e) = recovery::check_end(cut.next_offset, evidence, &path, cut.tail_pos) {
                // The next open refuses the cut: evidence says the records
                // it would drop existed (a checkpoint past it is reported too).
                report_error(report, &path, e);
                return Ok(Some(cut.next_offset));
            }
            report.notes.push(format!(
                "{}: unrecovered torn tail at byte {} (offset {}) of a full segment that was never synced; no record proves it acknowledged, the next open cuts the log there and removes {}",
                path.display(),
                cut.tail_pos,
                cut.next_offset,
                layout::segment_file_name(bases[i + 1]),
            ));
            return Ok(Some(cut.next_offset));
        }
        let synced_end = match judged {
            LastFile::Whole => segment::decode_synced_end(&bytes).unwrap_or(base),
            LastFile::HeaderLost | LastFile::NeverWritten => base,
        };
        // No salt to be found (a lost header over no valid frame): no frame
        // validates under any, the unsalted CRC included.
        let salt = recovery::segment_salt(&bytes, base, config.record_bytes_max, bytes.len()).unwrap_or(Salt::UNSALTED);
        let scan = recovery::scan(&bytes, base, config.record_bytes_max, synced_end, salt);
        if found_len < bytes.len() {
            // What the walk lost to the cut is reported once, as the cut.
            let first_cut_off = scan.damaged.iter().find(|d| d.pos >= found_len).map(|d| d.offset);
            report.problem(&path, found_len as u64, first_cut_off, cut_short(found_len, config, first_cut_off));
        }
        for d in scan.damaged.iter().filter(|d| d.pos < found_len) {
            let resumed = match record::decode(&bytes[d.resumed_at..], config.record_bytes_max, salt) {
                Decoded::Frame(f) if d.resumed_at < found_len && f.meta.offset > d.offset => {
                    format!("valid records follow at byte {}", d.resumed_at)
                }
                _ if found_len < bytes.len() => {
                    format!("no valid record follows before the file ends at byte {found_len}")
                }
                _ => "no valid record follows".into(),
            };
            report.problem(
                &path,
                d.pos as u64,
                Some(d.offset),
                format!("{} in acknowledged data ({resumed})", d.reason),
            );
        }
        // The next open refuses a log that ends before what evidence proves
        // (and so zeroes no torn tail). Which of the two files is wrong
        // cannot be known here: the checkpoint past the end is reported too.
        let refused = if last {
            recovery::check_end(scan.next_offset, evidence, &path, scan.tail_pos.min(found_len)).err()
        } else {
            None
        };
        if let Some(torn) = scan.torn.filter(|_| refused.is_none()) {
            let batch_spans_roll =
                !last && torn.reason == recovery::Found::UnfinishedBatch && bases.get(i + 1) == Some(&torn.walked_to);
            if batch_spans_roll {
                // A batch larger than what was left of this segment goes on in
                // the next one: its frames here are whole and sealed.
                report.records += torn.walked_to - scan.next_offset;
            } else if last {
                report.notes.push(format!(
                    "{}: unrecovered torn tail at byte {} (offset {}): {}; no later record proves it acknowledged, the next open zeroes it",
                    path.display(),
                    torn.from,
                    scan.next_offset,
                    torn.reason
                ));
            } else {
                report.problem(
                    &path,
                    torn.from as u64,
                    Some(scan.next_offset),
                    format!("{} in a sealed segment", torn.reason),
                );
            }
        }
        report.records += scan.next_offset - base;
        if let Some(e) = refused {
            report_error(report, &path, e);
        }
        // Damage in a sealed segment is reported once: the next segment's
        // base says where its records end.
        expected = match (scan.torn, bases.get(i + 1)) {
            (Some(_), Some(&next_base)) => next_base,
            _ => scan.next_offset,
        };
    }
    Ok(end_known.then_some(expected))
}

/// What a segment file cut to `found_len` bytes is reported as; `cut_off`:
/// the first record the cut took, if the walk knows it.
fn cut_short(found_len: usize, config: &crate::QueueConfig, cut_off: Option<u64>) -> String {
    let what = format!("segment is {found_len} bytes, expected {}", config.segment_bytes);
    match cut_off {
        Some(offset) => format!("{what}: the records from offset {offset} on were cut off with the rest of it"),
        None => what,
    }
}

/// Reports `e`, found while judging `path`, at the file and position it
/// names.
fn report_error(report: &mut Report, path: &Path, e: Error) {
    match e {
        Error::Corrupt { file, position, offset, reason } => report.problem(&file, position, offset, reason),
        e => report.problem(path, 0, None, e.to_string()),
    }
}

/// The cut recovery would make in the segment before the last (`bytes`,
/// starting at `base`), given the last one at `last_path`, if it would make
/// one.
fn unsynced_cut(
    bytes: &[u8],
    base: u64,
    last_path: &Path,
    last_base: u64,
    config: &crate::QueueConfig,
) -> Result<Option<recovery::Scan>> {
    let last = match std::fs::read(last_path) {
        Ok(last) => last,
        // Rolled past and removed since the listing: this segment is
        // sealed and synced, as the queue moved on.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", last_path, e)),
    };
    Ok(match recovery::check_sealed(bytes, base, &last, last_base, config.record_bytes_max) {
        recovery::Sealed::Cut(scan) => Some(scan),
        recovery::Sealed::Proven | recovery::Sealed::Kept => None,
    })
}

/// Checks the copies of the checkpoint file at `path`; returns the position
/// it holds, `None` if it is damaged (reported) or was removed since the
/// listing (a newer holder took the slot: the queue moved on).
fn verify_checkpoint(path: &Path, p: u32, report: &mut Report) -> Result<Option<u64>> {
    let bytes = match storage::read_small(path, checkpoint::FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    report.checkpoints += 1;
    for at in COPIES_AT {
        let copy = bytes.get(at..).unwrap_or(&[]);
        match checkpoint::decode_copy(copy, p) {
            // A mark copy of zeros was never written (no delivery yet), and
            // a file that ends where the second mark copy would start is of
            // the earlier one-mark layout: not damage. The synced copies are
            // written when the file is filled.
            Err(CopyError::BadMagic)
                if checkpoint::MARK_COPIES_AT.contains(&at)
                    && copy.iter().take(checkpoint::COPY_BYTES).all(|&b| b == 0) => {}
            Err(CopyError::Truncated)
                if at == checkpoint::SECOND_MARK_COPY_AT && bytes.len() == checkpoint::SECOND_MARK_COPY_AT => {}
            Err(e) => report.notes.push(format!("{}: copy at byte {at}: {e}; another copy is used", path.display())),
            Ok(_) => {}
        }
    }
    match checkpoint::decode_file(&bytes, p, path) {
        Ok(state) => Ok(Some(state.next_offset)),
        Err(Error::Corrupt { reason, .. }) => {
            report.problem(path, 0, None, reason);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

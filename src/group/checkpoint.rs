//! Checkpoint files: a group's durable read position in one slot
//! (partition), one file per fencing epoch.
//!
//! A slot's directory holds `<epoch:020>.ckpt` files. Taking a slot claims
//! the next epoch by creating its file exclusively (the file system's
//! compare-and-swap: only one taker can create it), then copies the position
//! from the newest valid file into it. The checkpoint in force is the newest
//! file with a valid copy. A holder commits only into its own epoch's file,
//! then checks that no newer epoch has been claimed (`Error::Fenced` if one
//! has): a fenced holder's late write lands in a file nobody reads, so a
//! zombie can never move the group's position, backwards or forwards.
//!
//! Inside a file, crash-atomic without rename, the bbolt way: two fixed
//! copies, each a complete checkpoint with its own checksum. A commit
//! overwrites the copy not holding the current state and syncs; a torn
//! write can only damage the copy being written. Open validates each copy
//! (magic → checksum → version → partition) and takes the valid copy with
//! the highest generation.
//!
//! Two more copies, side by side on a page of their own, take the states
//! that need to survive a crash of the process but not a power loss: the
//! delivery marks (written before the closure runs), and, under
//! `commit(Interval)` and `commit(Buffered)`, the commits themselves. The
//! holder stores them through a mapping of the file and syncs only the
//! first page (the synced copies), so the marks' page stays dirty and
//! writable, and such a store costs no system call and no page fault. The
//! synced copies are written with `pwrite`, not stored: a store into their
//! page would fault after every sync (the writeback write-protects a
//! mapped page it cleans, flushing its TLB entry), which made each durable
//! commit cost a page fault and a TLB flush more than a bare `pwrite` +
//! `fdatasync`. The msync of the first page covers bytes written either
//! way: it syncs the file's range in the page cache (on Linux,
//! `vfs_fsync_range` of the range), not the mapping's dirty entries. The
//! page cache keeps them across a SIGKILL,
//! and every reader (a taker, retention, stat) reads the file through it.
//! They alternate, like the synced copies, so that a store cut short by a
//! SIGKILL (or torn by a power cut) leaves the state before it intact: the
//! position of a commit is never lost to a torn store of the next mark. A
//! stored state always carries a higher generation than the state it was
//! made from, and a lower one than any later write, so the rule "highest
//! valid generation wins" holds across all four copies. (A synced write
//! takes its generation when it starts; a store made while its `pwrite`
//! and msync are in flight gets a higher one, and stays in force.)
//!
//! **Syncing a stored commit** (`Checkpoint::sync`) writes the state in
//! force into the synced copy not holding the newest synced state, and
//! msyncs the first page: from then on a power cut keeps it. Retention
//! trusts only the synced copies ([`latest_synced`]): a stored position
//! that a power cut could still undo must not let segments go that the
//! group would need again.
//!
//! ```text
//! copies at byte 0 and 512 (synced; separate disk sectors) and at bytes
//! 4096 and 4160 (stored, unsynced; their own page), 64 bytes each:
//! offset size field
//!  0     8    magic          b"DURQCKPT"
//!  8     4    version        FORMAT_VERSION
//! 12     4    partition
//! 16     8    generation     +1 per write; the higher valid copy wins
//! 24     8    epoch          the fencing epoch of the file
//! 32     8    next_offset    the first record not yet processed
//! 40     8    delivered_end  end of the last batch handed to the group
//! 48     4    attempts       deliveries of the record at next_offset
//! 52     4    range_attempts deliveries that covered all of next_offset..delivered_end
//! 56     4    reserved       zeros
//! 60     4    crc32          CRC32 of bytes 0..60 of the copy
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::codec;
use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::meta::FORMAT_VERSION;
use crate::storage::{self, mmap::MappedFile};

/// Bytes of one copy.
pub const COPY_BYTES: usize = 64;
/// Where the second copy starts.
pub const SECOND_COPY_AT: usize = 512;
/// Where the first copy for stored, unsynced states (delivery marks, and
/// commits under `commit(Interval)` and `commit(Buffered)`) starts: a page
/// of its own.
pub const MARK_COPY_AT: usize = 4096;
/// Where the second copy for stored states starts, beside the first: they
/// alternate.
pub const SECOND_MARK_COPY_AT: usize = MARK_COPY_AT + COPY_BYTES;
/// Where the copies for stored states start.
pub const MARK_COPIES_AT: [usize; 2] = [MARK_COPY_AT, SECOND_MARK_COPY_AT];
/// Where the synced copies start.
pub const SYNCED_COPIES_AT: [usize; 2] = [0, SECOND_COPY_AT];
/// Where each copy starts.
pub const COPIES_AT: [usize; 4] = [0, SECOND_COPY_AT, MARK_COPY_AT, SECOND_MARK_COPY_AT];
/// Bytes of the whole file. (Files written before the second mark copy
/// end at `SECOND_MARK_COPY_AT`; they read the same, see [`decode_file`].)
pub const FILE_BYTES: usize = SECOND_MARK_COPY_AT + COPY_BYTES;
/// Bytes of the first page's copies, the ones a sync covers.
const SYNCED_COPIES_BYTES: usize = SECOND_COPY_AT + COPY_BYTES;

const MAGIC: [u8; 8] = *b"DURQCKPT";
const VERSION_AT: usize = 8;
const PARTITION_AT: usize = 12;
const GENERATION_AT: usize = 16;
const EPOCH_AT: usize = 24;
const NEXT_OFFSET_AT: usize = 32;
const DELIVERED_END_AT: usize = 40;
const ATTEMPTS_AT: usize = 48;
const RANGE_ATTEMPTS_AT: usize = 52;
const CRC_AT: usize = 60;
const _: () = assert!(CRC_AT + 4 == COPY_BYTES);

pub use crate::layout::{checkpoint_file_name as file_name, parse_checkpoint_file_name as parse_file_name};

/// One checkpoint copy's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointState {
    /// The partition it belongs to.
    pub partition: u32,
    /// Higher is newer.
    pub generation: u64,
    /// The committer's fencing epoch.
    pub epoch: u64,
    /// The first offset not yet processed by the group.
    pub next_offset: u64,
    /// End of the last batch handed to the group: records below it and at
    /// or past `next_offset` were delivered before and not committed.
    pub delivered_end: u64,
    /// How many times the record at `next_offset` has been delivered
    /// without being committed.
    pub attempts: u32,
    /// How many deliveries covered every record of
    /// `next_offset..delivered_end`: what each of them after the first has
    /// seen (after a failure they come one at a time, so only whole-range
    /// deliveries happened before).
    pub range_attempts: u32,
}

impl CheckpointState {
    /// The state of a slot whose next record to process is `offset`, with
    /// nothing delivered past it, in a fresh file of `epoch`.
    pub(crate) fn at(partition: u32, epoch: u64, offset: u64) -> CheckpointState {
        CheckpointState {
            partition,
            generation: 0,
            epoch,
            next_offset: offset,
            delivered_end: offset,
            attempts: 0,
            range_attempts: 0,
        }
    }
}

/// Encodes one copy.
pub fn encode_copy(s: &CheckpointState) -> [u8; COPY_BYTES] {
    let mut b = [0u8; COPY_BYTES];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..PARTITION_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[PARTITION_AT..GENERATION_AT].copy_from_slice(&s.partition.to_le_bytes());
    b[GENERATION_AT..EPOCH_AT].copy_from_slice(&s.generation.to_le_bytes());
    b[EPOCH_AT..NEXT_OFFSET_AT].copy_from_slice(&s.epoch.to_le_bytes());
    b[NEXT_OFFSET_AT..DELIVERED_END_AT].copy_from_slice(&s.next_offset.to_le_bytes());
    b[DELIVERED_END_AT..ATTEMPTS_AT].copy_from_slice(&s.delivered_end.to_le_bytes());
    b[ATTEMPTS_AT..RANGE_ATTEMPTS_AT].copy_from_slice(&s.attempts.to_le_bytes());
    b[RANGE_ATTEMPTS_AT..RANGE_ATTEMPTS_AT + 4].copy_from_slice(&s.range_attempts.to_le_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why a copy was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// Missing or cut short.
    Truncated,
    /// Not a checkpoint copy (or never written).
    BadMagic,
    /// The checksum does not match.
    BadChecksum,
    /// Written by another format version.
    Version(u32),
    /// It belongs to another partition.
    WrongPartition(u32),
    /// Reserved bytes are not zero (written by something else).
    Reserved,
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Truncated => f.write_str("copy cut short"),
            CopyError::BadMagic => f.write_str("bad magic"),
            CopyError::BadChecksum => f.write_str("checksum mismatch"),
            CopyError::Version(v) => write!(f, "format version {v}"),
            CopyError::WrongPartition(p) => write!(f, "belongs to partition {p}"),
            CopyError::Reserved => f.write_str("reserved bytes are not zero"),
        }
    }
}

/// Decodes one copy, checking magic, then checksum, then version, then the
/// partition it must belong to.
pub fn decode_copy(b: &[u8], partition: u32) -> Result<CheckpointState, CopyError> {
    let b = b.get(..COPY_BYTES).ok_or(CopyError::Truncated)?;
    if b[..VERSION_AT] != MAGIC {
        return Err(CopyError::BadMagic);
    }
    if crc32fast::hash(&b[..CRC_AT]) != codec::u32_at(b, CRC_AT) {
        return Err(CopyError::BadChecksum);
    }
    if codec::u32_at(b, VERSION_AT) != FORMAT_VERSION {
        return Err(CopyError::Version(codec::u32_at(b, VERSION_AT)));
    }
    if b[RANGE_ATTEMPTS_AT + 4..CRC_AT].iter().any(|&x| x != 0) {
        return Err(CopyError::Reserved);
    }
    if codec::u32_at(b, PARTITION_AT) != partition {
        return Err(CopyError::WrongPartition(codec::u32_at(b, PARTITION_AT)));
    }
    Ok(CheckpointState {
        partition,
        generation: codec::u64_at(b, GENERATION_AT),
        epoch: codec::u64_at(b, EPOCH_AT),
        next_offset: codec::u64_at(b, NEXT_OFFSET_AT),
        delivered_end: codec::u64_at(b, DELIVERED_END_AT),
        attempts: codec::u32_at(b, ATTEMPTS_AT),
        range_attempts: codec::u32_at(b, RANGE_ATTEMPTS_AT),
    })
}

/// Picks the checkpoint in force from a whole file's bytes: the valid copy
/// with the highest generation. Every copy invalid is `Error::Corrupt`,
/// never a silent reset. (A file of an earlier layout, without one or both
/// mark copies, reads the same: a missing copy is just not valid.)
pub fn decode_file(bytes: &[u8], partition: u32, path: &Path) -> Result<CheckpointState> {
    let copies = COPIES_AT.map(|at| decode_copy(bytes.get(at..).unwrap_or(&[]), partition));
    if let Some(newest) = newest_of(&copies) {
        return Ok(newest);
    }
    let why: Vec<String> = COPIES_AT
        .iter()
        .zip(&copies)
        .filter_map(|(at, c)| c.as_ref().err().map(|e| format!("copy at {at}: {e}")))
        .collect();
    Err(Error::corrupt(path, 0, None, format!("every checkpoint copy is invalid ({})", why.join("; "))))
}

/// As [`decode_file`], but the newest *synced* state: what a power cut
/// keeps. Falls back to the state in force only if neither synced copy is
/// valid (damage; the marks then hold the only position there is).
pub fn decode_file_synced(bytes: &[u8], partition: u32, path: &Path) -> Result<CheckpointState> {
    let synced = SYNCED_COPIES_AT.map(|at| decode_copy(bytes.get(at..).unwrap_or(&[]), partition));
    match newest_of(&synced) {
        Some(state) => Ok(state),
        None => decode_file(bytes, partition, path),
    }
}

/// The valid copy of the highest generation; on a tie, which no file durq
/// wrote has, the earlier copy.
fn newest_of(copies: &[Result<CheckpointState, CopyError>]) -> Option<CheckpointState> {
    copies
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .reduce(|a, b| if b.generation > a.generation { b } else { a })
        .copied()
}

/// The checkpoint in force in a slot directory: the newest epoch's file
/// that has content, with its state. `None` if the slot has no checkpoint
/// yet. A newest file whose copies are both invalid, and which its lease
/// vouches for, is `Error::Corrupt`: never a silent fall-back to an older
/// position.
///
/// An empty file is a claim whose taker died before filling it, and a file
/// whose copies are both invalid one whose filling a power cut interrupted;
/// both are skipped, unless the epoch is at most `leased_epoch`: a lease is
/// written only after its epoch's file was filled and synced, so such a
/// file was damaged later, and skipping it could move the group backwards.
pub fn latest(slot_dir: &Path, partition: u32, leased_epoch: u64) -> Result<Option<(u64, CheckpointState)>> {
    latest_by(slot_dir, partition, leased_epoch, decode_file)
}

/// As [`latest`], but the newest file's *synced* state
/// ([`decode_file_synced`]): how far the group got in a way a power cut
/// cannot undo. Retention goes by it.
pub fn latest_synced(slot_dir: &Path, partition: u32, leased_epoch: u64) -> Result<Option<(u64, CheckpointState)>> {
    latest_by(slot_dir, partition, leased_epoch, decode_file_synced)
}

fn latest_by(
    slot_dir: &Path,
    partition: u32,
    leased_epoch: u64,
    decode: fn(&[u8], u32, &Path) -> Result<CheckpointState>,
) -> Result<Option<(u64, CheckpointState)>> {
    for epoch in epochs(slot_dir)?.into_iter().rev() {
        let path = slot_dir.join(file_name(epoch));
        let bytes = match storage::read_small(&path, FILE_BYTES) {
            Ok(bytes) => bytes,
            // Removed by a newer holder since the listing: a newer file exists.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        if bytes.is_empty() {
            if epoch <= leased_epoch {
                return Err(Error::corrupt(
                    &path,
                    0,
                    None,
                    format!("checkpoint file is empty, but the lease says epoch {leased_epoch} filled it"),
                ));
            }
            continue;
        }
        match decode(&bytes, partition, &path) {
            Ok(state) => return Ok(Some((epoch, state))),
            // Filled but never synced before a power cut: as good as empty.
            Err(_) if epoch > leased_epoch => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The epochs of the checkpoint files in a slot directory, ascending.
pub fn epochs(slot_dir: &Path) -> Result<Vec<u64>> {
    let mut epochs: Vec<u64> = storage::list_dir(slot_dir)?.iter().filter_map(|n| parse_file_name(n)).collect();
    epochs.sort_unstable();
    Ok(epochs)
}

/// Claims `epoch` for a slot by creating its checkpoint file, empty, if no
/// one has. Returns false if another taker claimed it first.
pub(crate) fn claim(slot_dir: &Path, epoch: u64) -> Result<bool> {
    storage::create_new_empty(&slot_dir.join(file_name(epoch)))
}

/// The checkpoint file of the epoch this holder owns: a handle the
/// consumer commits through and its background syncer
/// ([`Checkpoint::syncable`]) syncs through.
pub(crate) struct Checkpoint {
    file: Arc<HeldFile>,
}

/// A [`Checkpoint`] as a background syncer holds it: it lets go when the
/// slot does.
pub(crate) type Syncable = Weak<HeldFile>;

/// The mapped file of a held checkpoint and what its holder knows of it.
///
/// Two locks, so that a store never waits for a sync: `stored`, which
/// every store and every synced write takes, briefly; and `synced`, which
/// a synced write holds across its `pwrite` and msync, so that one runs at
/// a time. A synced write takes `synced` first, then, under `stored`,
/// takes the state to write and reserves its generation, lets `stored` go
/// for the write and the sync, and takes it again only if they failed. A
/// store meanwhile (the consumer's next commit under `commit(Interval)`)
/// gets a higher generation than the write in flight, so it stays in force
/// whether the write lands before it or after.
pub(crate) struct HeldFile {
    /// The whole file, mapped: every unsynced write is a store into it
    /// (see the module docs), and a synced write an msync of the first page.
    map: MappedFile,
    /// The same file, for the synced copies' `pwrite`.
    file: File,
    path: PathBuf,
    next_epoch_path: PathBuf,
    /// The slot's partition and the file's epoch, which never change.
    partition: u32,
    epoch: u64,
    stored: Mutex<Stored>,
    /// Where the newest *synced* state lies (0 or [`SECOND_COPY_AT`]).
    /// Every synced write goes to the other copy, so a power cut in the
    /// middle of one leaves the state before it.
    synced: Mutex<usize>,
    /// After a failed sync, every later one fails: it is never retried.
    stopped: FailStop,
}

/// What the holder knows of its file, beside the synced copies.
struct Stored {
    /// The newest state, stored or synced, or being synced (its generation
    /// reserved).
    state: CheckpointState,
    /// Where the newest stored state lies among [`MARK_COPIES_AT`]. Every
    /// store goes to the other mark copy, so a SIGKILL (or a power cut) in
    /// the middle of it leaves the state before it.
    mark_copy_at: usize,
    /// A commit was stored and no synced write has taken it yet.
    unsynced: bool,
    /// A sync found the slot claimed by a newer epoch: this holder's
    /// stores land in a file nobody reads, and its next commit says so.
    fenced: bool,
}

impl Checkpoint {
    /// Fills the file of a claimed `epoch` with `state` (both synced copies;
    /// the mark copies stay zeros, never written), makes it and its directory
    /// entry durable, and opens it.
    pub(crate) fn write_claimed(slot_dir: &Path, epoch: u64, state: CheckpointState) -> Result<Checkpoint> {
        let path = slot_dir.join(file_name(epoch));
        let first = CheckpointState { epoch, generation: 1, ..state };
        let second = CheckpointState { generation: 2, ..first };
        let mut bytes = vec![0u8; FILE_BYTES];
        bytes[..COPY_BYTES].copy_from_slice(&encode_copy(&first));
        bytes[SECOND_COPY_AT..SECOND_COPY_AT + COPY_BYTES].copy_from_slice(&encode_copy(&second));
        let file = storage::open_rw(&path)?;
        storage::write_durable_at(&file, &path, 0, &bytes)?;
        storage::sync_dir(slot_dir)?;
        // Mapped only now that the file has its full size (mmap contract
        // rule 1).
        let map = MappedFile::map(&file, &path, FILE_BYTES as u64)?;
        let held = HeldFile {
            map,
            file,
            path,
            next_epoch_path: slot_dir.join(file_name(epoch + 1)),
            partition: state.partition,
            epoch,
            stored: Mutex::new(Stored {
                state: second,
                mark_copy_at: SECOND_MARK_COPY_AT,
                unsynced: false,
                fenced: false,
            }),
            synced: Mutex::new(SECOND_COPY_AT),
            stopped: FailStop::default(),
        };
        Ok(Checkpoint { file: Arc::new(held) })
    }

    /// The checkpoint this holder last wrote or stored.
    pub(crate) fn state(&self) -> CheckpointState {
        self.file.stored().state
    }

    /// The handle a background syncer keeps: it does not keep the file
    /// mapped once the slot is given back.
    pub(crate) fn syncable(&self) -> Syncable {
        Arc::downgrade(&self.file)
    }

    /// Records that `[next_offset, delivered_end)` was handed to the group,
    /// the record at `next_offset` for the `attempts`-th time, without a
    /// sync: it must survive a crash of this process (the page cache does),
    /// not a power loss. `mark` says `(delivered_end, attempts,
    /// range_attempts)` from the state before; returns the states before
    /// and after. One lock for reading and marking: at `max_batch(1)` each
    /// lock is a few percent of a message's cost.
    pub(crate) fn mark_delivered(
        &mut self,
        mark: impl FnOnce(&CheckpointState) -> (u64, u32, u32),
    ) -> (CheckpointState, CheckpointState) {
        let mut stored = self.file.stored();
        let before = stored.state;
        let (delivered_end, attempts, range_attempts) = mark(&before);
        self.file.store(&mut stored, CheckpointState { delivered_end, attempts, range_attempts, ..before });
        (before, stored.state)
    }

    /// As [`Checkpoint::mark_delivered`], after a failed delivery, durably:
    /// the count must survive a power loss too, or a poison record that
    /// fails across power cuts would never reach the dead-letter queue.
    pub(crate) fn mark_failed_delivery(
        &mut self,
        delivered_end: u64,
        attempts: u32,
        range_attempts: u32,
    ) -> Result<()> {
        self.file
            .write_synced(|s| Some(CheckpointState { delivered_end, attempts, range_attempts, ..s.state }), None)?;
        Ok(())
    }

    /// Durably moves the position to `next_offset`, then checks that this
    /// holder still owns the slot. `Err(Fenced)` if a newer epoch was
    /// claimed: then this write landed in a file nobody reads any more.
    /// Records still delivered-but-uncommitted keep their count: the new
    /// first one was delivered `range_attempts` times.
    pub(crate) fn commit(&mut self, next_offset: u64) -> Result<()> {
        self.file.write_synced(|s| Some(self.file.committed(&s.state, next_offset)), None)?;
        self.file.check_not_fenced()
    }

    /// As [`Checkpoint::commit`], running `meanwhile` while the synced
    /// copy's page is on its way to the disk: the write is started
    /// (`storage::start_writeback`) before `meanwhile` runs, and the msync
    /// after it waits for that write and flushes the disk's cache, so the
    /// commit is as durable when this returns as after `commit`. The
    /// consumer reads its next batch there: one of the sync's two waits
    /// (the page's write, then the cache flush) overlaps the read instead
    /// of following it (docs/BENCHMARKS.md, W4).
    pub(crate) fn commit_overlapping(&mut self, next_offset: u64, mut meanwhile: impl FnMut()) -> Result<()> {
        self.file.write_synced(|s| Some(self.file.committed(&s.state, next_offset)), Some(&mut meanwhile))?;
        self.file.check_not_fenced()
    }

    /// Moves the position to `next_offset` where a crash of this process
    /// cannot lose it (a store into the mapping), without a sync:
    /// [`Checkpoint::sync`] makes it durable. `Err(Fenced)` if a sync
    /// already found the slot taken over. It never waits for a sync in
    /// flight (see [`HeldFile`]).
    pub(crate) fn store(&mut self, next_offset: u64) -> Result<()> {
        let mut stored = self.file.stored();
        if stored.fenced {
            return Err(self.file.fenced_error());
        }
        let state = self.file.committed(&stored.state, next_offset);
        self.file.store(&mut stored, state);
        stored.unsynced = true;
        Ok(())
    }

    /// Makes a stored commit durable, if there is one, then checks that
    /// this holder still owns the slot. A sync in flight (the background
    /// syncer's) is waited for first: when this returns `Ok`, every commit
    /// stored before the call is durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    /// `Err(Fenced)` if a newer epoch has been claimed for this slot, or
    /// this epoch's file is gone (removed by a newer holder).
    pub(crate) fn check_not_fenced(&self) -> Result<()> {
        self.file.check_not_fenced()
    }
}

impl HeldFile {
    fn stored(&self) -> MutexGuard<'_, Stored> {
        // A panic while it was locked (an assertion) left it consistent:
        // every update completes its state before it returns.
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a stored commit durable, if there is one, then checks that
    /// this holder still owns the slot (a stored commit is not checked
    /// when it is made: that takes system calls). A fenced holder's sync
    /// lands in a file nobody reads.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.write_synced(|s| s.unsynced.then_some(s.state), None)? { self.check_not_fenced() } else { Ok(()) }
    }

    /// The state after committing up to `next_offset` from `state`.
    fn committed(&self, state: &CheckpointState, next_offset: u64) -> CheckpointState {
        assert!(
            next_offset >= state.next_offset,
            "checkpoint moving backwards: {} -> {next_offset} in {}",
            state.next_offset,
            self.path.display()
        );
        if next_offset < state.delivered_end {
            CheckpointState { next_offset, attempts: state.range_attempts, ..*state }
        } else {
            CheckpointState { next_offset, delivered_end: next_offset, attempts: 0, range_attempts: 0, ..*state }
        }
    }

    fn check_not_fenced(&self) -> Result<()> {
        if storage::exists(&self.next_epoch_path) || !storage::exists(&self.path) {
            self.stored().fenced = true;
            return Err(self.fenced_error());
        }
        Ok(())
    }

    fn fenced_error(&self) -> Error {
        Error::Fenced { partition: self.partition, epoch: self.epoch }
    }

    /// Stores `state`, one generation on, into the mark copy not holding
    /// the newest stored state, unsynced.
    fn store(&self, stored: &mut Stored, state: CheckpointState) {
        let state = CheckpointState { generation: stored.state.generation + 1, ..state };
        let at = MARK_COPY_AT + SECOND_MARK_COPY_AT - stored.mark_copy_at;
        // SAFETY: this holder owns the file's epoch, the only right to
        // write it (mmap contract rule 4), and the lock on `stored`, which
        // the caller holds, makes this the only write of the mark copies
        // in flight; the copy lies inside the mapping.
        unsafe { self.map.write(at, &encode_copy(&state)) };
        stored.mark_copy_at = at;
        stored.state = state;
    }

    /// Writes the state `next` makes of what the holder knows (`None`:
    /// nothing to write), one generation on, into the synced copy not
    /// holding the newest synced state, and syncs it; true if it wrote.
    /// Stores go on meanwhile (see [`HeldFile`]). `meanwhile`, if given,
    /// runs between the write and the sync, with the page's writeback
    /// started ([`Checkpoint::commit_overlapping`]).
    fn write_synced(
        &self,
        next: impl FnOnce(&Stored) -> Option<CheckpointState>,
        meanwhile: Option<&mut dyn FnMut()>,
    ) -> Result<bool> {
        let mut synced_copy_at = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        let (before, state) = {
            let mut stored = self.stored();
            let Some(state) = next(&stored) else { return Ok(false) };
            self.stopped.check()?;
            let before = (stored.state, stored.unsynced);
            // Reserved now: a store from here on is one generation further.
            stored.state = CheckpointState { generation: stored.state.generation + 1, ..state };
            stored.unsynced = false;
            (before, stored.state)
        };
        // Never the copy holding the newest synced state: a write there,
        // torn by a power cut, would leave only an older copy, or none.
        let at = SECOND_COPY_AT - *synced_copy_at;
        // A `pwrite`, not a store: see the module docs. This holder owns the
        // file's epoch, the only right to write it (mmap contract rule 4),
        // and the lock on `synced` makes this the only write of the synced
        // copies in flight.
        let written = storage::write_at(&self.file, &self.path, at as u64, &encode_copy(&state))
            .and_then(|()| match meanwhile {
                // Not a durability step: the msync below is. A failure to
                // start the write counts as a failed sync all the same.
                Some(work) => {
                    storage::start_writeback(&self.file, &self.path, 0, SYNCED_COPIES_BYTES as u64).map(|()| work())
                }
                None => Ok(()),
            })
            .and_then(|()| self.map.sync_range(&self.path, 0, SYNCED_COPIES_BYTES));
        if let Err(e) = written {
            // The page cache may hold the new state, whole or in part,
            // although the disk does not (a failed sync is not retried: the
            // pages may already count as clean). Retention reads the synced
            // copies through the page cache, and must not act on a position
            // a power cut would undo: blank the copy, so the file says the
            // last synced state again. A store, which cannot fail.
            // SAFETY: as for the write above; the copy lies inside the
            // mapping.
            unsafe { self.map.zero(at, COPY_BYTES) };
            let mut stored = self.stored();
            if stored.state.generation == state.generation {
                // Nothing stored since: the holder knows the state before
                // again, at the reserved generation, which a later store
                // must pass (the disk may hold the failed write).
                stored.state = CheckpointState { generation: state.generation, ..before.0 };
            }
            // A commit stored before is still not durable, even if a mark
            // was stored since: the slot must not be given back as synced.
            stored.unsynced |= before.1;
            return Err(self.stopped.stop(e));
        }
        *synced_copy_at = at;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u64, next_offset: u64) -> CheckpointState {
        CheckpointState {
            partition: 2,
            generation,
            epoch: 1,
            next_offset,
            delivered_end: next_offset,
            attempts: 0,
            range_attempts: 0,
        }
    }

    fn file(a: Option<CheckpointState>, b: Option<CheckpointState>) -> Vec<u8> {
        let mut bytes = vec![0u8; FILE_BYTES];
        if let Some(a) = a {
            bytes[..COPY_BYTES].copy_from_slice(&encode_copy(&a));
        }
        if let Some(b) = b {
            bytes[SECOND_COPY_AT..SECOND_COPY_AT + COPY_BYTES].copy_from_slice(&encode_copy(&b));
        }
        bytes
    }

    #[test]
    fn checkpoint_golden_bytes() {
        let b = encode_copy(&CheckpointState {
            partition: 2,
            generation: 3,
            epoch: 4,
            next_offset: 5,
            delivered_end: 6,
            attempts: 7,
            range_attempts: 8,
        });
        assert_eq!(&b[..8], b"DURQCKPT");
        assert_eq!(b[8..12], FORMAT_VERSION.to_le_bytes());
        assert_eq!(b[12..16], 2u32.to_le_bytes());
        assert_eq!(b[16..24], 3u64.to_le_bytes());
        assert_eq!(b[24..32], 4u64.to_le_bytes());
        assert_eq!(b[32..40], 5u64.to_le_bytes());
        assert_eq!(b[40..48], 6u64.to_le_bytes());
        assert_eq!(b[48..52], 7u32.to_le_bytes());
        assert_eq!(b[52..56], 8u32.to_le_bytes());
        assert!(b[56..60].iter().all(|&x| x == 0));
        assert_eq!(b[60..], crc32fast::hash(&b[..60]).to_le_bytes());
    }

    #[test]
    fn checkpoint_newest_valid_copy_wins() {
        let p = Path::new("c");
        assert_eq!(decode_file(&file(Some(state(3, 30)), Some(state(4, 40))), 2, p).unwrap().next_offset, 40);
        assert_eq!(decode_file(&file(Some(state(5, 50)), Some(state(4, 40))), 2, p).unwrap().next_offset, 50);
    }

    #[test]
    fn checkpoint_mark_copy_wins_only_while_it_is_the_newest() {
        let p = Path::new("c");
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        let mark = CheckpointState { delivered_end: 50, attempts: 1, ..state(5, 40) };
        bytes[MARK_COPY_AT..MARK_COPY_AT + COPY_BYTES].copy_from_slice(&encode_copy(&mark));
        assert_eq!(decode_file(&bytes, 2, p).unwrap(), mark);
        bytes[..COPY_BYTES].copy_from_slice(&encode_copy(&state(6, 50)));
        assert_eq!(decode_file(&bytes, 2, p).unwrap().next_offset, 50, "a later commit beats an older mark");
        // Both synced copies lost: the mark still holds a committed position.
        bytes[..MARK_COPY_AT].fill(0);
        assert_eq!(decode_file(&bytes, 2, p).unwrap(), mark);
        // A file of the earlier layout ends before the mark copy.
        let old = &file(Some(state(3, 30)), Some(state(4, 40)))[..SECOND_COPY_AT + COPY_BYTES];
        assert_eq!(decode_file(old, 2, p).unwrap().next_offset, 40);
    }

    #[test]
    fn checkpoint_on_a_tie_the_earlier_copy_wins() {
        // No file durq writes has two valid copies of one generation, but a
        // file written by something else may: the documented rule picks the
        // earlier copy, so the same file always reads the same.
        let p = Path::new("c");
        assert_eq!(decode_file(&file(Some(state(4, 30)), Some(state(4, 40))), 2, p).unwrap().next_offset, 30);
        let mut bytes = file(None, Some(state(4, 40)));
        bytes[MARK_COPY_AT..MARK_COPY_AT + COPY_BYTES].copy_from_slice(&encode_copy(&state(4, 50)));
        assert_eq!(decode_file(&bytes, 2, p).unwrap().next_offset, 40);
    }

    #[test]
    fn checkpoint_torn_newer_copy_falls_back_to_older() {
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        bytes[SECOND_COPY_AT + 35] ^= 0x10;
        assert_eq!(decode_file(&bytes, 2, Path::new("c")).unwrap().next_offset, 30);
    }

    #[test]
    fn checkpoint_both_copies_corrupt_is_an_error_not_a_reset() {
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        bytes[20] ^= 1;
        bytes[SECOND_COPY_AT + 20] ^= 1;
        assert!(matches!(decode_file(&bytes, 2, Path::new("c")), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_file(&bytes[..100], 2, Path::new("c")), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn checkpoint_of_another_partition_is_rejected() {
        let bytes = file(Some(state(3, 30)), None);
        assert!(matches!(decode_file(&bytes, 1, Path::new("c")), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn checkpoint_file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.ckpt"), None);
        assert_eq!(parse_file_name("lease"), None);
    }

    #[test]
    fn only_one_taker_claims_an_epoch_and_the_newest_written_file_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(latest(dir.path(), 2, 0).unwrap(), None);
        assert!(claim(dir.path(), 1).unwrap());
        assert!(!claim(dir.path(), 1).unwrap(), "a second claim of the same epoch fails");
        assert_eq!(latest(dir.path(), 2, 0).unwrap(), None, "an empty claim is not a checkpoint");
        let mut one = Checkpoint::write_claimed(dir.path(), 1, state(0, 10)).unwrap();
        one.commit(15).unwrap();
        assert_eq!(latest(dir.path(), 2, 0).unwrap().map(|(e, s)| (e, s.next_offset)), Some((1, 15)));
        // A newer holder claims epoch 2: the old holder's next commit is fenced
        // and does not change what is in force.
        assert!(claim(dir.path(), 2).unwrap());
        let two = Checkpoint::write_claimed(dir.path(), 2, latest(dir.path(), 2, 0).unwrap().unwrap().1).unwrap();
        assert!(matches!(one.commit(99), Err(Error::Fenced { partition: 2, epoch: 1 })));
        assert_eq!(latest(dir.path(), 2, 0).unwrap().map(|(e, s)| (e, s.next_offset)), Some((2, 15)));
        assert_eq!(two.state().epoch, 2);
    }

    /// A slot directory whose epoch 1 file holds position 50 (the lease
    /// vouches for nothing newer).
    fn slot_at_epoch_1() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        Checkpoint::write_claimed(dir.path(), 1, state(0, 50)).unwrap();
        dir
    }

    #[test]
    fn a_newest_checkpoint_file_that_cannot_be_read_is_an_error_not_a_fall_back_to_an_older_epoch() {
        // After a `group reset` the older epoch's position can be ahead of
        // the newest one's: falling back to it would skip records. A
        // directory where epoch 2's file should be lists like the file and
        // fails to read (EISDIR).
        let dir = slot_at_epoch_1();
        let newest = dir.path().join(file_name(2));
        std::fs::create_dir(&newest).unwrap();
        match latest(dir.path(), 2, 0) {
            Err(Error::Io { path, .. }) => assert_eq!(path, newest),
            other => panic!("expected an I/O error naming {}, got {other:?}", newest.display()),
        }
    }

    #[test]
    fn a_checkpoint_file_removed_between_listing_and_reading_is_skipped() {
        // A newer holder removes older epochs' files after writing its own.
        // A dangling symbolic link lists like a file and reads as not found,
        // exactly as a file removed after the listing does.
        let dir = slot_at_epoch_1();
        std::os::unix::fs::symlink(dir.path().join("removed"), dir.path().join(file_name(2))).unwrap();
        assert_eq!(latest(dir.path(), 2, 0).unwrap().map(|(e, s)| (e, s.next_offset)), Some((1, 50)));
    }

    #[test]
    fn a_newest_file_with_no_valid_copy_is_skipped_only_if_no_lease_vouches_for_it() {
        // Epoch 2's file was filled but a power cut came before its sync
        // (copies of garbage): its taker never wrote a lease, so epoch 1's
        // position is still the one in force.
        let dir = slot_at_epoch_1();
        std::fs::write(dir.path().join(file_name(2)), vec![0x5a; FILE_BYTES]).unwrap();
        assert_eq!(latest(dir.path(), 2, 1).unwrap().map(|(e, s)| (e, s.next_offset)), Some((1, 50)));
        // Once a lease names epoch 2 (or a later one), the file was synced
        // before: its damage is an error, never a fall-back.
        for leased_epoch in [2, 3] {
            match latest(dir.path(), 2, leased_epoch) {
                Err(Error::Corrupt { file, .. }) => assert_eq!(file, dir.path().join(file_name(2))),
                other => panic!("lease of epoch {leased_epoch}: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_commit_past_every_delivery_leaves_nothing_marked_delivered() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        let mut c = Checkpoint::write_claimed(dir.path(), 1, state(0, 0)).unwrap();
        c.mark_delivered(|_| (4, 1, 1));
        c.commit(10).unwrap();
        let s = latest(dir.path(), 2, 0).unwrap().unwrap().1;
        assert_eq!((s.next_offset, s.delivered_end, s.attempts, s.range_attempts), (10, 10, 0, 0));
        assert_eq!(c.state(), s);
    }

    #[test]
    fn marks_go_to_their_own_page_and_synced_writes_alternate_on_the_first() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        let mut c = Checkpoint::write_claimed(dir.path(), 1, state(0, 0)).unwrap();
        let path = dir.path().join(file_name(1));
        let copy = |at: usize| decode_copy(&std::fs::read(&path).unwrap()[at..], 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_BYTES as u64);
        assert!(matches!(copy(MARK_COPY_AT), Err(CopyError::BadMagic)), "no mark yet");
        c.mark_delivered(|_| (16, 1, 1));
        assert_eq!(copy(MARK_COPY_AT).unwrap().delivered_end, 16);
        assert_eq!(copy(SECOND_COPY_AT).unwrap().generation, 2, "the synced copies are untouched");
        c.commit(16).unwrap();
        assert_eq!(copy(0).unwrap().next_offset, 16, "the commit took the copy not holding the synced state");
        c.mark_delivered(|_| (32, 1, 1));
        c.commit(32).unwrap();
        assert_eq!(copy(SECOND_COPY_AT).unwrap().next_offset, 32);
        assert_eq!(copy(0).unwrap().next_offset, 16);
        assert_eq!(latest(dir.path(), 2, 0).unwrap().unwrap().1.next_offset, 32);
    }

    #[test]
    fn stored_commits_alternate_mark_copies_so_a_torn_store_leaves_the_commit_before_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        let mut c = Checkpoint::write_claimed(dir.path(), 1, state(0, 0)).unwrap();
        let path = dir.path().join(file_name(1));
        c.mark_delivered(|_| (3, 1, 1));
        c.store(3).unwrap();
        c.mark_delivered(|_| (6, 1, 1));
        c.store(6).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let at = |a: usize| decode_copy(&bytes[a..], 2).unwrap();
        // Marks and stores alternate: the last store (6) beside the mark
        // of its batch (3, delivered up to 6).
        assert_eq!((at(MARK_COPY_AT).next_offset, at(SECOND_MARK_COPY_AT).next_offset), (3, 6));
        assert_eq!(decode_file(&bytes, 2, &path).unwrap().next_offset, 6, "stored: in force");
        assert_eq!(decode_file_synced(&bytes, 2, &path).unwrap().next_offset, 0, "not synced: what a power cut keeps");
        // A store cut short (the newest mark copy torn) leaves the one
        // before it: the previous batch's delivery, at position 3.
        let mut torn = bytes.clone();
        torn[SECOND_MARK_COPY_AT + 20] ^= 0x40;
        let s = decode_file(&torn, 2, &path).unwrap();
        assert_eq!((s.next_offset, s.delivered_end), (3, 6));
        c.sync().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode_file_synced(&bytes, 2, &path).unwrap().next_offset, 6, "synced");
        assert_eq!(decode_file(&bytes, 2, &path).unwrap().next_offset, 6);
    }

    #[test]
    fn a_file_of_the_one_mark_copy_layout_reads_the_same() {
        let mut bytes = file(Some(state(3, 30)), Some(state(4, 40)));
        let mark = CheckpointState { delivered_end: 50, attempts: 1, ..state(5, 40) };
        bytes[MARK_COPY_AT..MARK_COPY_AT + COPY_BYTES].copy_from_slice(&encode_copy(&mark));
        let old = &bytes[..SECOND_MARK_COPY_AT];
        assert_eq!(decode_file(old, 2, Path::new("c")).unwrap(), mark);
        assert_eq!(decode_file_synced(old, 2, Path::new("c")).unwrap().next_offset, 40);
    }

    #[test]
    fn a_stored_commit_whose_sync_failed_stays_unsynced_though_a_mark_was_stored_during_the_sync() {
        use crate::storage::sim::{OpKind, SimDisk};
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::attach(dir.path()).unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        let mut c = Checkpoint::write_claimed(dir.path(), 1, state(0, 0)).unwrap();
        c.store(5).unwrap();
        let in_msync = disk.hold_next(OpKind::SyncRange, "ckpt");
        let syncable = c.syncable();
        let background = std::thread::spawn(move || syncable.upgrade().unwrap().sync());
        assert!(in_msync.reached(std::time::Duration::from_secs(20)), "the sync never started");
        // The next batch is delivered (a mark, no commit) while the sync is
        // in flight; then the sync fails.
        c.mark_delivered(|_| (9, 1, 1));
        disk.fail_next(OpKind::SyncRange, libc::EIO, false);
        drop(in_msync);
        assert!(background.join().unwrap().is_err());
        disk.heal();
        // Position 5 never reached the disk: no later sync may say it did.
        assert!(matches!(c.sync(), Err(Error::Stopped { .. })));
        assert_eq!(c.state().next_offset, 5);
    }

    #[test]
    fn delivery_marks_survive_reopen_and_commits_reset_attempts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(dir.path(), 1).unwrap());
        let mut c = Checkpoint::write_claimed(dir.path(), 1, state(0, 0)).unwrap();
        c.mark_delivered(|_| (64, 1, 1));
        c.mark_failed_delivery(64, 2, 2).unwrap();
        let (_, s) = latest(dir.path(), 2, 0).unwrap().unwrap();
        assert_eq!((s.next_offset, s.delivered_end, s.attempts, s.range_attempts), (0, 64, 2, 2));
        // Isolated: the first record alone, a third time, then committed.
        c.mark_delivered(|_| (64, 3, 2));
        c.commit(1).unwrap();
        let (_, s) = latest(dir.path(), 2, 0).unwrap().unwrap();
        assert_eq!((s.next_offset, s.attempts), (1, 2), "record 1 was delivered twice before");
        c.commit(64).unwrap();
        let (_, s) = latest(dir.path(), 2, 0).unwrap().unwrap();
        assert_eq!((s.next_offset, s.delivered_end, s.attempts, s.range_attempts), (64, 64, 0, 0));
    }
}

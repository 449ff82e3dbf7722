//! The damage matrix: every kind of file a closed queue keeps × every kind of
//! damage × seeded random positions, each case checked against exactly what
//! durq promises for it.
//!
//! One queue is built once and closed: two partitions of 64 KiB segments (two
//! sealed segments and an active one each), `Sync` durability, unkeyed, keyed
//! and batched records, and a group that committed part of the way (into a
//! sealed segment of partition 0, into the active segment of partition 1), so
//! that checkpoint and lease files exist and the four copies of each
//! checkpoint (two synced ones and the last two delivery marks) hold different
//! generations, the marks and the older synced copy an earlier position. Every record was acknowledged; the test keeps
//! each one's offset, key and payload, and works out where its frame lies from
//! the documented layout (docs/FORMAT.md), not from the crate's code.
//!
//! Each case copies that queue, damages one file (a sealed segment, an active
//! segment, a checkpoint, a lease, the meta file) in one way (one flipped bit,
//! one zeroed 4 KiB page, a cut at a random length), and then:
//!
//! - `durq::verify` runs first, must not change a byte, and must name the
//!   damaged file whenever bytes durq relies on changed, and say nothing when
//!   only bytes it never reads changed (reserved header bytes, the unused
//!   gaps of a checkpoint file, zeros over zeros, a zeroed delivery mark);
//! - the queue opens, or is refused with a typed error naming the damaged
//!   file that leaves every byte as it was (a damaged meta file; a damaged
//!   fixed header of an active segment);
//! - once open, each partition keeps exactly its acknowledged offsets, and
//!   reading every offset alone and every partition in order gives each
//!   acknowledged record exactly, or `Error::Corrupt` naming the damaged
//!   file: always the latter for a record whose bytes were damaged, always
//!   the former for one before the damage. Never another payload, never a
//!   hole in the offsets;
//! - the group starts where the checkpoint in force says (the newest
//!   undamaged copy's position when the newest copy was damaged: a
//!   redelivery, never a skip; `Error::Corrupt` naming the file when every
//!   copy was, never a reset),
//!   and draining it delivers the same records in offset order from there,
//!   and stops only with `Error::Corrupt` naming the damaged file, at a
//!   damaged record (or where a damaged sealed segment hands over to the next).
//!
//! An active segment cut inside its first 60 bytes (its header's fixed part,
//! its proof of what was synced and its frames' salt) must be refused: the open fails with
//! `Error::Corrupt` naming it. A cut to 0 bytes leaves nothing that tells it
//! from a creation cut short by a power cut, except a group that processed
//! records in it: it is drawn only in partition 1, whose group did (a known
//! gap elsewhere, listed in docs/RELIABILITY.md). Every position `verify`
//! names (as a problem's position, or as "byte N" in any text) lies in the
//! damaged file or at its end.
//!
//! Every case runs under `catch_unwind`: a panic inside durq fails the case
//! like a broken promise does, and the failures are reported together, each
//! with its case seed. A global allocator records the largest allocation, so
//! that no length read from damaged bytes can size one unnoticed.
//!
//! `DURQ_DAMAGE_CASES` sets the positions per file kind × damage kind (16 by
//! default), `DURQ_SEED` moves them all, and `DURQ_DAMAGE_SEED=<case seed>`
//! replays one case.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::procs::{Rng, payload};
use common::{copy_dir, data_snapshot, frame_len, small, snapshot};
use durq::{ConsumerOptions, Durability, Error, Position, Queue, StoredRecord};

const SEGMENT_BYTES: usize = 64 << 10;
const PAGE_BYTES: usize = 4096;
/// A segment header's fixed part (magic to its checksum) ends here; bytes
/// 36..40 are reserved and read by nobody...
const SEGMENT_FIXED_END: usize = 36;
/// ...bytes 40..52 are `synced_end` and its checksum, a proof that is "not an
/// error" when damaged...
const SYNCED_END_FIELD_END: usize = 52;
/// ...bytes 52..60 the frames' salt and its checksum (version 2, which
/// every segment of this queue is), checked like the fixed part; 60..64 are
/// reserved again, and frames start at 64.
const SALT_FIELD: std::ops::Range<usize> = SYNCED_END_FIELD_END..60;
const SEGMENT_HEADER_BYTES: usize = 64;
const FRAME_MAGIC: u8 = 0xD7;
const CHECKPOINT_COPIES: [usize; 4] = [0, 512, 4096, 4160];
/// The copies that take delivery marks, alternately (the last two of
/// `CHECKPOINT_COPIES`).
const CHECKPOINT_MARK_COPIES: [usize; 2] = [2, 3];
const CHECKPOINT_COPY_BYTES: usize = 64;
const META_MAGIC_BYTES: usize = 8;

const GROUP: &str = "g";
/// A group that holds every segment while the pristine image is built, and
/// is deleted before the image is taken.
const HOLDER: &str = "holder";
const PARTITIONS: u32 = 2;
/// Records per partition when the group has processed everything (its
/// committed position), and when the queue is closed.
const COMMITTED: [u64; 2] = [40, 150];
const RECORDS: [u64; 2] = [190, 190];
/// Seeds the payload sizes of the pristine queue, which every case shares.
const PRISTINE_SEED: u64 = 0x5eed_da3a;
const DEFAULT_CASES_PER_CELL: u64 = 16;
const DEFAULT_SEED: u64 = 1;
/// The largest allocation a case may make. The largest file durq reads whole
/// is a 64 KiB segment (in verify); anything far beyond that was sized by
/// bytes read from disk.
const ALLOCATION_BYTES_MAX: usize = 1 << 20;

/// Records the largest allocation requested, and otherwise is the system
/// allocator.
struct LargestAllocation;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);
/// Over all cases, for the summary.
static LARGEST_ALLOCATION_SEEN: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards its arguments unchanged to the system
// allocator, whose contract is the same; the only addition is a relaxed
// atomic store that allocates nothing.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

// ---- The pristine queue ----

/// One acknowledged record.
struct Acked {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// Where a segment's records lie, from the documented layout.
struct SegmentFile {
    /// Path inside the queue directory.
    rel: PathBuf,
    partition: u32,
    /// Its first offset, and one past its last.
    base: u64,
    end: u64,
    /// Byte range of each record's frame, for offsets `base..end`.
    frames: Vec<(usize, usize)>,
    /// End of the last frame: zeros follow.
    data_end: usize,
    sealed: bool,
}

/// One checkpoint copy, decoded from its documented layout.
#[derive(Clone, Copy, Debug)]
struct Copy {
    generation: u64,
    next_offset: u64,
}

struct Pristine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Per partition, indexed by offset.
    records: Vec<Vec<Acked>>,
    segments: Vec<SegmentFile>,
    /// Per partition: the checkpoint file and its copies at bytes 0, 512,
    /// 4096 and 4160 (the delivery marks).
    checkpoints: Vec<(PathBuf, [Copy; 4])>,
}

/// Sends records and keeps what each acknowledgement said.
struct Sender {
    producer: durq::Producer,
    records: Vec<Vec<Acked>>,
    rng: Rng,
    sent: u64,
}

impl Sender {
    fn next_payload(&mut self) -> Vec<u8> {
        self.sent += 1;
        payload(&format!("r-{}", self.sent), 300 + self.rng.below(1200) as usize)
    }

    fn acked(&mut self, pos: Position, key: Option<Vec<u8>>, payload: Vec<u8>) {
        let records = &mut self.records[pos.partition as usize];
        assert_eq!(pos.offset, records.len() as u64, "acknowledged offsets are dense");
        records.push(Acked { key, payload });
    }

    fn unkeyed(&mut self) {
        let payload = self.next_payload();
        let pos = self.producer.send(&payload).unwrap();
        self.acked(pos, None, payload);
    }

    fn keyed(&mut self, p: u32) {
        let payload = self.next_payload();
        let key = key_for(p, self.sent);
        let pos = self.producer.send_keyed(&key, &payload).unwrap();
        assert_eq!(pos.partition, p, "keys are routed by CRC32 modulo the partition count");
        self.acked(pos, Some(key), payload);
    }

    fn batch(&mut self, n: usize) {
        let payloads: Vec<Vec<u8>> = (0..n).map(|_| self.next_payload()).collect();
        let positions = self.producer.send_batch(&payloads).unwrap();
        for (pos, payload) in positions.into_iter().zip(payloads) {
            self.acked(pos, None, payload);
        }
    }

    /// Keyed sends to partition `p` until it holds `n` records.
    fn fill(&mut self, p: u32, n: u64) {
        while (self.records[p as usize].len() as u64) < n {
            self.keyed(p);
        }
    }
}

/// A key that `send_keyed` routes to partition `p` (CRC32 of the key modulo
/// the partition count, documented as stable).
fn key_for(p: u32, n: u64) -> Vec<u8> {
    (0..).map(|j| format!("key-{n}-{j}").into_bytes()).find(|k| crc32fast::hash(k) % PARTITIONS == p).unwrap()
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

impl Pristine {
    fn build() -> Pristine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let queue = Queue::open_with(&path, small().partitions(PARTITIONS).durability(Durability::Sync)).unwrap();
        let mut s = Sender {
            producer: queue.producer(),
            records: vec![Vec::new(), Vec::new()],
            rng: Rng::new(PRISTINE_SEED),
            sent: 0,
        };
        // Holds every segment until the image is complete: a roll in one
        // partition reclaims every partition, and the group alone would
        // let a later roll remove segment 0 of a partition it passed.
        drop(queue.consumer(HOLDER).unwrap());
        for _ in 0..20 {
            s.unkeyed();
        }
        s.batch(5);
        for _ in 0..6 {
            s.unkeyed();
        }
        s.batch(4);
        s.fill(0, COMMITTED[0]);
        s.fill(1, COMMITTED[1]);
        // Batches of 16: each checkpoint's two copies end up one batch apart.
        let mut consumer = queue.consumer_with(GROUP, ConsumerOptions::default().max_batch(16)).unwrap();
        assert_eq!(common::drain(&mut consumer).len() as u64, COMMITTED[0] + COMMITTED[1]);
        assert_eq!(consumer.committed().unwrap(), COMMITTED);
        drop(consumer);
        for _ in 0..10 {
            s.unkeyed();
        }
        s.batch(6);
        s.fill(0, RECORDS[0]);
        s.fill(1, RECORDS[1]);
        for p in 0..PARTITIONS {
            assert_eq!(queue.offsets(p).unwrap(), (0, RECORDS[p as usize]), "no retention: the holder holds segment 0");
        }
        queue.delete_group(HOLDER).unwrap();
        let records = s.records;
        drop((s.producer, queue));

        let mut segments = Vec::new();
        for p in 0..PARTITIONS {
            let files = common::segments(&path, p);
            assert_eq!(files.len(), 3, "partition {p}: two sealed segments and an active one");
            let bases: Vec<u64> =
                files.iter().map(|f| f.file_stem().unwrap().to_str().unwrap().parse().unwrap()).collect();
            for (i, file) in files.iter().enumerate() {
                let end = bases.get(i + 1).copied().unwrap_or(RECORDS[p as usize]);
                let mut frames = Vec::new();
                let mut pos = SEGMENT_HEADER_BYTES;
                for r in &records[p as usize][bases[i] as usize..end as usize] {
                    let len = frame_len(r.key.as_ref().map_or(0, Vec::len), r.payload.len());
                    frames.push((pos, pos + len));
                    pos += len;
                }
                let seg = SegmentFile {
                    rel: file.strip_prefix(&path).unwrap().to_path_buf(),
                    partition: p,
                    base: bases[i],
                    end,
                    frames,
                    data_end: pos,
                    sealed: i + 1 < files.len(),
                };
                seg.check_layout(&std::fs::read(file).unwrap());
                segments.push(seg);
            }
        }
        let checkpoints = (0..PARTITIONS)
            .map(|p| {
                let file = common::checkpoint_file(&path, GROUP, p);
                let bytes = std::fs::read(&file).unwrap();
                let copies = CHECKPOINT_COPIES.map(|at| {
                    assert_eq!(&bytes[at..at + 8], b"DURQCKPT");
                    Copy { generation: le64(&bytes, at + 16), next_offset: le64(&bytes, at + 32) }
                });
                let newest = newest(&copies, [true; 4]).unwrap();
                assert_eq!(newest.next_offset, COMMITTED[p as usize]);
                for older in copies.iter().filter(|c| c.generation != newest.generation) {
                    assert!(
                        older.next_offset < newest.next_offset,
                        "partition {p}: a fallback is a visible redelivery"
                    );
                }
                for mark in CHECKPOINT_MARK_COPIES {
                    assert!(copies[mark].generation < newest.generation, "partition {p}: the last write was a commit");
                }
                (file.strip_prefix(&path).unwrap().to_path_buf(), copies)
            })
            .collect();
        let pristine = Pristine { _dir: dir, path, records, segments, checkpoints };
        // Where the group stands decides what a damaged segment may do to it.
        assert!(pristine.holder(0, COMMITTED[0]).sealed, "partition 0's group position is in a sealed segment");
        assert!(!pristine.holder(1, COMMITTED[1]).sealed, "partition 1's group position is in its active segment");
        for seg in pristine.segments.iter().filter(|s| !s.sealed) {
            // Damage anywhere in an active segment, its first page included,
            // leaves valid frames after it that prove it acknowledged.
            assert!(
                seg.data_end > 4 * PAGE_BYTES,
                "{}: active segment holds {} bytes",
                seg.rel.display(),
                seg.data_end
            );
        }
        let report = durq::verify::verify(&pristine.path).unwrap();
        assert!(report.problems.is_empty() && report.notes.is_empty(), "pristine queue: {report:#?}");
        assert_eq!((report.records, report.checkpoints), (RECORDS[0] + RECORDS[1], 2));
        pristine
    }

    fn segment(&self, rel: &Path) -> &SegmentFile {
        self.segments.iter().find(|s| s.rel == rel).expect("a segment of the pristine queue")
    }

    /// The segment a reader positioned at `offset` of partition `p` starts
    /// in: the last one whose base is not after it.
    fn holder(&self, p: u32, offset: u64) -> &SegmentFile {
        self.segments.iter().rfind(|s| s.partition == p && s.base <= offset).unwrap()
    }

    fn lease(p: u32) -> PathBuf {
        Path::new("groups").join(GROUP).join(format!("slot-{p:04}")).join("lease")
    }
}

impl SegmentFile {
    /// Checks the layout worked out from the documented format against the
    /// file, so that every expectation below rests on the right bytes.
    fn check_layout(&self, bytes: &[u8]) {
        assert_eq!(bytes.len(), SEGMENT_BYTES);
        assert_eq!(&bytes[..8], b"DURQSEG\0");
        for (i, &(start, end)) in self.frames.iter().enumerate() {
            assert_eq!(le64(bytes, start + 8), self.base + i as u64, "{}: offset of frame {i}", self.rel.display());
            assert_eq!(bytes[start + 27], FRAME_MAGIC, "{}: frame {i} at byte {start}", self.rel.display());
            assert!(end <= SEGMENT_BYTES);
        }
        assert!(bytes[self.data_end..].iter().all(|&b| b == 0), "{}: zeros after the last frame", self.rel.display());
    }
}

/// The copy of the highest generation among those `kept`.
fn newest(copies: &[Copy; 4], kept: [bool; 4]) -> Option<Copy> {
    copies.iter().zip(kept).filter(|(_, k)| *k).map(|(c, _)| *c).max_by_key(|c| c.generation)
}

// ---- Cases ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FileKind {
    SealedSegment,
    ActiveSegment,
    Checkpoint,
    Lease,
    Meta,
}

const FILE_KINDS: [FileKind; 5] =
    [FileKind::SealedSegment, FileKind::ActiveSegment, FileKind::Checkpoint, FileKind::Lease, FileKind::Meta];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DamageKind {
    FlipBit,
    ZeroPage,
    Truncate,
}

const DAMAGE_KINDS: [DamageKind; 3] = [DamageKind::FlipBit, DamageKind::ZeroPage, DamageKind::Truncate];

/// One file, one damage. Everything about it follows from its seed, whose
/// low 4 bits say the file kind and the damage kind.
struct Case {
    seed: u64,
    kind: FileKind,
    damage: DamageKind,
    /// The damaged file, inside the queue directory.
    rel: PathBuf,
    /// The flipped byte, the first byte of the zeroed page, or the new length.
    at: usize,
    bit: u32,
}

impl Case {
    fn seed(base: u64, kind: usize, damage: usize, i: u64) -> u64 {
        let cell = (kind * DAMAGE_KINDS.len() + damage) as u64;
        let mut rng = Rng::new(base ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (cell << 59));
        (rng.next_u64() << 4) | cell
    }

    fn from_seed(seed: u64, pristine: &Pristine) -> Case {
        let cell = (seed & 0xF) as usize;
        let (kind, damage) = (FILE_KINDS[cell / DAMAGE_KINDS.len()], DAMAGE_KINDS[cell % DAMAGE_KINDS.len()]);
        let mut rng = Rng::new(seed);
        let rel = match kind {
            FileKind::SealedSegment => {
                let sealed: Vec<&SegmentFile> = pristine.segments.iter().filter(|s| s.sealed).collect();
                sealed[rng.below(sealed.len() as u64) as usize].rel.clone()
            }
            FileKind::ActiveSegment => {
                let p = rng.below(u64::from(PARTITIONS)) as u32;
                pristine.segments.iter().rfind(|s| s.partition == p).unwrap().rel.clone()
            }
            FileKind::Checkpoint => pristine.checkpoints[rng.below(u64::from(PARTITIONS)) as usize].0.clone(),
            FileKind::Lease => Pristine::lease(rng.below(u64::from(PARTITIONS)) as u32),
            FileKind::Meta => PathBuf::from(durq::internals::meta::META_FILE),
        };
        let len = std::fs::metadata(pristine.path.join(&rel)).unwrap().len();
        let (at, bit) = match damage {
            DamageKind::FlipBit => (Case::flip_position(kind, &rel, len, pristine, &mut rng), rng.below(8) as u32),
            DamageKind::ZeroPage => (rng.below(len.div_ceil(PAGE_BYTES as u64)) * PAGE_BYTES as u64, 0),
            // One cut in four inside the header: before byte 60 the cut
            // takes the header's proof of what was synced or its salt. Cut to 0 bytes,
            // only a group that processed records in the segment tells it
            // from a creation cut short (partition 1's group; not
            // partition 0's, a known gap: docs/RELIABILITY.md).
            DamageKind::Truncate if kind == FileKind::ActiveSegment => {
                let seg = pristine.segment(&rel);
                let proven = COMMITTED[seg.partition as usize] > seg.base;
                let in_header = rng.below(4) == 0;
                let at = match (in_header, proven) {
                    (true, true) => rng.below(SALT_FIELD.end as u64),
                    (true, false) => 1 + rng.below(SALT_FIELD.end as u64 - 1),
                    (false, _) => SALT_FIELD.end as u64 + rng.below(len - SALT_FIELD.end as u64),
                };
                (at, 0)
            }
            DamageKind::Truncate => (rng.below(len), 0),
        };
        Case { seed, kind, damage, rel, at: at as usize, bit }
    }

    /// Where to flip a bit: anywhere in the file, or (so that few cases
    /// suffice to reach them) in the bytes that matter most: a segment's
    /// header or frames, a checkpoint's copies.
    fn flip_position(kind: FileKind, rel: &Path, len: u64, pristine: &Pristine, rng: &mut Rng) -> u64 {
        let region = rng.below(8);
        match kind {
            FileKind::SealedSegment | FileKind::ActiveSegment => match region {
                0 | 1 => rng.below(SEGMENT_HEADER_BYTES as u64),
                2..=5 => rng.below(pristine.segment(rel).data_end as u64),
                _ => rng.below(len),
            },
            FileKind::Checkpoint if region < 6 => {
                CHECKPOINT_COPIES[(region % 4) as usize] as u64 + rng.below(CHECKPOINT_COPY_BYTES as u64)
            }
            _ => rng.below(len),
        }
    }

    /// The partition the damaged file belongs to (none for the meta file).
    fn partition(&self) -> Option<u32> {
        self.rel.components().find_map(|c| {
            let c = c.as_os_str().to_str()?;
            c.strip_prefix("slot-").or_else(|| c.strip_prefix('p').filter(|d| d.len() == 4))?.parse().ok()
        })
    }

    fn apply(&self, file: &Path) {
        let mut bytes = std::fs::read(file).unwrap();
        match self.damage {
            DamageKind::FlipBit => bytes[self.at] ^= 1 << self.bit,
            DamageKind::ZeroPage => {
                let end = (self.at + PAGE_BYTES).min(bytes.len());
                bytes[self.at..end].fill(0);
            }
            DamageKind::Truncate => bytes.truncate(self.at),
        }
        std::fs::write(file, bytes).unwrap();
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: ", self.kind, self.rel.display())?;
        match self.damage {
            DamageKind::FlipBit => write!(f, "bit {} of byte {} flipped", self.bit, self.at)?,
            DamageKind::ZeroPage => write!(f, "page at byte {} zeroed", self.at)?,
            DamageKind::Truncate => write!(f, "cut to {} bytes", self.at)?,
        }
        write!(
            f,
            " (case seed {}; replay: DURQ_DAMAGE_SEED={} cargo test --release --test damage_matrix)",
            self.seed, self.seed
        )
    }
}

// ---- What durq must do ----

/// What reading one acknowledged record must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Exactly the acknowledged record: its bytes, and every byte a reader
    /// passes to reach it, are as they were.
    Intact,
    /// `Error::Corrupt` naming the damaged file: its frame was damaged, or
    /// its whole segment can no longer be opened.
    Damaged,
    /// Either of those: the record is intact, but comes after damage in
    /// the same segment, where a reader finds its way by headers that the
    /// damage may have changed (a frame's length is read without its
    /// checksum when hopping over records).
    Either,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opens {
    Yes,
    /// Refused with `Error::Corrupt` naming the damaged file.
    Corrupt,
    /// Refused with `Error::NotAQueue` naming the damaged file (its magic is gone).
    NotAQueue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    /// Only bytes durq never reads changed (or none at all): nothing to report.
    Silent,
    /// No problem, and a note naming the file (a torn tail the next open
    /// repairs, a lease or a checkpoint copy that cannot be read).
    Notes,
    /// At least one problem, and every problem and note names the file.
    Problems,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Join {
    Opens,
    /// The group's position is in the damaged segment: positioning a reader
    /// there may fail with `Error::Corrupt` naming it.
    MayFail,
    /// Both checkpoint copies are damaged: `Error::Corrupt` naming the file.
    Fails,
}

struct Expect {
    opens: Opens,
    verify: Verify,
    /// Per partition, per offset.
    reads: Vec<Vec<Read>>,
    join: Join,
    /// Where the group must start in each partition.
    starts: Vec<u64>,
    /// A damaged sealed segment's end: a reader crossing into the next
    /// segment reads its trailing bytes, so the group may stop there.
    stop_at_end: Option<u64>,
}

impl Expect {
    fn of(pristine: &Pristine, case: &Case, before: &[u8], after: &[u8]) -> Expect {
        let mut e = Expect {
            opens: Opens::Yes,
            verify: Verify::Silent,
            reads: pristine.records.iter().map(|r| vec![Read::Intact; r.len()]).collect(),
            join: Join::Opens,
            starts: COMMITTED.to_vec(),
            stop_at_end: None,
        };
        match case.kind {
            FileKind::Meta => {
                // Checked magic → length → checksum: a file without the magic
                // is foreign, any other damage is corruption.
                let magic_kept =
                    after.len() >= META_MAGIC_BYTES && after[..META_MAGIC_BYTES] == before[..META_MAGIC_BYTES];
                e.opens = if magic_kept { Opens::Corrupt } else { Opens::NotAQueue };
                // The one problem verify can report without the options the
                // meta file holds, and a note on how to recover it.
                e.verify = Verify::Problems;
            }
            // Every byte of a lease is under its checksum, and a lease only
            // says who holds a slot: an unreadable one is taken over (its
            // lock is free), and the group's position is the checkpoint's.
            FileKind::Lease => e.verify = Verify::Notes,
            FileKind::Checkpoint => {
                let p = case.partition().unwrap() as usize;
                let copies = pristine.checkpoints[p].1;
                let changed = CHECKPOINT_COPIES.map(|at| {
                    after.get(at..at + CHECKPOINT_COPY_BYTES) != Some(&before[at..at + CHECKPOINT_COPY_BYTES])
                });
                // A mark copy of zeros reads as one never written, and a
                // file cut exactly where the second mark copy starts as one
                // of the earlier one-mark layout: verify has nothing to say
                // about them. A synced copy is written when the file is
                // filled, so zeros there are damage.
                let unwritten = |i: usize| {
                    let at = CHECKPOINT_COPIES[i];
                    after.get(at..at + CHECKPOINT_COPY_BYTES).is_some_and(|b| b.iter().all(|&x| x == 0))
                        || (i == 3 && after.len() == at)
                };
                match newest(&copies, changed.map(|c| !c)) {
                    None => {
                        e.verify = Verify::Problems;
                        e.join = Join::Fails;
                    }
                    Some(survivor) => {
                        e.starts[p] = survivor.next_offset;
                        let noted = changed[0]
                            || changed[1]
                            || CHECKPOINT_MARK_COPIES.iter().any(|&i| changed[i] && !unwritten(i));
                        // Bytes between the copies are read by nobody.
                        if noted {
                            e.verify = Verify::Notes;
                        }
                    }
                }
            }
            FileKind::SealedSegment | FileKind::ActiveSegment => {
                e.segment(pristine.segment(&case.rel), pristine, before, after)
            }
        }
        e
    }

    fn segment(&mut self, seg: &SegmentFile, pristine: &Pristine, before: &[u8], after: &[u8]) {
        let truncated = after.len() < before.len();
        if !seg.sealed && after.len() < SALT_FIELD.end {
            // The cut took the header's proof of what was synced or the
            // frames' salt (or the whole file, where the group's checkpoint
            // proves records in it): nothing can say what was acknowledged
            // there, and a creation cut short it cannot be.
            self.opens = Opens::Corrupt;
            self.verify = Verify::Problems;
            return;
        }
        let mut after = after.to_vec();
        if !seg.sealed {
            // Recovery grows a short last segment back to its size with zeros.
            after.resize(before.len(), 0);
        }
        let changed = |i: usize| after.get(i) != Some(&before[i]);
        let fixed_header_changed = (0..SEGMENT_FIXED_END).chain(SALT_FIELD).any(changed);
        // A sealed segment is checked when a reader maps it: a short file or
        // a damaged fixed header makes every record in it unreadable.
        let unreadable = seg.sealed && (truncated || fixed_header_changed);
        // A last segment whose header is all zeros gets it rewritten (its
        // name and place say what it was); any other damaged header of a
        // last segment fails the open.
        let header_rewritten = !seg.sealed && after[..SEGMENT_HEADER_BYTES].iter().all(|&b| b == 0);
        if !seg.sealed && fixed_header_changed && !header_rewritten {
            self.opens = Opens::Corrupt;
            self.verify = Verify::Problems;
            return;
        }
        let first_changed = (SEGMENT_HEADER_BYTES..before.len()).find(|&i| changed(i));
        let reads = &mut self.reads[seg.partition as usize];
        for (i, &(start, end)) in seg.frames.iter().enumerate() {
            reads[(seg.base + i as u64) as usize] = if unreadable || (start..end).any(changed) {
                Read::Damaged
            } else if first_changed.is_some_and(|f| f < start) {
                Read::Either
            } else {
                Read::Intact
            };
        }
        let frames_changed = first_changed.is_some_and(|f| f < seg.data_end);
        self.verify = if unreadable || header_rewritten || frames_changed || truncated {
            Verify::Problems
        } else if first_changed.is_some() {
            // Bytes after the last frame: in the last segment, a torn tail
            // the next open zeroes (nothing proves a record there); in a
            // sealed one, damage.
            if seg.sealed { Verify::Problems } else { Verify::Notes }
        } else {
            // Zeros over zeros, or only the reserved bytes and the
            // `synced_end` proof of the header ("not an error").
            Verify::Silent
        };
        let p = seg.partition;
        if pristine.holder(p, self.starts[p as usize]).rel == seg.rel {
            self.join = Join::MayFail;
        }
        if seg.sealed {
            self.stop_at_end = Some(seg.end);
        }
    }
}

// ---- Running a case ----

/// What a case showed, for the summary.
#[derive(Default)]
struct Tally {
    cases: u64,
    refused: u64,
    records_corrupt: u64,
    cases_with_corrupt_records: u64,
    verify_silent: u64,
    group_fell_back: u64,
    group_refused: u64,
}

/// True if `e` is the refusal `want` names, and names `file`.
fn refused_as(e: &Error, want: Opens, file: &Path) -> bool {
    match (e, want) {
        (Error::Corrupt { file: f, .. }, Opens::Corrupt) => f == file,
        (Error::NotAQueue { path, .. }, Opens::NotAQueue) => path == file,
        _ => false,
    }
}

fn is_corrupt_naming(e: &Error, file: &Path) -> bool {
    matches!(e, Error::Corrupt { file: f, .. } if f == file)
}

fn run(pristine: &Pristine, case: &Case, tally: &mut Tally) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    copy_dir(&pristine.path, &path);
    let file = path.join(&case.rel);
    let before = std::fs::read(&file).unwrap();
    case.apply(&file);
    let after = std::fs::read(&file).unwrap();
    let expect = Expect::of(pristine, case, &before, &after);
    tally.cases += 1;

    let untouched = snapshot(&path);
    let report = durq::verify::verify(&path);
    assert!(snapshot(&path) == untouched, "verify modified the queue directory");
    // Positions in checkpoint notes are left to their own check (the copy
    // a cut file lacks is named by where it belongs).
    let segment_len = matches!(case.kind, FileKind::SealedSegment | FileKind::ActiveSegment).then_some(after.len());
    check_verify(expect.verify, report, &file, segment_len);
    tally.verify_silent += u64::from(expect.verify == Verify::Silent);

    let untouched = data_snapshot(&path);
    let queue = match (Queue::open_existing(&path), expect.opens) {
        (Ok(queue), Opens::Yes) => queue,
        (Err(e), want) if refused_as(&e, want, &file) => {
            assert!(data_snapshot(&path) == untouched, "a refused open changed the queue");
            tally.refused += 1;
            return;
        }
        (Ok(_), want) => panic!("the queue opened; expected it refused ({want:?})"),
        (Err(e), want) => panic!("open failed with {e}; expected {want:?}"),
    };
    for p in 0..PARTITIONS {
        assert_eq!(
            queue.offsets(p).unwrap(),
            (0, RECORDS[p as usize]),
            "partition {p}: offsets neither lost nor invented"
        );
    }
    let corrupt = read_one_by_one(&queue, pristine, &expect, &file);
    tally.records_corrupt += corrupt;
    tally.cases_with_corrupt_records += u64::from(corrupt > 0);
    read_in_order(&queue, pristine, &expect, &file);
    drain_group(&queue, pristine, case, &expect, &after, tally);
}

/// Checks a record read back against the acknowledged one.
#[track_caller]
fn assert_acked(got: &StoredRecord, pristine: &Pristine, p: u32, offset: u64) {
    let want = &pristine.records[p as usize][offset as usize];
    assert_eq!(got.position, Position { partition: p, offset }, "a record at another position");
    assert!(
        got.key == want.key && got.payload == want.payload,
        "partition {p} offset {offset}: another record delivered ({} payload bytes {:?}...)",
        got.payload.len(),
        String::from_utf8_lossy(&got.payload[..got.payload.len().min(40)])
    );
}

/// Reads every offset alone (`read_at(p, o, 1)`), which positions a reader
/// by hopping over the records before it. Returns how many were refused.
fn read_one_by_one(queue: &Queue, pristine: &Pristine, expect: &Expect, file: &Path) -> u64 {
    let mut corrupt = 0;
    for p in 0..PARTITIONS {
        for offset in 0..RECORDS[p as usize] {
            let want = expect.reads[p as usize][offset as usize];
            match queue.read_at(p, offset, 1) {
                Ok(got) if want != Read::Damaged => {
                    assert_eq!(got.len(), 1, "partition {p} offset {offset}: one record");
                    assert_acked(&got[0], pristine, p, offset);
                }
                Err(e) if want != Read::Intact && is_corrupt_naming(&e, file) => corrupt += 1,
                Ok(_) => panic!("partition {p} offset {offset}: a damaged record was delivered"),
                Err(e) => panic!("partition {p} offset {offset} ({want:?}): {e}"),
            }
        }
        assert!(queue.read_at(p, RECORDS[p as usize], 1).unwrap().is_empty(), "partition {p}: nothing past the end");
    }
    corrupt
}

/// Reads every partition from its first offset in batches, as a reader
/// without a group does, crossing from segment to segment. After an error
/// it steps over one record (reading it alone) and goes on.
fn read_in_order(queue: &Queue, pristine: &Pristine, expect: &Expect, file: &Path) {
    for p in 0..PARTITIONS {
        let mut offset = 0;
        while offset < RECORDS[p as usize] {
            match queue.read_at(p, offset, 50) {
                Ok(got) => {
                    assert!(!got.is_empty(), "partition {p}: reading stopped at {offset} without an error");
                    for r in &got {
                        assert_acked(r, pristine, p, offset);
                        assert_ne!(
                            expect.reads[p as usize][offset as usize],
                            Read::Damaged,
                            "offset {offset} delivered"
                        );
                        offset += 1;
                    }
                }
                Err(e) => {
                    assert!(is_corrupt_naming(&e, file), "partition {p} from offset {offset}: {e}");
                    match queue.read_at(p, offset, 1) {
                        Ok(got) => {
                            assert_acked(&got[0], pristine, p, offset);
                            assert_ne!(
                                expect.reads[p as usize][offset as usize],
                                Read::Damaged,
                                "offset {offset} delivered"
                            );
                        }
                        Err(e) => assert!(is_corrupt_naming(&e, file), "partition {p} offset {offset}: {e}"),
                    }
                    offset += 1;
                }
            }
        }
    }
}

/// Joins the group and processes everything it can, checking every
/// delivery against the acknowledged records.
fn drain_group(queue: &Queue, pristine: &Pristine, case: &Case, expect: &Expect, damaged: &[u8], tally: &mut Tally) {
    let file = &queue.path().join(&case.rel);
    let options = ConsumerOptions::default().max_batch(32);
    let mut consumer = match (queue.consumer_with(GROUP, options.clone()), expect.join) {
        (Ok(c), Join::Opens | Join::MayFail) => c,
        (Err(e), Join::MayFail) if is_corrupt_naming(&e, file) => {
            tally.group_refused += 1;
            return;
        }
        (Err(e), Join::Fails) if is_corrupt_naming(&e, file) => {
            // Never a reset: the next try fails the same way, and the
            // damaged checkpoint was neither rewritten nor replaced.
            let again = queue.consumer_with(GROUP, options).err().expect("a second join must fail too");
            assert!(is_corrupt_naming(&again, file), "second join: {again}");
            assert!(std::fs::read(file).unwrap() == damaged, "the failed joins rewrote the damaged checkpoint");
            let slot = file.parent().unwrap();
            let files: Vec<String> =
                std::fs::read_dir(slot).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert!(
                files.iter().filter(|n| n.ends_with(".ckpt")).count() == 1,
                "no newer epoch was claimed over the damaged checkpoint: {files:?}"
            );
            tally.group_refused += 1;
            return;
        }
        (Ok(c), Join::Fails) => panic!("the group joined at {:?} with every checkpoint copy damaged", c.committed()),
        (Err(e), want) => panic!("joining the group failed with {e}; expected {want:?}"),
    };
    assert_eq!(consumer.committed().unwrap(), expect.starts, "where the group starts");
    tally.group_fell_back += u64::from(expect.starts != COMMITTED);
    let mut next = expect.starts.clone();
    let mut errors = 0;
    for _ in 0..1000 {
        let mut delivered: Vec<StoredRecord> = Vec::new();
        let result = consumer.process_timeout(Duration::ZERO, |batch| {
            delivered.extend(batch.iter().map(|m| StoredRecord {
                position: m.position(),
                timestamp_ms: m.timestamp_ms(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().to_vec(),
            }));
            Ok::<(), std::io::Error>(())
        });
        match result {
            Ok(0) => break,
            Ok(n) => {
                errors = 0;
                assert_eq!(n, delivered.len());
                for r in &delivered {
                    let p = r.position.partition;
                    assert_acked(r, pristine, p, next[p as usize]);
                    next[p as usize] += 1;
                }
            }
            Err(e) => {
                assert!(is_corrupt_naming(&e, file), "the group failed with {e}");
                let p = case.partition().expect("damage a group reader meets is in a partition's file");
                let stuck = next[p as usize];
                if let Error::Corrupt { offset: Some(o), .. } = &e {
                    assert_eq!(*o, stuck, "the error names the record the group is at");
                }
                let at = expect.reads[p as usize][stuck as usize];
                assert!(
                    at != Read::Intact || expect.stop_at_end == Some(stuck),
                    "the group stopped at intact record {stuck} of partition {p}: {e}"
                );
                errors += 1;
                // Asked again, it fails again: a damaged record is never skipped.
                if errors == 3 {
                    break;
                }
            }
        }
    }
    // After an error the member keeps offering the damaged slot first (it
    // reports the damage as often as it is asked), so how far the other
    // partition got is checked only for what was delivered; reading it
    // without a group, above, covers all of it.
    if errors == 0 {
        assert_eq!(next, RECORDS, "the group drained every partition");
    }
    assert_eq!(consumer.committed().unwrap(), next, "the group committed exactly what it processed");
}

/// Every byte position a text names ("byte N").
fn bytes_named(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split("byte ").skip(1).filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
}

/// Checks `verify`'s report against `want`; `file` is the damaged file, and
/// if it is a segment, `segment_len` its length now: no position past it may
/// be named.
fn check_verify(want: Verify, report: durq::Result<durq::verify::Report>, file: &Path, segment_len: Option<usize>) {
    let shown = file.display().to_string();
    let report = report.unwrap_or_else(|e| panic!("verify failed: {e}; expected {want:?}"));
    if let Some(len) = segment_len {
        let past = |b: u64| b > len as u64;
        for p in report.problems.iter().filter(|p| p.file == file) {
            let named_past = bytes_named(&p.what).chain([p.position]).any(past);
            assert!(!named_past, "verify names a byte past the end of the {len}-byte file: {p}");
        }
        for n in report.notes.iter().filter(|n| n.contains(&shown)) {
            assert!(!bytes_named(n).any(past), "verify names a byte past the end of the {len}-byte file: {n}");
        }
    }
    let all_name_it = report.problems.iter().all(|p| p.file == file) && report.notes.iter().all(|n| n.contains(&shown));
    let ok = match want {
        Verify::Silent => report.problems.is_empty() && report.notes.is_empty(),
        Verify::Notes => report.problems.is_empty() && !report.notes.is_empty() && all_name_it,
        Verify::Problems => !report.problems.is_empty() && all_name_it,
    };
    assert!(ok, "verify: expected {want:?} naming only {shown}, got {report:#?}");
}

// ---- The matrix ----

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

#[test]
fn every_kind_of_file_with_every_kind_of_damage_is_detected_never_delivered_never_skipped() {
    let pristine = Pristine::build();
    let per_cell = env_u64("DURQ_DAMAGE_CASES").unwrap_or(DEFAULT_CASES_PER_CELL);
    let base = env_u64("DURQ_SEED").unwrap_or(DEFAULT_SEED);
    let seeds: Vec<u64> = match env_u64("DURQ_DAMAGE_SEED") {
        Some(seed) => vec![seed],
        None => (0..FILE_KINDS.len())
            .flat_map(|k| {
                (0..DAMAGE_KINDS.len()).flat_map(move |d| (0..per_cell).map(move |i| Case::seed(base, k, d, i)))
            })
            .collect(),
    };
    let mut tallies: BTreeMap<(FileKind, DamageKind), Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in seeds {
        let case = Case::from_seed(seed, &pristine);
        let tally = tallies.entry((case.kind, case.damage)).or_default();
        LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run(&pristine, &case, tally);
            let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
            LARGEST_ALLOCATION_SEEN.fetch_max(largest, Ordering::Relaxed);
            assert!(largest <= ALLOCATION_BYTES_MAX, "an allocation of {largest} bytes");
        }));
        if let Err(panic) = outcome {
            failures.push(format!("{case}:\n    {}", panic_text(&panic)));
        }
    }
    eprintln!(
        "file kind      damage    cases refused corrupt-records(cases) verify-silent group-fell-back group-refused"
    );
    for ((kind, damage), t) in &tallies {
        eprintln!(
            "{:<14} {:<9} {:>5} {:>7} {:>8} ({:>3}) {:>13} {:>15} {:>13}",
            format!("{kind:?}"),
            format!("{damage:?}"),
            t.cases,
            t.refused,
            t.records_corrupt,
            t.cases_with_corrupt_records,
            t.verify_silent,
            t.group_fell_back,
            t.group_refused
        );
    }
    eprintln!("largest allocation in a case: {} bytes", LARGEST_ALLOCATION_SEEN.load(Ordering::Relaxed));
    assert!(failures.is_empty(), "{} cases failed (DURQ_SEED={base}):\n{}", failures.len(), failures.join("\n"));
    // In the same test, so no other test's allocations blur the measure.
    grown_small_files_are_never_read_whole(&pristine);
}

/// A hostile local user grows the meta file, a lease or a checkpoint into
/// a 256 MiB sparse file. durq must judge it by its first bytes, without
/// reading or allocating the rest: the meta file is refused (by verify: its
/// one problem), naming it; a
/// lease that cannot be read counts as stale, and the group still starts at
/// its committed position; `verify` reports without reading the files whole.
fn grown_small_files_are_never_read_whole(pristine: &Pristine) {
    const GROWN: u64 = 256 << 20;
    for file in [Path::new("durq.meta").to_path_buf(), Pristine::lease(0), Pristine::lease(1)]
        .into_iter()
        .chain(pristine.checkpoints.iter().map(|(f, _)| f.clone()))
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        copy_dir(&pristine.path, &path);
        let grown = path.join(&file);
        std::fs::OpenOptions::new().write(true).open(&grown).unwrap().set_len(GROWN).unwrap();
        LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
        let report = durq::verify::verify(&path);
        match Queue::open_existing(&path) {
            Err(e) => {
                assert_eq!(file, Path::new("durq.meta"), "{}: {e}", file.display());
                assert!(is_corrupt_naming(&e, &grown), "{e}");
                let problems = report.expect("verify reports a damaged meta file").problems;
                assert!(problems.len() == 1 && problems[0].file == grown, "verify accepted a grown meta file");
            }
            Ok(queue) => {
                let committed = queue.consumer_with(GROUP, ConsumerOptions::default()).unwrap().committed().unwrap();
                assert_eq!(committed, COMMITTED, "{} grown", file.display());
            }
        }
        let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
        assert!(
            largest <= ALLOCATION_BYTES_MAX,
            "{} grown to {GROWN} bytes: an allocation of {largest}",
            file.display()
        );
    }
}

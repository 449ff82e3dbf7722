//! A simulated disk under a real directory, for power-loss and I/O-fault
//! testing (compiled only with the `simulation` feature, which the crate's
//! own tests and fuzz targets turn on).
//!
//! # What it models
//!
//! durq keeps its fast path under simulation: it still writes into real,
//! mapped files in a real directory. That directory plays the part of the
//! *page cache*: what a process sees, and what survives a SIGKILL. The
//! simulation adds the *disk* underneath it, the state a power cut leaves:
//!
//! - for every file, its **durable image**: the bytes and length as of the
//!   syncs that covered them (fdatasync/fsync of the file, msync of a range);
//! - the durable **namespace**: which names exist, as of the last fsync of
//!   each directory, and the **pending metadata operations** (create,
//!   rename, unlink, mkdir, rmdir) issued since, in order. A file created
//!   and synced whose directory was not synced may vanish.
//!
//! Pending *data* is not logged write by write (stores into a mapping cannot
//! be intercepted without losing the fast path); it is found when needed by
//! comparing each live file with its durable image, 512-byte sector by
//! sector. Every dirty sector is a write the disk may or may not have
//! received.
//!
//! Every call of the storage module is one numbered **operation**. A test
//! can fail the `N`-th with an errno, once or from then on ([`Fault`]); and
//! can record a **crash point** before every operation that changes the
//! disk, then build, for any point, the directory a power cut at that moment
//! could leave ([`SimDisk::crash_image`]), in one of five [`CrashMode`]s,
//! deterministically from one `u64` seed. And it can hold an operation at
//! its start until it lets it go ([`SimDisk::hold_next`]), to show what
//! other threads can do while a sync is in flight, without timing them.
//!
//! # What it does not model
//!
//! - Garbage beyond the bytes a lost write changed: a torn sector is
//!   garbled only where it was being changed ("powersafe overwrite", which
//!   SQLite also assumes by default). A disk that garbles a whole sector
//!   would take synced bytes sharing it with an append down too.
//! - Reordering of removals: a crash keeps a *prefix* of the pending
//!   metadata operations, as a journaling file system (ext4, xfs) does, or
//!   ([`CrashMode::LoseEntries`]) any subset of the pending creations and
//!   renames, but then every pending removal.
//! - Data of a file that was unlinked while dirty: only its durable image is
//!   known (its pending writes are taken as lost, which is one legal outcome).
//! - Writes by another process sharing the directory are seen like this
//!   process's own: the simulation is per directory, not per process.
//! - Bit rot of synced data and misdirected writes: the corruption tests and
//!   the fuzz targets damage files directly instead.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Op;

/// The unit of a torn write: a disk sector.
pub const SECTOR: usize = 512;
/// msync works on whole pages.
const PAGE: usize = 4096;

/// What a power cut does to the writes the disk had not yet confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashMode {
    /// Every pending write and metadata operation is lost.
    DropPending,
    /// Each dirty sector independently survives or not; a random prefix of
    /// the pending metadata operations survives.
    KeepSome,
    /// Each file's dirty sectors survive in ascending order up to a random
    /// cut (writeback interrupted mid-way); all metadata operations survive.
    Torn,
    /// Like [`CrashMode::KeepSome`], but each lost sector holds random bytes
    /// where the lost write would have changed it (a sector the disk was
    /// writing when the power went).
    Garbage,
    /// Each directory entry made since its directory's last fsync (a file
    /// or directory created, a name renamed into place) survives or not,
    /// independently of the others and of their order: a later one may
    /// survive an earlier one that is lost, as when a directory fsync is
    /// missing (the classic ALICE finding: a file whose creation was never
    /// made durable, a rename that reverts). A rename survives only with its
    /// source. Every pending removal survives; dirty sectors as in
    /// [`CrashMode::KeepSome`].
    LoseEntries,
}

impl CrashMode {
    /// Every mode, for enumeration.
    pub const ALL: [CrashMode; 5] =
        [CrashMode::DropPending, CrashMode::KeepSome, CrashMode::Torn, CrashMode::Garbage, CrashMode::LoseEntries];
}

/// A fault to inject: operation `at` (counted from the attach) fails with
/// `errno`; with `sticky`, so does every operation after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the first operation to fail.
    pub at: u64,
    /// The error it fails with (`libc::EIO`, `libc::ENOSPC`, ...).
    pub errno: i32,
    /// Keep failing every later operation.
    pub sticky: bool,
}

/// The kind of a storage operation, as recorded in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A file created.
    Create,
    /// A directory created.
    CreateDir,
    /// Disk space reserved (fallocate).
    Reserve,
    /// A `pwrite`.
    Write,
    /// fsync or fdatasync of a whole file.
    SyncFile,
    /// msync of a range of a mapped file.
    SyncRange,
    /// fsync of a directory.
    SyncDir,
    /// A rename.
    Rename,
    /// A file removed.
    Remove,
    /// A directory tree removed.
    RemoveTree,
    /// A file lock taken.
    Lock,
}

/// One operation of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedOp {
    /// Its index, counted from the attach.
    pub index: u64,
    /// What it did.
    pub kind: OpKind,
    /// The path it named, relative to the simulated directory.
    pub path: PathBuf,
    /// A rename's new name, relative to the simulated directory.
    pub to: Option<PathBuf>,
}

/// A handle on the simulated disk under one directory. Dropping it detaches
/// the simulation.
pub struct SimDisk {
    disk: Arc<Mutex<Disk>>,
}

/// Files are told apart by an id given at creation, not by inode number,
/// which the kernel reuses.
type FileId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(FileId),
}

/// A metadata operation, with paths relative to the root.
#[derive(Debug, Clone)]
enum Meta {
    Create { path: PathBuf, node: Node },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
    RemoveTree { path: PathBuf },
}

impl Meta {
    /// The directory whose fsync makes this operation durable.
    fn dir(&self) -> &Path {
        let path = match self {
            Meta::Create { path, .. } | Meta::Remove { path } | Meta::RemoveTree { path } => path,
            Meta::Rename { to, .. } => to,
        };
        path.parent().unwrap_or(Path::new(""))
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            Meta::Create { path, node } => {
                names.insert(path.clone(), *node);
            }
            Meta::Rename { from, to } => {
                // A rename cannot reach the disk before its source did.
                if !names.contains_key(from) {
                    return;
                }
                let moved: Vec<(PathBuf, Node)> = names
                    .iter()
                    .filter_map(|(p, n)| {
                        let rest = p.strip_prefix(from).ok()?;
                        Some((if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) }, *n))
                    })
                    .collect();
                names.retain(|p, _| !p.starts_with(from) && !p.starts_with(to));
                names.extend(moved);
            }
            Meta::Remove { path } => {
                names.remove(path);
            }
            Meta::RemoveTree { path } => names.retain(|p, _| !p.starts_with(path)),
        }
    }
}

/// Namespace and file contents: what the disk holds.
#[derive(Debug, Clone, Default)]
struct Image {
    names: BTreeMap<PathBuf, Node>,
    data: HashMap<FileId, Arc<Vec<u8>>>,
}

/// A live file's difference from its durable image at a crash point.
#[derive(Debug, Clone)]
struct Dirty {
    len: u64,
    /// (sector index, live bytes of that sector), ascending.
    sectors: Vec<(u64, Box<[u8]>)>,
}

/// The state of the disk just before one operation.
#[derive(Debug, Clone)]
struct CrashPoint {
    op: u64,
    durable: Image,
    pending: Vec<Meta>,
    dirty: HashMap<FileId, Dirty>,
}

#[derive(Debug)]
struct Disk {
    root: PathBuf,
    ops: u64,
    next_id: FileId,
    /// The names as this process sees them (the page cache's view).
    live: BTreeMap<PathBuf, Node>,
    durable: Image,
    pending: Vec<Meta>,
    fault: Option<Fault>,
    /// Fail the next operation of this kind: (kind, errno, sticky).
    fault_next: Option<(OpKind, i32, bool)>,
    capture: bool,
    points: Vec<CrashPoint>,
    trace: Vec<TracedOp>,
    problems: Vec<String>,
    /// An operation is between [`before`] and [`after`] (see [`InFlight`]).
    busy: bool,
    /// The next operation of this kind on a file whose name ends so is
    /// held at its start (see [`SimDisk::hold_next`]).
    hold: Option<(OpKind, String, Arc<Gate>)>,
}

/// Where a held operation waits: see [`SimDisk::hold_next`].
#[derive(Debug, Default)]
struct Gate {
    /// (the operation has reached it, it was let go)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

/// An operation held at its start, before it counts, takes the disk's
/// operation slot or makes its system call: other threads' operations go
/// on meanwhile. Dropping it lets the operation go.
pub struct HeldOp {
    gate: Arc<Gate>,
}

impl HeldOp {
    /// Waits until the operation has reached its hold, at most `patience`
    /// (only to turn a hold never reached into a failure, not to time
    /// anything); true if it has.
    pub fn reached(&self, patience: std::time::Duration) -> bool {
        let state = lock(&self.gate.state);
        let (state, _) = self
            .gate
            .changed
            .wait_timeout_while(state, patience, |(reached, _)| !*reached)
            .unwrap_or_else(|e| e.into_inner());
        state.0
    }
}

impl Drop for HeldOp {
    fn drop(&mut self) {
        lock(&self.gate.state).1 = true;
        self.gate.changed.notify_all();
    }
}

/// Waits at `gate` until its [`HeldOp`] lets the operation go.
fn wait_at(gate: &Gate) {
    let mut state = lock(&gate.state);
    state.0 = true;
    gate.changed.notify_all();
    while !state.1 {
        state = gate.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
}

/// Every attached disk, by root. Tests run in parallel threads, each with
/// its own directory; an operation belongs to the disk whose root holds its
/// path.
static DISKS: Mutex<Vec<Attached>> = Mutex::new(Vec::new());
/// A simulated disk's root, its state, and what waits for its operation
/// slot to be free (see [`InFlight`]).
type Attached = (PathBuf, Arc<Mutex<Disk>>, Arc<Condvar>);
/// How many disks are attached, so that storage calls outside any simulated
/// directory (benches, most tests) skip the registry lock.
static ATTACHED: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves the state as valid
    // as any other: every update is a single assignment or push.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn disk_for(path: &Path) -> Option<(Arc<Mutex<Disk>>, Arc<Condvar>)> {
    if ATTACHED.load(Ordering::Acquire) == 0 {
        return None;
    }
    lock(&DISKS).iter().find(|(root, ..)| path.starts_with(root)).map(|(_, d, idle)| (d.clone(), idle.clone()))
}

/// One operation on a simulated disk, from [`before`] until its system call
/// returned and [`after`] recorded its effect: operations of other threads
/// (the sealer's msyncs beside a producer's removals) wait meanwhile, so a
/// crash point never sees a system call done whose effect is not recorded
/// yet (a file already removed but still live, say). File locks are not
/// held this way: taking one may wait for another thread, and a lock is no
/// crash point.
pub(crate) struct InFlight {
    disk: Arc<Mutex<Disk>>,
    idle: Arc<Condvar>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.disk).busy = false;
        self.idle.notify_all();
    }
}

/// Called by the storage module before every operation: counts it, records
/// a crash point if asked to, and fails it if a fault is due. The returned
/// guard is held until the operation's effect is recorded.
pub(crate) fn before(op: &Op<'_>) -> io::Result<Option<InFlight>> {
    let Some((disk, idle)) = disk_for(op.path()) else { return Ok(None) };
    let mut d = lock(&disk);
    if let Some((kind, name_end, _)) = &d.hold
        && *kind == op.kind()
        && op.path().file_name().is_some_and(|name| name.as_encoded_bytes().ends_with(name_end.as_bytes()))
        && let Some((.., gate)) = d.hold.take()
    {
        drop(d);
        wait_at(&gate);
        d = lock(&disk);
    }
    let in_flight = if op.kind() == OpKind::Lock {
        None
    } else {
        while d.busy {
            d = idle.wait(d).unwrap_or_else(|e| e.into_inner());
        }
        d.busy = true;
        Some(InFlight { disk: disk.clone(), idle })
    };
    let index = d.ops;
    d.ops += 1;
    let rel = d.rel(op.path());
    let to = match op {
        Op::Rename(_, to) => Some(d.rel(to)),
        _ => None,
    };
    d.trace.push(TracedOp { index, kind: op.kind(), path: rel, to });
    if d.capture && op.kind() != OpKind::Lock {
        d.capture_point();
    }
    if let Some((kind, errno, sticky)) = d.fault_next
        && kind == op.kind()
    {
        d.fault_next = None;
        d.fault = Some(Fault { at: index, errno, sticky });
    }
    let failed = match d.fault {
        Some(f) if index == f.at || (f.sticky && index > f.at) => Some(f.errno),
        _ => None,
    };
    // Unlocked before `in_flight` can be dropped, which locks it again.
    drop(d);
    match failed {
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Ok(in_flight),
    }
}

/// Called by the storage module after an operation succeeded: updates the
/// live names, the durable image and the pending metadata operations.
pub(crate) fn after(op: &Op<'_>) {
    let Some((disk, _)) = disk_for(op.path()) else { return };
    let mut d = lock(&disk);
    if let Err(e) = d.apply(op) {
        let problem = format!("{op:?}: {e}");
        d.problem(problem);
    }
}

impl Op<'_> {
    fn kind(&self) -> OpKind {
        match self {
            Op::Create(_) => OpKind::Create,
            Op::CreateDir(_) => OpKind::CreateDir,
            Op::Reserve(_) => OpKind::Reserve,
            Op::Write(_) => OpKind::Write,
            Op::SyncFile(_) => OpKind::SyncFile,
            Op::SyncRange(..) => OpKind::SyncRange,
            Op::SyncDir(_) => OpKind::SyncDir,
            Op::Rename(..) => OpKind::Rename,
            Op::Remove(_) => OpKind::Remove,
            Op::RemoveTree(_) => OpKind::RemoveTree,
            Op::Lock(_) => OpKind::Lock,
        }
    }
}

impl Disk {
    /// Notes something the simulation could not follow (the first few).
    fn problem(&mut self, what: String) {
        if self.problems.len() < 8 {
            self.problems.push(what);
        }
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_path_buf()
    }

    fn file_id(&self, rel: &Path) -> io::Result<FileId> {
        match self.live.get(rel) {
            Some(Node::File(id)) => Ok(*id),
            _ => Err(io::Error::other(format!("{} is not a file the simulation knows", rel.display()))),
        }
    }

    fn new_node(&mut self, rel: PathBuf, dir: bool) {
        if self.live.contains_key(&rel) {
            return; // opened, not created
        }
        let node = if dir {
            Node::Dir
        } else {
            self.next_id += 1;
            Node::File(self.next_id)
        };
        self.live.insert(rel.clone(), node);
        self.pending.push(Meta::Create { path: rel, node });
    }

    fn apply(&mut self, op: &Op<'_>) -> io::Result<()> {
        match *op {
            Op::Create(path) => self.new_node(self.rel(path), false),
            Op::CreateDir(path) => self.new_node(self.rel(path), true),
            Op::Reserve(_) | Op::Write(_) | Op::Lock(_) => {}
            Op::SyncFile(path) => {
                let id = self.file_id(&self.rel(path))?;
                self.durable.data.insert(id, Arc::new(std::fs::read(path)?));
            }
            Op::SyncRange(path, pos, len) => {
                let id = self.file_id(&self.rel(path))?;
                let live = std::fs::read(path)?;
                let start = pos / PAGE * PAGE;
                let end = (pos + len).div_ceil(PAGE).saturating_mul(PAGE).min(live.len());
                let data = Arc::make_mut(self.durable.data.entry(id).or_default());
                // fdatasync makes the length durable too (it is needed to
                // read the data back); bytes outside the range stay as the
                // disk last had them.
                data.resize(live.len(), 0);
                if start < end {
                    data[start..end].copy_from_slice(&live[start..end]);
                }
            }
            Op::SyncDir(path) => {
                let dir = self.rel(path);
                let (now, later): (Vec<Meta>, Vec<Meta>) =
                    std::mem::take(&mut self.pending).into_iter().partition(|m| m.dir() == dir);
                for m in &now {
                    m.apply(&mut self.durable.names);
                }
                self.pending = later;
            }
            Op::Rename(from, to) => {
                let meta = Meta::Rename { from: self.rel(from), to: self.rel(to) };
                meta.apply(&mut self.live);
                self.pending.push(meta);
            }
            Op::Remove(path) => {
                let meta = Meta::Remove { path: self.rel(path) };
                meta.apply(&mut self.live);
                self.pending.push(meta);
            }
            Op::RemoveTree(path) => {
                let meta = Meta::RemoveTree { path: self.rel(path) };
                meta.apply(&mut self.live);
                self.pending.push(meta);
            }
        }
        Ok(())
    }

    /// Records the state a power cut right now would start from.
    fn capture_point(&mut self) {
        let mut dirty = HashMap::new();
        let files: Vec<(PathBuf, FileId)> = self
            .live
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(id) => Some((p.clone(), *id)),
                Node::Dir => None,
            })
            .collect();
        for (rel, id) in files {
            let live = match std::fs::read(self.root.join(&rel)) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.problem(format!("capture: read {}: {e}", rel.display()));
                    continue;
                }
            };
            let empty = Vec::new();
            let durable = self.durable.data.get(&id).map_or(&empty, |d| d);
            let sectors = dirty_sectors(&live, durable);
            if !sectors.is_empty() || live.len() != durable.len() {
                dirty.insert(id, Dirty { len: live.len() as u64, sectors });
            }
        }
        self.points.push(CrashPoint {
            op: self.ops - 1,
            durable: self.durable.clone(),
            pending: self.pending.clone(),
            dirty,
        });
    }
}

fn dirty_sectors(live: &[u8], durable: &[u8]) -> Vec<(u64, Box<[u8]>)> {
    let mut out = Vec::new();
    for (i, sector) in live.chunks(SECTOR).enumerate() {
        let at = i * SECTOR;
        let old = durable.get(at..(at + sector.len()).min(durable.len())).unwrap_or(&[]);
        let same = old.len() == sector.len() && old == sector
            || old.len() < sector.len() && sector[..old.len()] == *old && sector[old.len()..].iter().all(|&b| b == 0);
        if !same {
            out.push((i as u64, sector.into()));
        }
    }
    out
}

/// SplitMix64: a tiny, well-mixed generator, so an image is a pure function
/// of its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// Uniform in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

impl CrashPoint {
    /// The files a power cut at this point leaves, by path, in `mode`.
    fn image(&self, mode: CrashMode, seed: u64) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut rng = Rng(seed ^ self.op.wrapping_mul(0xA24B_AED4_963E_E407));
        let mut names = self.durable.names.clone();
        let kept: Vec<&Meta> = match mode {
            CrashMode::DropPending => Vec::new(),
            CrashMode::Torn => self.pending.iter().collect(),
            CrashMode::KeepSome | CrashMode::Garbage => self.pending[..rng.upto(self.pending.len())].iter().collect(),
            CrashMode::LoseEntries => self
                .pending
                .iter()
                .filter(|m| matches!(m, Meta::Remove { .. } | Meta::RemoveTree { .. }) || rng.coin())
                .collect(),
        };
        for m in kept {
            m.apply(&mut names);
        }
        let mut out = BTreeMap::new();
        for (path, node) in &names {
            // A name whose directory did not survive is unreachable.
            let reachable =
                path.ancestors().skip(1).all(|a| a.as_os_str().is_empty() || names.get(a) == Some(&Node::Dir));
            if !reachable {
                continue;
            }
            let id = match node {
                Node::Dir => {
                    out.insert(path.clone(), None);
                    continue;
                }
                Node::File(id) => *id,
            };
            let mut bytes = self.durable.data.get(&id).map_or_else(Vec::new, |d| d.to_vec());
            if let Some(dirty) = self.dirty.get(&id) {
                self.overlay(dirty, &mut bytes, mode, &mut rng);
            }
            out.insert(path.clone(), Some(bytes));
        }
        out
    }

    /// Lays the surviving dirty sectors of one file over its durable bytes.
    fn overlay(&self, dirty: &Dirty, bytes: &mut Vec<u8>, mode: CrashMode, rng: &mut Rng) {
        let n = dirty.sectors.len();
        let cut = if mode == CrashMode::Torn { rng.upto(n) } else { n };
        let mut grew = false;
        let durable_len = bytes.len();
        for (i, (sector, live)) in dirty.sectors.iter().enumerate() {
            let survives = match mode {
                CrashMode::DropPending => false,
                CrashMode::Torn => i < cut,
                CrashMode::KeepSome | CrashMode::Garbage | CrashMode::LoseEntries => rng.coin(),
            };
            let at = *sector as usize * SECTOR;
            let data: Vec<u8> = if survives {
                live.to_vec()
            } else if mode == CrashMode::Garbage {
                // Garbage covers the bytes the lost writes changed, not the
                // whole sector: the "powersafe overwrite" property SQLite
                // also assumes of disks. Without it, a torn append would
                // also destroy the synced bytes that share its sector, which
                // no log that packs records without sector padding survives.
                let mut old: Vec<u8> = bytes.get(at..).unwrap_or(&[]).iter().take(live.len()).copied().collect();
                old.resize(live.len(), 0);
                let mut junk = vec![0u8; live.len()];
                rng.fill(&mut junk);
                for (i, b) in old.iter_mut().enumerate() {
                    if *b != live[i] {
                        *b = junk[i];
                    }
                }
                old
            } else {
                continue;
            };
            if at + data.len() > bytes.len() {
                bytes.resize(at + data.len(), 0);
                grew = true;
            }
            bytes[at..at + data.len()].copy_from_slice(&data);
        }
        // The new length is metadata the disk may or may not have got.
        let live_len = dirty.len as usize;
        let len = match mode {
            CrashMode::DropPending => durable_len,
            _ if grew || rng.coin() => live_len.max(durable_len),
            _ => durable_len,
        };
        bytes.resize(len, 0);
    }
}

impl SimDisk {
    /// Simulates the disk under `root`, an existing directory: everything
    /// in it now counts as durable. Paths durq is given must start with
    /// `root` as written here.
    pub fn attach(root: &Path) -> io::Result<SimDisk> {
        let mut disk = Disk {
            root: root.to_path_buf(),
            ops: 0,
            next_id: 0,
            live: BTreeMap::new(),
            durable: Image::default(),
            pending: Vec::new(),
            fault: None,
            fault_next: None,
            capture: false,
            points: Vec::new(),
            trace: Vec::new(),
            problems: Vec::new(),
            busy: false,
            hold: None,
        };
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in std::fs::read_dir(root.join(&rel))? {
                let entry = entry?;
                let child = rel.join(entry.file_name());
                if entry.file_type()?.is_dir() {
                    disk.live.insert(child.clone(), Node::Dir);
                    stack.push(child);
                } else {
                    disk.next_id += 1;
                    disk.live.insert(child.clone(), Node::File(disk.next_id));
                    disk.durable.data.insert(disk.next_id, Arc::new(std::fs::read(entry.path())?));
                }
            }
        }
        disk.durable.names = disk.live.clone();
        let disk = Arc::new(Mutex::new(disk));
        let mut disks = lock(&DISKS);
        if disks.iter().any(|(r, ..)| r.starts_with(root) || root.starts_with(r)) {
            return Err(io::Error::other(format!("{} overlaps a simulated directory", root.display())));
        }
        disks.push((root.to_path_buf(), disk.clone(), Arc::new(Condvar::new())));
        ATTACHED.fetch_add(1, Ordering::Release);
        Ok(SimDisk { disk })
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        lock(&self.disk).ops
    }

    /// Every operation so far, in order.
    pub fn trace(&self) -> Vec<TracedOp> {
        lock(&self.disk).trace.clone()
    }

    /// Arms a fault (replacing any other).
    pub fn fail(&self, fault: Fault) {
        lock(&self.disk).fault = Some(fault);
    }

    /// Fails the next operation of `kind` with `errno` (and, with `sticky`,
    /// every operation after it).
    pub fn fail_next(&self, kind: OpKind, errno: i32, sticky: bool) {
        lock(&self.disk).fault_next = Some((kind, errno, sticky));
    }

    /// Holds the next operation of `kind` on a file whose name ends in
    /// `name_end` (an extension such as `"ckpt"`, or a whole name) at its
    /// start, until the returned handle is dropped (replacing any hold not
    /// reached yet).
    pub fn hold_next(&self, kind: OpKind, name_end: &str) -> HeldOp {
        let gate = Arc::new(Gate::default());
        lock(&self.disk).hold = Some((kind, name_end.to_string(), gate.clone()));
        HeldOp { gate }
    }

    /// Removes the armed fault: the disk works again.
    pub fn heal(&self) {
        let mut d = lock(&self.disk);
        d.fault = None;
        d.fault_next = None;
    }

    /// Starts or stops recording a crash point before every operation that
    /// changes the disk.
    pub fn record_crash_points(&self, on: bool) {
        lock(&self.disk).capture = on;
    }

    /// Records a crash point now (after the last operation) and returns its
    /// number.
    pub fn crash_point_now(&self) -> usize {
        let mut d = lock(&self.disk);
        d.ops += 1; // a point is named by the operation it precedes
        d.capture_point();
        d.ops -= 1;
        d.points.len() - 1
    }

    /// The crash points recorded so far, as the index of the operation each
    /// one precedes.
    pub fn crash_points(&self) -> Vec<u64> {
        lock(&self.disk).points.iter().map(|p| p.op).collect()
    }

    /// How many directory entries (creations and renames) were pending at
    /// crash point `point`: those [`CrashMode::LoseEntries`] keeps or
    /// loses one by one.
    pub fn pending_entries(&self, point: usize) -> usize {
        let d = lock(&self.disk);
        d.points
            .get(point)
            .map_or(0, |p| p.pending.iter().filter(|m| matches!(m, Meta::Create { .. } | Meta::Rename { .. })).count())
    }

    /// Writes into `into` (an empty or missing directory) the files a power
    /// cut at crash point `point` could leave, in `mode`, chosen by `seed`.
    pub fn crash_image(&self, point: usize, mode: CrashMode, seed: u64, into: &Path) -> io::Result<()> {
        let files = {
            let d = lock(&self.disk);
            let p = d.points.get(point).ok_or_else(|| io::Error::other(format!("no crash point {point}")))?;
            p.image(mode, seed)
        };
        std::fs::create_dir_all(into)?;
        for (path, contents) in files {
            match contents {
                None => std::fs::create_dir_all(into.join(path))?,
                Some(bytes) => std::fs::write(into.join(path), bytes)?,
            }
        }
        Ok(())
    }

    /// Things the simulation could not follow (a file created behind the
    /// storage module's back, a sync of an unknown file): each is a gap in
    /// what the crash images prove, so tests assert there are none.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.disk).problems.clone()
    }
}

impl Drop for SimDisk {
    fn drop(&mut self) {
        let mut disks = lock(&DISKS);
        disks.retain(|(_, d, _)| !Arc::ptr_eq(d, &self.disk));
        ATTACHED.fetch_sub(1, Ordering::Release);
    }
}

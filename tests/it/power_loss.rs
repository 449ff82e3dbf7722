//! Power loss at every storage operation, on the simulated disk
//! (`durq::internals::sim`, src/storage/sim.rs).
//!
//! A deterministic workload (tests/common/power.rs: two producers, single,
//! batched and keyed sends, flushes, segment rolls, a group consuming and
//! committing, a slot handed over and taken over) runs once per durability
//! mode on the simulated disk, which records a crash point before every
//! operation that changes the disk. For every crash point, every crash mode
//! and several seeds, the test builds the directory a power cut there could
//! leave, reopens it as a restarting application would, and checks every
//! promise the workload was given before that point (`power::check`).
//! Under `Buffered` and `Interval` the sealer thread syncs full segments
//! while the workload goes on, so its operations interleave with the
//! workload's a little differently from run to run; every run still
//! enumerates every crash point of the run it recorded, and asserts that
//! some images leave the segment before the last unproven, for recovery to
//! walk, keep or cut (recovery rows S2-S4 in docs/FORMAT.md).
//!
//! For a sample of those images it also crashes *recovery*: it reopens the
//! image on a second simulated disk, records a crash point before each of
//! recovery's own operations, and checks that recovering any of those
//! images gives exactly the state the uninterrupted recovery gave.
//!
//! A property test then drives random sequences of sends, batches,
//! flushes, members joining and leaving, batches processed with `Ok`, an
//! error or a panic, clean reopens and power cuts in any mode against the
//! ledger (what was acknowledged, as durable or not, and committed), and
//! checks every promise after each power cut and at the end; proptest
//! shrinks a failure to a minimal sequence. The same interpreter is the
//! `queue_ops` fuzz target. (tests/it/model.rs checks the finer semantics,
//! batches, delivery counts and dead letters, without power cuts.)
//!
//! `DURQ_SIM_SEEDS=N` runs N seeds per crash point and mode (default 4),
//! `DURQ_SIM_SEED=X` changes the base seed: the long soak is
//! `DURQ_SIM_SEEDS=400 cargo test --release --test it power_loss::`. A failure
//! names its crash point, mode and seed; `crash_image` with those rebuilds
//! the same image.

use crate::common;

use std::path::{Path, PathBuf};

use common::power::{self, Ledger, Outcome, Recovered, Step};
use durq::Durability;
use durq::internals::log::{recovery, recovery::Sealed, segment};
use durq::internals::sim::{CrashMode, OpKind, SimDisk};
use proptest::collection::vec;
use proptest::prelude::*;

/// Sample one image in this many for the crash-during-recovery check.
const RECOVERY_SAMPLE: u64 = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(power::scratch_base()).expect("scratch dir")
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    dir.to_path_buf()
}

#[derive(Debug, Default)]
struct Tally {
    crash_points: usize,
    images: u64,
    /// Images in `CrashMode::LoseEntries` ...
    lose_entries_images: u64,
    /// ... and crash points with two or more directory entries pending,
    /// where that mode can keep a later one and lose an earlier one.
    points_with_entries_to_lose: usize,
    recovery_images: u64,
    durable_acks: usize,
    /// Partitions of the images whose segment before the last no header
    /// proves synced (a roll under `Buffered` or `Interval` whose background
    /// sync had not finished), so recovery had to walk it ...
    unsealed: u64,
    /// ... and of those, the ones where it cut the log inside it.
    unsealed_cut: u64,
    /// Partitions of the images whose last segment is a roll's creation cut
    /// short (nothing of it written: recovery row 5), judged with the
    /// evidence recovery has: to be completed, never refused.
    creations_cut_short: u64,
}

/// Counts, in the crash image at `queue`, the partitions whose segment
/// before the last recovery will have to walk, and those it will cut: the
/// path that background sealing added; and those whose last segment's
/// creation was cut short, judged with the evidence recovery has.
fn count_unsealed(queue: &Path, tally: &mut Tally) {
    let evidence = durq::internals::group::evidence::gather(queue, 2).unwrap();
    for (p, evidence) in evidence.iter().enumerate() {
        let dir = queue.join(format!("p{p:04}"));
        let mut bases: Vec<u64> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| segment::parse_file_name(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        bases.sort();
        if let Some(&last) = bases.last() {
            let path = dir.join(segment::file_name(last));
            let found = std::fs::read(&path).unwrap_or_default();
            let verdict = recovery::check_last_file(&found, &path, p as u32, last, 64 << 10, evidence.as_ref());
            tally.creations_cut_short += u64::from(matches!(verdict, Ok(recovery::LastFile::NeverWritten)));
        }
        let [.., prev, last] = bases[..] else { continue };
        let read = |base| {
            let mut bytes = std::fs::read(dir.join(segment::file_name(base))).unwrap_or_default();
            bytes.resize(64 << 10, 0);
            bytes
        };
        match recovery::check_sealed(&read(prev), prev, &read(last), last, 16 << 10) {
            Sealed::Proven => {}
            Sealed::Kept => tally.unsealed += 1,
            Sealed::Cut(_) => {
                tally.unsealed += 1;
                tally.unsealed_cut += 1;
            }
        }
    }
}

/// Reopens `image` on a simulated disk, recording a crash point before
/// each operation of the recovery; then checks that recovering from a
/// crash at any of them gives the state an uninterrupted recovery gives.
fn check_recovery_is_idempotent(
    scratch: &Path,
    image: &Path,
    durability: Durability,
    ledger: &Ledger,
    k: u64,
    seed: u64,
    tally: &mut Tally,
) -> Result<(), String> {
    let disk = SimDisk::attach(image).map_err(|e| e.to_string())?;
    disk.record_crash_points(true);
    let first: Recovered = power::check(&image.join("q"), durability, ledger, k)?;
    disk.record_crash_points(false);
    if let Some(p) = disk.problems().first() {
        return Err(format!("simulation lost track: {p}"));
    }
    let trace = disk.trace();
    for (j, &op) in disk.crash_points().iter().enumerate() {
        let s = mix(seed, j as u64);
        let mode = CrashMode::ALL[(s % CrashMode::ALL.len() as u64) as usize];
        let again = fresh(&scratch.join("again"));
        disk.crash_image(j, mode, s, &again).map_err(|e| e.to_string())?;
        let second = power::check(&again.join("q"), durability, ledger, k).map_err(|e| {
            format!("after a crash in recovery before {:?}, {mode:?}, seed {s:#x}: {e}", trace[op as usize])
        })?;
        if second != first {
            return Err(format!(
                "recovery is not idempotent: a crash before {:?} ({mode:?}, seed {s:#x}) then recovery gives \
                 {second:?}, an uninterrupted recovery {first:?}",
                trace[op as usize]
            ));
        }
        tally.recovery_images += 1;
    }
    Ok(())
}

fn enumerate(durability: Durability) -> Tally {
    let seeds = env_u64("DURQ_SIM_SEEDS", 4);
    let base = env_u64("DURQ_SIM_SEED", 0x5EED_D00D);
    let scratch = scratch();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    disk.record_crash_points(true);
    let mut ledger = Ledger::default();
    let error = power::workload(&queue_dir, durability, &disk, &mut ledger);
    assert!(error.is_none(), "the workload failed without a fault: {error:?}");
    disk.crash_point_now();
    disk.record_crash_points(false);
    assert_eq!(disk.problems(), Vec::<String>::new(), "the simulation lost track of a file");
    let trace = disk.trace();
    let created = |suffix: &str| {
        trace.iter().filter(|op| op.kind == OpKind::Create && op.path.to_string_lossy().ends_with(suffix)).count()
    };
    assert!(created(".seg") >= 6, "the workload must roll segments in both partitions");
    assert!(created("00000000000000000002.ckpt") >= 1, "the workload must hand a slot over");
    let points = disk.crash_points();
    let mut tally = Tally { crash_points: points.len(), ..Tally::default() };
    tally.durable_acks = ledger.acks.values().filter(|a| a.durable_at.is_some()).count();
    for (i, &k) in points.iter().enumerate() {
        let before = trace.get(k as usize).map_or("the end".to_string(), |op| format!("{op:?}"));
        if disk.pending_entries(i) >= 2 {
            tally.points_with_entries_to_lose += 1;
        }
        for mode in CrashMode::ALL {
            for s in 0..seeds {
                let seed = mix(mix(base, i as u64), mix(mode as u64, s));
                let image = fresh(&scratch.path().join("image"));
                disk.crash_image(i, mode, seed, &image).unwrap();
                let context = format!("{durability:?}: crash point {i} (before {before}), {mode:?}, seed {seed:#x}");
                count_unsealed(&image.join("q"), &mut tally);
                if let Err(e) = power::check(&image.join("q"), durability, &ledger, k) {
                    // Keep the image for a look (the reopen may have changed it).
                    let kept = std::env::temp_dir().join("durq-power-loss-failure");
                    let _ = std::fs::remove_dir_all(&kept);
                    disk.crash_image(i, mode, seed, &kept).unwrap();
                    panic!("{context}: {e} (image kept in {})", kept.display());
                }
                tally.images += 1;
                if mode == CrashMode::LoseEntries {
                    tally.lose_entries_images += 1;
                }
                if seed.is_multiple_of(RECOVERY_SAMPLE) {
                    let image = fresh(&scratch.path().join("image"));
                    disk.crash_image(i, mode, seed, &image).unwrap();
                    check_recovery_is_idempotent(scratch.path(), &image, durability, &ledger, k, seed, &mut tally)
                        .unwrap_or_else(|e| panic!("{context}: {e}"));
                }
            }
        }
    }
    eprintln!("{durability:?}: {tally:?}");
    assert!(tally.points_with_entries_to_lose > 0, "no crash point where LoseEntries can reorder: {tally:?}");
    tally
}

#[test]
fn sync_sends_survive_power_loss_at_every_operation() {
    let t = enumerate(Durability::Sync);
    assert!(t.crash_points > 150 && t.durable_acks > 100 && t.images > 2000, "{t:?}");
    assert!(t.creations_cut_short > 0, "rolls cut short, for recovery to complete: {t:?}");
}

#[test]
fn flushed_buffered_sends_survive_power_loss_at_every_operation() {
    let t = enumerate(Durability::Buffered);
    assert!(t.crash_points > 150 && t.durable_acks > 100 && t.images > 2000, "{t:?}");
    assert!(t.unsealed_cut > 0 && t.unsealed > t.unsealed_cut, "cuts and kept segments before the last: {t:?}");
    assert!(t.creations_cut_short > 0, "rolls cut short, for recovery to complete: {t:?}");
}

#[test]
fn flushed_interval_sends_survive_power_loss_at_every_operation() {
    // An interval longer than the workload: the flusher thread never runs.
    // (The sealer thread does, so crash points can shift a little between
    // runs, as under `Buffered`.)
    let t = enumerate(Durability::Interval(std::time::Duration::from_secs(3600)));
    assert!(t.crash_points > 150 && t.durable_acks > 100 && t.images > 2000, "{t:?}");
    assert!(t.unsealed_cut > 0 && t.unsealed > t.unsealed_cut, "cuts and kept segments before the last: {t:?}");
    assert!(t.creations_cut_short > 0, "rolls cut short, for recovery to complete: {t:?}");
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![3 => Just(Outcome::Ok), 1 => Just(Outcome::Err), 1 => Just(Outcome::Panic)];
    prop_oneof![
        6 => Just(Step::Send),
        2 => any::<u8>().prop_map(Step::SendBatch),
        2 => Just(Step::Flush),
        2 => any::<u8>().prop_map(Step::Join),
        1 => any::<u8>().prop_map(Step::Leave),
        5 => (any::<u8>(), outcome).prop_map(|(w, o)| Step::Process(w, o)),
        1 => Just(Step::Reopen),
        2 => (any::<u8>(), any::<u64>()).prop_map(|(m, s)| Step::PowerCut(m, s)),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Sync),
        Just(Durability::Buffered),
        Just(Durability::Interval(std::time::Duration::from_secs(3600))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_u64("PROPTEST_CASES", 64) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_with_power_cuts_keep_every_promise(durability in durability(), steps in vec(step(), 1..40)) {
        common::quiet_injected_panics(power::INJECTED_PANIC);
        let scratch = scratch();
        power::run_steps(scratch.path(), durability, &steps);
    }
}

/// What a consumer under `commit(Interval)` or `commit(Buffered)` was
/// told, per partition: positions stored (`process` returned `Ok`) and
/// positions known synced (a `flush`, a hand-over, a drop), each with the
/// operation count it came at.
#[derive(Debug, Default)]
struct CommitLedger {
    stored: Vec<(u32, u64, u64)>,
    synced: Vec<(u32, u64, u64)>,
}

impl CommitLedger {
    /// The furthest position of partition `p` in `list` at or before
    /// operation `k`.
    fn furthest(list: &[(u32, u64, u64)], p: u32, k: u64) -> u64 {
        list.iter().filter(|&&(q, _, at)| q == p && at <= k).map(|&(_, next, _)| next).max().unwrap_or(0)
    }

    /// Every position stored so far in partition `p` is synced as of now.
    fn all_synced(&mut self, p: u32, now: u64) {
        let next = Self::furthest(&self.stored, p, u64::MAX);
        self.synced.push((p, next, now));
    }
}

/// Processes one batch with `consumer`, records the stored position, and
/// records a crash point right after it: an unsynced commit is a store
/// into a mapping, not an operation, so no other crash point sees the
/// state just after it.
fn process_and_mark(consumer: &mut durq::Consumer, disk: &SimDisk, ledger: &mut CommitLedger) {
    let mut end = None;
    consumer
        .process_timeout(std::time::Duration::from_millis(2), |batch| {
            let last = batch.last().expect("never empty").position();
            end = Some((last.partition, last.offset + 1));
            Ok::<(), std::io::Error>(())
        })
        .expect("process");
    if let Some((p, next)) = end {
        ledger.stored.push((p, next, disk.ops()));
    }
    disk.crash_point_now();
}

/// The workload for the consumer-side modes: a queue of two partitions
/// under `queue_durability` filled first (under `Buffered`, never flushed:
/// only the consumers' commits make the log durable), then a member under
/// `commit` processing
/// batches of 3, a `flush`, a second member joining (one slot handed
/// over), the first leaving (the other handed over), and the second
/// processing the rest and leaving. Returns the ledger.
fn commit_workload(queue_dir: &Path, queue_durability: Durability, commit: Durability, disk: &SimDisk) -> CommitLedger {
    let queue = durq::Queue::open_with(queue_dir, power::options(queue_durability)).expect("open");
    let producer = queue.producer();
    for seq in 0..60 {
        producer.send(power::payload(seq)).expect("send");
    }
    let options = || power::consumer_options(3).commit(commit);
    let mut ledger = CommitLedger::default();
    let mut a = queue.consumer_with(power::GROUP, options()).expect("join");
    for _ in 0..6 {
        process_and_mark(&mut a, disk, &mut ledger);
    }
    a.flush().expect("flush");
    for p in 0..2 {
        ledger.all_synced(p, disk.ops());
    }
    for _ in 0..4 {
        process_and_mark(&mut a, disk, &mut ledger);
    }
    let mut b = queue.consumer_with(power::GROUP, options()).expect("join");
    // The first member gives a slot back at its next rebalance, after
    // syncing it; the second takes it at its own.
    while a.held_partitions().len() == 2 {
        process_and_mark(&mut a, disk, &mut ledger);
    }
    let given = (0..2).find(|p| !a.held_partitions().contains(p)).expect("a slot was given back");
    ledger.all_synced(given, disk.ops());
    disk.crash_point_now();
    for _ in 0..4 {
        process_and_mark(&mut a, disk, &mut ledger);
        process_and_mark(&mut b, disk, &mut ledger);
    }
    drop(a);
    for p in 0..2 {
        if !b.held_partitions().contains(&p) {
            ledger.all_synced(p, disk.ops());
        }
    }
    disk.crash_point_now();
    for _ in 0..20 {
        process_and_mark(&mut b, disk, &mut ledger);
    }
    drop(b);
    for p in 0..2 {
        ledger.all_synced(p, disk.ops());
    }
    drop((producer, queue));
    ledger
}

/// Power loss at every operation, and right after every commit, of a group
/// whose members commit under `commit`: the queue reopens (recovery takes a
/// checkpoint as evidence that the log reached it: a commit syncs the log
/// before it stores the position), and the group resumes at or after the
/// last position known synced, and never past one that was processed.
fn enumerate_commits(queue_durability: Durability, commit: Durability) -> u64 {
    let seeds = env_u64("DURQ_SIM_SEEDS", 4);
    let base = env_u64("DURQ_SIM_SEED", 0x5EED_D00D);
    let scratch = scratch();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    disk.record_crash_points(true);
    let ledger = commit_workload(&queue_dir, queue_durability, commit, &disk);
    disk.crash_point_now();
    disk.record_crash_points(false);
    assert_eq!(disk.problems(), Vec::<String>::new(), "the simulation lost track of a file");
    let (mut images, mut behind_stored) = (0u64, 0u64);
    for (i, &k) in disk.crash_points().iter().enumerate() {
        for mode in CrashMode::ALL {
            for s in 0..seeds {
                let seed = mix(mix(base, i as u64), mix(mode as u64, s));
                let image = fresh(&scratch.path().join("image"));
                disk.crash_image(i, mode, seed, &image).unwrap();
                let context = format!("{commit:?}: crash point {i} (before op {k}), {mode:?}, seed {seed:#x}");
                let queue = durq::Queue::open_with(image.join("q"), power::options(queue_durability))
                    .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
                let stat = queue.stat().unwrap_or_else(|e| panic!("{context}: stat: {e}"));
                let committed = stat.groups.iter().find(|g| g.name == power::GROUP).map(|g| g.committed.clone());
                for p in 0..2u32 {
                    let have = match &committed {
                        Some(c) => c[p as usize].unwrap_or_else(|| panic!("{context}: partition {p} damaged")),
                        None => 0,
                    };
                    let synced = CommitLedger::furthest(&ledger.synced, p, k);
                    let stored = CommitLedger::furthest(&ledger.stored, p, k);
                    assert!(
                        synced <= have && have <= stored,
                        "{context}: partition {p} resumes at {have}, but {synced} was synced and {stored} processed"
                    );
                    let end = queue.offsets(p).unwrap_or_else(|e| panic!("{context}: offsets: {e}")).1;
                    assert!(have <= end, "{context}: partition {p} resumes at {have}, past the end of the log {end}");
                    behind_stored += u64::from(have < stored);
                }
                images += 1;
            }
        }
    }
    eprintln!("{commit:?}: {images} images, {behind_stored} partitions resumed before the last stored commit");
    assert!(behind_stored > 0, "some power cuts must take unsynced commits back");
    images
}

#[test]
fn interval_commits_resume_between_the_last_synced_and_the_last_processed_position_after_power_loss() {
    // An interval longer than the test: only flush, hand-over and drop
    // sync, so the ledger knows when. (tests/it/commit_modes.rs shows the
    // background sync at work.)
    let images = enumerate_commits(Durability::Sync, Durability::Interval(std::time::Duration::from_secs(3600)));
    assert!(images > 1000, "{images}");
}

#[test]
fn interval_commits_on_a_buffered_queue_never_point_past_the_log_a_power_cut_keeps() {
    // The records are durable only through the commits' syncs of the log.
    let images = enumerate_commits(Durability::Buffered, Durability::Interval(std::time::Duration::from_secs(3600)));
    assert!(images > 1000, "{images}");
}

#[test]
fn buffered_commits_resume_between_the_last_synced_and_the_last_processed_position_after_power_loss() {
    let images = enumerate_commits(Durability::Sync, Durability::Buffered);
    assert!(images > 1000, "{images}");
}

/// What [`takeover_workload`] promised, with the operation counts it came
/// at.
struct Takeover {
    /// Member A's position known synced (its `flush`) before it hung.
    a_synced: u64,
    /// Member A's last stored position (`commit(Interval)`, never synced by
    /// A): what B carries over.
    a_stored: u64,
    /// Member B's first commit (`commit(Sync)`) and the operation count when
    /// `process` returned it.
    b_committed: (u64, u64),
    /// The operations of B's join, the take of the slot included.
    take: std::ops::Range<u64>,
}

/// A takeover on the simulated disk, recording a crash point before every
/// operation from B's join to B's first commit: member A (one partition,
/// `commit(Interval)` with a background sync that never runs) processes
/// 0..2, flushes, stores 2..4, and stalls in its batch 4..6 past its lease
/// timeout; member B joins, takes the slot over from the hung A at epoch 2
/// (carrying over A's stored, unsynced position 4), and processes and
/// commits one batch under `commit(Sync)`.
fn takeover_workload(queue_dir: &Path, disk: &SimDisk) -> Takeover {
    use std::time::Duration;
    let lease_timeout = Duration::from_millis(100);
    let options = |commit| {
        power::consumer_options(2)
            .lease_timeout(lease_timeout)
            .rebalance_interval(Duration::from_millis(10))
            .commit(commit)
    };
    let queue = durq::Queue::open_with(queue_dir, power::options(Durability::Sync).partitions(1)).unwrap();
    queue.producer().send_batch((0..20).map(power::payload)).unwrap();
    let mut a = queue.consumer_with(power::GROUP, options(Durability::Interval(Duration::from_secs(3600)))).unwrap();
    let process = |c: &mut durq::Consumer| {
        let mut end = 0;
        let n = c
            .process_timeout(Duration::from_secs(5), |batch| {
                end = batch.last().expect("never empty").position().offset + 1;
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        assert!(n > 0, "a record was ready");
        end
    };
    assert_eq!(process(&mut a), 2);
    a.flush().unwrap();
    assert_eq!(process(&mut a), 4);
    let mut taken = None;
    a.process(|_| {
        // No heartbeat runs inside the closure: past its lease timeout A
        // counts as hung, and B takes its slot over.
        std::thread::sleep(lease_timeout * 3);
        disk.record_crash_points(true);
        let from = disk.ops();
        let mut b = queue.consumer_with(power::GROUP, options(Durability::Sync)).unwrap();
        assert_eq!(b.held_partitions(), vec![0], "B took the hung member's slot");
        let take = from..disk.ops();
        let committed = process(&mut b);
        taken = Some((b, take, (committed, disk.ops())));
        disk.crash_point_now();
        disk.record_crash_points(false);
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    let (b, take, b_committed) = taken.unwrap();
    assert_eq!(disk.problems(), Vec::<String>::new(), "the simulation lost track of a file");
    // (A's drop syncs its stores into epoch 1's file, unlinked by B: the
    // simulation, which knows only the durable image of an unlinked file,
    // reports that as a problem.)
    drop((a, b, queue));
    Takeover { a_synced: 2, a_stored: 4, b_committed, take }
}

#[test]
fn a_take_syncs_the_claimed_checkpoint_and_its_directory_and_nothing_else() {
    // The lease is written after both, unsynced: it only says who holds
    // the slot, which a power cut ends anyway.
    let scratch = scratch();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    let t = takeover_workload(&queue_dir, &disk);
    let claimed = "00000000000000000002.ckpt".to_string();
    let trace = disk.trace();
    let claim = trace
        .iter()
        .find(|op| t.take.contains(&op.index) && op.kind == OpKind::Create && op.path.ends_with(&claimed))
        .expect("B claimed epoch 2")
        .index;
    let syncs: Vec<(OpKind, String)> = trace
        .into_iter()
        .filter(|op| (claim..t.take.end).contains(&op.index))
        .filter(|op| matches!(op.kind, OpKind::SyncFile | OpKind::SyncRange | OpKind::SyncDir))
        .map(|op| (op.kind, op.path.file_name().unwrap().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(syncs, vec![(OpKind::SyncFile, claimed), (OpKind::SyncDir, "slot-0000".to_string())]);
}

#[test]
fn a_takeover_survives_power_loss_at_every_operation_of_the_take() {
    // Whatever a power cut during the take leaves, the group reopens
    // without an error, at or after what A synced and never past what B
    // processed; once B's commit is acknowledged, at it.
    let seeds = env_u64("DURQ_SIM_SEEDS", 4);
    let base = env_u64("DURQ_SIM_SEED", 0x5EED_D00D);
    let scratch = scratch();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    let t = takeover_workload(&queue_dir, &disk);
    let (mut images, mut carried, mut behind) = (0u64, 0u64, 0u64);
    for (i, &k) in disk.crash_points().iter().enumerate() {
        for mode in CrashMode::ALL {
            for s in 0..seeds {
                let seed = mix(mix(base, i as u64), mix(mode as u64, s));
                let image = fresh(&scratch.path().join("image"));
                disk.crash_image(i, mode, seed, &image).unwrap();
                let context = format!("crash point {i} (before op {k}), {mode:?}, seed {seed:#x}");
                let queue = durq::Queue::open_with(image.join("q"), power::options(Durability::Sync).partitions(1))
                    .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
                let stat = queue.stat().unwrap_or_else(|e| panic!("{context}: stat: {e}"));
                let group = stat.groups.iter().find(|g| g.name == power::GROUP).expect("the group survives");
                let have = group.committed[0].unwrap_or_else(|| panic!("{context}: the checkpoint is damaged"));
                let (b_commit, acked_at) = t.b_committed;
                // Never past what B processed (its commit may be durable a
                // few operations before `process` returns it).
                let floor = if acked_at <= k { b_commit } else { t.a_synced };
                let ceiling = b_commit;
                assert!(
                    floor <= have && have <= ceiling,
                    "{context}: the group resumes at {have}, outside {floor}..={ceiling}"
                );
                carried += u64::from(have == t.a_stored);
                behind += u64::from(have < t.a_stored);
                // The next member takes the slot from there, and processes.
                let mut c = queue.consumer_with(power::GROUP, power::consumer_options(2)).unwrap();
                let mut first = None;
                c.process_timeout(std::time::Duration::from_secs(5), |batch| {
                    first = Some(batch[0].position().offset);
                    Ok::<(), std::io::Error>(())
                })
                .unwrap_or_else(|e| panic!("{context}: the next member: {e}"));
                assert_eq!(first, Some(have), "{context}: the next member resumes where the group is");
                images += 1;
            }
        }
    }
    eprintln!("{images} images: {carried} at A's carried-over position, {behind} behind it");
    assert!(images > 100 && carried > 0 && behind > 0, "{images} images, {carried} carried over, {behind} behind");
}

/// A payload of `len` bytes that names `seq` in every byte, so a byte a
/// sync missed cannot pass for another record's.
fn patterned(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

/// What a sync makes durable is exactly what the kernel's call does
/// (src/storage/sim.rs): a power cut that keeps nothing unsynced
/// (`DropPending`) right after each acknowledgement must still hold every
/// byte acknowledged so far, whether it reached the page cache through a
/// mapping (records stored into a segment, whose frames straddle page
/// boundaries and a segment roll) or through `pwrite` (the synced copies of
/// a checkpoint under `commit(Sync)`). A sync whose range missed one byte
/// of either fails here: a record cut or refused at reopen, or a group
/// resuming before its last commit.
#[test]
fn a_power_cut_after_each_acknowledgement_keeps_every_byte_it_acknowledged() {
    const SENDS: u64 = 40;
    const COMMITS: u64 = 24;
    let scratch = scratch();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    let options = || power::options(Durability::Sync).partitions(1);
    let len_of = |seq: u64| (seq as usize * 1237) % 5000 + 1;
    // (crash point, records acknowledged, position committed)
    let mut points = Vec::new();
    {
        let queue = durq::Queue::open_with(&queue_dir, options()).expect("open");
        let producer = queue.producer();
        for seq in 0..SENDS {
            producer.send(patterned(seq, len_of(seq))).expect("send");
            points.push((disk.crash_point_now(), seq + 1, 0));
        }
        let mut consumer = queue.consumer_with(power::GROUP, power::consumer_options(1)).expect("join");
        for committed in 1..=COMMITS {
            assert_eq!(consumer.process(|_| Ok::<(), std::io::Error>(())).expect("process"), 1);
            points.push((disk.crash_point_now(), SENDS, committed));
        }
    }
    assert_eq!(disk.problems(), Vec::<String>::new(), "the simulation lost track of a file");
    for (point, acked, committed) in points {
        let image = fresh(&scratch.path().join("image"));
        disk.crash_image(point, CrashMode::DropPending, 0, &image).unwrap();
        let context = format!("power cut after {acked} sends and {committed} commits (crash point {point})");
        let queue =
            durq::Queue::open_with(image.join("q"), options()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
        let mut reader = queue.reader(durq::ResetTo::Earliest).unwrap_or_else(|e| panic!("{context}: reader: {e}"));
        let records = reader.read(SENDS as usize + 1).unwrap_or_else(|e| panic!("{context}: read: {e}"));
        assert_eq!(records.len() as u64, acked, "{context}: records kept");
        for (seq, record) in (0..).zip(&records) {
            assert!(record.payload == patterned(seq, len_of(seq)), "{context}: record {seq} differs");
        }
        let stat = queue.stat().unwrap_or_else(|e| panic!("{context}: stat: {e}"));
        let resumes = stat.groups.iter().find(|g| g.name == power::GROUP).map_or(Some(0), |g| g.committed[0]);
        assert_eq!(resumes, Some(committed), "{context}: the group resumes elsewhere");
    }
}

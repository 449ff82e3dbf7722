//! Retention limits (`Options::retention_max_bytes`, `retention_max_age`):
//! a limit removes the oldest segments even when a lagging group has not
//! read them, records the group's loss durably before anything goes
//! (`durq stat` shows it, and it survives reopening), and the group resumes
//! at the first kept record and receives everything after it. Without a
//! limit nothing changes (tests/it/retention.rs, tests/it/groups.rs). A SIGKILL
//! or a power cut at any moment of a limited pass never leaves a group's
//! checkpoint pointing into removed records without the loss recorded.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::procs::{self, Proc, Rng, say};
use common::{TestQueue, small};
use durq::internals::retention::skipped;
use durq::stat::RetentionSkips;
use durq::{Consumer, ConsumerOptions, Durability, Error, Options, Queue, Retention};

const SEGMENT: u64 = 64 << 10;

fn quick() -> ConsumerOptions {
    ConsumerOptions::default().rebalance_interval(Duration::from_millis(5)).max_batch(1000)
}

/// Sends `n` records of 1,000 bytes (about 64 fill a 64 KiB segment), each
/// starting with its number from `from` on.
fn send(queue: &Queue, from: u64, n: u64) {
    let producer = queue.producer();
    for i in from..from + n {
        let mut payload = [7u8; 1000];
        payload[..8].copy_from_slice(&i.to_le_bytes());
        producer.send(payload).unwrap();
    }
}

/// Processes everything visible; returns each record's offset and number.
fn drain(consumer: &mut Consumer) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    loop {
        let n = consumer
            .process_timeout(Duration::from_millis(50), |batch| {
                for m in batch {
                    got.push((m.position().offset, u64::from_le_bytes(m.payload()[..8].try_into().unwrap())));
                }
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        if n == 0 {
            return got;
        }
    }
}

/// Processes exactly `n` records and leaves: the group lags from there.
fn process_then_leave(queue: &Queue, group: &str, n: usize) {
    let mut c = queue.consumer_with(group, quick().max_batch(n)).unwrap();
    assert_eq!(c.process_timeout(Duration::from_secs(5), |_| Ok::<(), std::io::Error>(())).unwrap(), n);
}

/// The group's skips in partition 0, as `stat` reports them.
fn skips(dir: &Path, group: &str) -> RetentionSkips {
    let stat = durq::stat::stat(dir).unwrap();
    let g = stat.groups.iter().find(|g| g.name == group).unwrap();
    g.slots[0].skipped.clone().unwrap()
}

/// Checks what a group that processed `processed` records got after a
/// limit passed it: the skip from there to `first` is recorded, and
/// draining delivers every record from `first` on, in order.
fn check_resumes_at_first_kept(t: &TestQueue, group: &str, processed: u64, total: u64) {
    let (first, next) = t.queue.offsets(0).unwrap();
    assert!(first > processed, "the limit removed records {group} had not processed (first offset {first})");
    let s = skips(&t.path(), group);
    assert_eq!((s.count, s.last_from, s.last_to), (first - processed, processed, first), "{group}: {s:?}");
    assert!(s.last_ms > 0);
    let mut c = t.queue.consumer_with(group, quick()).unwrap();
    let got = drain(&mut c);
    assert_eq!(got.first().map(|&(offset, _)| offset), Some(first), "{group} resumes at the first kept record");
    assert_eq!(got, (first..next).map(|o| (o, o)).collect::<Vec<_>>(), "{group} receives everything after it");
    assert_eq!(next, total);
    assert_eq!(c.committed().unwrap(), [next]);
}

#[test]
fn a_byte_limit_removes_what_a_lagging_group_has_not_read_records_the_skip_and_the_group_resumes_at_the_first_kept() {
    let t = TestQueue::new(small().retention_max_bytes(4 * SEGMENT));
    send(&t.queue, 0, 10);
    process_then_leave(&t.queue, "idle", 10);
    // A member that holds its slot while the limit passes it, mid-segment.
    let mut live = t.queue.consumer_with("live", quick().max_batch(5)).unwrap();
    assert_eq!(live.process(|_| Ok::<(), std::io::Error>(())).unwrap(), 5);
    send(&t.queue, 10, 590);
    assert_eq!(common::segments(&t.path(), 0).len(), 4, "the limit keeps 4 segments of 64 KiB");
    // The holder reads on from the first kept record, not from removed ones.
    let (first, next) = t.queue.offsets(0).unwrap();
    let got = drain(&mut live);
    assert_eq!(got.first().map(|&(o, _)| o), Some(first));
    assert_eq!(got.len() as u64, next - first);
    drop(live);
    let s = skips(&t.path(), "live");
    assert_eq!((s.count, s.last_from, s.last_to), (first - 5, 5, first));
    check_resumes_at_first_kept(&t, "idle", 10, 600);
}

#[test]
fn a_recorded_skip_survives_reopening_and_the_idle_group_resumes_at_the_first_kept_record() {
    let t = TestQueue::new(small().retention_max_bytes(3 * SEGMENT));
    send(&t.queue, 0, 10);
    process_then_leave(&t.queue, "idle", 10);
    send(&t.queue, 10, 490);
    assert_eq!(common::segments(&t.path(), 0).len(), 3);
    let before = skips(&t.path(), "idle");
    let path = t.path();
    let TestQueue { dir, queue } = t;
    drop(queue);
    let t = TestQueue { queue: Queue::open(&path).unwrap(), dir };
    assert_eq!(skips(&t.path(), "idle"), before, "the skip record survives reopening");
    assert_eq!(t.queue.config().retention.max_bytes, Some(3 * SEGMENT), "the limit is stored with the queue");
    check_resumes_at_first_kept(&t, "idle", 10, 500);
}

#[test]
fn an_age_limit_removes_segments_older_than_it_and_keeps_every_newer_record() {
    // Buffered: the 200 sends after the pause take a few ms, far less than
    // the limit, so every one of them is still younger than it at the pass.
    let age = Duration::from_secs(2);
    let t = TestQueue::new(small().durability(Durability::Buffered).retention_max_age(age));
    send(&t.queue, 0, 10);
    process_then_leave(&t.queue, "idle", 10);
    send(&t.queue, 10, 290);
    t.queue.reclaim().unwrap();
    assert_eq!(t.queue.offsets(0).unwrap().0, 0, "nothing is old yet");
    std::thread::sleep(age + Duration::from_millis(200));
    send(&t.queue, 300, 200);
    t.queue.reclaim().unwrap();
    let (first, _) = t.queue.offsets(0).unwrap();
    assert!(first <= 300, "every record written within the limit is kept (first offset {first})");
    check_resumes_at_first_kept(&t, "idle", 10, 500);
}

#[test]
fn without_a_limit_a_lagging_group_keeps_everything_and_nothing_is_recorded() {
    let t = TestQueue::new(small());
    send(&t.queue, 0, 10);
    process_then_leave(&t.queue, "idle", 10);
    send(&t.queue, 10, 490);
    t.queue.reclaim().unwrap();
    assert_eq!(t.queue.offsets(0).unwrap(), (0, 500));
    assert_eq!(t.queue.config().retention, Retention::UNLIMITED);
    assert_eq!(skips(&t.path(), "idle"), RetentionSkips::default());
    assert!(!t.path().join("groups/idle").join(skipped::SKIPPED_FILE).exists(), "no file until a skip");
}

#[test]
fn a_limit_passing_only_processed_records_records_no_skip() {
    let t = TestQueue::new(small().retention_max_bytes(3 * SEGMENT));
    let mut g = t.queue.consumer_with("g", quick()).unwrap();
    for k in 0..10 {
        send(&t.queue, k * 50, 50);
        drain(&mut g);
    }
    assert!(t.queue.offsets(0).unwrap().0 > 0);
    assert_eq!(skips(&t.path(), "g"), RetentionSkips::default());
}

#[test]
fn limits_change_on_a_closed_queue_and_conflict_like_other_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let queue = Queue::open_with(&path, small()).unwrap();
    let limits = Retention { max_bytes: Some(5 * SEGMENT), max_age: Some(Duration::from_secs(3600)) };
    assert!(matches!(Queue::change_retention(&path, limits), Err(Error::QueueBusy { .. })));
    drop(queue);
    assert_eq!(Queue::change_retention(&path, limits).unwrap().retention, limits);
    assert_eq!(Queue::open(&path).unwrap().config().retention, limits);
    let asked = Options::default().retention_max_bytes(SEGMENT);
    assert!(matches!(
        Queue::open_with(&path, asked),
        Err(Error::OptionsConflict { option: "retention_max_bytes", .. })
    ));
    let zero = Retention { max_bytes: Some(0), ..limits };
    assert!(matches!(Queue::change_retention(&path, zero), Err(Error::InvalidOption { .. })));
    assert_eq!(Queue::change_retention(&path, Retention::UNLIMITED).unwrap().retention, Retention::UNLIMITED);
}

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("producer") => run_producer(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// Sends records to `DURQ_DIR` for ever, running a retention pass after
/// every roll, and says how far it got now and then.
fn run_producer() -> ! {
    let queue = Queue::open_existing(procs::var("DURQ_DIR")).unwrap();
    let from = queue.offsets(0).unwrap().1;
    say("ready");
    for i in (from..).step_by(20) {
        send(&queue, i, 20);
        if i % 200 == 0 {
            queue.reclaim().unwrap();
        }
    }
    unreachable!()
}

/// The skip invariant: a group whose checkpoint lies below the first
/// retained record has the loss of exactly the records from its checkpoint
/// on recorded (perhaps more: a pass that recorded, then died before
/// removing, errs on the loud side).
fn check_skip_covers_checkpoint(dir: &Path, group: &str, committed: u64, context: &str) {
    let queue = Queue::open(dir).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    let (first, _) = queue.offsets(0).unwrap();
    let s = skipped::read(&dir.join("groups").join(group), 1).unwrap_or_else(|e| panic!("{context}: {e}")).entries[0];
    if first > committed {
        assert!(s.last_to >= first, "{context}: first offset {first}, checkpoint {committed}, skip {s:?}");
        assert_eq!((s.last_from, s.count), (committed, s.last_to - committed), "{context}: {s:?}");
    } else {
        assert!(s.count == 0 || s.last_from == committed, "{context}: {s:?}");
    }
}

#[test]
fn a_producer_sigkilled_during_limited_passes_never_leaves_a_checkpoint_in_removed_data_unrecorded() {
    let mut rng = Rng::new(procs::seed(0x51C41));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    {
        let queue = Queue::open_with(&path, small().retention_max_bytes(2 * SEGMENT)).unwrap();
        send(&queue, 0, 7);
        process_then_leave(&queue, "idle", 7);
    }
    let mut removed_some = false;
    for round in 0..8 {
        let mut child: Proc = procs::spawn(
            module_path!(),
            &format!("producer#{round}"),
            "producer",
            &[("DURQ_DIR", path.display().to_string())],
        );
        child.wait_line("ready");
        std::thread::sleep(rng.millis(150));
        child.sigkill();
        child.wait_killed();
        check_skip_covers_checkpoint(&path, "idle", 7, &format!("after SIGKILL #{round}"));
        removed_some |= Queue::open(&path).unwrap().offsets(0).unwrap().0 > 7;
    }
    assert!(removed_some, "the limit must have removed records the group had not read");
    let t = TestQueue { queue: Queue::open(&path).unwrap(), dir };
    let (first, next) = t.queue.offsets(0).unwrap();
    let mut c = t.queue.consumer_with("idle", quick()).unwrap();
    let got = drain(&mut c);
    assert_eq!(got.first().map(|&(o, _)| o), Some(first));
    assert_eq!(got.len() as u64, next - first);
}

#[test]
fn a_power_cut_at_any_operation_of_a_limited_pass_never_leaves_a_checkpoint_in_removed_data_unrecorded() {
    use common::power;
    use durq::internals::sim::{CrashMode, OpKind};
    let scratch = tempfile::tempdir_in(power::scratch_base()).unwrap();
    let (queue_dir, disk) = power::live_disk(scratch.path());
    let options = small().retention_max_bytes(2 * SEGMENT).durability(Durability::Sync);
    {
        let queue = Queue::open_with(&queue_dir, options.clone()).unwrap();
        send(&queue, 0, 7);
        process_then_leave(&queue, "idle", 7);
        disk.record_crash_points(true);
        // Rolls, the later ones each with a limited pass that records a
        // skip and removes.
        send(&queue, 7, 300);
        queue.reclaim().unwrap();
    }
    disk.crash_point_now();
    disk.record_crash_points(false);
    assert_eq!(disk.problems(), Vec::<String>::new());
    let removals = disk
        .trace()
        .iter()
        .filter(|op| op.kind == OpKind::Remove && op.path.to_string_lossy().ends_with(".seg"))
        .count();
    assert!(removals > 0);
    let points = disk.crash_points();
    let mut skipped_images = 0;
    for i in 0..points.len() {
        for mode in CrashMode::ALL {
            let image = scratch.path().join("image");
            let _ = std::fs::remove_dir_all(&image);
            disk.crash_image(i, mode, 0x5EED ^ i as u64, &image).unwrap();
            let q = image.join("q");
            check_skip_covers_checkpoint(&q, "idle", 7, &format!("crash point {i}, {mode:?}"));
            if Queue::open(&q).unwrap().offsets(0).unwrap().0 > 7 {
                skipped_images += 1;
            }
        }
    }
    let images = points.len() * CrashMode::ALL.len();
    eprintln!("{} crash points, {images} images, {skipped_images} past the limit, 0 violations", points.len());
    assert!(skipped_images > 0, "some images must have lost records to the limit");
    assert!(skipped_images < images, "some images must come from before the first limited pass");
}

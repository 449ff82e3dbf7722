//! Fencing and takeover, with real `durq consume` processes.
//!
//! - A member stalled mid-batch for longer than its lease timeout is
//!   presumed hung: another member takes its slot over with a new epoch and
//!   finishes the partition; when the stalled member resumes, its commit is
//!   refused ("fenced"), the group's committed offset never goes backwards,
//!   and messages produced afterwards are all processed.
//! - A member SIGKILLed while holding a slot is replaced by a standby at
//!   once (its lock is gone), long before any lease timeout.
//! - A member that joined after another member's last scan of the group is
//!   not taken for dead by it (a takeover race; fails as of 9fd104c).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Proc};

/// Messages of the first wave: enough that the first member is still busy
/// when it is stalled.
const FIRST_WAVE: usize = 300;
const SECOND_WAVE: usize = 100;

/// Padded ids: a few fill a one-page stdout pipe, so that a member whose
/// output is not read blocks mid-batch soon.
fn id(n: usize) -> String {
    format!("m{n:06}-{}", "x".repeat(200))
}

fn produce(dir: &str, ids: std::ops::Range<usize>) {
    let input: String = ids.map(|n| id(n) + "\n").collect();
    crate::common::ok(
        &["produce", dir, "--partitions", "1", "--segment-bytes", "1048576", "--record-bytes-max", "4096"],
        &input,
    );
}

fn committed(dir: &Path) -> u64 {
    crate::common::committed(&crate::common::stat(dir), "g")[0]
}

#[test]
fn a_stalled_member_is_fenced_and_the_committed_offset_never_goes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("q");
    let dir = dir_path.to_str().unwrap();
    produce(dir, 0..FIRST_WAVE);

    // A: one message per batch, so each stdout line is one message it
    // processed. Its output is read for a while, then held back: the pipe
    // fills and A blocks inside its batch (writing the payload, before the
    // commit), where it is then stopped.
    let mut a = Proc::spawn("A", &["consume", dir, "--group", "g", "--lease-timeout", "1", "--max-batch", "1"], false);
    a.set_stdout_pipe_bytes(4096);
    assert!(a.wait_stdout(PATIENCE, |l| l.len() >= 5), "A processed nothing");
    a.hold_stdout(true);
    assert!(crate::common::wait_until(PATIENCE, || a.blocked_writing()), "A never blocked writing its output");
    a.stop();
    let stopped = Instant::now();
    let before = committed(&dir_path);
    assert!(before < FIRST_WAVE as u64, "A was stopped mid-stream (committed {before})");

    // B takes A's slot over once A's heartbeat is older than 1 s, and
    // finishes the partition.
    let mut b = Proc::spawn("B", &["consume", dir, "--group", "g", "--idle-exit", "3"], false);
    assert!(b.wait_stdout(PATIENCE, |l| !l.is_empty()), "B never took the slot over");
    let takeover = stopped.elapsed();
    assert!(
        crate::common::wait_until(PATIENCE, || committed(&dir_path) == FIRST_WAVE as u64),
        "B did not finish the partition"
    );
    let c1 = committed(&dir_path);
    eprintln!("fencing: A stopped with {before} committed; B took over after {takeover:?}; committed {c1}");
    assert_eq!(c1, FIRST_WAVE as u64);

    // A resumes: its blocked write completes, and its commit is refused.
    a.cont();
    a.hold_stdout(false);
    assert!(
        a.wait_stderr(PATIENCE, |l| l.iter().any(|l| l.contains("fenced"))),
        "A's commit after the takeover was not refused; stderr {:?}",
        a.stderr_lines()
    );
    let c2 = committed(&dir_path);
    assert!(c2 >= c1, "the committed offset went backwards: {c1} -> {c2}");

    // What each one processed: A everything up to the batch it was stalled
    // in, B from that batch on; the stalled batch (one message) twice.
    let first: Vec<String> = (0..FIRST_WAVE).map(id).collect();
    let k = before as usize + 1;
    assert!(a.wait_stdout(PATIENCE, |l| l.len() >= k), "A's stalled message never came out");
    assert!(b.wait_stdout(PATIENCE, |l| l.len() >= FIRST_WAVE + 1 - k), "B's output is short");
    let a_lines = a.lines();
    let b_lines = b.lines();
    assert_eq!(a_lines[..], first[..k], "A printed its committed messages and the stalled one, in order");
    assert_eq!(b_lines[..], first[k - 1..], "B resumed at A's stalled message and finished the partition");

    // A and B coexist; more messages are all processed (by B, which holds
    // the slot, or by A if B has already left).
    assert_eq!(a.exited(), None, "A carries on after being fenced: {:?}", a.stderr_lines());
    let b_alive = b.exited().is_none();
    produce(dir, FIRST_WAVE..FIRST_WAVE + SECOND_WAVE);
    let second: Vec<String> = (FIRST_WAVE..FIRST_WAVE + SECOND_WAVE).map(id).collect();
    let all_seen = || {
        let seen: std::collections::HashSet<String> = a.lines().into_iter().chain(b.lines()).collect();
        second.iter().all(|m| seen.contains(m))
    };
    assert!(crate::common::wait_until(PATIENCE, all_seen), "messages produced after the takeover were lost");
    assert!(
        crate::common::wait_until(PATIENCE, || committed(&dir_path) == (FIRST_WAVE + SECOND_WAVE) as u64),
        "the group did not commit the second wave"
    );
    let c3 = committed(&dir_path);
    assert!(c3 >= c2, "the committed offset went backwards: {c2} -> {c3}");

    for p in [&mut a, &mut b] {
        let status = p.terminate(PATIENCE);
        assert!(status.success(), "{} failed ({status}): {:?}", p.name, p.stderr_lines());
    }
    let a_after = &a.lines()[k..];
    let b_after = &b.lines()[b_lines.len()..];
    eprintln!(
        "fencing: second wave processed by A: {}, by B: {} (B still running when it was produced: {b_alive})",
        a_after.len(),
        b_after.len()
    );
    let mut after: Vec<&String> = a_after.iter().chain(b_after).collect();
    after.sort();
    assert_eq!(after, second.iter().collect::<Vec<_>>(), "the second wave was processed exactly once");
    let a_errors = a.stderr_lines();
    assert_eq!(a_errors.len(), 1, "A reports the fenced batch, and nothing else: {a_errors:?}");
    assert!(b.stderr_lines().is_empty(), "B: {:?}", b.stderr_lines());
    assert_eq!(committed(&dir_path), (FIRST_WAVE + SECOND_WAVE) as u64);
}

#[test]
fn a_killed_holder_is_replaced_by_a_standby_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("q");
    let dir = dir_path.to_str().unwrap();
    produce(dir, 0..1);

    // The default lease timeout (10 s): only the holder's death, seen by
    // its released lock, can explain a takeover within the deadline.
    let args = ["consume", dir, "--group", "g"];
    let mut holder = Proc::spawn("holder", &args, false);
    assert!(holder.wait_stdout(PATIENCE, |l| l.len() == 1), "the holder processed nothing");
    let mut standby = Proc::spawn("standby", &args, false);
    let members = dir_path.join("groups/g/members");
    let joined = || {
        std::fs::read_dir(&members).map_or(0, |d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".member"))).count()
        }) == 2
    };
    assert!(crate::common::wait_until(PATIENCE, joined), "the standby never joined");

    // The holder keeps its slot: the standby stands by.
    produce(dir, 1..2);
    assert!(holder.wait_stdout(PATIENCE, |l| l.len() == 2), "the holder stopped processing");
    assert!(crate::common::wait_until(PATIENCE, || committed(&dir_path) == 2), "the holder did not commit");
    assert!(standby.lines().is_empty(), "the standby processed {:?}", standby.lines());

    // The next message waits, visible, while the holder is stopped (for far
    // less than its lease timeout), so the time measured below is the
    // takeover alone: noticing the death, taking the slot, one batch.
    holder.stop();
    produce(dir, 2..3);
    holder.kill();
    let killed = Instant::now();
    let deadline = Duration::from_secs(5);
    assert!(
        standby.wait_stdout(deadline, |l| !l.is_empty()),
        "the standby did not take over within {deadline:?} of the holder's death"
    );
    eprintln!("takeover: the standby printed the next message {:?} after the holder was killed", killed.elapsed());
    assert_eq!(standby.lines(), vec![id(2)], "the standby resumed exactly after the holder's last commit");
    let status = standby.terminate(PATIENCE);
    assert!(status.success(), "standby failed ({status}): {:?}", standby.stderr_lines());
    assert_eq!(committed(&dir_path), 3);
}

/// Slots of group `g` whose lease has been written (taken at least once).
fn leases_written(dir: &Path, partitions: usize) -> usize {
    (0..partitions)
        .filter(|p| std::fs::metadata(dir.join(format!("groups/g/slot-{p:04}/lease"))).is_ok_and(|m| m.len() > 0))
        .count()
}

/// Regression test for a takeover race: a member's view of who is alive
/// (its last scan of the member files) can predate a member that joined
/// since; a slot whose lease names that newcomer must still not be taken,
/// because the newcomer's member file is locked and its heartbeat fresh
/// (alive, by the protocol's own definition in `group/slot.rs`).
///
/// Y joins an empty group and takes the slots one by one; it is stopped
/// half-way through (well within the 10 s lease timeout: it stays alive).
/// N joins, takes its share of the slots Y has not reached, and blocks
/// mid-batch (its stdout is held back). Y resumes its loop with the view
/// it had before N joined. Nobody died and nobody hung, so nobody may be
/// fenced.
#[test]
fn a_member_that_joined_after_anothers_scan_is_not_taken_for_dead() {
    const P: usize = 64;
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("q");
    let dir = dir_path.to_str().unwrap();
    // One message per partition (each acknowledged before the next is
    // sent, so each is its own batch and goes to the next partition); each
    // bigger than a one-page pipe.
    let p = P.to_string();
    let mut producer = Proc::spawn(
        "producer",
        &["produce", dir, "--partitions", &p, "--segment-bytes", "1048576", "--record-bytes-max", "16384"],
        true,
    );
    let mut stdin = producer.take_stdin();
    let big = |n: usize| format!("b{n:03}-{}", "x".repeat(6000));
    for n in 0..P {
        use std::io::Write;
        stdin.write_all(format!("{}\n", big(n)).as_bytes()).unwrap();
        assert!(producer.wait_stdout(PATIENCE, |l| l.len() > n), "no acknowledgement");
    }
    drop(stdin);
    producer.close_stdin();
    assert!(producer.wait(PATIENCE).success());

    let args = ["consume", dir, "--group", "g"];
    let mut y = Proc::spawn("Y", &args, false);
    // Polled tightly: on a file system with cheap syncs Y's loop is short.
    let deadline = Instant::now() + PATIENCE;
    while leases_written(&dir_path, P) < 4 {
        assert!(Instant::now() < deadline, "Y took no slot");
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = Instant::now();
    y.stop();
    let taken_by_y = leases_written(&dir_path, P);
    eprintln!("race: Y stopped after taking {taken_by_y} of {P} slots");
    assert!(taken_by_y < P / 2, "Y took its slots too fast to be stopped half-way ({taken_by_y})");

    let mut n = Proc::spawn("N", &args, false);
    n.set_stdout_pipe_bytes(4096);
    n.hold_stdout(true);
    assert!(crate::common::wait_until(PATIENCE, || n.blocked_writing()), "N never started a batch");
    eprintln!("race: N took its slots and blocked mid-batch; Y resumes after {:?} stopped", t.elapsed());
    y.cont();
    // Y finishes its rebalance and processes its first batch.
    assert!(y.wait_stdout(PATIENCE, |l| !l.is_empty()), "Y processed nothing");
    n.hold_stdout(false);
    // N's stalled batch is committed (N goes on to its next batch and
    // prints it) or refused (a line on stderr, printed before that).
    assert!(
        crate::common::wait_until(PATIENCE, || n.line_count() >= 2 || !n.stderr_lines().is_empty()),
        "N neither went on nor reported anything"
    );
    let fenced = n.wait_stderr(Duration::from_millis(300), |l| !l.is_empty());
    let n_errors = n.stderr_lines();
    for p in [&mut y, &mut n] {
        p.terminate(PATIENCE);
    }
    let seen: std::collections::HashSet<String> = y.lines().into_iter().chain(n.lines()).collect();
    eprintln!("race: Y processed {}, N {}; N's errors: {n_errors:?}", y.line_count(), n.line_count());
    assert!(
        !fenced,
        "N was fenced although it was alive (member file locked, heartbeat fresh): Y took N's slot with a \
         view of the group from before N joined; N's errors: {n_errors:?}"
    );
    assert!((0..P).all(|i| seen.contains(&big(i))), "messages were lost");
}

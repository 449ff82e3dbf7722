//! `durq stat` and `durq verify` as inspection tools, run as real processes:
//! they change nothing, need nothing but read access (checked as another
//! user, `nobody`, when the tests run as root), see a queue in use through
//! its live state, show what the next open will repair without repairing
//! it, and report damage in one place (a group's slot, a dead-letter queue,
//! the meta file, stray files) without failing for the whole queue.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{DURQ, Json, Run, durq, fails, ok, queue_dir};

/// Creates the queue at `q` with 64 KiB segments and sends `input`'s lines.
fn produce_new(q: &str, input: &str) {
    ok(&["produce", q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], input);
}

fn stat_json(q: &str) -> Json {
    Json::parse(&ok(&["stat", q, "--json"], ""))
}

fn group<'a>(stat: &'a Json, name: &str) -> &'a Json {
    stat.get("groups").arr().iter().find(|g| g.get("name").str() == name).unwrap_or_else(|| panic!("{stat:?}"))
}

/// Sends `payload` and fails it once in group `group` with max_deliveries
/// 1: it goes to the group's dead-letter queue. The group processes
/// everything else it finds.
fn dead_letter(q: &str, group: &str, payload: &[u8]) {
    let queue = durq::Queue::open_existing(q).unwrap();
    queue.producer().send_keyed("k", payload).unwrap();
    let options = durq::ConsumerOptions::default().max_deliveries(1).max_batch(1).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = queue.consumer_with(group, options).unwrap();
    loop {
        let r = consumer.process_timeout(Duration::from_millis(20), |batch| {
            if batch[0].payload() == payload {
                return Err(std::io::Error::other("cannot parse"));
            }
            Ok(())
        });
        match r {
            Ok(0) => return,
            Ok(_) | Err(durq::Error::Process(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs `durq` as a user who may only read: `nobody` when the test runs as
/// root (who could write anyway), else the test's own user, for whom
/// [`read_only`] took away write access.
fn durq_as_reader(args: &[&str]) -> Run {
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", DURQ]);
        cmd
    } else {
        Command::new(DURQ)
    };
    let out = cmd.args(args).stdin(Stdio::null()).output().expect("run durq as a reader (setpriv, from util-linux)");
    Run { status: out.status, stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// [`durq_as_reader`] that must succeed quietly; its stdout.
fn ok_as_reader(args: &[&str]) -> String {
    let run = durq_as_reader(args);
    assert!(run.status.success(), "durq {args:?} as a reader failed ({}): {}", run.status, run.stderr);
    assert_eq!(run.stderr, "", "durq {args:?}");
    String::from_utf8(run.stdout).unwrap()
}

/// Makes everything under `root` readable and nobody's to write, the test's
/// own user's included; `tmp` (its parent) becomes traversable. Write
/// access comes back when the guard is dropped, so the directory can go.
fn read_only(tmp: &Path, root: &Path) -> Writable {
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_modes(root, 0o555, 0o444);
    Writable(root.to_owned())
}

struct Writable(PathBuf);

impl Drop for Writable {
    fn drop(&mut self) {
        set_modes(&self.0, 0o755, 0o644);
    }
}

fn set_modes(dir: &Path, dir_mode: u32, file_mode: u32) {
    // A directory's children first: a directory without write access can
    // still have its children's modes changed, but not without execute.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            set_modes(&path, dir_mode, file_mode);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode)).unwrap();
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
}

/// What `snapshot` keeps of one file or directory: its mode, length,
/// modification time and, for a file, its bytes.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    len: u64,
    modified: (i64, i64),
    bytes: Option<Vec<u8>>,
}

/// Every file and directory under `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let bytes = m.is_file().then(|| std::fs::read(&path).unwrap());
            out.insert(
                path.clone(),
                Entry { mode: m.mode(), len: m.len(), modified: (m.mtime(), m.mtime_nsec()), bytes },
            );
            if m.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Paths of the runtime files (`durq.ctl`, `durq.lock`) under `root`.
fn runtime_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = snapshot(root).into_keys().collect();
    files.retain(|p| matches!(p.file_name().and_then(|n| n.to_str()), Some("durq.ctl" | "durq.lock")));
    files
}

#[test]
fn stat_as_a_user_who_may_only_read_changes_nothing_and_creates_no_lock_file() {
    let (tmp, q) = queue_dir();
    produce_new(&q, "m0\nm1\nm2\nm3\nm4\n");
    assert_eq!(ok(&["consume", &q, "--group", "g", "--limit", "2"], ""), "m0\nm1\n");
    dead_letter(&q, "d", b"poison");
    std::fs::write(Path::new(&q).join("groups/notes.txt"), "stray").unwrap();
    // As after a reboot and a restore from backup: the runtime files are
    // gone, and nothing may bring them back.
    for file in runtime_files(Path::new(&q)) {
        std::fs::remove_file(file).unwrap();
    }
    let _writable = read_only(tmp.path(), Path::new(&q));
    let before = snapshot(Path::new(&q));

    let s = Json::parse(&ok_as_reader(&["stat", &q, "--json"]));
    assert_eq!(s.get("open"), &Json::Bool(false), "{s:?}");
    assert_eq!(crate::common::next_offsets(&s), [6]);
    assert_eq!(s.get("partitions").arr()[0].get("needs_recovery"), &Json::Null);
    assert_eq!(crate::common::committed(&s, "g"), [2]);
    assert_eq!(crate::common::committed(&s, "d"), [6]);
    assert_eq!(group(&s, "d").get("dead_letters").u64(), 1, "{s:?}");
    let notes = s.get("notes").arr();
    assert_eq!(notes.len(), 1, "{s:?}");
    assert!(notes[0].str().ends_with("groups/notes.txt: not a consumer group; ignored"), "{s:?}");
    let table = ok_as_reader(&["stat", &q]);
    assert!(table.contains("; not open\n") && table.contains("group d: 0 member(s), 1 dead letter(s)\n"), "{table}");
    let report = ok_as_reader(&["verify", &q]);
    assert!(report.ends_with(": 0 problem(s), 1 note(s)\n"), "{report}");

    assert_eq!(snapshot(Path::new(&q)), before, "stat or verify changed the queue");
    assert_eq!(runtime_files(Path::new(&q)), Vec::<PathBuf>::new(), "a lock or control file was created");
}

/// A `durq consume` of `group` that keeps the queue open until killed.
fn spawn_consumer(q: &str, group: &str) -> Child {
    Command::new(DURQ)
        .args(["consume", q, "--group", group, "--idle-exit", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn stat_of_a_queue_in_use_reads_its_live_state_as_a_user_who_may_only_read() {
    let (tmp, q) = queue_dir();
    produce_new(&q, "m0\nm1\nm2\n");
    let mut consumer = spawn_consumer(&q, "live");
    let start = Instant::now();
    loop {
        let s = stat_json(&q);
        let g = s.get("groups").arr().first().map(|_| group(&s, "live"));
        if g.is_some_and(|g| {
            g.get("members").arr().iter().any(|m| m.get("liveness").str() == "alive")
                && g.get("committed") == &Json::Arr(vec![Json::Num(3.0)])
        }) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the consumer never caught up: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Readable by everybody, writable by the consumer's user only.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in snapshot(Path::new(&q)).into_keys().filter(|p| p.is_file()) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = Json::parse(&ok_as_reader(&["stat", &q, "--json"]));
    assert_eq!(s.get("open"), &Json::Bool(true), "{s:?}");
    assert_eq!(crate::common::next_offsets(&s), [3]);
    let g = group(&s, "live");
    assert_eq!(g.get("members").arr()[0].get("liveness").str(), "alive", "{s:?}");
    assert_eq!(g.get("slots").arr()[0].get("holder").str(), "alive", "{s:?}");
    assert_eq!(crate::common::committed(&s, "live"), [3]);
    // More records while it looks: the live offsets move.
    ok(&["produce", &q], "m3\n");
    assert_eq!(crate::common::next_offsets(&Json::parse(&ok_as_reader(&["stat", &q, "--json"]))), [4]);
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    let s = Json::parse(&ok_as_reader(&["stat", &q, "--json"]));
    assert_eq!(s.get("open"), &Json::Bool(false), "{s:?}");
    assert_eq!(group(&s, "live").get("members").arr()[0].get("liveness").str(), "dead", "{s:?}");
}

#[test]
fn a_torn_tail_is_shown_as_needing_recovery_and_left_as_it_is() {
    let (tmp, q) = queue_dir();
    produce_new(&q, "m0\nm1\nm2\nm3\nm4\n");
    // Five frames of 32 + 2 bytes, each padded to 40, after the 64-byte
    // header: the torn frame of a sixth record, whose send was never
    // acknowledged (the header's proof says only 0..5 were synced).
    let segment = Path::new(&q).join("p0000/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let tail = 64 + 5 * 40;
    assert!(bytes[tail..].iter().all(|&b| b == 0), "the log ends where the test expects");
    bytes[tail..tail + 20].fill(0x77);
    std::fs::write(&segment, &bytes).unwrap();
    let writable = read_only(tmp.path(), Path::new(&q));
    let before = snapshot(Path::new(&q));

    let s = Json::parse(&ok_as_reader(&["stat", &q, "--json"]));
    let p = &s.get("partitions").arr()[0];
    assert_eq!(p.get("next_offset").u64(), 5, "{s:?}");
    let repair = p.get("needs_recovery").str();
    assert!(
        repair.contains("torn tail at byte 264 (offset 5)") && repair.contains("the next open zeroes it"),
        "{repair}"
    );
    let table = ok_as_reader(&["stat", &q]);
    assert!(
        table.contains(
            "\npartition 0 needs recovery, which the next open does: 00000000000000000000.seg: torn tail at byte 264"
        ),
        "{table}"
    );
    assert_eq!(snapshot(Path::new(&q)), before, "stat repaired the queue");

    // The next open repairs it, and then there is nothing left to do.
    drop(writable);
    assert_eq!(ok(&["produce", &q], ""), "");
    assert!(std::fs::read(&segment).unwrap()[tail..].iter().all(|&b| b == 0), "the torn bytes were zeroed");
    let s = stat_json(&q);
    assert_eq!(s.get("partitions").arr()[0].get("needs_recovery"), &Json::Null, "{s:?}");
    assert_eq!(crate::common::next_offsets(&s), [5]);
}

#[test]
fn verify_checks_the_dead_letter_queues_and_names_the_group() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "ok 0\n");
    dead_letter(&q, "g", b"poison");
    assert!(ok(&["verify", &q], "").ends_with(": 0 problem(s), 0 note(s)\n"));
    // The dead letter's frame: its 32-byte header and 1-byte key after the
    // segment header, then the envelope; flip a byte of the envelope.
    let segment = Path::new(&q).join("groups/g/dlq/p0000/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[64 + 32 + 1 + 20] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    let err = fails(&["dlq", &q, "--group", "g", "list"], "", 1);
    assert!(err.contains("checksum"), "{err}");

    let run = durq(&["verify", &q], "");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let report = String::from_utf8(run.stdout).unwrap();
    let problems: Vec<&str> = report.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(
        problems[0].starts_with(&format!(
            "problem: {}: byte 64, offset 0: in the dead-letter queue of group \"g\": ",
            segment.display()
        )),
        "{report}"
    );
    assert!(report.ends_with("1 problem(s), 0 note(s)\n"), "{report}");
    assert!(run.stderr.contains("verify found 1 problem(s)"), "{}", run.stderr);
    // stat still shows the queue; the damaged dead letter is still counted.
    assert_eq!(group(&stat_json(&q), "g").get("dead_letters").u64(), 1);

    // A damaged meta file of the dead-letter queue: its options follow from
    // the queue's, so the advice names them all, and it works.
    let meta = Path::new(&q).join("groups/g/dlq/durq.meta");
    common_flip(&meta, 20);
    let run = durq(&["verify", &q], "");
    let report = String::from_utf8(run.stdout).unwrap();
    let problem = format!(
        "problem: {}: byte 60: in the dead-letter queue of group \"g\": meta file checksum mismatch",
        meta.display()
    );
    assert!(report.contains(&problem), "{report}");
    let advice = "`durq produce NEW --partitions 1 --segment-bytes 65536 --record-bytes-max 20520 --durability sync < /dev/null`";
    assert!(report.contains(advice), "{report}");
    let g = group(&stat_json(&q), "g").clone();
    assert_eq!(g.get("dead_letters"), &Json::Null, "stat counts no dead letters it cannot read: {g:?}");
    assert!(g.get("dead_letters_error").str().contains("checksum mismatch"), "{g:?}");
    assert!(ok(&["stat", &q], "").contains("group g: 0 member(s), dead letters unreadable ("));
    let new = Path::new(&q).with_file_name("new");
    ok(
        &[
            "produce",
            new.to_str().unwrap(),
            "--partitions",
            "1",
            "--segment-bytes",
            "65536",
            "--record-bytes-max",
            "20520",
        ],
        "",
    );
    std::fs::copy(new.join("durq.meta"), &meta).unwrap();
    let report = String::from_utf8(durq(&["verify", &q], "").stdout).unwrap();
    assert!(
        report.contains("byte 64, offset 0: in the dead-letter queue of group \"g\": ")
            && report.ends_with("1 problem(s), 0 note(s)\n"),
        "{report}"
    );
}

#[test]
fn a_damaged_checkpoint_is_shown_for_its_slot_with_the_rest_of_the_queue_and_reset_recovers_it() {
    let (_tmp, q) = queue_dir();
    ok(
        &["produce", &q, "--partitions", "2", "--segment-bytes", "65536", "--record-bytes-max", "16384"],
        "a\nb\nc\nd\n",
    );
    for g in ["g", "h"] {
        let out = ok(&["consume", &q, "--group", g, "--idle-exit", "0.3"], "");
        assert_eq!(out.lines().count(), 4);
    }
    // Every copy of g's checkpoint in partition 1.
    let slot = Path::new(&q).join("groups/g/slot-0001");
    let checkpoint = std::fs::read_dir(&slot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .unwrap();
    let len = std::fs::metadata(&checkpoint).unwrap().len() as usize;
    std::fs::write(&checkpoint, vec![0xaa; len]).unwrap();

    let s = stat_json(&q);
    let g = group(&s, "g");
    let committed = g.get("committed").arr();
    assert!(matches!(committed[0], Json::Num(_)) && committed[1] == Json::Null, "{g:?}");
    assert_eq!(g.get("lag").arr()[1], Json::Null, "{g:?}");
    let damaged = g.get("slots").arr()[1].get("damaged").str();
    assert!(
        damaged.contains(checkpoint.to_str().unwrap()) && damaged.contains("every checkpoint copy is invalid"),
        "{damaged}"
    );
    assert_eq!(g.get("slots").arr()[0].get("damaged"), &Json::Null);
    let h = group(&s, "h");
    assert_eq!(h.get("lag"), &Json::Arr(vec![Json::Num(0.0), Json::Num(0.0)]), "the other group is shown: {h:?}");
    let table = ok(&["stat", &q], "");
    let advice =
        format!("; no member can take it until `durq group reset {q} --group g --to earliest|latest|OFFSET|TIME`");
    assert!(table.contains("\npartition 1 damaged: ") && table.contains(&advice), "{table}");

    // The advice works: a reset gives every slot a position again.
    ok(&["group", "reset", &q, "--group", "g", "--to", "latest"], "");
    let s = stat_json(&q);
    assert!(group(&s, "g").get("slots").arr().iter().all(|slot| slot.get("damaged") == &Json::Null), "{s:?}");
    assert_eq!(group(&s, "g").get("lag"), &Json::Arr(vec![Json::Num(0.0), Json::Num(0.0)]));
}

#[test]
fn stray_entries_in_the_groups_folder_are_noted_once_and_ignored() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "a\n");
    ok(&["consume", &q, "--group", "g", "--idle-exit", "0.3"], "");
    let groups = Path::new(&q).join("groups");
    std::fs::write(groups.join("notes.txt"), "mine").unwrap();
    std::fs::write(groups.join(".DS_Store"), "finder").unwrap();

    let s = stat_json(&q);
    let names: Vec<&str> = s.get("groups").arr().iter().map(|g| g.get("name").str()).collect();
    assert_eq!(names, ["g"]);
    let notes: Vec<&str> = s.get("notes").arr().iter().map(Json::str).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].ends_with("/groups/.DS_Store: not a consumer group; ignored"), "{notes:?}");
    assert!(notes[1].ends_with("/groups/notes.txt: not a consumer group; ignored"), "{notes:?}");
    let table = ok(&["stat", &q], "");
    assert_eq!(table.matches("not a consumer group").count(), 2, "{table}");

    let report = ok(&["verify", &q], "");
    let noted: Vec<&str> = report.lines().filter(|l| l.contains("not a consumer group")).collect();
    assert_eq!(noted.len(), 2, "{report}");
    assert!(report.ends_with(": 0 problem(s), 2 note(s)\n"), "{report}");
}

/// `durq verify` on a queue whose meta file was damaged by `damage`: one
/// problem naming the meta file, and advice that, followed to the letter,
/// gives the queue back.
fn meta_advice_is_given_and_works(damage: fn(&Path), what: &str) {
    let (tmp, q) = queue_dir();
    let lines: String = (0..300).map(|i| format!("{i:03} {}\n", "x".repeat(500))).collect();
    ok(&["produce", &q, "--partitions", "2", "--segment-bytes", "65536", "--record-bytes-max", "16384"], &lines);
    let meta = Path::new(&q).join("durq.meta");
    damage(&meta);
    fails(&["stat", &q], "", 1);

    let run = durq(&["verify", &q], "");
    assert_eq!(run.status.code(), Some(1), "{what}: {}", run.stderr);
    let report = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{what}: {report}");
    assert!(lines[0].starts_with(&format!("problem: {}: byte ", meta.display())), "{what}: {report}");
    assert!(lines[1].starts_with("note: to recover durq.meta"), "{what}: {report}");
    let command = lines[1].split('`').nth(1).expect("a command in backticks");
    let new = tmp.path().join("new").to_str().unwrap().to_owned();
    let args: Vec<&str> = command
        .split_whitespace()
        .skip(1)
        .take_while(|a| *a != "<")
        .map(|a| match a {
            "NEW" => new.as_str(),
            "BYTES" => "16384",
            a => a,
        })
        .collect();
    assert_eq!(&args[..5], ["produce", &new, "--partitions", "2", "--segment-bytes"], "{what}: {command}");
    assert_eq!(args[5], "65536", "{what}: the segment size the files tell");
    assert_eq!(ok(&args, ""), "", "{what}");
    std::fs::copy(Path::new(&new).join("durq.meta"), &meta).unwrap();
    assert!(ok(&["verify", &q], "").ends_with(": 0 problem(s), 0 note(s)\n"), "{what}");
    let consumed = ok(&["consume", &q, "--group", "g", "--idle-exit", "0.3"], "");
    assert_eq!(consumed.lines().count(), 300, "{what}: every record is back");
}

#[test]
fn a_damaged_meta_file_gets_advice_that_gives_the_queue_back() {
    meta_advice_is_given_and_works(|meta| common_flip(meta, 20), "a flipped byte");
}

#[test]
fn a_missing_meta_file_gets_advice_that_gives_the_queue_back() {
    meta_advice_is_given_and_works(|meta| std::fs::remove_file(meta).unwrap(), "missing");
}

#[test]
fn a_queue_whose_creation_was_cut_short_is_a_note_not_a_problem() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "");
    std::fs::remove_file(Path::new(&q).join("durq.meta")).unwrap();
    let report = ok(&["verify", &q], "");
    assert!(report.contains("a creation cut short, which the next open completes"), "{report}");
    assert!(report.ends_with(": 0 problem(s), 1 note(s)\n"), "{report}");
}

fn common_flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// `durq verify` while this process sends to partition 0, consumes and
/// commits in a loop, taking the slots again and again (each take removes
/// the older epoch's checkpoint file), while verify walks a long partition
/// 1 (held by a group that never consumes): a commit after verify found
/// partition 0's end, or a file removed after it was listed, is the queue
/// moving on, not damage and not an error.
#[test]
fn verify_of_a_queue_in_use_finds_no_problem_while_it_moves_on() {
    let (_tmp, q) = queue_dir();
    let create =
        ["--partitions", "2", "--segment-bytes", "65536", "--record-bytes-max", "16384", "--durability", "buffered"];
    ok(&[&["produce", &q][..], &create].concat(), "");
    let queue = durq::Queue::open_existing(&q).unwrap();
    drop(queue.consumer("slow").unwrap());
    let producer = queue.producer();
    // A key of each partition, found by sending with it.
    let key_in =
        |p: u32| (0u32..).map(|i| format!("k{i}")).find(|k| producer.send_keyed(k, b"").unwrap().partition == p);
    let (key0, key1) = (key_in(0).unwrap(), key_in(1).unwrap());
    for _ in 0..6000 {
        producer.send_keyed(&key1, [1u8; 1000]).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut consumer = queue.consumer("busy").unwrap();
                for _ in 0..5 {
                    producer.send_keyed(&key0, [7u8; 1000]).unwrap();
                    consumer.process_timeout(Duration::from_millis(1), |_| Ok::<(), std::io::Error>(())).unwrap();
                }
            }
        });
        for round in 0..100 {
            let run = durq(&["verify", &q], "");
            let stdout = String::from_utf8_lossy(&run.stdout);
            let ok = run.status.success() && stdout.contains(": 0 problem(s)");
            stop.store(!ok || round == 99, std::sync::atomic::Ordering::Relaxed);
            assert!(ok, "round {round}: {:?}\n{stdout}\n{}", run.status, run.stderr);
        }
    });
}

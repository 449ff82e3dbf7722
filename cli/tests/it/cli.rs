//! The `durq` command, run as a real process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{durq, fails, ok, queue_dir};

/// Arguments of a `produce` that creates the queue at `q` with 64 KiB
/// segments: opening a queue scans its last segment, which takes a while for
/// the default 64 MiB in a debug build. Records must fit the segment.
fn produce_new<'a>(q: &'a str, options: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["produce", q, "--segment-bytes", "65536", "--record-bytes-max", "16384"];
    args.extend_from_slice(options);
    args
}

fn positions(partition: u32, offsets: std::ops::Range<u64>) -> String {
    offsets.map(|o| format!("{partition} {o}\n")).collect()
}

#[test]
fn produced_lines_are_acknowledged_in_order_then_consumed_once() {
    let (_tmp, q) = queue_dir();
    let input = "order 1\n\norder 3 with spaces\norder 4";
    assert_eq!(ok(&produce_new(&q, &[]), input), positions(0, 0..4));
    assert_eq!(ok(&["produce", &q], "order 5\n"), positions(0, 4..5));

    let consumed = ok(&["consume", &q, "--group", "g", "--idle-exit", "0.3"], "");
    assert_eq!(consumed, "order 1\n\norder 3 with spaces\norder 4\norder 5\n");
    // Everything was committed: the group has nothing left.
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2"], ""), "");
    // Another group starts from the beginning.
    assert_eq!(ok(&["consume", &q, "--group", "other", "--limit", "1"], ""), "order 1\n");
}

#[test]
fn consume_commits_under_each_commit_mode_and_the_position_outlives_the_process() {
    let (_tmp, q) = queue_dir();
    ok(&produce_new(&q, &[]), "a\nb\nc\nd\n");
    // Each mode commits what it printed: the next run of the group goes on
    // after it (under interval and buffered, synced when the command exits).
    let modes = [("sync", "a\n"), ("interval:5", "b\n"), ("buffered", "c\n")];
    for (mode, line) in modes {
        assert_eq!(ok(&["consume", &q, "--group", "g", "--limit", "1", "--commit", mode], ""), line, "{mode}");
    }
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2", "--commit", "buffered"], ""), "d\n");
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2"], ""), "");
    fails(&["consume", &q, "--group", "g", "--commit", "later"], "", 2);
    let err = fails(&["consume", &q, "--group", "g", "--commit", "interval:0"], "", 1);
    assert!(err.contains("commit"), "{err}");
}

/// Regression: a bare relative name used to fail on creation (the library
/// tried to fsync the parent `""`).
#[test]
fn produce_creates_a_queue_at_a_relative_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(produce_new("q", &[]))
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("q/durq.meta").exists());
}

/// A typo above the queue directory is an error, not a new tree.
#[test]
fn produce_creates_only_the_queue_directory_and_names_a_missing_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("ordres");
    let q = typo.join("q");
    let err = fails(&produce_new(q.to_str().unwrap(), &[]), "x\n", 1);
    assert!(err.contains(&format!("parent directory {} does not exist", typo.display())), "{err}");
    assert!(!typo.exists(), "the missing parent was created");
    std::fs::create_dir(&typo).unwrap();
    assert_eq!(ok(&produce_new(q.to_str().unwrap(), &[]), "x\n"), "0 0\n");
}

#[test]
fn produce_acknowledges_lines_before_end_of_input() {
    let (_tmp, q) = queue_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(produce_new(&q, &[]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    for offset in 0..3 {
        stdin.write_all(format!("m{offset}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        // stdin stays open: the ack must not wait for more input.
        let ack = acks.recv_timeout(Duration::from_secs(10)).expect("ack before end of input");
        assert_eq!(ack, format!("0 {offset}"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn limit_is_exact_and_stat_shows_committed_offsets_and_lag() {
    let (_tmp, q) = queue_dir();
    let input: String = (0..10).map(|i| format!("m{i}\n")).collect();
    ok(&produce_new(&q, &[]), &input);

    // Smaller than a batch, then not a multiple of the batch size.
    assert_eq!(ok(&["consume", &q, "--group", "g", "--limit", "2"], ""), "m0\nm1\n");
    let five = ok(&["consume", &q, "--group", "g", "--max-batch", "3", "--limit", "5"], "");
    assert_eq!(five, "m2\nm3\nm4\nm5\nm6\n");

    let json = ok(&["stat", &q, "--json"], "");
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.contains(r#""partitions":[{"partition":0,"first_offset":0,"next_offset":10,"segments":1,"#), "{json}");
    assert!(json.contains(r#"{"name":"g","committed":[7],"lag":[3],"#), "{json}");
    assert!(json.contains(r#""durability":"sync""#), "{json}");

    let table = ok(&["stat", &q], "");
    // Under the group's heading and the slot table's header: partition,
    // committed, lag.
    let mut lines = table.lines().skip_while(|l| !l.starts_with("group g: "));
    let slot_row: Vec<&str> = lines.nth(2).expect(&table).split_whitespace().collect();
    assert_eq!(slot_row[..3], ["0", "7", "3"], "{table}");

    let rest = ok(&["consume", &q, "--group", "g", "--limit", "100", "--idle-exit", "0.3"], "");
    assert_eq!(rest, "m7\nm8\nm9\n");
}

#[test]
fn key_sep_routes_by_key_and_strips_it() {
    let (_tmp, q) = queue_dir();
    let input = "alice:a1\nbob:b1\nalice:a2\nno key here\nbob:b2:with colon\n";
    let acks = ok(&produce_new(&q, &["--partitions", "4", "--key-sep", ":"]), input);
    let acks: Vec<(u32, u64)> = acks
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    assert_eq!(acks.len(), 5);
    assert_eq!(acks[0].0, acks[2].0, "same key, same partition");
    assert_eq!(acks[1].0, acks[4].0, "same key, same partition");
    assert!(acks[2].1 > acks[0].1 && acks[4].1 > acks[1].1);

    let consumed = ok(&["consume", &q, "--group", "g", "--idle-exit", "0.3"], "");
    let mut payloads: Vec<&str> = consumed.lines().collect();
    // Within a key, in send order; across partitions, in any order.
    let pos = |s: &str| payloads.iter().position(|&p| p == s).unwrap();
    assert!(pos("a1") < pos("a2") && pos("b1") < pos("b2:with colon"));
    payloads.sort();
    assert_eq!(payloads, ["a1", "a2", "b1", "b2:with colon", "no key here"]);
}

#[test]
fn options_apply_at_creation_and_conflicts_are_errors() {
    let (_tmp, q) = queue_dir();
    ok(&produce_new(&q, &["--partitions", "2", "--durability", "interval:5"]), "a\nb\n");
    let json = ok(&["stat", &q, "--json"], "");
    assert!(json.contains(r#"{"partition":0,"#) && json.contains(r#"{"partition":1,"#), "{json}");
    assert!(!json.contains(r#"{"partition":2,"#), "{json}");
    assert!(json.contains(r#""durability":"interval:5""#), "{json}");

    let err = fails(&["produce", &q, "--partitions", "3"], "c\n", 1);
    assert!(err.contains("partitions = 2") && err.contains('3'), "{err}");
    let err = fails(&["produce", &q, "--durability", "sync"], "c\n", 1);
    assert!(err.contains("durability = interval:5"), "{err}");
    let err = fails(&["produce", &q, "--segment-bytes", "131072"], "c\n", 1);
    assert!(err.contains("segment_bytes = 65536"), "{err}");
    let err = fails(&["produce", &q, "--record-bytes-max", "100"], "c\n", 1);
    assert!(err.contains("record_bytes_max = 16384"), "{err}");
    // Omitted options take the stored values; matching ones are accepted,
    // as the help of each says.
    let help = ok(&["produce", "--help"], "");
    let option_helps: Vec<&str> = help.split("\n      --").skip(1).collect();
    for option in ["partitions", "durability", "segment-bytes", "record-bytes-max"] {
        let text = option_helps.iter().find(|h| h.starts_with(option)).expect(&help).split_whitespace();
        let text = text.collect::<Vec<_>>().join(" ");
        assert!(text.contains("An existing queue keeps its own: leave this out, or give the same"), "{text}");
    }
    assert_eq!(ok(&["produce", &q], "c\n").lines().count(), 1);
    assert_eq!(ok(&["produce", &q, "--partitions", "2"], "d\n").lines().count(), 1);
    let consumed = ok(&["consume", &q, "--group", "g", "--idle-exit", "0.3"], "");
    let mut payloads: Vec<&str> = consumed.lines().collect();
    payloads.sort();
    assert_eq!(payloads, ["a", "b", "c", "d"]);
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            files.insert(path, bytes);
        }
    }
    files
}

#[test]
fn verify_passes_a_healthy_queue_and_locates_damage_without_modifying_anything() {
    let (_tmp, q) = queue_dir();
    // Two runs, so the second's records prove the first was acknowledged:
    // damage to it is damage, not a torn tail.
    ok(&produce_new(&q, &[]), "first\n");
    ok(&["produce", &q], "second\nthird\n");
    ok(&["consume", &q, "--group", "g", "--limit", "1"], "");
    let report = ok(&["verify", &q], "");
    assert!(report.contains("3 records, 1 segments, 1 checkpoints"), "{report}");

    // Record 0's frame starts after the 64-byte segment header; its payload
    // after the 32-byte frame header.
    let segment = Path::new(&q).join("p0000/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    assert_eq!(&bytes[96..101], b"first");
    bytes[96] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    let before = snapshot(Path::new(&q));
    let run = durq(&["verify", &q], "");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let stdout = String::from_utf8(run.stdout).unwrap();
    let problem = stdout.lines().find(|l| l.starts_with("problem: ")).expect(&stdout);
    assert!(problem.contains(&segment.display().to_string()) && problem.contains("byte 64"), "{problem}");
    assert!(problem.contains("offset 0"), "{problem}");
    assert!(problem.contains(": frame checksum mismatch in acknowledged data"), "{problem}");
    assert!(run.stderr.starts_with("durq: ") && run.stderr.lines().count() == 1, "{}", run.stderr);
    assert!(snapshot(Path::new(&q)) == before, "verify modified the queue");

    // Damaged data is refused, not delivered.
    let err = fails(&["consume", &q, "--group", "fresh", "--idle-exit", "0.2"], "", 1);
    assert!(err.contains("corrupt") && err.contains("byte 64"), "{err}");
    assert!(err.contains(": frame checksum mismatch"), "{err}");
}

#[test]
fn verify_passes_a_segment_whose_creation_a_power_cut_interrupted_and_fails_one_cut_inside_its_header() {
    // Issue 15's reproduction: the power went while a roll created segment
    // 10, before any byte of it reached the disk. Nothing was lost: a note,
    // exit 0, as the next open completes the segment.
    let (_tmp, q) = queue_dir();
    let lines: String = (1..=10).map(|i| format!("{i}\n")).collect();
    ok(&produce_new(&q, &[]), &lines);
    let empty = Path::new(&q).join("p0000/00000000000000000010.seg");
    std::fs::write(&empty, b"").unwrap();
    let report = ok(&["verify", &q], "");
    assert!(report.contains("note: ") && report.contains("creation was cut short"), "{report}");
    assert!(report.contains("0 problem(s)") && !report.contains("problem: "), "{report}");
    // `stat` only reads and leaves it so; any open completes it.
    let report = ok(&["stat", &q], "");
    assert!(report.contains("needs recovery") && report.contains("creation was cut short"), "{report}");
    ok(&["produce", &q], "");
    let report = ok(&["verify", &q], "");
    assert!(report.contains("10 records") && !report.contains("note: "), "{report}");

    // Segment 0, holding the 10 acknowledged records, cut inside its
    // header: damage, never a creation cut short; the open refuses it too.
    std::fs::remove_file(&empty).unwrap();
    let segment = Path::new(&q).join("p0000/00000000000000000000.seg");
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(40).unwrap();
    let run = durq(&["verify", &q], "");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(stdout.contains(&format!("problem: {}: byte 0", segment.display())), "{stdout}");
    let err = fails(&["stat", &q], "", 1);
    assert!(err.contains("corrupt") && err.contains("cut to 40 bytes"), "{err}");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), 40, "the refused open left the file as it was");
}

#[test]
fn commands_other_than_produce_never_create_a_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    let missing = missing.to_str().unwrap();
    fails(&["consume", missing, "--group", "g", "--idle-exit", "0.1"], "", 1);
    fails(&["stat", missing], "", 1);
    fails(&["stat", missing, "--json"], "", 1);
    fails(&["verify", missing], "", 1);
    assert!(!Path::new(missing).exists());
}

#[test]
fn foreign_directories_and_bad_arguments_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let foreign = tmp.path().to_str().unwrap();
    let err = fails(&["produce", foreign], "x\n", 1);
    assert!(err.contains("not a durq queue"), "{err}");
    let err = fails(&["consume", foreign, "--group", "g"], "", 1);
    assert!(err.contains("not a durq queue"), "{err}");
    assert_eq!(std::fs::read_dir(foreign).unwrap().count(), 1, "nothing was added");

    let (_tmp, q) = queue_dir();
    fails(&["produce"], "", 2);
    fails(&["produce", &q, "--durability", "eventually"], "", 2);
    fails(&["produce", &q, "--partitions", "many"], "", 2);
    fails(&["consume", &q], "", 2);
    fails(&["consume", &q, "--group", "g", "--idle-exit", "soon"], "", 2);
    fails(&["frobnicate", &q], "", 2);
    assert!(!Path::new(&q).exists());
    // Values clap accepts but the library refuses.
    fails(&["produce", &q, "--partitions", "0"], "x\n", 1);
    fails(&["produce", &q, "--segment-bytes", "1000"], "x\n", 1);
    ok(&produce_new(&q, &[]), "");
    let err = fails(&["consume", &q, "--group", "a/b"], "", 1);
    assert!(err.contains("invalid group name"), "{err}");
    fails(&["consume", &q, "--group", "g", "--max-batch", "0"], "", 1);
}

#[test]
fn consume_to_a_closed_pipe_fails_and_commits_nothing() {
    let (_tmp, q) = queue_dir();
    ok(&produce_new(&q, &[]), "a\nb\nc\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(["consume", &q, "--group", "g", "--idle-exit", "1"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("durq: ") && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("not committed") && stderr.contains("Broken pipe"), "{stderr}");
    let json = ok(&["stat", &q, "--json"], "");
    assert!(json.contains(r#""committed":[0],"lag":[3]"#), "{json}");
}

/// `durq consume DIR --group g 2>&1 | head -1`: stdout and stderr are one
/// pipe, whose reader leaves after the first line. The error line cannot be
/// written either, and must not turn into a panic (exit 101).
#[test]
fn consume_into_head_with_stderr_on_the_same_pipe_exits_1_and_commits_only_what_was_written() {
    let (_tmp, q) = queue_dir();
    // More output than any pipe holds (at most 1 MiB unprivileged), so the
    // consumer is still writing when the reader leaves.
    let line = |i: u64| format!("{i:05} {}\n", "x".repeat(100));
    let input: String = (0..20_000).map(line).collect();
    ok(&produce_new(&q, &[]), &input);
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(["consume", &q, "--group", "g", "--max-batch", "100", "--idle-exit", "10"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(reader).read_line(&mut first).unwrap();
    assert_eq!(first, line(0));
    // The reader is dropped here: head has exited.
    let status = wait_with_deadline(&mut child, crate::common::PATIENCE);
    assert_eq!(status.code(), Some(1), "{status}");

    // Committed: the batches written before the pipe closed (the first one
    // at least, as its first line was read), which a pipe of at most 1 MiB
    // bounds; not the one the closed pipe refused, which is delivered again.
    let committed = crate::common::committed(&crate::common::stat(Path::new(&q)), "g")[0];
    assert!(committed > 0 && committed * line(0).len() as u64 <= 1 << 20, "committed {committed}");
    let next = ok(&["consume", &q, "--group", "g", "--limit", "1"], "");
    assert_eq!(next, line(committed));
}

#[test]
fn a_queue_spanning_several_segments_round_trips_and_verifies() {
    let (_tmp, q) = queue_dir();
    let lines: Vec<String> = (0..2000).map(|i| format!("{i:04} {}", "x".repeat(100))).collect();
    let input = lines.join("\n") + "\n";
    let acks = ok(&produce_new(&q, &[]), &input);
    assert_eq!(acks, positions(0, 0..2000));
    let consumed = ok(&["consume", &q, "--group", "g", "--max-batch", "500", "--idle-exit", "0.3"], "");
    assert_eq!(consumed, input);
    let json = ok(&["stat", &q, "--json"], "");
    let segments: usize = json.split(r#""segments":"#).nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(segments >= 3, "{json}");
    assert!(json.contains(r#""next_offset":2000,"#) && json.contains(r#""lag":[0]"#), "{json}");
    let report = ok(&["verify", &q], "");
    assert!(report.contains(&format!("2000 records, {segments} segments")), "{report}");
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("durq did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_an_idle_consumer_cleanly() {
    let (_tmp, q) = queue_dir();
    ok(&produce_new(&q, &[]), "");
    for (signal, group) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durq"))
            .args(["consume", &q, "--group", group])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The group directory appears once the consumer has joined, which
        // is after its signal handlers are installed.
        let joined = Path::new(&q).join("groups").join(group);
        let start = Instant::now();
        while !joined.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "consumer never joined");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill only sends a signal to the child we spawned.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = wait_with_deadline(&mut child, Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "signal {signal}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let bash = ok(&["completions", "bash"], "");
    assert!(bash.contains("complete -F _durq") && bash.contains("tail") && bash.contains("--follow"), "{bash}");
    let zsh = ok(&["completions", "zsh"], "");
    assert!(zsh.starts_with("#compdef durq") && zsh.contains("--watch"), "{zsh}");
    let fish = ok(&["completions", "fish"], "");
    assert!(fish.contains("complete -c durq") && fish.contains("-l format"), "{fish}");
    let err = fails(&["completions", "tcsh"], "", 2);
    assert!(err.contains("tcsh"), "{err}");
}

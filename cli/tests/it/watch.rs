//! `durq stat --watch`, run as a real process: repeated snapshots with
//! rates in and out when stdout is a pipe, and the same drawn in place,
//! with no blank line between snapshots, under a real pseudo-terminal.

use std::process::{Command, Stdio};

use crate::common::{DURQ, PATIENCE, Proc, Pty, cell, ok, queue_dir, snapshots, wait_until};

fn produce_new(q: &str, input: &str) {
    ok(&["produce", q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], input);
}

#[test]
fn watch_into_a_pipe_prints_snapshots_with_rates_in_and_out() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "1\n2\n3\n4\n");
    ok(&["consume", &q, "--group", "g", "--limit", "1"], "");
    let mut watch = Proc::spawn("stat --watch", &["stat", &q, "--watch", "0.05"], false);
    assert!(watch.wait_stdout(PATIENCE, |lines| snapshots(lines).len() >= 2), "{:?}", watch.stderr_lines());
    let first = &snapshots(&watch.lines())[0];
    assert_eq!(cell(first, "IN/S"), "-", "no rate before a second snapshot: {first:?}");
    assert_eq!(cell(first, "OUT/S"), "-", "{first:?}");
    assert_eq!(
        (cell(first, "NEXT"), cell(first, "COMMITTED"), cell(first, "LAG")),
        ("4".into(), "1".into(), "3".into())
    );
    assert!(first.contains(&"group g: 0 member(s), 0 dead letter(s)".to_string()), "{first:?}");

    produce_new(&q, "5\n6\n");
    ok(&["consume", &q, "--group", "g", "--limit", "3"], "");
    // The first snapshot that sees the new offsets compares them with one
    // that did not (or saw only the sends): both rates are above zero there.
    assert!(
        watch.wait_stdout(PATIENCE, |lines| snapshots(lines).iter().any(|s| cell(s, "COMMITTED") == "4")),
        "{:?}",
        watch.lines()
    );
    let all = snapshots(&watch.lines());
    let moved_in = all.iter().find(|s| cell(s, "NEXT") == "6").unwrap();
    assert!(cell(moved_in, "IN/S").parse::<f64>().unwrap() > 0.0, "{moved_in:?}");
    let moved_out = all.iter().find(|s| cell(s, "COMMITTED") == "4").unwrap();
    assert!(cell(moved_out, "OUT/S").parse::<f64>().unwrap() > 0.0, "{moved_out:?}");
    assert_eq!(cell(moved_out, "LAG"), "2", "{moved_out:?}");
    assert!(watch.lines().iter().all(|l| !l.contains('\x1b')), "no escape sequence into a pipe");
    watch.kill();
    assert_eq!(watch.stderr_lines(), Vec::<String>::new());
}

#[test]
fn watch_with_json_prints_one_snapshot_per_line() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "1\n");
    let mut watch = Proc::spawn("stat --watch --json", &["stat", &q, "--json", "--watch", "0.05"], false);
    assert!(watch.wait_stdout(PATIENCE, |lines| lines.len() >= 2), "{:?}", watch.stderr_lines());
    for line in &watch.lines()[..2] {
        assert_eq!(crate::common::next_offsets(&crate::common::Json::parse(line)), [1]);
    }
    watch.kill();
}

#[test]
fn watch_refuses_an_interval_below_10_ms() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "1\n");
    let err = crate::common::fails(&["stat", &q, "--watch", "0"], "", 2);
    assert!(err.contains("at least 0.01 seconds"), "{err}");
}

#[test]
fn watch_on_a_terminal_draws_each_snapshot_over_the_last() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, "1\n2\n");
    ok(&["consume", &q, "--group", "g", "--limit", "1"], "");
    let mut pty = Pty::open();
    let mut child = Command::new(DURQ)
        .args(["stat", &q, "--watch", "0.05"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.take().unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let home = "\x1b[H";
    assert!(wait_until(PATIENCE, || pty.output().matches(home).count() >= 3), "{:?}", pty.output());
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    let screen = pty.output();
    // Every snapshot starts at the top-left corner, clears each line it
    // writes and the rest of the screen; nothing is appended below.
    let frames: Vec<&str> = screen.split(home).skip(1).collect();
    assert!(frames.len() >= 3, "{screen:?}");
    for frame in &frames[..frames.len() - 1] {
        assert!(frame.starts_with("queue "), "{frame:?}");
        assert!(frame.ends_with("\x1b[J"), "{frame:?}");
        // The terminal turns "\n" into "\r\n".
        for line in frame.trim_end_matches("\x1b[J").split_terminator("\r\n") {
            assert!(line.ends_with("\x1b[K"), "{line:?} in {frame:?}");
        }
        assert!(frame.contains("PARTITION  HOLDER  STATE     COMMITTED  LAG  OUT/S\x1b[K"), "{frame:?}");
    }
    assert!(!screen.contains("\r\n\r\n"), "no blank line between snapshots on a terminal: {screen:?}");
}

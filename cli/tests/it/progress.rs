//! Progress of long work (`produce` from a file, `verify`, `dlq replay`)
//! goes to stderr only when stderr is a terminal: under a real
//! pseudo-terminal it is drawn (and cleared at the end); into a pipe there
//! is nothing on stderr at all.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{DURQ, Pty, ok, queue_dir};

/// A file of `lines` numbered lines, to give `produce` as its stdin.
fn input_file(dir: &std::path::Path, lines: usize) -> std::fs::File {
    let path = dir.join("input.txt");
    let mut file = std::fs::File::create(&path).unwrap();
    for i in 0..lines {
        writeln!(file, "line {i}").unwrap();
    }
    std::fs::File::open(path).unwrap()
}

/// A queue at `q` with 2,000 records and one dead letter in group `g`.
fn prepare(tmp: &std::path::Path, q: &str) {
    let out = Command::new(DURQ)
        .args(["produce", q, "--segment-bytes", "1048576", "--record-bytes-max", "4096"])
        .stdin(input_file(tmp, 2000))
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 2000);
    let queue = durq::Queue::open_existing(q).unwrap();
    let options = durq::ConsumerOptions::default().max_deliveries(1).max_batch(1).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = queue.consumer_with("g", options).unwrap();
    let failed = consumer.process_timeout(Duration::from_secs(5), |_| Err::<(), _>(std::io::Error::other("poison")));
    assert!(matches!(failed, Err(durq::Error::Process(_))), "{failed:?}");
}

#[test]
fn nothing_is_written_to_stderr_when_it_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q").to_str().unwrap().to_owned();
    // `prepare` checks produce's stderr (a pipe) is empty.
    prepare(tmp.path(), &q);
    assert!(ok(&["verify", &q], "").ends_with(": 0 problem(s), 0 note(s)\n"));
    assert_eq!(ok(&["dlq", &q, "--group", "g", "replay"], ""), "1\n");
}

/// Runs `durq args` with stdin from `stdin`, stdout into a pipe and stderr
/// into a pseudo-terminal; its stdout and what the terminal got.
fn on_a_terminal(args: &[&str], stdin: Stdio) -> (String, String) {
    let pty = Pty::open();
    let child =
        Command::new(DURQ).args(args).stdin(stdin).stdout(Stdio::piped()).stderr(pty.for_child()).spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "durq {args:?}: {}", pty.output());
    (String::from_utf8(out.stdout).unwrap(), pty.finish())
}

#[test]
fn progress_is_drawn_on_a_terminal_and_cleared() {
    let (tmp, q) = queue_dir();
    let (out, screen) = on_a_terminal(
        &["produce", &q, "--segment-bytes", "1048576", "--record-bytes-max", "4096"],
        input_file(tmp.path(), 2000).into(),
    );
    assert_eq!(out.lines().count(), 2000);
    // A bar of the input's bytes (2,000 lines of 7 to 10 bytes).
    assert!(screen.contains("sending") && screen.contains("KiB"), "{screen:?}");
    // Cleared at the end: the last thing drawn erases the line.
    assert!(screen.ends_with("\r\x1b[2K") || screen.ends_with("\x1b[2K"), "{screen:?}");

    let queue = durq::Queue::open_existing(&q).unwrap();
    let options = durq::ConsumerOptions::default().max_deliveries(1).max_batch(1).retry_backoff(vec![Duration::ZERO]);
    let mut consumer = queue.consumer_with("g", options).unwrap();
    assert!(consumer.process_timeout(Duration::from_secs(5), |_| Err::<(), _>(std::io::Error::other("x"))).is_err());
    drop((consumer, queue));

    let (out, screen) = on_a_terminal(&["verify", &q], Stdio::null());
    assert!(out.ends_with(": 0 problem(s), 0 note(s)\n"), "{out}");
    assert!(screen.contains("verifying"), "{screen:?}");
    let (out, screen) = on_a_terminal(&["dlq", &q, "--group", "g", "replay"], Stdio::null());
    assert_eq!(out, "1\n");
    assert!(screen.contains("replaying the dead letters of group g"), "{screen:?}");
}

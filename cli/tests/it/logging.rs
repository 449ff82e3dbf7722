//! `durq -v` and `RUST_LOG`: the library's events on stderr, and nothing
//! without them.

use std::process::{Command, Stdio};

use crate::common::{durq, ok, queue_dir};

#[test]
fn verbose_logs_recovery_and_slots_on_stderr_and_the_output_is_unchanged() {
    let (_tmp, q) = queue_dir();
    ok(&["produce", &q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], "a\nb\n");
    let run = durq(&["-v", "consume", &q, "--group", "g", "--idle-exit", "0.2"], "");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "a\nb\n", "logs never reach stdout");
    assert!(run.stderr.contains("INFO") && run.stderr.contains("durq recovered a partition"), "{}", run.stderr);
    assert!(run.stderr.contains("records_scanned=2"), "{}", run.stderr);
    assert!(run.stderr.contains("durq took a slot group=\"g\" partition=0"), "{}", run.stderr);
    assert!(!run.stderr.contains("durq committed"), "a commit is debug, shown from -vv: {}", run.stderr);

    ok(&["produce", &q], "c\n");
    let run = durq(&["-vv", "consume", &q, "--group", "g", "--idle-exit", "0.2"], "");
    assert!(run.stderr.contains("DEBUG") && run.stderr.contains("durq committed"), "{}", run.stderr);

    // Without -v nothing is logged (`ok` checks stderr is empty).
    ok(&["produce", &q], "d\n");
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2"], ""), "d\n");
}

#[test]
fn rust_log_decides_when_set_and_a_bad_one_is_a_usage_error() {
    let (_tmp, q) = queue_dir();
    ok(&["produce", &q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], "a\n");
    let out = Command::new(crate::common::DURQ)
        .args(["consume", &q, "--group", "g", "--idle-exit", "0.2"])
        .env("RUST_LOG", "durq=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("durq recovered a partition") && stderr.contains("durq committed"), "{stderr}");

    let out = Command::new(crate::common::DURQ).args(["stat", &q]).env("RUST_LOG", "durq=[").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("durq: RUST_LOG=\"durq=[\": "), "{stderr}");
}

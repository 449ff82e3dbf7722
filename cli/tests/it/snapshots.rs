//! Snapshots of what the `durq` command prints (insta): every `--help`, and
//! the stable parts of `tail` and `stat` output. A change to any of them
//! shows up as a diff of a file under `tests/it/snapshots/` in review; accept
//! it with `cargo insta review` or `INSTA_UPDATE=always`.
//!
//! Times, ages, member ids and temporary paths differ from run to run and
//! are replaced by placeholders (`[ms]`, `[age]`, `[member]`, `[pid]`,
//! `[host]`, `[DIR]`).

use std::time::Duration;

use crate::common::{durq, ok, produce_sample, queue_dir};

/// Asserts `text` matches snapshot `name`, with run-dependent parts of
/// `dir`'s output replaced.
fn assert_snapshot(name: &str, dir: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(dir), "[DIR]");
    settings.add_filter(r#""(timestamp_ms|heartbeat_ms)":\d+"#, r#""$1":[ms]"#);
    settings.add_filter(r#""pid":\d+"#, r#""pid":[pid]"#);
    settings.add_filter(r#""host":"[^"]*""#, r#""host":[host]"#);
    // An age's width varies from run to run, and so does the padding a
    // right-aligned table column puts before it: both are replaced.
    settings.add_filter(r" *\b\d+(ms|m\d\ds|h\d\dm|d) ago\b", " [age]");
    settings.add_filter(r"\b[0-9a-f]{32}\b", "[member]");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// `s` with regex metacharacters escaped (temporary paths have dots).
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[test]
fn help_of_every_command() {
    for args in [
        &[][..],
        &["produce"],
        &["consume"],
        &["tail"],
        &["stat"],
        &["group"],
        &["group", "reset"],
        &["group", "delete"],
        &["dlq"],
        &["dlq", "DIR", "--group", "g", "list"],
        &["dlq", "DIR", "--group", "g", "replay"],
        &["verify"],
        &["gc"],
        &["retention"],
        &["migrate"],
        &["completions"],
    ] {
        let mut with_help = args.to_vec();
        with_help.push("--help");
        let name: Vec<&str> =
            args.iter().copied().filter(|a| !a.starts_with('-') && *a != "DIR" && *a != "g").collect();
        let name = if name.is_empty() { "help".to_owned() } else { format!("help_{}", name.join("_")) };
        assert_snapshot(&name, "/nowhere", &ok(&with_help, ""));
    }
}

/// A queue of two partitions: `a`, `b` and a payload that is not UTF-8 in
/// partition 0, `keyed` (key `k`) in partition 1; group `g` processed one
/// record of each partition and has no member left.
fn sample_queue(q: &str) {
    produce_sample(q);
    let queue = durq::Queue::open_existing(q).unwrap();
    let mut consumer = queue.consumer_with("g", durq::ConsumerOptions::default().max_batch(1)).unwrap();
    while consumer.process_timeout(Duration::ZERO, |_| Ok::<(), std::io::Error>(())).unwrap() > 0 {
        if queue.stat().unwrap().groups[0].committed.iter().all(|c| *c >= Some(1)) {
            break;
        }
    }
}

#[test]
fn tail_and_stat_output() {
    let (_tmp, q) = queue_dir();
    sample_queue(&q);
    let committed = durq::stat::stat(q.as_ref()).unwrap().groups[0].committed.clone();
    assert_eq!(committed, [Some(1), Some(1)]);

    let tail = durq(&["tail", &q, "--partition", "0"], "");
    assert!(tail.status.success(), "{}", tail.stderr);
    assert_snapshot("tail_text_partition_0", &q, &String::from_utf8_lossy(&tail.stdout));
    assert_snapshot("tail_json", &q, &ok(&["tail", &q, "--format", "json"], ""));
    assert_snapshot("stat", &q, &ok(&["stat", &q], ""));
    assert_snapshot("stat_json", &q, &ok(&["stat", &q, "--json"], ""));

    let mut watch = crate::common::Proc::spawn("stat --watch", &["stat", &q, "--watch", "0.05"], false);
    assert!(watch.wait_stdout(crate::common::PATIENCE, |lines| lines.iter().any(String::is_empty)));
    watch.kill();
    let first: Vec<String> = watch.lines().into_iter().take_while(|l| !l.is_empty()).collect();
    assert_snapshot("stat_watch_first_snapshot", &q, &(first.join("\n") + "\n"));
}

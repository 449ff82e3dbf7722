//! `durq tail` and `durq consume --format json`, run as real processes:
//! a tail prints records without joining, creating or moving any group,
//! follows new records as producers make them visible, and prints JSON
//! lines that keep every byte of a key and a payload.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::{Json, PATIENCE, Proc, fails, ok, produce_sample, queue_dir};

/// Mode, length and bytes (of a file), by path.
type Snapshot = BTreeMap<PathBuf, (u32, u64, Option<Vec<u8>>)>;

/// Every file and directory under `root`, with its mode, length and bytes,
/// but for the control file, which an open rebuilds when no other process
/// has the queue open. Modification times are left out for the same
/// reason: that open's recovery syncs and reserves the tail segments
/// (touching their mtime, not their bytes).
fn snapshot(root: &Path) -> Snapshot {
    fn walk(dir: &Path, out: &mut Snapshot) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            if path.file_name().is_some_and(|n| n == "durq.ctl") {
                out.insert(path, (m.mode(), m.len(), None));
                continue;
            }
            let bytes = m.is_file().then(|| std::fs::read(&path).unwrap());
            out.insert(path.clone(), (m.mode(), m.len(), bytes));
            if m.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Fails naming every path that appeared, went or changed.
fn assert_unchanged(before: &Snapshot, after: &Snapshot) {
    let paths: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let changed: Vec<&&PathBuf> = paths.iter().filter(|p| before.get(**p) != after.get(**p)).collect();
    assert!(changed.is_empty(), "tail changed the queue: {changed:?}");
}

fn json_lines(text: &str) -> Vec<Json> {
    text.lines().map(Json::parse).collect()
}

fn payloads(lines: &[Json]) -> Vec<String> {
    lines.iter().map(|l| l.get("payload").str().to_owned()).collect()
}

#[test]
fn tail_prints_every_record_and_changes_nothing_in_the_queue() {
    let (_tmp, q) = queue_dir();
    produce_sample(&q);
    let before = snapshot(Path::new(&q));

    let text = crate::common::durq(&["tail", &q], "");
    assert!(text.status.success() && text.stderr.is_empty(), "{}", text.stderr);
    let mut lines: Vec<&[u8]> = text.stdout.split_inclusive(|&b| b == b'\n').collect();
    lines.sort();
    assert_eq!(lines, [&b"a\n"[..], b"b\n", b"keyed\n", b"\xff\x00bin\n"]);

    let json = json_lines(&ok(&["tail", &q, "--format", "json"], ""));
    let by_payload: BTreeMap<String, &Json> = json.iter().map(|l| (l.get("payload").str().to_owned(), l)).collect();
    assert_eq!(by_payload.len(), 4, "{json:?}");
    let keyed = by_payload["keyed"];
    assert_eq!((keyed.get("key").str(), keyed.get("key_encoding").str()), ("k", "utf8"));
    assert_eq!(keyed.get("partition").u64(), u64::from(durq::partition_of_key(b"k", 2)));
    assert_eq!(keyed.get("payload_encoding").str(), "utf8");
    let a = by_payload["a"];
    assert_eq!((a.get("partition").u64(), a.get("offset").u64()), (0, 0));
    assert_eq!((a.get("key"), a.get("key_encoding")), (&Json::Null, &Json::Null));
    assert!(a.get("timestamp_ms").u64() > 1_600_000_000_000, "{a:?}");
    // base64 of ff 00 62 69 6e.
    let binary = by_payload["/wBiaW4="];
    assert_eq!(binary.get("payload_encoding").str(), "base64");
    assert_eq!((binary.get("partition").u64(), binary.get("offset").u64()), (0, 2));

    assert_unchanged(&before, &snapshot(Path::new(&q)));
    assert!(!Path::new(&q).join("groups").exists(), "tail created a group");
    // And a group started afterwards still finds everything.
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2"], "").lines().count(), 4);
}

#[test]
fn tail_starts_where_it_is_told_in_the_partition_it_is_told() {
    let (_tmp, q) = queue_dir();
    produce_sample(&q);
    let p0 = json_lines(&ok(&["tail", &q, "--partition", "0", "--format", "json"], ""));
    assert!(p0.iter().all(|l| l.get("partition").u64() == 0), "{p0:?}");
    assert_eq!(payloads(&p0), ["a", "b", "/wBiaW4="]);
    assert_eq!(crate::common::durq(&["tail", &q, "--partition", "0", "--from", "2"], "").stdout, b"\xff\x00bin\n");
    assert_eq!(ok(&["tail", &q, "--from", "latest"], ""), "");
    assert_eq!(ok(&["tail", &q, "--from", "@0", "--partition", "1"], ""), "keyed\n");
    assert_eq!(ok(&["tail", &q, "--from", "2999-01-01T00:00:00Z"], ""), "");

    let err = fails(&["tail", &q, "--partition", "2"], "", 1);
    assert!(err.contains("partition") && err.contains("2 is not below 2"), "{err}");
    let err = fails(&["tail", &q, "--from", "soon"], "", 2);
    assert!(err.contains("\"soon\" is not earliest, latest, an offset or a time"), "{err}");
    let (_other, missing) = queue_dir();
    let err = fails(&["tail", &missing], "", 1);
    assert!(err.contains("is not a durq queue"), "{err}");
    assert!(!Path::new(&missing).exists(), "tail created a queue");
}

#[test]
fn tail_follow_prints_records_as_they_become_visible() {
    let (_tmp, q) = queue_dir();
    produce_sample(&q);
    let mut tail = Proc::spawn("tail -f", &["tail", &q, "-f", "--format", "json"], false);
    assert!(tail.wait_stdout(PATIENCE, |lines| lines.len() == 4), "{:?}", tail.stderr_lines());
    // Sent by another process after the tail caught up (and went to sleep).
    ok(&["produce", &q], "later 1\nlater 2\n");
    assert!(tail.wait_stdout(PATIENCE, |lines| lines.len() == 6), "{:?}", tail.lines());
    let lines: Vec<Json> = tail.lines().iter().map(|l| Json::parse(l)).collect();
    let mut later = payloads(&lines[4..]);
    later.sort();
    assert_eq!(later, ["later 1", "later 2"]);
    tail.kill();
    assert_eq!(tail.stderr_lines(), Vec::<String>::new());
    assert!(!Path::new(&q).join("groups").exists(), "tail -f created a group");
}

#[test]
fn consume_json_lines_carry_the_delivery_count_and_commit_only_once_written() {
    let (_tmp, q) = queue_dir();
    produce_sample(&q);
    // A member that fails its first batch: its records come back with a
    // delivery count of 2.
    {
        let queue = durq::Queue::open_existing(&q).unwrap();
        let options = durq::ConsumerOptions::default().retry_backoff(vec![std::time::Duration::ZERO]);
        let mut failing = queue.consumer_with("g", options).unwrap();
        let failed = failing.process_timeout(PATIENCE, |_| Err::<(), _>(std::io::Error::other("not now")));
        assert!(failed.is_err(), "{failed:?}");
    }
    // Into a closed pipe: nothing is committed.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(crate::common::DURQ)
        .args(["consume", &q, "--group", "g", "--format", "json", "--idle-exit", "0.2"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let lines = json_lines(&ok(&["consume", &q, "--group", "g", "--format", "json", "--idle-exit", "0.3"], ""));
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut seen: Vec<(u64, u64, String, u64)> = lines
        .iter()
        .map(|l| {
            let deliveries = l.get("deliveries").u64();
            (l.get("partition").u64(), l.get("offset").u64(), l.get("payload").str().to_owned(), deliveries)
        })
        .collect();
    seen.sort();
    // Partition 0's batch failed once (2); then its records came back one
    // at a time, and the first, `a`, was handed over and written into the
    // closed pipe, which counts as a delivery, as a crash mid-batch does (3).
    let expected = [(0, 0, "a", 3), (0, 1, "b", 2), (0, 2, "/wBiaW4=", 2), (1, 0, "keyed", 1)];
    assert_eq!(seen, expected.map(|(p, o, payload, d)| (p, o, payload.to_owned(), d)));
    assert!(lines.iter().all(|l| l.get("timestamp_ms").u64() > 0), "{lines:?}");
    // Everything was committed once written.
    assert_eq!(ok(&["consume", &q, "--group", "g", "--idle-exit", "0.2"], ""), "");
}

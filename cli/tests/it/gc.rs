//! `durq gc`, and retention as `durq stat` shows it: what gc removes and
//! why the rest stays, a failed retention pass counted in `stat` and
//! returned by gc, and entries of `groups/` that are not groups ignored.

use crate::common::{Json, fails, ok, queue_dir};

/// `count` lines of 1,000 bytes: 64 of them fill a 64 KiB segment.
fn lines(count: usize) -> String {
    (0..count).map(|i| format!("{i:0>999}\n")).collect()
}

/// Creates the queue at `q` with 64 KiB segments and sends `count` lines.
fn produce_new(q: &str, count: usize) {
    let acks = ok(&["produce", q, "--segment-bytes", "65536", "--record-bytes-max", "16384"], &lines(count));
    assert_eq!(acks.lines().count(), count);
}

fn consume(q: &str, group: &str, limit: usize) -> usize {
    let limit = limit.to_string();
    ok(&["consume", q, "--group", group, "--limit", &limit, "--idle-exit", "0.2"], "").lines().count()
}

fn segment_files(q: &str) -> usize {
    std::fs::read_dir(format!("{q}/p0000")).unwrap().count()
}

/// The `retention_failures` object of `durq stat --json`.
fn retention_failures(q: &str) -> Json {
    Json::parse(&ok(&["stat", q, "--json"], "")).get("retention_failures").clone()
}

#[test]
fn gc_removes_what_every_group_processed_and_says_what_holds_the_rest_back() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, 300);
    let segments = segment_files(&q);
    assert!(segments >= 4, "{segments}");
    let out = ok(&["gc", &q], "");
    assert_eq!(
        out,
        format!(
            "partition 0: removed 0 segment(s), 0 bytes; {segments} kept from offset 0: no consumer group, so every record stays\n\
             removed 0 segment(s), 0 bytes\n"
        )
    );

    assert_eq!(consume(&q, "slow", 1), 1);
    assert_eq!(consume(&q, "g", 300), 300);
    let out = ok(&["gc", &q], "");
    assert!(
        out.starts_with(&format!(
            "partition 0: removed 0 segment(s), 0 bytes; {segments} kept from offset 0: every group has processed up to offset 1 (group \"slow\")\n"
        )),
        "{out}"
    );

    ok(&["group", "delete", &q, "--group", "slow"], "");
    let out = ok(&["gc", &q], "");
    let removed = segments - 2;
    let bytes = removed * 65536;
    let first = Json::parse(&ok(&["stat", &q, "--json"], "")).get("partitions").arr()[0].get("first_offset").u64();
    assert_eq!(
        out,
        format!(
            "partition 0: removed {removed} segment(s), {bytes} bytes; 2 kept from offset {first}: every group has processed up to offset 300 (group \"g\")\n\
             removed {removed} segment(s), {bytes} bytes\n"
        )
    );
    assert_eq!(segment_files(&q), 2);
    assert!(first > 0);
    // Nothing a group still needs went: a new group gets every record kept.
    assert_eq!(consume(&q, "late", 1000), 300 - first as usize);
}

/// Replaces segment file `name` by a directory, which no unlink removes.
fn make_unremovable(q: &str, name: &str) {
    let path = format!("{q}/p0000/{name}");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(format!("{path}/keep"), b"").unwrap();
}

#[test]
fn a_failed_retention_pass_is_counted_in_stat_and_gc_fails_with_it() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, 300);
    assert_eq!(consume(&q, "slow", 1), 1);
    assert_eq!(consume(&q, "g", 300), 300);
    assert!(ok(&["stat", &q], "").contains("\nretention failures: none\n"));
    assert_eq!(retention_failures(&q).get("count").u64(), 0);
    make_unremovable(&q, "00000000000000000000.seg");
    ok(&["group", "delete", &q, "--group", "slow"], "");

    // The rolls' passes fail; the sends do not.
    let acks = ok(&["produce", &q], &lines(130));
    assert_eq!(acks.lines().count(), 130);
    assert_eq!(consume(&q, "g", 130), 130);

    let table = ok(&["stat", &q], "");
    let line = table.lines().find(|l| l.starts_with("retention failures: ")).expect(&table);
    assert!(line.contains(" in partition 0: remove ") && line.contains("00000000000000000000.seg"), "{line}");
    let failures = retention_failures(&q);
    assert!(failures.get("count").u64() >= 2, "{failures:?}");
    assert!(failures.get("error").str().contains("Is a directory"), "{failures:?}");

    let err = fails(&["gc", &q], "", 1);
    assert!(err.contains("00000000000000000000.seg") && err.contains("Is a directory"), "{err}");
}

#[test]
fn stat_gc_and_retention_ignore_entries_of_groups_that_are_not_groups() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, 300);
    std::fs::create_dir_all(format!("{q}/groups")).unwrap();
    std::fs::write(format!("{q}/groups/notes.txt"), b"ask ops first").unwrap();
    std::fs::write(format!("{q}/groups/.DS_Store"), b"").unwrap();
    assert_eq!(consume(&q, "g", 300), 300);
    ok(&["produce", &q], &lines(70)); // rolls: retention runs
    assert!(segment_files(&q) <= 3, "the passes removed what g passed: {} left", segment_files(&q));
    let stat = Json::parse(&ok(&["stat", &q, "--json"], ""));
    let names: Vec<&str> = stat.get("groups").arr().iter().map(|g| g.get("name").str()).collect();
    assert_eq!(names, ["g"]);
    assert_eq!(stat.get("retention_failures").get("count").u64(), 0);
    assert!(
        ok(&["gc", &q], "")
            .ends_with("every group has processed up to offset 300 (group \"g\")\nremoved 0 segment(s), 0 bytes\n")
    );
}

#[test]
fn a_retention_limit_set_with_durq_retention_skips_a_lagging_group_and_stat_and_gc_say_so() {
    let (_tmp, q) = queue_dir();
    produce_new(&q, 10);
    assert_eq!(
        ok(&["retention", &q], ""),
        "retention limits per partition: max_bytes=unlimited max_age_secs=unlimited\n"
    );
    assert_eq!(
        ok(&["retention", &q, "--max-bytes", "131072", "--max-age", "86400"], ""),
        "retention limits per partition: max_bytes=131072 max_age_secs=86400\n"
    );
    assert_eq!(consume(&q, "slow", 3), 3);
    assert_eq!(ok(&["produce", &q], &lines(290)).lines().count(), 290);
    let out = ok(&["gc", &q], "");
    let stat = Json::parse(&ok(&["stat", &q, "--json"], ""));
    let first = stat.get("partitions").arr()[0].get("first_offset").u64();
    assert!(first > 3, "the limit removed records group slow had not read: {out}");
    assert!(
        out.contains(&format!(
            "kept from offset {first}: the retention limits (the groups alone: every group has processed up to offset 3 (group \"slow\"))\n"
        )),
        "{out}"
    );
    let slot = &stat.get("groups").arr()[0].get("slots").arr()[0];
    assert_eq!(slot.get("skipped").u64(), first - 3);
    assert_eq!(slot.get("last_skipped").get("from").u64(), 3);
    assert_eq!(slot.get("last_skipped").get("to").u64(), first);
    assert_eq!(stat.get("retention").get("max_bytes").u64(), 131072);
    let text = ok(&["stat", &q], "");
    assert!(text.contains("retention limits per partition: max_bytes=131072 max_age_secs=86400\n"), "{text}");
    let line = format!(
        "partition 0: retention limits removed {} record(s) before the group processed them, the last offsets 3..{first},",
        first - 3
    );
    assert!(text.contains(&line), "{text}");
    assert_eq!(consume(&q, "slow", 1000), 300 - first as usize, "slow resumes at the first kept record");
    let busy = durq_while_open(&q);
    assert!(busy.contains("open"), "{busy}");
    ok(&["retention", &q, "--max-bytes", "unlimited"], "");
    assert_eq!(ok(&["retention", &q], ""), "retention limits per partition: max_bytes=unlimited max_age_secs=86400\n");
}

/// What `durq retention` says when asked to change the limits of a queue
/// some process has open.
fn durq_while_open(q: &str) -> String {
    let _open = durq::Queue::open_existing(q).unwrap();
    fails(&["retention", q, "--max-bytes", "65536"], "", 1)
}

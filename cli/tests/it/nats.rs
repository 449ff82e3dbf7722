//! The `durq` command on NATS, against a real server (the harness of
//! durq-nats's tests: `.ci/install-nats` first): `produce` prints what it
//! prints locally, `stat` shows the streams and the groups' slots,
//! `migrate` moves a local queue with its offsets and group positions and
//! is finished by running it again after a SIGKILL, `consume` prints each
//! line and commits it (at least once across a SIGKILL), `stat` lists each
//! group's members alive, lapsed or left, `tail` reads without
//! a group, `group` and `dlq` administer a group, and the commands that work
//! on local files only say so instead of taking the address for a path.

#[allow(dead_code)] // the cluster and the leader helpers are not used here
#[path = "../../../nats/tests/integration/common/mod.rs"]
mod nats_server;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::{Json, PATIENCE, Proc, cell, fails, ok, queue_dir, snapshots, wait_until};
use durq::{Options, ResetTo, Verdict};
use nats_server::{NatsServer, raw_jetstream, runtime};

/// Lines with keys (`user-N:`) and without, in one input.
fn sample_lines(n: usize) -> String {
    (0..n).map(|i| if i % 3 == 0 { format!("user-{}:keyed {i}\n", i % 7) } else { format!("line {i}\n") }).collect()
}

/// `text` matches snapshot `name`, the server's port replaced.
fn assert_snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn produce_prints_what_it_prints_locally_and_stat_shows_streams_and_slots() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let input = sample_lines(40);
    let args = ["--partitions", "3", "--key-sep", ":"];

    let on_nats = ok(&[&["produce", &url][..], &args].concat(), &input);
    let (_tmp, dir) = queue_dir();
    let locally = ok(&[&["produce", &dir][..], &args].concat(), &input);
    assert_eq!(on_nats.lines().count(), 40);
    assert_eq!(on_nats, locally, "the same positions, in input order");

    // A group's position, as a migration or a consumer leaves it.
    let (_local, local_dir) = queue_dir();
    ok(&["produce", &local_dir, "--partitions", "2", "--key-sep", ":"], &sample_lines(10));
    let queue = durq::Queue::open_existing(&local_dir).expect("open");
    drop(queue.consumer("billing").expect("register"));
    queue.reset_group("billing", ResetTo::Offset(3)).expect("reset");
    drop(queue);
    let moved = format!("{}/moved", server.url());
    ok(&["migrate", &local_dir, &moved, "--group", "billing"], "");

    assert_snapshot("nats_stat", &ok(&["stat", &url], ""));
    assert_snapshot("nats_stat_with_group", &ok(&["stat", &moved], ""));
    let (local, stat) = (crate::common::stat(Path::new(&local_dir)), Json::parse(&ok(&["stat", &moved, "--json"], "")));
    assert_eq!(
        crate::common::next_offsets(&stat),
        crate::common::next_offsets(&local),
        "the same offsets, read the same way"
    );
    assert_eq!(crate::common::committed(&stat, "billing"), crate::common::committed(&local, "billing"));
    assert_snapshot("nats_stat_json", &ok(&["stat", &moved, "--json"], ""));
}

#[test]
fn commands_for_local_files_say_so_and_missing_queues_are_errors() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/absent", server.url());
    let local_only = "on nats:// works on a local queue's files only";
    for (args, says) in [
        (&["verify", &url][..], format!("`durq verify` {local_only}")),
        (&["gc", &url], format!("`durq gc` {local_only}")),
        (&["retention", &url], format!("`durq retention` {local_only}")),
    ] {
        let stderr = fails(args, "", 1);
        assert!(stderr.contains(&says), "durq {args:?}: {stderr}");
        assert!(stderr.contains(&url), "names the address: {stderr}");
    }
    for args in [
        &["stat", &url][..],
        &["stat", &url, "--watch"],
        &["consume", &url, "--group", "g"],
        &["tail", &url],
        &["group", "reset", &url, "--group", "g", "--to", "latest"],
        &["group", "delete", &url, "--group", "g"],
        &["dlq", &url, "--group", "g", "list"],
    ] {
        let stderr = fails(args, "", 1);
        assert!(stderr.contains("is not a durq queue: the server has no queue \"absent\""), "durq {args:?}: {stderr}");
    }
    let stderr = fails(&["stat", "nats://127.0.0.1:1/q"], "", 1);
    assert!(stderr.contains("cannot reach a NATS server at nats://127.0.0.1:1"), "{stderr}");
    let stderr = fails(&["produce", &format!("{}/a.b", server.url())], "x\n", 1);
    assert!(stderr.contains("invalid queue \"a.b\""), "{stderr}");
}

/// Every record of the local partition `p` from `offset` and every message
/// of the NATS queue's partition `p`, as `(offset, key, payload)`.
type Records = Vec<(u64, Option<Vec<u8>>, Vec<u8>)>;

fn local_records(dir: &str, p: u32, offset: u64) -> Records {
    let queue = durq::Queue::open_existing(dir).expect("open local");
    let records = queue.read_at(p, offset, usize::MAX).expect("read local");
    records.into_iter().map(|r| (r.position.offset, r.key, r.payload)).collect()
}

/// Empty if the stream does not exist (yet).
fn nats_records(server: &NatsServer, queue: &str, p: u32) -> Records {
    runtime().block_on(async {
        let jetstream = raw_jetstream(&server.url()).await;
        let Ok(stream) = jetstream.get_stream(durq_nats::record::stream_name(queue, p)).await else {
            return Vec::new();
        };
        let state = stream.get_info().await.expect("info").state;
        let mut records = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            let m = stream.get_raw_message(sequence).await.expect("message");
            let key = m
                .headers
                .get(durq_nats::record::KEY_HEADER)
                .map(|k| durq_nats::record::decode_key(k.as_str()).expect("a durq key"));
            records.push((m.sequence - 1, key, m.payload.to_vec()));
        }
        records
    })
}

#[test]
fn migrate_killed_midway_then_run_again_moves_every_record_once_at_its_offset() {
    let server = NatsServer::start_blocking();
    let (_tmp, dir) = queue_dir();
    ok(&["produce", &dir, "--partitions", "2", "--key-sep", ":"], &sample_lines(3000));
    let queue = durq::Queue::open_with(&dir, Options::default()).expect("open");
    drop(queue.consumer("billing").expect("register"));
    queue.reset_group("billing", ResetTo::Offset(100)).expect("reset");
    let ends: Vec<u64> = (0..2).map(|p| queue.offsets(p).expect("offsets").1).collect();
    drop(queue);
    let to_copy = (ends[0] - 100 + ends[1] - 100) as usize;
    let url = format!("{}/moved", server.url());

    // The first run blocks on a small, unread stdout pipe part-way (each
    // record's line is written once the server stored it), and is killed.
    let mut first = Proc::spawn("migrate", &["migrate", &dir, &url, "--group", "billing"], false);
    first.set_stdout_pipe_bytes(4096);
    first.hold_stdout(true);
    let blocked = || first.stdout_unread() > 0 && first.blocked_writing();
    assert!(wait_until(PATIENCE, blocked), "the migration writes its positions");
    first.kill();
    let copied: usize = (0..2).map(|p| nats_records(&server, "moved", p).len()).sum();
    assert!(copied > 0 && copied < to_copy, "killed part-way: {copied} of {to_copy} records on the server");
    let stderr = fails(&["stat", &url], "", 1);
    assert!(stderr.contains("the server has no queue \"moved\""), "not a queue until done: {stderr}");

    let output = ok(&["migrate", &dir, &url, "--group", "billing"], "");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[lines.len() - 2..], ["group billing 0 100", "group billing 1 100"]);
    assert_eq!(lines.len() - 2, to_copy - copied, "the second run copies only what is left");

    for p in 0..2 {
        let local = local_records(&dir, p, 100);
        assert_eq!(local.len() as u64, ends[p as usize] - 100);
        assert_eq!(nats_records(&server, "moved", p), local, "partition {p}: every record once, at its offset");
    }
    let stat = Json::parse(&ok(&["stat", &url, "--json"], ""));
    assert_eq!(crate::common::committed(&stat, "billing"), [100, 100]);
    let p = durq::partition_of_key(b"user-0", 2);
    let sent = ok(&["produce", &url, "--key-sep", ":"], "user-0:after\n");
    assert_eq!(sent, format!("{p} {}\n", ends[p as usize]), "producing goes on at the next offset");
}

/// Lines `line 0` .. `line n-1`, each ending in a newline.
fn numbered(n: usize) -> String {
    (0..n).map(|i| format!("line {i}\n")).collect()
}

/// Whether group `group` of the queue at `url` has committed every record.
fn all_committed(url: &str, group: &str) -> bool {
    let stat = Json::parse(&ok(&["stat", url, "--json"], ""));
    crate::common::committed(&stat, group) == crate::common::next_offsets(&stat)
}

#[test]
fn consume_prints_every_line_once_and_commits_it() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let input = numbered(300);
    ok(&["produce", &url, "--partitions", "3"], &input);

    let out = ok(&["consume", &url, "--group", "g", "--max-batch", "16", "--idle-exit", "1"], "");
    let mut printed: Vec<&str> = out.lines().collect();
    printed.sort_unstable();
    let mut sent: Vec<&str> = input.lines().collect();
    sent.sort_unstable();
    assert_eq!(printed, sent, "every line, once");
    assert!(all_committed(&url, "g"), "each batch committed once printed");
    let again = ok(&["consume", &url, "--group", "g", "--idle-exit", "1"], "");
    assert_eq!(again, "", "a second consume of the group prints nothing");

    // Another group starts from the beginning; JSON says how often a record
    // was delivered.
    let json = ok(&["consume", &url, "--group", "h", "--format", "json", "--limit", "1"], "");
    let record = Json::parse(json.trim_end());
    assert_eq!(record.get("deliveries").u64(), 1);
    assert!(record.get("payload").str().starts_with("line "), "{json}");

    let stderr = fails(&["consume", &url, "--group", "g", "--commit", "buffered"], "", 1);
    assert!(stderr.contains("`durq consume --commit buffered` has no meaning on nats://"), "{stderr}");
}

#[test]
fn consume_sigkilled_midway_then_run_again_prints_every_line_at_least_once() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let input = numbered(3000);
    ok(&["produce", &url, "--partitions", "2"], &input);
    let consume = ["consume", &url, "--group", "g", "--lease-timeout", "1"];

    // Blocked writing a batch to a full, unread stdout: that batch is not
    // committed when the process is killed.
    let mut first = Proc::spawn("consume", &consume, false);
    first.set_stdout_pipe_bytes(4096);
    first.hold_stdout(true);
    assert!(wait_until(PATIENCE, || first.stdout_unread() > 0 && first.blocked_writing()), "consume writes");
    first.kill();
    let mut printed = first.lines();
    let before_kill = printed.len();
    assert!(before_kill < 3000, "killed part-way: {before_kill} lines printed");
    assert!(!all_committed(&url, "g"), "killed before committing everything");

    // Again until the group has committed everything: the first run's slots
    // are taken over once its lease (1 s) expired.
    let again = [&consume[..], &["--idle-exit", "3"]].concat();
    assert!(
        wait_until(PATIENCE, || {
            printed.extend(ok(&again, "").lines().map(str::to_owned));
            all_committed(&url, "g")
        }),
        "the group commits every record"
    );
    let distinct: BTreeSet<&str> = printed.iter().map(String::as_str).collect();
    let lost = input.lines().filter(|line| !distinct.contains(line)).count();
    println!(
        "consume SIGKILLed after {before_kill} lines; {} printed in all, {} again, lost {lost}",
        printed.len(),
        printed.len() - distinct.len()
    );
    assert_eq!(lost, 0, "every line printed at least once");
    assert_eq!(distinct.len(), 3000, "nothing but the lines sent");
}

#[test]
fn tail_prints_without_a_group_and_follows_new_records() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let positions = ok(&["produce", &url, "--partitions", "2", "--key-sep", ":"], &sample_lines(50));
    let in_partition_1 = positions.lines().filter(|l| l.starts_with("1 ")).count();
    assert!(in_partition_1 > 3, "{positions}");

    let all = ok(&["tail", &url], "");
    assert_eq!(all.lines().count(), 50, "to the end, then exits: {all}");
    let from = ok(&["tail", &url, "--partition", "1", "--from", "3", "--format", "json"], "");
    let records: Vec<Json> = from.lines().map(Json::parse).collect();
    assert_eq!(records.len(), in_partition_1 - 3, "{from}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!((r.get("partition").u64(), r.get("offset").u64()), (1, 3 + i as u64), "{from}");
    }
    assert_eq!(ok(&["tail", &url, "--from", "latest"], ""), "", "nothing sent since");

    let mut follow = Proc::spawn("tail", &["tail", &url, "-f"], false);
    assert!(follow.wait_stdout(PATIENCE, |lines| lines.len() == 50), "the records there");
    ok(&["produce", &url, "--key-sep", ":"], "k:after\n");
    assert!(follow.wait_stdout(PATIENCE, |lines| lines.last().is_some_and(|l| l == "after")), "a record sent after");
    follow.kill();
    let stat = Json::parse(&ok(&["stat", &url, "--json"], ""));
    assert!(stat.get("groups").arr().is_empty(), "tail joins no group");
}

#[test]
fn stat_watch_prints_snapshots_with_rates_in_and_out() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/watched", server.url());
    ok(&["produce", &url, "--partitions", "1"], "1\n2\n3\n4\n");
    ok(&["consume", &url, "--group", "g", "--limit", "1"], "");
    let mut watch = Proc::spawn("stat --watch", &["stat", &url, "--watch", "0.1"], false);
    assert!(watch.wait_stdout(PATIENCE, |lines| snapshots(lines).len() >= 2), "{:?}", watch.stderr_lines());
    let first = &snapshots(&watch.lines())[0];
    assert_eq!((cell(first, "IN/S"), cell(first, "OUT/S")), ("-".into(), "-".into()), "no rate yet: {first:?}");
    assert_eq!(
        (cell(first, "NEXT"), cell(first, "COMMITTED"), cell(first, "LAG"), cell(first, "STATE")),
        ("4".into(), "1".into(), "3".into(), "released".into()),
        "{first:?}"
    );

    ok(&["produce", &url], "5\n6\n");
    ok(&["consume", &url, "--group", "g", "--limit", "3"], "");
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
    watch.kill();
    assert_eq!(watch.stderr_lines(), Vec::<String>::new());

    let mut json = Proc::spawn("stat --watch --json", &["stat", &url, "--json", "--watch", "0.1"], false);
    assert!(json.wait_stdout(PATIENCE, |lines| lines.len() >= 2), "{:?}", json.stderr_lines());
    for line in &json.lines()[..2] {
        assert_eq!(crate::common::committed(&Json::parse(line), "g"), [4]);
    }
    json.kill();
}

#[test]
fn group_reset_and_delete_and_dlq_list_and_replay_round_trip() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let input = numbered(10);
    ok(&["produce", &url], &input);
    let consume = ["consume", &url, "--group", "g", "--idle-exit", "1"];
    assert_eq!(ok(&consume, ""), input);

    assert_eq!(ok(&["group", "reset", &url, "--group", "g", "--to", "4"], ""), "0 4\n");
    assert_eq!(ok(&consume, ""), numbered(10).lines().skip(4).map(|l| format!("{l}\n")).collect::<String>());
    let stderr = fails(&["group", "reset", &url, "--group", "nobody", "--to", "earliest"], "", 1);
    assert!(stderr.contains("no group \"nobody\""), "{stderr}");

    // Group `d` dead-letters `line 3` and processes the rest.
    let queue = durq_nats::Queue::open_existing(&url).expect("open");
    let mut consumer = queue.consumer("d").expect("join");
    let mut done = 0;
    while done < 10 {
        done += consumer
            .process_each(Duration::from_secs(1), |m| match m.payload() {
                b"line 3" => Verdict::DeadLetter("not an order".into()),
                _ => Verdict::Done,
            })
            .expect("process");
    }
    drop(consumer);
    let list = ok(&["dlq", &url, "--group", "d", "list"], "");
    assert_eq!(
        list, "dlq_offset=0 partition=0 offset=3 deliveries=1 error=\"not an order\" payload=\"line 3\"\n",
        "{list}"
    );
    assert_eq!(ok(&["dlq", &url, "--group", "d", "replay"], ""), "1\n");
    assert_eq!(ok(&["dlq", &url, "--group", "d", "list"], ""), "", "replayed letters leave the list");
    let replayed = ok(&["consume", &url, "--group", "d", "--idle-exit", "1"], "");
    assert_eq!(replayed, "line 3\n", "sent back to the end of the queue");

    let deleted = ok(&["group", "delete", &url, "--group", "d"], "");
    assert!(deleted.starts_with("deleted group \"d\""), "{deleted}");
    let stat = Json::parse(&ok(&["stat", &url, "--json"], ""));
    let groups: Vec<&str> = stat.get("groups").arr().iter().map(|g| g.get("name").str()).collect();
    assert_eq!(groups, ["g"]);
}

/// `durq stat --json`'s members of `group`, as (liveness, member).
fn members<'a>(stat: &'a Json, group: &str) -> Vec<(&'a str, &'a Json)> {
    let group = stat.get("groups").arr().iter().find(|g| g.get("name").str() == group).expect("the group");
    group.get("members").arr().iter().map(|m| (m.get("liveness").str(), m)).collect()
}

#[test]
fn stat_shows_each_member_alive_lapsed_or_left_with_the_slots_it_holds() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    ok(&["produce", &url, "--partitions", "2"], &numbered(4));
    let queue = durq_nats::Queue::open_existing(&url).expect("open");
    let options = durq::ConsumerOptions::default().lease_timeout(Duration::from_secs(60));
    let first = queue.consumer_with("billing", options.clone()).expect("first member");
    assert_eq!(first.held_partitions(), [0, 1], "the only member holds every slot");
    drop(queue.consumer_with("billing", options).expect("a member that leaves"));
    // A `durq consume` joins (it takes nothing: the first member is alive
    // and holds every slot) and is SIGKILLed: its key lapses after 1 s.
    let mut killed = Proc::spawn("consume", &["consume", &url, "--group", "billing", "--lease-timeout", "1"], false);
    let stat_json = || Json::parse(&ok(&["stat", &url, "--json"], ""));
    let alive_count = |stat: &Json| members(stat, "billing").iter().filter(|(l, _)| *l == "alive").count();
    assert!(wait_until(PATIENCE, || alive_count(&stat_json()) == 2), "consume joins");
    killed.kill();
    assert!(
        wait_until(PATIENCE, || members(&stat_json(), "billing").iter().any(|(l, _)| *l == "lapsed")),
        "the killed member's key lapses"
    );

    let stat = stat_json();
    let group = &stat.get("groups").arr()[0];
    let holder = group.get("slots").arr()[0].get("member").str();
    for slot in group.get("slots").arr() {
        assert_eq!((slot.get("holder").str(), slot.get("member").str()), ("alive", holder), "the holder's liveness");
    }
    let by_liveness = members(&stat, "billing");
    let states: BTreeSet<&str> = by_liveness.iter().map(|(l, _)| *l).collect();
    assert_eq!((by_liveness.len(), states), (3, BTreeSet::from(["alive", "lapsed", "left"])));
    let member = |liveness| by_liveness.iter().find(|(l, _)| *l == liveness).expect(liveness).1;
    let alive = member("alive");
    assert_eq!(alive.get("id").str(), holder);
    assert_eq!(alive.get("slots").arr().iter().map(Json::u64).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(alive.get("lease_timeout_ms").u64(), 60_000);
    let lapsed = member("lapsed");
    assert_eq!(lapsed.get("lease_timeout_ms").u64(), 1_000);
    assert!(lapsed.get("age_ms").u64() >= 1_000 && lapsed.get("slots").arr().is_empty(), "{lapsed:?}");
    assert!(matches!(member("left").get("lease_timeout_ms"), Json::Null), "a member that left announces no lease");

    // The table: one row per member, STATE and SLOTS last.
    let table = ok(&["stat", &url], "");
    let row = |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no row {id}: {table}"));
    let words = |id| row(id).split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let alive_row = words(holder);
    assert_eq!((&alive_row[1][..], &alive_row[4][..], &alive_row[5][..]), ("60000ms", "alive", "0,1"), "{table}");
    let lapsed_row = words(lapsed.get("id").str());
    assert_eq!((&lapsed_row[1][..], lapsed_row.last().unwrap().as_str()), ("1000ms", "-"), "{table}");
    assert!(lapsed_row.contains(&"lapsed".to_owned()), "{table}");
    let left_row = words(member("left").get("id").str());
    assert_eq!((&left_row[1][..], left_row.last().unwrap().as_str()), ("-", "-"), "{table}");
    assert!(left_row.contains(&"left".to_owned()), "{table}");
    // A slot's row starts with its partition as a word of its own (a member
    // id may start with a digit too).
    let slot_rows =
        table.lines().filter(|l| matches!(l.split_whitespace().next(), Some("0" | "1")) && l.contains(holder));
    assert!(slot_rows.map(|l| l.split_whitespace().last().unwrap()).eq(["alive", "alive"]), "{table}");
    let heading = ["MEMBER", "LEASE", "HEARTBEAT", "STATE", "SLOTS"];
    assert!(table.lines().any(|l| l.split_whitespace().eq(heading)), "{table}");
    drop(first);
}

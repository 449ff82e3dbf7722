//! The `durq` command on NATS, against a real server (the harness of
//! durq-nats's tests: `.ci/install-nats` first): `produce` prints what it
//! prints locally, `stat` shows the streams and the groups' slots,
//! `migrate` moves a local queue with its offsets and group positions and
//! is finished by running it again after a SIGKILL, and the commands not
//! built on NATS yet say so instead of taking the address for a path.

mod common;
#[allow(dead_code)] // the cluster and the leader helpers are not used here
#[path = "../../nats/tests/integration/common/mod.rs"]
mod nats_server;

use std::path::Path;

use common::{Json, PATIENCE, Proc, fails, ok, queue_dir, wait_until};
use durq::{Options, ResetTo};
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
    let (local, stat) = (common::stat(Path::new(&local_dir)), Json::parse(&ok(&["stat", &moved, "--json"], "")));
    assert_eq!(common::next_offsets(&stat), common::next_offsets(&local), "the same offsets, read the same way");
    assert_eq!(common::committed(&stat, "billing"), common::committed(&local, "billing"));
    assert_snapshot("nats_stat_json", &ok(&["stat", &moved, "--json"], ""));
}

#[test]
fn commands_not_built_on_nats_say_so_and_missing_queues_are_errors() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/absent", server.url());
    let consumer = "on nats:// needs the NATS consumer (issue 14)";
    let local_only = "on nats:// works on a local queue's files only";
    for (args, says) in [
        (&["consume", &url, "--group", "g"][..], format!("`durq consume` {consumer}")),
        (&["tail", &url], format!("`durq tail` {consumer}")),
        (&["group", "reset", &url, "--group", "g", "--to", "latest"], format!("`durq group reset` {consumer}")),
        (&["group", "delete", &url, "--group", "g"], format!("`durq group delete` {consumer}")),
        (&["dlq", &url, "--group", "g", "list"], format!("`durq dlq` {consumer}")),
        (&["verify", &url], format!("`durq verify` {local_only}")),
        (&["gc", &url], format!("`durq gc` {local_only}")),
        (&["retention", &url], format!("`durq retention` {local_only}")),
        (&["stat", &url, "--watch"], "`durq stat --watch` on nats:// is not built yet".to_owned()),
    ] {
        let stderr = fails(args, "", 1);
        assert!(stderr.contains(&says), "durq {args:?}: {stderr}");
        assert!(stderr.contains(&url), "names the address: {stderr}");
    }
    let stderr = fails(&["stat", &url], "", 1);
    assert!(stderr.contains("is not a durq queue: the server has no queue \"absent\""), "{stderr}");
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
    assert_eq!(common::committed(&stat, "billing"), [100, 100]);
    let p = durq::partition_of_key(b"user-0", 2);
    let sent = ok(&["produce", &url, "--key-sep", ":"], "user-0:after\n");
    assert_eq!(sent, format!("{p} {}\n", ends[p as usize]), "producing goes on at the next offset");
}

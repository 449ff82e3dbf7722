//! `Queue::stat`'s members against a real server: each member key of a
//! group read as it stands, without joining, with the lease its member
//! announced, the key's age by the server's clock, the liveness that
//! follows (alive, lapsed, left) and the slots each member holds; a member
//! value durq did not write is an error naming its key.

use std::time::Duration;

use crate::common::{NatsServer, raw_jetstream, runtime};
use durq::{ConsumerOptions, Options};
use durq_nats::member_stat::{Liveness, MemberStat};
use durq_nats::queue_stat::GroupStat;
use durq_nats::{Error, Queue};

/// Longer than the test: the live member never lapses while it runs.
const LONG_LEASE: Duration = Duration::from_secs(60);
/// The lease a stand-in for a vanished member announces.
const SHORT_LEASE: Duration = Duration::from_millis(100);
/// A member id as members write it (32 hex digits), nobody's.
const VANISHED: &str = "00112233445566778899aabbccddeeff";

fn member<'a>(group: &'a GroupStat, id: &str) -> &'a MemberStat {
    group.members.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("no member {id}: {:?}", group.members))
}

#[test]
fn stat_lists_each_member_with_its_lease_age_liveness_and_slots() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let url = format!("{}/orders", server.url());
    let queue = Queue::open_with(&url, Options::default().partitions(2)).expect("open");
    let options = ConsumerOptions::default().lease_timeout(LONG_LEASE);
    let alive = queue.consumer_with("billing", options.clone()).expect("first member");
    assert_eq!(alive.held_partitions(), [0, 1], "the only member holds every slot");
    // A member that joins and leaves: it deletes its key on the way out.
    drop(queue.consumer_with("billing", options).expect("second member"));
    // A member whose process vanished: its key stays, unchanged past its
    // lease (written here, as a member writes it, and never again).
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let bucket = rt.block_on(raw.get_key_value("DURQ_orders_G_billing")).expect("the group's bucket");
    let value = (SHORT_LEASE.as_millis() as u64).to_le_bytes();
    rt.block_on(bucket.put(format!("m-{VANISHED}"), value.to_vec().into())).expect("member key");
    std::thread::sleep(SHORT_LEASE * 3);

    let stat = queue.stat().expect("stat");
    let group = &stat.groups[0];
    assert_eq!(group.members.len(), 3, "{:?}", group.members);
    let holder = group.slots[0].as_ref().and_then(|s| s.holder()).expect("slot 0 held").to_owned();
    let first = member(group, &holder);
    assert_eq!((first.liveness, first.lease_timeout), (Liveness::Alive, Some(LONG_LEASE)));
    assert!(first.age < LONG_LEASE && first.written_ms > 0, "{first:?}");
    assert_eq!(group.held_by(&holder), [0, 1]);

    let vanished = member(group, VANISHED);
    assert_eq!((vanished.liveness, vanished.lease_timeout), (Liveness::Lapsed, Some(SHORT_LEASE)));
    assert!(vanished.age >= SHORT_LEASE, "{vanished:?}");
    assert!(group.held_by(VANISHED).is_empty());

    let left: Vec<&MemberStat> = group.members.iter().filter(|m| m.id != holder && m.id != VANISHED).collect();
    assert_eq!(left.len(), 1, "{:?}", group.members);
    assert_eq!((left[0].liveness, left[0].lease_timeout), (Liveness::Left, None));
    assert!(group.held_by(&left[0].id).is_empty());

    // Read-only: the stat wrote nothing (the live member's heartbeats are
    // every 20 s, so the bucket's last revision is the stand-in's).
    let stream = rt.block_on(raw.get_stream("KV_DURQ_orders_G_billing")).expect("the bucket's stream");
    let last = stream.cached_info().state.last_sequence;
    assert_eq!(last, vanished.revision, "nothing written after the stand-in's key");

    // A member value durq did not write: an error naming the key.
    rt.block_on(bucket.put("m-stranger", "abc".into())).expect("a foreign value");
    let err = queue.stat().expect_err("a bad member value");
    match Error::of(&err) {
        Some(Error::CorruptSlot { slot, position: 3, .. }) => assert_eq!(slot, "m-stranger"),
        other => panic!("{other:?} from {err:?}"),
    }
    drop(alive);
}

/// The names of every stream on the server, sorted.
fn stream_names(url: &str) -> Vec<String> {
    runtime().block_on(async {
        use futures_util::StreamExt;
        let names: Vec<String> =
            raw_jetstream(url).await.stream_names().map(|name| name.expect("a stream name")).collect().await;
        let mut names = names;
        names.sort();
        names
    })
}

#[test]
fn stat_creates_no_bucket_not_even_for_a_group_an_older_build_made() {
    let server = NatsServer::start_blocking();
    let url = format!("{}/orders", server.url());
    let queue = Queue::open_with(&url, Options::default().partitions(2)).expect("open");
    drop(queue.consumer_with("billing", ConsumerOptions::default().lease_timeout(LONG_LEASE)).expect("a member"));
    // A group made before delivery marks had a bucket of their own.
    runtime().block_on(async {
        raw_jetstream(&server.url()).await.delete_key_value("DURM_orders_G_billing").await.expect("delete the marks")
    });
    let before = stream_names(&server.url());
    assert!(!before.iter().any(|n| n.starts_with("KV_DURM_")), "{before:?}");

    let stat = queue.stat().expect("stat");
    assert_eq!(stat.groups[0].committed(), [0, 0]);
    assert_eq!(stream_names(&server.url()), before, "stat created nothing");
}

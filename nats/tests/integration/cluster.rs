//! The fencing primitive on a three-node cluster (bucket with three
//! replicas) when the server leading the bucket's stream is SIGKILLed: a new
//! leader is elected, the committed checkpoint is intact, compare-and-set
//! still admits the holder and still fences a zombie, and the killed node
//! restarts on its own store and catches up. The producer under `Sync` on
//! the same cluster: through the SIGKILL of a partition stream's leader,
//! and through the stop (SIGKILL, or SIGTERM) and restart of all three
//! servers, no acknowledged record is lost and none is stored twice. A
//! group consuming on the same cluster, through the SIGKILL of a partition
//! stream's leader that also holds a member's cursor, and through a SIGKILL and restart of all three servers:
//! every acknowledged record is processed, none as two records. Members
//! joining a group that does not exist yet at the same instant: each gets
//! its consumer while the group's bucket is still electing its first leader.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;

use crate::common::{Cluster, FAILOVER_WITHIN, stream_leader, wait_for_leader};
use durq_nats::{Error, Lease, SlotState, Slots, connect};

/// The JetStream stream behind a key-value bucket.
const STREAM: &str = "KV_group";

async fn read(slots: &Slots) -> SlotState {
    slots.read("p0").await.expect("read").expect("p0 written")
}

/// Commits through a client that may still be reconnecting after its server
/// died: a request that gets no reply is sent again (if it took effect, the
/// next attempt adopts it, see `src/slot.rs`, "Lost replies").
async fn commit_through_failover(slots: &Slots, lease: &mut Lease, checkpoint: u64) -> Result<(), Error> {
    let deadline = Instant::now() + FAILOVER_WITHIN;
    loop {
        match slots.commit(lease, checkpoint).await {
            Err(Error::Engine { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            outcome => return outcome,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_compare_and_set_survives_the_loss_of_the_streams_leader() {
    let mut cluster = Cluster::start().await;
    let holder = connect(&cluster.urls()).await.expect("connect");
    let slots = Slots::open(&holder, "group", 3).await.expect("open a three-replica bucket");
    let mut lease = slots.take("p0", "a", None).await.expect("take");
    slots.commit(&mut lease, 41).await.expect("commit 41");

    let raw = async_nats::connect(cluster.addresses()).await.expect("raw connect");
    let old_leader = stream_leader(&raw, STREAM).await.expect("the bucket's stream has a leader");
    cluster.kill(&old_leader);
    let killed_at = Instant::now();

    let new_leader = wait_for_leader(&raw, STREAM, Some(&old_leader)).await;
    assert_ne!(new_leader, old_leader);
    let elected_after = killed_at.elapsed();
    // A member connected only to the surviving nodes.
    let survivors: Vec<String> = cluster.names().into_iter().filter(|n| *n != old_leader).collect();
    let urls = survivors.iter().map(|n| cluster.url_of(n)).collect::<Vec<_>>().join(",");
    // The JetStream meta leader may have died with the stream's leader: its
    // election, on a loaded machine, can outlast one connect's account check.
    let deadline = Instant::now() + FAILOVER_WITHIN;
    let survivor = loop {
        match connect(&urls).await {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect to survivors: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("connect to survivors: {e}"),
        }
    };
    let other = Slots::open(&survivor, "group", 3).await.expect("open");

    let state = read(&other).await;
    assert_eq!((state.holder(), state.checkpoint(), state.epoch()), (Some("a"), 41, Some(lease.epoch())));

    commit_through_failover(&slots, &mut lease, 42).await.expect("the holder commits under the new leader");
    eprintln!(
        "leader {old_leader} SIGKILLed; {new_leader} elected after {elected_after:?}; the holder's commit went \
         through {:?} after the kill",
        killed_at.elapsed()
    );
    let state = read(&other).await;
    assert_eq!(state.checkpoint(), 42);

    // A takeover under the new leader fences the old holder.
    let lease_b = other.take("p0", "b", Some(&state)).await.expect("take over");
    let err = commit_through_failover(&slots, &mut lease, 43).await.expect_err("the old holder is a zombie now");
    assert!(matches!(err, Error::Fenced { .. }), "{err:?}");
    assert_eq!((read(&other).await.checkpoint(), read(&other).await.epoch()), (42, Some(lease_b.epoch())));

    // The killed node comes back on its own store and ports, and holds
    // the same history as a current replica.
    cluster.restart(&old_leader).await;
    wait_until_replica_is_current(&raw, &old_leader).await;
    let rejoined = Slots::open(&connect(&cluster.url_of(&old_leader)).await.expect("connect"), "group", 3)
        .await
        .expect("open through the restarted node");
    assert_eq!(read(&rejoined).await, read(&other).await);
}

/// Waits until `node` is listed as a current replica of the bucket's stream
/// (or leads it).
async fn wait_until_replica_is_current(raw: &async_nats::Client, node: &str) {
    let context = async_nats::jetstream::new(raw.clone());
    let deadline = Instant::now() + FAILOVER_WITHIN;
    while Instant::now() < deadline {
        if let Ok(mut stream) = context.get_stream(STREAM).await
            && let Ok(info) = stream.info().await
            && let Some(cluster) = &info.cluster
            && (cluster.leader.as_deref() == Some(node)
                || cluster.replicas.iter().any(|peer| peer.name == node && peer.current && !peer.offline))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{node} did not become a current replica of {STREAM} within {FAILOVER_WITHIN:?}");
}

/// The producer on a three-node cluster under `Sync`: records acknowledged
/// before the partition stream's leader is SIGKILLed are all still there
/// afterwards, at the positions their sends returned; sends during the
/// election wait (resending with their message ids) and are acknowledged
/// once; and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_acknowledged_under_sync_survives_the_loss_of_the_streams_leader() {
    let mut cluster = Cluster::start().await;
    let url = format!("{}/ha", cluster.urls());
    let options = durq::Options::default().durability(durq::Durability::Sync);
    let queue = durq_nats::Queue::open_async(&url, options).await.expect("open on the cluster");
    assert_eq!(queue.replicas(), 3);
    let producer = queue.producer();
    let stream = durq_nats::record::stream_name("ha", 0);

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let payload = format!("before {i}");
        acknowledged.push((producer.send_async(&payload).await.expect("send"), payload));
    }
    let raw = async_nats::connect(cluster.addresses()).await.expect("raw connect");
    let old_leader = stream_leader(&raw, &stream).await.expect("the partition's stream has a leader");
    cluster.kill(&old_leader);
    let killed_at = Instant::now();
    for i in 0..20 {
        let payload = format!("after {i}");
        acknowledged.push((producer.send_async(&payload).await.expect("send through the election"), payload));
    }
    let new_leader = wait_for_leader(&raw, &stream, Some(&old_leader)).await;
    eprintln!(
        "leader {old_leader} SIGKILLed; 20 sends after it acknowledged within {:?}; {new_leader} leads",
        killed_at.elapsed()
    );

    let stored = crate::common::stream_messages(&async_nats::jetstream::new(raw), &stream).await;
    let found: Vec<(u64, String)> =
        stored.iter().map(|m| (m.sequence - 1, String::from_utf8(m.payload.to_vec()).expect("utf-8"))).collect();
    let expected: Vec<(u64, String)> = acknowledged.iter().map(|(p, payload)| (p.offset, payload.clone())).collect();
    assert_eq!(found, expected, "every acknowledged record, once, where its send said");
}

/// How the HA test stops the whole cluster.
#[derive(Debug, Clone, Copy)]
enum StopAll {
    /// SIGKILL each of the three servers, one right after another.
    Kill,
    /// SIGTERM to all three, each exiting by itself.
    Terminate,
}

/// Senders of the HA tests, and what came back.
const SENDERS: usize = 4;
/// Records acknowledged before the stop, and again after the restart,
/// before the test looks.
const ACKNOWLEDGED_EACH_SIDE: usize = 40;
/// How long the cluster may take to take records again after the restart.
const BACK_WITHIN: Duration = Duration::from_secs(90);

/// Stops all three servers while four producers send under `Sync` to a
/// two-partition, three-replica queue, starts all three again on their
/// stores, and checks the streams: every acknowledged record is stored
/// once, at the position its send returned, and no record (acknowledged or
/// not) is stored twice. Prints acknowledged / lost / duplicated.
async fn stop_all_three_while_producing(how: StopAll) {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut cluster = Cluster::start().await;
    let url = format!("{}/all", cluster.urls());
    let options = durq::Options::default().partitions(2).durability(durq::Durability::Sync);
    let queue = durq_nats::Queue::open_async(&url, options).await.expect("open on the cluster");
    assert_eq!(queue.replicas(), 3);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (producer, acknowledged, stop) = (queue.producer(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let payload = format!("sender {s} record {i}");
                    let outcome = producer.send_async(&payload).await;
                    if outcome.is_ok() {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.push((outcome, payload));
                    i += 1;
                }
                sent
            })
        })
        .collect();
    let wait_for = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            let deadline = Instant::now() + BACK_WITHIN;
            while acknowledged.load(Ordering::Relaxed) < count {
                assert!(Instant::now() < deadline, "{count} records not acknowledged within {BACK_WITHIN:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    wait_for(ACKNOWLEDGED_EACH_SIDE).await;
    match how {
        StopAll::Kill => cluster.kill_all(),
        StopAll::Terminate => cluster.terminate_all(),
    }
    let before_stop = acknowledged.load(Ordering::Relaxed);
    // The senders' requests go unanswered meanwhile; each keeps resending
    // its record with its message id.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting = Instant::now();
    cluster.restart_all().await;
    wait_for(before_stop + ACKNOWLEDGED_EACH_SIDE).await;
    let back_after = restarting.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.expect("a sender panicked"));
    }

    let raw = async_nats::jetstream::new(async_nats::connect(cluster.addresses()).await.expect("raw connect"));
    let mut stored: HashMap<(u32, u64), String> = HashMap::new();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for partition in 0..2 {
        let stream = durq_nats::record::stream_name("all", partition);
        for message in crate::common::stream_messages(&raw, &stream).await {
            let payload = String::from_utf8(message.payload.to_vec()).expect("utf-8");
            *copies.entry(payload.clone()).or_default() += 1;
            stored.insert((partition, message.sequence - 1), payload);
        }
    }
    let (mut acked, mut lost, mut failed, mut failed_stored) = (0, Vec::new(), 0, 0);
    for (outcome, payload) in &sent {
        match outcome {
            Ok(position) => {
                acked += 1;
                if stored.get(&(position.partition, position.offset)) != Some(payload) {
                    lost.push((position, payload));
                }
            }
            Err(e) => {
                eprintln!("unacknowledged: {payload}: {e}");
                failed += 1;
                failed_stored += usize::from(copies.contains_key(payload));
            }
        }
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{how:?} all three servers while {SENDERS} producers sent: {acked} acknowledged ({before_stop} before the \
         stop), lost {}, duplicated {}; {failed} sends failed ({failed_stored} of them stored once); {} records \
         stored; the cluster took records again {back_after:?} after the restart began",
        lost.len(),
        duplicated.len(),
        stored.len(),
    );
    assert!(lost.is_empty(), "acknowledged records not stored at their positions: {lost:?}");
    assert!(duplicated.is_empty(), "records stored more than once: {duplicated:?}");
    assert_eq!(stored.len(), acked + failed_stored, "every stored record is one that was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_all_three_servers_loses_and_duplicates_no_acknowledged_record() {
    stop_all_three_while_producing(StopAll::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_all_three_servers_loses_and_duplicates_no_acknowledged_record() {
    stop_all_three_while_producing(StopAll::Terminate).await;
}

/// How the consumer-side HA test loses servers.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL the leader of a partition's stream that also holds a
    /// member's cursor (the server-side consumer it reads with), so that
    /// the stream elects a leader and the reader loses its server at once.
    KillLeader,
    /// SIGKILL all three servers, and start them again after 1 s.
    KillAllAndRestart,
}

/// Members of the consumer-side HA tests, and their lease.
const MEMBERS: usize = 2;
const MEMBER_LEASE: Duration = Duration::from_secs(1);

/// A record handed to a member's closure: its position, payload and
/// delivery count.
type Handed = (durq::Position, String, u32);

/// A group of two members consumes a two-partition, three-replica queue
/// while two producers send under `Sync`, through `outage`. Each member is
/// a thread looping on the blocking `process_timeout`; an error it returns
/// (the servers unreachable, a stream electing its leader, a slot taken
/// over) is counted and the loop calls `process` again, as an application
/// does. Afterwards: every acknowledged record was processed at least once,
/// at the position its send returned (lost 0), and no record, acknowledged
/// or not, was processed at two different positions (duplicated 0). Prints
/// acknowledged / processed / redelivered / lost / duplicated, and how many
/// of the errors were the engine's.
async fn consume_through(outage: Outage) {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let mut cluster = Cluster::start().await;
    let url = format!("{}/hac", cluster.urls());
    let options = durq::Options::default().partitions(2).durability(durq::Durability::Sync);
    let queue = durq_nats::Queue::open_async(&url, options).await.expect("open on the cluster");
    assert_eq!(queue.replicas(), 3);

    // The members join at the same instant, creating the group together.
    let barrier = Arc::new(std::sync::Barrier::new(MEMBERS));
    let joining: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let (queue, barrier) = (queue.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                queue.consumer_with("ha", durq::ConsumerOptions::default().lease_timeout(MEMBER_LEASE))
            })
        })
        .collect();
    let consumers: Vec<_> =
        joining.into_iter().map(|j| j.join().expect("a joining member panicked").expect("join the group")).collect();

    let consuming = Arc::new(AtomicBool::new(true));
    let handed: Arc<Mutex<Vec<Handed>>> = Arc::default();
    let members: Vec<_> = consumers
        .into_iter()
        .map(|mut consumer| {
            let (consuming, handed) = (consuming.clone(), handed.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                while consuming.load(Ordering::Relaxed) {
                    let outcome = consumer.process_timeout(Duration::from_millis(200), |batch| {
                        let mut handed = handed.lock().unwrap();
                        for m in batch {
                            let payload = String::from_utf8_lossy(m.payload()).into_owned();
                            handed.push((m.position(), payload, m.delivery_count()));
                        }
                        Ok::<(), std::io::Error>(())
                    });
                    if let Err(e) = outcome {
                        errors.push((matches!(e, durq::Error::Engine { .. }), e.to_string()));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                errors
            })
        })
        .collect();

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let producing = Arc::new(AtomicBool::new(true));
    let senders: Vec<_> = (0..2)
        .map(|s| {
            let (producer, acknowledged, producing) = (queue.producer(), acknowledged.clone(), producing.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = 0;
                while producing.load(Ordering::Relaxed) {
                    let payload = format!("sender {s} record {i}");
                    let outcome = producer.send_async(&payload).await;
                    if outcome.is_ok() {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.push((outcome, payload));
                    i += 1;
                }
                sent
            })
        })
        .collect();
    wait_until(|| handed.lock().unwrap().len() >= ACKNOWLEDGED_EACH_SIDE, "processing").await;
    let before = acknowledged.load(Ordering::Relaxed);
    let stopped_at = Instant::now();
    match outage {
        Outage::KillLeader => {
            let raw = async_nats::connect(cluster.addresses()).await.expect("raw connect");
            let victim = leader_holding_a_cursor(&raw).await;
            eprintln!("KillLeader: SIGKILL {victim}");
            cluster.kill(&victim);
        }
        Outage::KillAllAndRestart => {
            cluster.kill_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.restart_all().await;
        }
    }
    wait_until(|| acknowledged.load(Ordering::Relaxed) >= before + ACKNOWLEDGED_EACH_SIDE, "acknowledging").await;
    let acknowledged_again = stopped_at.elapsed();
    producing.store(false, Ordering::Relaxed);
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.expect("a sender panicked"));
    }
    let acked: HashMap<String, durq::Position> =
        sent.iter().filter_map(|(outcome, payload)| Some((payload.clone(), *outcome.as_ref().ok()?))).collect();
    // The members go on until every acknowledged record was handed over
    // (or the wait gives up, and the assertions below say what is missing).
    let all_handed = || {
        let handed = handed.lock().unwrap();
        let seen: HashSet<(durq::Position, &str)> = handed.iter().map(|(p, s, _)| (*p, s.as_str())).collect();
        acked.iter().all(|(payload, position)| seen.contains(&(*position, payload.as_str())))
    };
    let deadline = Instant::now() + BACK_WITHIN;
    while !all_handed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consuming.store(false, Ordering::Relaxed);
    let mut errors = Vec::new();
    for member in members {
        errors.extend(member.join().expect("a member panicked"));
    }
    let processed = std::mem::take(&mut *handed.lock().unwrap());

    let mut at: HashMap<durq::Position, String> = HashMap::new();
    let mut positions_of: HashMap<&str, HashSet<durq::Position>> = HashMap::new();
    let mut handed: HashMap<durq::Position, usize> = HashMap::new();
    for (position, payload, _) in &processed {
        let earlier = at.insert(*position, payload.clone());
        assert!(earlier.is_none_or(|e| e == *payload), "position {position:?} processed as two payloads");
        positions_of.entry(payload).or_default().insert(*position);
        *handed.entry(*position).or_default() += 1;
    }
    let lost: Vec<_> = acked.iter().filter(|(payload, position)| at.get(position) != Some(payload)).collect();
    let duplicated: Vec<_> = positions_of.iter().filter(|(_, ps)| ps.len() > 1).collect();
    let redelivered = handed.values().filter(|n| **n > 1).count();
    let max_count = processed.iter().map(|(_, _, count)| *count).max().unwrap_or(0);
    eprintln!(
        "{outage:?} while {MEMBERS} members consumed: acknowledged {} ({before} before the outage), processed {} \
         records ({} handed over), redelivered {redelivered}, lost {}, duplicated {}; highest delivery count \
         {max_count}; {} errors from process ({} engine errors; first: {:?}); acknowledged again {:?} \
         after the outage began",
        acked.len(),
        at.len(),
        processed.len(),
        lost.len(),
        duplicated.len(),
        errors.len(),
        errors.iter().filter(|(engine, _)| *engine).count(),
        errors.first(),
        acknowledged_again,
    );
    if !lost.is_empty() {
        // Where the partitions' readers stand, for the failure's report.
        let raw = async_nats::connect(cluster.addresses()).await.expect("raw connect");
        let js = async_nats::jetstream::new(raw);
        for p in 0..2 {
            let name = durq_nats::record::stream_name("hac", p);
            let stream = js.get_stream(&name).await.unwrap();
            let infos: Vec<_> = stream.consumers().try_collect().await.unwrap_or_default();
            for i in infos {
                eprintln!(
                    "stream {name} after the wait: consumer {} pending {} delivered {:?} on {:?} created {:?}",
                    i.name,
                    i.num_pending,
                    i.delivered.stream_sequence,
                    i.cluster.and_then(|c| c.leader),
                    i.created
                );
            }
            eprintln!(
                "stream {name} after the wait: last sequence {}",
                stream.get_info().await.unwrap().state.last_sequence
            );
        }
    }
    assert!(lost.is_empty(), "acknowledged records never processed: {lost:?}");
    assert!(duplicated.is_empty(), "records processed as two different records: {duplicated:?}");
}

/// The servers holding the stream's consumers, one entry per consumer (a
/// group member's cursor is an ordered consumer with one replica, on one
/// server), or an empty list while the request fails.
async fn consumer_hosts(client: &async_nats::Client, stream: &str) -> Vec<String> {
    let mut context = async_nats::jetstream::new(client.clone());
    context.set_timeout(Duration::from_secs(1));
    let Ok(stream) = context.get_stream(stream).await else { return Vec::new() };
    let infos: Vec<_> = stream.consumers().try_collect().await.unwrap_or_default();
    infos.into_iter().filter_map(|info| info.cluster?.leader).collect()
}

/// A server that leads a partition's stream of queue `hac` and holds a
/// cursor of one of its partitions. Cursors have one replica, placed by the
/// server, so while no leader holds one, partition 0's stream is asked to
/// step down (its leader moves to another of the three servers) and the
/// placement is looked at again.
async fn leader_holding_a_cursor(raw: &async_nats::Client) -> String {
    let first = durq_nats::record::stream_name("hac", 0);
    for _ in 0..10 {
        let (mut leaders, mut cursors) = (Vec::new(), Vec::new());
        for partition in 0..2 {
            let stream = durq_nats::record::stream_name("hac", partition);
            leaders.push(stream_leader(raw, &stream).await.expect("the partition's stream has a leader"));
            cursors.extend(consumer_hosts(raw, &stream).await);
        }
        eprintln!("KillLeader: streams led by {leaders:?}, cursors on {cursors:?}");
        if let Some(victim) = leaders.iter().find(|l| cursors.contains(l)) {
            return victim.clone();
        }
        let stepdown = format!("$JS.API.STREAM.LEADER.STEPDOWN.{first}");
        raw.request(stepdown, "".into()).await.expect("ask the stream's leader to step down");
        wait_for_leader(raw, &first, Some(&leaders[0])).await;
    }
    panic!("no stream leader of queue hac holds a cursor after ten step-downs");
}

/// Waits until `done`, failing the test after [`BACK_WITHIN`].
async fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + BACK_WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "not {what} within {BACK_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumes_every_acknowledged_record_through_the_loss_of_the_streams_leader() {
    consume_through(Outage::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumes_every_acknowledged_record_through_a_sigkill_and_restart_of_all_three_servers() {
    consume_through(Outage::KillAllAndRestart).await;
}

/// Members, and partitions, of the simultaneous-join test: one partition
/// each once the group is balanced.
const JOINING: usize = 4;

/// What a joining member's thread reports: whether it got its consumer
/// (the error if not), the partitions it holds as of its last call, and
/// what its closure was handed.
#[derive(Default)]
struct Joiner {
    joined: Option<Result<(), String>>,
    held: Vec<u32>,
    handed: Vec<(durq::Position, String)>,
}

/// Four members call `consumer_with` at the same instant (released by a
/// barrier) for a group that does not exist yet, on a fresh three-node
/// cluster: all four create the group's three-replica bucket at once and
/// write their member keys into it while its stream may still be electing
/// its first leader. Each must get its consumer; the group then settles to
/// one partition per member, and every record sent afterwards is processed,
/// each member processing its own partition's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_a_fresh_group_at_the_same_instant_each_get_their_consumer() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, Mutex};

    let cluster = Cluster::start().await;
    let url = format!("{}/join", cluster.urls());
    let options = durq::Options::default().partitions(JOINING as u32).durability(durq::Durability::Sync);
    let queue = durq_nats::Queue::open_async(&url, options).await.expect("open on the cluster");
    assert_eq!(queue.replicas(), 3);

    let barrier = Arc::new(Barrier::new(JOINING));
    let consuming = Arc::new(AtomicBool::new(true));
    let joiners: Arc<Vec<Mutex<Joiner>>> = Arc::new((0..JOINING).map(|_| Mutex::default()).collect());
    let members: Vec<_> = (0..JOINING)
        .map(|i| {
            let (queue, barrier, consuming, joiners) =
                (queue.clone(), barrier.clone(), consuming.clone(), joiners.clone());
            std::thread::spawn(move || {
                let options = durq::ConsumerOptions::default().lease_timeout(MEMBER_LEASE);
                barrier.wait();
                let started = Instant::now();
                let mut consumer = match queue.consumer_with("fresh", options) {
                    Ok(consumer) => consumer,
                    Err(e) => {
                        joiners[i].lock().unwrap().joined = Some(Err(format!("{e} ({e:?})")));
                        return;
                    }
                };
                eprintln!("member {i} joined in {:?}", started.elapsed());
                joiners[i].lock().unwrap().joined = Some(Ok(()));
                while consuming.load(Ordering::Relaxed) {
                    let outcome = consumer.process_timeout(Duration::from_millis(100), |batch| {
                        let mut me = joiners[i].lock().unwrap();
                        for m in batch {
                            me.handed.push((m.position(), String::from_utf8_lossy(m.payload()).into_owned()));
                        }
                        Ok::<(), std::io::Error>(())
                    });
                    if let Err(e) = outcome {
                        eprintln!("member {i}: {e}");
                    }
                    joiners[i].lock().unwrap().held = consumer.held_partitions();
                }
            })
        })
        .collect();
    let stop = |members: Vec<std::thread::JoinHandle<()>>| {
        consuming.store(false, Ordering::Relaxed);
        for member in members {
            member.join().expect("a member panicked");
        }
    };

    wait_until(|| joiners.iter().all(|j| j.lock().unwrap().joined.is_some()), "joined").await;
    let failed: Vec<String> = joiners
        .iter()
        .enumerate()
        .filter_map(|(i, j)| Some(format!("member {i}: {}", j.lock().unwrap().joined.clone()?.err()?)))
        .collect();
    if !failed.is_empty() {
        stop(members);
        panic!("{} of {JOINING} members could not join the fresh group: {failed:#?}", failed.len());
    }

    // Balanced: each member holds one partition, and together all of them.
    let balanced = || {
        let held: Vec<Vec<u32>> = joiners.iter().map(|j| j.lock().unwrap().held.clone()).collect();
        let all: BTreeSet<u32> = held.iter().flatten().copied().collect();
        held.iter().all(|h| h.len() == 1) && all.len() == JOINING
    };
    wait_until(balanced, "one partition per member").await;

    let producer = queue.producer();
    let mut sent = Vec::new();
    for r in 0..4 * JOINING {
        let payload = format!("record {r}");
        sent.push((producer.send_async(&payload).await.expect("send"), payload));
    }
    let all_handed = || {
        let handed: BTreeSet<(durq::Position, String)> =
            joiners.iter().flat_map(|j| j.lock().unwrap().handed.clone()).collect();
        sent.iter().all(|record| handed.contains(record))
    };
    wait_until(all_handed, "every record processed").await;
    stop(members);

    for (i, joiner) in joiners.iter().enumerate() {
        let joiner = joiner.lock().unwrap();
        let partitions: BTreeSet<u32> = joiner.handed.iter().map(|(p, _)| p.partition).collect();
        eprintln!(
            "member {i}: held {:?}, processed {} records of partitions {partitions:?}",
            joiner.held,
            joiner.handed.len()
        );
        assert!(!joiner.handed.is_empty(), "member {i} processed nothing");
    }
}

/// Openers of a queue on a fresh cluster: all create `DURQ_QUEUES` and the
/// queue's streams at the same instant.
const OPENING: usize = 4;

/// Processes opening (and so creating) the same queue at the same instant
/// on a fresh cluster, where the meta bucket does not exist yet either: each
/// gets the queue, all with the same options, and a record each sends is
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openers_creating_a_queue_at_the_same_instant_on_a_fresh_cluster_each_get_it() {
    use std::sync::{Arc, Barrier};

    let cluster = Cluster::start().await;
    let url = format!("{}/twin", cluster.urls());
    let barrier = Arc::new(Barrier::new(OPENING));
    let openers: Vec<_> = (0..OPENING)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let options = durq::Options::default().partitions(2).durability(durq::Durability::Sync);
                barrier.wait();
                let started = Instant::now();
                let queue = durq_nats::Queue::open_with(&url, options).map_err(|e| format!("opener {i}: {e}"))?;
                eprintln!("opener {i} opened in {:?}", started.elapsed());
                let sent = queue.producer().send(format!("from opener {i}")).map_err(|e| format!("opener {i}: {e}"))?;
                Ok::<_, String>((queue.partitions(), queue.replicas(), sent))
            })
        })
        .collect();
    let outcomes: Vec<_> = openers.into_iter().map(|o| o.join().expect("an opener panicked")).collect();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {OPENING} openers failed: {failed:?}", failed.len());
    let opened: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert!(opened.iter().all(|&(partitions, replicas, _)| (partitions, replicas) == (2, 3)), "{opened:?}");
    let mut positions: Vec<durq::Position> = opened.iter().map(|&(_, _, sent)| sent).collect();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), OPENING, "each record at a position of its own: {opened:?}");
}

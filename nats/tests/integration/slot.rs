//! The fencing primitive against a real JetStream server (one node,
//! `sync_interval: always`): takers racing for a slot, a zombie's commit
//! after a takeover, a checkpoint that never moves backwards, a lost reply
//! adopted, and bad stored values reported with their bucket, key and
//! revision.

use crate::common::NatsServer;
use durq_nats::{Client, Error, Lease, SlotState, Slots, connect};

/// A bucket on `server`, through a connection of its own.
async fn slots(server: &NatsServer, bucket: &str) -> Slots {
    let client = connect(&server.url()).await.expect("connect");
    Slots::open(&client, bucket, 1).await.expect("open bucket")
}

async fn read(slots: &Slots, slot: &str) -> SlotState {
    slots.read(slot).await.expect("read").expect("slot written")
}

/// The raw key-value handle of a bucket, to write what durq never writes.
async fn raw_bucket(server: &NatsServer, bucket: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(server.url()).await.expect("raw connect");
    async_nats::jetstream::new(client).get_key_value(bucket).await.expect("raw bucket")
}

/// A slot value by the layout in docs/SCALE_OUT.md, written byte by byte.
fn slot_value_bytes(checkpoint: u64, epoch: u64, holder: &str) -> Vec<u8> {
    let mut bytes = b"DQSL\x01".to_vec();
    bytes.extend_from_slice(&checkpoint.to_le_bytes());
    bytes.extend_from_slice(&epoch.to_le_bytes());
    bytes.extend_from_slice(&(holder.len() as u16).to_le_bytes());
    bytes.extend_from_slice(holder.as_bytes());
    bytes
}

/// `takers` members, each on its own connection, all take `slot` from the
/// same state at once; returns the outcome of each.
async fn race(server: &NatsServer, bucket: &str, slot: &str, takers: usize) -> Vec<Result<Lease, Error>> {
    let mut handles = Vec::new();
    let mut members = Vec::new();
    for _ in 0..takers {
        members.push(slots(server, bucket).await);
    }
    let seen = members[0].read(slot).await.expect("read before the race");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(takers));
    for (i, member) in members.into_iter().enumerate() {
        let (start, seen, slot) = (start.clone(), seen.clone(), slot.to_owned());
        handles.push(tokio::spawn(async move {
            start.wait().await;
            member.take(&slot, &format!("member-{i}"), seen.as_ref()).await
        }));
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.expect("taker task"));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takers_racing_for_one_slot_exactly_one_wins() {
    let server = NatsServer::start().await;
    let observer = slots(&server, "race").await;
    for round in 0..10 {
        let slot = format!("p{round}");
        // First for a slot never written (create), then for a held one
        // (a takeover, all taking from the same read).
        for phase in ["create", "takeover"] {
            let outcomes = race(&server, "race", &slot, 8).await;
            let winners: Vec<&Lease> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "round {round} {phase}: {outcomes:?}");
            for outcome in &outcomes {
                if let Err(e) = outcome {
                    assert!(matches!(e, Error::SlotChanged { .. }), "round {round} {phase}: {e:?}");
                }
            }
            let stored = read(&observer, &slot).await;
            assert_eq!(stored.epoch(), Some(winners[0].epoch()), "the stored holding is the winner's");
            assert_eq!(stored.revision(), winners[0].epoch());
        }
    }
}

#[tokio::test]
async fn a_zombies_commit_after_a_takeover_is_fenced() {
    let server = NatsServer::start().await;
    let (a, b) = (slots(&server, "zombie").await, slots(&server, "zombie").await);

    let mut lease_a = a.take("p0", "a", None).await.expect("a takes a new slot");
    a.commit(&mut lease_a, 10).await.expect("a commits 10");

    // b presumes a dead and takes the slot over from what it read.
    let seen = read(&b, "p0").await;
    assert_eq!((seen.holder(), seen.checkpoint()), (Some("a"), 10));
    let mut lease_b = b.take("p0", "b", Some(&seen)).await.expect("b takes over");
    assert_eq!(lease_b.checkpoint(), 10, "the takeover carries the committed checkpoint");
    assert!(lease_b.epoch() > lease_a.epoch());

    // a wakes up and commits: refused, and nothing it sends counts.
    for checkpoint in [20, 10] {
        let err = a.commit(&mut lease_a, checkpoint).await.expect_err("a zombie's commit");
        assert!(matches!(err, Error::Fenced { epoch, .. } if epoch == lease_a.epoch()), "{err:?}");
        assert!(err.to_string().contains("zombie/p0"), "{err}");
    }
    let err = a.release(lease_a).await.expect_err("a zombie's release");
    assert!(matches!(err, Error::Fenced { .. }), "{err:?}");
    let stored = read(&b, "p0").await;
    assert_eq!((stored.holder(), stored.checkpoint(), stored.epoch()), (Some("b"), 10, Some(lease_b.epoch())));

    b.commit(&mut lease_b, 15).await.expect("the new holder commits");
    assert_eq!(read(&a, "p0").await.checkpoint(), 15);
}

#[tokio::test]
async fn the_checkpoint_never_moves_backwards() {
    let server = NatsServer::start().await;
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(slots(&server, "mono").await);
    }
    let mut leases: Vec<Option<Lease>> = (0..members.len()).map(|_| None).collect();
    let mut observed = Vec::new();
    // Holders change hands in turn; every member, current or zombie, tries
    // to commit a checkpoint below, at and above the stored one.
    for step in 0..12_u64 {
        let taker = (step as usize) % members.len();
        let seen = members[taker].read("p0").await.expect("read");
        leases[taker] = Some(members[taker].take("p0", &format!("m{taker}"), seen.as_ref()).await.expect("take"));
        for (i, lease) in leases.iter_mut().enumerate() {
            let Some(lease) = lease else { continue };
            let held = lease.checkpoint();
            for target in [held.saturating_sub(3), held + 5 + step] {
                let outcome = members[i].commit(lease, target).await;
                match outcome {
                    Ok(()) => assert!(i == taker && target >= held, "step {step}: member {i} committed {target}"),
                    Err(Error::Fenced { .. }) => assert!(i != taker && target >= held, "step {step}: member {i}"),
                    Err(Error::CheckpointBehind { committed, requested, .. }) => {
                        assert_eq!((committed, requested), (held, target), "step {step}: member {i}");
                        assert!(target < held, "step {step}: member {i}");
                    }
                    Err(e) => panic!("step {step}: {e:?}"),
                }
                observed.push(read(&members[0], "p0").await.checkpoint());
            }
        }
    }
    assert!(observed.windows(2).all(|w| w[0] <= w[1]), "checkpoints read: {observed:?}");
    assert!(observed.last() > observed.first(), "the holders did move it: {observed:?}");
}

#[tokio::test]
async fn a_commit_whose_reply_was_lost_is_adopted_and_anyone_elses_write_fences() {
    let server = NatsServer::start().await;
    let member = slots(&server, "lost").await;
    let raw = raw_bucket(&server, "lost").await;

    let mut lease = member.take("p0", "m", None).await.expect("take");
    // What a commit of 5 whose acknowledgement never arrived leaves behind:
    // the holding's own value at a revision the lease has not seen.
    raw.put("p0", slot_value_bytes(5, lease.epoch(), "m").into()).await.expect("raw put");
    member.commit(&mut lease, 7).await.expect("the holder's own write is adopted");
    assert_eq!(read(&member, "p0").await.checkpoint(), 7);
    let err = member.commit(&mut lease, 6).await.expect_err("below the adopted checkpoint");
    assert!(matches!(err, Error::CheckpointBehind { committed: 7, requested: 6, .. }), "{err:?}");

    // The same holder name with another epoch is another holding: fenced.
    raw.put("p0", slot_value_bytes(7, lease.epoch() + 1000, "m").into()).await.expect("raw put");
    let err = member.commit(&mut lease, 8).await.expect_err("another holding wrote");
    assert!(matches!(err, Error::Fenced { .. }), "{err:?}");
}

#[tokio::test]
async fn a_released_slot_is_taken_at_once_with_its_checkpoint() {
    let server = NatsServer::start().await;
    let (a, b) = (slots(&server, "release").await, slots(&server, "release").await);
    let mut lease = a.take("p0", "a", None).await.expect("take");
    a.commit(&mut lease, 33).await.expect("commit");
    a.release(lease).await.expect("release");

    let seen = read(&b, "p0").await;
    assert_eq!((seen.holder(), seen.epoch(), seen.checkpoint()), (None, None, 33));
    let lease = b.take("p0", "b", Some(&seen)).await.expect("take a released slot");
    assert_eq!(lease.checkpoint(), 33);
}

#[tokio::test]
async fn bad_stored_values_are_errors_naming_bucket_key_and_revision() {
    let server = NatsServer::start().await;
    let member = slots(&server, "bad").await;
    let raw = raw_bucket(&server, "bad").await;

    // The right length for an empty holder, but format version 9.
    let mut bytes = slot_value_bytes(3, 0, "");
    bytes[4] = 9;
    let revision = raw.put("garbage", bytes.into()).await.expect("raw put");
    let err = member.read("garbage").await.expect_err("version 9");
    assert!(matches!(err, Error::CorruptSlot { revision: r, position: 4, .. } if r == revision), "{err:?}");
    assert!(err.to_string().contains(&format!("bad/garbage at revision {revision}, byte 4")), "{err}");

    // A deleted key lost its checkpoint: an error, never a restart at 0.
    member.take("gone", "m", None).await.expect("take");
    raw.delete("gone").await.expect("raw delete");
    let err = member.read("gone").await.expect_err("deleted");
    assert!(matches!(err, Error::CorruptSlot { ref reason, .. } if reason.contains("checkpoint is lost")), "{err:?}");
}

#[tokio::test]
async fn names_nats_cannot_use_are_refused() {
    let server = NatsServer::start().await;
    let client: Client = connect(&server.url()).await.expect("connect");
    let err = Slots::open(&client, "a.b", 1).await.expect_err("a dot splits a subject");
    assert!(matches!(err, Error::InvalidName { what: "bucket", .. }), "{err:?}");
    let member = Slots::open(&client, "names", 1).await.expect("open");
    let err = member.take("p*", "m", None).await.expect_err("a wildcard");
    assert!(matches!(err, Error::InvalidName { what: "slot", .. }), "{err:?}");
    let err = member.take("p0", "", None).await.expect_err("an empty member id");
    assert!(matches!(err, Error::InvalidName { what: "member id", .. }), "{err:?}");
}

/// Opening a bucket that exists is opening it as it is when its settings
/// are durq's (members create a group's bucket at the same instant), and
/// an `Engine` error naming it, returned at once rather than waited out as a
/// bucket still being created, when they are not.
#[tokio::test]
async fn an_existing_bucket_is_opened_as_it_is_and_refused_with_other_settings() {
    let server = NatsServer::start().await;
    let client = connect(&server.url()).await.expect("connect");
    let first = Slots::open(&client, "same", 1).await.expect("create");
    let mut lease = first.take("p0", "m", None).await.expect("take");
    first.commit(&mut lease, 7).await.expect("commit");
    let again = Slots::open(&client, "same", 1).await.expect("open the existing bucket");
    assert_eq!(read(&again, "p0").await.checkpoint(), 7);

    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("raw connect"));
    let other = async_nats::jetstream::kv::Config { bucket: "other".to_owned(), history: 5, ..Default::default() };
    raw.create_key_value(other).await.expect("raw create with a history of 5");
    let err = Slots::open(&client, "other", 1).await.expect_err("another history");
    let message = err.to_string();
    assert!(matches!(err, Error::Engine { .. }), "{err:?}");
    assert!(message.contains("bucket other") && !message.contains("did not answer"), "{message}");
}

//! Every name durq relies on after a power loss is made durable (its
//! directory fsynced) before anything that depends on it is acknowledged.
//! This is proven from the operations durq issues, not from the simulated
//! disk's model of what a power cut keeps: the model orders metadata, so a
//! missing directory fsync can hide from the power-loss enumeration, but
//! not from this trace.
//!
//! The story: a session on the simulated disk (used only as a recorder of
//! every `storage::effect`, with both paths of a rename) creates a queue,
//! sends until segments roll in both partitions and retention removes the
//! ones the group passed, has a group take its slots and commit, hands a
//! slot to a second member and lets it take the rest over, sends a poison
//! record to the group's dead-letter queue, resets the group, replays its
//! dead letters, and changes the queue's durability (a new meta file
//! renamed over the old one). The test marks every acknowledgement with the
//! operation count when the call returned: the queue opened, a member
//! joined (the group is registered: retention now waits for it), a send
//! returned under `Sync` or a flush under `Buffered`, `process` returned
//! `Ok` (a commit), a reset, a replay, a durability change.
//!
//! The check replays the trace: every creation, mkdir or rename of a name
//! leaves that name unsynced until an fsync of its directory; at every
//! acknowledgement no name durq relies on may be unsynced. (That is
//! stronger than "before the acknowledgement that depends on it": it asks
//! it of every acknowledgement.) The names durq relies on, and those it does
//! not (runtime files, member files, temporaries), are listed in
//! docs/FORMAT.md, "Names and their directory fsyncs"; [`relied_upon`] is
//! that list.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::power::{self, GROUP, payload};
use durq::internals::sim::{OpKind, SimDisk, TracedOp};
use durq::{ConsumerOptions, Durability, Queue, ResetTo};

/// An acknowledgement: what returned, and the operation count then (every
/// operation with a lower index happened before it).
#[derive(Debug, Clone)]
struct Ack {
    at: u64,
    what: String,
}

/// Whether durq needs the name `path` (relative to the simulated root)
/// after a power loss. Not: the control file and the open lock (rebuilt and
/// recreated by the first opener), the meta file's temporary name (removed
/// or replaced by the next write), and member files and their directory (a
/// member's file is its liveness, which does not survive a power loss
/// anyway). Everything else in a queue, its dead-letter queue's included.
fn relied_upon(path: &Path) -> bool {
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let runtime = name == "durq.ctl" || name == "durq.lock" || name.starts_with("durq.meta.tmp.");
    !runtime && !path.components().any(|c| c.as_os_str() == "members")
}

/// Every name durq relies on that was created or renamed into place and
/// not yet made durable by an fsync of its directory at one of `acks`: one
/// line per name, naming the first such acknowledgement.
fn violations(trace: &[TracedOp], acks: &[Ack]) -> Vec<String> {
    let mut live: BTreeSet<PathBuf> = BTreeSet::new();
    // Unsynced names, with the operation that made each.
    let mut unsynced: BTreeMap<PathBuf, TracedOp> = BTreeMap::new();
    let mut ops = trace.iter().peekable();
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    for ack in acks {
        while let Some(op) = ops.next_if(|op| op.index < ack.at) {
            match op.kind {
                OpKind::Create | OpKind::CreateDir => {
                    // Opening an existing file (a lock file) creates nothing.
                    if live.insert(op.path.clone()) {
                        unsynced.insert(op.path.clone(), op.clone());
                    }
                }
                OpKind::Rename => {
                    let to = op.to.clone().expect("a rename names its target");
                    live.retain(|p| !p.starts_with(&op.path));
                    unsynced.retain(|p, _| !p.starts_with(&op.path));
                    live.insert(to.clone());
                    unsynced.insert(to, op.clone());
                }
                OpKind::Remove | OpKind::RemoveTree => {
                    live.retain(|p| !p.starts_with(&op.path));
                    unsynced.retain(|p, _| !p.starts_with(&op.path));
                }
                OpKind::SyncDir => unsynced.retain(|p, _| p.parent() != Some(op.path.as_path())),
                OpKind::Reserve | OpKind::Write | OpKind::SyncFile | OpKind::SyncRange | OpKind::Lock => {}
            }
        }
        for (path, made) in unsynced.iter().filter(|(p, _)| relied_upon(p)) {
            if !reported.insert(path.clone()) {
                continue;
            }
            found.push(format!(
                "{}: made by {:?} (operation {}), its directory not fsynced before {} (at operation {})",
                path.display(),
                made.kind,
                made.index,
                ack.what,
                ack.at
            ));
        }
    }
    found
}

fn consumer_options(max_batch: usize) -> ConsumerOptions {
    power::consumer_options(max_batch).max_deliveries(2)
}

/// Processes one batch, failing it if it holds the poison record; marks a
/// commit.
fn process(consumer: &mut durq::Consumer, disk: &SimDisk, acks: &mut Vec<Ack>, who: &str) -> usize {
    let r = consumer.process_timeout(std::time::Duration::from_millis(2), |batch| {
        match batch.iter().any(|m| m.payload() == b"poison") {
            true => Err(std::io::Error::other("poison")),
            false => Ok(()),
        }
    });
    match r {
        Ok(0) => 0,
        Ok(n) => {
            acks.push(Ack { at: disk.ops(), what: format!("{who}'s process returned Ok (a commit)") });
            n
        }
        Err(durq::Error::Process(_)) => 0,
        Err(e) => panic!("{who}: process: {e}"),
    }
}

/// The session the rules are checked on; returns its acknowledgements.
fn session(q: &Path, disk: &SimDisk, durability: Durability) -> Vec<Ack> {
    let sync = durability == Durability::Sync;
    let mut acks = Vec::new();
    let ack = |acks: &mut Vec<Ack>, what: &str| acks.push(Ack { at: disk.ops(), what: what.to_owned() });
    let queue = Queue::open_with(q, power::options(durability)).unwrap();
    ack(&mut acks, "open_with created the queue");
    let producer = queue.producer();
    let mut first = Some(queue.consumer_with(GROUP, consumer_options(4)).unwrap());
    ack(&mut acks, "the first member joined (the group is registered)");
    let mut second = None;
    const ROUNDS: u64 = 160;
    for seq in 0..ROUNDS {
        let record = if seq == 10 { b"poison".to_vec() } else { payload(seq) };
        producer.send(record).unwrap();
        if sync {
            ack(&mut acks, &format!("send {seq} returned"));
        } else if seq % 4 == 3 {
            producer.flush().unwrap();
            ack(&mut acks, &format!("flush after send {seq} returned"));
        }
        if seq == ROUNDS / 3 {
            second = Some(queue.consumer_with(GROUP, consumer_options(3)).unwrap());
            ack(&mut acks, "the second member joined");
        }
        if seq == 2 * ROUNDS / 3 {
            first = None; // leaves: the second member takes its slots over
        }
        if seq % 2 == 1 {
            if let Some(c) = first.as_mut() {
                process(c, disk, &mut acks, "the first member");
            }
            if let Some(c) = second.as_mut() {
                process(c, disk, &mut acks, "the second member");
            }
        }
    }
    producer.flush().unwrap();
    ack(&mut acks, "the last flush returned");
    let consumer = second.as_mut().expect("the second member stays");
    while process(consumer, disk, &mut acks, "the second member") > 0 {}
    drop((first, second));
    assert_eq!(queue.dead_letters(GROUP, 10).unwrap().len(), 1, "the poison record was dead-lettered");
    queue.reset_group(GROUP, ResetTo::Earliest).unwrap();
    ack(&mut acks, "reset_group returned");
    // A group registered by a member that died before it took any slot
    // (made by hand: the simulation follows one process): the reset makes
    // the group's slots, leases included.
    std::fs::create_dir(q.join("groups/orphan")).unwrap();
    queue.reset_group("orphan", ResetTo::Latest).unwrap();
    ack(&mut acks, "reset_group of a group without slots returned");
    assert_eq!(queue.replay_dead_letters(GROUP).unwrap(), 1);
    ack(&mut acks, "replay_dead_letters returned");
    let mut after_reset = queue.consumer_with(GROUP, consumer_options(4)).unwrap();
    ack(&mut acks, "a member joined after the reset");
    assert!(process(&mut after_reset, disk, &mut acks, "the member after the reset") > 0);
    drop((after_reset, producer, queue));
    let other = if sync { Durability::Buffered } else { Durability::Sync };
    Queue::change_durability(q, other).unwrap();
    ack(&mut acks, "change_durability returned");
    acks
}

/// Runs the session under `durability`, checks it did what the rules are
/// about, and returns the violations.
fn check(durability: Durability) -> Vec<String> {
    let scratch = tempfile::tempdir_in(power::scratch_base()).unwrap();
    let (q, disk) = power::live_disk(scratch.path());
    let acks = session(&q, &disk, durability);
    let trace = disk.trace();
    let did = |kind: OpKind, suffix: &str| {
        trace.iter().filter(|op| op.kind == kind && op.path.to_string_lossy().ends_with(suffix)).count()
    };
    assert!(did(OpKind::Create, ".seg") >= 6, "segments rolled in both partitions");
    assert!(did(OpKind::Remove, ".seg") >= 2, "retention removed segments");
    assert!(did(OpKind::Create, "00000000000000000002.ckpt") >= 2, "slots were handed over");
    assert!(did(OpKind::CreateDir, "/dlq") == 1, "the dead-letter queue was created");
    let metas = trace.iter().filter(|op| op.to.as_ref().is_some_and(|to| to.ends_with("durq.meta"))).count();
    assert_eq!(metas, 3, "meta files renamed into place: the queue's, the dead-letter queue's, the change");
    assert_eq!(disk.problems(), Vec::<String>::new());
    let names = trace.iter().filter(|op| matches!(op.kind, OpKind::Create | OpKind::CreateDir | OpKind::Rename));
    eprintln!(
        "{durability:?}: {} operations, {} creations and renames, {} acknowledgements checked",
        trace.len(),
        names.count(),
        acks.len()
    );
    violations(&trace, &acks)
}

#[test]
fn every_name_is_durable_before_an_acknowledgement_under_sync() {
    let found = check(Durability::Sync);
    assert!(found.is_empty(), "{} violations, e.g.:\n{}", found.len(), found[..found.len().min(10)].join("\n"));
}

#[test]
fn every_name_is_durable_before_an_acknowledgement_under_buffered() {
    let found = check(Durability::Buffered);
    assert!(found.is_empty(), "{} violations, e.g.:\n{}", found.len(), found[..found.len().min(10)].join("\n"));
}

/// The check itself, on hand-made traces: a creation and a rename without
/// their directory fsync are found, a fsync of another directory does not
/// count, and names durq does not rely on are left alone.
#[test]
fn the_check_finds_a_creation_or_rename_whose_directory_was_not_fsynced() {
    let op = |index: u64, kind: OpKind, path: &str, to: Option<&str>| TracedOp {
        index,
        kind,
        path: PathBuf::from(path),
        to: to.map(PathBuf::from),
    };
    let trace = vec![
        op(0, OpKind::CreateDir, "q", None),
        op(1, OpKind::SyncDir, "", None),
        op(2, OpKind::Create, "q/durq.lock", None),
        op(3, OpKind::Create, "q/durq.meta.tmp.7", None),
        op(4, OpKind::SyncFile, "q/durq.meta.tmp.7", None),
        op(5, OpKind::Rename, "q/durq.meta.tmp.7", Some("q/durq.meta")),
        // An ack here: durq.meta is not durable.
        op(6, OpKind::CreateDir, "q/p0000", None),
        op(7, OpKind::SyncDir, "q/p0000", None),
        // An ack here: durq.meta and p0000 are not (p0000's own fsync
        // makes its entries durable, not its name in q).
        op(8, OpKind::SyncDir, "q", None),
        // An ack here: everything is.
    ];
    let ack = |at: u64| Ack { at, what: format!("ack at {at}") };
    let found = violations(&trace, &[ack(6), ack(8), ack(9)]);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("q/durq.meta: made by Rename (operation 5)")
            && found[0].ends_with("ack at 6 (at operation 6)")
    );
    assert!(found[1].starts_with("q/p0000: made by CreateDir (operation 6)") && found[1].contains("ack at 8"));
}

//! Exactly-once effects: the record's position, kept in the consumer's own
//! SQLite transaction, makes a redelivered record a no-op.
//!
//! durq delivers at least once: a batch whose `process` returned `Ok` is
//! committed, but a crash after the work and before the commit delivers it
//! again. When the work is a change to your own database, store with it,
//! in the same transaction, how far each partition was applied (the next
//! offset to apply). A redelivered record's offset is below that mark, and
//! is skipped inside the transaction that would apply it again. This works
//! because a group delivers each partition's records in offset order, and
//! because the check and the change commit together: a member presumed
//! hung and fenced, still running its closure beside the new holder, finds
//! the mark the other one moved and skips too (SQLite serialises the two
//! transactions).
//!
//! The example crashes for real: it runs a copy of itself that applies the
//! first batch, commits the SQLite transaction and is SIGKILLed before durq's
//! commit. The next run gets the same batch again and applies nothing twice.
//!
//! The limits, honestly:
//! - Only effects inside that one transaction are exactly-once. An e-mail
//!   sent or an HTTP call made from the closure can still happen twice.
//! - It removes redeliveries, not duplicate sends: a producer that sends
//!   again after an error (it cannot know whether the first send was
//!   stored) may store the record twice, at two positions. Dedupe those by
//!   an id the producer puts in the payload.
//! - A position names a record only within one queue's life: a queue
//!   deleted and created again starts at offset 0, and its marks must be
//!   deleted with it. A replayed dead letter is a new record, at a new
//!   position (it was never applied, so that is right).
//! - `durq group reset` to an earlier position redelivers records that are
//!   below the marks: they are skipped. Lower the marks in the same
//!   maintenance step if they are meant to be applied again.
//! - It costs one SQLite transaction per batch, on top of durq's commit:
//!   larger batches (`ConsumerOptions::max_batch`) spread it.
//!
//! Run: `cargo run --release --example exactly_once`

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use durq::{BoxError, ConsumerOptions, Message, Options, Queue};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

const GROUP: &str = "wallet";
const ORDERS: [(&str, i64); 6] = [("alice", 100), ("bob", 88), ("alice", 66), ("carol", 50), ("bob", 12), ("alice", 1)];

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, work] = args.as_slice()
        && mode == "crash-after-db-commit"
    {
        return crash_after_db_commit(Path::new(work));
    }

    let work = tempfile::tempdir()?;
    let queue = Queue::open_with(work.path().join("orders"), Options::default().partitions(2))?;
    let producer = queue.producer();
    for (user, amount) in ORDERS {
        producer.send_keyed(user, amount.to_string())?; // one user, one partition
    }
    drop(queue);
    open_db(work.path())?; // creates the tables

    // A copy of this program applies a batch and dies before durq commits it.
    let status = Command::new(std::env::current_exe()?).arg("crash-after-db-commit").arg(work.path()).status()?;
    println!("the first consumer died ({status}) after its database commit, before durq's");

    // This consumer gets that batch again: its offsets are below the mark.
    let queue = Queue::open(work.path().join("orders"))?;
    let mut wallet = queue.consumer(GROUP)?;
    let mut db = open_db(work.path())?;
    while wallet.process_timeout(Duration::from_millis(200), |batch| apply(&mut db, batch))? > 0 {}

    let mut balances = db.prepare("SELECT user, balance FROM wallet ORDER BY user")?;
    let balances: Vec<(String, i64)> =
        balances.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
    println!("balances: {balances:?} (alice 167, bob 100, carol 50: every order once)");
    Ok(())
}

/// The first consumer: applies one batch, then is killed (SIGKILL), as a
/// crash or a power cut after SQLite's sync would end it.
fn crash_after_db_commit(work: &Path) -> Result<(), Failure> {
    let queue = Queue::open(work.join("orders"))?;
    let mut wallet = queue.consumer_with(GROUP, ConsumerOptions::default().max_batch(2))?;
    let mut db = open_db(work)?;
    wallet.process(|batch| -> Result<(), BoxError> {
        apply(&mut db, batch)?;
        // SIGKILL, not abort(): the same sudden end, without a core dump
        // on a machine that keeps them. durq never hears that the batch
        // was done.
        // SAFETY: kill(2) on our own pid has no memory-safety conditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL ends the process")
    })?;
    Ok(())
}

/// Applies a batch (all from one partition) in one SQLite transaction,
/// skipping the records below the partition's mark.
fn apply(db: &mut Connection, batch: &[Message<'_>]) -> Result<(), BoxError> {
    // IMMEDIATE: takes the write lock before reading the mark, so no other
    // member can move it between the check and the change.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let partition = batch[0].position().partition;
    let mark: i64 = tx
        .query_row("SELECT next_offset FROM applied WHERE partition = ?1", [partition], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    for m in batch {
        // SQLite's integers are signed 64-bit; an offset never gets near 2^63.
        let offset = i64::try_from(m.position().offset)?;
        let user = String::from_utf8_lossy(m.key().unwrap_or_default());
        if offset < mark {
            println!("partition {partition} offset {offset}: {user} already applied, skipped");
            continue;
        }
        let amount: i64 = String::from_utf8_lossy(m.payload()).parse().unwrap_or(0);
        tx.execute(
            "INSERT INTO wallet (user, balance) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET balance = balance + ?2",
            params![user, amount],
        )?;
        println!("partition {partition} offset {offset}: {user} +{amount}");
    }
    let next = i64::try_from(batch[batch.len() - 1].position().offset)? + 1;
    tx.execute(
        "INSERT INTO applied (partition, next_offset) VALUES (?1, ?2)
         ON CONFLICT (partition) DO UPDATE SET next_offset = max(next_offset, ?2)",
        params![partition, next],
    )?;
    // The change and the mark are durable together, or not at all; only
    // after this does `process` let durq commit the batch.
    tx.commit()?;
    Ok(())
}

/// The consumer's database: balances, and the mark per partition.
fn open_db(work: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(work.join("wallet.sqlite"))?;
    // WAL with synchronous=FULL: a committed transaction survives a power
    // cut too, as durq's commit does.
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS wallet (user TEXT PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS applied (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);",
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

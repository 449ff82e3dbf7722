//! SQLite through rusqlite (bundled), WAL journal, a `q(id INTEGER PRIMARY
//! KEY, payload BLOB)` table. Two variants:
//!
//! - `TxnPerMessage`: every message is its own transaction. Where a message
//!   must be durable on its own (W2, W6) every commit runs under
//!   `synchronous=FULL` (one WAL fsync per commit). Where the workload syncs
//!   less often (W1, W3, W5), commits run under `synchronous=NORMAL` (no
//!   fsync) and the last message of each sync unit commits under `FULL`,
//!   whose WAL fsync makes every earlier frame of the WAL durable too.
//! - `Batched`: one transaction per sync unit under `synchronous=FULL`: the
//!   whole run for W1/W5, 100 messages for W3.
//!
//! A consumer (W4, W7) reads the rows past a cursor, then updates the
//! cursor row in its own `FULL` transaction: per 1,000 rows in W4 (the
//! batched row), per row in W7 (the txn/msg row, one row per transaction).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    TxnPerMessage,
    Batched,
}

pub struct Sqlite(pub Variant);

const INSERT: &str = "INSERT INTO q(payload) VALUES (?1)";

fn open(dir: &Path) -> Result<Connection> {
    let c = Connection::open(dir.join("q.db"))?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    c.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 0), pos INTEGER NOT NULL);
         INSERT OR IGNORE INTO cursor VALUES (0, 0);",
    )?;
    c.busy_timeout(Duration::from_secs(120))?;
    Ok(c)
}

fn synchronous(c: &Connection, full: bool) -> Result<()> {
    c.execute_batch(if full { "PRAGMA synchronous=FULL" } else { "PRAGMA synchronous=NORMAL" })?;
    Ok(())
}

impl System for Sqlite {
    fn name(&self) -> String {
        match self.0 {
            Variant::TxnPerMessage => "SQLite, txn/msg".into(),
            Variant::Batched => "SQLite, batched".into(),
        }
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        match (w.kind, self.0) {
            (Kind::SyncAtEnd, Variant::TxnPerMessage) => {
                let c = open(dir)?;
                let mut insert = c.prepare_cached(INSERT)?;
                synchronous(&c, false)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n + 1 < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    insert.execute(params![buf])?;
                    n += 1;
                }
                synchronous(&c, true)?;
                stamp(&mut buf, n);
                insert.execute(params![buf])?;
                n += 1;
                Ok(Outcome::done(n, start)
                    .with_note("autocommit per message under `synchronous=NORMAL`; the last one under `FULL`"))
            }
            (Kind::SyncAtEnd, Variant::Batched) => {
                let mut c = open(dir)?;
                let tx = c.transaction()?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                {
                    let mut insert = tx.prepare_cached(INSERT)?;
                    while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                        stamp(&mut buf, n);
                        insert.execute(params![buf])?;
                        n += 1;
                    }
                }
                tx.commit()?;
                Ok(Outcome::done(n, start).with_note("one transaction for the whole run, `synchronous=FULL`"))
            }
            (Kind::EachDurable, Variant::TxnPerMessage) => {
                let c = open(dir)?;
                let mut insert = c.prepare_cached(INSERT)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    stamp(&mut buf, n);
                    insert.execute(params![buf])?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("autocommit per message, `synchronous=FULL`"))
            }
            (Kind::EachDurable, Variant::Batched) => Ok(Outcome::Skip("a batch of one is the txn/msg row".into())),
            (Kind::Batches(size), variant) => {
                let mut c = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    if variant == Variant::Batched {
                        let tx = c.transaction()?;
                        {
                            let mut insert = tx.prepare_cached(INSERT)?;
                            for i in 0..size as u64 {
                                stamp(&mut buf, n + i);
                                insert.execute(params![buf])?;
                            }
                        }
                        tx.commit()?;
                    } else {
                        synchronous(&c, false)?;
                        let mut insert = c.prepare_cached(INSERT)?;
                        for i in 0..size as u64 - 1 {
                            stamp(&mut buf, n + i);
                            insert.execute(params![buf])?;
                        }
                        synchronous(&c, true)?;
                        stamp(&mut buf, n + size as u64 - 1);
                        insert.execute(params![buf])?;
                    }
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note(match variant {
                    Variant::Batched => "a transaction of 100 per sync, `synchronous=FULL`",
                    Variant::TxnPerMessage => "autocommit per message: 99 under `NORMAL`, the 100th under `FULL`",
                }))
            }
            (Kind::Consume { batch }, Variant::TxnPerMessage) if batch > 1 => {
                Ok(Outcome::Skip("consumption commits a cursor per 1,000: the batched row".into()))
            }
            (Kind::Consume { batch: 1 }, Variant::Batched) => {
                Ok(Outcome::Skip("a commit per message is the txn/msg row".into()))
            }
            (Kind::Consume { batch }, _) => {
                let mut c = open(dir)?;
                {
                    let tx = c.transaction()?;
                    {
                        let mut insert = tx.prepare_cached(INSERT)?;
                        for n in 0..w.messages {
                            stamp(&mut buf, n);
                            insert.execute(params![buf])?;
                        }
                    }
                    tx.commit()?;
                }
                let mut select = c.prepare_cached("SELECT id, payload FROM q WHERE id > ?1 ORDER BY id LIMIT ?2")?;
                let mut commit = c.prepare_cached("UPDATE cursor SET pos = ?1 WHERE id = 0")?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let (mut pos, mut seen, mut bytes) = (0i64, 0u64, 0usize);
                while seen < w.messages && !deadline.passed() {
                    let mut rows = select.query(params![pos, batch as i64])?;
                    while let Some(row) = rows.next()? {
                        pos = row.get(0)?;
                        bytes += row.get_ref(1)?.as_blob()?.len();
                        seen += 1;
                    }
                    drop(rows);
                    commit.execute(params![pos])?;
                }
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "SQLite consumed the wrong bytes");
                Ok(out.with_note(&format!(
                    "`SELECT … WHERE id > cursor LIMIT {batch}`, then the cursor row updated in a `FULL` transaction"
                )))
            }
            (Kind::Concurrent { threads }, Variant::TxnPerMessage) => {
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok((open(dir)?, buf.clone())),
                    |(c, buf), t, i| {
                        stamp(buf, (t as u64) << 32 | i);
                        c.prepare_cached(INSERT)?.execute(params![&*buf])?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("a connection per thread, autocommit per message, `synchronous=FULL`, busy_timeout"))
            }
            (Kind::Concurrent { .. }, Variant::Batched) => {
                Ok(Outcome::Skip("each send must be its own durable commit: the txn/msg row".into()))
            }
        }
    }
}

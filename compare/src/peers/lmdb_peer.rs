//! LMDB through heed, used as a log: keys are big-endian sequence numbers in
//! database `q`, values the payloads. LMDB's defaults are kept: a commit
//! writes the transaction's pages, `fdatasync`s, writes the meta page and
//! `fdatasync`s again, so every committed transaction is durable. Writers
//! are serialised (one write transaction at a time), so concurrent commits
//! do not share a sync.
//!
//! One write transaction per sync unit: per message where each message must
//! be durable (W2, W6), per batch of 100 (W3), one for the whole run (W1/W5).
//! Appends use `MDB_APPEND`, LMDB's fast path for keys that arrive in order.
//! A consumer (W4/W7) reads in key order from its position inside a write
//! transaction, then stores the new position under key `cursor` in database
//! `meta` of the same environment and commits: one transaction per 1,000
//! messages for W4, per message for W7.

use std::ops::Bound;
use std::path::Path;
use std::time::Instant;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, PutFlags};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

pub struct Lmdb;

type Log = Database<'static, Bytes, Bytes>;

/// The largest the environment may grow: more than any workload writes.
const MAP_BYTES: usize = 4 << 30;

fn open(dir: &Path) -> Result<(Env, Log, Log)> {
    let path = dir.join("lmdb");
    std::fs::create_dir_all(&path)?;
    // SAFETY: LMDB maps the environment's files. They live in this
    // measurement's fresh temporary directory, only this `Env` opens them, and
    // nothing truncates or rewrites them behind LMDB's back while mapped.
    let env = unsafe { EnvOpenOptions::new().map_size(MAP_BYTES).max_dbs(2).open(&path)? };
    let (q, meta) = env
        .create_databases_and_commit(env.write_txn()?, |opener, wtxn| -> heed::Result<CommitOrAbort<_, ()>> {
            let q = opener.create_database::<Bytes, Bytes>(wtxn, Some("q"))?;
            let meta = opener.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
            Ok(CommitOrAbort::Commit((q, meta)))
        })?
        .unwrap_commit();
    Ok((env, q, meta))
}

fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Appends messages `first..first + count` in one committed transaction.
fn append(env: &Env, q: &Log, buf: &mut [u8], first: u64, count: u64) -> Result<()> {
    let mut wtxn = env.write_txn()?;
    for i in first..first + count {
        stamp(buf, i);
        q.put_with_flags(&mut wtxn, PutFlags::APPEND, &key(i), buf)?;
    }
    wtxn.commit()?;
    Ok(())
}

impl System for Lmdb {
    fn name(&self) -> String {
        "LMDB".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let (env, q, _) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut wtxn = env.write_txn()?;
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    q.put_with_flags(&mut wtxn, PutFlags::APPEND, &key(n), &buf)?;
                    n += 1;
                }
                wtxn.commit()?;
                Ok(Outcome::done(n, start).with_note("one write transaction for the whole run, `MDB_APPEND` puts"))
            }
            Kind::EachDurable => {
                let (env, q, _) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    append(&env, &q, &mut buf, n, 1)?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("a write transaction per message (two fdatasyncs per commit)"))
            }
            Kind::Batches(size) => {
                let (env, q, _) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    append(&env, &q, &mut buf, n, size as u64)?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("a write transaction of 100 `MDB_APPEND` puts per commit"))
            }
            Kind::Consume { batch } => consume(w, dir, batch, &mut buf),
            Kind::Concurrent { threads } => {
                let (env, q, _) = open(dir)?;
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok(buf.clone()),
                    |buf, t, i| {
                        let n = (t as u64) << 32 | i;
                        stamp(buf, n);
                        let mut wtxn = env.write_txn()?;
                        q.put(&mut wtxn, &key(n), buf)?;
                        wtxn.commit()?;
                        Ok(())
                    },
                )?;
                Ok(out
                    .with_note("one `Env` shared by the threads; a write transaction per message (writers take turns)"))
            }
        }
    }
}

fn consume(w: &Workload, dir: &Path, batch: usize, buf: &mut [u8]) -> Result<Outcome> {
    let (env, q, meta) = open(dir)?;
    let mut n = 0;
    while n < w.messages {
        let k = (w.messages - n).min(1000);
        append(&env, &q, buf, n, k)?;
        n += k;
    }
    let deadline = Deadline::new(w.cap);
    let start = Instant::now();
    let (mut next, mut seen, mut bytes) = (0u64, 0u64, 0usize);
    while seen < w.messages && !deadline.passed() {
        let mut wtxn = env.write_txn()?;
        let from = key(next);
        for kv in q.range(&wtxn, &(Bound::Included(&from[..]), Bound::Unbounded))?.take(batch) {
            let (k, v) = kv?;
            bytes += v.len();
            next = u64::from_be_bytes(k.try_into()?) + 1;
            seen += 1;
        }
        meta.put(&mut wtxn, b"cursor", &key(next))?;
        wtxn.commit()?;
    }
    let out = Outcome::done(seen, start);
    assert_eq!(bytes as u64, seen * w.payload as u64, "LMDB consumed the wrong bytes");
    let per = crate::common::per_commit(batch);
    Ok(out.with_note(&format!(
        "a write transaction {per}: a cursor over `q` from the stored position, then key `cursor` of `meta` put and committed"
    )))
}

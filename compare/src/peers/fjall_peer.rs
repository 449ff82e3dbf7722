//! fjall (an LSM-tree key-value store) used as a log: keys are big-endian
//! sequence numbers in keyspace `q`. Its journal is made durable with
//! `PersistMode::SyncData`: after every insert (W2, W6), with each batch
//! (`WriteBatch::durability(Some(SyncData))`, W3), or once at the end
//! (`Database::persist`, W1/W5). W4 reads 1,000 keys past a cursor and
//! commits the cursor (key `cursor` in keyspace `meta`) with `SyncData`.
//! Compression is off (the crate's `lz4` feature is not enabled).

use std::path::Path;
use std::time::Instant;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

pub struct Fjall;

fn open(dir: &Path) -> Result<(Database, Keyspace)> {
    let db = Database::builder(dir.join("db")).open()?;
    let ks = db.keyspace("q", KeyspaceCreateOptions::default)?;
    Ok((db, ks))
}

fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

impl System for Fjall {
    fn name(&self) -> String {
        "fjall".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let (db, ks) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    ks.insert(key(n), buf.as_slice())?;
                    n += 1;
                }
                db.persist(PersistMode::SyncData)?;
                Ok(Outcome::done(n, start).with_note("`insert` per message, `persist(SyncData)` at the end"))
            }
            Kind::EachDurable => {
                let (db, ks) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    stamp(&mut buf, n);
                    ks.insert(key(n), buf.as_slice())?;
                    db.persist(PersistMode::SyncData)?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("`insert`, then `persist(SyncData)`"))
            }
            Kind::Batches(size) => {
                let (db, ks) = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
                    for i in 0..size as u64 {
                        stamp(&mut buf, n + i);
                        batch.insert(&ks, key(n + i), buf.as_slice());
                    }
                    batch.commit()?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("a `WriteBatch` of 100 with `durability(Some(SyncData))`"))
            }
            Kind::Consume { batch } => {
                let (db, ks) = open(dir)?;
                let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
                let mut n = 0;
                while n < w.messages {
                    let mut b = db.batch();
                    let k = (w.messages - n).min(1000);
                    for i in 0..k {
                        stamp(&mut buf, n + i);
                        b.insert(&ks, key(n + i), buf.as_slice());
                    }
                    b.commit()?;
                    n += k;
                }
                db.persist(PersistMode::SyncData)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let (mut next, mut seen, mut bytes) = (0u64, 0u64, 0usize);
                while seen < w.messages && !deadline.passed() {
                    for kv in ks.range(key(next)..).take(batch) {
                        let (k, v) = kv.into_inner()?;
                        bytes += v.len();
                        next = u64::from_be_bytes(k.as_ref().try_into()?) + 1;
                        seen += 1;
                    }
                    meta.insert("cursor", key(next))?;
                    db.persist(PersistMode::SyncData)?;
                }
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "fjall consumed the wrong bytes");
                Ok(out.with_note(&format!(
                    "`range(cursor..).take({batch})`, then the cursor key inserted and `persist(SyncData)`"
                )))
            }
            Kind::Concurrent { threads } => {
                let (db, ks) = open(dir)?;
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok((db.clone(), ks.clone(), buf.clone())),
                    |(db, ks, buf), t, i| {
                        let n = (t as u64) << 32 | i;
                        stamp(buf, n);
                        ks.insert(key(n), buf.as_slice())?;
                        db.persist(PersistMode::SyncData)?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("one `Database` shared by the threads; `insert`, then `persist(SyncData)`"))
            }
        }
    }
}

//! The naive log: what one writes in an afternoon. Records are framed as
//! `len: u32 | crc32(len ‖ payload): u32 | payload` and appended with one
//! `write(2)` per send (`O_APPEND`, no preallocation), made durable with
//! `fdatasync`. A consumer reads the file sequentially, checks every CRC,
//! and commits its byte position with `pwrite` + `fdatasync` of a cursor
//! file. Concurrent senders share the file descriptor and each calls
//! `fdatasync` after its own write: no group commit beyond what the kernel
//! merges.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::common::{Deadline, Kind, Outcome, Result, System, Workload, concurrent, payload, per_thread, stamp};

pub struct Naive;

const HEADER: usize = 8;

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

fn open(dir: &Path) -> Result<File> {
    let f = OpenOptions::new().create(true).append(true).read(true).open(dir.join("log"))?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

impl System for Naive {
    fn name(&self) -> String {
        "naive log".into()
    }

    fn run(&self, w: &Workload, dir: &Path) -> Result<Outcome> {
        let mut buf = payload(w.payload);
        let mut out = Vec::with_capacity(HEADER + w.payload);
        match w.kind {
            Kind::SyncAtEnd => {
                let mut f = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && (n % 256 != 0 || !deadline.passed()) {
                    stamp(&mut buf, n);
                    out.clear();
                    frame(&mut out, &buf);
                    f.write_all(&out)?;
                    n += 1;
                }
                f.sync_data()?;
                Ok(Outcome::done(n, start).with_note("`write(2)` per record, `fdatasync` at the end"))
            }
            Kind::EachDurable => {
                let mut f = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    stamp(&mut buf, n);
                    out.clear();
                    frame(&mut out, &buf);
                    f.write_all(&out)?;
                    f.sync_data()?;
                    n += 1;
                }
                Ok(Outcome::done(n, start).with_note("`write(2)` + `fdatasync` per record"))
            }
            Kind::Batches(size) => {
                let mut f = open(dir)?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut n = 0;
                while n < w.messages && !deadline.passed() {
                    out.clear();
                    for i in 0..size as u64 {
                        stamp(&mut buf, n + i);
                        frame(&mut out, &buf);
                    }
                    f.write_all(&out)?;
                    f.sync_data()?;
                    n += size as u64;
                }
                Ok(Outcome::done(n, start).with_note("one `write(2)` of 100 records + `fdatasync`"))
            }
            Kind::Consume { batch } => {
                let mut f = open(dir)?;
                let mut n = 0;
                while n < w.messages {
                    out.clear();
                    let k = (w.messages - n).min(1000);
                    for i in 0..k {
                        stamp(&mut buf, n + i);
                        frame(&mut out, &buf);
                    }
                    f.write_all(&out)?;
                    n += k;
                }
                f.sync_data()?;
                let cursor = OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("cursor"))?;
                cursor.sync_all()?;
                File::open(dir)?.sync_all()?;
                let deadline = Deadline::new(w.cap);
                let start = Instant::now();
                let mut r = BufReader::with_capacity(1 << 20, File::open(dir.join("log"))?);
                let (mut seen, mut bytes, mut pos) = (0u64, 0usize, 0u64);
                let mut header = [0u8; HEADER];
                let mut body = vec![0u8; w.payload];
                while seen < w.messages && !deadline.passed() {
                    for _ in 0..batch {
                        if r.read_exact(&mut header).is_err() {
                            break;
                        }
                        let len = u32::from_le_bytes(header[..4].try_into()?) as usize;
                        body.resize(len, 0);
                        r.read_exact(&mut body)?;
                        let mut h = crc32fast::Hasher::new();
                        h.update(&header[..4]);
                        h.update(&body);
                        if h.finalize().to_le_bytes() != header[4..] {
                            return Err(format!("naive log: bad CRC at byte {pos}").into());
                        }
                        pos += (HEADER + len) as u64;
                        bytes += len;
                        seen += 1;
                    }
                    let mut ck = [0u8; 12];
                    ck[..8].copy_from_slice(&pos.to_le_bytes());
                    let crc = crc32fast::hash(&ck[..8]);
                    ck[8..].copy_from_slice(&crc.to_le_bytes());
                    cursor.write_all_at(&ck, 0)?;
                    cursor.sync_data()?;
                }
                let out = Outcome::done(seen, start);
                assert_eq!(bytes as u64, seen * w.payload as u64, "the naive log consumed the wrong bytes");
                Ok(out.with_note(&format!(
                    "buffered sequential read, CRC checked; cursor `pwrite` + `fdatasync` {}",
                    crate::common::per_commit(batch)
                )))
            }
            Kind::Concurrent { threads } => {
                let f = open(dir)?;
                let out = concurrent(
                    threads,
                    per_thread(w.messages, threads),
                    w.cap,
                    |_| Ok((&f, buf.clone(), Vec::with_capacity(HEADER + w.payload))),
                    |(f, buf, out), t, i| {
                        stamp(buf, (t as u64) << 32 | i);
                        out.clear();
                        frame(out, buf);
                        f.write_all(out)?;
                        f.sync_data()?;
                        Ok(())
                    },
                )?;
                Ok(out.with_note("a shared `O_APPEND` descriptor; `write(2)` + `fdatasync` per record"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_carry_length_and_crc() {
        let mut out = Vec::new();
        super::frame(&mut out, b"hello");
        assert_eq!(out.len(), super::HEADER + 5);
        assert_eq!(&out[..4], &5u32.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..4]);
        h.update(b"hello");
        assert_eq!(&out[4..8], &h.finalize().to_le_bytes());
    }
}

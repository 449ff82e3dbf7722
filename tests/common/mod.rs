//! The shared harness of the integration tests: temp queues, and a way to
//! drain a group into a list of payloads.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use durq::{Consumer, Options, Queue};

/// A fresh queue in its own temp dir, with small segments so tests roll them.
pub struct TestQueue {
    pub dir: tempfile::TempDir,
    pub queue: Queue,
}

impl TestQueue {
    pub fn new(options: Options) -> TestQueue {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open_with(dir.path().join("q"), options).expect("open queue");
        TestQueue { dir, queue }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("q")
    }
}

/// Small segments (64 KiB) so a few hundred records roll several of them.
pub fn small() -> Options {
    Options::default().segment_bytes(64 << 10).record_bytes_max(16 << 10)
}

/// Processes everything currently visible and returns the payloads in order.
pub fn drain(consumer: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let n = consumer
            .process_timeout(Duration::from_millis(50), |batch| {
                out.extend(batch.iter().map(|m| m.payload().to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
        if n == 0 {
            return out;
        }
    }
}

/// Path of the single segment file with the lowest base offset of partition `p`.
pub fn segments(queue_dir: &Path, p: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(queue_dir.join(format!("p{p:04}"))).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

// ---- Damaging real files (recovery, corruption and bad-input tests) ----

/// The queue directory's partition-`p` segment starting at offset `base`.
pub fn segment_path(queue_dir: &Path, p: u32, base: u64) -> PathBuf {
    queue_dir.join(format!("p{p:04}")).join(format!("{base:020}.seg"))
}

/// Bytes a frame with this key and payload occupies, computed from the
/// documented layout (32-byte header, key, payload, zeros to a multiple of
/// 8), independently of the crate's own arithmetic.
pub fn frame_len(key_len: usize, payload_len: usize) -> usize {
    (32 + key_len + payload_len + 7) / 8 * 8
}

/// Where each unkeyed record's frame starts in a segment whose first frame is
/// at byte 64, plus one more entry: the end of the last frame.
pub fn frame_starts<I: IntoIterator<Item = usize>>(payload_lens: I) -> Vec<usize> {
    let mut starts = vec![64];
    for len in payload_lens {
        let next = starts.last().unwrap() + frame_len(0, len);
        starts.push(next);
    }
    starts
}

/// XORs the byte at `pos` of the file with `mask`.
pub fn flip_byte(path: &Path, pos: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

/// Overwrites the file's bytes at `pos` with `bytes` (never changes its size
/// unless the write runs past the end).
pub fn write_at(path: &Path, pos: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, pos as u64).unwrap();
}

/// Every file and directory under `root` by relative path: a file's bytes,
/// `None` for a directory. Comparing two snapshots shows whether anything
/// was added, removed or changed.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if root.is_dir() {
        walk(root, root, &mut out);
    } else {
        out.insert(PathBuf::new(), Some(std::fs::read(root).unwrap()));
    }
    out
}

/// A snapshot without the runtime files (`durq.ctl`, `durq.lock`,
/// `member.lock`), which any open creates or rewrites.
pub fn data_snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut s = snapshot(root);
    s.retain(|p, _| !matches!(p.file_name().and_then(|n| n.to_str()), Some("durq.ctl" | "durq.lock" | "member.lock")));
    s
}

/// Copies the directory tree `src` to `dst` (which must not exist).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let to = dst.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &to);
        } else {
            std::fs::copy(&path, &to).unwrap();
        }
    }
}

/// Processes exactly `n` records (they must already be visible) and returns
/// their payloads in order. Panics if they do not arrive within a second.
pub fn take(consumer: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < n {
        let want = n - out.len();
        let got = consumer
            .process_timeout(Duration::from_secs(1), |batch| {
                assert!(batch.len() <= want, "{} records delivered, expected at most {want}", batch.len());
                out.extend(batch.iter().map(|m| m.payload().to_vec()));
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
        assert!(got > 0, "only {} of {n} records arrived", out.len());
    }
    out
}

/// The error of one `process` call that must fail, with a closure that
/// panics if it is ever handed a batch.
pub fn process_error(consumer: &mut Consumer) -> durq::Error {
    consumer
        .process_timeout(Duration::from_secs(1), |batch| -> Result<(), std::io::Error> {
            panic!("a batch was delivered where an error was expected: {batch:?}")
        })
        .expect_err("process must fail")
}

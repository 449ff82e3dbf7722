//! The shared harness of the integration tests: temp queues, and a way to
//! drain a group into a list of payloads.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use durq::{Consumer, Options, Queue};

pub mod power;
pub mod rng;

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

/// Keeps panics whose message starts with `prefix` (a test's injected
/// closure panics, which `process` catches) off stderr, and lets every
/// other panic through to the default hook. The hook is the process's, so
/// it keeps the prefixes of every module of the binary that asked.
pub fn quiet_injected_panics(prefix: &'static str) {
    static PREFIXES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut prefixes = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
    if !prefixes.contains(&prefix) {
        prefixes.push(prefix);
    }
    drop(prefixes);
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload.downcast_ref::<&str>().copied().or(payload.downcast_ref::<String>().map(String::as_str));
            let prefixes = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
            if !text.is_some_and(|t| prefixes.iter().any(|p| t.starts_with(p))) {
                default(info);
            }
        }));
    });
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

/// How many mappings of `queue_dir`'s segment files this process holds now
/// (from `/proc/self/maps`; mappings of removed files count too).
pub fn mapped_segments(queue_dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let dir = queue_dir.to_str().expect("utf-8 path");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with(dir) && p.ends_with(".seg"))
        .count()
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
    (32 + key_len + payload_len).div_ceil(8) * 8
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

// ---- Real processes: children, kills and a ledger of what was acknowledged ----
// (concurrency, multi_process, crash_producer and crash_consumer tests)

/// Child processes for the multi-process and crash tests, and the checks
/// that hold across their deaths.
///
/// Integration tests cannot run the `durq` CLI (it lives in another crate),
/// so a test binary re-runs *itself*: [`procs::spawn`] starts
/// `current_exe() --exact <module>::child --nocapture --test-threads=1` with
/// [`procs::ROLE`] and the role's settings in the environment. Every test
/// module that uses it has a `#[test] fn child()` that returns at once unless
/// [`procs::role`] says this process is a child; in a child it runs the role
/// and ends the process, so nothing else of the harness runs there.
///
/// A child talks to its parent in lines on stdout. libtest prints its own
/// lines there too, so each protocol line starts with [`procs::MARK`] and is
/// written with a single `write` and flushed: a line the parent reads was
/// complete before the child could die, so an `ack` line the parent holds is
/// a `send` that returned `Ok`.
pub mod procs {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use durq::{Consumer, ConsumerOptions, Position, Queue};

    /// The environment variable that makes a test binary a child, naming its role.
    pub const ROLE: &str = "DURQ_CHILD_ROLE";
    /// Prefix of every protocol line a child prints.
    pub const MARK: &str = "@@durq ";
    /// How long a parent waits for a child to say something it must say.
    pub const PATIENCE: Duration = Duration::from_secs(30);

    /// In a test binary's `child` entry: the role if this process is a child.
    /// A child also asks to be SIGKILLed when its parent's test thread ends,
    /// so a failing test never leaves producers running.
    pub fn role() -> Option<String> {
        let role = std::env::var(ROLE).ok()?;
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
        // touches no memory.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        Some(role)
    }

    /// A required setting of a child, from its environment.
    pub fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
    }

    /// A numeric setting of a child.
    pub fn num(name: &str) -> u64 {
        var(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// In a child: prints one protocol line to the parent, in one write, and
    /// flushes it. Panics (ending the child) if the parent is gone.
    pub fn say(line: impl std::fmt::Display) {
        let line = format!("{MARK}{line}\n");
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes()).and_then(|()| out.flush()).expect("parent reads our stdout");
    }

    /// In a child: reports a failure to the parent and exits with status 3.
    pub fn fail(what: impl std::fmt::Display) -> ! {
        say(format_args!("error {what}"));
        std::process::exit(3)
    }

    /// In a child: SIGKILLs this process (not `abort`, which runs handlers
    /// and dumps core; SIGKILL is what `kill -9` and the OOM killer do).
    pub fn sigkill_self() -> ! {
        // SAFETY: kill takes integers and touches no memory.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL cannot be caught")
    }

    /// Joins consumer group `group`, waiting out a `GroupBusy` that is only
    /// the echo of a member that just left. A process that spawns a child
    /// (any test thread of the same binary may, at any moment) gives the
    /// child a copy of every open descriptor until it execs, so a member lock
    /// just released by dropping a `Consumer` can look held for that moment.
    pub fn join(queue: &Queue, group: &str, options: ConsumerOptions) -> durq::Result<Consumer> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match queue.consumer_with(group, options.clone()) {
                Err(durq::Error::GroupBusy { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                joined => return joined,
            }
        }
    }

    /// A running child and every protocol line it has printed so far.
    pub struct Proc {
        pub name: String,
        pub child: Child,
        pub stdin: Option<ChildStdin>,
        rx: mpsc::Receiver<String>,
        /// Protocol lines received so far (without [`MARK`]).
        pub lines: Vec<String>,
        eof: bool,
    }

    /// The name of test `test` of `module` (its `module_path!()`) as
    /// `--exact` takes it: the path without the crate's name.
    pub fn test_name(module: &str, test: &str) -> String {
        match module.split_once("::") {
            Some((_crate, path)) => format!("{path}::{test}"),
            None => test.to_owned(),
        }
    }

    /// Starts this test binary again as a child running `role`, on the
    /// `child` test of `module` (the caller's `module_path!()`).
    pub fn spawn(module: &str, name: &str, role: &str, envs: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", &test_name(module, "child"), "--nocapture", "--test-threads=1", "--quiet"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A line cut short by the child's death has no newline: it
                // was never fully printed, so it does not count.
                if buf.last() != Some(&b'\n') {
                    return;
                }
                let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                if let Some(at) = line.find(MARK)
                    && tx.send(line[at + MARK.len()..].to_owned()).is_err()
                {
                    return;
                }
            }
        });
        Proc { name: name.to_owned(), child, stdin, rx, lines: Vec::new(), eof: false }
    }

    impl Proc {
        /// The child's process id.
        pub fn pid(&self) -> libc::pid_t {
            self.child.id() as libc::pid_t
        }

        /// Takes in the lines printed so far without waiting; fails the test
        /// if the child reported an error.
        pub fn poll(&mut self) {
            while let Ok(line) = self.rx.try_recv() {
                self.take(line);
            }
        }

        fn take(&mut self, line: String) {
            assert!(!line.starts_with("error"), "child {} failed: {line}", self.name);
            self.lines.push(line);
        }

        /// Waits until the child prints a line for which `want` holds and
        /// returns it; fails the test if the child ends or `timeout` passes.
        pub fn wait_for(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(line) => {
                        let hit = want(&line);
                        self.take(line.clone());
                        if hit {
                            return line;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        panic!(
                            "child {} said nothing expected within {timeout:?}; last lines: {:?}",
                            self.name,
                            self.tail()
                        )
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let status = self.child.wait().expect("wait");
                        panic!(
                            "child {} ended ({status}) before saying what was expected; last lines: {:?}",
                            self.name,
                            self.tail()
                        )
                    }
                }
            }
        }

        /// Waits for the line `line` exactly.
        pub fn wait_line(&mut self, line: &str) {
            self.wait_for(PATIENCE, |l| l == line);
        }

        fn tail(&self) -> &[String] {
            &self.lines[self.lines.len().saturating_sub(5)..]
        }

        /// Sends SIGKILL, reaps the child, and takes in everything it printed
        /// before it died. Fails the test if the child had already exited on
        /// its own (it failed, or finished work it was meant to be killed in).
        pub fn sigkill(&mut self) {
            // SAFETY: kill takes integers; the child is not reaped yet (only
            // this type reaps it), so the pid is still ours.
            let rc = unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            assert_eq!(rc, 0, "kill {}", self.name);
            self.wait_killed();
        }

        /// Waits for a child that is dying by SIGKILL (its own or ours),
        /// reaps it and takes in everything it printed. Fails the test if it
        /// ended any other way.
        pub fn wait_killed(&mut self) {
            let status = self.child.wait().expect("wait");
            self.drain_lines();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "child {} was not killed but ended: {status}", self.name);
        }

        /// Waits (at most [`PATIENCE`]) for the child to exit on its own and
        /// takes in all it printed; fails the test unless it exited with 0.
        pub fn finish(&mut self) -> ExitStatus {
            let deadline = Instant::now() + PATIENCE;
            let status = loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    break status;
                }
                assert!(Instant::now() < deadline, "child {} still running after {PATIENCE:?}", self.name);
                std::thread::sleep(Duration::from_millis(5));
            };
            self.drain_lines();
            assert!(status.success(), "child {} failed: {status}; last lines: {:?}", self.name, self.tail());
            status
        }

        fn drain_lines(&mut self) {
            if self.eof {
                return;
            }
            // The child is dead, so the pipe reaches its end soon.
            while let Ok(line) = self.rx.recv_timeout(PATIENCE) {
                self.take(line);
            }
            self.eof = true;
        }

        /// Writes a line to the child's stdin.
        pub fn tell(&mut self, line: &str) {
            let stdin = self.stdin.as_mut().expect("stdin");
            stdin.write_all(format!("{line}\n").as_bytes()).and_then(|()| stdin.flush()).expect("write to child");
        }

        /// The `ack` lines received so far.
        pub fn acks(&self) -> impl Iterator<Item = (Position, &str)> {
            self.lines.iter().filter_map(|l| parse_ack(l))
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// Parses `ack <partition> <offset> <id>`.
    pub fn parse_ack(line: &str) -> Option<(Position, &str)> {
        let mut w = line.strip_prefix("ack ")?.split(' ');
        let partition = w.next()?.parse().ok()?;
        let offset = w.next()?.parse().ok()?;
        let id = w.next()?;
        Some((Position { partition, offset }, id))
    }

    pub use super::rng::Rng;

    /// The seed of a randomised test: `DURQ_SEED` if set (to replay a
    /// failure), else `default`. Printed, so a failure shows it.
    pub fn seed(default: u64) -> u64 {
        let seed = std::env::var("DURQ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
        eprintln!("seed {seed} (set DURQ_SEED to replay)");
        seed
    }

    /// A self-checking payload: `<id>#<len>#` and `len` filler bytes derived
    /// from the id, so a torn, shortened or mixed-up payload is recognised.
    /// An id is `<writer>-<seq>`.
    pub fn payload(id: &str, len: usize) -> Vec<u8> {
        let mut v = format!("{id}#{len}#").into_bytes();
        let h = crc32fast::hash(id.as_bytes()) as usize;
        v.extend((0..len).map(|i| b'a' + ((h + i * 7) % 26) as u8));
        v
    }

    /// The id of a payload made by [`payload`], or why it is not intact.
    pub fn parse_payload(bytes: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let (id, rest) = text.split_once('#').ok_or("no '#'")?;
        let (len, _) = rest.split_once('#').ok_or("no second '#'")?;
        let len: usize = len.parse().map_err(|e| format!("bad length: {e}"))?;
        if payload(id, len) != bytes {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
            return Err(format!("payload of {id} is not intact ({} bytes): {shown}", bytes.len()));
        }
        Ok(id.to_owned())
    }

    /// Splits an id into writer and sequence number.
    pub fn split_id(id: &str) -> (&str, u64) {
        let (writer, seq) = id.rsplit_once('-').unwrap_or_else(|| panic!("id {id:?} has no '-'"));
        (writer, seq.parse().unwrap_or_else(|_| panic!("id {id:?} has no sequence number")))
    }

    /// The producer role shared by several test files. Settings:
    /// `DURQ_DIR` (the queue, which must exist), `DURQ_WRITER` (id prefix),
    /// `DURQ_COUNT` (sends), `DURQ_SEED`, `DURQ_MAX_LEN` (filler bytes),
    /// `DURQ_WAIT_GO` (if `1`: wait for a line on stdin before sending).
    /// Prints `ready` once the queue is open, `ack <p> <offset> <id>` after
    /// each `send` returned `Ok`, and `done` at the end.
    pub fn run_producer() -> ! {
        let dir = var("DURQ_DIR");
        let writer = var("DURQ_WRITER");
        let count = num("DURQ_COUNT");
        let max_len = num("DURQ_MAX_LEN");
        let mut rng = Rng::new(num("DURQ_SEED"));
        let queue = Queue::open_existing(&dir).unwrap_or_else(|e| fail(format_args!("open {dir}: {e}")));
        let producer = queue.producer();
        say("ready");
        if std::env::var("DURQ_WAIT_GO").is_ok_and(|v| v == "1") {
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).expect("read go");
        }
        for seq in 0..count {
            let id = format!("{writer}-{seq}");
            let len = rng.below(max_len + 1) as usize;
            match producer.send(payload(&id, len)) {
                Ok(pos) => say(format_args!("ack {} {} {id}", pos.partition, pos.offset)),
                Err(e) => fail(format_args!("send {id}: {e}")),
            }
        }
        say("done");
        std::process::exit(0)
    }

    /// Spawns [`run_producer`] for the queue at `dir`, on the `child` test
    /// of `module` (as [`spawn`]).
    pub fn spawn_producer(
        module: &str,
        dir: &Path,
        writer: &str,
        count: u64,
        seed: u64,
        max_len: u64,
        wait_go: bool,
    ) -> Proc {
        spawn(
            module,
            writer,
            "producer",
            &[
                ("DURQ_DIR", dir.display().to_string()),
                ("DURQ_WRITER", writer.to_owned()),
                ("DURQ_COUNT", count.to_string()),
                ("DURQ_SEED", seed.to_string()),
                ("DURQ_MAX_LEN", max_len.to_string()),
                ("DURQ_WAIT_GO", if wait_go { "1" } else { "0" }.to_owned()),
            ],
        )
    }

    /// What a queue must hold, checked as it is read: every offset of every
    /// partition exactly once and in order (dense), every payload intact, no
    /// payload id twice (children never retry a send), each writer's records
    /// in its send order within a partition, and every acknowledged record
    /// at the position its `send` returned. Any error from the consumer —
    /// `Corrupt` above all — fails the test.
    pub struct Ledger {
        /// Next offset expected per partition.
        pub next: Vec<u64>,
        /// Where each id was found.
        pub seen: HashMap<String, Position>,
        /// Where each acknowledged id was stored, as `send` said.
        pub acked: HashMap<String, Position>,
        last_seq: HashMap<(String, u32), u64>,
    }

    impl Ledger {
        pub fn new(partitions: u32) -> Ledger {
            Ledger {
                next: vec![0; partitions as usize],
                seen: HashMap::new(),
                acked: HashMap::new(),
                last_seq: HashMap::new(),
            }
        }

        /// Records acknowledgements from a child's `ack` lines.
        pub fn ack_lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a String>) {
            for l in lines {
                if let Some((pos, id)) = parse_ack(l) {
                    self.ack(id, pos);
                }
            }
        }

        /// Records one acknowledged send.
        pub fn ack(&mut self, id: &str, pos: Position) {
            if let Some(old) = self.acked.insert(id.to_owned(), pos) {
                assert_eq!(old, pos, "{id} acknowledged twice at different positions");
            }
        }

        /// Checks and records one delivered record.
        pub fn absorb(&mut self, pos: Position, payload: &[u8]) {
            let p = pos.partition as usize;
            assert_eq!(pos.offset, self.next[p], "partition {p}: offsets must be dense, delivered once, in order");
            self.next[p] += 1;
            let id = parse_payload(payload).unwrap_or_else(|e| panic!("record at {pos:?}: {e}"));
            if let Some(first) = self.seen.insert(id.clone(), pos) {
                panic!("{id} stored twice: at {first:?} and {pos:?}");
            }
            let (writer, seq) = split_id(&id);
            if let Some(last) = self.last_seq.insert((writer.to_owned(), pos.partition), seq) {
                assert!(last < seq, "{writer}'s records out of send order in partition {p}: {last} before {seq}");
            }
        }

        /// Processes everything `consumer` can see until it has been idle for
        /// `idle`, checking each record.
        pub fn drain(&mut self, consumer: &mut Consumer, idle: Duration) -> usize {
            let mut n = 0;
            loop {
                let got = self.process(consumer, idle);
                if got == 0 {
                    return n;
                }
                n += got;
            }
        }

        /// Processes records until every partition `p` has been read below
        /// `targets[p]`; fails the test if that takes longer than [`PATIENCE`].
        pub fn drain_to(&mut self, consumer: &mut Consumer, targets: &[u64]) {
            let deadline = Instant::now() + PATIENCE;
            while self.next.iter().zip(targets).any(|(n, t)| n < t) {
                assert!(
                    Instant::now() < deadline,
                    "read up to {:?} only, but records up to {targets:?} were acknowledged",
                    self.next
                );
                self.process(consumer, Duration::from_millis(100));
            }
        }

        fn process(&mut self, consumer: &mut Consumer, timeout: Duration) -> usize {
            consumer
                .process_timeout(timeout, |batch| {
                    for m in batch {
                        self.absorb(m.position(), m.payload());
                    }
                    Ok::<(), std::io::Error>(())
                })
                .unwrap_or_else(|e| panic!("consumer failed: {e}"))
        }

        /// Reads at least up to every acknowledged record so far (they are
        /// visible: `send` returned), and checks they are all there.
        pub fn drain_acked(&mut self, consumer: &mut Consumer) {
            let mut targets = vec![0; self.next.len()];
            for pos in self.acked.values() {
                let p = pos.partition as usize;
                targets[p] = targets[p].max(pos.offset + 1);
            }
            self.drain_to(consumer, &targets);
            self.check_acked();
        }

        /// Every acknowledged record was read, at the position `send` returned.
        pub fn check_acked(&self) {
            let mut missing: Vec<(&String, &Position)> =
                self.acked.iter().filter(|(id, pos)| self.seen.get(*id) != Some(pos)).collect();
            missing.sort();
            assert!(
                missing.is_empty(),
                "{} acknowledged records missing or misplaced, e.g. {:?} (found at {:?})",
                missing.len(),
                missing[0],
                self.seen.get(missing[0].0)
            );
        }
    }

    /// Offset of partition `p`'s append mutex in `durq.ctl` (log/control.rs).
    const fn mutex_at(p: u32) -> u64 {
        4096 + 256 * p as u64
    }

    /// Partition `p`'s published tail in `durq.ctl`: the base offset of the
    /// segment being appended to, and the byte position of the next frame.
    pub fn published_tail(queue_dir: &Path, p: u32) -> (u64, u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(queue_dir.join("durq.ctl")).expect("open durq.ctl");
        let mut b = [0u8; 16];
        f.read_exact_at(&mut b, mutex_at(p) + 72).expect("read durq.ctl");
        (u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..].try_into().unwrap()))
    }

    /// The kernel's robust-futex bit: the owner died holding the lock.
    pub const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    /// The owner's thread id in a robust futex word.
    pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

    /// The futex word of partition `p`'s append mutex. For a robust mutex it
    /// holds the owner's thread id (and [`FUTEX_OWNER_DIED`] after the owner
    /// died); on glibc the word is the mutex's first field.
    pub fn mutex_word(queue_dir: &Path, p: u32) -> u32 {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(queue_dir.join("durq.ctl")).expect("open durq.ctl");
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, mutex_at(p)).expect("read durq.ctl");
        u32::from_ne_bytes(b)
    }

    /// The thread ids of process `pid`.
    pub fn threads(pid: libc::pid_t) -> Vec<u32> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Stops `proc` with SIGSTOP and waits until it is stopped.
    pub fn freeze(proc: &Proc) {
        let pid = proc.pid();
        // SAFETY: kill and waitpid take integers and a pointer to a local.
        unsafe {
            assert_eq!(libc::kill(pid, libc::SIGSTOP), 0, "SIGSTOP {}", proc.name);
            let mut status = 0;
            let rc = libc::waitpid(pid, &mut status, libc::WUNTRACED);
            assert!(rc == pid && libc::WIFSTOPPED(status), "{} did not stop (status {status:#x})", proc.name);
        }
    }

    /// Resumes a child stopped by [`freeze`].
    pub fn thaw(proc: &Proc) {
        // SAFETY: kill takes integers.
        assert_eq!(unsafe { libc::kill(proc.pid(), libc::SIGCONT) }, 0, "SIGCONT {}", proc.name);
    }
}

/// The checkpoint file in force for `group` in partition `p`: the newest
/// epoch's file in the slot's directory.
pub fn checkpoint_file(queue_dir: &Path, group: &str, p: u32) -> PathBuf {
    let slot_dir = durq::internals::group::slot::dir(&queue_dir.join("groups").join(group), p);
    let epoch =
        *durq::internals::group::checkpoint::epochs(&slot_dir).unwrap().last().expect("the slot has a checkpoint");
    slot_dir.join(durq::internals::group::checkpoint::file_name(epoch))
}

/// Sets a segment header's `synced_end` field (bytes 40..52: the value and
/// its CRC32), as a power loss can leave it: behind what was synced.
pub fn set_synced_end(segment: &Path, synced_end: u64) {
    let value = synced_end.to_le_bytes();
    let mut field = value.to_vec();
    field.extend_from_slice(&crc32fast::hash(&value).to_le_bytes());
    write_at(segment, 40, &field);
}

/// The payload of record `i` in the recovery and corruption tests: 9 or 10
/// bytes, so frames carry zero padding that a cut can fall into.
pub fn message(i: u64) -> Vec<u8> {
    format!("message {i}").into_bytes()
}

/// `message(i)` for every `i` in `range`.
pub fn messages(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(message).collect()
}

//! Shared harness of the process-level tests of the `durq` command (chaos
//! and fencing): `durq` children whose stdout and stderr are collected line
//! by line in background threads, SIGKILL / SIGSTOP / SIGCONT / SIGTERM,
//! `durq stat --json` read through a small JSON parser, and a seeded RNG.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `durq` binary under test.
pub const DURQ: &str = env!("CARGO_BIN_EXE_durq");

/// How long to wait for something that must happen (liveness), generous so
/// a loaded machine never fails a test that is correct.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A `durq` command whose process is SIGKILLed if the test thread that
/// started it ends (a failing test never leaves consumers running).
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(DURQ);
    // The tests' stderr is exact; a RUST_LOG of the caller's would add logs.
    cmd.args(args).env_remove("RUST_LOG");
    // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// What a finished `durq` run left behind.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `durq` to completion with `stdin` as input.
pub fn durq(args: &[&str], stdin: &str) -> Run {
    let mut child =
        command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn durq");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    // Written from a thread: a large input must not deadlock against output,
    // and a run that fails early exits without reading it.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().expect("wait durq");
    writer.join().unwrap();
    Run { status: out.status, stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// Runs `durq` and insists it succeeds with nothing on stderr; its stdout,
/// lossily decoded.
pub fn ok(args: &[&str], stdin: &str) -> String {
    let run = durq(args, stdin);
    assert!(run.status.success(), "durq {args:?} failed ({}): {}", run.status, run.stderr);
    assert_eq!(run.stderr, "", "durq {args:?}");
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// Runs `durq` and insists it fails with exit `code` and one clean line.
pub fn fails(args: &[&str], stdin: &str, code: i32) -> String {
    let run = durq(args, stdin);
    assert_eq!(run.status.code(), Some(code), "durq {args:?}: {}", run.stderr);
    assert!(run.stderr.starts_with("durq: "), "durq {args:?}: {:?}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "durq {args:?}: {:?}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "durq {args:?}: {:?}", run.stderr);
    run.stderr
}

/// A temporary directory and the path of a queue inside it.
pub fn queue_dir() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q").to_str().unwrap().to_owned();
    (tmp, q)
}

/// Lines read from one of a child's streams.
#[derive(Default)]
struct Collected {
    /// Complete lines (without their newline).
    lines: Vec<String>,
    /// When each line was read.
    times: Vec<Instant>,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Default)]
struct Sink {
    state: Mutex<Collected>,
    changed: Condvar,
}

/// Whether the stdout reader may read: a closed gate lets the pipe fill up,
/// so the child blocks in its next write (mid-batch, for `durq consume`).
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }

    fn wait_open(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

fn pump(mut src: impl Read, sink: Arc<Sink>, gate: Option<Arc<Gate>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        if let Some(gate) = &gate {
            gate.wait_open();
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut st = sink.state.lock().unwrap();
        st.partial.extend_from_slice(&buf[..n]);
        while let Some(at) = st.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = st.partial.drain(..=at).collect();
            st.lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            st.times.push(Instant::now());
        }
        drop(st);
        sink.changed.notify_all();
    }
    // A line without its newline was cut short by the child's death: it
    // never fully left the process, so it does not count.
    sink.state.lock().unwrap().eof = true;
    sink.changed.notify_all();
}

/// A running `durq` child.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout_fd: RawFd,
    out: Arc<Sink>,
    err: Arc<Sink>,
    gate: Arc<Gate>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `durq args`; stdin is a pipe if `stdin`, else `/dev/null`.
    pub fn spawn(name: &str, args: &[&str], stdin: bool) -> Proc {
        let mut child = command(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn durq");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout_fd = stdout.as_raw_fd();
        let out = Arc::new(Sink::default());
        let err = Arc::new(Sink::default());
        let gate = Arc::new(Gate { open: Mutex::new(true), changed: Condvar::new() });
        let readers = vec![
            {
                let (out, gate) = (out.clone(), gate.clone());
                std::thread::spawn(move || pump(stdout, out, Some(gate)))
            },
            {
                let err = err.clone();
                std::thread::spawn(move || pump(stderr, err, None))
            },
        ];
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout_fd,
            out,
            err,
            gate,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Shrinks the stdout pipe to (about) `bytes`, so that a held-back
    /// reader blocks the child soon. Call right after spawning.
    pub fn set_stdout_pipe_bytes(&self, bytes: usize) -> usize {
        // SAFETY: fcntl on a descriptor the reader thread keeps open.
        let rc = unsafe { libc::fcntl(self.stdout_fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) };
        assert!(rc > 0, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
        rc as usize
    }

    /// Bytes the child wrote to stdout that nobody has read yet.
    pub fn stdout_unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(self.stdout_fd, libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        n as usize
    }

    /// Stops (true) or resumes (false) reading the child's stdout.
    pub fn hold_stdout(&self, hold: bool) {
        self.gate.set(!hold);
    }

    /// True if the child is blocked writing to a pipe (its stdout, full).
    pub fn blocked_writing(&self) -> bool {
        let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", self.pid())).unwrap_or_default();
        if wchan.contains("pipe_write") {
            return true;
        }
        let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", self.pid())).unwrap_or_default();
        syscall.split(' ').next().and_then(|n| n.parse::<libc::c_long>().ok()) == Some(libc::SYS_write)
    }

    /// The child's stdin, to write to from another thread.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin is a pipe and was not taken")
    }

    /// Complete stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.out.state.lock().unwrap().lines.clone()
    }

    pub fn line_count(&self) -> usize {
        self.out.state.lock().unwrap().lines.len()
    }

    /// Complete stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.err.state.lock().unwrap().lines.clone()
    }

    /// Complete stderr lines so far, each with when it was read.
    pub fn stderr_lines_timed(&self) -> Vec<(Instant, String)> {
        let st = self.err.state.lock().unwrap();
        st.times.iter().copied().zip(st.lines.iter().cloned()).collect()
    }

    /// Waits until `want` holds for the stdout lines; false on timeout.
    pub fn wait_stdout(&self, timeout: Duration, want: impl Fn(&[String]) -> bool) -> bool {
        wait_sink(&self.out, timeout, want)
    }

    /// Waits until `want` holds for the stderr lines; false on timeout.
    pub fn wait_stderr(&self, timeout: Duration, want: impl Fn(&[String]) -> bool) -> bool {
        wait_sink(&self.err, timeout, want)
    }

    fn signal(&self, signal: libc::c_int) {
        assert!(self.status.is_none(), "{} already ended", self.name);
        // SAFETY: kill takes integers; the child is not reaped yet (only this
        // type reaps it), so the pid is still ours.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.name, std::io::Error::last_os_error());
    }

    /// SIGSTOP, and waits until the child is stopped.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let mut status = 0;
        // SAFETY: waitpid writes one int; WUNTRACED reports the stop without
        // reaping the child.
        let rc = unsafe { libc::waitpid(self.pid(), &mut status, libc::WUNTRACED) };
        assert!(rc == self.pid() && libc::WIFSTOPPED(status), "{} did not stop (status {status:#x})", self.name);
    }

    /// SIGCONT.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Exit status if the child has ended (it is then reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// SIGKILLs the child, reaps it and collects everything it printed.
    /// Panics if it had already ended on its own.
    pub fn kill(&mut self) {
        assert_eq!(self.exited(), None, "{} ended on its own before the kill: {:?}", self.name, self.stderr_lines());
        self.signal(libc::SIGKILL);
        let status = self.wait(PATIENCE);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{} ended otherwise: {status}", self.name);
    }

    /// SIGTERM (`durq consume` finishes its batch and exits 0), then waits.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if self.exited().is_none() {
            self.signal(libc::SIGTERM);
        }
        self.wait(timeout)
    }

    /// Closes the child's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to end (SIGKILLs it and panics after `timeout`),
    /// and for its streams to be read to their end.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.hold_stdout(false);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() >= deadline {
                // SAFETY: as in `signal`.
                unsafe { libc::kill(self.pid(), libc::SIGKILL) };
                let _ = self.child.wait();
                panic!("{} still running after {timeout:?}; stderr: {:?}", self.name, self.stderr_lines());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("reader thread");
        }
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.gate.set(true);
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_sink(sink: &Sink, timeout: Duration, want: impl Fn(&[String]) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut st = sink.state.lock().unwrap();
    loop {
        if want(&st.lines) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || st.eof {
            return want(&st.lines);
        }
        st = sink.changed.wait_timeout(st, left).unwrap().0;
    }
}

/// Waits until `cond` holds, polling; false on timeout.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- a pseudo-terminal ----

/// A pseudo-terminal: the child writes to the slave side, the test reads
/// the master side in a background thread.
pub struct Pty {
    master: Arc<Mutex<Vec<u8>>>,
    /// Given to the child (take it): the master reads until every copy is closed.
    pub slave: Option<OwnedFd>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    pub fn open() -> Pty {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two fds into the ints it is given; the
        // name, termios and window size pointers may be null.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened by openpty and are owned by
        // nothing else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            // Ends with EIO once the last slave fd is closed.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { master: output, slave: Some(slave), reader: Some(reader) }
    }

    /// What the child wrote so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.master.lock().unwrap()).into_owned()
    }

    /// A copy of the slave side for a child, the test keeping its own open
    /// until [`Pty::finish`]: were the child's copy the last, its exit would
    /// hang the terminal up, and a read of the master can then fail with EIO
    /// before the reader has taken what the child wrote last.
    pub fn for_child(&self) -> Stdio {
        Stdio::from(self.slave.as_ref().expect("the slave side is still open").try_clone().unwrap())
    }

    /// Everything the child wrote, once it has exited: waits until the
    /// reader has taken all of it (no new byte for 100 ms), then closes the
    /// test's copy of the slave, which ends the reader.
    pub fn finish(mut self) -> String {
        let mut seen = usize::MAX;
        loop {
            let read = self.master.lock().unwrap().len();
            if read == seen {
                break;
            }
            seen = read;
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(self.slave.take());
        self.reader.take().unwrap().join().unwrap();
        self.output()
    }
}

// ---- `durq stat --json` ----

/// A parsed JSON value (enough of RFC 8259 for `durq stat --json`).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing bytes after JSON value in {text:?}");
        v
    }

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as u64,
            _ => panic!("not a non-negative integer: {self:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) {
        self.ws();
        assert_eq!(self.s.get(self.i), Some(&b), "expected {:?} at byte {}", b as char, self.i);
        self.i += 1;
    }

    fn peek(&mut self) -> u8 {
        self.ws();
        *self.s.get(self.i).expect("unexpected end of JSON")
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut m = BTreeMap::new();
                if self.peek() == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    let k = self.string();
                    self.eat(b':');
                    m.insert(k, self.value());
                    match self.peek() {
                        b',' => self.i += 1,
                        _ => {
                            self.eat(b'}');
                            return Json::Obj(m);
                        }
                    }
                }
            }
            b'[' => {
                self.eat(b'[');
                let mut v = Vec::new();
                if self.peek() == b']' {
                    self.i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    match self.peek() {
                        b',' => self.i += 1,
                        _ => {
                            self.eat(b']');
                            return Json::Arr(v);
                        }
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(text.parse().unwrap_or_else(|_| panic!("bad number {text:?} at byte {start}")))
            }
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(self.s[self.i..].starts_with(w.as_bytes()), "bad literal at byte {}", self.i);
        self.i += w.len();
        v
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).expect("unterminated string");
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).expect("utf-8 string"),
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            let c = char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

/// `durq stat DIR --json`, parsed.
pub fn stat(dir: &Path) -> Json {
    let dir = dir.to_str().unwrap();
    Json::parse(&ok(&["stat", dir, "--json"], ""))
}

/// Each partition's next offset, from a stat.
pub fn next_offsets(stat: &Json) -> Vec<u64> {
    stat.get("partitions").arr().iter().map(|p| p.get("next_offset").u64()).collect()
}

/// Group `group`'s committed offset per partition, from a stat.
pub fn committed(stat: &Json, group: &str) -> Vec<u64> {
    let g = stat
        .get("groups")
        .arr()
        .iter()
        .find(|g| g.get("name").str() == group)
        .unwrap_or_else(|| panic!("no group {group:?} in stat"));
    g.get("committed").arr().iter().map(Json::u64).collect()
}

// ---- Randomness ----

// The root crate's generator; `millis` is for its tests, not these.
#[allow(dead_code)]
#[path = "../../../tests/common/rng.rs"]
pub mod rng;

/// The seed from `DURQ_SEED` if set, else from the clock.
pub fn seed() -> u64 {
    match std::env::var("DURQ_SEED") {
        Ok(s) => s.parse().expect("DURQ_SEED must be a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

/// Creates the queue at `q` (2 partitions, 64 KiB segments) and sends, in
/// order: `a` and `b` (one batch: partition 0, offsets 0 and 1), `keyed`
/// with key `k` (partition 1), and a payload that is not UTF-8 (partition
/// 0, offset 2).
pub fn produce_sample(q: &str) {
    let created = ok(
        &[
            "produce",
            q,
            "--partitions",
            "2",
            "--segment-bytes",
            "65536",
            "--record-bytes-max",
            "16384",
            "--key-sep",
            "=",
        ],
        "a\nb\nk=keyed\n",
    );
    assert_eq!(created, "0 0\n0 1\n1 0\n");
    let queue = durq::Queue::open_existing(q).unwrap();
    let at = queue.producer().send(b"\xff\x00bin").unwrap();
    assert_eq!((at.partition, at.offset), (0, 2));
}

/// `durq stat --watch` into a pipe: the snapshots printed so far.
/// The snapshots printed so far: groups of lines, each from a `queue `
/// line to the blank line that ends it.
pub fn snapshots(lines: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in lines {
        match current.as_mut() {
            None => {
                assert!(line.starts_with("queue "), "a snapshot starts with its queue: {lines:?}");
                current = Some(vec![line.clone()]);
            }
            Some(_) if line.is_empty() => out.extend(current.take()),
            Some(snapshot) => snapshot.push(line.clone()),
        }
    }
    out
}

/// The value in column `column` of the row after the header that names it,
/// in the first table whose header has that column.
pub fn cell(snapshot: &[String], column: &str) -> String {
    let header = snapshot.iter().position(|l| l.split_whitespace().any(|c| c == column)).unwrap();
    let index = snapshot[header].split_whitespace().position(|c| c == column).unwrap();
    snapshot[header + 1].split_whitespace().nth(index).unwrap().to_owned()
}

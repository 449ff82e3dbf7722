//! Members as child processes: the test binary starts itself again on the
//! suite's `child` entry, with a role and settings in its environment, and
//! reads the lines the child prints (`@@conformance <line>`), in order, as
//! they come. The parent SIGKILLs, SIGSTOPs and SIGCONTs it, and can write
//! lines to its stdin.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable that makes the binary a child, naming its role.
const ROLE: &str = "DURQ_CONFORMANCE_ROLE";
/// Prefix of every protocol line a child prints (libtest prints its own).
const MARK: &str = "@@conformance ";
/// How long a parent waits for a child to say what it must say. Generous:
/// on NATS a takeover waits out a lease, and the machine is shared.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// In the `child` entry: the role if this process is a child. A child also
/// asks to be SIGKILLed when its parent dies, so a failing test never
/// leaves members running.
pub fn role() -> Option<String> {
    let role = std::env::var(ROLE).ok()?;
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches
    // no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    Some(role)
}

/// A required setting of a child.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

/// A numeric setting of a child.
pub fn num(name: &str) -> u64 {
    var(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// In a child: one protocol line to the parent, in one write.
pub fn say(line: impl std::fmt::Display) {
    let line = format!("{MARK}{line}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).and_then(|()| out.flush()).expect("the parent reads our stdout");
}

/// In a child: reports a failure to the parent and exits with status 3.
pub fn fail(what: impl std::fmt::Display) -> ! {
    say(format_args!("error {what}"));
    std::process::exit(3)
}

/// In a child: SIGKILLs itself, as `kill -9` and the OOM killer would.
pub fn sigkill_self() -> ! {
    // SAFETY: kill takes integers and touches no memory.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL cannot be caught")
}

/// In a child: waits for the parent's next line on stdin.
pub fn wait_for_parent() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap_or_else(|e| fail(format_args!("read stdin: {e}")));
    line.trim_end().to_owned()
}

/// A running child and the protocol lines it printed so far.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    /// Protocol lines received so far, without [`MARK`].
    pub lines: Vec<String>,
    eof: bool,
}

/// Starts this test binary again, on the test `entry` (its path without the
/// crate, e.g. `conformance::local::suite::child`), as a child running `role`.
pub fn spawn(entry: &str, name: &str, role: &str, envs: &[(&str, String)]) -> Proc {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", entry, "--nocapture", "--test-threads=1", "--quiet"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
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
            // A line cut short by the child's death was never printed.
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
    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn take(&mut self, line: String) {
        assert!(!line.starts_with("error"), "child {} failed: {line}", self.name);
        self.lines.push(line);
    }

    /// Waits until the child prints a line for which `want` holds and
    /// returns it; fails the test if the child ends first or after
    /// [`PATIENCE`].
    pub fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let hit = want(&line);
                    self.take(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("child {} said nothing expected within {PATIENCE:?}; last: {:?}", self.name, self.tail())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    panic!("child {} ended ({status}) before saying it; last: {:?}", self.name, self.tail())
                }
            }
        }
    }

    /// Waits for the line `line` exactly.
    pub fn wait_line(&mut self, line: &str) {
        self.wait_for(|l| l == line);
    }

    fn tail(&self) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(5)..]
    }

    /// Writes a line to the child's stdin.
    pub fn tell(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).and_then(|()| self.stdin.flush()).expect("tell child");
    }

    /// Sends `signal` to the child, which must still be running.
    pub fn signal(&mut self, signal: libc::c_int) {
        // SAFETY: kill takes integers; the child is not reaped yet (only this
        // type reaps it), so the pid is still ours.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.name);
    }

    /// SIGKILLs the child unless it already exited with status 0 (its work
    /// was done), reaps it, and takes in all it printed. True if killed.
    pub fn sigkill_unless_done(&mut self) -> bool {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.signal(libc::SIGKILL);
        }
        let (status, _) = self.reap();
        if status.success() {
            return false;
        }
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "child {} ended: {status}; last: {:?}",
            self.name,
            self.tail()
        );
        true
    }

    /// Waits for a child that is dying by SIGKILL (its own or ours), reaps
    /// it and takes in all it printed; fails if it ended any other way.
    /// Returns when it was reaped: just after it died.
    pub fn wait_killed(&mut self) -> Instant {
        let (status, reaped) = self.reap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "child {} was not killed: {status}; last: {:?}",
            self.name,
            self.tail()
        );
        reaped
    }

    /// Waits for the child to exit on its own (at most [`PATIENCE`]) and
    /// fails unless it exited with 0.
    pub fn finish(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "child {} still running after {PATIENCE:?}", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
        let (status, _) = self.reap();
        assert!(status.success(), "child {} failed: {status}; last: {:?}", self.name, self.tail());
    }

    fn reap(&mut self) -> (ExitStatus, Instant) {
        let status = self.child.wait().expect("wait");
        let reaped = Instant::now();
        if !self.eof {
            // The child is gone, so its pipe ends soon.
            while let Ok(line) = self.rx.recv_timeout(PATIENCE) {
                self.take(line);
            }
            self.eof = true;
        }
        (status, reaped)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGKILL ends a stopped child too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

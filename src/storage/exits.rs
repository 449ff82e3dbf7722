//! Waiting for other processes to exit: a pidfd per process (Linux 5.3 and
//! later), which becomes readable once the process has exited, and a
//! [`Bell`] (an eventfd) that interrupts the wait.
//!
//! A process's `flock`s are released before its pidfd becomes readable: the
//! kernel closes an exiting process's files (and runs their last `fput`)
//! before it notifies its parent and its pidfds. So a waiter woken by an exit
//! finds the dead process's member file unlocked.
//!
//! No effect on the file system happens here: nothing is an `Op`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A running process, watched for its exit.
pub(crate) struct ProcessHandle(OwnedFd);

/// What [`ProcessHandle::open`] found.
pub(crate) enum Opened {
    /// The process runs: wait on the handle.
    Running(ProcessHandle),
    /// No process has this id any more.
    Gone,
    /// It cannot be watched (no pidfds in this kernel, no descriptor left,
    /// no such id here).
    Unwatchable,
}

impl ProcessHandle {
    /// A handle on process `pid`.
    pub(crate) fn open(pid: u32) -> Opened {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return Opened::Unwatchable };
        // SAFETY: pidfd_open takes a process id and flags (0) and returns a
        // new descriptor or -1; it reads and writes no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => Opened::Gone,
                _ => Opened::Unwatchable,
            };
        }
        let Ok(fd) = i32::try_from(fd) else { return Opened::Unwatchable };
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Opened::Running(ProcessHandle(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// Interrupts a [`wait_for_exit`] from another thread.
pub(crate) struct Bell(OwnedFd);

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: eventfd takes an initial count and flags and returns a new
        // descriptor or -1; it reads and writes no memory of ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the current or next [`wait_for_exit`] with this bell return.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live `u64` to a descriptor this
        // value owns. It can only fail with the counter full (EAGAIN), when
        // the bell is ringing already.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    fn silence(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live `u64` from a descriptor
        // this value owns; EAGAIN if it did not ring.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut count).cast(), 8) };
    }
}

/// Waits until one of `processes` has exited or `bell` rang (and silences
/// it); returns the positions in `processes` of those that exited.
pub(crate) fn wait_for_exit(processes: &[&ProcessHandle], bell: &Bell) -> io::Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = std::iter::once(&bell.0)
        .chain(processes.iter().map(|p| &p.0))
        .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    loop {
        // SAFETY: `fds` is a live, exclusively borrowed array of
        // `fds.len()` pollfd structs, which poll only fills in.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if fds[0].revents != 0 {
        bell.silence();
    }
    Ok(fds[1..].iter().enumerate().filter(|(_, fd)| fd.revents != 0).map(|(i, _)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_when_a_watched_process_exits_and_when_the_bell_rings() {
        let bell = Bell::new().unwrap();
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let Opened::Running(handle) = ProcessHandle::open(child.id()) else { panic!("a running child") };
        bell.ring();
        assert_eq!(wait_for_exit(&[&handle], &bell).unwrap(), Vec::<usize>::new(), "the bell, no exit");
        child.kill().unwrap();
        assert_eq!(wait_for_exit(&[&handle], &bell).unwrap(), vec![0], "the child's exit");
        child.wait().unwrap();
    }
}

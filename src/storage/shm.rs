//! Cross-process synchronisation inside a shared mapping.
//!
//! - [`SharedMutex`]: a POSIX mutex that is process-shared and *robust*: if
//!   its holder dies (SIGKILL included), the kernel marks it, and the next
//!   locker is told the previous holder died so it can repair what the dead
//!   holder left half done. An uncontended lock is one atomic instruction, so
//!   appends need no system call.
//! - [`futex_wait`] / [`futex_wake_all`]: sleeping on a 32-bit word of the
//!   shared mapping until another process changes it, without polling.
//!
//! Both live in the control file (see `log::control`), which every process
//! maps `MAP_SHARED`; the objects must sit at the same file offset in every
//! process, and the mapping must outlive every use (the control file is never
//! shrunk: `storage::mmap` rule 1).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Bytes reserved for one mutex in the control file. `pthread_mutex_t` is 40
/// bytes on x86_64 glibc and 48 on aarch64.
pub(crate) const SHARED_MUTEX_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= SHARED_MUTEX_BYTES);

/// A robust, process-shared mutex living in a shared mapping.
pub(crate) struct SharedMutex {
    raw: *mut libc::pthread_mutex_t,
}

// SAFETY: a process-shared pthread mutex is designed to be used from any
// thread of any process; the pointer stays valid for the life of the mapping
// that the owner of this value keeps alive.
unsafe impl Send for SharedMutex {}
// SAFETY: as above: all operations on the mutex go through pthread calls that
// are thread-safe by definition.
unsafe impl Sync for SharedMutex {}

/// How a lock was acquired.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The previous holder unlocked normally.
    Clean,
    /// The previous holder died while holding the lock: the state it protects
    /// may be half updated and must be repaired before [`MutexGuard::mark_consistent`].
    OwnerDied,
}

impl SharedMutex {
    /// Initialises a mutex at `raw`, which must point to `SHARED_MUTEX_BYTES`
    /// of the shared mapping, aligned to 8 bytes.
    ///
    /// # Safety
    /// No process may use a mutex at `raw` during or before this call: the
    /// caller is the only process with the queue open (it holds the control
    /// file's exclusive lock). `raw` must stay mapped while any `SharedMutex`
    /// for it exists.
    pub(crate) unsafe fn init(raw: *mut u8) -> std::io::Result<()> {
        assert_eq!(raw as usize % 8, 0, "shared mutex must be 8-byte aligned");
        let raw = raw.cast::<libc::pthread_mutex_t>();
        // SAFETY: `attr` is a local, initialised by pthread_mutexattr_init
        // before any other use and destroyed at the end; `raw` is valid,
        // aligned, and unused by anyone else (the caller's contract).
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            let result = check(libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED))
                .and_then(|()| check(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST)))
                .and_then(|()| check(libc::pthread_mutex_init(raw, &attr)));
            libc::pthread_mutexattr_destroy(&mut attr);
            result
        }
    }

    /// Wraps an initialised mutex at `raw`.
    ///
    /// # Safety
    /// `raw` points to a mutex set up by [`SharedMutex::init`] in this boot of
    /// the machine, inside a mapping that outlives the returned value.
    pub(crate) unsafe fn from_raw(raw: *mut u8) -> SharedMutex {
        SharedMutex { raw: raw.cast() }
    }

    /// Blocks until this thread holds the mutex.
    pub(crate) fn lock(&self) -> std::io::Result<(MutexGuard<'_>, Acquired)> {
        // SAFETY: `raw` is an initialised process-shared mutex (from_raw's
        // contract), and pthread_mutex_lock is thread-safe.
        let rc = unsafe { libc::pthread_mutex_lock(self.raw) };
        let acquired = match rc {
            0 => Acquired::Clean,
            libc::EOWNERDEAD => Acquired::OwnerDied,
            rc => return Err(std::io::Error::from_raw_os_error(rc)),
        };
        Ok((MutexGuard { mutex: self }, acquired))
    }
}

/// Holds a [`SharedMutex`]; unlocks on drop.
pub(crate) struct MutexGuard<'a> {
    mutex: &'a SharedMutex,
}

impl MutexGuard<'_> {
    /// True if this guard holds `mutex` (the same mutex of the mapping, not
    /// merely an equal one).
    pub(crate) fn holds(&self, mutex: &SharedMutex) -> bool {
        std::ptr::eq(self.mutex.raw, mutex.raw)
    }

    /// Declares the protected state repaired after [`Acquired::OwnerDied`].
    /// Without it the mutex becomes unusable once unlocked.
    pub(crate) fn mark_consistent(&self) -> std::io::Result<()> {
        // SAFETY: this thread holds the mutex (the guard exists), as
        // pthread_mutex_consistent requires.
        check(unsafe { libc::pthread_mutex_consistent(self.mutex.raw) })
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex when it made the guard.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.raw) };
        assert_eq!(rc, 0, "pthread_mutex_unlock failed on a mutex this thread holds");
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) }
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns on a wake,
/// a timeout, a signal, or at once if the word already differs. Callers
/// re-check their condition in a loop.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // FUTEX_WAIT (not the _PRIVATE variant) keys on the shared mapping, so
    // wakes from other processes reach it. Errors (EAGAIN, ETIMEDOUT, EINTR)
    // all mean "re-check".
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // `ts_ptr` is null or points to a local timespec.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr);
    }
}

/// Wakes every thread, in any process, sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

//! Failure injection at the steps where durability is decided (compiled only
//! with the `failpoints` feature, which the crate's own tests turn on).
//!
//! Every sync durq issues (msync, fdatasync, fsync of a file or a directory)
//! first asks [`check`]. A test arms a fault with [`arm`]: fail the `n`-th
//! sync from now with `errno`, once or from then on. Tests that arm faults
//! must not run concurrently with other tests in the same process (they use
//! one process-wide table); the fault tests live in their own test binary.

use std::sync::Mutex;

/// An armed fault.
#[derive(Debug, Clone, Copy)]
struct Fault {
    /// Syncs still to let through before failing.
    skip: u64,
    errno: i32,
    /// Keep failing every sync after the first failure.
    sticky: bool,
}

static FAULT: Mutex<Option<Fault>> = Mutex::new(None);

/// Fails the sync after the next `skip` ones with `errno`; with `sticky`,
/// every sync after it fails too, until [`disarm`].
pub fn arm(skip: u64, errno: i32, sticky: bool) {
    *FAULT.lock().expect("failpoint table") = Some(Fault { skip, errno, sticky });
}

/// Removes any armed fault.
pub fn disarm() {
    *FAULT.lock().expect("failpoint table") = None;
}

/// Called before every sync: `Err` if a fault is due.
pub(crate) fn check() -> std::io::Result<()> {
    let mut table = FAULT.lock().expect("failpoint table");
    match table.as_mut() {
        None => Ok(()),
        Some(f) if f.skip > 0 => {
            f.skip -= 1;
            Ok(())
        }
        Some(f) => {
            let errno = f.errno;
            if !f.sticky {
                *table = None;
            }
            Err(std::io::Error::from_raw_os_error(errno))
        }
    }
}

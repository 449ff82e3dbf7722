//! Library bugs found while building the CLI, shown through the CLI. Each
//! test fails until the library is fixed.

use std::process::Command;

/// `durq produce q` (a relative, single-component path that does not exist
/// yet) fails with "open directory : No such file or directory": the
/// library's `storage::create_dir_durable` walks up from `q` to its parent
/// `""`, for which `Path::exists` is false, so it treats `""` as a missing
/// directory and fsyncs it. The failed run also leaves an empty `q` behind,
/// and the next run then succeeds without fsyncing the new directory's
/// parent.
#[test]
fn produce_creates_a_queue_at_a_relative_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_durq"))
        .args(["produce", "q"])
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("q/durq.meta").exists());
}

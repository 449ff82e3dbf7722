//! The harness itself: a missing or too-old binary fails the tests with the
//! instruction to install it (never a silent skip), and a dropped server
//! leaves no process behind.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::NatsServer;
use crate::common::locate::{check_version, locate};

fn os(path: &Path) -> Option<OsString> {
    Some(path.as_os_str().to_owned())
}

/// A shell script standing in for `nats-server`, printing `version_line`.
fn fake_server(dir: &Path, version_line: &str) -> std::path::PathBuf {
    let path = dir.join("nats-server");
    std::fs::write(&path, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_missing_binary_fails_with_the_install_instruction() {
    let empty = tempfile::tempdir().unwrap();
    let err = locate(None, os(empty.path()), None, os(empty.path())).unwrap_err();
    assert!(err.contains(".ci/install-nats"), "{err}");

    let err = locate(Some("/nonexistent/nats-server".into()), None, None, None).unwrap_err();
    assert!(err.contains("DURQ_NATS_SERVER=/nonexistent/nats-server") && err.contains(".ci/install-nats"), "{err}");
}

#[test]
fn the_explicit_binary_wins_then_the_installed_one_then_path() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let explicit = fake_server(dirs[0].path(), "nats-server: v2.10.25");
    std::fs::create_dir(dirs[1].path().join("bin")).unwrap();
    let installed = fake_server(&dirs[1].path().join("bin"), "nats-server: v2.10.25");
    let on_path = fake_server(dirs[2].path(), "nats-server: v2.10.25");

    let (home, path) = (os(dirs[1].path()), os(dirs[2].path()));
    assert_eq!(locate(os(&explicit), home.clone(), None, path.clone()).unwrap(), explicit);
    assert_eq!(locate(None, home, None, path.clone()).unwrap(), installed);
    let no_install = tempfile::tempdir().unwrap();
    assert_eq!(locate(None, os(no_install.path()), None, path).unwrap(), on_path);
}

#[test]
fn a_too_old_or_unknown_binary_is_refused_with_the_install_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let debian = fake_server(dir.path(), "nats-server: v2.9.10");
    let err = check_version(&debian).unwrap_err();
    assert!(err.contains("2.9.10") && err.contains("2.10.25 or later") && err.contains(".ci/install-nats"), "{err}");

    let other = fake_server(dir.path(), "something else 1.0");
    let err = check_version(&other).unwrap_err();
    assert!(err.contains("not a nats-server version") && err.contains(".ci/install-nats"), "{err}");

    let pinned = fake_server(dir.path(), "nats-server: v2.10.25");
    check_version(&pinned).expect("the pinned release passes");
}

#[tokio::test]
async fn a_dropped_server_leaves_no_process_behind() {
    let server = NatsServer::start().await;
    let pid = server.pid();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists(), "the server runs while held");
    drop(server);
    // Killed and reaped: not even a zombie entry is left.
    assert!(!Path::new(&proc_dir).exists(), "process {pid} outlived its NatsServer");
}

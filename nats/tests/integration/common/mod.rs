//! The shared harness of the durq-nats tests: real `nats-server` processes
//! on free loopback ports, each with its own store directory, stopped (killed
//! and reaped) when dropped.
//!
//! - [`NatsServer`]: one server, with JetStream (`sync_interval: always`) or
//!   without it.
//! - [`Cluster`]: three JetStream servers routed to each other on loopback,
//!   one cluster name; a node, or all three, can be SIGKILLed (or all
//!   three stopped by SIGTERM) and started again on their own stores and
//!   ports.
//! - [`proxy::Proxy`]: a proxy in front of a server that can stall a
//!   connection's key-value writes or their acknowledgements.
//!
//! The binary is `$DURQ_NATS_SERVER`, else the one `.ci/install-nats`
//! installed, else `nats-server` on `PATH`; it must be at least
//! `durq_nats::MIN_SERVER_VERSION`. The tests of atomic batches start the
//! second pin ([`NatsServer::start_2_12`]). If none is found the tests fail
//! and say to run `.ci/install-nats`: they never skip.

pub mod locate;
pub mod proxy;

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to listen, and a cluster to elect its
/// JetStream leader, before the harness gives up. Normally well under a
/// second; generous because the test machine is shared.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a stream may take to elect a new leader after its leader died.
pub const FAILOVER_WITHIN: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(25);
/// Attempts at a free port when another process grabbed the chosen one
/// between choosing and binding.
const PORT_ATTEMPTS: usize = 5;

/// One running server, killed and reaped on drop.
pub struct NatsServer {
    process: ServerProcess,
    port: u16,
    // Dropped after the process (field order), so the server never outlives
    // its store.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// A JetStream server with `sync_interval: always`, ready to take
    /// requests.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(true).await
    }

    /// [`NatsServer::start`] for a test that is not async (the blocking
    /// API cannot run inside a runtime): the server is started on a
    /// runtime of its own, which is gone when this returns.
    pub fn start_blocking() -> NatsServer {
        tokio::runtime::Runtime::new().expect("a runtime").block_on(NatsServer::start())
    }

    /// A server with JetStream off.
    pub async fn start_without_jetstream() -> NatsServer {
        NatsServer::start_with(false).await
    }

    /// [`NatsServer::start_blocking`] on the second pinned release, 2.12
    /// (`locate::server_binary_2_12`).
    pub fn start_2_12_blocking() -> NatsServer {
        let binary = locate::server_binary_2_12();
        tokio::runtime::Runtime::new().expect("a runtime").block_on(NatsServer::start_binary(&binary, true))
    }

    async fn start_with(jetstream: bool) -> NatsServer {
        NatsServer::start_binary(&locate::server_binary(), jetstream).await
    }

    async fn start_binary(binary: &Path, jetstream: bool) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let mut config = format!("server_name: solo\nlisten: \"127.0.0.1:{port}\"\n");
            if jetstream {
                config += &jetstream_block(&dir.path().join("store"));
            }
            let mut process = ServerProcess::spawn_binary(binary, "solo", dir.path(), &config);
            match process.wait_ready(port, jetstream).await {
                Ok(()) => return NatsServer { process, port, _dir: dir },
                Err(e) if e.port_taken && attempt < PORT_ATTEMPTS => continue,
                Err(e) => panic!("{}", e.message),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Three JetStream servers in one cluster on loopback.
pub struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    /// This cluster's turn (`ONE_CLUSTER_AT_A_TIME`), given back after the
    /// nodes are stopped and their stores removed (fields drop in order).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// The cluster tests of one binary run one after the other. Started
/// together (six clusters, eighteen servers electing leaders on two cores,
/// beside the other tests' servers), a cluster missed its 60 s readiness
/// deadline in full runs on a loaded machine; one at a time, each needs
/// about 10 s. (tokio's lock works across the tests' runtimes, and a test
/// that panicked gives its turn back like any other.)
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Node {
    name: String,
    client_port: u16,
    dir: PathBuf,
    config: String,
    process: Option<ServerProcess>,
}

impl Cluster {
    /// Starts three nodes (`n1`, `n2`, `n3`) and waits until each answers
    /// the JetStream API, which in a cluster means its meta leader is
    /// elected.
    pub async fn start() -> Cluster {
        let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        'attempt: for attempt in 1..=PORT_ATTEMPTS {
            let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let routes =
                route_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
            let mut nodes = Vec::new();
            for i in 0..3 {
                let name = format!("n{}", i + 1);
                let node_dir = dir.path().join(format!("{name}-{attempt}"));
                std::fs::create_dir(&node_dir).expect("node dir");
                let config = format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{}\"\n\
                     cluster {{\n  name: durq-test\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n{}",
                    client_ports[i],
                    route_ports[i],
                    jetstream_block(&node_dir.join("store")),
                );
                let process = Some(ServerProcess::spawn(&name, &node_dir, &config));
                nodes.push(Node { name, client_port: client_ports[i], dir: node_dir, config, process });
            }
            for node in &mut nodes {
                let process = node.process.as_mut().expect("just started");
                match process.wait_ready(node.client_port, true).await {
                    Ok(()) => {}
                    Err(e) if e.port_taken && attempt < PORT_ATTEMPTS => continue 'attempt,
                    Err(e) => panic!("{}", e.message),
                }
            }
            // A cluster whose three servers answer but whose meta leader
            // never learns of all three peers (seen once in CI's rehearsal
            // on two loaded cores: "no suitable peers for placement" for
            // 60 s) is started again on fresh ports: the environment
            // failed, not the behaviour under test.
            match wait_for_placement(&nodes).await {
                Ok(()) => return Cluster { nodes, _dir: dir, _turn: turn },
                Err(e) if attempt < PORT_ATTEMPTS => {
                    eprintln!("cluster attempt {attempt}: {e}; starting it again on fresh ports");
                    drop(nodes);
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Every node's client address, comma-separated (what `connect` takes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    /// Every node's client address, for a plain `async_nats::connect`
    /// (which does not split a comma-separated list).
    pub fn addresses(&self) -> Vec<async_nats::ServerAddr> {
        self.urls().split(',').map(|url| url.parse().expect("a node's address")).collect()
    }

    /// One node's client address.
    pub fn url_of(&self, name: &str) -> String {
        format!("nats://127.0.0.1:{}", self.node(name).client_port)
    }

    /// The names of the nodes, `n1` to `n3`.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// SIGKILLs the node and reaps it; its store stays for a restart.
    pub fn kill(&mut self, name: &str) {
        let node = self.node_mut(name);
        let process = node.process.take().unwrap_or_else(|| panic!("node {name} is not running"));
        drop(process);
    }

    /// SIGKILLs every node, one right after another, and reaps them; their
    /// stores stay for [`Cluster::restart_all`].
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            drop(node.process.take().unwrap_or_else(|| panic!("node {} is not running", node.name)));
        }
    }

    /// Stops every node gracefully: SIGTERM to all three at once, then waits
    /// until each has exited by itself (a server still running after
    /// [`STOP_WITHIN`] fails the test).
    pub fn terminate_all(&mut self) {
        let mut stopping = Vec::new();
        for node in &mut self.nodes {
            let process = node.process.take().unwrap_or_else(|| panic!("node {} is not running", node.name));
            process.signal(libc::SIGTERM);
            stopping.push(process);
        }
        for process in &mut stopping {
            process.wait_exit(STOP_WITHIN);
        }
    }

    /// Starts every stopped node again on its own store and ports, all of
    /// them before waiting for any (a lone node cannot elect the JetStream
    /// meta leader), and waits until each answers the JetStream API.
    pub async fn restart_all(&mut self) {
        for node in &mut self.nodes {
            assert!(node.process.is_none(), "node {} is still running", node.name);
            node.process = Some(ServerProcess::spawn(&node.name, &node.dir, &node.config));
        }
        for node in &mut self.nodes {
            let process = node.process.as_mut().expect("just started");
            if let Err(e) = process.wait_ready(node.client_port, true).await {
                panic!("restarting {}: {}", node.name, e.message);
            }
        }
    }

    /// Starts a killed node again on its own store and ports, and waits
    /// until it answers the JetStream API.
    pub async fn restart(&mut self, name: &str) {
        let node = self.node_mut(name);
        assert!(node.process.is_none(), "node {name} is still running");
        let mut process = ServerProcess::spawn(&node.name, &node.dir, &node.config);
        if let Err(e) = process.wait_ready(node.client_port, true).await {
            panic!("restarting {name}: {}", e.message);
        }
        node.process = Some(process);
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }
}

/// The JetStream block every JetStream server here runs with: a store of
/// its own, and a sync before every acknowledgement (durq's `Sync`).
fn jetstream_block(store: &Path) -> String {
    format!("jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n", store.display().to_string())
}

/// A loopback port nothing listens on right now (the kernel's choice).
/// Another process may take it before the server binds it; the callers
/// retry with a new one when the server reports that.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A spawned `nats-server`, killed (SIGKILL) and reaped on drop.
struct ServerProcess {
    child: Child,
    name: String,
    log: PathBuf,
}

/// Why a server did not become ready.
struct NotReady {
    message: String,
    port_taken: bool,
}

impl ServerProcess {
    fn spawn(name: &str, dir: &Path, config: &str) -> ServerProcess {
        ServerProcess::spawn_binary(&locate::server_binary(), name, dir, config)
    }

    fn spawn_binary(binary: &Path, name: &str, dir: &Path, config: &str) -> ServerProcess {
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config).expect("write server config");
        let log = dir.join(format!("{name}.log"));
        let log_file = File::options().create(true).append(true).open(&log).expect("open server log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        ServerProcess { child, name: name.to_owned(), log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped (`Child::wait` was not called), so the pid names it and no
        // other process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }

    /// Waits until the process exits by itself; panics, with its log, if it
    /// is still running after `within` (the drop then SIGKILLs it).
    fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("try_wait").is_some() {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!("nats-server {} still running {within:?} after SIGTERM; its log:\n{}", self.name, self.log_text());
    }

    /// Waits until the server accepts a client and, for JetStream, answers
    /// the JetStream API.
    async fn wait_ready(&mut self, port: u16, jetstream: bool) -> Result<(), NotReady> {
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + READY_WITHIN;
        let mut last_error = String::from("not tried");
        while Instant::now() < deadline {
            // A reaped status stays in `Child`: `Drop`'s kill and wait then
            // return at once.
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_text();
                return Err(NotReady {
                    port_taken: log.contains("address already in use"),
                    message: format!(
                        "nats-server {} exited ({status}) before it was ready; its log:\n{log}",
                        self.name
                    ),
                });
            }
            match probe(&url, jetstream).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(POLL).await;
        }
        Err(NotReady {
            port_taken: false,
            message: format!(
                "nats-server {} at {url} not ready within {READY_WITHIN:?} ({last_error}); its log:\n{}",
                self.name,
                self.log_text()
            ),
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL: the harness's servers never shut down cleanly, like the
        // crashes the tests are about. Errors mean it already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One readiness check: a client connects and, for JetStream, the account
/// info request succeeds.
async fn probe(url: &str, jetstream: bool) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if jetstream {
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(Duration::from_secs(1));
        context.query_account().await.map_err(|e| format!("JetStream account info: {e}"))?;
    }
    Ok(())
}

/// A runtime for the raw client's checks in a test of the blocking API. One
/// per test, kept for the whole test: a raw connection lives on the runtime
/// it was made on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime")
}

/// A JetStream context of a raw client of `url`, to look at (and damage)
/// what durq stored.
pub async fn raw_jetstream(url: &str) -> async_nats::jetstream::Context {
    let addresses: Vec<async_nats::ServerAddr> = url.split(',').map(|u| u.parse().expect("an address")).collect();
    async_nats::jetstream::new(async_nats::connect(addresses).await.expect("raw connect"))
}

/// Every message of `stream`, from sequence 1 to its last.
pub async fn stream_messages(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let stream = jetstream.get_stream(stream).await.expect("the stream exists");
    let last = stream.get_info().await.expect("stream info").state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        messages.push(stream.get_raw_message(sequence).await.expect("a stored message"));
    }
    messages
}

/// The name of the server leading the stream `stream` (as the stream's
/// info reports it), or `None` while it has none or the request fails.
pub async fn stream_leader(client: &async_nats::Client, stream: &str) -> Option<String> {
    let mut context = async_nats::jetstream::new(client.clone());
    context.set_timeout(Duration::from_secs(1));
    let info = context.get_stream(stream).await.ok()?.info().await.ok()?.clone();
    info.cluster?.leader
}

/// Waits until the stream has a leader other than `not`, and returns it.
pub async fn wait_for_leader(client: &async_nats::Client, stream: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + FAILOVER_WITHIN;
    while Instant::now() < deadline {
        if let Some(leader) = stream_leader(client, stream).await.filter(|l| Some(l.as_str()) != not) {
            return leader;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("stream {stream} has no leader other than {not:?} after {FAILOVER_WITHIN:?}");
}

/// Waits until the meta leader knows all three JetStream peers: until
/// then, creating a three-replica stream fails with "no suitable peers
/// for placement". Creates and deletes such a stream (in memory) to find
/// out. An error after [`READY_WITHIN`].
async fn wait_for_placement(nodes: &[Node]) -> Result<(), String> {
    let addresses: Vec<async_nats::ServerAddr> = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.client_port).parse().expect("a node's address"))
        .collect();
    let client = async_nats::connect(addresses).await.expect("connect to the cluster");
    let mut context = async_nats::jetstream::new(client);
    context.set_timeout(Duration::from_secs(1));
    let config = async_nats::jetstream::stream::Config {
        name: "harness_placement".to_owned(),
        subjects: vec!["harness.placement".to_owned()],
        num_replicas: 3,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    let deadline = Instant::now() + READY_WITHIN;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match context.create_stream(config.clone()).await {
            Ok(_) => {
                context.delete_stream(&config.name).await.expect("delete the placement probe stream");
                return Ok(());
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("the cluster cannot place a three-replica stream within {READY_WITHIN:?}: {last_error}"))
}

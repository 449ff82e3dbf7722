//! Fail-stop and damage on the server: what JetStream does when its store
//! is full or a message block is damaged, and what durq-nats reports.
//!
//! - **A full store.** The server refuses each write it cannot store, with
//!   its reason; it stays up and keeps what it acknowledged. A `send` then
//!   fails at once (a refusal is not retried for `SEND_RETRY_WITHIN`) with
//!   an `Engine` error naming the partition's stream and the server's
//!   reason; a group member's write fails the same way and its batch comes
//!   again. Once space is back the same handles go on at the next offset,
//!   and every acknowledged record is there. Twice: with the server's own
//!   limit (`max_file_store`, reached first), and with a real full file
//!   system (a tmpfs in a user and mount namespace, no privileges needed;
//!   where namespaces are unavailable that test says so and skips).
//! - **A damaged block.** The server is stopped, bytes of one record in
//!   the middle of the partition stream's block file are changed, and it
//!   is started again on its store. After a clean stop (SIGTERM) it drops
//!   that record and keeps the others: a reader, and a group member, get
//!   the records before it and then `RecordsLost` naming the offset, again
//!   at every try, never the records after it. After a crash (SIGKILL) it
//!   cuts the stream at the damaged record, silently, and gives the lost
//!   offsets to the next records sent: a group whose position is past the
//!   cut gets `RecordsLost` naming the lost offsets, and so does a reader
//!   that had read past it and waits at its end.
//! - **A first record moved on purpose.** durq removes no record, but a
//!   migrated partition's stream starts where the migration began: a
//!   group new to it starts there (as a new local group starts at the
//!   first kept record); a cursor asked for an offset before it would get
//!   `BeforeStreamStart` naming where the stream starts, not `RecordsLost`.
//!
//! Servers here are started by this file (not `common::NatsServer`), as
//! they are stopped and started again on their store, or run inside a
//! namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durq::{ConsumerOptions, Options, Position, ResetTo};
use durq_nats::{Error, Queue, record};

use crate::common::{free_port, locate, raw_jetstream, runtime};

/// How long a server may take to answer the JetStream API after a start.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a test waits for records it expects, or for a reader to notice
/// a loss (its stall check runs after 3 s of silence).
const WITHIN: Duration = Duration::from_secs(30);
/// Payload bytes of a record that fills a store.
const FILL_BYTES: usize = 16 * 1024;

/// One `nats-server` with a store of its own, which can be stopped and
/// started again on that store (and port). Killed and reaped on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    /// A command the server is run under (`unshare …`), if any.
    wrapper: Option<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A JetStream server (`sync_interval: always`) with `limits` added to
    /// its `jetstream` block.
    fn start(limits: &str) -> Server {
        Server::start_wrapped(limits, |_, _| None)
    }

    /// A server whose store is a tmpfs of `size` (as `mount -o size=`
    /// takes it), mounted in a user and mount namespace of its own, that
    /// holds a file of `ballast_bytes` beside the store (deleted by
    /// [`Server::free_ballast`]). The server's own limit is set far above
    /// the tmpfs, so that the file system fills first. `None`, with the
    /// reason printed, where namespaces are unavailable.
    fn on_tmpfs(size: &str, ballast_bytes: usize) -> Option<Server> {
        match Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!("SKIPPED: user namespaces unavailable: {}", String::from_utf8_lossy(&out.stderr).trim());
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run unshare: {e}");
                return None;
            }
        }
        Some(Server::start_wrapped("max_file_store: 1GB", |store, binary| {
            let script = format!(
                "mount -t tmpfs -o size={size} none {store:?} && head -c {ballast_bytes} /dev/zero > {store:?}/ballast \
                 && exec {binary:?} --config \"$0\"",
                store = store.display().to_string(),
                binary = binary.display().to_string(),
            );
            let wrapper = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", &script];
            Some(wrapper.iter().map(|s| (*s).to_owned()).collect())
        }))
    }

    fn start_wrapped(limits: &str, wrapper: impl FnOnce(&Path, &Path) -> Option<Vec<String>>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("store dir");
        let port = free_port();
        let config = dir.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: faults\nlisten: \"127.0.0.1:{port}\"\n\
                 jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n  {limits}\n}}\n",
                store.display().to_string()
            ),
        )
        .expect("write the server's config");
        let wrapper = wrapper(&store, &locate::server_binary());
        let log = dir.path().join("server.log");
        let mut server = Server { child: None, port, config, store, log, wrapper, _dir: dir };
        server.start_again();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server on its store and port; returns once it
    /// answers the JetStream API.
    fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::File::options().create(true).append(true).open(&self.log).expect("open the server log");
        let mut command = match &self.wrapper {
            Some(wrapper) => {
                let mut command = Command::new(&wrapper[0]);
                command.args(&wrapper[1..]).arg(&self.config);
                command
            }
            None => {
                let mut command = Command::new(locate::server_binary());
                command.arg("--config").arg(&self.config);
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        let url = self.url();
        let ready = runtime().block_on(async {
            while Instant::now() < deadline {
                if let Ok(client) = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(1))
                    .connect(url.trim_start_matches("nats://"))
                    .await
                    && async_nats::jetstream::new(client).query_account().await.is_ok()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        });
        let exited = self.child.as_mut().expect("started").try_wait().expect("try_wait");
        assert!(ready && exited.is_none(), "nats-server not ready ({exited:?}); its log:\n{}", self.log_text());
    }

    /// SIGKILLs the server and reaps it: no index is written.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Stops the server by SIGTERM (it writes its index files) and waits
    /// until it exited.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with the pid of our own child, not yet reaped, so
        // the pid names it and no other process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM the server");
        child.wait().expect("reap the server");
    }

    /// Deletes the ballast file from the server's tmpfs, through its root
    /// as the server sees it (`/proc/<pid>/root`): the namespace's mount is
    /// not visible from here.
    fn free_ballast(&self) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let ballast =
            PathBuf::from(format!("/proc/{pid}/root")).join(self.store.strip_prefix("/").unwrap()).join("ballast");
        std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("remove {}: {e}", ballast.display()));
    }

    /// Changes bytes of the record whose payload starts with `marker` in
    /// the message block files of `stream` (the server is stopped).
    fn damage_record(&self, stream: &str, marker: &str) {
        let msgs = self.store.join("jetstream").join("$G").join("streams").join(stream).join("msgs");
        for entry in std::fs::read_dir(&msgs).expect("the stream's message blocks") {
            let path = entry.expect("a dir entry").path();
            if path.extension().is_none_or(|e| e != "blk") {
                continue;
            }
            let mut bytes = std::fs::read(&path).expect("read a block");
            if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker.as_bytes()) {
                for byte in &mut bytes[at..at + marker.len()] {
                    *byte ^= 0xff;
                }
                std::fs::write(&path, &bytes).expect("write the damaged block");
                eprintln!("damaged {} bytes at byte {at} of {}", marker.len(), path.display());
                return;
            }
        }
        panic!("no record starting {marker:?} in {}", msgs.display());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The payload of record `i`: its number first (unique bytes to find in a
/// block file), then padding to `bytes`.
fn payload(i: usize, bytes: usize) -> Vec<u8> {
    let mut p = format!("record-{i:04}-").into_bytes();
    p.resize(bytes, b'a' + (i % 26) as u8);
    p
}

fn options() -> ConsumerOptions {
    ConsumerOptions::default().lease_timeout(Duration::from_secs(30)).retry_backoff(vec![Duration::ZERO])
}

/// Processes with `consumer` until every offset below `end` of partition 0
/// was processed; returns (offset, payload) in the order processed.
fn consume_to(consumer: &mut durq_nats::Consumer, end: u64) -> Vec<(u64, Vec<u8>)> {
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while seen.last().is_none_or(|(o, _)| o + 1 < end) {
        assert!(Instant::now() < deadline, "records up to {end} never came: {:?}", seen.last().map(|s| s.0));
        consumer
            .process_timeout(Duration::from_millis(200), |batch| {
                seen.extend(batch.iter().map(|m| (m.position().offset, m.payload().to_vec())));
                Ok::<(), std::io::Error>(())
            })
            .expect("process");
    }
    seen
}

/// The NATS error inside a `durq::Error`.
fn nats(error: &durq::Error) -> &Error {
    Error::of(error).unwrap_or_else(|| panic!("not an engine error: {error:?}"))
}

/// Processes one batch with `consumer`; `Ok` with the batch's records
/// (committed), or the error (nothing committed).
fn process_one(consumer: &mut durq_nats::Consumer) -> durq::Result<Vec<(u64, Vec<u8>)>> {
    let mut batch_records = Vec::new();
    consumer
        .process_timeout(Duration::from_millis(500), |batch| {
            batch_records.extend(batch.iter().map(|m| (m.position().offset, m.payload().to_vec())));
            Ok::<(), std::io::Error>(())
        })
        .map(|_| batch_records)
}

/// Fills the queue's one partition until a send fails; checks what the
/// failure says, that a group member's writes fail the same way, and that
/// the producer and the group go on once `free` gave space back, with
/// every acknowledged record kept, and committed once.
fn fill_then_free(url: &str, reason: &str, free: impl FnOnce()) {
    let queue = Queue::open_with(&format!("{url}/full"), Options::default().partitions(1)).expect("open");
    let stream = record::stream_name("full", 0);
    let producer = queue.producer();
    // One record a batch: a commit per record, so that the group's writes
    // meet the full store too (on a file system, the bucket's block file
    // has room left in its last page after the partition's refused a
    // record).
    let mut consumer = queue.consumer_with("g", options().max_batch(1)).expect("join");
    let mut acknowledged: Vec<Vec<u8>> = Vec::new();
    let (full, took) = loop {
        assert!(acknowledged.len() < 10_000, "the store never filled");
        let p = payload(acknowledged.len(), FILL_BYTES);
        let started = Instant::now();
        match producer.send(&p) {
            Ok(position) => {
                assert_eq!(position, Position { partition: 0, offset: acknowledged.len() as u64 });
                acknowledged.push(p);
            }
            Err(e) => break (e, started.elapsed()),
        }
    };
    let text = full.to_string();
    eprintln!("after {} records the send failed in {took:?}: {text}", acknowledged.len());
    assert!(matches!(nats(&full), Error::Engine { .. }), "{full:?}");
    assert!(text.contains(&stream) && text.contains(reason) && text.contains("refused"), "{text}");
    // A refusal is not published again for SEND_RETRY_WITHIN (60 s): the
    // next send on the full store fails the same way.
    let again = producer.send(payload(acknowledged.len(), FILL_BYTES)).expect_err("still full");
    assert!(again.to_string().contains(reason), "{again}");

    // The group's writes (the mark, the commit) are refused too, once its
    // bucket has no room left: the batch is not committed.
    let mut committed: Vec<(u64, Vec<u8>)> = Vec::new();
    let refused = loop {
        assert!(committed.len() < acknowledged.len(), "every record was committed on the full store");
        match process_one(&mut consumer) {
            Ok(batch) => committed.extend(batch),
            Err(e) => break e,
        }
    };
    eprintln!("the group's write refused after {} commits: {refused}", committed.len());
    assert!(refused.to_string().contains(reason), "{refused}");

    free();
    let p = payload(acknowledged.len(), FILL_BYTES);
    let next = producer.send(&p).expect("a send once space is back");
    assert_eq!(next, Position { partition: 0, offset: acknowledged.len() as u64 }, "the next offset: no gap, no reuse");
    acknowledged.push(p);

    let deadline = Instant::now() + WITHIN;
    while committed.len() < acknowledged.len() {
        assert!(Instant::now() < deadline, "committed {} of {}", committed.len(), acknowledged.len());
        committed.extend(process_one(&mut consumer).expect("process once space is back"));
    }
    let expected: Vec<(u64, Vec<u8>)> = (0..).zip(acknowledged.iter().cloned()).collect();
    assert!(committed == expected, "every acknowledged record committed once, in order");

    let mut reader = queue.reader(ResetTo::Earliest).expect("reader");
    let mut read = Vec::new();
    while read.len() < acknowledged.len() {
        assert!(Instant::now() < deadline, "read {} of {}", read.len(), acknowledged.len());
        if reader.wait(Some(Duration::from_millis(500))) {
            read.extend(reader.read(100).expect("read").into_iter().map(|r| r.payload));
        }
    }
    assert!(read == acknowledged, "the stream holds exactly the acknowledged records");
}

/// The server's own limit: past `max_file_store` every write is refused
/// ("insufficient resources"); a stream deleted gives the room back.
#[test]
fn a_store_at_the_servers_limit_refuses_sends_at_once_and_loses_nothing() {
    let server = Server::start("max_file_store: 1MB");
    // Room the test gives back later: a stream of another application.
    runtime().block_on(async {
        let jetstream = raw_jetstream(&server.url()).await;
        let config = async_nats::jetstream::stream::Config {
            name: "BALLAST".to_owned(),
            subjects: vec!["ballast".to_owned()],
            ..Default::default()
        };
        jetstream.create_stream(config).await.expect("ballast stream");
        for _ in 0..16 {
            jetstream.publish("ballast", vec![0u8; FILL_BYTES].into()).await.unwrap().await.expect("ballast");
        }
    });
    fill_then_free(&server.url(), "insufficient resources", || {
        runtime().block_on(async {
            raw_jetstream(&server.url()).await.delete_stream("BALLAST").await.expect("delete the ballast");
        });
    });
    assert!(server.log_text().contains("JetStream resource limits exceeded"), "{}", server.log_text());
}

/// A real full file system: the server's write fails with ENOSPC, which it
/// returns as the refusal's reason, naming its block file; it stays up.
#[test]
fn a_full_file_system_under_the_server_refuses_sends_at_once_and_loses_nothing() {
    let Some(server) = Server::on_tmpfs("2m", 512 * 1024) else { return };
    fill_then_free(&server.url(), "no space left on device", || server.free_ballast());
    let log = server.log_text();
    assert!(log.contains("no space left on device") && !log.contains("DISABLED"), "{log}");
}

/// Sends `n` records of about 100 bytes to partition 0 of `queue`.
fn send_records(queue: &Queue, n: usize) -> Vec<Vec<u8>> {
    let producer = queue.producer();
    (0..n)
        .map(|i| {
            let p = payload(i, 100);
            assert_eq!(producer.send(&p).expect("send").offset, i as u64);
            p
        })
        .collect()
}

/// What a take of the stream returns now, read from outside durq: its
/// first and last sequence.
fn stream_bounds(server: &Server, stream: &str) -> (u64, u64) {
    runtime().block_on(async {
        let jetstream = raw_jetstream(&server.url()).await;
        let mut handle = jetstream.get_stream(stream).await.expect("the stream");
        let state = handle.info().await.expect("stream info").state.clone();
        (state.first_sequence, state.last_sequence)
    })
}

fn lost_offsets(error: &durq::Error) -> (u32, u64, u64) {
    match nats(error) {
        Error::RecordsLost { partition, from, to, .. } => (*partition, *from, *to),
        other => panic!("not RecordsLost: {other:?}"),
    }
}

/// After a clean stop the server drops the damaged record and keeps the
/// rest: reader and group get the records before it, then the loss, at
/// every try; the records after it are never handed out past the hole.
#[test]
fn a_record_damaged_while_the_server_was_stopped_stops_readers_and_groups_at_its_offset() {
    let mut server = Server::start("");
    let url = format!("{}/hole", server.url());
    let stream = record::stream_name("hole", 0);
    let queue = Queue::open_with(&url, Options::default().partitions(1)).expect("open");
    let sent = send_records(&queue, 40);
    let mut consumer = queue.consumer_with("g", options().max_batch(10)).expect("join");
    assert_eq!(consume_to(&mut consumer, 10).len(), 10);
    drop(consumer);
    drop(queue);

    server.terminate();
    server.damage_record(&stream, "record-0020-");
    server.start_again();
    eprintln!("after the restart the stream holds sequences {:?}", stream_bounds(&server, &stream));

    let queue = Queue::open(&url).expect("reopen");
    let mut reader = queue.reader(ResetTo::Earliest).expect("reader");
    let mut read = Vec::new();
    let deadline = Instant::now() + WITHIN;
    let lost = loop {
        assert!(Instant::now() < deadline, "the reader never reached the hole: read {}", read.len());
        if reader.wait(Some(Duration::from_millis(500))) {
            match reader.read(7) {
                Ok(records) => read.extend(records),
                Err(e) => break e,
            }
        }
    };
    eprintln!("reader: {lost}");
    let offsets: Vec<u64> = read.iter().map(|r| r.position.offset).collect();
    assert_eq!(offsets, (0..20).collect::<Vec<u64>>(), "every record before the hole, none after");
    assert!(read.iter().zip(&sent).all(|(r, s)| r.payload == *s));
    assert_eq!(lost_offsets(&lost), (0, 20, 21));
    assert!(reader.wait(Some(Duration::from_millis(100))), "the loss is still news");
    assert_eq!(lost_offsets(&reader.read(7).expect_err("the reader stays before the hole")), (0, 20, 21));

    let mut consumer = queue.consumer_with("g", options().max_batch(10)).expect("join again");
    let processed = consume_to(&mut consumer, 20);
    assert_eq!(processed.iter().map(|p| p.0).collect::<Vec<_>>(), (10..20).collect::<Vec<u64>>());
    for _ in 0..2 {
        let stopped = consumer
            .process_timeout(Duration::from_secs(2), |_| Ok::<(), std::io::Error>(()))
            .expect_err("the group stops at the hole");
        assert_eq!(lost_offsets(&stopped), (0, 20, 21), "{stopped}");
    }
    assert_eq!(consumer.committed().expect("committed"), [20]);
}

/// After a crash the server cuts the stream at the damaged record and
/// reuses the lost offsets for the next records sent: a group whose
/// position is past the cut, and a reader that had read past it, are told
/// the lost offsets instead of waiting for new records there.
#[test]
fn a_stream_cut_short_at_a_damaged_block_after_a_crash_is_reported_to_groups_and_readers() {
    let mut server = Server::start("");
    let url = format!("{}/cut", server.url());
    let stream = record::stream_name("cut", 0);
    let queue = Queue::open_with(&url, Options::default().partitions(1)).expect("open");
    send_records(&queue, 40);
    let mut consumer = queue.consumer_with("g", options()).expect("join");
    assert_eq!(consume_to(&mut consumer, 40).len(), 40);
    drop(consumer);
    let mut reader = queue.reader(ResetTo::Earliest).expect("reader");
    let mut read = 0;
    while read < 40 {
        assert!(reader.wait(Some(WITHIN)), "read {read} of 40");
        read += reader.read(100).expect("read").len();
    }

    server.kill();
    server.damage_record(&stream, "record-0020-");
    server.start_again();
    let bounds = stream_bounds(&server, &stream);
    eprintln!("after the restart the stream holds sequences {bounds:?}");
    assert_eq!(bounds, (1, 20), "the server cut the stream at the damaged record (offset 20)");

    // The reader, which read to offset 40, waits at its end: it notices the
    // stream now ends before what it read.
    assert!(reader.wait(Some(WITHIN)), "the reader is told");
    let lost = reader.read(100).expect_err("records lost behind the reader");
    eprintln!("reader: {lost}");
    assert_eq!(lost_offsets(&lost), (0, 20, 40));

    // The group's position is 40: its records up to there are gone.
    let queue = Queue::open(&url).expect("reopen");
    let mut consumer = queue.consumer_with("g", options()).expect("join again");
    let stopped = consumer
        .process_timeout(Duration::from_secs(2), |_| Ok::<(), std::io::Error>(()))
        .expect_err("the group's position is past the stream's end");
    eprintln!("group: {stopped}");
    assert_eq!(lost_offsets(&stopped), (0, 20, 40));
    // What the server does next: the next record sent takes offset 20.
    assert_eq!(queue.producer().send("after the cut").expect("send").offset, 20);
}

/// The other way a stream's first record is past a position, on purpose:
/// a migrated partition's stream starts where the migration began. A group
/// new to the migrated queue starts there, as a new local group starts at
/// the first record retention kept, and a reset below it is moved there.
/// (A cursor asked for an offset below it would get `BeforeStreamStart`
/// naming where the stream starts: nothing was lost.) A reader asked for offset 0 starts there, as a local reader is clamped
/// to the first record retention kept.
#[test]
fn a_group_new_to_a_migrated_queue_starts_where_its_stream_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("local");
    {
        let queue = durq::Queue::open_with(&local, Options::default().partitions(1)).expect("open local");
        for i in 0..10 {
            queue.producer().send(payload(i, 100)).expect("send");
        }
        queue.producer().flush().expect("flush");
        drop(queue.consumer("a").expect("register the group"));
        queue.reset_group("a", ResetTo::Offset(5)).expect("position the group");
    }
    let server = Server::start("");
    let url = format!("{}/migrated", server.url());
    durq_nats::migrate(&local, &url, &["a".to_owned()], |_: &[Position]| Ok(())).expect("migrate");
    let queue = Queue::open(&url).expect("open the migrated queue");

    let mut consumer = queue.consumer_with("b", options()).expect("join a new group");
    assert_eq!(consume_to(&mut consumer, 10).iter().map(|r| r.0).collect::<Vec<_>>(), (5..10).collect::<Vec<u64>>());
    drop(consumer);

    // A reset below the stream's start is moved to it, as the take is.
    assert_eq!(queue.reset_group("b", ResetTo::Offset(2)).expect("reset"), [5]);
    let mut consumer = queue.consumer_with("b", options()).expect("join again");
    assert_eq!(consume_to(&mut consumer, 10).iter().map(|r| r.0).collect::<Vec<_>>(), (5..10).collect::<Vec<u64>>());

    let reader = queue.reader(ResetTo::Offset(0)).expect("reader");
    assert_eq!(reader.positions(), [Position { partition: 0, offset: 5 }], "clamped to the stream's start");
}

//! Observability, as a service sees it: the `tracing` events its subscriber
//! receives and the `metrics` its recorder receives during a real recovery,
//! a takeover from a SIGKILLed member, a takeover from a hung one and its
//! fenced commit, a record dead-lettered, a failed sync and the fail-stop
//! after it; and `Queue::stats()` counting sends, syncs, consumes,
//! commits, retries and redeliveries exactly.
//!
//! Events are collected by a small `Layer` installed as this thread's
//! default subscriber, metrics by `metrics-util`'s `DebuggingRecorder` as
//! this thread's local recorder: every operation below runs on the test's
//! own thread (the queues are `Sync`, so no background thread syncs), and
//! tests running at once do not see each other's events.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestQueue;
use common::procs;
use durq::{ConsumerOptions, Durability, Options, Queue};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One event (or span, `message` = `span <name>`) as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or_else(|| panic!("event {self:?} has no field {name}"), String::as_str)
    }
}

/// A `Layer` that keeps every event and new span.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Seen>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen { level: *event.metadata().level(), fields: fields.0 });
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        fields.0.insert("message".into(), format!("span {}", attrs.metadata().name()));
        self.0.lock().unwrap().push(Seen { level: *attrs.metadata().level(), fields: fields.0 });
    }
}

impl Events {
    /// Runs `f` with this collector as the thread's subscriber.
    fn watch<T>(&self, f: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    /// The events whose message contains `text`.
    fn with(&self, text: &str) -> Vec<Seen> {
        self.0.lock().unwrap().iter().filter(|e| e.message().contains(text)).cloned().collect()
    }

    /// The one event whose message contains `text`.
    fn one(&self, text: &str) -> Seen {
        let found = self.with(text);
        assert_eq!(found.len(), 1, "one event {text:?}, saw {:#?}", self.0.lock().unwrap());
        found.into_iter().next().unwrap()
    }
}

/// What a recorder received, taken once: a `DebuggingRecorder` snapshot
/// drains its counters.
struct Metrics(Vec<(metrics_util::CompositeKey, DebugValue)>);

impl Metrics {
    fn take(snapshotter: &Snapshotter) -> Metrics {
        Metrics(snapshotter.snapshot().into_vec().into_iter().map(|(key, _, _, value)| (key, value)).collect())
    }

    /// Metric `name`'s value (summed over its label sets; a histogram's
    /// number of samples), or `None` if it was never registered.
    fn get(&self, name: &str) -> Option<f64> {
        let mut total = None;
        for (key, value) in &self.0 {
            if key.key().name() != name {
                continue;
            }
            let v = match value {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            *total.get_or_insert(0.0) += v;
        }
        total
    }
}

/// The child entry: runs a role when this process is a child, else nothing.
#[test]
fn child() {
    match procs::role().as_deref() {
        None => {}
        Some("holder") => run_holder(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// The holder role: joins group `g` of the queue at `DURQ_DIR`, which takes
/// every slot, says so, and waits to be killed.
fn run_holder() -> ! {
    let queue = Queue::open(procs::var("DURQ_DIR")).unwrap_or_else(|e| procs::fail(e));
    let consumer = procs::join(&queue, "g", ConsumerOptions::default()).unwrap_or_else(|e| procs::fail(e));
    procs::say(format_args!("holding {:?}", consumer.held_partitions()));
    loop {
        std::thread::park();
    }
}

#[test]
fn stats_count_sends_syncs_consumes_commits_retries_and_redeliveries_exactly() {
    let q = TestQueue::new(Options::default().durability(Durability::Sync));
    let producer = q.queue.producer();
    assert_eq!(q.queue.stats(), durq::Stats::default(), "nothing counted before anything happened");
    for payload in ["a", "bb", "ccc", "dddd", "eeeee"] {
        producer.send(payload).unwrap();
    }
    producer.send_keyed("key", "xy").unwrap();
    producer.send_batch(["1", "22", "333"]).unwrap();
    let stats = q.queue.stats();
    assert_eq!(stats.messages_appended, 9);
    assert_eq!(stats.bytes_appended, 15 + 3 + 2 + 6, "key and payload bytes");
    assert_eq!(stats.syncs, 7, "under Sync one thread's every send is one sync, a batch too");
    assert_eq!(stats.messages_synced, 9);
    assert_eq!((stats.messages_consumed, stats.commits), (0, 0));

    let options = ConsumerOptions::default().retry_backoff(vec![Duration::ZERO]);
    let mut consumer = q.queue.consumer_with("g", options).unwrap();
    let whole = consumer.process(|batch| {
        assert_eq!(batch.len(), 9, "one batch of every record");
        Ok::<_, std::io::Error>(())
    });
    assert_eq!(whole.unwrap(), 9);
    producer.send("again").unwrap();
    assert!(consumer.process(|_| Err(std::io::Error::other("not now"))).is_err());
    assert_eq!(consumer.process(|_| Ok::<_, std::io::Error>(())).unwrap(), 1);

    let stats = q.queue.stats();
    assert_eq!((stats.messages_appended, stats.syncs), (10, 8));
    assert_eq!(stats.messages_consumed, 10, "committed records, the failed delivery not among them");
    assert_eq!(stats.bytes_consumed, 26 + 5);
    assert_eq!(stats.commits, 2);
    assert_eq!((stats.retries, stats.redeliveries), (1, 1));
    assert_eq!((stats.dead_letters, stats.takeovers, stats.fenced_commits), (0, 0, 0));
    assert_eq!(q.queue.clone().stats(), stats, "every clone of the handle shares the counters");
}

#[test]
fn recovery_on_open_is_an_info_event_saying_what_it_scanned() {
    let q = TestQueue::new(Options::default().partitions(2));
    q.queue.producer().send_batch(["one", "two", "three"]).unwrap();
    let path = q.path();
    drop(q.queue);
    let events = Events::default();
    let reopened = events.watch(|| Queue::open(&path).unwrap());
    let recovered = events.with("recovered a partition");
    assert_eq!(recovered.len(), 2, "one per partition: {recovered:#?}");
    assert!(recovered.iter().all(|e| e.level == tracing::Level::INFO));
    let scanned: Vec<(&str, &str, &str)> =
        recovered.iter().map(|e| (e.field("partition"), e.field("records_scanned"), e.field("next_offset"))).collect();
    assert!(scanned.contains(&("0", "3", "3")) || scanned.contains(&("1", "3", "3")), "{scanned:?}");
    assert!(recovered.iter().all(|e| e.field("bytes_zeroed") == "0" && e.field("crash") == "PowerLoss"));
    assert!(recovered.iter().all(|e| e.fields.contains_key("took_us")));
    drop(reopened);
}

#[test]
fn a_takeover_from_a_killed_member_is_a_warn_event_naming_the_old_holder_and_is_counted() {
    let q = TestQueue::new(Options::default());
    q.queue.producer().send("left behind").unwrap();
    let mut holder = procs::spawn(module_path!(), "holder", "holder", &[("DURQ_DIR", q.path().display().to_string())]);
    holder.wait_line("holding [0]");
    let holder_pid = holder.pid().to_string();
    holder.sigkill();
    holder.wait_killed();

    let events = Events::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (queue, consumer) = metrics::with_local_recorder(&recorder, || {
        events.watch(|| {
            // Opened under the recorder, so its handles report to it.
            let queue = Queue::open(q.path()).unwrap();
            let consumer = procs::join(&queue, "g", ConsumerOptions::default()).unwrap();
            (queue, consumer)
        })
    });
    assert_eq!(consumer.held_partitions(), [0], "the killed member's slot was taken over at once");
    let takeover = events.one("took a slot over from a dead member");
    assert_eq!(takeover.level, tracing::Level::WARN);
    assert_eq!(takeover.field("old_pid"), holder_pid, "the old holder is named");
    assert_eq!(takeover.field("old_holder").len(), 32, "its member id, in hex");
    assert_eq!(takeover.field("partition"), "0");
    assert!(takeover.fields.contains_key("took_us") && takeover.fields.contains_key("silent_ms"));
    assert_eq!(queue.stats().takeovers, 1);
    assert_eq!(Metrics::take(&snapshotter).get("durq_takeovers_total"), Some(1.0));
}

#[test]
fn a_hung_members_late_commit_is_fenced_and_both_the_takeover_and_the_fence_are_reported() {
    let q = TestQueue::new(Options::default());
    q.queue.producer().send("slow work").unwrap();
    let events = Events::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (fenced, queue) = metrics::with_local_recorder(&recorder, || {
        events.watch(|| {
            let queue = Queue::open(q.path()).unwrap();
            let hung_options = ConsumerOptions::default()
                .lease_timeout(Duration::from_millis(50))
                .rebalance_interval(Duration::from_millis(10));
            let mut hung = queue.consumer_with("g", hung_options).unwrap();
            let delivery = hung.poll(Duration::from_secs(5)).unwrap().expect("the record");
            // The member makes no call, so it sends no heartbeat: once its
            // lease is older than its timeout, it is hung.
            let mut taker = queue.consumer("g").unwrap();
            while taker.held_partitions().is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                taker.process_timeout(Duration::from_millis(1), |_| Ok::<_, std::io::Error>(())).unwrap();
            }
            (delivery.commit().unwrap_err(), queue)
        })
    });
    assert!(matches!(fenced, durq::Error::Fenced { partition: 0, .. }), "{fenced:?}");
    let takeover = events.one("took a slot over from a hung member");
    assert_eq!(takeover.level, tracing::Level::WARN);
    assert_eq!(takeover.field("old_pid"), std::process::id().to_string());
    let fence = events.one("durq fenced");
    assert_eq!(fence.level, tracing::Level::WARN);
    assert_eq!((fence.field("partition"), fence.field("at")), ("0", "Commit"));
    let stats = queue.stats();
    assert_eq!((stats.takeovers, stats.fenced_commits), (1, 1));
    let metrics = Metrics::take(&snapshotter);
    assert_eq!(metrics.get("durq_fenced_commits_total"), Some(1.0));
    assert_eq!(metrics.get("durq_takeovers_total"), Some(1.0));
}

#[test]
fn a_dead_lettered_record_and_its_retries_are_warn_events_and_counted() {
    common::quiet_injected_panics("poison");
    let q = TestQueue::new(Options::default());
    let events = Events::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let queue = metrics::with_local_recorder(&recorder, || {
        events.watch(|| {
            let queue = Queue::open(q.path()).unwrap();
            queue.producer().send_batch(["poison", "fine"]).unwrap();
            let options = ConsumerOptions::default().max_deliveries(3).retry_backoff(vec![Duration::ZERO]);
            let mut consumer = queue.consumer_with("g", options).unwrap();
            let mut processed = Vec::new();
            while processed.is_empty() {
                let _ = consumer.process(|batch| {
                    if batch[0].payload() == b"poison" {
                        panic!("poison record");
                    }
                    processed.extend(batch.iter().map(|m| m.payload().to_vec()));
                    Ok::<_, std::io::Error>(())
                });
            }
            assert_eq!(processed, [b"fine".to_vec()]);
            queue
        })
    });
    let dead = events.one("moved a record to the dead-letter queue");
    assert_eq!(dead.level, tracing::Level::WARN);
    assert_eq!((dead.field("offset"), dead.field("deliveries")), ("0", "3"));
    assert!(dead.field("error").contains("poison record"), "{dead:?}");
    let retries = events.with("deliver a failed record again");
    assert_eq!(retries.len(), 2, "two failed deliveries before the third: {retries:#?}");
    assert!(retries.iter().all(|e| e.level == tracing::Level::WARN));
    assert!(!events.with("span durq_batch").is_empty(), "a span per batch");
    let stats = queue.stats();
    assert_eq!((stats.dead_letters, stats.retries, stats.messages_consumed), (1, 2, 2));
    assert_eq!(Metrics::take(&snapshotter).get("durq_dead_letters_total"), Some(1.0));
}

#[test]
fn metrics_count_appends_syncs_consumes_commit_latency_and_lag() {
    let q = TestQueue::new(Options::default());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let queue = Queue::open(q.path()).unwrap();
        let producer = queue.producer();
        for i in 0..10 {
            producer.send(format!("order {i}")).unwrap();
        }
        let mut consumer = queue.consumer_with("g", ConsumerOptions::default().max_batch(4)).unwrap();
        assert_eq!(consumer.process(|_| Ok::<_, std::io::Error>(())).unwrap(), 4);
    });
    let metrics = Metrics::take(&snapshotter);
    assert_eq!(metrics.get("durq_messages_appended_total"), Some(10.0));
    assert_eq!(metrics.get("durq_bytes_appended_total"), Some(70.0));
    assert_eq!(metrics.get("durq_syncs_total"), Some(10.0));
    assert_eq!(metrics.get("durq_messages_per_sync"), Some(10.0), "one sample per sync");
    assert_eq!(metrics.get("durq_sync_seconds"), Some(10.0), "one sample per sync");
    assert_eq!(metrics.get("durq_messages_consumed_total"), Some(4.0));
    assert_eq!(metrics.get("durq_bytes_consumed_total"), Some(28.0));
    assert_eq!(metrics.get("durq_commit_seconds"), Some(1.0), "one sample per commit");
    assert_eq!(metrics.get("durq_lag_messages"), Some(6.0), "10 sent, 4 committed");
}

#[test]
fn a_failed_sync_is_an_error_event_and_the_stop_is_reported_once() {
    let t = TestQueue::new(Options::default().durability(Durability::Buffered));
    let disk = durq::internals::sim::SimDisk::attach(t.dir.path()).unwrap();
    let producer = t.queue.producer();
    producer.send("one").unwrap();
    let events = Events::default();
    events.watch(|| {
        // Under `Buffered` this thread's flush runs the sync itself (the
        // sealer thread syncs only full segments).
        disk.fail_next(durq::internals::sim::OpKind::SyncRange, libc::EIO, false);
        assert!(producer.flush().is_err());
        assert!(matches!(producer.send("two"), Err(durq::Error::Stopped { .. })));
        assert!(matches!(producer.flush(), Err(durq::Error::Stopped { .. })));
    });
    let failed = events.one("durq sync failed");
    assert_eq!(failed.level, tracing::Level::ERROR);
    assert!(failed.field("error").contains("msync"), "{failed:?}");
    let stopped = events.one("durq stopped");
    assert_eq!(stopped.level, tracing::Level::ERROR, "once, for the first failure only");
    assert!(stopped.field("cause").contains("msync"), "{stopped:?}");
    assert_eq!(stopped.field("handle"), "queue");
}

#[test]
fn records_a_retention_limit_takes_from_a_lagging_group_are_a_warn_event_and_counted() {
    let q = TestQueue::new(common::small().retention_max_bytes(4 * (64 << 10)));
    let events = Events::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let first_kept = metrics::with_local_recorder(&recorder, || {
        events.watch(|| {
            let queue = Queue::open(q.path()).unwrap();
            // The group processes 3 records and leaves; the limit then
            // removes the oldest segments under it.
            queue.producer().send_batch([[1u8; 1000]; 3]).unwrap();
            let mut lagging = queue.consumer_with("lagging", ConsumerOptions::default().max_batch(3)).unwrap();
            assert_eq!(lagging.process_timeout(Duration::from_secs(5), |_| Ok::<(), std::io::Error>(())).unwrap(), 3);
            drop(lagging);
            for _ in 0..600 {
                queue.producer().send([2u8; 1000]).unwrap();
            }
            queue.offsets(0).unwrap().0
        })
    });
    assert!(first_kept > 3, "the limit removed records the group had not processed");
    let skipped = events.with("retention limits removed records a group had not processed");
    assert!(!skipped.is_empty(), "a warn event for the loss");
    assert!(skipped.iter().all(|e| e.level == tracing::Level::WARN && e.field("group") == "lagging"));
    let lost: u64 = skipped.iter().map(|e| e.field("records").parse::<u64>().unwrap()).sum();
    assert_eq!(lost, first_kept - 3, "every lost record reported once, and only those");
    assert_eq!(skipped[0].field("from"), "3");
    let counted = Metrics::take(&snapshotter).get("durq_retention_skipped_records_total");
    assert_eq!(counted, Some(lost as f64));
}

//! `Queue`: opening (and creating) a queue directory.
//!
//! A queue is a directory of files whose names `layout.rs` defines: the
//! meta file, the control file, one folder per partition, and `groups/`.
//!
//! The rest of `impl Queue` lives with the concern it belongs to:
//! `producer.rs` (`producer`), `consumer.rs` (`consumer`, `consumer_with`),
//! `admin.rs` (operations on groups from outside them, reading without a
//! group, `reclaim`), and `stat.rs` (`stat`).
//!
//! Creation writes every partition's first segment before it publishes the
//! meta file, so a directory with a meta file is always a complete queue, and
//! one without is either empty or the leftovers of a creation that crashed
//! (which the next open completes). Creators, in any number of processes,
//! are serialised by the open lock, so a creation never meets another's
//! half-made queue, and a creator whose options lost the race makes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::fail_stop::FailStop;
use crate::group::evidence;
use crate::log::control::{self, ControlFile, Opened};
use crate::log::partition::{self, Crash, Partition};
use crate::log::prefault::{AheadOfWriter, PrefaultThread, Prefaulter};
use crate::log::sealer::Sealer;
use crate::observe::Counters;
use crate::options::{Durability, Options, QueueConfig, Retention};
use crate::storage;
use crate::{layout, meta};

/// An open queue. Cheap to clone; every clone shares one set of mappings.
/// `Clone + Send + Sync`: share it between threads, or clone it.
///
/// ```
/// # fn main() -> Result<(), durq::Error> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let path = tmp.path().join("orders");
/// let queue = durq::Queue::open_with(&path, durq::Options::default().partitions(2))?;
/// assert_eq!(queue.config().partitions, 2);
/// // Reopening reads the stored options; a conflicting one is an error.
/// drop(queue);
/// let again = durq::Queue::open(&path)?;
/// assert_eq!(again.config().partitions, 2);
/// assert!(durq::Queue::open_with(&path, durq::Options::default().partitions(3)).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<QueueInner>,
}

// The docs above promise that a queue can be shared between threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Queue>();
};

pub(crate) struct QueueInner {
    // Dropped first: its last pass syncs what the partitions hold.
    _flusher: Option<Flusher>,
    sealer: Arc<Sealer>,
    pub(crate) dir: PathBuf,
    pub(crate) config: QueueConfig,
    pub(crate) partitions: Vec<Arc<Partition>>,
    pub(crate) control: Arc<ControlFile>,
    pub(crate) round_robin: AtomicU32,
    /// What this process did with the queue (`Queue::stats`, `observe`).
    pub(crate) counters: Arc<Counters>,
    // Dropped last: joined once the partitions (its only senders) are gone.
    _prefault_thread: PrefaultThread,
}

impl Queue {
    /// Opens the queue at `path`, creating it with default options if it
    /// does not exist (its parent directory must exist).
    pub fn open(path: impl AsRef<Path>) -> Result<Queue> {
        Queue::open_with(path, Options::default())
    }

    /// Opens the queue at `path`, creating it with `options` if it does not
    /// exist. On an existing queue, every option set in `options` must match
    /// the stored one. Creation makes only the directory `path` itself: its
    /// parent must exist.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Queue> {
        let dir = path.as_ref().to_path_buf();
        let config = match existing_config(&dir)? {
            Some(stored) => stored,
            None => create(&dir, &options)?,
        };
        check_conflicts(&dir, &options, &config)?;
        Queue::open_config(dir, config)
    }

    /// Changes the durability of the queue at `path`, which no process may
    /// have open (every process must agree on what a reader may see). Under
    /// the open lock, with the control file's exclusive lock proving nobody
    /// has the queue open, the meta file is replaced atomically. Records
    /// already written keep whatever durability they were acknowledged with.
    pub fn change_durability(path: impl AsRef<Path>, durability: Durability) -> Result<QueueConfig> {
        change_config(path.as_ref(), |config| QueueConfig { durability, ..config })
    }

    /// Changes the retention limits of the queue at `path` (see
    /// [`Retention`]), which no process may have open, as
    /// [`Queue::change_durability`] does: every process reads them at open.
    /// Nothing is removed now; the next retention pass (a roll, `reclaim`,
    /// `durq gc`) applies them.
    ///
    /// ```
    /// # fn main() -> Result<(), durq::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let path = tmp.path().join("orders");
    /// use std::time::Duration;
    /// // At most 1 GiB per partition, whatever the groups have read.
    /// let options = durq::Options::default().retention_max_bytes(1 << 30);
    /// drop(durq::Queue::open_with(&path, options)?);
    /// // Later, with every process closed: a week instead, no byte limit.
    /// let week = durq::Retention { max_bytes: None, max_age: Some(Duration::from_secs(7 * 86_400)) };
    /// assert_eq!(durq::Queue::change_retention(&path, week)?.retention, week);
    /// assert_eq!(durq::Queue::open(&path)?.config().retention, week);
    /// # Ok(()) }
    /// ```
    pub fn change_retention(path: impl AsRef<Path>, retention: Retention) -> Result<QueueConfig> {
        change_config(path.as_ref(), |config| QueueConfig { retention, ..config })
    }

    /// Opens the queue at `path`, which must exist: never creates one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Queue> {
        let dir = path.as_ref().to_path_buf();
        match existing_config(&dir)? {
            Some(config) => Queue::open_config(dir, config),
            None => Err(Error::NotAQueue { path: dir, reason: format!("it has no {}", meta::META_FILE) }),
        }
    }

    fn open_config(dir: PathBuf, config: QueueConfig) -> Result<Queue> {
        let open_lock = control::lock_for_open(&dir)?;
        let control = match ControlFile::open(&dir, config.partitions)? {
            Opened::Alone(control) => {
                // What the groups prove each partition's log must still hold.
                let evidence = evidence::gather(&dir, config.partitions)?;
                let tails = (0..config.partitions)
                    .map(|p| {
                        let pdir = dir.join(partition::dir_name(p));
                        partition::recover(&pdir, p, &config, Crash::PowerLoss, evidence[p as usize].as_ref())
                    })
                    .collect::<Result<Vec<_>>>()?;
                control.init(&tails)?;
                control
            }
            Opened::Joined(control) => control,
        };
        drop(open_lock);
        let control = Arc::new(control);
        let stop = Arc::new(FailStop::of("queue"));
        let counters = Arc::new(Counters::new(&dir));
        // Started before the prefault thread: a failure after it would
        // return with `prefaulter` still held here, and dropping
        // `prefault_thread` waits for that thread, which waits for it.
        let sealer = Arc::new(match config.durability {
            Durability::Sync => Sealer::none(),
            Durability::Interval(_) | Durability::Buffered => Sealer::start(&dir, stop.clone())?,
        });
        let (prefaulter, prefault_thread) = Prefaulter::start(
            &dir,
            match config.durability {
                // Every send is synced at once, in small syncs that would each
                // convert fresh unwritten blocks (see `prefault.rs`).
                Durability::Sync => AheadOfWriter::WriteZeros(stop.clone()),
                // Syncs are rare and large: writing each byte twice would cost
                // more bandwidth than the conversions it saves.
                Durability::Interval(_) | Durability::Buffered => AheadOfWriter::FaultIn,
            },
        )?;
        let partitions: Vec<Arc<Partition>> = (0..config.partitions)
            .map(|p| {
                let (prefaulter, sealer) = (prefaulter.clone(), sealer.clone());
                Partition::new(&dir, p, config, control.clone(), stop.clone(), prefaulter, sealer, counters.clone())
            })
            .collect();
        // The partitions hold the only senders now, so the thread ends (and
        // `prefault_thread` joins) once they are gone.
        drop(prefaulter);
        let flusher = match config.durability {
            Durability::Interval(every) => Some(Flusher::start(every, partitions.clone(), &dir)?),
            _ => None,
        };
        Ok(Queue {
            inner: Arc::new(QueueInner {
                _flusher: flusher,
                sealer,
                dir,
                config,
                partitions,
                control,
                round_robin: AtomicU32::new(0),
                counters,
                _prefault_thread: prefault_thread,
            }),
        })
    }

    /// The options the queue has.
    pub fn config(&self) -> QueueConfig {
        self.inner.config
    }

    /// The queue's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Partition `p`'s offsets: `(first retained, next to be written)`.
    /// `Error::InvalidOption` if the queue has no partition `p`.
    pub fn offsets(&self, p: u32) -> Result<(u64, u64)> {
        let part = self.inner.partition(p)?;
        Ok((part.first_offset(), part.next_offset()))
    }
}

impl Drop for QueueInner {
    fn drop(&mut self) {
        // The flusher's last pass first, then the segments the sealer still
        // holds, then the headers' proofs.
        drop(self._flusher.take());
        self.sealer.finish();
        for p in &self.partitions {
            // Best effort: a failure here only leaves the last batch without
            // its header proof, which frames or the next open's sync give.
            let _ = p.close();
        }
    }
}

impl QueueInner {
    /// Partition `p`, or `Error::InvalidOption` if the queue has none such.
    pub(crate) fn partition(&self, p: u32) -> Result<&Arc<Partition>> {
        self.partitions.get(p as usize).ok_or_else(|| Error::InvalidOption {
            option: "partition",
            reason: format!("{p} is not below {}", self.config.partitions),
        })
    }

    /// Picks the partition for an unkeyed record: round-robin.
    pub(crate) fn next_partition(&self) -> u32 {
        match self.config.partitions {
            1 => 0,
            n => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// Replaces the meta file of the queue at `dir`, which no process may have
/// open, with `change` of its configuration: under the open lock, with the
/// control file's exclusive lock proving nobody has the queue open, the
/// meta file is replaced atomically.
fn change_config(dir: &Path, change: impl FnOnce(QueueConfig) -> QueueConfig) -> Result<QueueConfig> {
    let Some(config) = existing_config(dir)? else {
        return Err(Error::NotAQueue { path: dir.into(), reason: format!("it has no {}", meta::META_FILE) });
    };
    let _open_lock = control::lock_for_open(dir)?;
    let (_control, locked) = storage::try_lock_exclusive(&dir.join(control::CONTROL_FILE))?;
    if matches!(locked, storage::Locked::HeldElsewhere) {
        return Err(Error::QueueBusy { path: dir.into() });
    }
    let changed = change(config);
    changed.validate()?;
    meta::write(dir, &changed)?;
    Ok(changed)
}

/// The stored configuration, `None` if `dir` can hold a new queue, or an
/// error if it is something else.
fn existing_config(dir: &Path) -> Result<Option<QueueConfig>> {
    if dir.join(meta::META_FILE).exists() {
        return meta::read(dir).map(Some);
    }
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::NotAQueue { path: dir.into(), reason: "it is not a directory".into() });
        }
        Ok(_) => {}
    }
    // Only an empty directory, or the leftovers of a crashed creation, may
    // become a queue; anything else is somebody else's directory.
    for name in storage::list_dir(dir)? {
        if name == meta::META_FILE {
            // Another process published it since the check above.
            return meta::read(dir).map(Some);
        }
        let leftover = meta::is_unpublished_tmp(&name)
            || control::is_runtime_file(&name)
            || layout::parse_partition_dir_name(&name).is_some();
        if !leftover {
            return Err(Error::NotAQueue {
                path: dir.into(),
                reason: format!("it is not empty (found {name:?}) and has no {}", meta::META_FILE),
            });
        }
    }
    Ok(None)
}

/// Creates a queue at `dir` with `options` unless another process created
/// one first, and returns the configuration in force. Under the open lock,
/// which every creator and opener takes, the meta file is looked for again:
/// the first creator to find none builds the whole queue and publishes the
/// meta file before it lets go; every later one finds it, and uses it, or
/// is refused by `check_conflicts` without having written anything.
fn create(dir: &Path, options: &Options) -> Result<QueueConfig> {
    let config = options.resolve()?;
    // Only the queue's own directory is created: a typo in the path above it
    // is an error, not a new tree of directories.
    let parent = storage::parent_dir(dir);
    if !parent.is_dir() {
        return Err(Error::NotAQueue {
            path: dir.into(),
            reason: format!(
                "its parent directory {} does not exist (durq creates only the queue's own directory)",
                parent.display()
            ),
        });
    }
    storage::create_child_dir_durable(dir)?;
    let _open_lock = control::lock_for_open(dir)?;
    if let Some(stored) = existing_config(dir)? {
        return Ok(stored);
    }
    for p in 0..config.partitions {
        partition::create(dir, p, &config)?;
    }
    meta::write(dir, &config)?;
    Ok(config)
}

fn check_conflicts(dir: &Path, options: &Options, stored: &QueueConfig) -> Result<()> {
    fn check<T: PartialEq + std::fmt::Display>(
        dir: &Path,
        option: &'static str,
        asked: Option<T>,
        stored: T,
    ) -> Result<()> {
        match asked {
            Some(asked) if asked != stored => Err(Error::OptionsConflict {
                path: dir.into(),
                option,
                stored: stored.to_string(),
                requested: asked.to_string(),
            }),
            _ => Ok(()),
        }
    }
    check(dir, "partitions", options.partitions, stored.partitions)?;
    check(dir, "durability", options.durability, stored.durability)?;
    check(dir, "segment_bytes", options.segment_bytes, stored.segment_bytes)?;
    check(dir, "record_bytes_max", options.record_bytes_max, stored.record_bytes_max)?;
    let unlimited = |limit: Option<u64>| limit.map_or("unlimited".to_owned(), |l| l.to_string());
    let asked = options.retention_max_bytes.map(|b| unlimited(Some(b)));
    check(dir, "retention_max_bytes", asked, unlimited(stored.retention.max_bytes))?;
    let ms = |age: Option<std::time::Duration>| unlimited(age.map(|a| a.as_millis() as u64));
    check(dir, "retention_max_age (ms)", options.retention_max_age.map(|a| ms(Some(a))), ms(stored.retention.max_age))
}

/// The background thread of `Durability::Interval`: syncs every partition's
/// published records once per interval, and once more when the queue is
/// dropped.
struct Flusher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread for the queue at `dir`; an error if the system
    /// refuses a thread.
    fn start(every: std::time::Duration, partitions: Vec<Arc<Partition>>, dir: &Path) -> Result<Flusher> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("durq-flusher".into())
            .spawn(move || {
                loop {
                    let last = !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout));
                    for p in &partitions {
                        // An error stops the queue (fail-stop) and is
                        // reported to the next send or flush.
                        if p.sync_to(p.next_offset()).is_err() {
                            return;
                        }
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("start the flusher thread of", dir, e))?;
        Ok(Flusher { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Queue {
    /// What this process did with the queue since it opened it: records
    /// appended and consumed, syncs, commits, redeliveries, dead letters,
    /// takeovers, fenced commits. For a service without a metrics system;
    /// with one, feature `metrics` reports the same numbers (and more) as
    /// `durq_*` metrics. See docs/OBSERVABILITY.md.
    ///
    /// ```
    /// # fn main() -> Result<(), durq::Error> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let queue = durq::Queue::open(tmp.path().join("q"))?;
    /// queue.producer().send(b"order 1")?;
    /// let stats = queue.stats();
    /// assert_eq!((stats.messages_appended, stats.bytes_appended, stats.syncs), (1, 7, 1));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> crate::observe::Stats {
        self.inner.counters.stats()
    }
}

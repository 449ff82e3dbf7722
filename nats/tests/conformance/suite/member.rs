//! A group member in a child process, for the tests that kill members
//! (`kill`, `takeover`), and what the parent reads back from it.
//!
//! The member processes batches and, inside `process`, first announces the
//! batch (`batch <partition> <first> <last> <delivery count of the first>`)
//! and then appends one line per record to a shared output file, `<tag>
//! <id> <partition> <offset> <delivery count>` (`O_APPEND`, one `write` a
//! line; SIGKILL keeps the page cache, so no sync is needed). That file is
//! the work done: a record processed twice is there twice. A member can
//! SIGKILL itself at a chosen point of a chosen batch, so the parent knows
//! exactly which batch was in flight.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use durq::{ConsumerOptions, Position};

use super::{backend, join};
use crate::conformance::procs::{self, Proc, fail, say};

/// Where in its batch a member kills itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// Before it processed any record of the batch.
    Before,
    /// Halfway through the batch's records.
    Mid,
    /// After every record, before the closure returns.
    After,
}

/// Which batch a member kills itself in.
#[derive(Debug, Clone, Copy)]
pub enum Kill {
    /// Never: it runs until the group committed everything.
    Never,
    /// In its n-th batch (from 1).
    InBatch(KillPoint, u32),
    /// In its first batch taken while it holds fewer than all partitions
    /// (another member joined and took some).
    WhenShared(KillPoint),
}

impl Kill {
    fn encode(self) -> String {
        match self {
            Kill::Never => "never".into(),
            Kill::InBatch(at, n) => format!("{at:?}:{n}"),
            Kill::WhenShared(at) => format!("{at:?}:shared"),
        }
    }

    fn decode(s: &str) -> Kill {
        let Some((at, when)) = s.split_once(':') else { return Kill::Never };
        let at = match at {
            "Before" => KillPoint::Before,
            "Mid" => KillPoint::Mid,
            "After" => KillPoint::After,
            other => panic!("kill point {other}"),
        };
        match when {
            "shared" => Kill::WhenShared(at),
            n => Kill::InBatch(at, n.parse().expect("a batch number")),
        }
    }
}

/// What a member is asked to do.
pub struct Settings<'a> {
    pub spec: &'a str,
    pub out: &'a Path,
    /// Its tag in the output file: members are numbered in start order.
    pub tag: u32,
    pub partitions: u32,
    /// It exits once the group committed this many records.
    pub total: u64,
    pub kill: Kill,
    pub max_batch: usize,
    /// Pretend work per record.
    pub work: Duration,
}

/// Starts a member process (it says `ready` once it joined the group).
pub fn start(name: &str, s: &Settings<'_>) -> Proc {
    procs::spawn(
        &super::child_entry(),
        name,
        "member",
        &[
            ("DURQ_SPEC", s.spec.to_owned()),
            ("DURQ_OUT", s.out.display().to_string()),
            ("DURQ_TAG", s.tag.to_string()),
            ("DURQ_PARTITIONS", s.partitions.to_string()),
            ("DURQ_TOTAL", s.total.to_string()),
            ("DURQ_KILL", s.kill.encode()),
            ("DURQ_MAX_BATCH", s.max_batch.to_string()),
            ("DURQ_WORK_US", s.work.as_micros().to_string()),
        ],
    )
}

/// The member role.
pub fn run() -> ! {
    let spec = procs::var("DURQ_SPEC");
    let tag = procs::num("DURQ_TAG");
    let partitions = procs::num("DURQ_PARTITIONS") as usize;
    let total = procs::num("DURQ_TOTAL");
    let kill = Kill::decode(&procs::var("DURQ_KILL"));
    let work = Duration::from_micros(procs::num("DURQ_WORK_US"));
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(procs::var("DURQ_OUT"))
        .unwrap_or_else(|e| fail(format_args!("open output: {e}")));
    let queue = backend::open(&spec).unwrap_or_else(|e| fail(format_args!("open {spec}: {e}")));
    let options =
        ConsumerOptions::default().lease_timeout(backend::LEASE).max_batch(procs::num("DURQ_MAX_BATCH") as usize);
    let mut consumer = join(&queue, options).unwrap_or_else(|e| fail(format_args!("join: {e}")));
    say("ready");
    let mut batches = 0;
    loop {
        let committed: u64 = consumer.committed().unwrap_or_else(|e| fail(format_args!("committed: {e}"))).iter().sum();
        if committed >= total {
            say("done");
            std::process::exit(0);
        }
        let shared = consumer.held_partitions().len() < partitions;
        let processed = consumer.process_timeout(Duration::from_millis(100), |batch| {
            batches += 1;
            let here = match kill {
                Kill::Never => None,
                Kill::InBatch(at, n) => (batches == n).then_some(at),
                Kill::WhenShared(at) => shared.then_some(at),
            };
            let first = batch[0].position();
            let last = batch[batch.len() - 1].position().offset;
            say(format_args!("batch {} {} {last} {}", first.partition, first.offset, batch[0].delivery_count()));
            if here == Some(KillPoint::Before) {
                procs::sigkill_self();
            }
            for (i, m) in batch.iter().enumerate() {
                if here == Some(KillPoint::Mid) && i == batch.len() / 2 {
                    procs::sigkill_self();
                }
                let id = std::str::from_utf8(m.payload()).unwrap_or_else(|e| fail(format_args!("payload: {e}")));
                let p = m.position();
                let line = format!("{tag} {id} {} {} {}\n", p.partition, p.offset, m.delivery_count());
                out.write_all(line.as_bytes()).unwrap_or_else(|e| fail(format_args!("write output: {e}")));
                std::thread::sleep(work);
            }
            if here == Some(KillPoint::After) {
                procs::sigkill_self();
            }
            Ok::<(), std::io::Error>(())
        });
        match processed {
            Ok(_) => {}
            // Presumed hung on a loaded machine and taken over: its batch
            // comes again to the new holder, which the parent allows for.
            Err(durq::Error::Fenced { .. }) => say("fenced"),
            Err(e) => fail(format_args!("process: {e}")),
        }
    }
}

/// A batch as a member announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    /// Deliveries of its first record, this one included.
    pub delivery_count: u32,
}

impl Announced {
    fn parse(line: &str) -> Option<Announced> {
        let mut w = line.strip_prefix("batch ")?.split(' ').map(|x| x.parse::<u64>().ok());
        Some(Announced {
            partition: w.next()?? as u32,
            first: w.next()??,
            last: w.next()??,
            delivery_count: w.next()?? as u32,
        })
    }

    pub fn contains(&self, p: Position) -> bool {
        p.partition == self.partition && (self.first..=self.last).contains(&p.offset)
    }
}

/// The batches `member` announced, in order.
pub fn announced(member: &Proc) -> Vec<Announced> {
    member.lines.iter().filter_map(|l| Announced::parse(l)).collect()
}

/// The batches of `member` that may be processed again by another: the
/// last one it announced (killed in it, or between its commit and the
/// next), and each whose commit was refused (`fenced`).
pub fn may_repeat(member: &Proc) -> Vec<Announced> {
    let mut out = Vec::new();
    let mut last = None;
    for line in &member.lines {
        if let Some(b) = Announced::parse(line) {
            last = Some(b);
        } else if line == "fenced" {
            out.extend(last.take());
        }
    }
    out.extend(last);
    out
}

/// One line of the output file: a record one member processed.
#[derive(Debug, Clone)]
pub struct Processed {
    pub tag: u32,
    pub id: String,
    pub position: Position,
    pub delivery_count: u32,
}

/// Every record processed so far, in the order the members wrote them.
pub fn processed(out: &Path) -> Vec<Processed> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|line| {
            let w: Vec<&str> = line.split(' ').collect();
            let [tag, id, partition, offset, count] = w[..] else { panic!("bad output line {line:?}") };
            Processed {
                tag: tag.parse().expect("tag"),
                id: id.to_owned(),
                position: Position {
                    partition: partition.parse().expect("partition"),
                    offset: offset.parse().expect("offset"),
                },
                delivery_count: count.parse().expect("delivery count"),
            }
        })
        .collect()
}

/// How often each acknowledged record was processed; fails the test on a
/// record processed anywhere but where its send put it, or one never sent.
pub fn counts(acknowledged: &HashMap<String, Position>, processed: &[Processed]) -> HashMap<String, u32> {
    let mut counts: HashMap<String, u32> = acknowledged.keys().map(|id| (id.clone(), 0)).collect();
    for p in processed {
        let Some(at) = acknowledged.get(&p.id) else { panic!("{} was processed but never acknowledged", p.id) };
        assert_eq!(*at, p.position, "{} processed at the wrong position", p.id);
        *counts.get_mut(&p.id).expect("counted") += 1;
    }
    counts
}

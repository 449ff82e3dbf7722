//! `durq stat nats://…`: a NATS queue's partitions and groups, as tables or
//! JSON, in the local `stat`'s shape where its fields mean the same.
//!
//! What a NATS queue has and a local one has not: each partition's stream,
//! each group's key-value bucket, each slot's revision, each member's
//! announced lease and `left` for a member that left. What it has not:
//! segments, a member's pid and host (a member key holds only its lease),
//! `hung` apart from `dead` (a lapsed key shows neither which), dead
//! letters, retention limits.
//!
//! `--watch` repeats it (`watch.rs`'s loop) with each partition's rate in
//! and each slot's rate out, as the local `--watch` shows them.

use std::io::{self, Write};
use std::time::Duration;

use durq_nats::Queue;
use durq_nats::SlotState;
use durq_nats::member_stat::MemberStat;
use durq_nats::queue_stat::{GroupStat, QueueStat};

use crate::json::json_string;
use crate::stat::ago;
use crate::table::{Align, table};
use crate::watch::{Sample, rate, repeat, slots_table};
use crate::{CliResult, stream_error};

pub fn run(url: &str, json: bool) -> CliResult<()> {
    let queue = Queue::open_existing(url)?;
    let stat = queue.stat()?;
    let text = if json { to_json(&queue, &stat) } else { to_tables(&queue, &stat) };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}

/// `durq stat --watch nats://…`: a snapshot every `every`, until
/// interrupted.
pub fn watch(url: &str, every: Duration, json: bool) -> CliResult<()> {
    let queue = Queue::open_existing(url)?;
    repeat(
        every,
        json,
        || Ok(queue.stat()?),
        |now, before| match json {
            true => to_json(&queue, &now.stat),
            false => frame(&queue, every, now, before),
        },
    )
}

/// One snapshot with rates from the one before (`-` in the first):
///
/// ```text
/// queue nats://127.0.0.1:4222/orders: 2 partition(s), durability sync, 1 replica(s); every 1s
/// PARTITION  FIRST  NEXT  IN/S
/// ...
/// group billing (bucket DURQ_orders_G_billing)
/// PARTITION  HOLDER  STATE  COMMITTED  LAG  OUT/S
/// ...
/// ```
fn frame(queue: &Queue, every: Duration, now: &Sample<QueueStat>, before: Option<&Sample<QueueStat>>) -> String {
    let (stat, secs) = (&now.stat, now.secs_since(before));
    let mut text = format!(
        "queue {}: {} partition(s), durability {}, {} replica(s); every {}s\n",
        queue.url(),
        queue.partitions(),
        queue.durability(),
        queue.replicas(),
        every.as_secs_f64()
    );
    let partitions = stat.partitions.iter().map(|p| {
        let was = before.and_then(|b| b.stat.partitions.get(p.partition as usize)).map(|b| b.next_offset);
        [
            p.partition.to_string(),
            p.first_offset.to_string(),
            p.next_offset.to_string(),
            rate(was, Some(p.next_offset), secs),
        ]
    });
    use Align::{Left, Right};
    text += &table(["PARTITION", "FIRST", "NEXT", "IN/S"], [Left, Right, Right, Right], partitions);
    if stat.groups.is_empty() {
        text += "no consumer groups\n";
    }
    for g in &stat.groups {
        text += &format!("group {} (bucket {})\n", g.name, g.bucket);
        let was = before.and_then(|b| b.stat.groups.iter().find(|bg| bg.name == g.name)).map(GroupStat::committed);
        let slots =
            g.slots.iter().zip(g.committed()).zip(lag(stat, g)).enumerate().map(|(p, ((s, committed), lag))| {
                let (state, member) = holder(g, s.as_ref());
                [
                    p.to_string(),
                    member.unwrap_or("-").to_owned(),
                    state,
                    committed.to_string(),
                    lag.to_string(),
                    rate(was.as_ref().and_then(|w| w.get(p).copied()), Some(committed), secs),
                ]
            });
        text += &slots_table(slots);
    }
    text
}

fn to_tables(queue: &Queue, stat: &QueueStat) -> String {
    let mut text = format!(
        "queue {}: {} partition(s), durability {}, record_bytes_max {}, {} replica(s)\n\n",
        queue.url(),
        queue.partitions(),
        queue.durability(),
        queue.record_bytes_max(),
        queue.replicas()
    );
    let partitions = stat.partitions.iter().map(|p| {
        [
            p.partition.to_string(),
            p.first_offset.to_string(),
            p.next_offset.to_string(),
            p.bytes.to_string(),
            p.stream.clone(),
        ]
    });
    use Align::{Left, Right};
    text += &table(["PARTITION", "FIRST", "NEXT", "BYTES", "STREAM"], [Left, Right, Right, Right, Left], partitions);
    if stat.groups.is_empty() {
        text += "\nno consumer groups\n";
    }
    for g in &stat.groups {
        text += &format!("\ngroup {} (bucket {})\n", g.name, g.bucket);
        let lag = lag(stat, g);
        let slots = g.slots.iter().zip(g.committed()).zip(lag).enumerate().map(|(p, ((s, committed), lag))| {
            let (holder, member) = holder(g, s.as_ref());
            [
                p.to_string(),
                committed.to_string(),
                lag.to_string(),
                epoch(s.as_ref()).to_string(),
                member.unwrap_or("-").to_owned(),
                s.as_ref().map_or("-".into(), |s| s.revision().to_string()),
                holder,
            ]
        });
        text += &table(
            ["PARTITION", "COMMITTED", "LAG", "EPOCH", "HOLDER", "REVISION", "STATE"],
            [Left, Right, Right, Right, Left, Right, Left],
            slots,
        );
        text += &members_table(g);
    }
    text
}

/// A group's members, as the local `stat` lists them, with the lease each
/// announced and the slots it holds:
///
/// ```text
/// MEMBER  LEASE    HEARTBEAT  STATE  SLOTS
/// 3f…     10000ms  12ms ago   alive  0,1
/// ```
///
/// HEARTBEAT is the age of the member's key by the server's clock: its last
/// heartbeat, or for a member that left, its leaving.
fn members_table(g: &GroupStat) -> String {
    if g.members.is_empty() {
        return "no members\n".into();
    }
    let members = g.members.iter().map(|m| {
        [
            m.id.clone(),
            m.lease_timeout.map_or("-".into(), |l| format!("{}ms", l.as_millis())),
            ago(m.age.as_millis() as u64),
            m.liveness.to_string(),
            held(g, m),
        ]
    });
    use Align::{Left, Right};
    table(["MEMBER", "LEASE", "HEARTBEAT", "STATE", "SLOTS"], [Left, Right, Right, Left, Left], members)
}

/// The partitions `m` holds, `0,1`, or `-`.
fn held(g: &GroupStat, m: &MemberStat) -> String {
    let held: Vec<String> = g.held_by(&m.id).iter().map(u32::to_string).collect();
    if held.is_empty() { "-".into() } else { held.join(",") }
}

/// Records not yet processed, per partition.
fn lag(stat: &QueueStat, g: &GroupStat) -> Vec<u64> {
    stat.partitions.iter().zip(g.committed()).map(|(p, committed)| p.next_offset.saturating_sub(committed)).collect()
}

/// Who holds a slot, in words, as the local `stat` says it: the holder's
/// liveness by its member key (`alive`, `lapsed`, or `left` when it left
/// without releasing the slot) and its id; `held` for a holder with no
/// member key (a migration writing the slot); `released` (written, free);
/// `nobody` (never written).
fn holder<'a>(g: &GroupStat, s: Option<&'a SlotState>) -> (String, Option<&'a str>) {
    match s {
        None => ("nobody".into(), None),
        Some(s) => match s.holder() {
            Some(member) => {
                let liveness = g.members.iter().find(|m| m.id == member).map(|m| m.liveness.to_string());
                (liveness.unwrap_or_else(|| "held".into()), Some(member))
            }
            None => ("released".into(), None),
        },
    }
}

/// The holding's epoch; 0 for a free slot, as locally for one never taken.
fn epoch(s: Option<&SlotState>) -> u64 {
    s.and_then(SlotState::epoch).unwrap_or(0)
}

fn to_json(queue: &Queue, stat: &QueueStat) -> String {
    let partitions: Vec<String> = stat
        .partitions
        .iter()
        .map(|p| {
            format!(
                r#"{{"partition":{},"first_offset":{},"next_offset":{},"bytes":{},"stream":{}}}"#,
                p.partition,
                p.first_offset,
                p.next_offset,
                p.bytes,
                json_string(&p.stream)
            )
        })
        .collect();
    let groups: Vec<String> = stat.groups.iter().map(|g| group_json(stat, g)).collect();
    format!(
        r#"{{"url":{},"durability":{},"record_bytes_max":{},"replicas":{},"partitions":[{}],"groups":[{}]}}"#,
        json_string(&queue.url()),
        json_string(&queue.durability().to_string()),
        queue.record_bytes_max(),
        queue.replicas(),
        partitions.join(","),
        groups.join(",")
    ) + "\n"
}

/// `{"name","committed","lag","slots","bucket","members"}`; a slot is
/// `{"slot","epoch","holder","member","revision"}`, `holder` being as in
/// the table (`alive`, `lapsed`, `left`, `held`, `released` or `nobody`),
/// `member` and `revision` null where there are none; a member is `{"id","liveness","heartbeat_ms","lease_timeout_ms",
/// "age_ms","revision","slots"}`, `liveness` being `alive`, `lapsed` or
/// `left`, `heartbeat_ms` the server's time of its key's last write (ms
/// since the Unix epoch), `lease_timeout_ms` null once it left.
fn group_json(stat: &QueueStat, g: &GroupStat) -> String {
    let numbers = |n: Vec<u64>| n.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let slots: Vec<String> = g
        .slots
        .iter()
        .enumerate()
        .map(|(p, s)| {
            let (holder, member) = holder(g, s.as_ref());
            format!(
                r#"{{"slot":{p},"epoch":{},"holder":"{holder}","member":{},"revision":{}}}"#,
                epoch(s.as_ref()),
                member.map_or("null".into(), json_string),
                s.as_ref().map_or("null".into(), |s| s.revision().to_string())
            )
        })
        .collect();
    let members: Vec<String> = g.members.iter().map(|m| member_json(g, m)).collect();
    format!(
        r#"{{"name":{},"committed":[{}],"lag":[{}],"slots":[{}],"bucket":{},"members":[{}]}}"#,
        json_string(&g.name),
        numbers(g.committed()),
        numbers(lag(stat, g)),
        slots.join(","),
        json_string(&g.bucket),
        members.join(",")
    )
}

fn member_json(g: &GroupStat, m: &MemberStat) -> String {
    let held: Vec<String> = g.held_by(&m.id).iter().map(u32::to_string).collect();
    format!(
        r#"{{"id":{},"liveness":"{}","heartbeat_ms":{},"lease_timeout_ms":{},"age_ms":{},"revision":{},"slots":[{}]}}"#,
        json_string(&m.id),
        m.liveness,
        m.written_ms,
        m.lease_timeout.map_or("null".into(), |l| l.as_millis().to_string()),
        m.age.as_millis(),
        m.revision,
        held.join(",")
    )
}

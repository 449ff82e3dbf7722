//! `durq stat`: a queue's partitions and groups, as tables or JSON.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durq::stat::MemberInfo;
use durq::stat::RetentionFailures;
use durq::stat::{GroupStat, Holder, QueueStat, RetentionSkips, SlotStat};
use durq::stat::{Lease, member_hex};

use crate::json::json_string;
use crate::table::{Align, table};
use crate::target::Target;
use crate::{CliResult, stream_error};

/// Show each partition's first and next offset, segments and bytes; the
/// retention limits, if any; how many retention passes failed, and the last
/// error; and for each consumer group its members (alive, hung or dead),
/// each slot's holder, epoch, last heartbeat, committed offset and lag, the
/// size of its dead-letter queue, and the records retention limits removed
/// before it processed them. Read-only: changes nothing, takes no lock, runs no recovery (a
/// partition the next open will repair is shown as needing recovery), and
/// needs only read access to the queue.
///
/// On NATS (nats://HOST:PORT/QUEUE): each partition's stream, its first and
/// next offset and bytes; each group's slots, their committed offset, lag,
/// holder and epoch; and its members (alive, lapsed or left), the lease
/// each announced, the age of its last heartbeat by the server's clock, and
/// the slots it holds.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  durq stat /var/lib/orders --watch 1\n  durq stat nats://127.0.0.1:4222/orders --json"
)]
pub struct Args {
    /// Queue directory, which must already hold a queue; or a queue on NATS,
    /// nats://HOST:PORT/QUEUE, which must exist.
    #[arg(value_name = "QUEUE")]
    pub queue: Target,
    /// Print one JSON object instead of tables. Heartbeats are absolute,
    /// in ms since the Unix epoch (`heartbeat_ms`).
    #[arg(long)]
    pub json: bool,
    /// Print a snapshot every SECS [default: 2] until interrupted, with the
    /// records per second in (per partition) and out (per group and slot)
    /// since the last one. On a terminal each snapshot is drawn over the
    /// last; otherwise they follow one another (one JSON line each with
    /// --json, without rates).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2", value_parser = parse_interval)]
    pub watch: Option<Duration>,
}

/// `durq stat DIR`. main.rs sends `--watch` to watch.rs and a NATS address
/// to nats_stat.rs (which draws with watch.rs's loop, and watch.rs with
/// this module's pieces: calling either from here would close a circle).
pub fn run(dir: &Path, json: bool) -> CliResult<()> {
    let stat = durq::stat::stat(dir)?;
    let text = if json { to_json(dir, &stat) } else { to_tables(dir, &stat, now_ms()) };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}

/// A watch interval: seconds, decimals allowed, at least 10 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = crate::parse_secs(s)?;
    if interval < Duration::from_millis(10) {
        return Err(format!("{s:?}: the interval must be at least 0.01 seconds"));
    }
    Ok(interval)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn to_tables(path: &Path, stat: &QueueStat, now_ms: u64) -> String {
    let c = &stat.config;
    let mut text = format!(
        "queue {}: {} partition(s), durability {}, segment_bytes {}, record_bytes_max {}; {}\n\n",
        path.display(),
        c.partitions,
        c.durability,
        c.segment_bytes,
        c.record_bytes_max,
        if stat.open { "open" } else { "not open" }
    );
    let partitions = stat.partitions.iter().map(|p| {
        [
            p.partition.to_string(),
            p.first_offset.to_string(),
            p.next_offset.to_string(),
            p.segments.to_string(),
            p.bytes.to_string(),
        ]
    });
    use Align::{Left, Right};
    text += &table(["PARTITION", "FIRST", "NEXT", "SEGMENTS", "BYTES"], [Left, Right, Right, Right, Right], partitions);
    for p in &stat.partitions {
        if let Some(repairs) = &p.needs_recovery {
            text += &format!("partition {} needs recovery, which the next open does: {repairs}\n", p.partition);
        }
    }
    if c.retention.is_limited() {
        text += &format!("retention limits per partition: {}\n", c.retention);
    }
    text += &retention_line(&stat.retention_failures, now_ms);
    if stat.groups.is_empty() {
        text += "\nno consumer groups\n";
    }
    for g in &stat.groups {
        text.push('\n');
        text += &group_tables(path, g, now_ms);
    }
    if !stat.notes.is_empty() {
        text.push('\n');
    }
    for note in &stat.notes {
        text += &format!("note: {note}\n");
    }
    text
}

/// `retention failures: none`, or how many and the last one, or why the
/// record of them cannot be read.
fn retention_line(failures: &Result<Option<RetentionFailures>, String>, now_ms: u64) -> String {
    match failures {
        Ok(None) => "retention failures: none\n".into(),
        Ok(Some(f)) => format!(
            "retention failures: {}, the last {} in partition {}: {}\n",
            f.count,
            age(now_ms, f.last_ms),
            f.partition,
            f.last_error
        ),
        Err(reason) => format!("retention failures: record unreadable: {reason}\n"),
    }
}

/// One group: a heading, its slots (and what is wrong with damaged ones),
/// then its members.
///
/// ```text
/// group g: 1 member(s), 0 dead letter(s)
/// PARTITION  COMMITTED  LAG  EPOCH  HOLDER  PID  HEARTBEAT  STATE
/// ...
/// partition 1 damaged: ...
/// MEMBER  PID  HEARTBEAT  STATE
/// ...
/// ```
fn group_tables(path: &Path, g: &GroupStat, now_ms: u64) -> String {
    let dead_letters = match &g.dead_letters {
        Ok(n) => format!("{n} dead letter(s)"),
        Err(reason) => format!("dead letters unreadable ({reason}; durq verify says more)"),
    };
    let mut text = format!("group {}: {} member(s), {dead_letters}\n", g.name, g.members.len());
    let slots = g.slots.iter().map(|s| {
        let p = s.slot as usize;
        let (holder, pid, heartbeat) = match &s.lease {
            Ok(l) if !l.is_released() => (member_hex(&l.member), l.pid.to_string(), age(now_ms, l.heartbeat_ms)),
            Ok(l) => ("-".into(), "-".into(), age(now_ms, l.heartbeat_ms)),
            Err(_) => ("-".into(), "-".into(), "-".into()),
        };
        [
            s.slot.to_string(),
            known_offset(g.committed.get(p)),
            known_offset(g.lag.get(p)),
            s.epoch.to_string(),
            holder,
            pid,
            heartbeat,
            slot_state(s),
        ]
    });
    use Align::{Left, Right};
    text += &table(
        ["PARTITION", "COMMITTED", "LAG", "EPOCH", "HOLDER", "PID", "HEARTBEAT", "STATE"],
        [Left, Right, Right, Right, Left, Right, Right, Left],
        slots,
    );
    for s in &g.slots {
        if let Some(reason) = &s.damaged {
            text += &format!(
                "partition {} damaged: {reason}; no member can take it until `durq group reset {} --group {} --to earliest|latest|OFFSET|TIME` (with no member running) sets the group's position in every partition\n",
                s.slot,
                path.display(),
                g.name
            );
        }
    }
    for s in &g.slots {
        text += &skipped_line(s, now_ms);
    }
    if g.members.is_empty() {
        text += "no members\n";
        return text;
    }
    let members = g
        .members
        .iter()
        .map(|m| [member_hex(&m.id), known(m.pid.into()), age(now_ms, m.heartbeat_ms), m.liveness.to_string()]);
    text += &table(["MEMBER", "PID", "HEARTBEAT", "STATE"], [Left, Right, Right, Left], members);
    text
}

/// `partition P: retention limits removed N record(s) before the group
/// processed them, the last offsets A..B, T ago`, or why the group's skip
/// record cannot be read; nothing when no limit skipped anything.
fn skipped_line(s: &SlotStat, now_ms: u64) -> String {
    match &s.skipped {
        Ok(skips) if skips.count == 0 => String::new(),
        Ok(skips) => format!(
            "partition {}: retention limits removed {} record(s) before the group processed them, the last offsets {}..{}, {}\n",
            s.slot,
            skips.count,
            skips.last_from,
            skips.last_to,
            age(now_ms, skips.last_ms)
        ),
        Err(reason) => format!("partition {}: retention skip record unreadable: {reason}\n", s.slot),
    }
}

/// What a slot's holder is doing, in words: `damaged` (explained below the
/// table), the holder's liveness, `released`, or why the lease cannot be
/// read.
pub fn slot_state(s: &SlotStat) -> String {
    if s.damaged.is_some() {
        return "damaged".into();
    }
    match (&s.lease, s.holder) {
        (Err(reason), _) => format!("no lease: {reason}"),
        (Ok(_), Holder::Member(liveness)) => liveness.to_string(),
        (Ok(_), Holder::Released) => "released".into(),
        (Ok(_), Holder::Nobody) => "nobody".into(),
    }
}

/// An offset or a lag, or `-` where it is unknown (a damaged slot).
fn known_offset(n: Option<&Option<u64>>) -> String {
    n.copied().flatten().map_or("-".into(), |n| n.to_string())
}

/// `n`, or `-` where 0 means unknown (an unreadable member file).
fn known(n: u64) -> String {
    if n == 0 { "-".into() } else { n.to_string() }
}

/// How long ago `then_ms` was: in ms up to a minute and a half, then in
/// coarser units; `-` if unknown (0).
fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".into();
    }
    ago(now_ms.saturating_sub(then_ms))
}

/// `ms` ago, in ms up to a minute and a half, then in coarser units (also
/// a NATS member key's age, measured by the server).
pub(crate) fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    match ms {
        0..90_000 => format!("{ms}ms ago"),
        90_000..5_400_000 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        5_400_000..172_800_000 => format!("{}h{:02}m ago", secs / 3600, secs / 60 % 60),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub fn to_json(path: &Path, stat: &QueueStat) -> String {
    let c = &stat.config;
    let partitions: Vec<String> = stat
        .partitions
        .iter()
        .map(|p| {
            format!(
                r#"{{"partition":{},"first_offset":{},"next_offset":{},"segments":{},"bytes":{},"needs_recovery":{}}}"#,
                p.partition,
                p.first_offset,
                p.next_offset,
                p.segments,
                p.bytes,
                json_or_null(p.needs_recovery.as_deref())
            )
        })
        .collect();
    let groups: Vec<String> = stat.groups.iter().map(group_json).collect();
    let notes: Vec<String> = stat.notes.iter().map(|n| json_string(n)).collect();
    format!(
        r#"{{"path":{},"durability":{},"segment_bytes":{},"record_bytes_max":{},"partitions":[{}],"groups":[{}],"open":{},"notes":[{}],"retention_failures":{},"retention":{}}}"#,
        json_string(&path.to_string_lossy()),
        json_string(&c.durability.to_string()),
        c.segment_bytes,
        c.record_bytes_max,
        partitions.join(","),
        groups.join(","),
        stat.open,
        notes.join(","),
        retention_json(&stat.retention_failures),
        limits_json(&c.retention)
    ) + "\n"
}

/// `{"max_bytes","max_age_ms"}` per partition, each null when unlimited.
fn limits_json(r: &durq::Retention) -> String {
    let or_null = |n: Option<u64>| n.map_or("null".into(), |n| n.to_string());
    format!(
        r#"{{"max_bytes":{},"max_age_ms":{}}}"#,
        or_null(r.max_bytes),
        or_null(r.max_age.map(|a| a.as_millis() as u64))
    )
}

/// `{"count","last_ms","partition","error"}`: `count` 0 and the rest null
/// when none failed; `count` null and `error` saying why when the record
/// cannot be read.
fn retention_json(failures: &Result<Option<RetentionFailures>, String>) -> String {
    let (count, last_ms, partition, error) = match failures {
        Ok(None) => ("0".into(), "null".into(), "null".into(), "null".into()),
        Ok(Some(f)) => {
            (f.count.to_string(), f.last_ms.to_string(), f.partition.to_string(), json_string(&f.last_error))
        }
        Err(reason) => {
            ("null".into(), "null".into(), "null".into(), json_string(&format!("record unreadable: {reason}")))
        }
    };
    format!(r#"{{"count":{count},"last_ms":{last_ms},"partition":{partition},"error":{error}}}"#)
}

/// `{"name","committed","lag","members","slots","dead_letters",
/// "dead_letters_error"}`: the first three as they always were, the rest
/// added after them. A damaged slot's committed offset and lag are null;
/// an unreadable dead-letter queue's count is null, and
/// `dead_letters_error` says why.
fn group_json(g: &GroupStat) -> String {
    let members: Vec<String> = g.members.iter().map(member_json).collect();
    let slots: Vec<String> = g.slots.iter().map(slot_json).collect();
    let (dead_letters, error) = match &g.dead_letters {
        Ok(n) => (n.to_string(), "null".into()),
        Err(reason) => ("null".into(), json_string(reason)),
    };
    format!(
        r#"{{"name":{},"committed":[{}],"lag":[{}],"members":[{}],"slots":[{}],"dead_letters":{dead_letters},"dead_letters_error":{error}}}"#,
        json_string(&g.name),
        join_numbers(&g.committed),
        join_numbers(&g.lag),
        members.join(","),
        slots.join(","),
    )
}

/// `pid` and `heartbeat_ms` are null when the member file is unreadable.
fn member_json(m: &MemberInfo) -> String {
    format!(
        r#"{{"id":"{}","pid":{},"liveness":"{}","heartbeat_ms":{}}}"#,
        member_hex(&m.id),
        json_known(m.pid.into()),
        m.liveness,
        json_known(m.heartbeat_ms)
    )
}

/// `holder` is `"alive"`, `"hung"` or `"dead"` (the liveness of the member
/// the lease names), `"released"`, or `"nobody"` (lease unreadable: then
/// `lease` is null and `lease_error` says why). `damaged` is null, or why
/// the slot's position cannot be used. `skipped` counts the records
/// retention limits removed before the group processed them, and
/// `last_skipped` is the last such range (`{"from","to","at_ms"}`, null if
/// none); both null, and `skipped_error` saying why, when the group's skip
/// record cannot be read.
fn slot_json(s: &SlotStat) -> String {
    let holder = match s.holder {
        Holder::Member(liveness) => liveness.to_string(),
        Holder::Released => "released".into(),
        Holder::Nobody => "nobody".into(),
    };
    let (lease, error) = match &s.lease {
        Ok(l) => (lease_json(l), "null".into()),
        Err(reason) => ("null".into(), json_string(reason)),
    };
    format!(
        r#"{{"slot":{},"epoch":{},"holder":"{holder}","lease":{lease},"lease_error":{error},"damaged":{},{}}}"#,
        s.slot,
        s.epoch,
        json_or_null(s.damaged.as_deref()),
        skipped_json(&s.skipped)
    )
}

/// The `skipped`, `last_skipped` and `skipped_error` fields of a slot.
fn skipped_json(skipped: &Result<RetentionSkips, String>) -> String {
    match skipped {
        Ok(k) if k.count == 0 => r#""skipped":0,"last_skipped":null,"skipped_error":null"#.into(),
        Ok(k) => format!(
            r#""skipped":{},"last_skipped":{{"from":{},"to":{},"at_ms":{}}},"skipped_error":null"#,
            k.count, k.last_from, k.last_to, k.last_ms
        ),
        Err(reason) => format!(r#""skipped":null,"last_skipped":null,"skipped_error":{}"#, json_string(reason)),
    }
}

/// A lease record; `member` is null once released.
fn lease_json(l: &Lease) -> String {
    let member = if l.is_released() { "null".into() } else { format!("\"{}\"", member_hex(&l.member)) };
    format!(
        r#"{{"epoch":{},"member":{member},"pid":{},"host":{},"heartbeat_ms":{},"timeout_ms":{}}}"#,
        l.epoch,
        l.pid,
        json_string(&l.host),
        l.heartbeat_ms,
        l.timeout_ms
    )
}

fn json_known(n: u64) -> String {
    if n == 0 { "null".into() } else { n.to_string() }
}

/// Numbers, null where unknown.
fn join_numbers(numbers: &[Option<u64>]) -> String {
    numbers.iter().map(|n| n.map_or("null".into(), |n| n.to_string())).collect::<Vec<_>>().join(",")
}

fn json_or_null(s: Option<&str>) -> String {
    s.map_or("null".into(), json_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_in_ms_then_coarser() {
        assert_eq!(age(1_000, 0), "-");
        assert_eq!(age(1_000, 1_000), "0ms ago");
        assert_eq!(age(1_000, 2_000), "0ms ago", "a heartbeat from the future is now");
        assert_eq!(age(100_000, 10_001), "89999ms ago");
        assert_eq!(age(100_000, 10_000), "1m30s ago");
        assert_eq!(age(7_200_000 + 1, 1), "2h00m ago");
        assert_eq!(age(3 * 86_400_000 + 1, 1), "3d ago");
    }
}

//! `durq stat --watch`: a queue's snapshots, one per interval, with rates
//! computed from the last two. [`repeat`] is the loop, for a local queue
//! ([`run`]) and a NATS one (`nats_stat.rs`) alike.
//!
//! On a terminal each snapshot is drawn over the previous one (cursor home,
//! each line cleared to its end, the rest of the screen cleared), so the
//! screen does not flicker; elsewhere (a pipe, a file) snapshots are printed
//! one after another, separated by a blank line, with no escape sequence.
//! With `--json`, each snapshot is one JSON line, as `stat --json` prints it.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use durq::stat::member_hex;
use durq::stat::{GroupStat, QueueStat};

use crate::stat::{slot_state, to_json};
use crate::table::{Align, table};
use crate::{CliResult, stream_error};

/// Cursor to the top-left corner.
const HOME: &str = "\x1b[H";
/// Clear from the cursor to the end of the line.
const CLEAR_LINE: &str = "\x1b[K";
/// Clear from the cursor to the end of the screen.
const CLEAR_BELOW: &str = "\x1b[J";

/// One snapshot and when it was taken.
pub(crate) struct Sample<S> {
    pub(crate) at: Instant,
    pub(crate) stat: S,
}

impl<S> Sample<S> {
    /// Seconds from `before` to this one; `None` without one.
    pub(crate) fn secs_since(&self, before: Option<&Sample<S>>) -> Option<f64> {
        before.map(|b| self.at.duration_since(b.at).as_secs_f64())
    }
}

/// Prints a snapshot of `dir` every `every`, until interrupted (or stdout
/// closes: then it fails like any write to a closed stdout).
pub fn run(dir: &Path, every: Duration, json: bool) -> CliResult<()> {
    repeat(
        every,
        json,
        || Ok(durq::stat::stat(dir)?),
        |now, before| match json {
            true => to_json(dir, &now.stat),
            false => frame(dir, every, now, before),
        },
    )
}

/// Every `every`: takes a snapshot with `take` and prints what `draw`
/// makes of it and the one before. `draw`'s text is a frame, drawn over the
/// last on a terminal and followed by a blank line elsewhere; with `json`,
/// it is a JSON line, printed as it is.
pub(crate) fn repeat<S>(
    every: Duration,
    json: bool,
    mut take: impl FnMut() -> CliResult<S>,
    mut draw: impl FnMut(&Sample<S>, Option<&Sample<S>>) -> String,
) -> CliResult<()> {
    let mut out = io::stdout().lock();
    let terminal = out.is_terminal();
    let mut previous: Option<Sample<S>> = None;
    loop {
        let sample = Sample { at: Instant::now(), stat: take()? };
        let text = draw(&sample, previous.as_ref());
        let text = match (json, terminal) {
            (true, _) => text,
            (false, true) => redraw(&text),
            (false, false) => text + "\n",
        };
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
        previous = Some(sample);
        std::thread::sleep(every);
    }
}

/// `frame` drawn over the previous one.
fn redraw(frame: &str) -> String {
    let mut text = String::from(HOME);
    for line in frame.lines() {
        text += line;
        text += CLEAR_LINE;
        text += "\n";
    }
    text + CLEAR_BELOW
}

/// One snapshot as text: the partitions with their rate in, then per group
/// and slot the holder, its state, the committed offset, the lag and the
/// rate out. Rates are `-` in the first snapshot, and where an offset is
/// unknown.
///
/// ```text
/// queue /q: 2 partition(s), open; every 2s
/// PARTITION  FIRST  NEXT  IN/S
/// ...
/// group g: 1 member(s), 0 dead letter(s)
/// PARTITION  HOLDER  STATE  COMMITTED  LAG  OUT/S
/// ...
/// ```
fn frame(dir: &Path, every: Duration, now: &Sample<QueueStat>, before: Option<&Sample<QueueStat>>) -> String {
    let stat = &now.stat;
    let secs = now.secs_since(before);
    let mut text = format!(
        "queue {}: {} partition(s), {}; every {}s\n",
        dir.display(),
        stat.config.partitions,
        if stat.open { "open" } else { "not open" },
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
        let was = before.and_then(|b| b.stat.groups.iter().find(|bg| bg.name == g.name));
        text += &group_frame(g, was, secs);
    }
    text
}

fn group_frame(g: &GroupStat, before: Option<&GroupStat>, secs: Option<f64>) -> String {
    let dead_letters = match &g.dead_letters {
        Ok(n) => format!("{n} dead letter(s)"),
        Err(_) => "dead letters unreadable".into(),
    };
    let mut text = format!("group {}: {} member(s), {dead_letters}\n", g.name, g.members.len());
    let slots = g.slots.iter().map(|s| {
        let p = s.slot as usize;
        let holder = match &s.lease {
            Ok(l) if !l.is_released() => member_hex(&l.member),
            _ => "-".into(),
        };
        let committed = g.committed.get(p).copied().flatten();
        let was = before.and_then(|b| b.committed.get(p).copied().flatten());
        [
            s.slot.to_string(),
            holder,
            slot_state(s),
            committed.map_or("-".into(), |c| c.to_string()),
            g.lag.get(p).copied().flatten().map_or("-".into(), |l| l.to_string()),
            rate(was, committed, secs),
        ]
    });
    text += &slots_table(slots);
    text
}

/// A group's slots as `--watch` shows them on either backend: partition,
/// holder, state, committed offset, lag and rate out.
pub(crate) fn slots_table(rows: impl Iterator<Item = [String; 6]>) -> String {
    use Align::{Left, Right};
    table(["PARTITION", "HOLDER", "STATE", "COMMITTED", "LAG", "OUT/S"], [Left, Left, Left, Right, Right, Right], rows)
}

/// Records per second from `was` to `now` over `secs`, one decimal; `-`
/// when either is unknown. An offset that went back (a group reset) counts
/// as no progress.
pub(crate) fn rate(was: Option<u64>, now: Option<u64>, secs: Option<f64>) -> String {
    match (was, now, secs) {
        (Some(was), Some(now), Some(secs)) if secs > 0.0 => format!("{:.1}", now.saturating_sub(was) as f64 / secs),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_unknown_without_two_snapshots() {
        assert_eq!(rate(Some(10), Some(30), Some(2.0)), "10.0");
        assert_eq!(rate(Some(10), Some(11), Some(3.0)), "0.3");
        assert_eq!(rate(None, Some(30), Some(2.0)), "-");
        assert_eq!(rate(Some(10), None, Some(2.0)), "-");
        assert_eq!(rate(Some(10), Some(30), None), "-");
        assert_eq!(rate(Some(30), Some(10), Some(1.0)), "0.0", "a reset is no progress");
    }

    #[test]
    fn a_redraw_clears_each_line_and_what_is_below() {
        assert_eq!(redraw("a\nbb\n"), "\x1b[Ha\x1b[K\nbb\x1b[K\n\x1b[J");
    }
}

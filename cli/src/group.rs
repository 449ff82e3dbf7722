//! `durq group`: reset or delete a consumer group from outside it.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durq::ResetTo;

use crate::backend::{self, Backend, OnQueue};
use crate::target::Target;
use crate::{CliResult, stream_error};

/// Reset or delete a consumer group. Both need a group with no live member.
#[derive(clap::Subcommand)]
#[command(after_help = "Example:\n  durq group reset /var/lib/orders --group billing --to 2026-11-28T00:00:00Z")]
pub enum Command {
    Reset(ResetArgs),
    Delete(DeleteArgs),
}

/// Move a group's position in every partition (no live member allowed).
///
/// The group's next consumer starts there. Prints `<partition> <offset>`
/// for each partition. Refused while the group has a live member.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  durq group reset /var/lib/orders --group billing --to latest\n  \
                  durq group reset nats://127.0.0.1:4222/orders --group billing --to earliest")]
pub struct ResetArgs {
    /// Queue directory, or a queue on NATS (nats://HOST:PORT/QUEUE); it
    /// must exist.
    #[arg(value_name = "QUEUE")]
    dir: Target,
    /// The group to move; it must exist.
    #[arg(long, value_name = "G")]
    group: String,
    /// `earliest` (everything retained is processed again), `latest` (what
    /// was sent so far is skipped), an offset (the same in every partition,
    /// clamped to what is retained), or a time: the first record appended
    /// at or after it, per partition. A time is RFC 3339
    /// (2026-11-28T01:02:03Z, 2026-11-28T09:02:03.5+08:00) or `@<unix-ms>`.
    #[arg(long, value_name = "earliest|latest|OFFSET|TIME", value_parser = parse_reset_to)]
    to: ResetTo,
}

/// Delete a group and its dead letters (no live member allowed).
///
/// Deletes its positions, leases and dead letters; it then no longer holds
/// back retention. Prints one line saying what was deleted. Refused while
/// the group has a live member.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq group delete /var/lib/orders --group old-reports")]
pub struct DeleteArgs {
    /// Queue directory, or a queue on NATS (nats://HOST:PORT/QUEUE); it
    /// must exist.
    #[arg(value_name = "QUEUE")]
    dir: Target,
    /// The group to delete; it must exist.
    #[arg(long, value_name = "G")]
    group: String,
}

pub fn run(command: Command) -> CliResult<()> {
    match command {
        Command::Reset(args) => reset(args),
        Command::Delete(args) => delete(args),
    }
}

fn delete(args: DeleteArgs) -> CliResult<()> {
    backend::with_existing(&args.dir, &args)?;
    let mut out = io::stdout().lock();
    writeln!(out, "deleted group {:?}: its positions, leases and dead letters", args.group)
        .and_then(|()| out.flush())
        .map_err(stream_error("writing stdout"))?;
    Ok(())
}

impl OnQueue<()> for &DeleteArgs {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<()> {
        Ok(queue.delete_group(&self.group)?)
    }
}

fn reset(args: ResetArgs) -> CliResult<()> {
    let positions = backend::with_existing(&args.dir, &args)?;
    let text: String = positions.iter().enumerate().map(|(p, offset)| format!("{p} {offset}\n")).collect();
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}

impl OnQueue<Vec<u64>> for &ResetArgs {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<Vec<u64>> {
        Ok(queue.reset_group(&self.group, self.to)?)
    }
}

pub fn parse_reset_to(s: &str) -> Result<ResetTo, String> {
    match s {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Some(ms) = s.strip_prefix('@') {
        let ms: u64 = ms.parse().map_err(|_| format!("{s:?}: expected @ followed by ms since the Unix epoch"))?;
        return Ok(ResetTo::Time(UNIX_EPOCH + Duration::from_millis(ms)));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(ResetTo::Offset).map_err(|_| format!("offset {s} is too large"));
    }
    if s.contains('-') || s.contains(':') {
        return parse_rfc3339(s)
            .map(ResetTo::Time)
            .map_err(|reason| format!("{s:?} is not an RFC 3339 time: {reason}"));
    }
    Err(format!("{s:?} is not earliest, latest, an offset or a time"))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (RFC 3339; `t`,
/// `z` and a space in place of `T` are accepted too). Digits past
/// nanoseconds are ignored; a leap second 60 is accepted (it reads as the
/// next minute's 00).
fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>, what: &str| -> Result<i64, String> {
        let digits = b.get(range.clone()).ok_or_else(|| format!("{what} is missing"))?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(format!("{what} is not {} digits", range.len()));
        }
        Ok(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let expect = |at: usize, allowed: &[u8], what: &str| match b.get(at) {
        Some(c) if allowed.contains(c) => Ok(()),
        _ => Err(format!("expected {what} at character {}", at + 1)),
    };
    let year = num(0..4, "the year")?;
    expect(4, b"-", "'-'")?;
    let month = num(5..7, "the month")?;
    expect(7, b"-", "'-'")?;
    let day = num(8..10, "the day")?;
    expect(10, b"Tt ", "'T'")?;
    let hour = num(11..13, "the hour")?;
    expect(13, b":", "':'")?;
    let minute = num(14..16, "the minute")?;
    expect(16, b":", "':'")?;
    let second = num(17..19, "the second")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not in 1..=12"));
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err(format!("day {day} is not in month {year:04}-{month:02}"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!("{hour:02}:{minute:02}:{second:02} is not a time of day"));
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err("no digits after '.'".into());
        }
        nanos *= 10i64.pow(9u32.saturating_sub((at - start) as u32));
    }
    let offset_secs = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            let hours = num(at + 1..at + 3, "the offset's hours")?;
            expect(at + 3, b":", "':' in the offset")?;
            let minutes = num(at + 4..at + 6, "the offset's minutes")?;
            if hours > 23 || minutes > 59 {
                return Err(format!("offset {hours:02}:{minutes:02} is out of range"));
            }
            let secs = hours * 3600 + minutes * 60;
            if sign == b'+' { secs } else { -secs }
        }
        _ => return Err(format!("expected Z or an offset +HH:MM / -HH:MM at character {}", at + 1)),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let since_epoch = Duration::new(secs.unsigned_abs(), 0);
    Ok(if secs >= 0 {
        UNIX_EPOCH + since_epoch + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - since_epoch + Duration::from_nanos(nanos as u64)
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i128 {
        match parse_rfc3339(s).unwrap().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        }
    }

    #[test]
    fn rfc3339_times_parse_to_unix_ms() {
        // `date -u -d 2026-11-28T01:02:03Z +%s` = 1795827723.
        assert_eq!(ms("2026-11-28T01:02:03Z"), 1_795_827_723_000);
        assert_eq!(ms("2026-11-28t01:02:03z"), 1_795_827_723_000);
        assert_eq!(ms("2026-11-28 01:02:03Z"), 1_795_827_723_000);
        assert_eq!(ms("2026-11-28T09:02:03+08:00"), 1_795_827_723_000);
        assert_eq!(ms("2026-11-27T20:32:03-04:30"), 1_795_827_723_000);
        assert_eq!(ms("2026-11-28T01:02:03.5Z"), 1_795_827_723_500);
        assert_eq!(ms("2026-11-28T01:02:03.123456789999Z"), 1_795_827_723_123);
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1969-12-31T23:59:59.250Z"), -750);
        assert_eq!(ms("2000-02-29T00:00:00Z"), 951_782_400_000);
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn malformed_times_are_refused_with_a_reason() {
        for bad in [
            "2026-11-28",
            "2026-11-28T01:02:03",
            "2026-11-28T01:02Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T01:02:03.Z",
            "2026-11-28T01:02:03+0800",
            "2026-11-28T01:02:03+08:00x",
            "2026-11-28T01:02:03ZZ",
            "26-11-28T01:02:03Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reset_targets_parse() {
        assert_eq!(parse_reset_to("earliest"), Ok(ResetTo::Earliest));
        assert_eq!(parse_reset_to("latest"), Ok(ResetTo::Latest));
        assert_eq!(parse_reset_to("42"), Ok(ResetTo::Offset(42)));
        assert_eq!(parse_reset_to("@1500"), Ok(ResetTo::Time(UNIX_EPOCH + Duration::from_millis(1500))));
        assert_eq!(
            parse_reset_to("2026-11-28T01:02:03Z"),
            Ok(ResetTo::Time(UNIX_EPOCH + Duration::from_secs(1_795_827_723)))
        );
        for bad in ["", "first", "-1", "@", "@-5", "@soon", "99999999999999999999999", "2026-11-28"] {
            assert!(parse_reset_to(bad).is_err(), "{bad:?}");
        }
    }
}

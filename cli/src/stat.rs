//! `durq stat`: a queue's partitions and groups, as a table or JSON.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use durq::Queue;
use durq::stat::QueueStat;

use crate::{CliResult, stream_error};

/// Show each partition's first and next offset, segments and bytes, and
/// each consumer group's committed offset and lag per partition.
#[derive(clap::Args)]
pub struct Args {
    /// Queue directory; must already hold a queue.
    dir: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CliResult<()> {
    let queue = Queue::open_existing(&args.dir)?;
    let stat = queue.stat()?;
    let text = if args.json { to_json(queue.path(), &stat) } else { to_tables(queue.path(), &stat) };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}

fn to_tables(path: &Path, stat: &QueueStat) -> String {
    let c = &stat.config;
    let mut text = format!(
        "queue {}: {} partition(s), durability {}, segment_bytes {}, record_bytes_max {}\n\n",
        path.display(),
        c.partitions,
        c.durability,
        c.segment_bytes,
        c.record_bytes_max
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
    text += &table(["PARTITION", "FIRST", "NEXT", "SEGMENTS", "BYTES"], partitions);
    text.push('\n');
    if stat.groups.is_empty() {
        text += "no consumer groups\n";
        return text;
    }
    let groups = stat.groups.iter().flat_map(|g| {
        (0..g.committed.len())
            .map(move |p| [g.name.clone(), p.to_string(), g.committed[p].to_string(), g.lag[p].to_string()])
    });
    text += &table(["GROUP", "PARTITION", "COMMITTED", "LAG"], groups);
    text
}

/// Columns padded to their widest cell: the first left-aligned (names), the
/// rest right-aligned (numbers).
fn table<const N: usize>(header: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = std::iter::once(header.map(String::from)).chain(rows).collect();
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            // Writing to a String cannot fail.
            let _ = match i {
                0 => write!(text, "{cell:<w$}"),
                _ => write!(text, "  {cell:>w$}"),
            };
        }
        text.push('\n');
    }
    text
}

fn to_json(path: &Path, stat: &QueueStat) -> String {
    let c = &stat.config;
    let partitions: Vec<String> = stat
        .partitions
        .iter()
        .map(|p| {
            format!(
                r#"{{"partition":{},"first_offset":{},"next_offset":{},"segments":{},"bytes":{}}}"#,
                p.partition, p.first_offset, p.next_offset, p.segments, p.bytes
            )
        })
        .collect();
    let groups: Vec<String> = stat
        .groups
        .iter()
        .map(|g| {
            format!(
                r#"{{"name":{},"committed":[{}],"lag":[{}]}}"#,
                json_string(&g.name),
                join_numbers(&g.committed),
                join_numbers(&g.lag)
            )
        })
        .collect();
    format!(
        r#"{{"path":{},"durability":{},"segment_bytes":{},"record_bytes_max":{},"partitions":[{}],"groups":[{}]}}"#,
        json_string(&path.to_string_lossy()),
        json_string(&c.durability.to_string()),
        c.segment_bytes,
        c.record_bytes_max,
        partitions.join(","),
        groups.join(",")
    ) + "\n"
}

fn join_numbers(numbers: &[u64]) -> String {
    numbers.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// `s` as a JSON string literal (RFC 8259 escapes).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn table_columns_line_up() {
        let rows = [["g".to_string(), "10".to_string()], ["long-name".to_string(), "7".to_string()]];
        let text = table(["GROUP", "LAG"], rows.into_iter());
        assert_eq!(text, "GROUP      LAG\ng           10\nlong-name    7\n");
    }
}

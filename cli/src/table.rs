//! Plain-text tables, for `durq stat` and its `--watch` frames.

use std::fmt::Write as _;

#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell and separated by two spaces; no
/// trailing spaces.
pub fn table<const N: usize>(header: [&str; N], align: [Align; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = std::iter::once(header.map(String::from)).chain(rows).collect();
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                line.push_str("  ");
            }
            // Writing to a String cannot fail.
            let _ = match align[i] {
                Align::Left => write!(line, "{cell:<w$}"),
                Align::Right => write!(line, "{cell:>w$}"),
            };
        }
        text += line.trim_end();
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn table_columns_line_up() {
        let rows = [["g".to_string(), "10".to_string()], ["long-name".to_string(), "7".to_string()]];
        let text = table(["GROUP", "LAG"], [Align::Left, Align::Right], rows.into_iter());
        assert_eq!(text, "GROUP      LAG\ng           10\nlong-name    7\n");
        let rows = [["1".to_string(), "x".to_string()], ["22".to_string(), "yyy".to_string()]];
        let text = table(["N", "TEXT"], [Align::Right, Align::Left], rows.into_iter());
        assert_eq!(text, " N  TEXT\n 1  x\n22  yyy\n", "no trailing spaces");
    }
}

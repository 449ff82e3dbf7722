//! JSON text, written by hand: the command prints a few flat objects, and
//! one escaping function is less to trust than a serializer dependency.

use std::fmt::Write as _;

/// `s` as a JSON string literal (RFC 8259 escapes): also a quoted text that
/// holds no line break.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters, and the Unicode line and paragraph
            // separators some tools break lines at.
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
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
        assert_eq!(json_string("a\"b\\c\nd\u{1}é\u{7f}\u{2028}"), r#""a\"b\\c\nd\u0001é\u007f\u2028""#);
    }
}

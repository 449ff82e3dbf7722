//! One record as one line of output, for `tail` and `consume`: its payload
//! as it is (`text`), or a JSON object (`json`).

use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::json::json_string;

/// How records are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The payload as it is, followed by a newline.
    Text,
    /// One JSON object per line: `partition`, `offset`, `timestamp_ms`
    /// (`deliveries` for `consume`), `key` and `payload`, each text with
    /// `key_encoding` / `payload_encoding` `"utf8"` (a JSON string) or
    /// `"base64"` (bytes that are not UTF-8).
    Json,
}

/// What is printed of one record.
pub struct RecordLine<'a> {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: u64,
    /// How many times the group delivered it (`consume` only).
    pub deliveries: Option<u32>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl RecordLine<'_> {
    /// Writes the record and its newline in `format`.
    pub fn write(&self, out: &mut impl Write, format: Format) -> io::Result<()> {
        match format {
            Format::Text => {
                out.write_all(self.payload)?;
                out.write_all(b"\n")
            }
            Format::Json => writeln!(out, "{}", self.json()),
        }
    }

    /// `{"partition":P,"offset":O,"timestamp_ms":T[,"deliveries":D],"key":…,
    /// "key_encoding":…,"payload":…,"payload_encoding":…}`; `key` and
    /// `key_encoding` are null for a record without a key.
    fn json(&self) -> String {
        let deliveries = self.deliveries.map_or(String::new(), |d| format!(r#","deliveries":{d}"#));
        let (key, key_encoding) = match self.key {
            Some(key) => bytes_json(key),
            None => ("null".into(), "null"),
        };
        let (payload, payload_encoding) = bytes_json(self.payload);
        format!(
            r#"{{"partition":{},"offset":{},"timestamp_ms":{}{deliveries},"key":{key},"key_encoding":{key_encoding},"payload":{payload},"payload_encoding":{payload_encoding}}}"#,
            self.partition, self.offset, self.timestamp_ms
        )
    }
}

/// Bytes as a JSON string and the name of its encoding (quoted): the text
/// itself if it is UTF-8, else base64, so no byte is lost or replaced.
fn bytes_json(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (json_string(text), r#""utf8""#),
        Err(_) => (format!("\"{}\"", BASE64.encode(bytes)), r#""base64""#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(record: &RecordLine<'_>, format: Format) -> String {
        String::from_utf8(bytes(record, format)).unwrap()
    }

    fn bytes(record: &RecordLine<'_>, format: Format) -> Vec<u8> {
        let mut out = Vec::new();
        record.write(&mut out, format).unwrap();
        out
    }

    #[test]
    fn json_lines_keep_every_byte() {
        let utf8 = RecordLine {
            partition: 1,
            offset: 7,
            timestamp_ms: 1500,
            deliveries: None,
            key: None,
            payload: "é \"q\"\n".as_bytes(),
        };
        assert_eq!(
            line(&utf8, Format::Json),
            "{\"partition\":1,\"offset\":7,\"timestamp_ms\":1500,\"key\":null,\"key_encoding\":null,\
             \"payload\":\"é \\\"q\\\"\\n\",\"payload_encoding\":\"utf8\"}\n"
        );
        let binary = RecordLine { deliveries: Some(3), key: Some(b"k"), payload: b"\xff\x00a", ..utf8 };
        assert_eq!(
            line(&binary, Format::Json),
            "{\"partition\":1,\"offset\":7,\"timestamp_ms\":1500,\"deliveries\":3,\"key\":\"k\",\
             \"key_encoding\":\"utf8\",\"payload\":\"/wBh\",\"payload_encoding\":\"base64\"}\n"
        );
        assert_eq!(bytes(&binary, Format::Text), b"\xff\x00a\n", "text is the payload as it is");
    }
}

//! A durq record as a JetStream message (pure: no I/O): the stream and
//! subject of its partition, its headers, and how a stream sequence is a
//! durq offset.
//!
//! | durq | JetStream |
//! |---|---|
//! | queue `Q`, partition `p` | stream `DURQ_Q_P0000` + `p` (four digits), subject `durq.Q.p` |
//! | offset | stream sequence − 1 (sequences start at 1, offsets at 0) |
//! | payload | the message's payload, byte for byte |
//! | key | header `Durq-Key`, percent-encoded (below); absent for an unkeyed record |
//! | the producer's retry identity | header `Nats-Msg-Id`: `<producer id>-<n>` |
//!
//! **Keys in a header.** A header value is text without CR or LF, and
//! parsers trim its ends, while a durq key is any bytes. The key is written
//! with every byte outside `!`..=`~`, and `%` itself, as `%XX` (upper-case
//! hex): a printable ASCII key reads as itself, any other byte costs three.

use std::fmt::Write;

/// The header that carries a record's key.
pub const KEY_HEADER: &str = "Durq-Key";

/// The stream that holds partition `partition` of queue `queue`.
pub fn stream_name(queue: &str, partition: u32) -> String {
    format!("DURQ_{queue}_P{partition:04}")
}

/// The one subject of that stream.
pub fn subject(queue: &str, partition: u32) -> String {
    format!("durq.{queue}.{partition}")
}

/// The durq offset of the record stored at stream sequence `sequence`.
///
/// # Panics
/// If `sequence` is 0: JetStream never acknowledges a store at sequence 0,
/// so a 0 here is a bug in the caller's reading of the acknowledgement.
pub fn offset_of_sequence(sequence: u64) -> u64 {
    assert!(sequence >= 1, "stream sequence 0 is never a stored message");
    sequence - 1
}

/// The stream sequence that holds the record at durq offset `offset`.
pub fn sequence_of_offset(offset: u64) -> u64 {
    offset + 1
}

/// The `Nats-Msg-Id` of a producer's `n`th record.
pub fn message_id(producer: &str, n: u64) -> String {
    format!("{producer}-{n}")
}

/// The header value for `key`.
pub fn encode_key(key: &[u8]) -> String {
    let mut text = String::with_capacity(key.len());
    for &byte in key {
        if (b'!'..=b'~').contains(&byte) && byte != b'%' {
            text.push(char::from(byte));
        } else {
            write!(text, "%{byte:02X}").expect("writing to a String");
        }
    }
    text
}

/// The key a header value encodes, or `None` if it is not what
/// [`encode_key`] writes.
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
                return None;
            }
            key.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if (b'!'..=b'~').contains(&bytes[i]) {
            key.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_offsets_are_as_documented() {
        assert_eq!(stream_name("orders", 7), "DURQ_orders_P0007");
        assert_eq!(stream_name("orders", 1023), "DURQ_orders_P1023");
        assert_eq!(subject("orders", 7), "durq.orders.7");
        assert_eq!(offset_of_sequence(1), 0);
        assert_eq!(sequence_of_offset(offset_of_sequence(7)), 7);
        assert_eq!(message_id("AbC", 41), "AbC-41");
    }

    #[test]
    fn printable_keys_read_as_themselves_and_any_key_round_trips() {
        assert_eq!(encode_key(b"user:7"), "user:7");
        assert_eq!(encode_key(b"a b%\r\n\xff"), "a%20b%25%0D%0A%FF");
        let every_byte: Vec<u8> = (0..=255).collect();
        for key in [&b""[..], b"user-7", b" lead and trail ", &every_byte] {
            let text = encode_key(key);
            assert!(text.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{text:?}");
            assert_eq!(decode_key(&text).as_deref(), Some(key));
        }
    }

    #[test]
    fn what_encode_never_writes_does_not_decode() {
        for bad in ["%", "%4", "%4g", "%4a", "a b", "é"] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
    }
}

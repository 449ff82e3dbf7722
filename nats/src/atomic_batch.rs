//! JetStream's atomic batch publish (nats-server 2.12, ADR-50) as durq's
//! producer speaks it (pure: no I/O): the headers of a batch's records, the
//! server's limits, and what its replies mean.
//!
//! A batch is the records themselves, each carrying `Nats-Batch-Id` (one id
//! per attempt, at most [`BATCH_ID_BYTES_MAX`]) and `Nats-Batch-Sequence`
//! (1, 2, …), the last one also `Nats-Batch-Commit: 1`. The first is sent
//! as a request, answered with an empty message once the server holds the
//! batch open; the middle ones without a reply subject; the last as a
//! request, answered with a publish acknowledgement of the **last** record
//! (`seq`) and the batch's size (`count`): the records are stored together
//! at `seq - count + 1 ..= seq`, or none of them is. The stream must allow
//! it (`allow_atomic`, set by `queue.rs` on 2.12 servers).
//!
//! What the server checks at the commit, measured on 2.12.8 (and 2.12.1):
//!
//! | reply | `err_code` | what it means for the batch |
//! |---|---|---|
//! | acknowledgement | | stored, contiguous |
//! | duplicate message id | 10201 | a record's `Nats-Msg-Id` is in the duplicate window: **nothing stored** by this attempt (a batch is not acknowledged as a duplicate, unlike a single publish) |
//! | incomplete | 10176 | a record was lost on the way, the batch was abandoned (10 s without traffic), or the stream has 50 batches open: nothing stored, a new attempt may succeed |
//! | too large | 10199 | more records than the server's `jetstream.limits.batch.max_msgs` (1,000 by default): nothing stored |
//! | any other refusal | | nothing stored |
//!
//! 2.12.0 refused `Nats-Msg-Id` in a batch altogether (10177, "unsupported
//! header"), hence [`crate::version::ATOMIC_BATCH_SINCE`] is 2.12.1.

use async_nats::HeaderMap;

/// The records of one batch the server accepts by default (its
/// `jetstream.limits.batch.max_msgs`; a client cannot read the setting).
pub const BATCH_RECORDS_MAX: usize = 1000;

/// The longest `Nats-Batch-Id` the server accepts.
pub const BATCH_ID_BYTES_MAX: usize = 64;

/// The header naming the batch a record belongs to.
pub const BATCH_ID_HEADER: &str = "Nats-Batch-Id";
/// The header numbering a record within its batch, from 1.
pub const BATCH_SEQUENCE_HEADER: &str = "Nats-Batch-Sequence";
/// The header on the last record: store the batch.
pub const BATCH_COMMIT_HEADER: &str = "Nats-Batch-Commit";

/// A record's `Nats-Msg-Id` is already in the stream's duplicate window.
pub const ERR_DUPLICATE_MESSAGE_ID: u64 = 10201;
/// The batch is incomplete or was abandoned; also the refusal of a batch
/// past the stream's limit of open batches.
pub const ERR_INCOMPLETE: u64 = 10176;
/// More records than the server's limit on a batch.
pub const ERR_TOO_LARGE: u64 = 10199;

/// Adds the batch headers of record `sequence` (from 1) of batch `id` to
/// the record's own headers; `commit` on the last one.
pub fn add_headers(headers: &mut HeaderMap, id: &str, sequence: usize, commit: bool) {
    assert!(
        sequence >= 1 && id.len() <= BATCH_ID_BYTES_MAX,
        "batch sequence {sequence} (from 1), id of {} bytes (max {BATCH_ID_BYTES_MAX})",
        id.len()
    );
    headers.insert(BATCH_ID_HEADER, id);
    headers.insert(BATCH_SEQUENCE_HEADER, sequence.to_string().as_str());
    if commit {
        headers.insert(BATCH_COMMIT_HEADER, "1");
    }
}

/// The server's answer to a request within a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The first record was taken: the batch is open.
    Started,
    /// The batch is stored; its last record at stream sequence
    /// `last_sequence`.
    Committed { stream: String, last_sequence: u64, count: u64 },
    /// The server refused the batch: nothing of it is stored.
    Refused { code: u64, description: String },
}

impl Reply {
    /// Reads a reply's payload; `Err` with the reason if it is none of the
    /// three.
    pub fn parse(payload: &[u8]) -> Result<Reply, String> {
        if payload.is_empty() {
            return Ok(Reply::Started);
        }
        let text = String::from_utf8_lossy(payload);
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
        if let Some(error) = value.get("error") {
            let code = error.get("err_code").and_then(serde_json::Value::as_u64);
            let description = error.get("description").and_then(serde_json::Value::as_str);
            return match (code, description) {
                (Some(code), Some(description)) => Ok(Reply::Refused { code, description: description.to_owned() }),
                _ => Err(format!("an error without err_code and description: {text}")),
            };
        }
        let stream = value.get("stream").and_then(serde_json::Value::as_str);
        let last_sequence = value.get("seq").and_then(serde_json::Value::as_u64);
        let count = value.get("count").and_then(serde_json::Value::as_u64);
        match (stream, last_sequence, count) {
            (Some(stream), Some(last_sequence), Some(count)) if count >= 1 && last_sequence >= count => {
                Ok(Reply::Committed { stream: stream.to_owned(), last_sequence, count })
            }
            _ => Err(format!("not a batch acknowledgement (stream, seq >= count >= 1): {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_the_server_sends_them() {
        // Payloads as nats-server 2.12.8 sent them.
        assert_eq!(Reply::parse(b""), Ok(Reply::Started));
        assert_eq!(
            Reply::parse(br#"{"stream":"T","seq":5,"batch":"b2","count":3}"#),
            Ok(Reply::Committed { stream: "T".into(), last_sequence: 5, count: 3 })
        );
        let duplicate = br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"},"stream":"T","seq":0}"#;
        assert!(
            matches!(Reply::parse(duplicate), Ok(Reply::Refused { code: ERR_DUPLICATE_MESSAGE_ID, ref description }) if description.contains("duplicate"))
        );
        let too_large = br#"{"error":{"code":400,"err_code":10199,"description":"atomic publish batch is too large: 1000"},"stream":"T","seq":0}"#;
        assert!(matches!(Reply::parse(too_large), Ok(Reply::Refused { code: ERR_TOO_LARGE, .. })));
    }

    #[test]
    fn what_is_not_a_batch_reply_is_an_error_not_a_guess() {
        for bad in [
            &b"nope"[..],
            br#"{"stream":"T","seq":5}"#,           // a single publish's acknowledgement
            br#"{"stream":"T","seq":2,"count":3}"#, // more records than sequences
            br#"{"stream":"T","seq":0,"count":0}"#, // nothing stored
            br#"{"error":{"code":400},"stream":"T","seq":0}"#, // no err_code
        ] {
            assert!(Reply::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn headers_number_the_records_and_mark_the_last() {
        let mut headers = HeaderMap::new();
        add_headers(&mut headers, "b", 1, false);
        assert_eq!(headers.get(BATCH_SEQUENCE_HEADER).map(|v| v.as_str()), Some("1"));
        assert!(headers.get(BATCH_COMMIT_HEADER).is_none());
        let mut headers = HeaderMap::new();
        add_headers(&mut headers, "b", 7, true);
        assert_eq!(headers.get(BATCH_ID_HEADER).map(|v| v.as_str()), Some("b"));
        assert_eq!(headers.get(BATCH_COMMIT_HEADER).map(|v| v.as_str()), Some("1"));
    }
}

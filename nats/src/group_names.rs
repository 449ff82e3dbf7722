//! Where a consumer group of a NATS queue keeps its state: the one place
//! that names its bucket and keys (pure: no I/O). The consumer, the group
//! administration, `stat` and migration all name them through here.
//!
//! | durq | JetStream |
//! |---|---|
//! | group `G` of queue `Q` | key-value bucket `DURQ_Q_G_G` (its stream: `KV_DURQ_Q_G_G`) |
//! | the group's slot of partition `p` | key `p<partition>` (`p0`, `p1`, …) |
//! | the group's delivery marks (memory storage) | key-value bucket `DURM_Q_G_G`, one key per slot, named as the slot |
//! | a live member `M` (hex id) | key `m-M`, its lease timeout (`membership.rs`) |
//!
//! A bucket name is one subject token of at most 64 bytes
//! ([`crate::NAME_BYTES_MAX`]), so a queue and group whose names are long
//! together are refused by [`group_bucket`].
//! Names may contain `_`, so a bucket name alone does not always say which
//! queue it belongs to (queue `a_G_b`, group `c` and queue `a`, group
//! `b_G_c` share one); [`group_of_bucket`] reads it as the shorter queue's.

use crate::error::{Error, Result};

/// The longest bucket or slot name.
pub const NAME_BYTES_MAX: usize = 64;

/// What starts the key of a member.
pub const MEMBER_KEY_PREFIX: &str = "m-";

/// The key-value bucket of group `group` of queue `queue`.
///
/// # Errors
/// [`durq::Error::InvalidGroupName`] for a name NATS cannot carry (ASCII
/// letters, digits, `-`, `_`), or one too long to fit a bucket name with the
/// queue's.
pub fn group_bucket(queue: &str, group: &str) -> durq::Result<String> {
    let invalid = |reason| durq::Error::InvalidGroupName { name: group.to_owned(), reason };
    if validate_name("group", group).is_err() {
        return Err(invalid("on NATS only ASCII letters, digits, '-' and '_', 1 to 64 bytes"));
    }
    let bucket = format!("{}{group}", bucket_prefix(queue));
    if bucket.len() > NAME_BYTES_MAX {
        return Err(invalid("the queue's and the group's names together must be at most 56 bytes on NATS"));
    }
    Ok(bucket)
}

/// The key-value bucket of the delivery marks of the slots in bucket
/// `bucket`: for a group's bucket (as [`group_bucket`] names it) the same
/// name with `DURM_` for `DURQ_`, so every group that has a bucket name has
/// a marks bucket name, and no reading of a group's bucket name
/// ([`group_of_bucket`]) takes it for a group; for any other bucket (tests,
/// tools), `DURM_` before its name.
///
/// # Errors
/// [`Error::InvalidName`] if that name is too long.
pub fn marks_bucket(bucket: &str) -> Result<String> {
    let marks = match bucket.strip_prefix("DURQ_") {
        Some(rest) => format!("DURM_{rest}"),
        None => format!("DURM_{bucket}"),
    };
    validate_name("marks bucket", &marks)?;
    Ok(marks)
}

/// The key of the group's slot of partition `partition`.
pub fn slot_key(partition: u32) -> String {
    format!("p{partition}")
}

/// The key of the member whose id (as slots name it) is `holder`.
pub fn member_key(holder: &str) -> String {
    format!("{MEMBER_KEY_PREFIX}{holder}")
}

/// The group whose bucket's stream is `stream`, if it is one of queue
/// `queue`'s (a key-value bucket `B` is stored as stream `KV_B`).
pub fn group_of_stream<'a>(queue: &str, stream: &'a str) -> Option<&'a str> {
    group_of_bucket(queue, stream.strip_prefix("KV_")?)
}

/// The group whose bucket is `bucket`, if it is one of queue `queue`'s.
pub fn group_of_bucket<'a>(queue: &str, bucket: &'a str) -> Option<&'a str> {
    bucket.strip_prefix(&bucket_prefix(queue)).filter(|group| !group.is_empty())
}

fn bucket_prefix(queue: &str) -> String {
    format!("DURQ_{queue}_G_")
}

/// Bucket and slot names: one NATS subject token of letters, digits, `-`
/// and `_` (what both a bucket and a key accept), so a name never splits
/// into subject levels or matches a wildcard.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > NAME_BYTES_MAX {
        Some("longer than 64 bytes")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Some("only ASCII letters, digits, '-' and '_' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { what, name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_documented_and_read_back() {
        assert_eq!(group_bucket("orders", "billing").unwrap(), "DURQ_orders_G_billing");
        assert_eq!(slot_key(7), "p7");
        assert_eq!(marks_bucket("DURQ_orders_G_billing").unwrap(), "DURM_orders_G_billing");
        assert_eq!(marks_bucket("group").unwrap(), "DURM_group");
        assert!(marks_bucket(&"g".repeat(NAME_BYTES_MAX)).is_err(), "DURM_ and 64 bytes do not fit");
        assert_eq!(group_of_stream("orders", "KV_DURM_orders_G_billing"), None, "a marks bucket is no group");
        assert_eq!(member_key("00ff"), "m-00ff");
        assert_eq!(group_of_stream("orders", "KV_DURQ_orders_G_billing"), Some("billing"));
        assert_eq!(group_of_stream("orders", "DURQ_orders_P0000"), None, "a partition's stream");
        assert_eq!(group_of_stream("orders", "KV_DURQ_orders_G_"), None);
        assert_eq!(group_of_stream("orders", "KV_DURQ_other_G_billing"), None);
        assert_eq!(group_of_stream("orders", "KV_DURQ_QUEUES"), None);
    }

    #[test]
    fn group_names_must_fit_a_bucket_name() {
        assert!(matches!(group_bucket("orders", "a.b"), Err(durq::Error::InvalidGroupName { .. })));
        assert!(matches!(group_bucket(&"q".repeat(40), &"g".repeat(20)), Err(durq::Error::InvalidGroupName { .. })));
    }

    #[test]
    fn names_are_one_subject_token() {
        for good in ["p0", "group-1_a", &"x".repeat(NAME_BYTES_MAX)] {
            assert!(validate_name("slot", good).is_ok(), "{good:?}");
        }
        for bad in ["", "a.b", "a*", "a>", "a b", "é", &"x".repeat(NAME_BYTES_MAX + 1)] {
            let err = validate_name("slot", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { what: "slot", .. }), "{bad:?}: {err:?}");
        }
    }
}

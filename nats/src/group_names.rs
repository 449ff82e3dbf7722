//! Where a consumer group of a NATS queue keeps its state: the one place
//! that names its bucket and keys (pure: no I/O). The consumer, the group
//! administration, `stat` and migration all name them through here.
//!
//! | durq | JetStream |
//! |---|---|
//! | group `G` of queue `Q` | key-value bucket `DURQ_Q_G_G` (its stream: `KV_DURQ_Q_G_G`) |
//! | the group's slot of partition `p` | key `p<partition>` (`p0`, `p1`, …) |
//! | a live member `M` (hex id) | key `m-M`, its lease timeout (`membership.rs`) |
//!
//! A bucket name is one subject token of at most 64 bytes
//! ([`crate::NAME_BYTES_MAX`]), so a queue and group whose names are long
//! together are refused by [`group_bucket`].
//! Names may contain `_`, so a bucket name alone does not always say which
//! queue it belongs to (queue `a_G_b`, group `c` and queue `a`, group
//! `b_G_c` share one); [`group_of_bucket`] reads it as the shorter queue's.

use crate::slot::{NAME_BYTES_MAX, validate_name};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_documented_and_read_back() {
        assert_eq!(group_bucket("orders", "billing").unwrap(), "DURQ_orders_G_billing");
        assert_eq!(slot_key(7), "p7");
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
}

//! Where a consumer group of a NATS queue keeps its slots (pure: no I/O).
//!
//! | durq | JetStream |
//! |---|---|
//! | group `G` of queue `Q` | key-value bucket `DURQ_Q_G_G` (its stream: `KV_DURQ_Q_G_G`) |
//! | the group's slot of partition `p` | key `p<partition>` (`p0`, `p1`, …) |
//!
//! A bucket name is one subject token of at most 64 bytes
//! ([`crate::NAME_BYTES_MAX`]), so a queue and group whose names are long
//! together are refused by [`crate::Slots::open`] as an invalid bucket.
//! Names may contain `_`, so a bucket name alone does not always say which
//! queue it belongs to (queue `a_G_b`, group `c` and queue `a`, group
//! `b_G_c` share one); [`group_of_bucket`] reads it as the shorter queue's.

/// The key-value bucket of group `group` of queue `queue`.
pub fn group_bucket(queue: &str, group: &str) -> String {
    format!("{}{group}", bucket_prefix(queue))
}

/// The key of the group's slot of partition `partition`.
pub fn slot_key(partition: u32) -> String {
    format!("p{partition}")
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
        assert_eq!(group_bucket("orders", "billing"), "DURQ_orders_G_billing");
        assert_eq!(slot_key(7), "p7");
        assert_eq!(group_of_stream("orders", "KV_DURQ_orders_G_billing"), Some("billing"));
        assert_eq!(group_of_stream("orders", "DURQ_orders_P0000"), None, "a partition's stream");
        assert_eq!(group_of_stream("orders", "KV_DURQ_orders_G_"), None);
        assert_eq!(group_of_stream("orders", "KV_DURQ_other_G_billing"), None);
        assert_eq!(group_of_stream("orders", "KV_DURQ_QUEUES"), None);
    }
}

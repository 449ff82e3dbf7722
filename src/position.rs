//! Where a record is stored: the one name for a place in a queue's log,
//! shared by producers, consumers and dead letters.

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The record's offset within the partition.
    pub offset: u64,
}

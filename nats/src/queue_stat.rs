//! What a NATS queue holds: each partition's offsets, and each consumer
//! group's slots (checkpoint, holder, epoch) and members (lease, age,
//! liveness: `member_stat.rs`), found without changing anything
//! (`durq stat nats://…`).
//!
//! The groups are the key-value buckets named after the queue
//! (`group_names.rs`). Each number is read once, in turn: while producers
//! and consumers run, the snapshot is not atomic.

use futures_util::TryStreamExt;

use crate::error::Error;
use crate::group_names::{group_bucket, group_of_stream, slot_key};
use crate::member_stat::{MemberStat, members};
use crate::queue::Queue;
use crate::record;
use crate::shared::Shared;
use crate::slot::{SlotState, SlotsView};

/// A snapshot of a NATS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStat {
    /// One entry per partition.
    pub partitions: Vec<PartitionStat>,
    /// One entry per consumer group, by name.
    pub groups: Vec<GroupStat>,
}

/// A snapshot of one partition's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStat {
    /// The partition's number.
    pub partition: u32,
    /// The stream's name.
    pub stream: String,
    /// Earliest offset the stream holds.
    pub first_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Bytes the stream stores.
    pub bytes: u64,
}

/// A snapshot of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStat {
    /// The group's name.
    pub name: String,
    /// Its key-value bucket.
    pub bucket: String,
    /// One entry per partition: the slot as read, or `None` if it was never
    /// written (its checkpoint is then 0).
    pub slots: Vec<Option<SlotState>>,
    /// One entry per member key, by id: the members alive, those whose
    /// lease lapsed, and those that left.
    pub members: Vec<MemberStat>,
}

impl GroupStat {
    /// The committed offset (next to process) per partition.
    pub fn committed(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.as_ref().map_or(0, SlotState::checkpoint)).collect()
    }

    /// The partitions whose slot names `member` as its holder.
    pub fn held_by(&self, member: &str) -> Vec<u32> {
        let held = |s: &Option<SlotState>| s.as_ref().and_then(SlotState::holder) == Some(member);
        (0..).zip(&self.slots).filter(|(_, s)| held(s)).map(|(p, _)| p).collect()
    }
}

impl Queue {
    /// A snapshot of the queue's partitions and groups.
    ///
    /// # Errors
    /// [`durq::Error::Engine`] with a failed request, or a slot or member
    /// key that does not decode ([`Error::CorruptSlot`]).
    pub fn stat(&self) -> durq::Result<QueueStat> {
        let shared = self.shared.clone();
        self.shared.block_on(async move { stat(&shared).await })
    }
}

async fn stat(shared: &Shared) -> durq::Result<QueueStat> {
    let (queue, jetstream) = (&shared.url.name, shared.client.jetstream());
    let mut partitions = Vec::new();
    for partition in 0..shared.meta.partitions {
        let stream = record::stream_name(queue, partition);
        let info = jetstream
            .get_stream(&stream)
            .await
            .map_err(|e| Error::engine(format!("look up stream {stream} of queue {}", shared.url), e))?
            .cached_info()
            .state
            .clone();
        // An empty stream's first sequence is the one its next record gets.
        let next_offset = info.last_sequence;
        let first_offset = record::offset_of_sequence(info.first_sequence.max(1)).min(next_offset);
        partitions.push(PartitionStat { partition, stream, first_offset, next_offset, bytes: info.bytes });
    }
    let mut names: Vec<String> = Vec::new();
    let mut streams = jetstream.stream_names();
    while let Some(stream) =
        streams.try_next().await.map_err(|e| Error::engine(format!("list the streams of queue {}", shared.url), e))?
    {
        names.extend(group_of_stream(queue, &stream).map(str::to_owned));
    }
    names.sort();
    let mut groups = Vec::new();
    for name in names {
        let bucket = group_bucket(queue, &name)?;
        let slots = SlotsView::open(&shared.client, &bucket).await?;
        let mut states = Vec::new();
        for partition in 0..shared.meta.partitions {
            states.push(slots.read(&slot_key(partition)).await?);
        }
        let members = members(jetstream, &slots).await?;
        groups.push(GroupStat { name, bucket, slots: states, members });
    }
    Ok(QueueStat { partitions, groups })
}

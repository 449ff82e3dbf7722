//! [`Batch`]: the records `Consumer::process_async` hands to the caller's
//! future, owned, so that the future can be `'static` and move between
//! threads.

use crate::consumer::Message;
use crate::log::partition::Span;

/// The records of one delivery, in offset order, from one partition, owned
/// by the future that processes them ([`Consumer::process_async`]);
/// `Send + Sync`, so it can move into another task. The messages borrow the
/// payloads from the segment's mapping, which the batch keeps mapped:
/// nothing is copied.
///
/// [`Consumer::process_async`]: crate::Consumer::process_async
pub struct Batch {
    /// Borrow from the bytes `_keeper` keeps alive (see [`Batch::new`] and
    /// [`Batch::from_records`]); handed out only for as long as the batch
    /// is borrowed.
    messages: Vec<Message<'static>>,
    _keeper: Keeper,
}

/// What keeps the bytes a batch's messages borrow where they are.
enum Keeper {
    /// The segment's mapping, kept mapped by a clone of the span.
    Mapping { _span: Span },
    /// Heap buffers of another backend's records: a boxed slice's bytes stay
    /// where they are when the box moves.
    Heap { _buffers: Vec<Box<[u8]>> },
}

/// One record of another backend (durq-nats), owned, for
/// [`Batch::from_records`]. Not part of the API.
#[doc(hidden)]
pub struct OwnedRecord {
    /// Where the record is stored.
    pub position: crate::Position,
    /// When it was appended, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its deliveries, this one included.
    pub delivery_count: u32,
    /// Its key, if it has one.
    pub key: Option<Box<[u8]>>,
    /// Its payload.
    pub payload: Box<[u8]>,
}

// The docs promise a batch that can be moved into another task.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Batch>();
};

impl Batch {
    /// The batch of `messages`, which borrow from `span`.
    pub(crate) fn new<'s>(span: &'s Span, messages: Vec<Message<'s>>) -> Batch {
        let messages = messages
            .into_iter()
            // SAFETY: every borrow in a message made from `span` lies in its
            // segment's mapping (`Span::bytes`), which stays mapped, at the
            // same address and unchanged (mmap contract rules 1 and 2), for
            // as long as any clone of the span holds the segment: the batch
            // keeps one. The `'static` never escapes: `iter` hands messages
            // out with the lifetime of a borrow of the batch.
            .map(|m| unsafe { std::mem::transmute::<Message<'s>, Message<'static>>(m) })
            .collect();
        Batch { messages, _keeper: Keeper::Mapping { _span: span.clone() } }
    }

    /// A batch of another backend's records (durq-nats), which it owns. Not
    /// part of the API.
    #[doc(hidden)]
    pub fn from_records(records: Vec<OwnedRecord>) -> Batch {
        let mut buffers = Vec::with_capacity(records.len() * 2);
        let mut messages = Vec::with_capacity(records.len());
        for record in records {
            let key: Option<&[u8]> = record.key.as_deref();
            let message =
                Message::from_parts(record.position, record.timestamp_ms, record.delivery_count, key, &record.payload);
            // SAFETY: the message borrows the heap bytes of `record.key` and
            // `record.payload`. Those boxes move into `buffers` below and
            // then into the batch, which never touches them again until it
            // drops them with its messages; moving a `Box<[u8]>` does not
            // move its heap allocation, so the borrows stay valid for the
            // batch's life. The `'static` never escapes: `iter` hands
            // messages out with the lifetime of a borrow of the batch.
            messages.push(unsafe { std::mem::transmute::<Message<'_>, Message<'static>>(message) });
            buffers.extend(record.key);
            buffers.push(record.payload);
        }
        Batch { messages, _keeper: Keeper::Heap { _buffers: buffers } }
    }

    /// Number of records; at least 1.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Always false: a batch has at least one record.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The records, in offset order.
    pub fn iter(&self) -> std::slice::Iter<'_, Message<'_>> {
        self.messages.iter()
    }
}

impl<'b> IntoIterator for &'b Batch {
    type Item = &'b Message<'b>;
    type IntoIter = std::slice::Iter<'b, Message<'b>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

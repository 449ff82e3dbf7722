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
    /// Borrow from the mapping `_span` keeps alive (see [`Batch::new`]);
    /// handed out only for as long as the batch is borrowed.
    messages: Vec<Message<'static>>,
    _span: Span,
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
        Batch { messages, _span: span.clone() }
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

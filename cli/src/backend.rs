//! What `consume`, `tail`, `group` and `dlq` ask of a queue, on either
//! backend: the local queue (`durq`) and the one on NATS (`durq_nats`) have
//! the same calls and types, so each command's loop is written once, generic
//! over [`Backend`], and a command only picks which queue to open.

use std::time::Duration;

use durq::{BoxError, ConsumerOptions, DeadLetter, Message, ResetTo, Skipped, StoredRecord};

use crate::CliResult;
use crate::target::Target;

/// A queue a command works on.
pub trait Backend {
    type Consumer: Member;
    type Reader: Tail;

    fn consumer_with(&self, group: &str, options: ConsumerOptions) -> durq::Result<Self::Consumer>;
    fn reader(&self, from: ResetTo) -> durq::Result<Self::Reader>;
    fn partition_reader(&self, partition: u32, from: ResetTo) -> durq::Result<Self::Reader>;
    fn reset_group(&self, group: &str, to: ResetTo) -> durq::Result<Vec<u64>>;
    fn delete_group(&self, group: &str) -> durq::Result<()>;
    fn dead_letters(&self, group: &str, max: usize) -> durq::Result<Vec<DeadLetter>>;
    fn replay_dead_letters(&self, group: &str) -> durq::Result<u64>;
}

/// A member of a consumer group.
pub trait Member {
    fn process_timeout<F, E>(&mut self, timeout: Duration, f: F) -> durq::Result<usize>
    where
        F: FnOnce(&[Message<'_>]) -> Result<(), E>,
        E: Into<BoxError>;
}

/// A reader outside any group.
pub trait Tail {
    fn read(&mut self, max: usize) -> durq::Result<Vec<StoredRecord>>;
    /// Records retention removed before they were read (none on NATS, whose
    /// streams are not trimmed behind a reader by durq).
    fn take_skipped(&mut self) -> Vec<Skipped>;
    /// Whether an empty [`Tail::read`] means the queue was read to its end.
    fn caught_up(&self) -> bool;
    /// Waits until a record may be read.
    fn wait(&mut self);
}

/// Opens the existing queue `target` and runs `command` on it.
pub fn with_existing<T>(target: &Target, command: impl OnQueue<T>) -> CliResult<T> {
    match target {
        Target::Dir(dir) => command.run(&durq::Queue::open_existing(dir)?),
        Target::Nats(url) => command.run(&durq_nats::Queue::open_existing(url)?),
    }
}

/// A command's work on an opened queue, whichever its backend (a closure
/// cannot be generic over the queue's type).
pub trait OnQueue<T> {
    fn run<Q: Backend>(self, queue: &Q) -> CliResult<T>;
}

/// Implements [`Backend`] and [`Member`] for one backend's types:
/// the two crates' calls have the same names and signatures.
macro_rules! forward {
    ($queue:ty, $consumer:ty, $reader:ty) => {
        impl Backend for $queue {
            type Consumer = $consumer;
            type Reader = $reader;

            fn consumer_with(&self, group: &str, options: ConsumerOptions) -> durq::Result<$consumer> {
                <$queue>::consumer_with(self, group, options)
            }
            fn reader(&self, from: ResetTo) -> durq::Result<$reader> {
                <$queue>::reader(self, from)
            }
            fn partition_reader(&self, partition: u32, from: ResetTo) -> durq::Result<$reader> {
                <$queue>::partition_reader(self, partition, from)
            }
            fn reset_group(&self, group: &str, to: ResetTo) -> durq::Result<Vec<u64>> {
                <$queue>::reset_group(self, group, to)
            }
            fn delete_group(&self, group: &str) -> durq::Result<()> {
                <$queue>::delete_group(self, group)
            }
            fn dead_letters(&self, group: &str, max: usize) -> durq::Result<Vec<DeadLetter>> {
                <$queue>::dead_letters(self, group, max)
            }
            fn replay_dead_letters(&self, group: &str) -> durq::Result<u64> {
                <$queue>::replay_dead_letters(self, group)
            }
        }

        impl Member for $consumer {
            fn process_timeout<F, E>(&mut self, timeout: Duration, f: F) -> durq::Result<usize>
            where
                F: FnOnce(&[Message<'_>]) -> Result<(), E>,
                E: Into<BoxError>,
            {
                <$consumer>::process_timeout(self, timeout, f)
            }
        }
    };
}

forward!(durq::Queue, durq::Consumer, durq::Reader);
forward!(durq_nats::Queue, durq_nats::Consumer, durq_nats::Reader);

impl Tail for durq::Reader {
    fn read(&mut self, max: usize) -> durq::Result<Vec<StoredRecord>> {
        durq::Reader::read(self, max)
    }
    fn take_skipped(&mut self) -> Vec<Skipped> {
        durq::Reader::take_skipped(self)
    }
    /// A local read returns everything visible, so an empty one is the end.
    fn caught_up(&self) -> bool {
        true
    }
    fn wait(&mut self) {
        durq::Reader::wait(self, None);
    }
}

impl Tail for durq_nats::Reader {
    fn read(&mut self, max: usize) -> durq::Result<Vec<StoredRecord>> {
        durq_nats::Reader::read(self, max)
    }
    fn take_skipped(&mut self) -> Vec<Skipped> {
        Vec::new()
    }
    /// Records are pushed by the servers: an empty read may only mean the
    /// next ones are on their way.
    fn caught_up(&self) -> bool {
        durq_nats::Reader::caught_up(self)
    }
    fn wait(&mut self) {
        durq_nats::Reader::wait(self, None);
    }
}

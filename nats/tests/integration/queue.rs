//! Opening a queue by `nats://host:port/QUEUE` with the local queue's
//! `durq::Options`, against a real server: created once with its streams
//! and meta entry, reopened with the stored options, refused on a conflict,
//! finished when half-created, and refused with a clear error for a lost
//! stream, a damaged meta entry, a name NATS cannot use and a record limit
//! the server cannot carry.

use std::path::PathBuf;

use crate::common::{NatsServer, raw_jetstream, runtime};
use durq::{Durability, Options};
use durq_nats::{Error, META_BUCKET, Queue, record};

fn nats_error(err: &durq::Error) -> &Error {
    Error::of(err).unwrap_or_else(|| panic!("not a NATS engine error: {err:?}"))
}

#[test]
fn a_queue_is_created_once_and_reopened_with_its_stored_options() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let url = format!("{}/orders", server.url());
    let queue =
        Queue::open_with(&url, Options::default().partitions(3).durability(Durability::Buffered)).expect("create");
    assert_eq!((queue.partitions(), queue.durability(), queue.replicas()), (3, Durability::Buffered, 1));
    assert_eq!((queue.name(), queue.url()), ("orders", url.clone()));
    let raw = rt.block_on(raw_jetstream(&server.url()));
    for p in 0..3 {
        rt.block_on(raw.get_stream(record::stream_name("orders", p))).expect("a stream per partition");
    }

    // Reopened without options, or with the same ones: the stored ones.
    let reopened = Queue::open(&url).expect("reopen");
    assert_eq!((reopened.partitions(), reopened.durability()), (3, Durability::Buffered));
    Queue::open_with(&url, Options::default().partitions(3)).expect("the same partitions");

    let err = Queue::open_with(&url, Options::default().partitions(2)).err().expect("a conflict");
    match err {
        durq::Error::OptionsConflict { path, option: "partitions", stored, requested } => {
            assert_eq!((path, stored.as_str(), requested.as_str()), (PathBuf::from(&url), "3", "2"));
        }
        other => panic!("{other:?}"),
    }
    let err = Queue::open_with(&url, Options::default().durability(Durability::Sync)).err().expect("a conflict");
    assert!(matches!(err, durq::Error::OptionsConflict { option: "durability", .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{url}: the queue was created with durability = buffered")), "{err}");
}

#[test]
fn a_half_created_queue_is_finished_by_the_next_open_and_keeps_its_records() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let url = format!("{}/half", server.url());
    let queue = Queue::open_with(&url, Options::default().partitions(2)).expect("create");
    let producer = queue.producer();
    assert_eq!(producer.send_keyed("k", b"before").expect("send").offset, 0);
    // What a creator that stopped before its last step leaves: the streams,
    // no meta entry.
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let metas = rt.block_on(raw.get_key_value(META_BUCKET)).expect("the meta bucket");
    rt.block_on(metas.purge("half")).expect("remove the meta entry");

    let finished = Queue::open_with(&url, Options::default().partitions(2)).expect("finish the queue");
    assert_eq!(finished.partitions(), 2);
    let position = finished.producer().send_keyed("k", b"after").expect("send");
    assert_eq!(position.offset, 1, "the partition's stream and its record were kept");
    Queue::open_with(&url, Options::default().partitions(2)).expect("the meta entry is back");
}

#[test]
fn a_lost_stream_is_an_error_never_a_partition_restarted_at_0() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let url = format!("{}/lost", server.url());
    Queue::open_with(&url, Options::default().partitions(2)).expect("create");
    let raw = rt.block_on(raw_jetstream(&server.url()));
    rt.block_on(raw.delete_stream(record::stream_name("lost", 1))).expect("delete a partition's stream");

    let err = Queue::open(&url).err().expect("a missing stream");
    assert!(
        matches!(nats_error(&err), Error::MissingStream { stream, partition: 1, .. } if stream == "DURQ_lost_P0001"),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not recreate it"), "{err}");
    assert!(rt.block_on(raw.get_stream("DURQ_lost_P0001")).is_err(), "nothing was created");
}

#[test]
fn a_damaged_meta_entry_is_refused_naming_the_byte() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    let url = format!("{}/damaged", server.url());
    Queue::open(&url).expect("create");
    let raw = rt.block_on(raw_jetstream(&server.url()));
    let metas = rt.block_on(raw.get_key_value(META_BUCKET)).expect("the meta bucket");
    let mut bytes = rt.block_on(metas.get("damaged")).expect("get").expect("the meta entry").to_vec();
    bytes[4] = 7; // the format version
    let revision = rt.block_on(metas.put("damaged", bytes.into())).expect("put");

    let err = Queue::open(&url).err().expect("a damaged entry");
    assert!(
        matches!(nats_error(&err), Error::CorruptMeta { revision: r, position: 4, .. } if *r == revision),
        "{err:?}"
    );
}

#[test]
fn names_and_addresses_nats_cannot_use_are_refused_before_anything_is_created() {
    let server = NatsServer::start_blocking();
    let rt = runtime();
    for (url, what) in [
        (format!("{}/a.b", server.url()), "queue"),
        (format!("{}/a*", server.url()), "queue"),
        (format!("{}/{}", server.url(), "q".repeat(65)), "queue"),
        (server.url(), "queue address"),
        ("nats://127.0.0.1:notaport/q".to_owned(), "server address"),
    ] {
        let err = Queue::open(&url).err().expect("refused");
        assert!(matches!(nats_error(&err), Error::InvalidName { what: w, .. } if *w == what), "{url}: {err:?}");
    }
    let err = Queue::open(&format!("{}/a.b", server.url())).err().expect("refused");
    assert_eq!(err.to_string(), "NATS: invalid queue \"a.b\": only ASCII letters, digits, '-' and '_' are allowed");
    let raw = rt.block_on(raw_jetstream(&server.url()));
    assert!(rt.block_on(raw.get_key_value(META_BUCKET)).is_err(), "nothing was created");
}

#[test]
fn record_bytes_max_must_fit_the_servers_max_payload() {
    let server = NatsServer::start_blocking();
    // The server's default max_payload is 1 MiB; durq keeps 1 KiB of it for
    // headers.
    let err = Queue::open_with(&format!("{}/big", server.url()), Options::default().record_bytes_max(1 << 20))
        .err()
        .expect("too large");
    assert!(matches!(err, durq::Error::InvalidOption { option: "record_bytes_max", .. }), "{err:?}");
    assert!(err.to_string().contains("max_payload of 1048576 bytes"), "{err}");
    let queue = Queue::open(&format!("{}/fits", server.url())).expect("the default fits");
    assert_eq!(queue.record_bytes_max(), (1 << 20) - 1024);
}

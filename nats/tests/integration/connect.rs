//! `connect` against real servers: the pinned server with JetStream is
//! accepted; an unreachable address and a server without JetStream are each
//! refused with an error that says what is wrong and where. (A too-old
//! server is the unit test in `src/connect.rs`: the check is the same with
//! the minimum raised past the pinned release.)

use crate::common::{NatsServer, free_port};
use durq_nats::{Error, MIN_SERVER_VERSION, connect};

#[tokio::test]
async fn the_pinned_server_with_jetstream_is_accepted() {
    let server = NatsServer::start().await;
    let client = connect(&server.url()).await.expect("connect");
    assert!(client.server_version() >= MIN_SERVER_VERSION, "{}", client.server_version());
}

#[tokio::test]
async fn an_unreachable_server_is_refused_naming_the_address() {
    // Nothing listens on a port the kernel just handed out and took back.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let err = connect(&url).await.expect_err("nothing listens there");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot reach a NATS server at {url}")), "{text}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused_naming_the_fix() {
    let server = NatsServer::start_without_jetstream().await;
    let err = connect(&server.url()).await.expect_err("no JetStream");
    assert!(matches!(err, Error::NoJetStream { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&server.url()) && text.contains("solo") && text.contains("-js"), "{text}");
}

#[tokio::test]
async fn a_malformed_address_is_refused_before_connecting() {
    let err = connect("nats://127.0.0.1:notaport").await.expect_err("bad address");
    assert!(matches!(err, Error::InvalidName { what: "server address", .. }), "{err:?}");
}

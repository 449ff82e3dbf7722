//! A NATS queue's address: `nats://host:port/QUEUE`, or for a cluster
//! `nats://host1:port1,host2:port2/QUEUE` (pure: no I/O).
//!
//! The queue's name is what follows the last `/` after the server list. It
//! names the queue's streams and subjects, so it obeys the rules of one NATS
//! subject token and of a stream name (see [`validate_queue_name`]).

use crate::error::{Error, Result};
use crate::group_names::validate_name;

/// A parsed queue address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    /// The server address or comma-separated addresses, as `connect` takes
    /// them.
    pub servers: String,
    /// The queue's name.
    pub name: String,
}

impl QueueUrl {
    /// Splits `url` into its servers and the queue's name, and checks the
    /// name.
    ///
    /// # Errors
    /// [`Error::InvalidName`] (`what: "queue address"`) if there is no
    /// `/QUEUE` after the servers; (`what: "queue"`) if the name breaks the
    /// rules.
    pub fn parse(url: &str) -> Result<QueueUrl> {
        let missing = || Error::InvalidName {
            what: "queue address",
            name: url.to_owned(),
            reason: "not nats://host:port/QUEUE (the queue's name is missing)",
        };
        let (servers, name) = url.rsplit_once('/').ok_or_else(missing)?;
        // `nats://host:port` alone splits inside its own `://`.
        if servers.ends_with(':') || servers.ends_with('/') || servers.is_empty() {
            return Err(missing());
        }
        validate_queue_name(name)?;
        Ok(QueueUrl { servers: servers.to_owned(), name: name.to_owned() })
    }
}

/// The rules for a queue's name: those of a bucket or slot name (one subject
/// token of ASCII letters, digits, `-` and `_`, at most 64 bytes), so that
/// it can be part of stream names (`DURQ_<name>_P0000`) and subjects
/// (`durq.<name>.0`) without splitting into subject levels or matching a
/// wildcard.
///
/// # Errors
/// [`Error::InvalidName`] with `what: "queue"`.
pub fn validate_queue_name(name: &str) -> Result<()> {
    validate_name("queue", name)
}

impl std::fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.servers, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_follows_the_last_slash() {
        let url = QueueUrl::parse("nats://127.0.0.1:4222/orders").unwrap();
        assert_eq!((url.servers.as_str(), url.name.as_str()), ("nats://127.0.0.1:4222", "orders"));
        let url = QueueUrl::parse("nats://a:1,nats://b:2,c:3/orders-eu_1").unwrap();
        assert_eq!((url.servers.as_str(), url.name.as_str()), ("nats://a:1,nats://b:2,c:3", "orders-eu_1"));
        assert_eq!(url.to_string(), "nats://a:1,nats://b:2,c:3/orders-eu_1");
    }

    #[test]
    fn an_address_without_a_queue_is_refused() {
        for bad in ["nats://127.0.0.1:4222", "nats://127.0.0.1:4222/", "/orders", "orders"] {
            let err = QueueUrl::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn a_queue_name_nats_cannot_use_is_refused_naming_the_rule() {
        for bad in ["a.b", "a*", "a>", "a b", "é", "", &"q".repeat(65)] {
            let err = QueueUrl::parse(&format!("nats://h:1/{bad}")).unwrap_err();
            assert!(matches!(err, Error::InvalidName { what: "queue", .. }), "{bad:?}: {err:?}");
        }
        let err = QueueUrl::parse("nats://h:1/a.b").unwrap_err();
        assert!(err.to_string().contains("invalid queue \"a.b\": only ASCII letters"), "{err}");
    }
}

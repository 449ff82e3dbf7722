//! Connecting to NATS, and refusing a server that cannot keep durq's
//! guarantees: one older than [`MIN_SERVER_VERSION`], or one without
//! JetStream.
//!
//! The checks run once, at connect. The version comes from the INFO the
//! server sends on every connection; JetStream is checked twice, by that
//! INFO's flag (the server's configuration) and by a `$JS.API.INFO` request
//! (this account may use it).

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::AccountErrorKind;
use async_nats::{ServerAddr, ServerInfo};

use crate::error::{Error, Result};
use crate::version::{MIN_SERVER_VERSION, ServerVersion};

/// How long `connect` waits for a server to answer before it reports the
/// server unreachable. Loopback and LAN servers answer in milliseconds; a
/// server that takes longer is treated as down, not waited for.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a NATS server that runs JetStream and is recent enough.
///
/// Cheap to clone: clones share the connection. After a successful
/// [`connect`] the client reconnects by itself (to any server of the list, or
/// any server of the cluster that the server announced) when a server goes
/// away.
#[derive(Debug, Clone)]
pub struct Client {
    jetstream: async_nats::jetstream::Context,
    server_version: ServerVersion,
}

impl Client {
    /// The release of the server this client first connected to.
    pub fn server_version(&self) -> ServerVersion {
        self.server_version
    }

    pub(crate) fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    /// True if the server belongs to a cluster (its INFO names one): new
    /// streams then get three replicas, else one.
    pub(crate) fn clustered(&self) -> bool {
        self.jetstream.client().server_info().cluster.is_some_and(|name| !name.is_empty())
    }

    /// The largest message (headers and payload) the server accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.jetstream.client().server_info().max_payload
    }

    /// A name no other client of the server uses (the tail of a fresh inbox
    /// subject: a NUID, 22 random characters).
    pub(crate) fn unique_name(&self) -> String {
        let inbox = self.jetstream.client().new_inbox();
        inbox.rsplit('.').next().unwrap_or(&inbox).to_owned()
    }
}

/// Connects to the NATS server at `url` (`nats://host:port`, or several
/// comma-separated addresses of one cluster) and checks that it is at least
/// [`MIN_SERVER_VERSION`] and runs JetStream.
///
/// # Errors
/// - [`Error::InvalidName`] if an address does not parse;
/// - [`Error::Unreachable`] if no server answers;
/// - [`Error::ServerTooOld`] or [`Error::UnknownServerVersion`] if the
///   server's release is not accepted;
/// - [`Error::NoJetStream`] if it runs without JetStream.
pub async fn connect(url: &str) -> Result<Client> {
    let addresses = parse_addresses(url)?;
    let nats = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(addresses)
        .await
        .map_err(|source| Error::Unreachable { url: url.to_owned(), source: source.into() })?;
    let info = nats.server_info();
    let server_version = check_server(url, &info, MIN_SERVER_VERSION)?;
    let jetstream = async_nats::jetstream::new(nats);
    check_jetstream_account(url, &info, &jetstream).await?;
    Ok(Client { jetstream, server_version })
}

fn parse_addresses(url: &str) -> Result<Vec<ServerAddr>> {
    let invalid = |reason| Error::InvalidName { what: "server address", name: url.to_owned(), reason };
    url.split(',')
        .map(|one| match one.trim().parse::<ServerAddr>() {
            Ok(address) if !address.host().is_empty() => Ok(address),
            _ => Err(invalid("not a nats://host:port address")),
        })
        .collect()
}

/// Checks the server's INFO: its release against `minimum`, then its
/// JetStream flag. Returns the server's release.
fn check_server(url: &str, info: &ServerInfo, minimum: ServerVersion) -> Result<ServerVersion> {
    let server = || info.server_name.clone();
    let found = ServerVersion::parse(&info.version).ok_or_else(|| Error::UnknownServerVersion {
        url: url.to_owned(),
        server: server(),
        found: info.version.clone(),
    })?;
    if found < minimum {
        return Err(Error::ServerTooOld {
            url: url.to_owned(),
            server: server(),
            found: info.version.clone(),
            minimum: minimum.to_string(),
        });
    }
    if !info.jetstream {
        return Err(Error::NoJetStream {
            url: url.to_owned(),
            server: server(),
            reason: "the server's INFO says JetStream is off (start it with -js, or a jetstream block in its \
                     configuration)"
                .to_owned(),
        });
    }
    Ok(found)
}

/// Asks the JetStream API for this account's information: a server may run
/// JetStream for some accounts and not others.
async fn check_jetstream_account(
    url: &str,
    info: &ServerInfo,
    jetstream: &async_nats::jetstream::Context,
) -> Result<()> {
    let no_jetstream =
        |reason: String| Error::NoJetStream { url: url.to_owned(), server: info.server_name.clone(), reason };
    match jetstream.query_account().await {
        Ok(_) => Ok(()),
        Err(err) => match err.kind() {
            AccountErrorKind::JetStreamUnavailable => {
                Err(no_jetstream("nothing answers the JetStream API ($JS.API.INFO)".to_owned()))
            }
            AccountErrorKind::JetStream(api)
                if [ErrorCode::JETSTREAM_NOT_ENABLED, ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT]
                    .contains(&api.error_code()) =>
            {
                Err(no_jetstream(format!("the JetStream API says: {api}")))
            }
            _ => Err(Error::engine(format!("JetStream account check at {url}"), err)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, jetstream: bool) -> ServerInfo {
        ServerInfo { server_name: "n1".into(), version: version.into(), jetstream, ..Default::default() }
    }

    #[test]
    fn a_server_older_than_the_minimum_is_refused_by_name_and_version() {
        // The real pinned server, against a minimum raised past it: the
        // same path as a genuinely old server (Debian ships 2.9.10).
        let raised = ServerVersion::new(2, 10, 26);
        let err = check_server("nats://127.0.0.1:4222", &info("2.10.25", true), raised).unwrap_err();
        assert!(matches!(err, Error::ServerTooOld { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("nats://127.0.0.1:4222") && text.contains("n1"), "{text}");
        assert!(text.contains("2.10.25") && text.contains("2.10.26 or later"), "{text}");

        let err = check_server("u", &info("2.9.10", true), MIN_SERVER_VERSION).unwrap_err();
        assert!(matches!(err, Error::ServerTooOld { ref found, .. } if found == "2.9.10"), "{err:?}");
        let err = check_server("u", &info("2.10.25-RC.1", true), MIN_SERVER_VERSION).unwrap_err();
        assert!(matches!(err, Error::ServerTooOld { .. }), "a pre-release of the minimum is older: {err:?}");
    }

    #[test]
    fn the_minimum_and_newer_releases_are_accepted() {
        for version in ["2.10.25", "2.10.26", "2.11.0", "2.12.8", "3.0.0"] {
            let found = check_server("u", &info(version, true), MIN_SERVER_VERSION).expect(version);
            assert_eq!(Some(found), ServerVersion::parse(version));
        }
    }

    #[test]
    fn an_unparsable_version_is_refused_not_guessed() {
        let err = check_server("u", &info("", true), MIN_SERVER_VERSION).unwrap_err();
        assert!(matches!(err, Error::UnknownServerVersion { .. }), "{err:?}");
    }

    #[test]
    fn a_server_without_jetstream_is_refused_after_its_version_passes() {
        let err = check_server("u", &info("2.10.25", false), MIN_SERVER_VERSION).unwrap_err();
        assert!(matches!(err, Error::NoJetStream { .. }), "{err:?}");
        // Too old and no JetStream: the version is what is reported.
        let err = check_server("u", &info("2.9.10", false), MIN_SERVER_VERSION).unwrap_err();
        assert!(matches!(err, Error::ServerTooOld { .. }), "{err:?}");
    }

    #[test]
    fn addresses_are_one_or_a_comma_separated_list() {
        assert_eq!(parse_addresses("nats://127.0.0.1:4222").unwrap().len(), 1);
        assert_eq!(parse_addresses("nats://127.0.0.1:1, nats://127.0.0.1:2,127.0.0.1:3").unwrap().len(), 3);
        for bad in ["", "nats://127.0.0.1:4222,", "http://127.0.0.1:80", "nats://127.0.0.1:notaport"] {
            let err = parse_addresses(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { what: "server address", .. }), "{bad:?}: {err:?}");
        }
    }
}

//! The settings of the NATS publisher: where the server is, how subjects and
//! sources are named, and how long to wait for the server.
//!
//! Every field has a default that works against a local server, so callers set only
//! what differs. URLs are shown with their credentials masked wherever this crate
//! prints them.

use std::fmt;
use std::time::Duration;

/// The server the publisher connects to unless told otherwise.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The default subject rule: the outbox stream, a dot, the event type.
pub const DEFAULT_SUBJECT_TEMPLATE: &str = "{stream}.{type}";

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// How to reach NATS and how to name what is published.
///
/// ```
/// use std::time::Duration;
/// use outbox_nats::NatsOptions;
///
/// let options = NatsOptions {
///     url: "nats://relay:secret@nats.internal:4222".into(),
///     subject_template: "shop.{stream}.{type}".into(),
///     ack_timeout: Duration::from_secs(2),
///     ..NatsOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The server, as `nats://[user:password@]host:port`, or several separated by
    /// commas. A bare `host:port` means `nats://`. Default: [`DEFAULT_URL`].
    ///
    /// `tls://` URLs need a rustls crypto provider: enable this crate's `tls`
    /// feature, or install a process-wide provider before connecting.
    pub url: String,
    /// The subject of each event, a [`crate::Template`] over `{stream}` and
    /// `{type}`. Default: [`DEFAULT_SUBJECT_TEMPLATE`], so `orders` and
    /// `order.placed` give `orders.order.placed`.
    pub subject_template: String,
    /// The CloudEvents `source` of each event, a [`crate::Template`] over `{stream}`
    /// and `{type}`. Default: [`DEFAULT_SOURCE_TEMPLATE`], so events of `orders`
    /// come from `/outbox/orders`.
    pub source_template: String,
    /// How long one publish waits for its PubAck, from the moment it is handed to
    /// the connection. Default: 5 seconds.
    pub ack_timeout: Duration,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// How many publishes may await their PubAck at once; more wait for a slot,
    /// within their ack timeout. Default: 5,000.
    pub max_in_flight: usize,
    /// The connection name the server shows in its monitoring. Default: `outbox`.
    pub client_name: String,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: DEFAULT_URL.to_owned(),
            subject_template: DEFAULT_SUBJECT_TEMPLATE.to_owned(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 5_000,
            client_name: "outbox".to_owned(),
        }
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &redact_url(&self.url))
            .field("subject_template", &self.subject_template)
            .field("source_template", &self.source_template)
            .field("ack_timeout", &self.ack_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// `url` with the secret part of every server's credentials replaced by `***`.
///
/// `user:password@` keeps the user; a lone `token@` is a token and is masked
/// whole. Several servers separated by commas are masked one by one.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_server)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_server(server: &str) -> String {
    let authority_start = server.find("://").map_or(0, |i| i + 3);
    let authority_end = server[authority_start..]
        .find(['/', '?', '#'])
        .map_or(server.len(), |i| authority_start + i);
    let authority = &server[authority_start..authority_end];

    let Some(at) = authority.rfind('@') else {
        return server.to_owned();
    };
    let masked = match authority[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!(
        "{}{masked}{}",
        &server[..authority_start],
        &server[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_masked() {
        let cases = [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "nats://relay:s3cret@nats:4222",
                "nats://relay:***@nats:4222",
            ),
            ("nats://t0ken@nats:4222", "nats://***@nats:4222"),
            ("relay:p@ss@nats:4222", "relay:***@nats:4222"),
            ("tls://a:b@x:1,nats://y:2", "tls://a:***@x:1,nats://y:2"),
            ("nats://host:4222/path@x", "nats://host:4222/path@x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let options = NatsOptions {
            url: "nats://relay:hunter2@nats:4222".into(),
            ..NatsOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("relay:***@nats:4222"), "{shown}");
    }
}

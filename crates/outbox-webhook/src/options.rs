//! The settings of the webhook publisher and of the receiver: where events go
//! or are taken in, which secret signs them, and how long to wait.
//!
//! There is no default endpoint and no default secret: both must be given, and
//! building a publisher or a receiver without them is a configuration error.
//! URLs are shown with their password and query masked wherever this crate
//! prints them; secrets are never shown.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::signature::{DEFAULT_TOLERANCE, WebhookSecret};

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// Where the webhook publisher sends events and how it signs them.
///
/// ```
/// use std::time::Duration;
/// use outbox_webhook::{WebhookOptions, WebhookSecret};
///
/// let options = WebhookOptions {
///     url: "http://billing.internal:8080/events/{stream}".into(),
///     secrets: vec![WebhookSecret::parse("whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdA==")?],
///     timeout: Duration::from_secs(5),
///     ..WebhookOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("c2VjcmV0"));
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// The endpoint, a [`crate::Template`] over `{stream}` and `{type}` whose
    /// substitutions are percent-encoded: `http://h/in/{stream}/{type}`. Required:
    /// the default is empty, which [`crate::WebhookPublisher::connect`] refuses.
    ///
    /// `http://` works out of the box; `https://` needs this crate's `tls`
    /// feature. User and password in the URL are sent as HTTP basic
    /// authentication.
    pub url: String,
    /// The secrets that sign every request, one `v1,` signature each in the
    /// `webhook-signature` header. Required, at least one; a second one serves a
    /// key rotation, while receivers move from the old key to the new.
    pub secrets: Vec<WebhookSecret>,
    /// The CloudEvents `source` of each event, a [`crate::Template`] over
    /// `{stream}` and `{type}`, rendered without encoding. Default:
    /// [`DEFAULT_SOURCE_TEMPLATE`].
    pub source_template: String,
    /// How long one request may take, from connecting to the end of the answer.
    /// Default: 10 seconds. Keep it below the relay's publish timeout, or the
    /// relay gives up first and counts the endpoint as down instead of the
    /// attempt as failed.
    pub timeout: Duration,
    /// How long making a connection may take, also when the publisher checks the
    /// endpoint at start. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// How many requests may be open at once; more wait for a free slot, and the
    /// wait counts against the relay's publish timeout only. Default: 64.
    pub max_in_flight: usize,
    /// The `User-Agent` of every request. Default: `outbox-webhook/` and this
    /// crate's version.
    pub user_agent: String,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            url: String::new(),
            secrets: Vec::new(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            user_agent: concat!("outbox-webhook/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookOptions")
            .field("url", &redact_url(&self.url))
            .field("secrets", &self.secrets)
            .field("source_template", &self.source_template)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// Where a [`crate::WebhookReceiver`] listens and how it checks requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverOptions {
    /// The address to listen on; port 0 picks a free one, which
    /// [`crate::WebhookReceiver::local_addr`] then tells. Default:
    /// `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The secret the sender signs with. Required: the default, `None`, is
    /// refused by [`crate::WebhookReceiver::bind`].
    pub secret: Option<WebhookSecret>,
    /// How far a request's timestamp may be from the local clock. Default:
    /// [`DEFAULT_TOLERANCE`], five minutes.
    pub tolerance: Duration,
    /// How many deliveries may be unsettled at once; further requests wait,
    /// within the sender's timeout. Default: 256.
    pub max_in_flight: usize,
    /// The largest request body accepted; a larger one is answered 413, which the
    /// outbox publisher takes as a refusal for good. Default: 2 MiB, above the
    /// stores' default payload limit of 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secret: None,
            tolerance: DEFAULT_TOLERANCE,
            max_in_flight: 256,
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

/// `url` with the password of its credentials replaced by `***` (a lone user
/// name, which may be a token, as a whole) and its query, which may carry a
/// token, by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((before, _)) => (before, "?***"),
        None => (url, ""),
    };
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];

    let shown = match authority.rfind('@') {
        None => url.to_owned(),
        Some(at) => {
            let masked = match authority[..at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!(
                "{}{masked}{}",
                &url[..authority_start],
                &url[authority_start + at..]
            )
        }
    };
    format!("{shown}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_queries_are_masked() {
        let cases = [
            ("http://h:8080/in/{stream}", "http://h:8080/in/{stream}"),
            ("https://relay:s3cret@h/in", "https://relay:***@h/in"),
            ("https://t0ken@h/in", "https://***@h/in"),
            ("http://h/in?token=abc&x=1", "http://h/in?***"),
            ("http://a:b@h/p@x", "http://a:***@h/p@x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let options = WebhookOptions {
            url: "https://relay:pa55@h/in?token=t0k".into(),
            secrets: vec![WebhookSecret::from_bytes("hunter2").unwrap()],
            ..WebhookOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("aHVudGVyMg"), "{shown}");
        assert!(!shown.contains("pa55") && !shown.contains("t0k"), "{shown}");
        assert!(shown.contains("https://relay:***@h/in?***"), "{shown}");
    }
}

//! The webhook publisher: one signed POST per event, resolved by the endpoint's
//! answer.
//!
//! [`WebhookPublisher`] owns the HTTP client, the URL and source templates and
//! the signing secrets. It checks the options and, where the endpoint does not
//! depend on the event, that the endpoint accepts connections.

use std::fmt;
use std::time::Duration;

use outbox_core::{Error, Event, Publisher, Result};
use reqwest::redirect;
use tokio::sync::Semaphore;
use tracing::info;

use crate::options::redact_url;
use crate::signature::{WebhookSecret, sign, unix_now};
use outbox_core::Template;

use crate::template::render_url;
use crate::{WebhookOptions, binding, failure};

/// How much of an answer's body is read, so that its connection can serve the
/// next request; past this the connection is closed instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Publishes outbox events to a webhook endpoint, one POST per event.
///
/// Each request is the event in the CloudEvents HTTP binding's binary mode
/// (see the crate's documentation for the headers), signed in the Standard
/// Webhooks scheme with every configured secret. [`Publisher::publish`] resolves
/// when the endpoint has answered: `Ok` for a 2xx, an error otherwise. Redirects
/// are not followed, no proxy is used (the `HTTP_PROXY` family of environment
/// variables is ignored) and requests speak HTTP/1.1 only. Requests share a pool
/// of keep-alive connections and take no lock, so the relay can keep many in
/// flight, up to [`WebhookOptions::max_in_flight`].
///
/// # Errors
///
/// | answer or failure | kind | the relay |
/// | --- | --- | --- |
/// | 2xx | (success) | marks the event done |
/// | 408, 429, 5xx | `Transient` | retries with backoff, counting the attempt |
/// | no answer within the timeout, connection made | `Transient` | the same |
/// | refused, name unresolved, connect timeout | `Unavailable` | pauses, not counting it |
/// | connection lost before the answer | `Unavailable` | the same |
/// | 3xx (not followed), any other 4xx | `Permanent` | dead-letters the event |
/// | no valid URL for the event, a bad header | `Permanent` | the same; nothing was sent |
///
/// The timeout is [`WebhookOptions::timeout`]; a bad header is a name or value
/// HTTP cannot carry. `Retry-After` is not read: a 429 or 503 is retried on the relay's own
/// backoff. An endpoint that answers 5xx for longer than the relay's attempts
/// last sends the events to the dead letters one by one, while one that cannot
/// be reached holds them all back; with a URL template spreading events over
/// several hosts, one host that is down pauses the relay for every host.
///
/// [`WebhookPublisher::connect`] fails with
/// [`Config`](outbox_core::ErrorKind::Config) for invalid options (no URL, no
/// secret, a bad template, `https://` without the `tls` feature) and with
/// [`Unavailable`](outbox_core::ErrorKind::Unavailable) when the endpoint does
/// not accept a TCP connection. That check is made only when the host and port
/// of the URL do not depend on `{stream}` or `{type}`; it opens no HTTP request
/// and no TLS session.
pub struct WebhookPublisher {
    client: reqwest::Client,
    url: Template,
    source: Template,
    secrets: Vec<WebhookSecret>,
    timeout: Duration,
    slots: Semaphore,
}

impl WebhookPublisher {
    /// Checks `options`, builds the client and checks that the endpoint accepts
    /// connections.
    ///
    /// ```no_run
    /// use outbox_webhook::{WebhookOptions, WebhookPublisher, WebhookSecret};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = WebhookPublisher::connect(WebhookOptions {
    ///     url: "http://127.0.0.1:9000/events/{stream}".into(),
    ///     secrets: vec![WebhookSecret::parse("whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdA==")?],
    ///     ..WebhookOptions::default()
    /// })
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: WebhookOptions) -> Result<WebhookPublisher> {
        let shown = redact_url(&options.url);
        let url = url_template(&options.url, &shown)?;
        let source = source_template(&options.source_template)?;
        if options.secrets.is_empty() {
            return Err(Error::config("a webhook secret is required"));
        }
        if options.timeout.is_zero() || options.connect_timeout.is_zero() {
            return Err(Error::config("webhook timeouts must be above zero"));
        }
        if options.max_in_flight == 0 {
            return Err(Error::config("webhook max_in_flight must be above zero"));
        }

        #[cfg(feature = "tls")]
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Another thread may have installed one meanwhile; either will do.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.as_str())
            .build()
            .map_err(|e| Error::config("cannot build the http client").with_source(e))?;

        if let Some(address) = fixed_address(&url) {
            probe(&address, &shown, options.connect_timeout).await?;
        }
        info!(url = %shown, secret_count = options.secrets.len(), "webhook publisher ready");
        Ok(WebhookPublisher {
            client,
            url,
            source,
            secrets: options.secrets,
            timeout: options.timeout,
            slots: Semaphore::new(options.max_in_flight),
        })
    }

    /// The endpoint an event of `stream` and `event_type` is posted to, or an
    /// [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent) error when the
    /// URL template makes an invalid URL of them.
    pub fn url_for(&self, stream: &str, event_type: &str) -> Result<reqwest::Url> {
        render_url(&self.url, stream, event_type)
    }
}

impl Publisher for WebhookPublisher {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let url = self.url_for(&event.stream, &event.event_type)?;
        let shown = redact_url(url.as_str());
        let source = self.source.render(&event.stream, &event.event_type);
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the publisher never closes its semaphore");

        let id = event.event_id.to_string();
        let timestamp = unix_now();
        let body = event.payload.as_bytes();
        let signatures: Vec<String> = self
            .secrets
            .iter()
            .map(|secret| sign(secret, &id, timestamp, body))
            .collect();
        let headers = binding::headers(event, &source, timestamp, &signatures.join(" "))?;

        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| failure::send_failure(e, &shown, self.timeout))?;

        let status = response.status();
        discard(response).await;
        failure::check_status(status, &shown)
    }
}

impl fmt::Debug for WebhookPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookPublisher")
            .field("url", &redact_url(self.url.as_str()))
            .field("source", &self.source)
            .field("secret_count", &self.secrets.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Reads and drops the rest of an answer, up to [`DRAIN_LIMIT`].
async fn discard(mut response: reqwest::Response) {
    let mut read = 0;
    while read < DRAIN_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// Parses the URL template and checks that it makes URLs this publisher can
/// post to; `shown` is the redacted form for errors.
fn url_template(text: &str, shown: &str) -> Result<Template> {
    if text.trim().is_empty() {
        return Err(Error::config("a webhook url is required"));
    }
    let template = Template::parse(text)?;
    let sample = render_url(&template, "stream", "type").map_err(|e| {
        Error::config(format!("webhook url {shown} is not a valid url")).with_source(e)
    })?;

    match sample.scheme() {
        "http" => Ok(template),
        "https" if cfg!(feature = "tls") => Ok(template),
        "https" => Err(Error::config(format!(
            "webhook url {shown} asks for https, which needs the `tls` feature of \
             outbox-webhook"
        ))),
        other => Err(Error::config(format!(
            "webhook url {shown} has the scheme {other:?}: expected http or https"
        ))),
    }
}

/// Parses the source template and checks that it fits in a header.
fn source_template(text: &str) -> Result<Template> {
    let template = Template::parse(text)?;
    if text.trim().is_empty() || text.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "source template {text:?} is empty or has a control character"
        )));
    }
    Ok(template)
}

/// The `host:port` every event is posted to, or `None` when it depends on the
/// event's stream or type.
fn fixed_address(template: &Template) -> Option<String> {
    let address = |stream, event_type| {
        let url = render_url(template, stream, event_type).ok()?;
        Some(format!(
            "{}:{}",
            url.host_str()?,
            url.port_or_known_default()?
        ))
    };
    let first = address("s", "t")?;
    (address("other-s", "other-t")? == first).then_some(first)
}

/// Opens and closes one TCP connection to `address`.
async fn probe(address: &str, shown: &str, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Err(_) => Err(failure::probe_timeout(shown, timeout)),
        Ok(Err(err)) => Err(failure::probe_failure(shown, err)),
        Ok(Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    fn url_err(text: &str) -> Error {
        url_template(text, &redact_url(text)).unwrap_err()
    }

    #[test]
    fn urls_that_cannot_work_are_refused() {
        for text in [
            "",
            "  ",
            "not a url",
            "ftp://h/x",
            "http://h/{key}",
            "mailto:a@b",
        ] {
            assert_eq!(url_err(text).kind(), ErrorKind::Config, "{text:?}");
        }
        url_template("http://h:1/{stream}/{type}", "shown").unwrap();

        let err = url_err("ftp://relay:pw@h/x");
        assert!(!err.chain().contains("pw"), "{}", err.chain());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_without_the_tls_feature_is_a_configuration_error() {
        let err = url_err("https://h/x");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("`tls` feature"));
    }

    #[test]
    fn source_templates_must_fit_in_a_header() {
        assert_eq!(
            source_template("/a\n/b").unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(source_template("").unwrap_err().kind(), ErrorKind::Config);
        source_template("https://shop.example/{stream}").unwrap();
    }

    #[test]
    fn the_endpoint_is_probed_only_when_it_is_fixed() {
        let fixed = |text: &str| fixed_address(&Template::parse(text).unwrap());
        assert_eq!(fixed("http://h/in/{stream}").as_deref(), Some("h:80"));
        assert_eq!(
            fixed("http://[::1]:9000/{type}").as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(fixed("http://{stream}.hooks.local/"), None);
    }
}

//! The JetStream publisher: one connection, many publishes in flight, each
//! resolved by its own PubAck.
//!
//! [`NatsPublisher`] owns the client and the JetStream context, the subject and
//! source templates, and the checks made before anything is sent. It also sets up
//! the JetStream stream that the relay publishes into.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::{
    ContextBuilder, CreateStreamErrorKind, GetStreamErrorKind, PublishError,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, ErrorCode, stream};
use async_nats::{ConnectOptions, ServerAddr};
use outbox_core::{Error, Event, Publisher, Result};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::options::redact_url;
use outbox_core::Template;

use crate::template::{check_subject, subject_filter, subject_problem};
use crate::{NatsOptions, binding, failure};

/// Publishes outbox events to NATS JetStream, one message per event.
///
/// Each event becomes a message in the CloudEvents NATS binding's binary mode: the
/// payload is the body, the context attributes are `ce-` headers, the media type
/// is `Content-Type`, and `Nats-Msg-Id` is the event id, so JetStream drops a
/// second copy that arrives within the stream's duplicate window. The event's own
/// headers go along unchanged; one named like a header set here (ignoring case) is
/// overridden. `Nats-` headers among them reach JetStream and take effect there.
///
/// [`Publisher::publish`] resolves after the PubAck; a PubAck that reports a
/// duplicate is a success. Publishes share one connection and take no lock, so
/// the relay can keep many in flight through a shared reference.
///
/// # Errors
///
/// Failures are classified by what they say about the event:
///
/// - [`Unavailable`](outbox_core::ErrorKind::Unavailable): not connected (the
///   client is reconnecting), the connection lost before the PubAck, or no PubAck
///   within the ack timeout. The relay pauses all publishing and does not count
///   the attempt against the event.
/// - [`Transient`](outbox_core::ErrorKind::Transient): JetStream answered with an
///   error for this message, or no stream is bound to the subject (no
///   responders). The relay retries the event with backoff, counting the attempt.
/// - [`Permanent`](outbox_core::ErrorKind::Permanent): the message is larger than
///   the server's `max_payload`, the subject is invalid, or a header cannot be
///   carried by NATS. The relay sends the event to the dead letters.
///
/// Nothing is sent for a permanent failure. [`NatsPublisher::connect`] fails with
/// `Unavailable` when the server cannot be reached and with
/// [`Config`](outbox_core::ErrorKind::Config) for a malformed URL, refused
/// credentials, TLS trouble or invalid options; [`NatsPublisher::ensure_stream`]
/// fails with `Unavailable` when JetStream does not answer and with `Config` when
/// it refuses the stream.
///
/// The connection reconnects by itself, forever, with a delay growing to four
/// seconds; publishes made meanwhile fail at once as `Unavailable`. A publish
/// whose connection drops before its PubAck fails as soon as the loss is noticed,
/// yet its message may have been stored: the retry carries the same `Nats-Msg-Id`
/// and is dropped as a duplicate if it comes within the stream's duplicate window.
/// A connection that hangs without closing is noticed by the ack timeout of each
/// publish, and by the client only when three pings a minute apart go unanswered.
pub struct NatsPublisher {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subject: Template,
    source: Template,
    ack_timeout: Duration,
    url: String,
    /// Counts the connections lost so far; a publish that sees it change while it
    /// waits for its PubAck knows the PubAck will never come.
    disconnects: watch::Receiver<u64>,
}

impl NatsPublisher {
    /// Checks `options` and connects to the server.
    ///
    /// ```no_run
    /// use outbox_nats::{NatsOptions, NatsPublisher};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = NatsPublisher::connect(NatsOptions::default()).await?;
    /// let subjects = publisher.stream_subjects("orders")?;
    /// publisher
    ///     .ensure_stream("ORDERS", &subjects, std::time::Duration::from_secs(120))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: NatsOptions) -> Result<NatsPublisher> {
        let url = redact_url(&options.url);
        let subject = subject_template(&options.subject_template)?;
        let source = source_template(&options.source_template)?;
        if options.ack_timeout.is_zero() {
            return Err(Error::config("nats ack timeout must be above zero"));
        }
        if options.max_in_flight == 0 {
            return Err(Error::config("nats max_in_flight must be above zero"));
        }
        let servers = servers(&options.url, &url)?;

        let (disconnected, disconnects) = watch::channel(0);
        let connect = ConnectOptions::new()
            .name(&options.client_name)
            .connection_timeout(options.connect_timeout)
            .event_callback(connection_events(disconnected, url.clone()))
            .connect(servers);
        let client = match tokio::time::timeout(options.connect_timeout, connect).await {
            Err(_) => return Err(failure::connect_timeout(&url, options.connect_timeout)),
            Ok(Err(err)) => return Err(failure::connect_failure(err, &url)),
            Ok(Ok(client)) => client,
        };

        let server = client.server_info();
        info!(
            url = %url,
            server_version = %server.version,
            max_payload = server.max_payload,
            "nats publisher ready"
        );
        if !server.jetstream {
            warn!(url = %url, "nats server does not announce jetstream");
        }

        let jetstream = ContextBuilder::new()
            .timeout(options.ack_timeout)
            .ack_timeout(options.ack_timeout)
            .max_ack_inflight(options.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(NatsPublisher {
            client,
            jetstream,
            subject,
            source,
            ack_timeout: options.ack_timeout,
            url,
            disconnects,
        })
    }

    /// The subject an event of `stream` and `event_type` is published to, or an
    /// [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent) error when the
    /// subject template makes an invalid subject of them (see
    /// [`crate::check_subject`]).
    pub fn subject_for(&self, stream: &str, event_type: &str) -> Result<String> {
        let subject = self.subject.render(stream, event_type);
        check_subject(&subject)?;
        Ok(subject)
    }

    /// The subjects a JetStream stream needs to receive every event of the outbox
    /// stream `outbox_stream`: `orders.>` for `orders` under the default template.
    ///
    /// The filter is the subject template rendered up to its first `{type}`, cut
    /// back to a whole token, followed by `>`. A template that puts nothing of its
    /// own before `{type}` (such as `{type}.{stream}`) fails with
    /// [`ErrorKind::Config`](outbox_core::ErrorKind::Config): the subjects must then
    /// be listed by hand.
    pub fn stream_subjects(&self, outbox_stream: &str) -> Result<Vec<String>> {
        match subject_filter(&self.subject, outbox_stream) {
            Some(filter) => Ok(vec![filter]),
            None => Err(Error::config(format!(
                "subject template {:?} has no subject prefix for stream \
                 {outbox_stream:?}; list the stream's subjects explicitly",
                self.subject.as_str()
            ))),
        }
    }

    /// Creates the JetStream stream `name` over `subjects`, with file storage and
    /// the given duplicate window, unless a stream of that name exists.
    ///
    /// An existing stream is left as it is, even when its subjects or window
    /// differ. A zero `duplicate_window` takes the server's default, two minutes;
    /// the window bounds how long a republished event is recognised as a
    /// duplicate, so it should be longer than the longest outage the relay is
    /// expected to ride out.
    pub async fn ensure_stream(
        &self,
        name: &str,
        subjects: &[impl AsRef<str>],
        duplicate_window: Duration,
    ) -> Result<()> {
        if subjects.is_empty() {
            return Err(Error::config(format!(
                "jetstream stream {name:?} needs at least one subject"
            )));
        }

        match self.jetstream.get_stream(name).await {
            Ok(_) => {
                info!(stream = name, "found jetstream stream");
                return Ok(());
            }
            Err(err) if is_not_found(&err.kind()) => {}
            Err(err) => return Err(failure::get_stream_failure(err, name)),
        }

        let subjects: Vec<String> = subjects.iter().map(|s| s.as_ref().to_owned()).collect();
        let config = stream::Config {
            name: name.to_owned(),
            subjects: subjects.clone(),
            storage: stream::StorageType::File,
            duplicate_window,
            ..stream::Config::default()
        };
        match self.jetstream.create_stream(config).await {
            Ok(_) => {
                info!(
                    stream = name,
                    subjects = ?subjects,
                    duplicate_window_ms = duplicate_window.as_millis(),
                    "created jetstream stream"
                );
                Ok(())
            }
            Err(err) if already_exists(&err.kind()) => {
                info!(stream = name, "found jetstream stream created meanwhile");
                Ok(())
            }
            Err(err) => Err(failure::create_stream_failure(err, name)),
        }
    }

    /// The largest message, headers included, that the server accepts, as its
    /// last `INFO` announced.
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// Sends one message and waits for its PubAck, for at most the ack timeout and
    /// only as long as the connection it went out on lasts.
    async fn send(&self, subject: String, message: PublishMessage) -> Result<PublishAck> {
        let mut disconnects = self.disconnects.clone();
        disconnects.mark_unchanged();
        let send_and_ack = async {
            let ack = self.jetstream.send_publish(subject, message).await?;
            ack.await
        };

        let result: Result<PublishAck, PublishError> = tokio::select! {
            result = tokio::time::timeout(self.ack_timeout, send_and_ack) => match result {
                Ok(result) => result,
                Err(_) => return Err(failure::ack_timeout(self.ack_timeout)),
            },
            () = connection_lost(&mut disconnects) => {
                return Err(failure::connection_lost(&self.url));
            }
        };
        result.map_err(failure::publish_failure)
    }
}

impl Publisher for NatsPublisher {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let subject = self.subject_for(&event.stream, &event.event_type)?;

        let source = self.source.render(&event.stream, &event.event_type);
        let headers = binding::headers(event, &source)?;
        let size = headers.wire_len + event.payload.as_bytes().len();
        let max_payload = self.client.max_payload();
        if size > max_payload {
            return Err(failure::too_large(size, max_payload));
        }

        if self.client.connection_state() != State::Connected {
            return Err(failure::not_connected(&self.url));
        }

        let message = PublishMessage::build()
            .payload(event.payload.as_bytes().to_vec().into())
            .headers(headers.map);
        let ack = self.send(subject, message).await?;

        if ack.duplicate {
            debug!(
                event_id = %event.event_id,
                stream = %ack.stream,
                seq = ack.sequence,
                "jetstream dropped a duplicate"
            );
        }
        Ok(())
    }
}

impl fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("url", &self.url)
            .field("subject", &self.subject)
            .field("source", &self.source)
            .field("ack_timeout", &self.ack_timeout)
            .finish_non_exhaustive()
    }
}

/// Logs the connection's ups and downs and counts its losses in `disconnected`.
fn connection_events(
    disconnected: watch::Sender<u64>,
    url: String,
) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    move |event| {
        match event {
            async_nats::Event::Connected => info!(url = %url, "connected to nats"),
            async_nats::Event::Disconnected => {
                warn!(url = %url, "lost connection to nats");
                disconnected.send_modify(|count| *count += 1);
            }
            async_nats::Event::Closed => {
                // Reconnects never give up, so only dropping the client closes it.
                info!(url = %url, "closed nats connection");
                disconnected.send_modify(|count| *count += 1);
            }
            async_nats::Event::LameDuckMode => {
                warn!(url = %url, "nats server is shutting down")
            }
            other => debug!(url = %url, event = %other, "nats connection event"),
        }
        std::future::ready(())
    }
}

/// Resolves when the connection is lost; never, once nobody can report it.
async fn connection_lost(disconnects: &mut watch::Receiver<u64>) {
    if disconnects.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Parses the subject template and checks that it can make a valid subject.
fn subject_template(text: &str) -> Result<Template> {
    let template = Template::parse(text)?;
    let sample = template.render("stream", "type");
    if let Some(problem) = subject_problem(&sample) {
        return Err(Error::config(format!(
            "subject template {text:?} cannot make a valid subject: {problem}"
        )));
    }
    Ok(template)
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

/// Parses the comma-separated server list; `shown` is the redacted form for errors.
pub(crate) fn servers(url: &str, shown: &str) -> Result<Vec<ServerAddr>> {
    let mut servers = Vec::new();
    for server in url.split(',').map(str::trim) {
        let addr = ServerAddr::from_str(server)
            .map_err(|e| Error::config(format!("invalid nats url {shown}")).with_source(e))?;
        if addr.tls_required() && !tls_available() {
            return Err(Error::config(format!(
                "nats url {shown} asks for tls, which needs the `tls` feature of \
                 outbox-nats or an installed rustls crypto provider"
            )));
        }
        servers.push(addr);
    }
    Ok(servers)
}

fn tls_available() -> bool {
    cfg!(feature = "tls") || async_nats::rustls::crypto::CryptoProvider::get_default().is_some()
}

fn is_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err)
        if err.code() == 404 || err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn already_exists(kind: &CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(err)
        if err.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn subject_templates_that_cannot_work_are_refused() {
        for text in [
            "{stream}..{type}",
            " {stream}.{type}",
            "{stream}.*",
            "{stream}.{key}",
        ] {
            let err = subject_template(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        }
        subject_template("shop.{stream}.{type}").unwrap();
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
    fn server_lists_are_parsed_and_secrets_stay_hidden() {
        let servers = servers("nats://a:4222, b:4223", "shown").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].port(), 4223);

        let err = servers_err("http://relay:pw@h:1");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.chain().contains("pw"), "{}", err.chain());
    }

    fn servers_err(url: &str) -> Error {
        servers(url, &redact_url(url)).unwrap_err()
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_a_provider_is_a_configuration_error() {
        let err = servers_err("tls://h:4222");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("`tls` feature"));
    }
}

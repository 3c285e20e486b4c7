//! The webhook destination of the outbox: events as signed HTTP POSTs.
//!
//! [`WebhookPublisher`] implements [`outbox_core::Publisher`]: each event becomes
//! one POST in the CloudEvents HTTP binding, signed in the Standard Webhooks
//! scheme, and is done when the endpoint answers 2xx. [`WebhookReceiver`] is the
//! other end, an HTTP server implementing [`outbox_core::Consumer`];
//! [`verify`] checks a signature for receivers written without it.
//!
//! # The request
//!
//! Binary content mode: the body is the payload, byte for byte.
//!
//! | header | value |
//! | --- | --- |
//! | `Content-Type` | the payload's media type (`datacontenttype`) |
//! | `ce-specversion` | `1.0` |
//! | `ce-id` | the event id |
//! | `ce-source` | [`WebhookOptions::source_template`], by default `/outbox/{stream}` |
//! | `ce-type` | the event type |
//! | `ce-time` | when the event was stored, RFC 3339 in UTC |
//! | `ce-partitionkey` | the key |
//! | `ce-sequence` | the key's position, zero-padded to 19 digits |
//! | `ce-outboxstream` | the outbox stream |
//! | `webhook-id` | the event id |
//! | `webhook-timestamp` | the send time, in seconds since the Unix epoch |
//! | `webhook-signature` | one `v1,` signature per secret, separated by spaces (see [`sign`]) |
//! | the event's own headers | as they are, names in lower case |
//!
//! A signature is `v1,` and the base64 of HMAC-SHA256, keyed by the secret, over
//! `{webhook-id}.{webhook-timestamp}.{body}`.
//!
//! `ce-` values are percent-encoded where the binding requires it (space, `"`,
//! `%` and anything outside printable ASCII), so keys and types may hold any
//! text. An event header whose name is in [`RESERVED_HEADERS`] (hop-by-hop
//! headers, the ones the client sets, the signature's) or starts with `ce-` is
//! left out of the request, with a debug log of its name; HTTP compares header
//! names ignoring case, so two event headers differing only in case arrive as
//! one name with two values, of which a receiver keeps the first.
//!
//! The timestamp is taken when the request is sent, so a retry carries a fresh
//! one and a fresh signature; the event id stays the same and is what a
//! receiver deduplicates on. Secrets are given in the Standard Webhooks form
//! `whsec_<base64>` or as raw bytes (see [`WebhookSecret`]). With two secrets
//! configured, every request carries two signatures, which lets receivers move
//! to a new key one by one.
//!
//! # Acknowledgement
//!
//! The endpoint's answer is the acknowledgement: 2xx means the endpoint took
//! the event. What it did with it before answering is the endpoint's affair; an
//! endpoint that answers before storing the event durably can lose it. The
//! answers and failures map onto the relay's actions as tabled in
//! [`WebhookPublisher`]'s documentation: 408, 429 and 5xx are retried, other
//! 4xx and every 3xx dead-letter the event, an endpoint that cannot be reached
//! pauses the relay. The relay sends one event per key at a time, so each key
//! reaches the endpoint in order.
//!
//! # Receiving
//!
//! [`WebhookReceiver`] holds each request open until its delivery is settled:
//! acknowledged answers 204, rejected 422 (400 for a malformed request), and a
//! delivery dropped unsettled 503, so the sender sends it again. A request whose
//! signature does not verify gets 401 and never becomes a delivery. The full
//! table is in its documentation.
//!
//! # Options
//!
//! [`WebhookOptions`]: `url` (required, a template), `secrets` (required, one or
//! more), `source_template` (`/outbox/{stream}`), `timeout` (10 s),
//! `connect_timeout` (5 s), `max_in_flight` (64), `user_agent`.
//! [`ReceiverOptions`]: `listen` (`127.0.0.1:8080`), `secret` (required),
//! `tolerance` (5 minutes), `max_in_flight` (256), `max_body_bytes` (2 MiB).
//!
//! # Destination
//!
//! [`WebhookOptions::url`] is a [`Template`]: `{stream}` and `{type}` are
//! replaced by the event's outbox stream and type, percent-encoded, so
//! `http://hooks.internal/in/{stream}/{type}` sends `order.placed` of `orders` to
//! `http://hooks.internal/in/orders/order.placed`. Without placeholders every
//! event goes to the one URL. There is no default URL.
//!
//! ```no_run
//! use outbox_core::Publisher;
//! use outbox_webhook::{WebhookOptions, WebhookPublisher, WebhookSecret};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! let publisher = WebhookPublisher::connect(WebhookOptions {
//!     url: "http://127.0.0.1:9000/events/{stream}".into(),
//!     secrets: vec![WebhookSecret::parse("whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdA==")?],
//!     ..WebhookOptions::default()
//! })
//! .await?;
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Known limits
//!
//! - The signature covers the id, the timestamp and the body, as the scheme
//!   defines it, not the `ce-` headers: whoever can replay a captured request
//!   within the tolerance can alter its type or key. Use TLS; the receiver also
//!   refuses a `ce-id` other than the signed `webhook-id`, so an altered replay
//!   carries an id the inbox has already seen.
//! - `Retry-After` is not honoured; the relay's backoff decides.
//! - HTTP/1.1 only, no proxy, no redirects followed.
//! - A receiver that answers 401 because its secret is not the sender's makes the
//!   sender dead-letter every event it sends, like any other 4xx.
//! - The `tls` feature is compiled and its URLs accepted, but no test here runs
//!   against an `https://` endpoint.
//!
//! # Features
//!
//! - `tls`: `https://` endpoints, through rustls with the system's root
//!   certificates. Unless the application installed a rustls crypto provider
//!   already, building a publisher installs `ring` as the process-wide default.

mod binding;
mod failure;
mod options;
mod publisher;
mod receiver;
mod signature;
mod template;

pub use binding::RESERVED_HEADERS;
pub use options::{DEFAULT_SOURCE_TEMPLATE, ReceiverOptions, WebhookOptions};
pub use outbox_core::Template;
pub use publisher::WebhookPublisher;
pub use receiver::WebhookReceiver;
pub use signature::{
    DEFAULT_TOLERANCE, SECRET_PREFIX, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
    WebhookSecret, sign, verify,
};
pub use template::render_url;

//! The NATS JetStream destination of the outbox.
//!
//! [`NatsPublisher`] implements [`outbox_core::Publisher`]: each event becomes one
//! JetStream message in the CloudEvents NATS binding, deduplicated by its event id
//! and acknowledged by a PubAck. [`NatsOptions`] holds the settings, [`Template`]
//! the subject and source rules.
//!
//! # Subjects and sources
//!
//! An event's subject is [`NatsOptions::subject_template`] with `{stream}` replaced
//! by the outbox stream and `{type}` by the event type; the default,
//! `{stream}.{type}`, sends `order.placed` of `orders` to `orders.order.placed`. A
//! subject with an empty token, whitespace or a wildcard is refused before sending
//! (see [`check_subject`]). The CloudEvents `source` is
//! [`NatsOptions::source_template`] rendered the same way for each event, by
//! default `/outbox/{stream}`.
//!
//! ```no_run
//! use outbox_core::Publisher;
//! use outbox_nats::{NatsOptions, NatsPublisher};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! let publisher = NatsPublisher::connect(NatsOptions {
//!     url: "nats://127.0.0.1:4222".into(),
//!     ..NatsOptions::default()
//! })
//! .await?;
//! publisher
//!     .ensure_stream("ORDERS", &["orders.>"], std::time::Duration::from_secs(120))
//!     .await?;
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `tls`: lets `tls://` URLs work by building in the `ring` crypto provider.
//!   Without it, TLS needs a rustls provider installed by the application, and a
//!   `tls://` URL is otherwise refused when connecting.

mod binding;
mod consumer;
mod failure;
mod options;
mod publisher;
mod template;

pub use consumer::{NatsConsumer, NatsConsumerOptions};
pub use options::{DEFAULT_SOURCE_TEMPLATE, DEFAULT_SUBJECT_TEMPLATE, DEFAULT_URL, NatsOptions};
pub use outbox_core::Template;
pub use publisher::NatsPublisher;
pub use template::check_subject;

//! The RabbitMQ destination of the outbox, and a consumer adapter to read it back.
//!
//! [`RabbitPublisher`] implements [`outbox_core::Publisher`]: each event becomes
//! one persistent AMQP 0-9-1 message in the CloudEvents AMQP binding's binary
//! mode, published with `mandatory` on a confirm-mode channel, and `publish`
//! resolves on the broker's confirm. [`RabbitConsumer`] implements
//! [`outbox_core::Consumer`] over a manual-ack subscription. [`RabbitOptions`]
//! and [`RabbitConsumerOptions`] hold the settings; [`declare_queue`] and
//! [`RabbitPublisher::ensure_exchange`] set up the topology.
//!
//! # Mapping
//!
//! | envelope | AMQP message |
//! | --- | --- |
//! | payload | body |
//! | payload media type (`datacontenttype`) | `content_type` property |
//! | `event_id` | `message_id` property, and header `cloudEvents_id` |
//! | `created_at` | `timestamp` property (whole seconds), and `cloudEvents_time` (RFC 3339, µs) |
//! | `event_type` | header `cloudEvents_type` |
//! | (source template) | header `cloudEvents_source` |
//! | `key` | header `cloudEvents_partitionkey` |
//! | `seq` | header `cloudEvents_sequence` (zero-padded) |
//! | `stream` | header `cloudEvents_outboxstream` |
//! | | header `cloudEvents_specversion` = `1.0` |
//! | `headers` | headers of the same names, as strings |
//! | | `delivery_mode` = 2 (persistent) |
//!
//! The CloudEvents AMQP binding is written for AMQP 1.0; its application
//! properties are the `headers` table of AMQP 0-9-1, which RabbitMQ also maps
//! onto each other. The binding allows the prefixes `cloudEvents_` and
//! `cloudEvents:` and prefers the first, which JMS clients and selectors can
//! read, so that is what this crate writes ([`ATTRIBUTE_PREFIX`]). The consumer
//! reads both (ignoring the prefix's case), preferring `cloudEvents_` when a
//! message has both. Values are written as strings, the binding's canonical
//! form. An event header named like one of the attribute headers (ignoring
//! case) is replaced by the attribute; RabbitMQ acts on some header names, such
//! as `CC` and `BCC` (sender-selected routing), so events carrying them are
//! routed accordingly.
//!
//! # Destinations and order
//!
//! The exchange is [`RabbitOptions::exchange_template`] and the routing key
//! [`RabbitOptions::routing_key_template`], both over `{stream}` and `{type}`; by
//! default every event goes to the topic exchange `outbox` with the routing key
//! `{stream}.{type}`, so `order.placed` of `orders` is routed by
//! `orders.order.placed` and a queue bound by `orders.#` receives the stream.
//! The publisher never creates anything unless
//! [`RabbitOptions::declare_exchange`] is set. The CloudEvents `source` is
//! [`RabbitOptions::source_template`], by default `/outbox/{stream}`.
//!
//! The ordering unit is the queue: RabbitMQ keeps the messages of a queue in the
//! order they were enqueued, and the relay publishes a key's next event only after
//! the previous one is confirmed, so a queue holds each key's events in order.
//! A consumer keeps that order only as long as it is the queue's single reader;
//! redeliveries (after a dropped delivery or a lost connection) come back ahead
//! of newer messages but after ones already delivered.
//!
//! # Acknowledgements
//!
//! A confirm means the broker took responsibility for the message: it is in each
//! queue it was routed to, written to disk for durable queues. A message routed
//! to no queue is returned and then confirmed; this crate counts it as a failure
//! ([`Transient`](outbox_core::ErrorKind::Transient), see
//! [`RabbitPublisher`] for why not permanent). RabbitMQ does not deduplicate:
//! a retry after a lost confirm may store a second copy, which consumers drop by
//! the event id.
//!
//! ```no_run
//! use outbox_core::Publisher;
//! use outbox_rabbitmq::{RabbitOptions, RabbitPublisher};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! let publisher = RabbitPublisher::connect(RabbitOptions {
//!     url: "amqp://relay:secret@rabbit.internal:5672/%2f".into(),
//!     ..RabbitOptions::default()
//! })
//! .await?;
//! publisher.ensure_exchange("outbox").await?;
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Known limits
//!
//! - No TLS: `amqps://` URLs are refused, since lapin's TLS features are left off.
//! - One channel per publish awaiting its confirm (see [`RabbitPublisher`]), so
//!   [`RabbitOptions::max_in_flight`] channels at most.
//! - No deduplication on the broker, and no reconnect in the background: the
//!   publisher and the consumer reconnect on their next call.
//! - Queues made by [`declare_queue`] are classic durable queues; quorum queues
//!   and other arguments need declaring by other means.
//! - Structured content mode is not offered.

mod binding;
mod connection;
mod consumer;
mod failure;
mod options;
mod publisher;
mod template;

pub use binding::{ATTRIBUTE_PREFIX, COLON_ATTRIBUTE_PREFIX};
pub use consumer::{QueueSpec, RabbitConsumer, declare_queue};
pub use options::{
    DEFAULT_EXCHANGE_TEMPLATE, DEFAULT_ROUTING_KEY_TEMPLATE, DEFAULT_SOURCE_TEMPLATE, DEFAULT_URL,
    RabbitConsumerOptions, RabbitOptions,
};
pub use outbox_core::Template;
pub use publisher::RabbitPublisher;
pub use template::{check_exchange, check_routing_key};

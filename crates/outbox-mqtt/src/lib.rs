//! The MQTT destination of the outbox, and a consumer for it.
//!
//! [`MqttPublisher`] implements [`outbox_core::Publisher`]: each event becomes
//! one MQTT 3.1.1 message with QoS 1, resolved by its PUBACK. [`MqttConsumer`]
//! implements [`outbox_core::Consumer`] over a persistent session with manual
//! acknowledgement. [`MqttOptions`] and [`MqttConsumerOptions`] hold the
//! settings, [`TopicTemplate`] the topic rule.
//!
//! # The message
//!
//! MQTT 3.1.1 has no message headers, so the CloudEvents MQTT binding allows
//! only its structured content mode there: the body of the message is the
//! whole event as one CloudEvents JSON object, written by
//! [`outbox_file::encode_structured`] (the format of the file publisher's
//! lines, without the line feed) and read back by [`outbox_file::parse_line`].
//! The message has no content type of its own (3.1.1 cannot carry one): the
//! body is `application/cloudevents+json` by convention.
//!
//! | envelope | in the JSON body |
//! | --- | --- |
//! | `event_id` | `id` |
//! | (always `1.0`) | `specversion` |
//! | [`MqttOptions::source_template`] rendered | `source` |
//! | `event_type` | `type` |
//! | `created_at` | `time` (RFC 3339, UTC, microseconds) |
//! | payload media type | `datacontenttype` |
//! | `key` | `partitionkey` |
//! | `seq` | `sequence` (zero-padded to 19 digits) |
//! | `stream` | `outboxstream` |
//! | headers | `outboxheaders`, a JSON object in a string; absent if none |
//! | JSON payload | `data`, embedded as written |
//! | any other payload | `data_base64` |
//!
//! The message is sent with QoS 1 and the retain flag off, on the topic below.
//!
//! # Topics and ordering
//!
//! An event's topic is [`MqttOptions::topic_template`] with `{stream}`,
//! `{type}` and `{key}` replaced by the event's values, each escaped into one
//! topic level by [`escape_level`] (`/` becomes `%2F`, `+` `%2B`, `#` `%23`, `$`
//! `%24`, `%` `%25`), so no value can add a level or a wildcard. The default,
//! [`DEFAULT_TOPIC_TEMPLATE`] `outbox/{stream}`, sends every event of `orders`
//! to `outbox/orders`.
//!
//! MQTT promises order per topic only: the broker forwards the QoS 1 messages
//! one client published to one topic in the order it published them. One topic
//! per stream puts every key of the stream under that promise, whatever its
//! event types. A template with `{key}` and without `{type}` gives each key a
//! topic of its own, which the promise covers as well, and lets a subscriber
//! filter by key, at the price of one topic per key in the broker. With
//! `{type}`, the events of one key spread over several topics; they should
//! still arrive in order, since the relay has one event of a key in flight at a
//! time and Mosquitto queues a message for each subscriber as it accepts it,
//! but no promise of MQTT covers that and it is not tested here.
//!
//! Redelivery can still break the order a consumer sees: a message left
//! unacknowledged comes again only when the session reconnects, after the
//! later messages the consumer did acknowledge. Mosquitto's own documentation
//! promises in-order delivery only with `max_inflight_messages 1`. A consumer
//! that settles each message of a key before it takes the next one of that
//! key, and goes on past a message only by settling it, sees each key in
//! order; the `sequence` attribute lets any consumer check.
//!
//! # What a PUBACK means
//!
//! A PUBACK says the broker took the message and queued it for every
//! subscription that matched at that moment. It does not say that it was
//! written to disk: Mosquitto keeps messages in memory and saves them only at
//! its `autosave_interval` and at shutdown (with `persistence true`), so a
//! crashed broker loses what it acknowledged since. Nor does it say anyone will
//! read it:
//!
//! - a message on a topic that no subscription matches is acknowledged and
//!   dropped. Create the consumers' sessions first
//!   ([`MqttConsumer::ensure_session`]); a persistent session keeps its
//!   subscriptions while the consumer is away;
//! - Mosquitto acknowledges and drops a publish that its ACL denies to the
//!   publisher's user, since MQTT 3.1.1 has no way to refuse it;
//! - Mosquitto acknowledges and drops a message over its
//!   `message_size_limit` (none by default);
//! - Mosquitto queues at most `max_queued_messages` (1,000 by default) per
//!   session beyond those in flight and drops further QoS 1 messages.
//!
//! There is no deduplication: a message whose PUBACK was lost is published
//! again by the relay, and a consumer receives both copies. The CloudEvents `id`
//! is the event id, for the consumer's inbox.
//!
//! ```no_run
//! use outbox_core::Publisher;
//! use outbox_mqtt::{MqttConsumer, MqttConsumerOptions, MqttOptions, MqttPublisher};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! // The consumer's session must exist before anything is published.
//! MqttConsumer::ensure_session(MqttConsumerOptions {
//!     client_id: "billing".into(),
//!     topic_filter: "outbox/orders".into(),
//!     ..MqttConsumerOptions::default()
//! })
//! .await?;
//!
//! let publisher = MqttPublisher::connect(MqttOptions {
//!     url: "mqtt://relay:secret@127.0.0.1:1883".into(),
//!     ..MqttOptions::default()
//! })
//! .await?;
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `tls`: lets `mqtts://` and `ssl://` URLs work, through rustls with its
//!   default crypto provider and the system's root certificates. It has not
//!   been tried against a TLS broker here.
//!
//! # Known limits
//!
//! - MQTT 5 (user properties, hence the binary content mode; negative PUBACKs)
//!   is not supported; the publisher speaks 3.1.1 only.
//! - A message over the broker's `max_packet_size` makes Mosquitto close the
//!   connection, which the relay sees as `Unavailable` again and again; keep
//!   [`MqttOptions::max_message_bytes`] within the broker's limit, so that such
//!   an event fails as permanent instead.
//! - A message over [`MqttConsumerOptions::max_message_bytes`], which only a
//!   publisher other than this crate's can send, closes the consumer's
//!   connection; the broker sends it again on every reconnect, and the
//!   consumer receives nothing until the limit is raised or the session is
//!   deleted.
//! - [`outbox_core::Delivery::ack`] queues the PUBACK and returns; it is not
//!   confirmed by the broker (MQTT has no answer to a PUBACK). A connection
//!   lost before it was written means the message comes again.

mod connection;
mod consumer;
mod failure;
mod options;
mod publisher;
mod topic;

pub use consumer::MqttConsumer;
pub use options::{
    DEFAULT_SOURCE_TEMPLATE, DEFAULT_TOPIC_FILTER, DEFAULT_TOPIC_TEMPLATE, DEFAULT_URL,
    MqttConsumerOptions, MqttOptions,
};
pub use publisher::MqttPublisher;
pub use topic::{TopicTemplate, escape_level};

//! The Kafka destination of the outbox, and a consumer adapter for its events.
//!
//! [`KafkaPublisher`] implements [`outbox_core::Publisher`] with an idempotent
//! librdkafka producer: each event becomes one record in the CloudEvents Kafka
//! binding, resolved by its delivery report under `acks=all`. [`KafkaConsumer`]
//! implements [`outbox_core::Consumer`] as a member of a consumer group, with
//! manual acknowledgement. [`KafkaOptions`] and [`KafkaConsumerOptions`] hold the
//! settings, [`Template`] the topic and source rules.
//!
//! # Mapping
//!
//! | envelope | Kafka record |
//! | --- | --- |
//! | `key` | record key, so it picks the partition; also `ce_partitionkey` |
//! | `payload` bytes | record value |
//! | payload media type | `content-type` header |
//! | `event_id` | `ce_id` |
//! | `event_type` | `ce_type` |
//! | (source template) | `ce_source` |
//! | `created_at` | `ce_time` (RFC 3339, UTC, microseconds) |
//! | `seq` | `ce_sequence` (zero-padded to 19 digits) |
//! | `stream` | `ce_outboxstream`, and the topic by the template |
//! | — | `ce_specversion` = `1.0` |
//! | `headers` | headers of the same name, unless one collides with the above |
//!
//! # Topics and ordering
//!
//! An event's topic is [`KafkaOptions::topic_template`] with `{stream}` replaced
//! by the outbox stream and `{type}` by the event type; the default, `{stream}`,
//! sends every event of `orders` to the topic `orders`. A name Kafka cannot take
//! is refused before sending (see [`check_topic`]). The key picks the partition
//! with the Java client's hash (`murmur2_random`), so one key stays in one
//! partition as long as the partition count does not change. Kafka keeps the
//! order of records within a partition; the idempotent producer with at most
//! five requests in flight per connection keeps that order through its own
//! retries, and the relay publishes one event per key at a time, so the events
//! of one key are stored in the order they were written. Adding partitions to a
//! topic moves keys to other partitions: events of one key written before and
//! after may then be read out of order by different consumers.
//!
//! # Acknowledgements
//!
//! A publish resolves once every in-sync replica stored the record (`acks=all`);
//! how many that is depends on the topic's replication and the cluster's
//! `min.insync.replicas`. There is no broker-side deduplication by event id: a
//! republished event is a second record with the same `ce_id`, and consumers
//! deduplicate through their inbox. On the consumer side, `ack` and `reject`
//! both advance the partition's committed offset as far as every delivery below
//! is settled; see [`KafkaConsumer`].
//!
//! ```no_run
//! use outbox_core::Publisher;
//! use outbox_kafka::{KafkaOptions, KafkaPublisher};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! let publisher = KafkaPublisher::connect(KafkaOptions {
//!     brokers: "127.0.0.1:9092".into(),
//!     ..KafkaOptions::default()
//! })
//! .await?;
//! publisher.ensure_topic("orders", 12, 3).await?;
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Options
//!
//! | publisher ([`KafkaOptions`]) | default | librdkafka property |
//! | --- | --- | --- |
//! | `brokers` | `127.0.0.1:9092` | `bootstrap.servers` |
//! | `topic_template` | `{stream}` | — |
//! | `source_template` | `/outbox/{stream}` | — |
//! | `message_timeout` | 10 s | `message.timeout.ms` |
//! | `connect_timeout` | 5 s | — (first metadata request) |
//! | `max_in_flight` | 5 (1 to 5) | `max.in.flight.requests.per.connection` |
//! | `linger` | 5 ms | `linger.ms` |
//! | `client_id` | `outbox` | `client.id` |
//! | `properties` | none | any other, as given |
//!
//! | consumer ([`KafkaConsumerOptions`]) | default | librdkafka property |
//! | --- | --- | --- |
//! | `brokers` | `127.0.0.1:9092` | `bootstrap.servers` |
//! | `group_id` | `outbox` | `group.id` |
//! | `topics` | (required) | subscription |
//! | `from_beginning` | `true` | `auto.offset.reset` |
//! | `max_unsettled` | 1,000 | — |
//! | `commit_interval` | 1 s | `auto.commit.interval.ms` |
//! | `session_timeout` | 10 s | `session.timeout.ms` |
//! | `connect_timeout` | 5 s | — (first metadata request) |
//! | `client_id` | `outbox` | `client.id` |
//! | `properties` | none | any other, as given |
//!
//! Both always set `reconnect.backoff.max.ms` to 1 s unless `properties` says
//! otherwise; the producer always sets `enable.idempotence=true`, `acks=all`
//! and, unless given, `partitioner=murmur2_random`; the consumer always sets
//! `enable.auto.commit=true` with `enable.auto.offset.store=false`.
//!
//! # Known limits
//!
//! - No TLS and no SASL but PLAIN: rdkafka is built without its `ssl` and
//!   `gssapi` features (they need OpenSSL and libsasl2), so
//!   `security.protocol=ssl` or `sasl_ssl`, and the SCRAM, GSSAPI and
//!   OAUTHBEARER mechanisms, are refused as configuration errors when a client
//!   is made. SASL PLAIN over plaintext works.
//! - `reject` cannot dead-letter: Kafka has none; the record is skipped.
//! - A dropped delivery is read again only after the member restarts or loses
//!   the partition, not after a timeout.
//! - The tests run against tansu 0.6, a Kafka-API broker with in-memory storage
//!   and one node. It supports what the tests use (topic creation and deletion,
//!   the idempotent producer, consumer groups, offset commits), so replication,
//!   in-sync replica counts, broker failover and rebalances between several
//!   members are not exercised. Two tansu behaviours differ from Kafka: it
//!   answers a group's first JoinGroup only after about half the session
//!   timeout, and after a restart it has forgotten every producer id, so a
//!   publisher that was connected before can no longer publish (librdkafka
//!   retries with a bumped epoch forever) and must be made anew. A Kafka
//!   broker keeps producer state across restarts.
//! - The replacement of a producer after a fatal error is not tested:
//!   librdkafka offers no way to cause one from outside.

mod binding;
mod consumer;
mod context;
mod failure;
mod offsets;
mod options;
mod publisher;
mod template;

pub use consumer::KafkaConsumer;
pub use options::{
    DEFAULT_BROKERS, DEFAULT_GROUP_ID, DEFAULT_SOURCE_TEMPLATE, DEFAULT_TOPIC_TEMPLATE,
    KafkaConsumerOptions, KafkaOptions, MAX_IN_FLIGHT_LIMIT,
};
pub use outbox_core::Template;
pub use publisher::KafkaPublisher;
pub use template::{MAX_TOPIC_LEN, check_topic};

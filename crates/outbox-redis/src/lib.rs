//! The Redis Streams destination of the outbox.
//!
//! [`RedisPublisher`] implements [`outbox_core::Publisher`]: each event becomes
//! one entry of a Redis stream, added with `XADD`. [`RedisConsumer`] implements
//! [`outbox_core::Consumer`]: it reads a stream through a consumer group and
//! acknowledges with `XACK`. [`RedisOptions`] and [`RedisConsumerOptions`] hold
//! the settings.
//!
//! # Entries
//!
//! Redis Streams have no CloudEvents binding; this crate lays an event out in the
//! manner of the binary content mode, one field per attribute under its bare
//! CloudEvents name, in this order:
//!
//! | field | value |
//! | --- | --- |
//! | `specversion` | `1.0` |
//! | `id` | the event id (UUIDv7) |
//! | `source` | the source template rendered for the event |
//! | `type` | the event type |
//! | `time` | when the event was stored, RFC 3339 in UTC with microseconds |
//! | `datacontenttype` | the payload's media type |
//! | `partitionkey` | the event's key |
//! | `sequence` | the key's position, zero-padded to 19 digits |
//! | `outboxstream` | the outbox stream |
//! | `data` | the payload bytes, unchanged |
//! | `header:<name>` | each of the event's own headers, by name |
//!
//! No attribute name contains a colon, so an event header can never stand in for
//! an attribute. A reader ignores fields it does not know.
//!
//! # Streams
//!
//! An event goes to the Redis stream whose key is
//! [`RedisOptions::stream_template`] with `{stream}` replaced by the outbox stream
//! and `{type}` by the event type; the default, `outbox:{stream}`, sends events
//! of `orders` to `outbox:orders`. The CloudEvents `source` is
//! [`RedisOptions::source_template`] rendered the same way, by default
//! `/outbox/{stream}`.
//!
//! The Redis stream is the unit of order: entries are numbered as they are added,
//! and the relay publishes one event of a key at a time, so the events of a key
//! are in order within their stream. A template with `{type}` spreads one key
//! over several streams, with no order between them.
//!
//! # Acknowledgements
//!
//! A publish resolves with the `XADD` reply, the id of the new entry. That reply
//! comes from the server's memory: whether the entry survives a crash of the
//! server depends on its persistence settings (an append-only file with
//! `appendfsync always` writes it to disk before answering; the default,
//! `everysec`, can lose about a second of writes; snapshots alone lose everything
//! since the last one) and on replication. The server this project tests against
//! keeps nothing on disk: a restart empties it. With
//! [`RedisOptions::wait_replicas`] above zero, a publish also waits, with `WAIT`,
//! until that many replicas have the entry; replication is asynchronous, so even
//! that does not make the write survive every failover.
//!
//! Redis 7 does not deduplicate: an entry added twice (a retry after a reply was
//! lost, a relay crash between ack and commit) is in the stream twice, with the
//! same `id` field. The consumer's inbox drops the repeat by event id.
//!
//! # Failures
//!
//! | what failed | kind |
//! | --- | --- |
//! | connection refused, reset or lost, I/O errors, no reply in time | `Unavailable` |
//! | `READONLY`, `MASTERDOWN`, `CLUSTERDOWN`, `NOAUTH`, `WRONGPASS`, `NOREPLICAS` | `Unavailable` |
//! | `OOM`, `BUSY`, `LOADING`, `TRYAGAIN`, fewer replicas than asked for | `Transient` |
//! | `WRONGTYPE` (the key is not a stream), `NOPERM`, any other error reply | `Permanent` |
//! | invalid options, a URL the client refuses, credentials refused when connecting | `Config` |
//!
//! # Options
//!
//! The publisher's [`RedisOptions`] (all with defaults for a local server):
//! `url` (`redis://127.0.0.1:6379`), `stream_template` (`outbox:{stream}`),
//! `source_template` (`/outbox/{stream}`), `max_len` (none), `wait_replicas` (0)
//! and `wait_timeout` (1 s), `response_timeout` (5 s), `connect_timeout` (5 s).
//!
//! The consumer's [`RedisConsumerOptions`]: `url`, `stream_key`, `group`,
//! `consumer` (a name that must stay the same across restarts), `batch_size`
//! (100), `max_in_flight` (1,000), `block` (2 s), `claim_min_idle` (60 s),
//! `dead_letter_stream` (none), `create_group` (yes), `response_timeout` and
//! `connect_timeout` (5 s each).
//!
//! # Example
//!
//! ```no_run
//! use outbox_core::{Consumer, Publisher};
//! use outbox_redis::{RedisConsumer, RedisConsumerOptions, RedisOptions, RedisPublisher};
//!
//! # async fn run(event: outbox_core::Event) -> outbox_core::Result<()> {
//! let publisher = RedisPublisher::connect(RedisOptions {
//!     url: "redis://127.0.0.1:6379".into(),
//!     max_len: Some(1_000_000),
//!     ..RedisOptions::default()
//! })
//! .await?;
//! publisher.publish(&event).await?;
//!
//! let key = publisher.stream_key(&event.stream, &event.event_type);
//! let options = RedisConsumerOptions::new(&key, "billing", "billing-1");
//! let mut consumer = RedisConsumer::connect(options).await?;
//! if let Some(delivery) = consumer.next().await? {
//!     delivery.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Known limits
//!
//! - Standalone servers only: no cluster or Sentinel support, and no TLS, since
//!   the `redis` crate's TLS features are not turned on.
//! - No size check before sending: the server refuses values above its
//!   `proto-max-bulk-len` (512 MB by default); the relay's store limits payloads
//!   far below that.
//! - `MAXLEN` trimming ([`RedisOptions::max_len`]) drops entries whether or not
//!   they were consumed.
//! - Newer Redis servers can deduplicate `XADD` themselves (`IDMP`); this crate
//!   does not use it, as Redis 7 lacks it.
//! - The consumer's redeliveries (own pending entries on start, claims) break key
//!   order for the entries redelivered; see [`RedisConsumer`].

mod consumer;
mod entry;
mod failure;
mod options;
mod publisher;

pub use consumer::RedisConsumer;
pub use options::{
    DEFAULT_SOURCE_TEMPLATE, DEFAULT_STREAM_TEMPLATE, DEFAULT_URL, RedisConsumerOptions,
    RedisOptions,
};
pub use publisher::RedisPublisher;

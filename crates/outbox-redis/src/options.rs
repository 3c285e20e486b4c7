//! The settings of the Redis publisher and consumer: where the server is, how
//! stream keys and sources are named, and how long to wait for the server.
//!
//! Every publisher field has a default that works against a local server. URLs are
//! shown with their password masked wherever this crate prints them.

use std::fmt;
use std::time::Duration;

/// The server the publisher and consumer connect to unless told otherwise.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The default stream key rule: `outbox:` followed by the outbox stream.
pub const DEFAULT_STREAM_TEMPLATE: &str = "outbox:{stream}";

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// How the publisher reaches Redis and names what it writes.
///
/// ```
/// use std::time::Duration;
/// use outbox_redis::RedisOptions;
///
/// let options = RedisOptions {
///     url: "redis://relay:secret@redis.internal:6379/0".into(),
///     stream_template: "shop:{stream}".into(),
///     max_len: Some(1_000_000),
///     ..RedisOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The server, as `redis://[user:password@]host[:port][/db]` (or `rediss://`
    /// when the `redis` crate is built with TLS, which this crate does not turn
    /// on). Default: [`DEFAULT_URL`].
    pub url: String,
    /// The key of the Redis stream each event is added to, a template over
    /// `{stream}` and `{type}`. Default: [`DEFAULT_STREAM_TEMPLATE`], so events of
    /// `orders` go to `outbox:orders`. Order is kept per key within one Redis
    /// stream only: a template with `{type}` splits a key's events over several
    /// streams, and a consumer then sees their relative order nowhere.
    pub stream_template: String,
    /// The CloudEvents `source` of each event, a template over `{stream}` and
    /// `{type}`. Default: [`DEFAULT_SOURCE_TEMPLATE`].
    pub source_template: String,
    /// Trims each stream to about this many entries on every add
    /// (`XADD ... MAXLEN ~ N`). Default: `None`, no trimming.
    ///
    /// Trimming drops the oldest entries whether or not a consumer group has read
    /// them: an entry still unread or pending when it is trimmed is lost to its
    /// consumers. Set it well above the backlog consumers may build up.
    pub max_len: Option<u64>,
    /// After each add, waits until this many replicas have the write (`WAIT`).
    /// Default: 0, no waiting. A publish for which fewer replicas confirm within
    /// [`RedisOptions::wait_timeout`] fails as transient, although the entry
    /// stays in the stream: the retry adds it a second time, which the inbox
    /// drops. `WAIT` holds up the connection it runs on, so every publish waits
    /// for the replication of the ones before it, and throughput falls to about
    /// one publish per replication round trip.
    pub wait_replicas: u32,
    /// How long `WAIT` may take. Default: 1 second.
    pub wait_timeout: Duration,
    /// How long one command waits for its reply. Default: 5 seconds. With
    /// `wait_replicas` above zero it must exceed `wait_timeout`.
    pub response_timeout: Duration,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: DEFAULT_URL.to_owned(),
            stream_template: DEFAULT_STREAM_TEMPLATE.to_owned(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            max_len: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("stream_template", &self.stream_template)
            .field("source_template", &self.source_template)
            .field("max_len", &self.max_len)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// How a [`crate::RedisConsumer`] reads one Redis stream through a consumer group.
///
/// ```
/// use std::time::Duration;
/// use outbox_redis::RedisConsumerOptions;
///
/// let options = RedisConsumerOptions {
///     claim_min_idle: Some(Duration::from_secs(300)),
///     dead_letter_stream: Some("outbox:orders:dead".into()),
///     ..RedisConsumerOptions::new("outbox:orders", "billing", "billing-1")
/// };
/// assert_eq!(options.batch_size, 100);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConsumerOptions {
    /// The server, as for [`RedisOptions::url`]. Default: [`DEFAULT_URL`].
    pub url: String,
    /// The key of the Redis stream to read, such as `outbox:orders` under the
    /// publisher's default rule.
    pub stream_key: String,
    /// The consumer group. Consumers of one group share the entries.
    pub group: String,
    /// This consumer's name within the group. It must stay the same across
    /// restarts: a consumer re-reads the entries still pending under its name
    /// when it starts, and no other consumer gets them until they are claimed.
    pub consumer: String,
    /// How many entries one read asks for (`COUNT`). Default: 100.
    pub batch_size: usize,
    /// How many deliveries may be unsettled at once; `next` waits for one to be
    /// settled (or dropped) beyond that. Default: 1,000.
    pub max_in_flight: usize,
    /// How long one read waits for new entries (`BLOCK`). Default: 2 seconds.
    /// It also bounds how late a due claim runs.
    pub block: Duration,
    /// Claims entries that have been pending longer than this under any consumer
    /// of the group, this one included (`XAUTOCLAIM`), checking once per this
    /// period. `None` never claims. Default: 60 seconds.
    ///
    /// It must exceed the longest time a handler takes with one delivery, or an
    /// entry still being handled is delivered a second time. A claimed entry
    /// comes after entries of its key that were delivered meanwhile, so claims
    /// give up key order for the entries they recover.
    pub claim_min_idle: Option<Duration>,
    /// Where rejected entries are copied before they are acknowledged. `None`
    /// acknowledges rejected entries without a copy. Default: `None`.
    pub dead_letter_stream: Option<String>,
    /// Creates the group when it is missing (`XGROUP CREATE ... 0 MKSTREAM`), so
    /// that it starts at the beginning of the stream: on connecting, and again
    /// whenever a read finds it gone, as after a restart of a server that keeps
    /// nothing on disk. Without it, reading a missing group fails `next` with
    /// `Config`. Default: `true`.
    pub create_group: bool,
    /// How long a command other than the blocking read waits for its reply.
    /// Default: 5 seconds.
    pub response_timeout: Duration,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
}

impl RedisConsumerOptions {
    /// Options for reading `stream_key` as `consumer` of `group`, with defaults
    /// for everything else.
    pub fn new(stream_key: &str, group: &str, consumer: &str) -> Self {
        RedisConsumerOptions {
            url: DEFAULT_URL.to_owned(),
            stream_key: stream_key.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            batch_size: 100,
            max_in_flight: 1_000,
            block: Duration::from_secs(2),
            claim_min_idle: Some(Duration::from_secs(60)),
            dead_letter_stream: None,
            create_group: true,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for RedisConsumerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConsumerOptions")
            .field("url", &redact_url(&self.url))
            .field("stream_key", &self.stream_key)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("batch_size", &self.batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("block", &self.block)
            .field("claim_min_idle", &self.claim_min_idle)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("create_group", &self.create_group)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `url` with the password replaced by `***`; a user name is kept.
pub(crate) fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];

    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://relay:p@ss@h", "redis://relay:***@h"),
            ("redis://secret@h", "redis://***@h"),
            ("redis://h:6379/0?x=a@b", "redis://h:6379/0?x=a@b"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let options = RedisOptions {
            url: "redis://relay:hunter2@h:6379".into(),
            ..RedisOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");

        let consumer = RedisConsumerOptions {
            url: "redis://:hunter2@h".into(),
            ..RedisConsumerOptions::new("s", "g", "c")
        };
        assert!(!format!("{consumer:?}").contains("hunter2"));
    }
}

//! The settings of the RabbitMQ publisher and consumer: where the broker is, how
//! exchanges, routing keys and sources are named, and how long to wait.
//!
//! Every field has a default that works against a local broker, so callers set
//! only what differs. URLs are shown with their password masked wherever this
//! crate prints them.

use std::fmt;
use std::time::Duration;

/// The broker both sides connect to unless told otherwise: the local RabbitMQ,
/// as `guest`, on the default virtual host `/`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The default exchange: one topic exchange for every stream.
pub const DEFAULT_EXCHANGE_TEMPLATE: &str = "outbox";

/// The default routing key: the outbox stream, a dot, the event type.
pub const DEFAULT_ROUTING_KEY_TEMPLATE: &str = "{stream}.{type}";

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// How to reach RabbitMQ and how to name what is published.
///
/// ```
/// use std::time::Duration;
/// use outbox_rabbitmq::RabbitOptions;
///
/// let options = RabbitOptions {
///     url: "amqp://relay:secret@rabbit.internal:5672/shop".into(),
///     exchange_template: "shop.{stream}".into(),
///     confirm_timeout: Duration::from_secs(2),
///     ..RabbitOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitOptions {
    /// The broker, as `amqp://user:password@host:port/vhost` with the virtual host
    /// percent-encoded (`%2f` is `/`). Query parameters such as `heartbeat=10`
    /// and `frame_max` are passed to the client. Default: [`DEFAULT_URL`].
    ///
    /// `amqps://` is refused: this crate is built without TLS.
    pub url: String,
    /// The exchange each event is published to, a [`crate::Template`] over
    /// `{stream}` and `{type}`. Default: [`DEFAULT_EXCHANGE_TEMPLATE`]. An empty
    /// template means the default exchange, which routes to the queue named by
    /// the routing key.
    pub exchange_template: String,
    /// The routing key of each event, a [`crate::Template`] over `{stream}` and
    /// `{type}`. Default: [`DEFAULT_ROUTING_KEY_TEMPLATE`], so `order.placed` of
    /// `orders` is routed by `orders.order.placed`.
    pub routing_key_template: String,
    /// The CloudEvents `source` of each event, a [`crate::Template`] over
    /// `{stream}` and `{type}`. Default: [`DEFAULT_SOURCE_TEMPLATE`].
    pub source_template: String,
    /// Whether the publisher declares each exchange it publishes to, as a durable
    /// topic exchange, before its first publish there on each connection. Off by
    /// default: the exchange is then expected to exist, and publishing to one
    /// that does not fails (see [`crate::RabbitPublisher`]).
    pub declare_exchange: bool,
    /// How long one publish may take, from waiting for a free channel to the
    /// broker's confirm. Default: 5 seconds.
    pub confirm_timeout: Duration,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// How many publishes may await their confirm at once; each holds a channel
    /// of its own while it does. More wait for a channel, within their confirm
    /// timeout. It must stay below the broker's `channel_max` (2047 unless
    /// configured otherwise), or opening the last channels fails as
    /// `Unavailable`. Default: 64.
    pub max_in_flight: usize,
    /// The connection name the broker shows in its management tools. Default:
    /// `outbox`.
    pub connection_name: String,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            url: DEFAULT_URL.to_owned(),
            exchange_template: DEFAULT_EXCHANGE_TEMPLATE.to_owned(),
            routing_key_template: DEFAULT_ROUTING_KEY_TEMPLATE.to_owned(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            declare_exchange: false,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            connection_name: "outbox".to_owned(),
        }
    }
}

impl fmt::Debug for RabbitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitOptions")
            .field("url", &redact_url(&self.url))
            .field("exchange_template", &self.exchange_template)
            .field("routing_key_template", &self.routing_key_template)
            .field("source_template", &self.source_template)
            .field("declare_exchange", &self.declare_exchange)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// What a [`crate::RabbitConsumer`] reads and how.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitConsumerOptions {
    /// The broker, as in [`RabbitOptions::url`]. Default: [`DEFAULT_URL`].
    pub url: String,
    /// The queue to consume. It must exist; [`crate::declare_queue`] makes one.
    pub queue: String,
    /// How many deliveries the broker hands over before the oldest is settled
    /// (`basic.qos` prefetch count). Default: 256. Zero means no limit.
    pub prefetch: u16,
    /// How long connecting and subscribing may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// The connection name the broker shows. Default: `outbox-consumer`.
    pub connection_name: String,
}

impl Default for RabbitConsumerOptions {
    fn default() -> Self {
        RabbitConsumerOptions {
            url: DEFAULT_URL.to_owned(),
            queue: String::new(),
            prefetch: 256,
            connect_timeout: Duration::from_secs(5),
            connection_name: "outbox-consumer".to_owned(),
        }
    }
}

impl fmt::Debug for RabbitConsumerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConsumerOptions")
            .field("url", &redact_url(&self.url))
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// `url` with the password of its credentials replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];

    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some((user, _)) = authority[..at].split_once(':') else {
        return url.to_owned();
    };
    format!("{}{user}:***{}", &url[..start], &url[start + at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        let cases = [
            (DEFAULT_URL, "amqp://guest:***@127.0.0.1:5672/%2f"),
            ("amqp://127.0.0.1:5672", "amqp://127.0.0.1:5672"),
            ("amqp://relay@h:5672/v", "amqp://relay@h:5672/v"),
            ("amqp://relay:p@ss@h/v", "amqp://relay:***@h/v"),
            ("amqp://h:5672/v?x=a@b", "amqp://h:5672/v?x=a@b"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let publisher = RabbitOptions {
            url: "amqp://relay:hunter2@rabbit:5672/%2f".into(),
            ..RabbitOptions::default()
        };
        let consumer = RabbitConsumerOptions {
            url: publisher.url.clone(),
            ..RabbitConsumerOptions::default()
        };
        for shown in [format!("{publisher:?}"), format!("{consumer:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("relay:***@rabbit:5672"), "{shown}");
        }
    }
}

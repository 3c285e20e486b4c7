//! The settings of the Kafka publisher and consumer, and how they become
//! librdkafka properties.
//!
//! Every field has a default that works against a local broker, so callers set
//! only what differs. Settings that the delivery guarantees depend on (acks,
//! idempotence, manual offset storage) are not open to override through the
//! free-form properties; values of properties that look secret are masked
//! wherever this crate prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use outbox_core::{Error, Result};
use rdkafka::ClientConfig;

/// The bootstrap broker used unless told otherwise.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The default topic rule: one topic per outbox stream, named like it.
pub const DEFAULT_TOPIC_TEMPLATE: &str = "{stream}";

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// The default consumer group.
pub const DEFAULT_GROUP_ID: &str = "outbox";

/// The most produce requests the idempotent producer keeps in flight per broker
/// connection while still keeping order through retries.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 5;

/// Properties whose values are masked in `Debug` output: any name containing one
/// of these.
const SECRET_MARKERS: [&str; 4] = ["password", "secret", "token", "key"];

/// How to reach Kafka and how to name what is published.
///
/// ```
/// use std::time::Duration;
/// use outbox_kafka::KafkaOptions;
///
/// let options = KafkaOptions {
///     brokers: "kafka-1:9092,kafka-2:9092".into(),
///     topic_template: "shop.{stream}".into(),
///     message_timeout: Duration::from_secs(10),
///     properties: [("sasl.password".to_owned(), "hunter2".to_owned())].into(),
///     ..KafkaOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// The bootstrap brokers, `host:port` separated by commas
    /// (`bootstrap.servers`). Default: [`DEFAULT_BROKERS`].
    pub brokers: String,
    /// The topic of each event, a [`crate::Template`] over `{stream}` and
    /// `{type}`. Default: [`DEFAULT_TOPIC_TEMPLATE`], so events of `orders` go to
    /// the topic `orders`. A template with `{type}` spreads one key over several
    /// topics, and Kafka orders records only within one partition of one topic.
    pub topic_template: String,
    /// The CloudEvents `source` of each event, a [`crate::Template`] over
    /// `{stream}` and `{type}`. Default: [`DEFAULT_SOURCE_TEMPLATE`].
    pub source_template: String,
    /// How long the producer keeps trying to deliver one message, retries
    /// included, before it reports a failure (`message.timeout.ms`). It bounds
    /// every publish. Default: 10 seconds.
    pub message_timeout: Duration,
    /// How long [`crate::KafkaPublisher::connect`] waits for the cluster's first
    /// answer. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// Produce requests in flight per broker connection
    /// (`max.in.flight.requests.per.connection`), 1 to 5: with the idempotent
    /// producer the broker keeps their order through retries up to 5. Default: 5.
    pub max_in_flight: u32,
    /// How long the producer waits to batch messages for one partition
    /// (`linger.ms`). Default: 5 milliseconds.
    pub linger: Duration,
    /// The client id the brokers show in their logs and quotas. Default: `outbox`.
    pub client_id: String,
    /// Further librdkafka properties, such as `security.protocol` or
    /// `compression.type`, applied as given. The properties this type sets
    /// itself, and those the delivery guarantee depends on (`acks`,
    /// `enable.idempotence`, `max.in.flight…`, `message.timeout.ms`, `retries`),
    /// are refused with [`ErrorKind::Config`](outbox_core::ErrorKind::Config).
    ///
    /// This build of librdkafka has no OpenSSL and no libsasl2 (rdkafka's `ssl`
    /// and `gssapi` features are off): `security.protocol=ssl` or `sasl_ssl`,
    /// and the SASL mechanisms SCRAM, GSSAPI and OAUTHBEARER, are refused with
    /// [`ErrorKind::Config`](outbox_core::ErrorKind::Config) when the client is
    /// made. `sasl_plaintext` with `PLAIN` works.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            brokers: DEFAULT_BROKERS.to_owned(),
            topic_template: DEFAULT_TOPIC_TEMPLATE.to_owned(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            message_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: MAX_IN_FLIGHT_LIMIT,
            linger: Duration::from_millis(5),
            client_id: "outbox".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("topic_template", &self.topic_template)
            .field("source_template", &self.source_template)
            .field("message_timeout", &self.message_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("linger", &self.linger)
            .field("client_id", &self.client_id)
            .field("properties", &Masked(&self.properties))
            .finish()
    }
}

impl KafkaOptions {
    /// The librdkafka configuration of the producer.
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        if self.message_timeout < Duration::from_millis(1) {
            return Err(Error::config("kafka message timeout must be at least 1 ms"));
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return Err(Error::config(format!(
                "kafka max_in_flight must be 1 to {MAX_IN_FLIGHT_LIMIT} to keep order \
                 through retries, not {}",
                self.max_in_flight
            )));
        }

        let mut config = base_config(
            &self.brokers,
            &self.client_id,
            &self.properties,
            &[
                "acks",
                "request.required.acks",
                "enable.idempotence",
                "max.in.flight",
                "max.in.flight.requests.per.connection",
                "message.timeout.ms",
                "delivery.timeout.ms",
                "retries",
                "message.send.max.retries",
                "linger.ms",
                "queue.buffering.max.ms",
                "transactional.id",
            ],
        )?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight.to_string(),
            )
            .set("message.timeout.ms", millis(self.message_timeout))
            .set("linger.ms", millis(self.linger));
        if !self.properties.contains_key("partitioner") {
            // The Java client's partitioner, so a key lands where Java producers
            // would put it.
            config.set("partitioner", "murmur2_random");
        }
        Ok(config)
    }

    /// The librdkafka configuration of the admin client that creates topics:
    /// the connection settings and the free-form properties only.
    pub(crate) fn admin_config(&self) -> Result<ClientConfig> {
        base_config(&self.brokers, &self.client_id, &self.properties, &[])
    }
}

/// How to reach Kafka and which topics to read as which consumer group.
///
/// ```
/// use outbox_kafka::KafkaConsumerOptions;
///
/// let options = KafkaConsumerOptions {
///     group_id: "billing".into(),
///     topics: vec!["orders".into()],
///     ..KafkaConsumerOptions::default()
/// };
/// assert_eq!(options.brokers, outbox_kafka::DEFAULT_BROKERS);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConsumerOptions {
    /// The bootstrap brokers, `host:port` separated by commas. Default:
    /// [`DEFAULT_BROKERS`].
    pub brokers: String,
    /// The consumer group (`group.id`): members of one group share the topics'
    /// partitions and its committed offsets. Default: [`DEFAULT_GROUP_ID`].
    pub group_id: String,
    /// The topics to subscribe to. A name starting with `^` is a regular
    /// expression. Required.
    pub topics: Vec<String>,
    /// Where a group without a committed offset starts on a partition: `true`
    /// for the oldest record, `false` for new records only
    /// (`auto.offset.reset`). Default: `true`.
    pub from_beginning: bool,
    /// How many deliveries may be handed out and not yet settled; `next` waits
    /// for a settlement beyond that. Default: 1,000.
    pub max_unsettled: usize,
    /// How often settled offsets are committed to the group coordinator
    /// (`auto.commit.interval.ms`); they are also committed on
    /// [`crate::KafkaConsumer::commit`], on close and before a rebalance takes a
    /// partition away. Default: 1 second.
    pub commit_interval: Duration,
    /// How long the group coordinator waits for a heartbeat before it gives this
    /// member's partitions to others (`session.timeout.ms`); heartbeats go out
    /// at a third of it. Kafka brokers refuse values outside their
    /// `group.min.session.timeout.ms` (6 s by default) and
    /// `group.max.session.timeout.ms`. Default: 10 seconds.
    pub session_timeout: Duration,
    /// How long [`crate::KafkaConsumer::connect`] waits for the cluster's first
    /// answer. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// The client id the brokers show in their logs and quotas. Default: `outbox`.
    pub client_id: String,
    /// Further librdkafka properties, applied as given. The properties this type
    /// sets itself, and the offset settings (`enable.auto.commit`,
    /// `enable.auto.offset.store`), are refused with
    /// [`ErrorKind::Config`](outbox_core::ErrorKind::Config). The same TLS limit
    /// as for [`KafkaOptions::properties`] applies.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConsumerOptions {
    fn default() -> Self {
        KafkaConsumerOptions {
            brokers: DEFAULT_BROKERS.to_owned(),
            group_id: DEFAULT_GROUP_ID.to_owned(),
            topics: Vec::new(),
            from_beginning: true,
            max_unsettled: 1_000,
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            client_id: "outbox".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConsumerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumerOptions")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("from_beginning", &self.from_beginning)
            .field("max_unsettled", &self.max_unsettled)
            .field("commit_interval", &self.commit_interval)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("client_id", &self.client_id)
            .field("properties", &Masked(&self.properties))
            .finish()
    }
}

impl KafkaConsumerOptions {
    /// The librdkafka configuration of the consumer.
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        if self.group_id.trim().is_empty() {
            return Err(Error::config("kafka consumer group id is empty"));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return Err(Error::config(
                "kafka consumer needs at least one topic name",
            ));
        }
        if self.max_unsettled == 0 {
            return Err(Error::config("kafka max_unsettled must be above zero"));
        }
        if self.commit_interval < Duration::from_millis(1) {
            return Err(Error::config("kafka commit interval must be at least 1 ms"));
        }
        if self.session_timeout < Duration::from_millis(3) {
            return Err(Error::config("kafka session timeout must be at least 3 ms"));
        }

        let mut config = base_config(
            &self.brokers,
            &self.client_id,
            &self.properties,
            &[
                "group.id",
                "enable.auto.commit",
                "enable.auto.offset.store",
                "auto.commit.interval.ms",
                "auto.offset.reset",
                "session.timeout.ms",
                "heartbeat.interval.ms",
            ],
        )?;
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", millis(self.commit_interval))
            .set(
                "auto.offset.reset",
                if self.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            )
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("heartbeat.interval.ms", millis(self.session_timeout / 3));
        Ok(config)
    }
}

/// The properties shared by the producer and the consumer, after checking that
/// none of `properties` is one of `reserved` or set by this function.
fn base_config(
    brokers: &str,
    client_id: &str,
    properties: &BTreeMap<String, String>,
    reserved: &[&str],
) -> Result<ClientConfig> {
    if brokers.trim().is_empty() {
        return Err(Error::config("kafka brokers are empty"));
    }
    let own = ["bootstrap.servers", "metadata.broker.list", "client.id"];
    if let Some(name) = properties
        .keys()
        .find(|name| own.contains(&name.as_str()) || reserved.contains(&name.as_str()))
    {
        return Err(Error::config(format!(
            "kafka property {name:?} is set by the outbox and cannot be overridden"
        )));
    }

    let mut config = ClientConfig::new();
    // librdkafka backs off reconnecting for up to 10 s, and a partition's
    // messages wait out that backoff before their timeout is even checked; the
    // Java client's 1 s keeps publishes to a lost broker within their timeout.
    config.set("reconnect.backoff.max.ms", "1000");
    for (name, value) in properties {
        config.set(name, value);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    Ok(config)
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// Properties with the values of secret-looking names replaced by `***`.
struct Masked<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                let secret = SECRET_MARKERS.iter().any(|m| lower.contains(m));
                (name, if secret { "***" } else { value.as_str() })
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    fn get<'a>(config: &'a ClientConfig, name: &str) -> Option<&'a str> {
        config.get(name)
    }

    #[test]
    fn the_producer_is_idempotent_and_waits_for_all_replicas() {
        let config = KafkaOptions::default().client_config().unwrap();
        assert_eq!(get(&config, "bootstrap.servers"), Some(DEFAULT_BROKERS));
        assert_eq!(get(&config, "enable.idempotence"), Some("true"));
        assert_eq!(get(&config, "acks"), Some("all"));
        assert_eq!(
            get(&config, "max.in.flight.requests.per.connection"),
            Some("5")
        );
        assert_eq!(get(&config, "message.timeout.ms"), Some("10000"));
        assert_eq!(get(&config, "partitioner"), Some("murmur2_random"));
        assert_eq!(get(&config, "reconnect.backoff.max.ms"), Some("1000"));

        let options = KafkaOptions {
            properties: [
                ("reconnect.backoff.max.ms".to_owned(), "5000".to_owned()),
                ("partitioner".to_owned(), "consistent_random".to_owned()),
            ]
            .into(),
            ..KafkaOptions::default()
        };
        let config = options.client_config().unwrap();
        assert_eq!(get(&config, "reconnect.backoff.max.ms"), Some("5000"));
        assert_eq!(get(&config, "partitioner"), Some("consistent_random"));
    }

    #[test]
    fn settings_that_would_break_ordering_are_refused() {
        for max_in_flight in [0, 6] {
            let options = KafkaOptions {
                max_in_flight,
                ..KafkaOptions::default()
            };
            let err = options.client_config().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{max_in_flight}");
        }
        for name in ["acks", "enable.idempotence", "bootstrap.servers", "retries"] {
            let options = KafkaOptions {
                properties: [(name.to_owned(), "1".to_owned())].into(),
                ..KafkaOptions::default()
            };
            let err = options.client_config().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{name}");
            assert!(err.message().contains(name), "{err}");
        }

        let options = KafkaOptions {
            properties: [("compression.type".to_owned(), "lz4".to_owned())].into(),
            ..KafkaOptions::default()
        };
        let config = options.client_config().unwrap();
        assert_eq!(get(&config, "compression.type"), Some("lz4"));
    }

    #[test]
    fn the_consumer_stores_offsets_only_when_told() {
        let options = KafkaConsumerOptions {
            topics: vec!["orders".into()],
            session_timeout: Duration::from_secs(6),
            ..KafkaConsumerOptions::default()
        };
        let config = options.client_config().unwrap();
        assert_eq!(get(&config, "group.id"), Some(DEFAULT_GROUP_ID));
        assert_eq!(get(&config, "enable.auto.commit"), Some("true"));
        assert_eq!(get(&config, "enable.auto.offset.store"), Some("false"));
        assert_eq!(get(&config, "auto.offset.reset"), Some("earliest"));
        assert_eq!(get(&config, "session.timeout.ms"), Some("6000"));
        assert_eq!(get(&config, "heartbeat.interval.ms"), Some("2000"));

        let options = KafkaConsumerOptions {
            topics: vec!["orders".into()],
            properties: [("enable.auto.offset.store".to_owned(), "true".to_owned())].into(),
            ..KafkaConsumerOptions::default()
        };
        assert_eq!(
            options.client_config().unwrap_err().kind(),
            ErrorKind::Config
        );
        let no_topics = KafkaConsumerOptions::default();
        assert_eq!(
            no_topics.client_config().unwrap_err().kind(),
            ErrorKind::Config
        );
    }

    #[test]
    fn debug_output_hides_secret_properties() {
        let options = KafkaConsumerOptions {
            properties: [
                ("sasl.password".to_owned(), "hunter2".to_owned()),
                ("sasl.username".to_owned(), "relay".to_owned()),
            ]
            .into(),
            ..KafkaConsumerOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"sasl.password\": \"***\""), "{shown}");
        assert!(shown.contains("relay"), "{shown}");
    }
}

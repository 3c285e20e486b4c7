//! The publishers `outbox relay` can send to, chosen by name, each behind the
//! cargo feature of its crate.
//!
//! [`Destination::choose`] turns the merged settings into one publisher's
//! options, refusing what cannot work before anything connects;
//! [`Destination::open`] connects it.

use std::path::PathBuf;
use std::time::Duration;

use outbox::{Error, Event, Publisher, Result};

/// The publisher settings after flags, environment and file were merged.
#[derive(Debug, Default)]
pub struct PublisherSettings {
    pub publisher: Option<String>,
    pub nats_url: Option<String>,
    pub nats_stream: Option<String>,
    pub nats_subjects: Option<String>,
    pub nats_subject: Option<String>,
    pub rabbitmq_url: Option<String>,
    pub rabbitmq_exchange: Option<String>,
    pub rabbitmq_routing_key: Option<String>,
    pub rabbitmq_declare_exchange: Option<bool>,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_brokers: Option<String>,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_topic: Option<String>,
    pub redis_url: Option<String>,
    pub redis_stream: Option<String>,
    pub redis_max_len: Option<u64>,
    pub mqtt_url: Option<String>,
    pub mqtt_topic: Option<String>,
    pub mqtt_client_id: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_timeout_seconds: Option<f64>,
    pub output: Option<PathBuf>,
}

/// The names `--publisher` accepts in this build.
pub const PUBLISHERS: &[&str] = &[
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "rabbitmq")]
    "rabbitmq",
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "redis")]
    "redis",
    #[cfg(feature = "mqtt")]
    "mqtt",
    #[cfg(feature = "webhook")]
    "webhook",
    "file",
    "stdout",
];

/// Every publisher the project has, built in or not.
const ALL_PUBLISHERS: &[&str] = &[
    "nats", "rabbitmq", "kafka", "redis", "mqtt", "webhook", "file", "stdout",
];

/// One publisher's checked options.
pub enum Destination {
    #[cfg(feature = "nats")]
    Nats {
        options: outbox_nats::NatsOptions,
        stream: Option<(String, Vec<String>)>,
    },
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(outbox_rabbitmq::RabbitOptions),
    #[cfg(feature = "kafka")]
    Kafka(outbox_kafka::KafkaOptions),
    #[cfg(feature = "redis")]
    Redis(outbox_redis::RedisOptions),
    #[cfg(feature = "mqtt")]
    Mqtt(outbox_mqtt::MqttOptions),
    #[cfg(feature = "webhook")]
    Webhook(outbox_webhook::WebhookOptions),
    File(PathBuf),
    Stdout,
}

impl Destination {
    /// Picks the publisher named by `--publisher` (NATS by default) and fills in
    /// its options. Settings of other publishers are ignored.
    pub fn choose(settings: PublisherSettings) -> Result<Destination> {
        let name = settings.publisher.as_deref().unwrap_or("nats");
        match name {
            #[cfg(feature = "nats")]
            "nats" => {
                let mut options = outbox_nats::NatsOptions::default();
                if let Some(url) = settings.nats_url {
                    options.url = url;
                }
                if let Some(subject) = settings.nats_subject {
                    options.subject_template = subject;
                }
                let stream = settings.nats_stream.map(|stream| {
                    let subjects = match &settings.nats_subjects {
                        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
                        None => vec![format!("{}.>", stream.to_lowercase())],
                    };
                    (stream, subjects)
                });
                Ok(Destination::Nats { options, stream })
            }
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => {
                let mut options = outbox_rabbitmq::RabbitOptions::default();
                if let Some(url) = settings.rabbitmq_url {
                    options.url = url;
                }
                if let Some(exchange) = settings.rabbitmq_exchange {
                    options.exchange_template = exchange;
                }
                if let Some(routing_key) = settings.rabbitmq_routing_key {
                    options.routing_key_template = routing_key;
                }
                options.declare_exchange = settings.rabbitmq_declare_exchange.unwrap_or(false);
                Ok(Destination::Rabbitmq(options))
            }
            #[cfg(feature = "kafka")]
            "kafka" => {
                let mut options = outbox_kafka::KafkaOptions::default();
                if let Some(brokers) = settings.kafka_brokers {
                    options.brokers = brokers;
                }
                if let Some(topic) = settings.kafka_topic {
                    options.topic_template = topic;
                }
                Ok(Destination::Kafka(options))
            }
            #[cfg(feature = "redis")]
            "redis" => {
                let mut options = outbox_redis::RedisOptions::default();
                if let Some(url) = settings.redis_url {
                    options.url = url;
                }
                if let Some(stream) = settings.redis_stream {
                    options.stream_template = stream;
                }
                options.max_len = settings.redis_max_len;
                Ok(Destination::Redis(options))
            }
            #[cfg(feature = "mqtt")]
            "mqtt" => {
                let mut options = outbox_mqtt::MqttOptions::default();
                if let Some(url) = settings.mqtt_url {
                    options.url = url;
                }
                if let Some(topic) = settings.mqtt_topic {
                    options.topic_template = topic;
                }
                if let Some(client_id) = settings.mqtt_client_id {
                    options.client_id = Some(client_id);
                }
                Ok(Destination::Mqtt(options))
            }
            #[cfg(feature = "webhook")]
            "webhook" => {
                let url = settings
                    .webhook_url
                    .ok_or_else(|| Error::config("the webhook publisher needs --webhook-url"))?;
                let secrets = settings
                    .webhook_secret
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(outbox_webhook::WebhookSecret::parse)
                    .collect::<Result<Vec<_>>>()?;
                if secrets.is_empty() {
                    return Err(Error::config(
                        "the webhook publisher needs --webhook-secret (whsec_…)",
                    ));
                }
                let mut options = outbox_webhook::WebhookOptions {
                    url,
                    secrets,
                    ..outbox_webhook::WebhookOptions::default()
                };
                if let Some(seconds) = settings.webhook_timeout_seconds {
                    options.timeout = positive_seconds("webhook timeout", seconds)?;
                }
                Ok(Destination::Webhook(options))
            }
            "file" => Ok(Destination::File(
                settings
                    .output
                    .unwrap_or_else(|| PathBuf::from("outbox-events.jsonl")),
            )),
            "stdout" => Ok(Destination::Stdout),
            known if ALL_PUBLISHERS.contains(&known) => Err(Error::config(format!(
                "publisher {known:?} is not built into this binary; \
                 build outbox-cli with `--features {known}`"
            ))),
            other => Err(Error::config(format!(
                "unknown publisher {other:?}: expected one of {}",
                PUBLISHERS.join(", ")
            ))),
        }
    }

    /// The longest a publish of this destination may take by its own timeout,
    /// when that exceeds the relay's default: the relay's own timer must not
    /// fire first and take a slow answer for an outage.
    pub fn own_timeout(&self) -> Option<Duration> {
        match self {
            #[cfg(feature = "webhook")]
            Destination::Webhook(options) => Some(options.timeout),
            _ => None,
        }
    }

    /// Connects the publisher, creating the JetStream stream when one was named.
    pub async fn open(self) -> Result<AnyPublisher> {
        Ok(match self {
            #[cfg(feature = "nats")]
            Destination::Nats { options, stream } => {
                let publisher = outbox_nats::NatsPublisher::connect(options).await?;
                if let Some((name, subjects)) = stream {
                    publisher
                        .ensure_stream(&name, &subjects, Duration::ZERO)
                        .await?;
                }
                AnyPublisher::Nats(Box::new(publisher))
            }
            #[cfg(feature = "rabbitmq")]
            Destination::Rabbitmq(options) => AnyPublisher::Rabbitmq(Box::new(
                outbox_rabbitmq::RabbitPublisher::connect(options).await?,
            )),
            #[cfg(feature = "kafka")]
            Destination::Kafka(options) => AnyPublisher::Kafka(Box::new(
                outbox_kafka::KafkaPublisher::connect(options).await?,
            )),
            #[cfg(feature = "redis")]
            Destination::Redis(options) => AnyPublisher::Redis(Box::new(
                outbox_redis::RedisPublisher::connect(options).await?,
            )),
            #[cfg(feature = "mqtt")]
            Destination::Mqtt(options) => AnyPublisher::Mqtt(Box::new(
                outbox_mqtt::MqttPublisher::connect(options).await?,
            )),
            #[cfg(feature = "webhook")]
            Destination::Webhook(options) => AnyPublisher::Webhook(Box::new(
                outbox_webhook::WebhookPublisher::connect(options).await?,
            )),
            Destination::File(path) => AnyPublisher::File(outbox_file::FilePublisher::open(
                path,
                outbox_file::FileOptions::default(),
            )?),
            Destination::Stdout => AnyPublisher::Stdout(outbox_file::StdoutPublisher::new(
                outbox_file::StdoutOptions::default(),
            )?),
        })
    }
}

fn positive_seconds(name: &str, seconds: f64) -> Result<Duration> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(Error::config(format!(
            "{name} must be a positive number of seconds"
        )))
    }
}

/// One of the publishers compiled in.
pub enum AnyPublisher {
    #[cfg(feature = "nats")]
    Nats(Box<outbox_nats::NatsPublisher>),
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(Box<outbox_rabbitmq::RabbitPublisher>),
    #[cfg(feature = "kafka")]
    Kafka(Box<outbox_kafka::KafkaPublisher>),
    #[cfg(feature = "redis")]
    Redis(Box<outbox_redis::RedisPublisher>),
    #[cfg(feature = "mqtt")]
    Mqtt(Box<outbox_mqtt::MqttPublisher>),
    #[cfg(feature = "webhook")]
    Webhook(Box<outbox_webhook::WebhookPublisher>),
    File(outbox_file::FilePublisher),
    Stdout(outbox_file::StdoutPublisher),
}

/// Runs `$body` with `$p` bound to the publisher inside any variant.
macro_rules! each {
    ($self:expr, $p:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "nats")]
            AnyPublisher::Nats($p) => $body,
            #[cfg(feature = "rabbitmq")]
            AnyPublisher::Rabbitmq($p) => $body,
            #[cfg(feature = "kafka")]
            AnyPublisher::Kafka($p) => $body,
            #[cfg(feature = "redis")]
            AnyPublisher::Redis($p) => $body,
            #[cfg(feature = "mqtt")]
            AnyPublisher::Mqtt($p) => $body,
            #[cfg(feature = "webhook")]
            AnyPublisher::Webhook($p) => $body,
            AnyPublisher::File($p) => $body,
            AnyPublisher::Stdout($p) => $body,
        }
    };
}

impl Publisher for AnyPublisher {
    fn name(&self) -> &'static str {
        each!(self, p => p.name())
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        each!(self, p => p.publish(event).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::ErrorKind;

    #[test]
    fn an_unknown_publisher_lists_the_known_ones() {
        let err = Destination::choose(PublisherSettings {
            publisher: Some("carrier-pigeon".into()),
            ..PublisherSettings::default()
        })
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("stdout"), "{err}");
    }

    #[cfg(feature = "webhook")]
    #[test]
    fn a_webhook_needs_a_url_and_a_secret() {
        let missing_url = PublisherSettings {
            publisher: Some("webhook".into()),
            webhook_secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            ..PublisherSettings::default()
        };
        let missing_secret = PublisherSettings {
            publisher: Some("webhook".into()),
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            ..PublisherSettings::default()
        };
        for settings in [missing_url, missing_secret] {
            let err = Destination::choose(settings).err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        }
    }
}

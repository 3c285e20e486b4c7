//! The Kafka publisher: one idempotent producer, many publishes in flight, each
//! resolved by its own delivery report.
//!
//! [`KafkaPublisher`] owns the producer, the topic and source templates, and the
//! checks made before anything is sent. It also creates the topics the relay
//! publishes into, for clusters that do not create them on first use.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outbox_core::{Error, Event, Publisher, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::{debug, info, warn};

use crate::context::KafkaContext;
use outbox_core::Template;

use crate::template::{check_topic, topic_problem};
use crate::{KafkaOptions, binding, failure};

type Client = FutureProducer<KafkaContext>;

/// Publishes outbox events to Kafka, one record per event.
///
/// Each event becomes a record in the CloudEvents Kafka binding's binary mode:
/// the payload is the value, the event key is the record key, the context
/// attributes are `ce_` headers and the media type is `content-type`. The key
/// picks the partition (librdkafka's `murmur2_random` partitioner, the Java
/// client's rule), so the events of one key stay in one partition, in order. The
/// event's own headers go along unchanged; one named like a header set here
/// (ignoring case) is overridden. The record's timestamp is the time of sending,
/// not the event's creation time, so that an old backlog is not expired by the
/// topic's retention as soon as it is written.
///
/// The producer is idempotent (`enable.idempotence=true`, `acks=all`), with at
/// most [`KafkaOptions::max_in_flight`] (≤ 5) requests in flight per broker: the
/// broker then stores the records of one partition in the order they were sent,
/// even when librdkafka retries some of them, and never twice within the
/// producer's session. [`Publisher::publish`] resolves on the record's delivery
/// report, which comes once every in-sync replica has it. Publishes share the
/// producer and take no lock of their own, so the relay can keep many in flight.
///
/// Kafka has no deduplication by event id: an event published again after a
/// lost delivery report, or by a relay that crashed before marking it done, is
/// stored twice with the same `ce_id`, and the consumer's inbox drops the copy.
///
/// # Errors
///
/// - [`Unavailable`](outbox_core::ErrorKind::Unavailable): no delivery report
///   within [`KafkaOptions::message_timeout`], the cluster unreachable, the
///   producer queue full, or the producer stopped on a fatal error (it is then
///   replaced by a new one, see below).
/// - [`Transient`](outbox_core::ErrorKind::Transient): the cluster answered
///   that it cannot take the record now: no leader, not enough in-sync replicas,
///   an unknown topic or partition (a topic that is not created yet).
/// - [`Permanent`](outbox_core::ErrorKind::Permanent): the record is larger
///   than the topic or producer accepts, the topic name is invalid, or the broker
///   refused the record. Nothing is stored.
/// - [`Config`](outbox_core::ErrorKind::Config): authorization or
///   authentication failed, or the broker does not support a setting.
///
/// [`KafkaPublisher::connect`] fails with `Config` for invalid options or
/// properties librdkafka refuses, and with `Unavailable` when no broker
/// answers within [`KafkaOptions::connect_timeout`].
///
/// A fatal producer error (librdkafka's idempotence state broken beyond repair,
/// rare since librdkafka recovers most sequence errors itself) fails every
/// message in flight; the publisher then builds a new producer, with a new
/// producer id, for the next publishes. That path is not exercised by the tests:
/// librdkafka offers no way to cause it from outside.
pub struct KafkaPublisher {
    producer: RwLock<Client>,
    config: ClientConfig,
    admin_config: ClientConfig,
    topic: Template,
    source: Template,
    brokers: String,
    message_timeout: Duration,
    connect_timeout: Duration,
}

impl KafkaPublisher {
    /// Checks `options`, makes the producer and waits for the cluster's first
    /// answer to a metadata request.
    ///
    /// ```no_run
    /// use outbox_kafka::{KafkaOptions, KafkaPublisher};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = KafkaPublisher::connect(KafkaOptions::default()).await?;
    /// publisher.ensure_topic("orders", 12, 3).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: KafkaOptions) -> Result<KafkaPublisher> {
        let topic = topic_template(&options.topic_template)?;
        let source = source_template(&options.source_template)?;
        if options.connect_timeout.is_zero() {
            return Err(Error::config("kafka connect timeout must be above zero"));
        }
        let config = options.client_config()?;
        let admin_config = options.admin_config()?;

        let producer = make_producer(&config)?;
        let probe = producer.clone();
        let timeout = options.connect_timeout;
        let fetch = move || {
            probe
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        };
        let broker_count = first_answer(fetch, &options.brokers, timeout).await?;

        info!(
            brokers = %options.brokers,
            broker_count,
            topic_template = %topic,
            "kafka publisher ready"
        );
        Ok(KafkaPublisher {
            producer: RwLock::new(producer),
            config,
            admin_config,
            topic,
            source,
            brokers: options.brokers,
            message_timeout: options.message_timeout,
            connect_timeout: options.connect_timeout,
        })
    }

    /// The topic an event of `stream` and `event_type` is published to, or an
    /// [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent) error when the
    /// topic template makes an invalid topic name of them (see
    /// [`crate::check_topic`]).
    pub fn topic_for(&self, stream: &str, event_type: &str) -> Result<String> {
        let topic = self.topic.render(stream, event_type);
        check_topic(&topic)?;
        Ok(topic)
    }

    /// Creates the topic `name` with `partitions` partitions, each on
    /// `replication` brokers, unless a topic of that name exists.
    ///
    /// An existing topic is left as it is, even when its partition count
    /// differs. Use at least as many partitions as consumers should share the
    /// load, and a replication of 3 on a production cluster so that `acks=all`
    /// means three copies. Fails with
    /// [`ErrorKind::Config`](outbox_core::ErrorKind::Config) when the cluster
    /// refuses the topic (an invalid name, more replicas than brokers, no right
    /// to create topics) and with
    /// [`ErrorKind::Unavailable`](outbox_core::ErrorKind::Unavailable) when it
    /// does not answer within the connect timeout.
    pub async fn ensure_topic(&self, name: &str, partitions: i32, replication: i32) -> Result<()> {
        if let Some(problem) = topic_problem(name) {
            return Err(Error::config(format!(
                "invalid kafka topic {name:?}: {problem}"
            )));
        }
        if partitions < 1 || replication < 1 {
            return Err(Error::config(format!(
                "kafka topic {name:?} needs at least one partition and one replica"
            )));
        }

        let admin: AdminClient<KafkaContext> = self
            .admin_config
            .create_with_context(KafkaContext::new("admin"))
            .map_err(|e| failure::client_failure(e, "admin"))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let options = AdminOptions::new()
            .request_timeout(Some(self.connect_timeout))
            .operation_timeout(Some(self.connect_timeout));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| failure::admin_failure(e, name))?;

        for result in results {
            match result {
                Ok(_) => info!(topic = name, partitions, replication, "created kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    info!(topic = name, "found kafka topic")
                }
                Err((_, code)) => {
                    return Err(failure::admin_failure(KafkaError::AdminOp(code), name));
                }
            }
        }
        Ok(())
    }

    /// Replaces the producer after a fatal error, unless another publish did
    /// so already.
    fn replace_fatal(&self, failed: &Client) {
        let mut current = self.producer.write().expect("producer lock");
        if !Arc::ptr_eq(current.context(), failed.context()) {
            return;
        }
        let reason = failed.client().fatal_error().map(|(_, text)| text);
        match make_producer(&self.config) {
            Ok(fresh) => {
                warn!(
                    brokers = %self.brokers,
                    reason = reason.as_deref().unwrap_or("unknown"),
                    "replaced fatally failed kafka producer"
                );
                *current = fresh;
            }
            Err(err) => warn!(error = %err.chain(), "could not replace kafka producer"),
        }
    }
}

impl Publisher for KafkaPublisher {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let topic = self.topic_for(&event.stream, &event.event_type)?;
        let source = self.source.render(&event.stream, &event.event_type);
        let headers = binding::headers(event, &source);
        let record = FutureRecord::to(&topic)
            .key(event.key.as_bytes())
            .payload(event.payload.as_bytes())
            .headers(headers);

        let producer = self.producer.read().expect("producer lock").clone();
        match producer
            .send(record, Timeout::After(self.message_timeout))
            .await
        {
            Ok(delivery) => {
                debug!(
                    event_id = %event.event_id,
                    topic = %topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "kafka stored event"
                );
                Ok(())
            }
            Err((err, _)) => {
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    self.replace_fatal(&producer);
                }
                Err(failure::publish_failure(err, &topic))
            }
        }
    }
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("source", &self.source)
            .field("message_timeout", &self.message_timeout)
            .finish_non_exhaustive()
    }
}

fn make_producer(config: &ClientConfig) -> Result<Client> {
    config
        .create_with_context(KafkaContext::new("producer"))
        .map_err(|e| failure::client_failure(e, "producer"))
}

/// Runs the blocking metadata request `fetch`, which gives up after `timeout`,
/// off the async runtime's threads.
///
/// librdkafka retries a refused connection until the request's timeout and
/// reports every broker down only once one was up, so an unreachable cluster
/// is noticed when the timeout ends, not sooner.
pub(crate) async fn first_answer<T: Send + 'static>(
    fetch: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
    brokers: &str,
    timeout: Duration,
) -> Result<T> {
    let answer = tokio::task::spawn_blocking(fetch)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
    match answer {
        Ok(answer) => Ok(answer),
        Err(KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)) => {
            Err(failure::connect_timeout(brokers, timeout))
        }
        Err(err) => Err(failure::connect_failure(err, brokers)),
    }
}

/// Parses the topic template and checks that it can make a valid topic.
fn topic_template(text: &str) -> Result<Template> {
    let template = Template::parse(text)?;
    if let Some(problem) = topic_problem(&template.render("stream", "type")) {
        return Err(Error::config(format!(
            "topic template {text:?} cannot make a valid kafka topic: {problem}"
        )));
    }
    Ok(template)
}

/// Parses the source template and checks that it fits in a header.
fn source_template(text: &str) -> Result<Template> {
    let template = Template::parse(text)?;
    if text.trim().is_empty() || text.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "source template {text:?} is empty or has a control character"
        )));
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn topic_templates_that_cannot_work_are_refused() {
        for text in ["{stream}/{type}", "{stream} x", "", "{stream}.{key}"] {
            let err = topic_template(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
        }
        topic_template("shop.{stream}.{type}").unwrap();
    }

    #[test]
    fn source_templates_must_fit_in_a_header() {
        assert_eq!(
            source_template("/a\n/b").unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(source_template(" ").unwrap_err().kind(), ErrorKind::Config);
        source_template("https://shop.example/{stream}").unwrap();
    }
}

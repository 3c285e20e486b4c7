//! The consumer adapter: a `basic.consume` subscription in manual-ack mode,
//! handing over each delivery with the means to settle it.
//!
//! [`RabbitConsumer`] owns its connection, channel and subscription, and opens
//! them again on the next call after they were lost. [`declare_queue`] sets up
//! the durable queue it reads from.

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection};
use outbox_core::{Acknowledge, BoxFuture, Consumer, Delivery, Error, Result};
use tracing::{info, warn};

use crate::options::redact_url;
use crate::publisher::declare_topic_exchange;
use crate::template::{MAX_NAME_BYTES, exchange_problem};
use crate::{RabbitConsumerOptions, binding, connection, failure};

/// Reads outbox events from one RabbitMQ queue.
///
/// The subscription acknowledges nothing by itself: [`Delivery::ack`] sends
/// `basic.ack`, and [`Delivery::reject`] sends `basic.reject` without requeueing,
/// which moves the message to the queue's dead-letter exchange when it has one
/// (see [`QueueSpec::dead_letter_exchange`]) and discards it otherwise. Up to
/// [`RabbitConsumerOptions::prefetch`] deliveries may be unsettled at once; they
/// come in queue order, and may be settled in any order.
///
/// A delivery dropped without being settled stays unacknowledged until its
/// channel closes; RabbitMQ then puts it back at the head of the queue and
/// delivers it again with the `redelivered` flag. Dropping the consumer closes
/// its connection, which returns every unsettled delivery to the queue, and
/// settling a delivery after that fails as
/// [`Unavailable`](outbox_core::ErrorKind::Unavailable).
///
/// A message that is not a CloudEvent of this binding (a required attribute
/// missing or malformed) comes out as [`Delivery::malformed`] with a
/// [`Permanent`](outbox_core::ErrorKind::Permanent) error; rejecting it sends it
/// to the dead letters.
///
/// # Errors
///
/// [`RabbitConsumer::connect`] and [`Consumer::next`] fail with
/// [`Config`](outbox_core::ErrorKind::Config) when the broker refuses the
/// subscription (a missing queue, no permission, an exclusive queue of another
/// connection) and with `Unavailable` when it cannot be reached or the
/// subscription breaks; the next call after an `Unavailable` error connects
/// again. `next` returns `Ok(None)` when the broker cancels the subscription,
/// as it does when the queue is deleted.
pub struct RabbitConsumer {
    uri: AMQPUri,
    url: String,
    queue: String,
    prefetch: u16,
    connect_timeout: Duration,
    connection_name: String,
    session: Option<Session>,
}

struct Session {
    subscription: lapin::Consumer,
    _channel: Channel,
    _connection: Connection,
}

impl RabbitConsumer {
    /// Checks `options`, connects and subscribes to the queue.
    ///
    /// ```no_run
    /// use outbox_core::Consumer;
    /// use outbox_rabbitmq::{QueueSpec, RabbitConsumer, RabbitConsumerOptions, declare_queue};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let spec = QueueSpec::new("billing", "outbox", ["orders.#"]);
    /// declare_queue(outbox_rabbitmq::DEFAULT_URL, &spec).await?;
    ///
    /// let mut consumer = RabbitConsumer::connect(RabbitConsumerOptions {
    ///     queue: "billing".into(),
    ///     ..RabbitConsumerOptions::default()
    /// })
    /// .await?;
    /// while let Some(delivery) = consumer.next().await? {
    ///     match delivery.event() {
    ///         Ok(event) => println!("{} {}", event.event_type, event.event_id),
    ///         Err(_) => {
    ///             delivery.reject().await?;
    ///             continue;
    ///         }
    ///     }
    ///     delivery.ack().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: RabbitConsumerOptions) -> Result<RabbitConsumer> {
        let url = redact_url(&options.url);
        if options.queue.is_empty() || options.queue.len() > MAX_NAME_BYTES {
            return Err(Error::config(
                "rabbitmq consumer needs a queue name of 1 to 255 bytes",
            ));
        }
        if options.connect_timeout.is_zero() {
            return Err(Error::config("rabbitmq connect timeout must be above zero"));
        }
        let uri = connection::parse_url(&options.url, &url)?;

        let mut consumer = RabbitConsumer {
            uri,
            url,
            queue: options.queue,
            prefetch: options.prefetch,
            connect_timeout: options.connect_timeout,
            connection_name: options.connection_name,
            session: None,
        };
        consumer.session = Some(consumer.subscribe().await?);
        Ok(consumer)
    }

    /// Opens a connection and a channel with the prefetch limit, and subscribes.
    async fn subscribe(&self) -> Result<Session> {
        let connection = connection::open(
            &self.uri,
            &self.url,
            &self.connection_name,
            self.connect_timeout,
        )
        .await?;

        let queue = self.queue.as_str();
        let what = || format!("cannot subscribe to queue {queue:?}");
        let setup = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(failure::channel_failure)?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| failure::setup_failure(e, what()))?;
            let subscription = channel
                .basic_consume(
                    queue.into(),
                    ShortString::default(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| failure::setup_failure(e, what()))?;
            Ok::<_, Error>((channel, subscription))
        };
        let (channel, subscription) = match tokio::time::timeout(self.connect_timeout, setup).await
        {
            Ok(result) => result?,
            Err(_) => return Err(failure::connect_timeout(&self.url, self.connect_timeout)),
        };

        info!(
            url = %self.url,
            queue,
            prefetch = self.prefetch,
            "subscribed to rabbitmq queue"
        );
        Ok(Session {
            subscription,
            _channel: channel,
            _connection: connection,
        })
    }
}

impl Consumer for RabbitConsumer {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        if self.session.is_none() {
            self.session = Some(self.subscribe().await?);
        }
        let session = self.session.as_mut().expect("just subscribed");

        match session.subscription.next().await {
            Some(Ok(delivery)) => {
                let event = binding::decode(&delivery.properties, delivery.data);
                let acker = RabbitAcker(delivery.acker);
                Ok(Some(Delivery::decoded(event, acker)))
            }
            Some(Err(err)) => {
                warn!(queue = %self.queue, error = %err, "lost rabbitmq subscription");
                self.session = None;
                Err(failure::consume_failure(err, &self.queue))
            }
            None => {
                info!(queue = %self.queue, "rabbitmq cancelled the subscription");
                self.session = None;
                Ok(None)
            }
        }
    }
}

impl fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("url", &self.url)
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("subscribed", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// Settles one delivery on the channel it came from.
struct RabbitAcker(Acker);

impl Acknowledge for RabbitAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            match self.0.ack(BasicAckOptions::default()).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(failure::channel_closed()),
                Err(err) => Err(failure::settle_failure(err)),
            }
        })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let options = BasicRejectOptions { requeue: false };
            match self.0.reject(options).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(failure::channel_closed()),
                Err(err) => Err(failure::settle_failure(err)),
            }
        })
    }
}

/// A durable queue bound to a topic exchange: what a [`RabbitConsumer`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue's name.
    pub queue: String,
    /// The exchange the queue is bound to, declared as a durable topic exchange
    /// unless it exists.
    pub exchange: String,
    /// The binding keys, topic patterns such as `orders.#` (every event of the
    /// stream `orders` under the default routing key).
    pub binding_keys: Vec<String>,
    /// Where rejected messages go: the queue's `x-dead-letter-exchange`. The
    /// exchange itself is not declared. `None` (the default) discards them.
    pub dead_letter_exchange: Option<String>,
}

impl QueueSpec {
    /// A queue bound to `exchange` by `binding_keys`, without a dead-letter exchange.
    pub fn new<K: Into<String>>(
        queue: impl Into<String>,
        exchange: impl Into<String>,
        binding_keys: impl IntoIterator<Item = K>,
    ) -> Self {
        QueueSpec {
            queue: queue.into(),
            exchange: exchange.into(),
            binding_keys: binding_keys.into_iter().map(Into::into).collect(),
            dead_letter_exchange: None,
        }
    }
}

/// Declares the exchange and the durable queue of `spec`, and binds them, over a
/// connection of its own to `url`.
///
/// Declaring is idempotent; a queue or exchange that exists with other settings
/// (such as another dead-letter exchange) fails with
/// [`ErrorKind::Config`](outbox_core::ErrorKind::Config), and an unreachable
/// broker with [`ErrorKind::Unavailable`](outbox_core::ErrorKind::Unavailable).
/// The queue is a classic durable queue; per-key order needs it to be read by a
/// single consumer at a time.
pub async fn declare_queue(url: &str, spec: &QueueSpec) -> Result<()> {
    check_spec(spec)?;
    let shown = redact_url(url);
    let uri = connection::parse_url(url, &shown)?;
    let connection = connection::open(&uri, &shown, "outbox-setup", Duration::from_secs(5)).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(failure::channel_failure)?;

    declare_topic_exchange(&channel, &spec.exchange).await?;

    let mut arguments = FieldTable::default();
    if let Some(dlx) = &spec.dead_letter_exchange {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(dlx.as_str())),
        );
    }
    let queue = spec.queue.as_str();
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .map_err(|e| failure::setup_failure(e, format!("cannot declare queue {queue:?}")))?;

    for key in &spec.binding_keys {
        channel
            .queue_bind(
                queue.into(),
                spec.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                failure::setup_failure(e, format!("cannot bind queue {queue:?} by {key:?}"))
            })?;
    }
    info!(
        queue,
        exchange = %spec.exchange,
        binding_keys = ?spec.binding_keys,
        "declared rabbitmq queue"
    );

    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Checks that every name in `spec` fits in AMQP.
fn check_spec(spec: &QueueSpec) -> Result<()> {
    if spec.queue.is_empty() || spec.queue.len() > MAX_NAME_BYTES {
        return Err(Error::config(format!(
            "queue name {:?} must have 1 to 255 bytes",
            spec.queue
        )));
    }
    let exchanges = std::iter::once(&spec.exchange).chain(&spec.dead_letter_exchange);
    for exchange in exchanges {
        if let Some(problem) = exchange_problem(exchange) {
            return Err(Error::config(format!(
                "invalid exchange name {exchange:?}: {problem}"
            )));
        }
    }
    if let Some(key) = spec.binding_keys.iter().find(|k| k.len() > MAX_NAME_BYTES) {
        return Err(Error::config(format!(
            "binding key of {} bytes exceeds the limit of 255 bytes",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn queue_specs_with_names_amqp_cannot_carry_are_refused() {
        let good = QueueSpec::new("billing", "outbox", ["orders.#"]);
        check_spec(&good).unwrap();

        let mut bad = vec![
            QueueSpec::new("", "outbox", ["#"]),
            QueueSpec::new("q".repeat(256), "outbox", ["#"]),
            QueueSpec::new("billing", "out box", ["#"]),
            QueueSpec::new("billing", "outbox", ["k".repeat(256)]),
        ];
        let mut dlx = good.clone();
        dlx.dead_letter_exchange = Some("dead letters".into());
        bad.push(dlx);
        for spec in bad {
            assert_eq!(check_spec(&spec).unwrap_err().kind(), ErrorKind::Config);
        }
    }
}

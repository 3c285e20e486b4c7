//! The RabbitMQ publisher: one connection, a pool of confirm-mode channels, one
//! unconfirmed message per channel.
//!
//! [`RabbitPublisher`] owns the connection (replaced lazily when it is lost),
//! the channels, the exchange, routing key and source templates, and the checks
//! made before anything is sent.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use outbox_core::{Error, Event, Publisher, Result};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::options::redact_url;
use outbox_core::Template;

use crate::template::{check_exchange, check_routing_key, exchange_problem};
use crate::{RabbitOptions, binding, connection, failure};

/// Publishes outbox events to RabbitMQ, one persistent message per event.
///
/// Each event becomes a message in the CloudEvents AMQP binding's binary mode
/// (see the crate documentation for the mapping), published with `mandatory`
/// set to the exchange and routing key its templates give.
///
/// [`Publisher::publish`] resolves after the broker's publisher confirm: the
/// message is in every queue it was routed to, on disk for a durable queue. A
/// message the broker returns as unroutable is a failure, never a success, even
/// though the broker confirms it too.
///
/// # Channels
///
/// Every publish holds a channel of its own until its confirm arrives, so at
/// most [`RabbitOptions::max_in_flight`] channels are open. One channel with many
/// messages in flight would be cheaper, but lapin hands a returned message to
/// whichever confirm of the same batch it resolves first, so an unroutable
/// message could be reported as confirmed. With one message per channel the
/// return can only belong to that message. The order of one key holds across
/// channels because the relay publishes a key's next event only after the
/// previous one is confirmed, which means it is already in its queues.
///
/// # Errors
///
/// - [`Unavailable`](outbox_core::ErrorKind::Unavailable): the broker cannot be
///   reached, the connection or channel was lost before the confirm, or no
///   confirm came within [`RabbitOptions::confirm_timeout`]. The relay pauses
///   publishing and does not count the attempt.
/// - [`Transient`](outbox_core::ErrorKind::Transient): the message was returned
///   as unroutable (no queue bound to its routing key), the exchange does not
///   exist or may not be written to, or the broker nacked the message. These
///   are faults of the topology that an operator fixes; the relay retries with
///   backoff and dead-letters the event once its attempts run out.
/// - [`Permanent`](outbox_core::ErrorKind::Permanent): the exchange name or
///   routing key the templates make is invalid for AMQP, a header or media type
///   is too long, or the broker refused the message itself (406, such as one
///   over its `max_message_size`). The relay dead-letters the event at once.
///
/// A publish whose connection drops before its confirm may still have been
/// routed; the retry then stores a second copy, since RabbitMQ does not
/// deduplicate. Consumers deduplicate by the event id (`message_id`).
///
/// # Reconnecting
///
/// The publisher does not reconnect in the background. When the connection is
/// found closed, the next publish opens a new one (one caller does, the others
/// wait for it) and fails as `Unavailable` if the broker is still down. While the
/// broker is down every publish therefore costs one connection attempt, bounded
/// by [`RabbitOptions::connect_timeout`]; the relay's pause on `Unavailable`
/// keeps that rare. A connection that hangs without closing is noticed by each
/// publish's confirm timeout and by the AMQP heartbeat the broker negotiates
/// (60 seconds by default; `?heartbeat=N` in the URL changes it).
pub struct RabbitPublisher {
    uri: AMQPUri,
    url: String,
    exchange: Template,
    routing_key: Template,
    source: Template,
    declare_exchange: bool,
    confirm_timeout: Duration,
    connect_timeout: Duration,
    connection_name: String,
    slots: Semaphore,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
}

/// One connection and the idle channels opened on it.
struct Link {
    connection: Connection,
    idle: Mutex<Vec<Channel>>,
    /// The exchanges declared on this connection, when the publisher declares them.
    declared: Mutex<HashSet<String>>,
}

impl RabbitPublisher {
    /// Checks `options` and connects to the broker.
    ///
    /// Fails with [`ErrorKind::Config`](outbox_core::ErrorKind::Config) for a
    /// malformed or `amqps://` URL, an invalid template, zero timeouts or
    /// `max_in_flight`, refused credentials or a virtual host the user may not
    /// open; with [`ErrorKind::Unavailable`](outbox_core::ErrorKind::Unavailable)
    /// when the broker cannot be reached within the connect timeout.
    ///
    /// ```no_run
    /// use outbox_rabbitmq::{RabbitOptions, RabbitPublisher};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = RabbitPublisher::connect(RabbitOptions::default()).await?;
    /// publisher.ensure_exchange("outbox").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: RabbitOptions) -> Result<RabbitPublisher> {
        let url = redact_url(&options.url);
        let exchange = exchange_template(&options.exchange_template)?;
        let routing_key = Template::parse(&options.routing_key_template)?;
        let source = source_template(&options.source_template)?;
        if options.confirm_timeout.is_zero() || options.connect_timeout.is_zero() {
            return Err(Error::config("rabbitmq timeouts must be above zero"));
        }
        if options.max_in_flight == 0 {
            return Err(Error::config("rabbitmq max_in_flight must be above zero"));
        }
        let uri = connection::parse_url(&options.url, &url)?;

        let publisher = RabbitPublisher {
            uri,
            url,
            exchange,
            routing_key,
            source,
            declare_exchange: options.declare_exchange,
            confirm_timeout: options.confirm_timeout,
            connect_timeout: options.connect_timeout,
            connection_name: options.connection_name,
            slots: Semaphore::new(options.max_in_flight),
            link: tokio::sync::Mutex::new(None),
        };
        publisher.link().await?;
        Ok(publisher)
    }

    /// The exchange and routing key an event of `stream` and `event_type` is
    /// published with, or an
    /// [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent) error when the
    /// templates make an invalid name of them.
    pub fn destination(&self, stream: &str, event_type: &str) -> Result<(String, String)> {
        let exchange = self.exchange.render(stream, event_type);
        check_exchange(&exchange)?;
        let routing_key = self.routing_key.render(stream, event_type);
        check_routing_key(&routing_key)?;
        Ok((exchange, routing_key))
    }

    /// Declares `exchange` as a durable topic exchange, unless it exists.
    ///
    /// An existing exchange of another type or durability fails with
    /// [`ErrorKind::Config`](outbox_core::ErrorKind::Config), as does an invalid
    /// name; a lost connection with
    /// [`ErrorKind::Unavailable`](outbox_core::ErrorKind::Unavailable).
    pub async fn ensure_exchange(&self, exchange: &str) -> Result<()> {
        if let Some(problem) = exchange_problem(exchange) {
            return Err(Error::config(format!(
                "invalid exchange name {exchange:?}: {problem}"
            )));
        }
        let link = self.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(failure::channel_failure)?;
        declare_topic_exchange(&channel, exchange).await?;
        info!(exchange, "declared rabbitmq exchange");
        Ok(())
    }

    /// The current connection, or a new one when there is none or it closed.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref() {
            if link.connection.status().connected() {
                return Ok(Arc::clone(link));
            }
            warn!(url = %self.url, "lost connection to rabbitmq");
            *current = None;
        }

        let connection = connection::open(
            &self.uri,
            &self.url,
            &self.connection_name,
            self.connect_timeout,
        )
        .await?;
        info!(url = %self.url, "connected to rabbitmq");
        let link = Arc::new(Link {
            connection,
            idle: Mutex::new(Vec::new()),
            declared: Mutex::new(HashSet::new()),
        });
        *current = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Publishes one message on a channel of its own and waits for its confirm.
    async fn send(
        &self,
        (exchange, routing_key): (&str, &str),
        message_id: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        let link = self.link().await?;
        let channel = link.channel().await?;
        if self.declare_exchange {
            link.declare_once(&channel, exchange).await?;
        }

        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    payload,
                    properties,
                )
                .await?;
            confirm.await
        }
        .await
        .map_err(|e| failure::publish_failure(e, exchange))?;
        link.give_back(channel);

        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                let returned_id = returned.properties.message_id().as_ref();
                if returned_id.map(ShortString::as_str) != Some(message_id) {
                    // One message per channel makes this impossible; the publish
                    // fails all the same, since its own return may be elsewhere.
                    warn!(
                        event_id = message_id,
                        returned_id = ?returned_id,
                        "rabbitmq returned another message on this channel"
                    );
                }
                Err(failure::unroutable(
                    exchange,
                    routing_key,
                    returned.reply_code,
                    returned.reply_text.as_str(),
                ))
            }
            Confirmation::Nack(None) => Err(failure::nacked(exchange)),
            Confirmation::NotRequested => Err(failure::not_confirmed()),
        }
    }
}

impl Link {
    /// An idle channel of this connection, or a new one in confirm mode.
    async fn channel(&self) -> Result<Channel> {
        loop {
            let Some(channel) = self.idle.lock().expect("idle channels").pop() else {
                break;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }

        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(failure::channel_failure)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failure::channel_failure)?;
        debug!(channel = channel.id(), "opened rabbitmq channel");
        Ok(channel)
    }

    /// Keeps `channel` for the next publish. A channel that is not given back, as
    /// after a failure, closes when it is dropped.
    fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle.lock().expect("idle channels").push(channel);
        }
    }

    /// Declares `exchange` the first time this connection publishes to it.
    async fn declare_once(&self, channel: &Channel, exchange: &str) -> Result<()> {
        if exchange.is_empty() || self.declared.lock().expect("declared").contains(exchange) {
            return Ok(());
        }
        declare_topic_exchange(channel, exchange).await?;
        self.declared
            .lock()
            .expect("declared")
            .insert(exchange.to_owned());
        info!(exchange, "declared rabbitmq exchange");
        Ok(())
    }
}

impl Publisher for RabbitPublisher {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let (exchange, routing_key) = self.destination(&event.stream, &event.event_type)?;
        let source = self.source.render(&event.stream, &event.event_type);
        let properties = binding::properties(event, &source)?;
        let message_id = event.event_id.to_string();

        let publish = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let destination = (exchange.as_str(), routing_key.as_str());
            let payload = event.payload.as_bytes();
            self.send(destination, &message_id, payload, properties)
                .await
        };
        match tokio::time::timeout(self.confirm_timeout, publish).await {
            Ok(result) => result,
            Err(_) => Err(failure::confirm_timeout(self.confirm_timeout)),
        }
    }
}

impl fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("url", &self.url)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("source", &self.source)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

/// Declares `exchange` as a durable topic exchange on `channel`.
pub(crate) async fn declare_topic_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| failure::setup_failure(e, format!("cannot declare exchange {exchange:?}")))
}

/// Parses the exchange template and checks that it can make a valid name.
fn exchange_template(text: &str) -> Result<Template> {
    let template = Template::parse(text)?;
    if let Some(problem) = exchange_problem(&template.render("stream", "type")) {
        return Err(Error::config(format!(
            "exchange template {text:?} cannot make a valid exchange name: {problem}"
        )));
    }
    Ok(template)
}

/// Parses the source template and checks that it makes a usable header value.
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
    fn exchange_templates_that_cannot_work_are_refused() {
        for text in ["out box", "{stream}/{type}", "{stream}.{key}"] {
            let err = exchange_template(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        }
        exchange_template("").unwrap();
        exchange_template("shop.{stream}").unwrap();
    }

    #[test]
    fn source_templates_must_be_usable() {
        assert_eq!(source_template("").unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(
            source_template("/a\n/b").unwrap_err().kind(),
            ErrorKind::Config
        );
        source_template("https://shop.example/{stream}").unwrap();
    }
}

//! The MQTT consumer: a persistent QoS 1 session whose messages are handed
//! over in the order the broker sends them and acknowledged only on request.
//!
//! One task polls the connection and turns every message into a [`Delivery`];
//! an acknowledgement is a PUBACK queued on the same connection. A message
//! that came on a connection since lost cannot be acknowledged any more: the
//! broker sends it again on the next one.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use outbox_core::{
    Acknowledge, BoxFuture, Consumer, Delivery, Error, ErrorKind, ReceivedEvent, Result,
};
use rumqttc::{AsyncClient, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::connection::{self, Backoff, Settings};
use crate::options::{self, redact_url};
use crate::{MqttConsumerOptions, failure};

/// Reads outbox events from an MQTT subscription, with manual acknowledgement.
///
/// The consumer connects with [`MqttConsumerOptions::client_id`] and a
/// persistent session (clean session off), subscribes to
/// [`MqttConsumerOptions::topic_filter`] with QoS 1 on every connect, and
/// yields one [`Delivery`] per message, in the order the broker sent them.
/// Each body is decoded as a structured CloudEvent with
/// [`outbox_file::parse_line`]; a body that is not one becomes
/// [`Delivery::malformed`] with [`ErrorKind::Permanent`].
///
/// # Acknowledgement
///
/// - [`Delivery::ack`] queues the PUBACK for the message on the connection
///   and returns; the broker then forgets the message. It fails with
///   `Unavailable` when the message came on a connection since lost: the
///   broker delivers it again, flagged DUP, on the next one.
/// - [`Delivery::reject`] acknowledges too: MQTT has no dead-letter route, so
///   giving a message up means taking it off the session.
/// - A delivery dropped unsettled is never acknowledged on this connection.
///   The broker sends it again when the session reconnects (a new
///   [`MqttConsumer::connect`] with the same client id, or the task's own
///   reconnect after a lost connection), not before.
///
/// Several deliveries may be unacknowledged at once. How many the broker sends
/// ahead is its own setting, not the client's: Mosquitto's
/// `max_inflight_messages`, 20 by default, per client. Once that many are
/// unacknowledged the broker holds back the rest, so a consumer that keeps a
/// message unsettled for long slows its whole session. Mosquitto queues what
/// it holds back up to `max_queued_messages` (1,000 by default) and drops QoS
/// 1 messages beyond that; size it above the consumer's worst backlog.
///
/// PUBACKs are sent in the order [`Delivery::ack`] is called, which need not
/// be the order the messages came in. MQTT 3.1.1 asks for acknowledgements in
/// receipt order (section 4.6); Mosquitto accepts any order, a broker that
/// enforced the rule would not.
///
/// # Errors
///
/// [`MqttConsumer::connect`] fails as [`MqttPublisher::connect`] does, and
/// with `Config` when the broker refuses the subscription (its ACL). A lost
/// connection is not reported by [`Consumer::next`]: the task reconnects by
/// itself, pausing 0.1 s at first and up to 5 s, and `next` waits meanwhile.
///
/// [`MqttPublisher::connect`]: crate::MqttPublisher::connect
pub struct MqttConsumer {
    client: AsyncClient,
    deliveries: mpsc::UnboundedReceiver<Result<Delivery>>,
    url: String,
    client_id: String,
    topic_filter: String,
    task: Option<JoinHandle<()>>,
}

/// Which connection the consumer is on, shared with the ackers.
struct Session {
    state: Mutex<SessionState>,
}

struct SessionState {
    /// Counts the connections lost so far.
    epoch: u64,
    connected: bool,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MqttConsumer {
    /// Checks `options`, connects, subscribes and waits for the broker to
    /// confirm the subscription.
    ///
    /// ```no_run
    /// use outbox_core::Consumer;
    /// use outbox_mqtt::{MqttConsumer, MqttConsumerOptions};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let mut consumer = MqttConsumer::connect(MqttConsumerOptions {
    ///     client_id: "billing".into(),
    ///     topic_filter: "outbox/orders".into(),
    ///     ..MqttConsumerOptions::default()
    /// })
    /// .await?;
    /// while let Some(delivery) = consumer.next().await? {
    ///     match delivery.event() {
    ///         Ok(event) => println!("{} {}", event.key, event.event_type),
    ///         Err(err) => eprintln!("malformed: {err}"),
    ///     }
    ///     delivery.ack().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: MqttConsumerOptions) -> Result<MqttConsumer> {
        let url = redact_url(&options.url);
        options::client_id(&options.client_id)?;
        check_filter(&options.topic_filter)?;
        let keep_alive = options::keep_alive(options.keep_alive)?;
        let addr = options::broker_addr(&options.url)?;

        let (client, mut eventloop) = connection::client(&Settings {
            addr: &addr,
            client_id: &options.client_id,
            keep_alive,
            connect_timeout: options.connect_timeout,
            max_message_bytes: options.max_message_bytes,
            clean_session: false,
            manual_acks: true,
            in_flight: 1,
            // Acks wait here for the task; a session has at most 65,535
            // unacknowledged messages, one per packet id.
            request_capacity: usize::from(u16::MAX),
        });
        let session_present =
            connection::first_connect(&mut eventloop, options.connect_timeout, &url).await?;
        client
            .try_subscribe(&options.topic_filter, QoS::AtLeastOnce)
            .map_err(|_| failure::closed())?;

        let (sender, deliveries) = mpsc::unbounded_channel();
        let (subscribed, confirmed) = oneshot::channel();
        let task = tokio::spawn(
            Driver {
                eventloop,
                client: client.clone(),
                session: Arc::new(Session {
                    state: Mutex::new(SessionState {
                        epoch: 0,
                        connected: true,
                    }),
                }),
                deliveries: sender,
                subscribed: Some(subscribed),
                topic_filter: options.topic_filter.clone(),
                url: url.clone(),
            }
            .run(),
        );
        let consumer = MqttConsumer {
            client,
            deliveries,
            url,
            client_id: options.client_id,
            topic_filter: options.topic_filter,
            task: Some(task),
        };

        match tokio::time::timeout(options.connect_timeout, confirmed).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(failure::subscription_refused(&consumer.topic_filter)),
            Ok(Err(_)) => return Err(failure::connection_lost(&consumer.url)),
            Err(_) => {
                return Err(failure::connect_timeout(
                    &consumer.url,
                    options.connect_timeout,
                ));
            }
        }
        info!(
            url = %consumer.url,
            client_id = %consumer.client_id,
            topic_filter = %consumer.topic_filter,
            session_present,
            "mqtt consumer ready"
        );
        Ok(consumer)
    }

    /// Makes sure the broker holds a session for `options.client_id` with its
    /// subscription, so that it keeps the messages published from now on until
    /// a consumer reads them: connects, subscribes and closes.
    ///
    /// MQTT stores nothing for a topic nobody subscribes to, so run this (or a
    /// consumer) before the relay publishes. Messages already queued for the
    /// session stay queued.
    pub async fn ensure_session(options: MqttConsumerOptions) -> Result<()> {
        MqttConsumer::connect(options).await?.close().await;
        Ok(())
    }

    /// Removes the broker's session for `options.client_id`, with its
    /// subscription and every message queued for it, by connecting once with a
    /// clean session. No consumer may be connected with that id meanwhile.
    pub async fn delete_session(options: MqttConsumerOptions) -> Result<()> {
        let url = redact_url(&options.url);
        options::client_id(&options.client_id)?;
        let addr = options::broker_addr(&options.url)?;
        let (client, mut eventloop) = connection::client(&Settings {
            addr: &addr,
            client_id: &options.client_id,
            keep_alive: options::keep_alive(options.keep_alive)?,
            connect_timeout: options.connect_timeout,
            max_message_bytes: options.max_message_bytes,
            clean_session: true,
            manual_acks: true,
            in_flight: 1,
            request_capacity: 1,
        });
        connection::first_connect(&mut eventloop, options.connect_timeout, &url).await?;
        client.try_disconnect().map_err(|_| failure::closed())?;

        let sent = async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(failure::connect_failure(err, &url)),
                }
            }
        };
        tokio::time::timeout(options.connect_timeout, sent)
            .await
            .map_err(|_| failure::connect_timeout(&url, options.connect_timeout))?
    }

    /// The client id, which names the broker's session.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sends DISCONNECT after the PUBACKs already queued, and waits, at most five
    /// seconds, until the broker has closed the connection, hence read every
    /// PUBACK. The session stays in the broker with every message not
    /// acknowledged.
    ///
    /// Dropping the consumer instead cuts the connection at once, and PUBACKs
    /// still queued are lost: their messages come again.
    pub async fn close(mut self) {
        let _ = self.client.try_disconnect();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Consumer for MqttConsumer {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        self.deliveries.recv().await.transpose()
    }
}

impl Drop for MqttConsumer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for MqttConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConsumer")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("topic_filter", &self.topic_filter)
            .finish_non_exhaustive()
    }
}

/// Decodes a message body as a structured CloudEvent of the outbox.
pub(crate) fn decode(body: &[u8]) -> Result<ReceivedEvent> {
    let malformed = |message: &'static str| Error::new(ErrorKind::Permanent, message);
    let text = std::str::from_utf8(body)
        .map_err(|e| malformed("mqtt message body is not utf-8").with_source(e))?;
    let event = outbox_file::parse_line(text).map_err(|e| {
        malformed("mqtt message is not a structured cloudevent of the outbox").with_source(e)
    })?;
    Ok(ReceivedEvent {
        event_id: event.event_id,
        stream: Some(event.stream),
        key: event.key,
        seq: Some(event.seq),
        event_type: event.event_type,
        source: event.source,
        time: Some(event.time),
        payload: event.payload,
        headers: event.headers,
    })
}

/// Refuses a topic filter MQTT would not accept: empty, with NUL, or with a
/// wildcard that is not a whole level (`#` only last).
fn check_filter(filter: &str) -> Result<()> {
    let levels: Vec<&str> = filter.split('/').collect();
    let bad_level = levels.iter().enumerate().any(|(i, level)| {
        (level.contains('#') && (*level != "#" || i + 1 != levels.len()))
            || (level.contains('+') && *level != "+")
    });
    if filter.is_empty() || filter.contains('\0') || bad_level {
        return Err(Error::config(format!(
            "invalid mqtt topic filter {filter:?}"
        )));
    }
    Ok(())
}

/// The consumer's connection task.
struct Driver {
    eventloop: EventLoop,
    client: AsyncClient,
    session: Arc<Session>,
    deliveries: mpsc::UnboundedSender<Result<Delivery>>,
    /// Told the outcome of the first subscription, then `None`.
    subscribed: Option<oneshot::Sender<bool>>,
    topic_filter: String,
    url: String,
}

impl Driver {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            match self.eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                    if self.deliver(publish).is_err() {
                        return;
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::SubAck(suback))) => {
                    let granted = suback
                        .return_codes
                        .iter()
                        .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                    match self.subscribed.take() {
                        Some(subscribed) => {
                            let _ = subscribed.send(granted);
                        }
                        None if !granted => {
                            let refused = failure::subscription_refused(&self.topic_filter);
                            let _ = self.deliveries.send(Err(refused));
                        }
                        None => {}
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(connack))) => {
                    self.session.lock().connected = true;
                    backoff.reset();
                    let _ = self
                        .client
                        .try_subscribe(&self.topic_filter, QoS::AtLeastOnce);
                    info!(
                        url = %self.url,
                        session_present = connack.session_present,
                        "reconnected to mqtt"
                    );
                }
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => {
                    connection::await_close(&mut self.eventloop).await;
                    info!(url = %self.url, "closed mqtt consumer connection");
                    return;
                }
                Ok(_) => {}
                Err(err) => {
                    let was_connected = {
                        let mut state = self.session.lock();
                        let was_connected = state.connected;
                        // Under the lock no acker can queue a PUBACK, so none
                        // for the lost connection survives into the next one.
                        state.epoch += 1;
                        state.connected = false;
                        connection::forget_lost_connection(&mut self.eventloop);
                        was_connected
                    };
                    let pause = backoff.next();
                    if was_connected {
                        warn!(url = %self.url, error = %err, "lost connection to mqtt");
                    } else {
                        debug!(
                            url = %self.url,
                            error = %err,
                            pause_ms = pause.as_millis(),
                            "mqtt reconnect failed"
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Hands one message over; fails when the consumer is gone.
    fn deliver(&self, publish: Publish) -> Result<(), ()> {
        if publish.dup {
            debug!(topic = %publish.topic, pkid = publish.pkid, "mqtt message redelivered");
        }
        let acker = Acker {
            client: self.client.clone(),
            session: Arc::clone(&self.session),
            epoch: self.session.lock().epoch,
            pkid: publish.pkid,
            qos: publish.qos,
        };
        let delivery = Delivery::decoded(decode(&publish.payload), acker);
        self.deliveries.send(Ok(delivery)).map_err(|_| ())
    }
}

/// Settles one message: queues its PUBACK if its connection is still up.
struct Acker {
    client: AsyncClient,
    session: Arc<Session>,
    epoch: u64,
    pkid: u16,
    qos: QoS,
}

impl Acker {
    fn settle(&self) -> Result<()> {
        let state = self.session.lock();
        if state.epoch != self.epoch || !state.connected {
            return Err(failure::stale_ack());
        }
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        self.client.try_ack(&publish).map_err(|_| failure::closed())
    }
}

impl Acknowledge for Acker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let outcome = self.settle();
        Box::pin(std::future::ready(outcome))
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let outcome = self.settle();
        Box::pin(std::future::ready(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::{Event, EventId, Payload};

    #[test]
    fn what_the_publisher_encodes_decodes_to_the_same_envelope() {
        let mut headers = outbox_core::Headers::new();
        headers.insert("tenant".into(), "acme".into());
        let event = Event {
            id: 3,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "eu/order-7".into(),
            seq: 12,
            partition: 4,
            event_type: "order.placed".into(),
            payload: Payload::bytes("application/json", r#"{"total":30}"#),
            headers,
            created_at: chrono::Utc::now(),
            attempts: 0,
        };
        let body = outbox_file::encode_structured(&event, "/outbox/orders").unwrap();

        let received = decode(&body).unwrap();
        assert_eq!(
            received,
            ReceivedEvent::from_event(&event, "/outbox/orders")
        );
    }

    #[test]
    fn bodies_that_are_not_outbox_cloudevents_are_permanent() {
        let id = EventId::new();
        let without_id = r#"{"specversion":"1.0","source":"/s","type":"t",
            "time":"2026-01-02T03:04:05Z","datacontenttype":"text/plain",
            "partitionkey":"k","sequence":"1","outboxstream":"s","data":"x"}"#;
        let bad_version = format!(
            r#"{{"specversion":"0.3","id":"{id}","source":"/s","type":"t",
            "time":"2026-01-02T03:04:05Z","datacontenttype":"text/plain",
            "partitionkey":"k","sequence":"1","outboxstream":"s","data":"x"}}"#
        );
        for body in [
            &b"not json"[..],
            &[0xff, 0xfe][..],
            without_id.as_bytes(),
            bad_version.as_bytes(),
        ] {
            let err = decode(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
    }

    #[test]
    fn topic_filters_are_checked() {
        for good in ["outbox/#", "outbox/+/orders", "#", "+", "a//b"] {
            check_filter(good).unwrap();
        }
        for bad in ["", "outbox/#/x", "outbox/a#", "outbox/a+", "a\0b"] {
            assert_eq!(
                check_filter(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad:?}"
            );
        }
    }
}

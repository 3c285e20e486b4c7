//! The consumer side: events as a broker hands them over, and how to settle them.
//!
//! A broker adapter implements [`Consumer`]: it turns each broker message into a
//! [`Delivery`], which holds the decoded [`ReceivedEvent`] and the means to
//! acknowledge or reject the message. [`ReceivedEvent::from_binary`] decodes the
//! CloudEvents attributes that every publisher of the project sends, so the
//! adapters share one reading of the envelope.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{CloudEventAttributes, Error, ErrorKind, Event, EventId, Headers, Payload, Result};

/// A boxed future that can be sent between threads, as the object-safe traits of
/// this module return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The media type assumed when a message carries none.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// An event as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The event's stable id, the key of the inbox.
    pub event_id: EventId,
    /// The outbox stream, from the `outboxstream` extension; `None` when the
    /// producer did not send it.
    pub stream: Option<String>,
    /// The ordering key, from the `partitionkey` extension.
    pub key: String,
    /// The position within the key, from the `sequence` extension; `None` when
    /// the producer did not send it.
    pub seq: Option<i64>,
    /// The event type.
    pub event_type: String,
    /// The CloudEvents `source`.
    pub source: String,
    /// When the producer stored the event, from the `time` attribute.
    pub time: Option<DateTime<Utc>>,
    /// The payload and its media type (`datacontenttype`).
    pub payload: Payload,
    /// The event's own headers, without the binding's attributes.
    pub headers: Headers,
}

impl ReceivedEvent {
    /// Decodes an event from the CloudEvents attributes of a binary-mode message.
    ///
    /// `attribute` looks up an attribute by its bare CloudEvents name (`id`,
    /// `type`, `partitionkey`), the adapter having removed its binding's prefix.
    /// `body` is the message body and `headers` the message's other headers.
    /// `specversion`, `id`, `type`, `source` and `partitionkey` are required; a
    /// missing or malformed one fails with [`ErrorKind::Permanent`] naming it,
    /// since redelivering the same message cannot fix it.
    ///
    /// ```
    /// use outbox_core::{ReceivedEvent, EventId};
    ///
    /// let id = EventId::new().to_string();
    /// let attribute = |name: &str| match name {
    ///     "specversion" => Some("1.0".to_owned()),
    ///     "id" => Some(id.clone()),
    ///     "type" => Some("order.placed".to_owned()),
    ///     "source" => Some("/outbox/orders".to_owned()),
    ///     "partitionkey" => Some("order-7".to_owned()),
    ///     "sequence" => Some("0000000000000000003".to_owned()),
    ///     _ => None,
    /// };
    /// let event = ReceivedEvent::from_binary(attribute, b"{}".to_vec(), Default::default())?;
    /// assert_eq!(event.key, "order-7");
    /// assert_eq!(event.seq, Some(3));
    /// # Ok::<(), outbox_core::Error>(())
    /// ```
    pub fn from_binary(
        attribute: impl Fn(&str) -> Option<String>,
        body: Vec<u8>,
        headers: Headers,
    ) -> Result<Self> {
        let required = |name: &'static str| {
            attribute(name)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| malformed(format!("message has no cloudevents {name}")))
        };

        let version = required("specversion")?;
        if version != crate::SPEC_VERSION {
            return Err(malformed(format!(
                "unsupported cloudevents specversion {version:?}"
            )));
        }
        let id = required("id")?;
        let event_id = Uuid::parse_str(&id).map(EventId::from_uuid).map_err(|e| {
            malformed(format!("cloudevents id {id:?} is not a uuid")).with_source(e)
        })?;
        let seq = match attribute("sequence") {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|e| {
                malformed(format!("cloudevents sequence {text:?} is not a number")).with_source(e)
            })?),
        };
        let time = match attribute("time") {
            None => None,
            Some(text) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| {
                        malformed(format!("cloudevents time {text:?} is not rfc 3339"))
                            .with_source(e)
                    })?
                    .with_timezone(&Utc),
            ),
        };
        let content_type =
            attribute("datacontenttype").unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());

        Ok(ReceivedEvent {
            event_id,
            stream: attribute("outboxstream"),
            key: required("partitionkey")?,
            seq,
            event_type: required("type")?,
            source: required("source")?,
            time,
            payload: Payload::bytes(content_type, body),
            headers,
        })
    }

    /// The event a consumer receives for a published `event` with `source`.
    pub fn from_event(event: &Event, source: &str) -> Self {
        let attributes = CloudEventAttributes::of(event, source);
        ReceivedEvent::from_binary(
            |name| attributes.get(name).map(str::to_owned),
            event.payload.as_bytes().to_vec(),
            event.headers.clone(),
        )
        .expect("the attributes of a stored event decode")
    }
}

fn malformed(message: String) -> Error {
    Error::new(ErrorKind::Permanent, message)
}

/// Settles one broker message: the adapter's side of a [`Delivery`].
pub trait Acknowledge: Send {
    /// Tells the broker the message is done with, so it is not delivered again.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>>;

    /// Gives the message up: the broker's own dead-letter route where it has one
    /// (a RabbitMQ dead-letter exchange, a JetStream termination), otherwise the
    /// message is acknowledged so that it no longer blocks its key. The consumer
    /// calls it for malformed messages and for events its handler refused for good.
    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

/// One message received from a broker, not yet settled.
///
/// Dropping a delivery without settling it leaves the message unacknowledged: the
/// broker delivers it again by its own rule (a JetStream ack wait, a RabbitMQ
/// channel closing, a Redis pending entry claimed again).
pub struct Delivery {
    event: Result<ReceivedEvent>,
    acker: Box<dyn Acknowledge>,
}

impl Delivery {
    /// A delivery of a decoded event.
    pub fn new(event: ReceivedEvent, acker: impl Acknowledge + 'static) -> Self {
        Delivery {
            event: Ok(event),
            acker: Box::new(acker),
        }
    }

    /// A delivery whose message could not be decoded; the consumer rejects it.
    pub fn malformed(error: Error, acker: impl Acknowledge + 'static) -> Self {
        Delivery {
            event: Err(error),
            acker: Box::new(acker),
        }
    }

    /// A delivery of `event` decoded by the adapter, or of the error that stopped it.
    pub fn decoded(event: Result<ReceivedEvent>, acker: impl Acknowledge + 'static) -> Self {
        Delivery {
            event,
            acker: Box::new(acker),
        }
    }

    /// The event, or why the message could not be decoded.
    pub fn event(&self) -> std::result::Result<&ReceivedEvent, &Error> {
        self.event.as_ref()
    }

    /// Acknowledges the message.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Rejects the message (see [`Acknowledge::reject`]).
    pub async fn reject(self) -> Result<()> {
        self.acker.reject().await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// A source of deliveries from one broker subscription.
///
/// `next` waits for the next message and returns `Ok(None)` once the
/// subscription has ended for good. A retryable error (the broker went away)
/// lets the caller try `next` again after a pause; the adapter reconnects where
/// its client does not do so itself.
pub trait Consumer: Send {
    /// A short name for logs and metrics, such as `rabbitmq`.
    fn name(&self) -> &'static str;

    /// Waits for the next delivery.
    fn next(&mut self) -> impl Future<Output = Result<Option<Delivery>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event() -> Event {
        Event {
            id: 9,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "order-7".into(),
            seq: 12,
            partition: 3,
            event_type: "order.placed".into(),
            payload: Payload::bytes("application/json", "{\"n\":1}"),
            headers: [("tenant".to_owned(), "acme".to_owned())].into(),
            created_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            attempts: 0,
        }
    }

    #[test]
    fn a_published_event_decodes_to_the_same_envelope() {
        let stored = event();
        let received = ReceivedEvent::from_event(&stored, "/outbox/orders");

        assert_eq!(received.event_id, stored.event_id);
        assert_eq!(received.stream.as_deref(), Some("orders"));
        assert_eq!(received.key, "order-7");
        assert_eq!(received.seq, Some(12));
        assert_eq!(received.event_type, "order.placed");
        assert_eq!(received.source, "/outbox/orders");
        assert_eq!(received.time, Some(stored.created_at));
        assert_eq!(received.payload, stored.payload);
        assert_eq!(received.headers, stored.headers);
    }

    #[test]
    fn a_missing_required_attribute_is_named() {
        let stored = event();
        let attributes = CloudEventAttributes::of(&stored, "/s");
        for name in ["specversion", "id", "type", "source", "partitionkey"] {
            let err = ReceivedEvent::from_binary(
                |n| (n != name).then(|| attributes.get(n).map(str::to_owned))?,
                Vec::new(),
                Headers::new(),
            )
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_permanent() {
        let stored = event();
        let attributes = CloudEventAttributes::of(&stored, "/s");
        for (name, bad) in [("id", "nope"), ("sequence", "x1"), ("time", "yesterday")] {
            let err = ReceivedEvent::from_binary(
                |n| {
                    if n == name {
                        Some(bad.to_owned())
                    } else {
                        attributes.get(n).map(str::to_owned)
                    }
                },
                Vec::new(),
                Headers::new(),
            )
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name}");
        }
    }

    #[test]
    fn optional_attributes_may_be_absent() {
        let stored = event();
        let attributes = CloudEventAttributes::of(&stored, "/s");
        let received = ReceivedEvent::from_binary(
            |n| {
                if matches!(n, "sequence" | "time" | "outboxstream" | "datacontenttype") {
                    None
                } else {
                    attributes.get(n).map(str::to_owned)
                }
            },
            b"raw".to_vec(),
            Headers::new(),
        )
        .unwrap();
        assert_eq!(received.seq, None);
        assert_eq!(received.stream, None);
        assert_eq!(received.payload.content_type(), DEFAULT_CONTENT_TYPE);
    }
}

//! The event envelope: what a service enqueues and what a relay publishes.
//!
//! A [`NewEvent`] is built by the writer and checked against [`Limits`] before any
//! row is written. Once stored it becomes an [`Event`], which adds what the store
//! assigns: the key's position (`seq`), the partition and the creation time.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{Error, Result, trace};

/// The stable identity of an event: a UUIDv7, made when the event is built.
///
/// It is the one id used for deduplication everywhere downstream: the broker's
/// message id, the CloudEvents `id`, the key of a consumer's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Wraps an existing UUID, such as one read back from a store.
    pub fn from_uuid(uuid: Uuid) -> Self {
        EventId(uuid)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// String headers carried with an event, sorted by name.
pub type Headers = BTreeMap<String, String>;

/// The body of an event: bytes and the media type that says how to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    content_type: String,
    bytes: Vec<u8>,
}

impl Payload {
    /// The media type of JSON payloads.
    pub const JSON: &'static str = "application/json";

    /// Serializes `value` as a JSON payload.
    pub fn json(value: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            Error::invalid_input("payload cannot be serialized as json").with_source(e)
        })?;
        Ok(Payload {
            content_type: Payload::JSON.to_owned(),
            bytes,
        })
    }

    /// A payload of raw bytes with an explicit media type.
    ///
    /// A JSON media type (`application/json` or any `+json` suffix) is checked
    /// when the event is validated: bytes that do not parse are refused.
    pub fn bytes(content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Payload {
            content_type: content_type.into(),
            bytes: bytes.into(),
        }
    }

    /// The media type.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the raw bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Whether the media type says the bytes are JSON.
    pub fn is_json(&self) -> bool {
        is_json_media_type(&self.content_type)
    }
}

/// Whether a media type denotes JSON: `application/json` or a `+json` suffix,
/// ignoring parameters such as `; charset=utf-8`.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(Payload::JSON) || essence.to_ascii_lowercase().ends_with("+json")
}

/// Size and shape limits applied to every event before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload accepted, in bytes. The default, 1 MiB, is NATS's
    /// default message size limit.
    pub max_payload_bytes: usize,
    /// The longest key accepted, in bytes.
    pub max_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_key_bytes: 512,
        }
    }
}

/// An event on its way into the outbox, built inside the writer's transaction.
///
/// ```
/// use outbox_core::{Limits, NewEvent};
/// use serde_json::json;
///
/// let event = NewEvent::json("orders", "order-42", "order.created", &json!({"total": 30}))?
///     .with_header("tenant", "acme");
/// event.validate(&Limits::default())?;
/// assert_eq!(event.key(), "order-42");
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    event_id: EventId,
    stream: String,
    key: String,
    event_type: String,
    payload: Payload,
    headers: Headers,
}

impl NewEvent {
    /// Builds an event with a fresh id and the current trace, if any, recorded in
    /// the `traceparent` header.
    pub fn new(
        stream: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        payload: Payload,
    ) -> Self {
        let mut headers = Headers::new();
        if let Some(traceparent) = trace::current_traceparent() {
            headers.insert(trace::TRACEPARENT.to_owned(), traceparent);
        }
        NewEvent {
            event_id: EventId::new(),
            stream: stream.into(),
            key: key.into(),
            event_type: event_type.into(),
            payload,
            headers,
        }
    }

    /// Builds an event whose payload is `value` serialized as JSON.
    pub fn json(
        stream: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        value: &impl Serialize,
    ) -> Result<Self> {
        Ok(NewEvent::new(
            stream,
            key,
            event_type,
            Payload::json(value)?,
        ))
    }

    /// Replaces the generated id, for callers that make their own UUIDv7s.
    pub fn with_event_id(mut self, event_id: EventId) -> Self {
        self.event_id = event_id;
        self
    }

    /// Adds or replaces a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// The logical destination, such as `orders`.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The ordering key, such as `order-42`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event type, such as `order.created`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Checks the event against `limits` and the envelope's rules.
    ///
    /// Stores call this for every event before writing any of them, so a batch
    /// with one bad event writes nothing.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        check_stream(&self.stream)?;
        check_key(&self.key, limits.max_key_bytes)?;
        check_event_type(&self.event_type)?;

        if self.payload.content_type.trim().is_empty() {
            return Err(Error::invalid_input("payload content type is empty"));
        }
        let size = self.payload.bytes.len();
        if size > limits.max_payload_bytes {
            return Err(Error::invalid_input(format!(
                "payload of {size} bytes exceeds the limit of {} bytes",
                limits.max_payload_bytes
            )));
        }
        if self.payload.is_json() {
            serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload.bytes).map_err(|e| {
                Error::invalid_input("payload is declared json but is not valid json")
                    .with_source(e)
            })?;
        }

        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if let Some(traceparent) = self.headers.get(trace::TRACEPARENT) {
            trace::parse_traceparent(traceparent)?;
        }
        Ok(())
    }
}

fn check_stream(stream: &str) -> Result<()> {
    let valid = !stream.is_empty()
        && stream.len() <= 128
        && stream.starts_with(|c: char| c.is_ascii_alphanumeric())
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if stream.is_empty() {
        return Err(Error::invalid_input("stream is empty"));
    }
    if !valid {
        return Err(Error::invalid_input(format!(
            "invalid stream {stream:?}: expected up to 128 ASCII letters, digits, `_`, `-` or \
             `.`, starting with a letter or digit"
        )));
    }
    Ok(())
}

fn check_key(key: &str, max_bytes: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_input("key is empty"));
    }
    if key.len() > max_bytes {
        return Err(Error::invalid_input(format!(
            "key of {} bytes exceeds the limit of {max_bytes} bytes",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::invalid_input("key contains a control character"));
    }
    Ok(())
}

fn check_event_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() {
        return Err(Error::invalid_input("event type is empty"));
    }
    if event_type.len() > 255
        || event_type
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid_input(format!(
            "invalid event type {event_type:?}: expected up to 255 characters without spaces"
        )));
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(Error::invalid_input(format!(
            "invalid header name {name:?}: expected ASCII letters, digits, `-`, `_` or `.`"
        )));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(Error::invalid_input(format!(
            "header {name:?} contains a line break or NUL"
        )));
    }
    Ok(())
}

/// An event as stored in the outbox, ready to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The store's row id: unique, and increasing within one key, but not a
    /// global order of commits.
    pub id: i64,
    /// The stable id used for deduplication downstream.
    pub event_id: EventId,
    /// The logical destination.
    pub stream: String,
    /// The ordering key.
    pub key: String,
    /// The event's position within its `(stream, key)`: 1, 2, 3, … without gaps,
    /// in the order the writing transactions committed.
    pub seq: i64,
    /// The partition the key hashes into, below [`crate::PARTITION_COUNT`].
    pub partition: i16,
    /// The event type.
    pub event_type: String,
    /// The payload and its media type.
    pub payload: Payload,
    /// The headers.
    pub headers: Headers,
    /// When the writing transaction stored the event, by the database's clock.
    pub created_at: DateTime<Utc>,
    /// How many publish attempts have failed so far.
    pub attempts: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn order_event() -> NewEvent {
        NewEvent::json("orders", "order-1", "order.created", &json!({"n": 1})).unwrap()
    }

    fn rejection(event: NewEvent) -> String {
        let err = event.validate(&Limits::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        err.to_string()
    }

    #[test]
    fn ids_are_version_seven_and_increase() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn a_well_formed_event_passes() {
        order_event().validate(&Limits::default()).unwrap();
    }

    #[test]
    fn empty_names_are_refused() {
        let mut e = order_event();
        e.stream.clear();
        assert_eq!(rejection(e), "stream is empty");

        let mut e = order_event();
        e.key.clear();
        assert_eq!(rejection(e), "key is empty");

        let mut e = order_event();
        e.event_type.clear();
        assert_eq!(rejection(e), "event type is empty");
    }

    #[test]
    fn json_payloads_must_parse() {
        let e = NewEvent::new(
            "orders",
            "k",
            "t",
            Payload::bytes("application/json", "{nope"),
        );
        assert!(rejection(e).contains("not valid json"));

        let e = NewEvent::new(
            "orders",
            "k",
            "t",
            Payload::bytes("application/cloudevents+json; charset=utf-8", "[1"),
        );
        assert!(rejection(e).contains("not valid json"));

        let e = NewEvent::new("orders", "k", "t", Payload::bytes("text/plain", "{nope"));
        e.validate(&Limits::default()).unwrap();
    }

    #[test]
    fn payload_size_is_limited() {
        let limits = Limits {
            max_payload_bytes: 8,
            ..Limits::default()
        };
        let e = NewEvent::new(
            "orders",
            "k",
            "t",
            Payload::bytes("text/plain", vec![b'x'; 9]),
        );
        let err = e.validate(&limits).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("exceeds the limit of 8 bytes"));
    }

    #[test]
    fn streams_must_be_subject_safe() {
        for stream in ["orders", "shop.orders", "orders-v2", "a_b"] {
            let mut e = order_event();
            e.stream = stream.into();
            e.validate(&Limits::default()).unwrap();
        }
        for stream in ["or ders", ".orders", "orders*", "orders>", "ördens"] {
            let mut e = order_event();
            e.stream = stream.into();
            assert!(rejection(e).starts_with("invalid stream"), "{stream}");
        }
    }

    #[test]
    fn headers_cannot_smuggle_line_breaks() {
        let e = order_event().with_header("x-tenant", "acme\r\nx-admin: yes");
        assert!(rejection(e).contains("line break"));

        let e = order_event().with_header("bad name", "v");
        assert!(rejection(e).starts_with("invalid header name"));
    }

    #[test]
    fn a_malformed_traceparent_is_refused() {
        let e = order_event().with_header("traceparent", "not-a-trace");
        assert!(rejection(e).contains("traceparent"));
    }
}

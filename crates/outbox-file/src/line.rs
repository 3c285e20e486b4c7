//! One event as one line of CloudEvents JSON, and the way back.
//!
//! The publishers write lines made by [`encode`] and the reader parses them with
//! [`parse_line`], so the field names and encodings live in this module alone.
//! The format is described in the crate documentation.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use outbox_core::{CloudEventAttributes, Error, ErrorKind, Event, EventId, Headers};
use outbox_core::{Payload, Result, SPEC_VERSION};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::ser::{SerializeMap, Serializer as _};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The `source` attribute used unless one is configured: `{stream}` is replaced
/// by each event's stream, so an `orders` event has the source `/outbox/orders`.
pub const DEFAULT_SOURCE: &str = outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// The placeholder of a source template that stands for the event's stream.
const STREAM_PLACEHOLDER: &str = "{stream}";

/// The extension attribute holding the event's headers as a JSON object in a
/// string, because CloudEvents attribute values cannot be objects.
const HEADERS_ATTRIBUTE: &str = "outboxheaders";

/// A checked `source` setting, rendered for each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceTemplate(String);

impl SourceTemplate {
    /// Checks that `template` can become a URI reference: not empty, and free of
    /// whitespace and control characters.
    pub(crate) fn new(template: &str) -> Result<Self> {
        if template.is_empty() {
            return Err(Error::config("event source is empty"));
        }
        if template
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::config(format!(
                "invalid event source {template:?}: expected a URI reference \
                 without spaces"
            )));
        }
        Ok(SourceTemplate(template.to_owned()))
    }

    /// The source of an event of `stream`.
    pub(crate) fn render(&self, stream: &str) -> Cow<'_, str> {
        if self.0.contains(STREAM_PLACEHOLDER) {
            Cow::Owned(self.0.replace(STREAM_PLACEHOLDER, stream))
        } else {
            Cow::Borrowed(&self.0)
        }
    }
}

/// The body of an event as it appears in a line.
enum Data {
    /// JSON payloads, embedded as they are.
    Json(Box<RawValue>),
    /// Every other payload, as standard base64 with padding.
    Base64(String),
}

/// Encodes `event` as one line of CloudEvents JSON, ending in a line feed.
///
/// A payload declared JSON that does not parse is refused as
/// [`ErrorKind::Permanent`]: no retry can make it valid.
pub(crate) fn encode(event: &Event, source: &SourceTemplate) -> Result<Vec<u8>> {
    let mut line = encode_structured(event, &source.render(&event.stream))?;
    line.push(b'\n');
    Ok(line)
}

/// Encodes `event` as one CloudEvents JSON object, in the format of the lines
/// described in the crate documentation but without the line feed, with
/// `source` as its `source` attribute, used as it is.
///
/// This is the structured content mode of the CloudEvents bindings: a
/// publisher for a protocol that cannot carry the attributes as headers (such
/// as MQTT 3.1.1) sends these bytes as the message body, and the receiver reads
/// them back with [`parse_line`]. The object holds no raw line break.
///
/// A payload declared JSON that does not parse is refused as
/// [`ErrorKind::Permanent`]: no retry can make it valid.
///
/// ```
/// use outbox_file::{encode_structured, parse_line};
/// # let event = outbox_core::Event {
/// #     id: 1,
/// #     event_id: outbox_core::EventId::new(),
/// #     stream: "orders".into(),
/// #     key: "order-42".into(),
/// #     seq: 3,
/// #     partition: 0,
/// #     event_type: "order.created".into(),
/// #     payload: outbox_core::Payload::bytes("application/json", r#"{"total":30}"#),
/// #     headers: Default::default(),
/// #     created_at: chrono::Utc::now(),
/// #     attempts: 0,
/// # };
///
/// let body = encode_structured(&event, "/shop/orders")?;
/// let read = parse_line(std::str::from_utf8(&body).unwrap())?;
/// assert_eq!((read.key.as_str(), read.seq), ("order-42", 3));
/// assert_eq!(read.source, "/shop/orders");
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn encode_structured(event: &Event, source: &str) -> Result<Vec<u8>> {
    let attributes = CloudEventAttributes::of(event, source);
    let data = if event.payload.is_json() {
        Data::Json(inline_json(event.payload.as_bytes())?)
    } else {
        Data::Base64(BASE64.encode(event.payload.as_bytes()))
    };

    let mut object = Vec::with_capacity(512 + event.payload.as_bytes().len() * 4 / 3);
    write_object(&mut object, &attributes, event, &data).map_err(|e| {
        let message = "event cannot be encoded as json";
        Error::new(ErrorKind::Permanent, message).with_source(e)
    })?;
    Ok(object)
}

fn write_object(
    out: &mut Vec<u8>,
    attributes: &CloudEventAttributes,
    event: &Event,
    data: &Data,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::new(out);
    let mut object = serializer.serialize_map(None)?;

    for (name, value) in &attributes.attributes {
        object.serialize_entry(name, value)?;
    }
    if !event.headers.is_empty() {
        let headers = serde_json::to_string(&event.headers)?;
        object.serialize_entry(HEADERS_ATTRIBUTE, &headers)?;
    }

    match data {
        Data::Json(raw) => object.serialize_entry("data", raw)?,
        Data::Base64(text) => object.serialize_entry("data_base64", text)?,
    }
    object.end()
}

/// Checks a JSON payload and puts it on one line.
///
/// Valid JSON can hold a raw line break only as whitespace between tokens (inside
/// a string it must be escaped), so turning every CR and LF into a space keeps the
/// value's meaning while keeping the line whole.
fn inline_json(bytes: &[u8]) -> Result<Box<RawValue>> {
    let message = "payload is declared json but is not valid json";
    let invalid = || Error::new(ErrorKind::Permanent, message);
    let text = std::str::from_utf8(bytes).map_err(|e| invalid().with_source(e))?;

    let one_line = text.replace(['\n', '\r'], " ");
    RawValue::from_string(one_line).map_err(|e| invalid().with_source(e))
}

/// An event read back from a line written by one of this crate's publishers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedEvent {
    /// The stable id (`id`).
    pub event_id: EventId,
    /// The rendered `source`.
    pub source: String,
    /// The stream (`outboxstream`).
    pub stream: String,
    /// The ordering key (`partitionkey`).
    pub key: String,
    /// The position within `(stream, key)` (`sequence`, read as an integer).
    pub seq: i64,
    /// The event type (`type`).
    pub event_type: String,
    /// When the event was stored (`time`).
    pub time: DateTime<Utc>,
    /// The headers (`outboxheaders`), empty when the line has none.
    pub headers: Headers,
    /// The media type (`datacontenttype`) and the bytes (`data` as written, or
    /// `data_base64` decoded).
    pub payload: Payload,
}

impl PublishedEvent {
    /// Deserializes a JSON payload.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] when the payload is not declared
    /// JSON or does not fit `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        if !self.payload.is_json() {
            return Err(Error::invalid_input(format!(
                "payload of type {:?} is not json",
                self.payload.content_type()
            )));
        }
        serde_json::from_slice(self.payload.as_bytes())
            .map_err(invalid("payload does not match the requested type"))
    }
}

/// The fields of a line that the reader uses; other attributes are ignored.
#[derive(Deserialize)]
struct Line {
    specversion: String,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    time: DateTime<Utc>,
    datacontenttype: String,
    partitionkey: String,
    sequence: String,
    outboxstream: String,
    outboxheaders: Option<String>,
    data: Option<Box<RawValue>>,
    data_base64: Option<String>,
}

/// Parses one line written by [`crate::FilePublisher`] or
/// [`crate::StdoutPublisher`], with or without its line feed.
///
/// Every failure is [`ErrorKind::InvalidInput`]: the text is not a JSON object, a
/// required attribute is missing, `specversion` is not `1.0`, `sequence` is not
/// an integer, or the line carries both or neither of `data` and `data_base64`.
///
/// ```
/// use outbox_file::parse_line;
///
/// let line = concat!(
///     r#"{"specversion":"1.0","id":"0197a3c0-7d2e-7000-8000-000000000001","#,
///     r#""source":"/outbox/orders","type":"order.created","#,
///     r#""time":"2026-01-02T03:04:05.000000Z","#,
///     r#""datacontenttype":"application/json","#,
///     r#""partitionkey":"order-42","sequence":"0000000000000000003","#,
///     r#""outboxstream":"orders","data":{"total":30}}"#,
/// );
/// let event = parse_line(line)?;
/// assert_eq!((event.key.as_str(), event.seq), ("order-42", 3));
/// assert_eq!(event.data::<serde_json::Value>()?["total"], 30);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn parse_line(line: &str) -> Result<PublishedEvent> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let fields: Line =
        serde_json::from_str(line).map_err(invalid("line is not a cloudevent in json"))?;

    if fields.specversion != SPEC_VERSION {
        return Err(Error::invalid_input(format!(
            "unsupported specversion {:?}",
            fields.specversion
        )));
    }
    let seq = fields.sequence.parse::<i64>().map_err(|e| {
        let message = format!("sequence {:?} is not an integer", fields.sequence);
        Error::invalid_input(message).with_source(e)
    })?;
    let headers = match &fields.outboxheaders {
        Some(text) => serde_json::from_str::<Headers>(text)
            .map_err(invalid("outboxheaders is not a json object of strings"))?,
        None => Headers::new(),
    };

    let bytes = match (fields.data, fields.data_base64) {
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(text)) => BASE64
            .decode(text)
            .map_err(invalid("data_base64 is not valid base64"))?,
        (Some(_), Some(_)) => {
            return Err(Error::invalid_input("line has both data and data_base64"));
        }
        (None, None) => return Err(Error::invalid_input("line has no data")),
    };

    Ok(PublishedEvent {
        event_id: EventId::from_uuid(fields.id),
        source: fields.source,
        stream: fields.outboxstream,
        key: fields.partitionkey,
        seq,
        event_type: fields.event_type,
        time: fields.time,
        headers,
        payload: Payload::bytes(fields.datacontenttype, bytes),
    })
}

/// Makes an [`ErrorKind::InvalidInput`] error with `message` from a cause.
fn invalid<E>(message: &'static str) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |cause| Error::invalid_input(message).with_source(cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::format_sequence;
    use serde_json::{Value, json};

    fn event(payload: Payload) -> Event {
        Event {
            id: 11,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "order-42".into(),
            seq: 7,
            partition: 3,
            event_type: "order.created".into(),
            payload,
            headers: Headers::new(),
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            attempts: 0,
        }
    }

    fn default_source() -> SourceTemplate {
        SourceTemplate::new(DEFAULT_SOURCE).unwrap()
    }

    /// Encodes `event` and parses the line with the reader.
    fn read_back(event: &Event) -> PublishedEvent {
        let line = encode(event, &default_source()).unwrap();
        parse_line(std::str::from_utf8(&line).unwrap()).unwrap()
    }

    /// Encodes `event` and parses the line as a generic JSON object.
    fn shape(event: &Event) -> serde_json::Map<String, Value> {
        let line = encode(event, &default_source()).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        match serde_json::from_slice(&line).unwrap() {
            Value::Object(object) => object,
            other => panic!("line is not an object: {other}"),
        }
    }

    #[test]
    fn json_payloads_are_inline_data() {
        let payload = Payload::json(&json!({"total": 30, "items": ["a"]})).unwrap();
        let event = event(payload);
        let object = shape(&event);

        let expected = json!({
            "specversion": "1.0",
            "id": event.event_id.to_string(),
            "source": "/outbox/orders",
            "type": "order.created",
            "time": "2026-01-02T03:04:05.000000Z",
            "datacontenttype": "application/json",
            "partitionkey": "order-42",
            "sequence": "0000000000000000007",
            "outboxstream": "orders",
            "data": {"total": 30, "items": ["a"]},
        });
        assert_eq!(Value::Object(object), expected);
    }

    #[test]
    fn attributes_keep_the_cloudevents_order() {
        let line = encode(
            &event(Payload::bytes("text/plain", "hi")),
            &default_source(),
        )
        .unwrap();
        let text = String::from_utf8(line).unwrap();

        let names = [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "partitionkey",
            "sequence",
            "outboxstream",
            "data_base64",
        ];
        let positions: Vec<usize> = names
            .iter()
            .map(|name| text.find(&format!("\"{name}\":")).expect(name))
            .collect();
        assert!(positions.is_sorted(), "{text}");
    }

    #[test]
    fn other_payloads_are_base64() {
        let bytes = vec![0, 159, 146, 150, 255, b'\n'];
        let object = shape(&event(Payload::bytes(
            "application/octet-stream",
            bytes.clone(),
        )));

        assert!(!object.contains_key("data"));
        assert_eq!(object["datacontenttype"], "application/octet-stream");
        let text = object["data_base64"].as_str().unwrap();
        assert_eq!(BASE64.decode(text).unwrap(), bytes);
    }

    #[test]
    fn sequence_is_zero_padded_like_the_core() {
        for seq in [1, 42, i64::MAX] {
            let mut event = event(Payload::bytes("text/plain", ""));
            event.seq = seq;
            assert_eq!(shape(&event)["sequence"], format_sequence(seq));
        }
    }

    #[test]
    fn headers_are_one_string_attribute() {
        let mut event = event(Payload::bytes("text/plain", "x"));
        event.headers.insert("tenant".into(), "acme".into());
        event.headers.insert("X-Trace_id".into(), "a\tb".into());
        let object = shape(&event);

        let text = object[HEADERS_ATTRIBUTE].as_str().unwrap();
        let headers: Headers = serde_json::from_str(text).unwrap();
        assert_eq!(headers, event.headers);

        event.headers.clear();
        assert!(!shape(&event).contains_key(HEADERS_ATTRIBUTE));
    }

    #[test]
    fn multi_line_json_stays_on_one_line() {
        let pretty = "{\r\n  \"note\": \"two\\nlines\",\n  \"n\": 1\n}\n";
        let event = event(Payload::bytes("application/vnd.shop+json", pretty));
        let object = shape(&event);

        assert_eq!(object["data"], json!({"note": "two\nlines", "n": 1}));
    }

    #[test]
    fn invalid_json_payloads_are_permanent_failures() {
        for bytes in [&b"{nope"[..], &[0xff, b'{', b'}'][..]] {
            let event = event(Payload::bytes("application/json", bytes));
            let err = encode(&event, &default_source()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
    }

    #[test]
    fn the_source_is_rendered_per_stream() {
        assert_eq!(default_source().render("orders"), "/outbox/orders");

        let fixed = SourceTemplate::new("https://shop.example/outbox").unwrap();
        assert_eq!(fixed.render("orders"), "https://shop.example/outbox");

        for bad in ["", "/shop orders", "/shop\n"] {
            assert_eq!(
                SourceTemplate::new(bad).unwrap_err().kind(),
                ErrorKind::Config
            );
        }
    }

    #[test]
    fn lines_parse_back_into_the_event() {
        let mut json_event = event(Payload::json(&json!({"total": 30})).unwrap());
        json_event.headers.insert("tenant".into(), "acme".into());
        let binary_event = event(Payload::bytes("image/png", vec![1, 2, 3]));

        for event in [json_event, binary_event] {
            let read = read_back(&event);

            assert_eq!(read.event_id, event.event_id);
            assert_eq!(read.source, "/outbox/orders");
            assert_eq!(
                (read.stream.as_str(), read.key.as_str()),
                ("orders", "order-42")
            );
            assert_eq!(read.seq, 7);
            assert_eq!(read.event_type, event.event_type);
            assert_eq!(read.time, event.created_at);
            assert_eq!(read.headers, event.headers);
            assert_eq!(read.payload, event.payload);
        }
    }

    #[test]
    fn malformed_lines_are_invalid_input() {
        let good = event(Payload::bytes("text/plain", "x"));
        let good = String::from_utf8(encode(&good, &default_source()).unwrap()).unwrap();
        let cases = [
            "".to_owned(),
            "not json".to_owned(),
            good[..good.len() / 2].to_owned(),
            good.replace("\"1.0\"", "\"0.3\""),
            good.replace("0000000000000000007", "seven"),
            good.replace("\"data_base64\"", "\"data\":1,\"data_base64\""),
            good.replace("\"data_base64\":\"eA==\"", "\"x\":1"),
            good.replace("eA==", "***"),
            good.replace("\"partitionkey\"", "\"key\""),
        ];

        for line in cases {
            let err = parse_line(&line).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{line}");
        }
    }

    #[test]
    fn data_is_only_read_from_json_payloads() {
        let json_event = read_back(&event(Payload::json(&json!({"n": 1})).unwrap()));
        assert_eq!(json_event.data::<Value>().unwrap(), json!({"n": 1}));
        let err = json_event.data::<Vec<u8>>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        let text_event = read_back(&event(Payload::bytes("text/plain", "{}")));
        let err = text_event.data::<Value>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}

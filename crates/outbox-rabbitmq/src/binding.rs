//! The CloudEvents AMQP binding in binary content mode, carried over AMQP 0-9-1:
//! one event, one message, and back.
//!
//! The payload is the message body. Every context attribute except the media type
//! travels in the `headers` table, the 0-9-1 counterpart of AMQP 1.0's
//! application properties, as a string under the `cloudEvents_` prefix; the media
//! type is the `content_type` property. The event's own headers go along as plain
//! string entries unless they collide with one of these.

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use outbox_core::{CloudEventAttributes, Error, ErrorKind, Event, Headers, ReceivedEvent, Result};

/// The prefix this crate writes: the separator the binding prefers, since JMS
/// property names cannot contain `:`.
pub const ATTRIBUTE_PREFIX: &str = "cloudEvents_";

/// The other prefix the binding allows, read but never written.
pub const COLON_ATTRIBUTE_PREFIX: &str = "cloudEvents:";

/// Persistent messages survive a broker restart in a durable queue.
const PERSISTENT: u8 = 2;

/// The properties of `event`'s message, with `source` as its CloudEvents source.
///
/// An event header whose name matches an attribute header set here (ignoring
/// case) is replaced by the binding's value. A header name or media type longer
/// than AMQP's 255-byte short string fails with [`ErrorKind::Permanent`]; stores
/// refuse such events before writing, so this only meets events built by hand.
pub(crate) fn properties(event: &Event, source: &str) -> Result<BasicProperties> {
    let attributes = CloudEventAttributes::of(event, source);
    let own: Vec<(String, String)> = attributes
        .attributes
        .into_iter()
        .filter(|(name, _)| *name != "datacontenttype")
        .map(|(name, value)| (format!("{ATTRIBUTE_PREFIX}{name}"), value))
        .collect();

    let mut headers = BTreeMap::new();
    for (name, value) in &event.headers {
        if !own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            headers.insert(short(name, "header name")?, text(value));
        }
    }
    for (name, value) in &own {
        headers.insert(short(name, "header name")?, text(value));
    }

    let timestamp = u64::try_from(event.created_at.timestamp()).unwrap_or(0);
    Ok(BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_content_type(short(event.payload.content_type(), "content type")?)
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(timestamp)
        .with_headers(FieldTable::from(headers)))
}

/// Decodes the event in a message with `properties` and `body`.
///
/// Attributes are read under either prefix (ignoring its case); when a message
/// carries an attribute under both, the `cloudEvents_` one wins. The media type
/// is the `content_type` property, or a `datacontenttype` attribute when the
/// property is absent. String, integer, boolean and timestamp values are read as
/// text (a timestamp as RFC 3339); other entries, such as nested tables, are left
/// out of the event's headers. A missing or malformed required attribute fails
/// with [`ErrorKind::Permanent`] (see [`ReceivedEvent::from_binary`]).
pub(crate) fn decode(properties: &BasicProperties, body: Vec<u8>) -> Result<ReceivedEvent> {
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    let mut headers = Headers::new();

    let table = properties.headers().as_ref().map(FieldTable::inner);
    for (name, value) in table.into_iter().flatten() {
        let Some(value) = value_text(value) else {
            continue;
        };
        let name = name.as_str();
        if let Some(bare) = strip_prefix(name, ATTRIBUTE_PREFIX) {
            attributes.insert(bare.to_owned(), value);
        } else if let Some(bare) = strip_prefix(name, COLON_ATTRIBUTE_PREFIX) {
            attributes.entry(bare.to_owned()).or_insert(value);
        } else {
            headers.insert(name.to_owned(), value);
        }
    }
    if let Some(content_type) = properties.content_type() {
        attributes.insert("datacontenttype".to_owned(), content_type.to_string());
    }

    ReceivedEvent::from_binary(|name| attributes.get(name).cloned(), body, headers)
}

fn strip_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// The text of a header value, or `None` for a kind that has no plain text form.
fn value_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(seconds) => {
            let seconds = i64::try_from(*seconds).ok()?;
            chrono::DateTime::from_timestamp(seconds, 0)?
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
        _ => return None,
    })
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn short(value: &str, what: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|e| {
        Error::new(
            ErrorKind::Permanent,
            format!("{what} is too long for an amqp short string"),
        )
        .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::{EventId, Payload};

    fn event(headers: &[(&str, &str)]) -> Event {
        Event {
            id: 1,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "order-7".into(),
            seq: 12,
            partition: 3,
            event_type: "order.placed".into(),
            payload: Payload::bytes("application/json", "{}"),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            attempts: 0,
        }
    }

    fn header(properties: &BasicProperties, name: &str) -> Option<String> {
        let table = properties.headers().as_ref().unwrap();
        table.inner().get(name).map(|v| value_text(v).unwrap())
    }

    fn with_headers(entries: &[(&str, AMQPValue)]) -> BasicProperties {
        let table: BTreeMap<ShortString, AMQPValue> = entries
            .iter()
            .map(|(n, v)| (ShortString::from(*n), v.clone()))
            .collect();
        BasicProperties::default().with_headers(table.into())
    }

    #[test]
    fn every_attribute_becomes_a_prefixed_header() {
        let event = event(&[]);
        let properties = properties(&event, "/outbox/orders").unwrap();
        let id = event.event_id.to_string();

        let expected = [
            ("cloudEvents_specversion", "1.0"),
            ("cloudEvents_id", id.as_str()),
            ("cloudEvents_source", "/outbox/orders"),
            ("cloudEvents_type", "order.placed"),
            ("cloudEvents_time", "2026-03-04T05:06:07.000000Z"),
            ("cloudEvents_partitionkey", "order-7"),
            ("cloudEvents_sequence", "0000000000000000012"),
            ("cloudEvents_outboxstream", "orders"),
        ];
        for (name, value) in expected {
            assert_eq!(header(&properties, name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(properties.headers().as_ref().unwrap().inner().len(), 8);
        assert_eq!(header(&properties, "cloudEvents_datacontenttype"), None);

        assert_eq!(properties.message_id().as_ref().unwrap().as_str(), id);
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(*properties.timestamp(), Some(1_772_600_767));
    }

    #[test]
    fn event_headers_pass_through_unless_they_collide() {
        let event = event(&[
            ("tenant", "acme"),
            ("CLOUDEVENTS_ID", "forged"),
            ("cloudEvents_traceparent", "00-ab-cd-01"),
        ]);
        let properties = properties(&event, "/s").unwrap();

        assert_eq!(header(&properties, "tenant").as_deref(), Some("acme"));
        assert_eq!(header(&properties, "CLOUDEVENTS_ID"), None);
        assert_eq!(
            header(&properties, "cloudEvents_id"),
            Some(event.event_id.to_string())
        );
        assert_eq!(
            header(&properties, "cloudEvents_traceparent").as_deref(),
            Some("00-ab-cd-01")
        );
    }

    #[test]
    fn names_too_long_for_amqp_are_permanent_failures() {
        let long = "h".repeat(256);
        let err = properties(&event(&[(&long, "v")]), "/s").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);

        let mut odd = event(&[]);
        odd.payload = Payload::bytes("x".repeat(256), "{}");
        let err = properties(&odd, "/s").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn a_published_event_decodes_to_the_same_envelope() {
        let event = event(&[("tenant", "acme")]);
        let properties = properties(&event, "/outbox/orders").unwrap();

        let received = decode(&properties, event.payload.as_bytes().to_vec()).unwrap();
        assert_eq!(
            received,
            ReceivedEvent::from_event(&event, "/outbox/orders")
        );
    }

    #[test]
    fn the_colon_prefix_is_read_and_the_underscore_wins() {
        let id = EventId::new();
        let other = EventId::new();
        let colon = |name: &str, value: &str| {
            (
                format!("cloudEvents:{name}"),
                AMQPValue::LongString(value.into()),
            )
        };
        let mut entries = vec![
            colon("specversion", "1.0"),
            colon("id", &other.to_string()),
            colon("source", "/s"),
            colon("type", "t"),
            colon("partitionkey", "k"),
            (
                "cloudevents_id".to_owned(),
                AMQPValue::LongString(id.to_string().into()),
            ),
            ("retries".to_owned(), AMQPValue::LongInt(3)),
            (
                "nested".to_owned(),
                AMQPValue::FieldTable(FieldTable::default()),
            ),
        ];
        entries.push(("cloudEvents:time".to_owned(), AMQPValue::Timestamp(60)));
        let borrowed: Vec<(&str, AMQPValue)> = entries
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();

        let received = decode(&with_headers(&borrowed), b"raw".to_vec()).unwrap();
        assert_eq!(received.event_id, id);
        assert_eq!(received.key, "k");
        assert_eq!(
            received.time,
            Some(chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 1, 0).unwrap())
        );
        assert_eq!(received.payload.content_type(), "application/octet-stream");
        assert_eq!(
            received.headers.get("retries").map(String::as_str),
            Some("3")
        );
        assert!(!received.headers.contains_key("nested"));
    }

    #[test]
    fn a_message_without_an_id_is_permanently_malformed() {
        let event = event(&[]);
        let complete = properties(&event, "/s").unwrap();
        let mut table = complete.headers().clone().unwrap().inner().clone();
        table.remove("cloudEvents_id");
        let without_id = complete.with_headers(table.into());

        let err = decode(&without_id, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("id"), "{err}");

        let err = decode(&BasicProperties::default(), Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}

//! The CloudEvents NATS binding in binary content mode: one event, one message.
//!
//! The payload is the message body. Every context attribute travels as a `ce-`
//! header except the media type, which is `Content-Type`; the event id is also
//! `Nats-Msg-Id`, which JetStream deduplicates on. The event's own headers go along
//! unchanged unless they collide with one of these. An event header named
//! `Nats-…` is refused: JetStream acts on such headers (`Nats-Expected-…` checks,
//! `Nats-Rollup` purges a subject), and an event's data must not steer the stream.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use outbox_core::{CloudEventAttributes, Error, ErrorKind, Event, Result};

/// The header JetStream deduplicates on.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// The header that carries the payload's media type.
pub(crate) const CONTENT_TYPE: &str = "Content-Type";

/// The headers of the message for `event`, and their size on the wire.
#[derive(Debug)]
pub(crate) struct MessageHeaders {
    pub(crate) map: HeaderMap,
    pub(crate) wire_len: usize,
}

/// Builds the headers of `event`'s message, with `source` as its CloudEvents source.
///
/// An event header whose name matches one the binding sets (ignoring case) is
/// replaced by the binding's value. A header named `Nats-…` (ignoring case), and
/// a name or value that NATS cannot carry, fail with [`ErrorKind::Permanent`];
/// stores refuse the latter before writing, so that only meets events built by
/// hand.
pub(crate) fn headers(event: &Event, source: &str) -> Result<MessageHeaders> {
    let attributes = CloudEventAttributes::of(event, source);
    let mut own: Vec<(String, String)> = vec![
        (MSG_ID.to_owned(), event.event_id.to_string()),
        (
            CONTENT_TYPE.to_owned(),
            event.payload.content_type().to_owned(),
        ),
    ];
    for (name, value) in attributes.attributes {
        if name != "datacontenttype" {
            own.push((format!("ce-{name}"), value));
        }
    }

    let mut headers = MessageHeaders {
        map: HeaderMap::new(),
        wire_len: "NATS/1.0\r\n\r\n".len(),
    };
    for (name, value) in &event.headers {
        if name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
        {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!(
                    "event header {name:?} is refused: headers named Nats-… are \
                     instructions to JetStream, not event data"
                ),
            ));
        }
        if !own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            headers.insert(name, value)?;
        }
    }
    for (name, value) in &own {
        headers.insert(name, value)?;
    }
    Ok(headers)
}

impl MessageHeaders {
    fn insert(&mut self, name: &str, value: &str) -> Result<()> {
        let header = HeaderName::from_str(name).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!("header name {name:?} cannot be sent over nats"),
            )
            .with_source(e)
        })?;
        let content = HeaderValue::from_str(value).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!("header {name:?} has a value that cannot be sent over nats"),
            )
            .with_source(e)
        })?;

        self.map.insert(header, content);
        self.wire_len += name.len() + ": ".len() + value.len() + "\r\n".len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::{EventId, Headers, Payload};

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
                .collect::<Headers>(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            attempts: 0,
        }
    }

    fn value<'a>(headers: &'a MessageHeaders, name: &str) -> Option<&'a str> {
        headers.map.get(name).map(HeaderValue::as_str)
    }

    #[test]
    fn every_attribute_becomes_a_header() {
        let event = event(&[]);
        let headers = headers(&event, "/outbox/orders").unwrap();
        let id = event.event_id.to_string();

        assert_eq!(value(&headers, "Nats-Msg-Id"), Some(id.as_str()));
        assert_eq!(value(&headers, "ce-id"), Some(id.as_str()));
        assert_eq!(value(&headers, "ce-specversion"), Some("1.0"));
        assert_eq!(value(&headers, "ce-source"), Some("/outbox/orders"));
        assert_eq!(value(&headers, "ce-type"), Some("order.placed"));
        assert_eq!(
            value(&headers, "ce-time"),
            Some("2026-03-04T05:06:07.000000Z")
        );
        assert_eq!(value(&headers, "ce-partitionkey"), Some("order-7"));
        assert_eq!(value(&headers, "ce-sequence"), Some("0000000000000000012"));
        assert_eq!(value(&headers, "Content-Type"), Some("application/json"));
        assert_eq!(value(&headers, "ce-outboxstream"), Some("orders"));
        assert_eq!(value(&headers, "ce-datacontenttype"), None);
        assert_eq!(headers.map.len(), 10);
    }

    #[test]
    fn event_headers_pass_through_unless_they_collide() {
        let event = event(&[
            ("tenant", "acme"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("CE-ID", "forged"),
            ("content-type", "text/plain"),
        ]);
        let headers = headers(&event, "/s").unwrap();

        assert_eq!(value(&headers, "tenant"), Some("acme"));
        assert!(
            value(&headers, "traceparent")
                .unwrap()
                .starts_with("00-0af7")
        );
        assert_eq!(value(&headers, "CE-ID"), None);
        assert_eq!(value(&headers, "content-type"), None);
        assert_eq!(
            value(&headers, "ce-id"),
            Some(event.event_id.to_string().as_str())
        );
        assert_eq!(value(&headers, "Content-Type"), Some("application/json"));
    }

    #[test]
    fn event_headers_for_jetstream_are_refused() {
        for name in ["Nats-Rollup", "nats-expected-last-sequence", "NATS-MSG-ID"] {
            let err = headers(&event(&[(name, "x")]), "/s").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name}");
            assert!(err.message().contains(name), "{}", err.message());
        }
        assert!(headers(&event(&[("natsy", "x"), ("x-nats-note", "y")]), "/s").is_ok());
    }

    #[test]
    fn the_wire_length_matches_the_serialized_block() {
        let event = event(&[("tenant", "acme")]);
        let headers = headers(&event, "/outbox/orders").unwrap();

        let mut expected = "NATS/1.0\r\n\r\n".len();
        for (name, values) in headers.map.iter() {
            for value in values {
                expected += name.to_string().len() + 2 + value.as_str().len() + 2;
            }
        }
        assert_eq!(headers.wire_len, expected);
    }

    #[test]
    fn headers_nats_cannot_carry_are_permanent_failures() {
        for (name, value) in [("bad name", "v"), ("bad:name", "v"), ("ok", "a\r\nb")] {
            let err = headers(&event(&[(name, value)]), "/s").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name:?}");
        }

        let err = headers(&event(&[]), "/line\nbreak").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}

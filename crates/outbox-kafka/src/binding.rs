//! The CloudEvents Kafka binding in binary content mode: one event, one record.
//!
//! The payload is the record value and the event key its key. Every context
//! attribute travels as a `ce_` header except the media type, which is
//! `content-type`. The event's own headers go along unchanged unless they collide
//! with one of these. [`decode`] reads such a record back into a [`ReceivedEvent`].

use std::collections::HashMap;

use outbox_core::{CloudEventAttributes, Error, ErrorKind, Event, Headers, ReceivedEvent, Result};
use rdkafka::message::{Header, OwnedHeaders};

/// The prefix of a CloudEvents attribute header.
pub(crate) const ATTRIBUTE_PREFIX: &str = "ce_";

/// The header that carries the payload's media type.
pub(crate) const CONTENT_TYPE: &str = "content-type";

/// The headers of `event`'s record, with `source` as its CloudEvents source.
///
/// An event header whose name matches one the binding sets (ignoring case) is
/// left out: the binding's value wins. Kafka headers carry any bytes, so nothing
/// here can fail.
pub(crate) fn headers(event: &Event, source: &str) -> OwnedHeaders {
    let attributes = CloudEventAttributes::of(event, source);
    let mut own: Vec<(String, String)> = vec![(
        CONTENT_TYPE.to_owned(),
        event.payload.content_type().to_owned(),
    )];
    for (name, value) in attributes.attributes {
        if name != "datacontenttype" {
            own.push((format!("{ATTRIBUTE_PREFIX}{name}"), value));
        }
    }

    let mut headers = OwnedHeaders::new_with_capacity(own.len() + event.headers.len());
    for (name, value) in &own {
        headers = insert(headers, name, value);
    }
    for (name, value) in &event.headers {
        if !own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            headers = insert(headers, name, value);
        }
    }
    headers
}

fn insert(headers: OwnedHeaders, name: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key: name,
        value: Some(value.as_bytes()),
    })
}

/// Decodes a record written by [`headers`]: its value and headers.
///
/// `ce_` headers are the attributes (the first of a repeated one counts) and
/// `content-type`, in any case, is `datacontenttype`; every other header is one
/// of the event's own, the last of a repeated name winning. A header without a
/// value reads as empty. A header value that is not UTF-8 makes the record
/// malformed, as does anything [`ReceivedEvent::from_binary`] refuses; both fail
/// with [`ErrorKind::Permanent`].
pub(crate) fn decode(
    headers: Option<&impl rdkafka::message::Headers>,
    value: Option<&[u8]>,
) -> Result<ReceivedEvent> {
    let mut attributes: HashMap<String, String> = HashMap::new();
    let mut own = Headers::new();
    for header in headers.into_iter().flat_map(|h| h.iter()) {
        let text = std::str::from_utf8(header.value.unwrap_or_default()).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!("kafka header {:?} is not utf-8", header.key),
            )
            .with_source(e)
        })?;

        if let Some(name) = header.key.strip_prefix(ATTRIBUTE_PREFIX) {
            attributes
                .entry(name.to_owned())
                .or_insert_with(|| text.to_owned());
        } else if header.key.eq_ignore_ascii_case(CONTENT_TYPE) {
            attributes
                .entry("datacontenttype".to_owned())
                .or_insert_with(|| text.to_owned());
        } else {
            own.insert(header.key.to_owned(), text.to_owned());
        }
    }

    ReceivedEvent::from_binary(
        |name| attributes.get(name).cloned(),
        value.unwrap_or_default().to_vec(),
        own,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::{EventId, Payload};
    use rdkafka::message::Headers as _;

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

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.unwrap().to_vec()).unwrap();
                (h.key.to_owned(), value)
            })
            .collect()
    }

    fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_attribute_becomes_a_header() {
        let event = event(&[]);
        let headers = pairs(&headers(&event, "/outbox/orders"));
        let id = event.event_id.to_string();

        assert_eq!(value(&headers, "ce_id"), Some(id.as_str()));
        assert_eq!(value(&headers, "ce_specversion"), Some("1.0"));
        assert_eq!(value(&headers, "ce_source"), Some("/outbox/orders"));
        assert_eq!(value(&headers, "ce_type"), Some("order.placed"));
        assert_eq!(
            value(&headers, "ce_time"),
            Some("2026-03-04T05:06:07.000000Z")
        );
        assert_eq!(value(&headers, "ce_partitionkey"), Some("order-7"));
        assert_eq!(value(&headers, "ce_sequence"), Some("0000000000000000012"));
        assert_eq!(value(&headers, "ce_outboxstream"), Some("orders"));
        assert_eq!(value(&headers, "content-type"), Some("application/json"));
        assert_eq!(value(&headers, "ce_datacontenttype"), None);
        assert_eq!(headers.len(), 9);
    }

    #[test]
    fn event_headers_pass_through_unless_they_collide() {
        let event = event(&[
            ("tenant", "acme"),
            ("CE_ID", "forged"),
            ("Content-Type", "text/plain"),
        ]);
        let headers = pairs(&headers(&event, "/s"));

        assert_eq!(value(&headers, "tenant"), Some("acme"));
        assert_eq!(value(&headers, "CE_ID"), None);
        assert_eq!(value(&headers, "Content-Type"), None);
        assert_eq!(
            value(&headers, "ce_id"),
            Some(event.event_id.to_string().as_str())
        );
        assert_eq!(value(&headers, "content-type"), Some("application/json"));
        assert_eq!(headers.len(), 10);
    }

    #[test]
    fn a_record_decodes_to_the_event_it_was_made_from() {
        let event = event(&[("tenant", "acme")]);
        let headers = headers(&event, "/outbox/orders");

        let received = decode(Some(&headers), Some(event.payload.as_bytes())).unwrap();
        assert_eq!(
            received,
            ReceivedEvent::from_event(&event, "/outbox/orders")
        );
    }

    #[test]
    fn a_record_without_an_id_or_with_bad_bytes_is_malformed() {
        let event = event(&[]);
        let without_id = headers(&event, "/s")
            .iter()
            .filter(|h| h.key != "ce_id")
            .fold(OwnedHeaders::new(), |all, h| all.insert(h));
        let err = decode(Some(&without_id), Some(b"{}")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.message().contains("id"), "{err}");

        let binary = headers(&event, "/s").insert(Header {
            key: "trace",
            value: Some(&[0xff_u8, 0xfe][..]),
        });
        let err = decode(Some(&binary), Some(b"{}")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);

        let err = decode(None::<&OwnedHeaders>, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn an_empty_header_reads_as_empty_text() {
        let event = event(&[]);
        let headers = headers(&event, "/s").insert(Header::<&[u8]> {
            key: "marker",
            value: None,
        });
        let received = decode(Some(&headers), None).unwrap();
        assert_eq!(received.headers.get("marker").map(String::as_str), Some(""));
        assert!(received.payload.as_bytes().is_empty());
    }
}

//! One event, one stream entry: the field layout both sides of this crate share.
//!
//! Redis Streams have no CloudEvents binding, so this crate defines one in the
//! spirit of the binary content mode: every context attribute is a field under
//! its bare CloudEvents name, the payload is the field `data`, and the event's own
//! headers are fields named `header:<name>`. Attribute names never contain a
//! colon, so no header can take an attribute's place.

use outbox_core::{CloudEventAttributes, Event, Headers, ReceivedEvent, Result};

/// The field that carries the payload bytes.
pub(crate) const DATA: &str = "data";

/// The prefix of the fields that carry the event's own headers.
pub(crate) const HEADER_PREFIX: &str = "header:";

/// The fields of one stream entry, as raw names and values in stream order.
pub(crate) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The fields of `event`'s entry, with `source` as its CloudEvents source: the
/// attributes in CloudEvents order, then `data`, then the headers by name.
pub(crate) fn fields(event: &Event, source: &str) -> Fields {
    let attributes = CloudEventAttributes::of(event, source).attributes;
    let mut fields = Vec::with_capacity(attributes.len() + 1 + event.headers.len());

    for (name, value) in attributes {
        fields.push((name.as_bytes().to_vec(), value.into_bytes()));
    }
    fields.push((DATA.as_bytes().to_vec(), event.payload.as_bytes().to_vec()));
    for (name, value) in &event.headers {
        let field = format!("{HEADER_PREFIX}{name}");
        fields.push((field.into_bytes(), value.as_bytes().to_vec()));
    }
    fields
}

/// Decodes an entry's fields into the event they carry.
///
/// The first field of a name counts; unknown fields are ignored. An attribute
/// that is not UTF-8 counts as missing; a header value that is not UTF-8 is read
/// with replacement characters. A missing `data` field is an empty payload. A
/// missing or malformed required attribute fails as
/// [`outbox_core::ErrorKind::Permanent`] (see [`ReceivedEvent::from_binary`]).
pub(crate) fn decode(fields: &Fields) -> Result<ReceivedEvent> {
    let value = |name: &[u8]| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let attribute =
        |name: &str| value(name.as_bytes()).and_then(|v| String::from_utf8(v.clone()).ok());
    let body = value(DATA.as_bytes()).cloned().unwrap_or_default();

    let mut headers = Headers::new();
    for (name, value) in fields {
        let Some(name) = name.strip_prefix(HEADER_PREFIX.as_bytes()) else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        headers
            .entry(name)
            .or_insert_with(|| String::from_utf8_lossy(value).into_owned());
    }
    ReceivedEvent::from_binary(attribute, body, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::{ErrorKind, EventId, Payload};

    fn event() -> Event {
        Event {
            id: 1,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "order-7".into(),
            seq: 12,
            partition: 3,
            event_type: "order.placed".into(),
            payload: Payload::bytes("application/json", "{\"n\":1}"),
            headers: [
                ("tenant".to_owned(), "acme".to_owned()),
                ("id".to_owned(), "not-the-event-id".to_owned()),
            ]
            .into(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            attempts: 0,
        }
    }

    fn text(fields: &Fields) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                let n = String::from_utf8(n.clone()).unwrap();
                (n, String::from_utf8(v.clone()).unwrap())
            })
            .collect()
    }

    #[test]
    fn attributes_data_and_headers_are_laid_out_in_order() {
        let event = event();
        let fields = text(&fields(&event, "/outbox/orders"));
        let expected: Vec<(String, String)> = [
            ("specversion", "1.0".to_owned()),
            ("id", event.event_id.to_string()),
            ("source", "/outbox/orders".to_owned()),
            ("type", "order.placed".to_owned()),
            ("time", "2026-03-04T05:06:07.000000Z".to_owned()),
            ("datacontenttype", "application/json".to_owned()),
            ("partitionkey", "order-7".to_owned()),
            ("sequence", "0000000000000000012".to_owned()),
            ("outboxstream", "orders".to_owned()),
            ("data", "{\"n\":1}".to_owned()),
            ("header:id", "not-the-event-id".to_owned()),
            ("header:tenant", "acme".to_owned()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn an_entry_decodes_to_the_event_it_was_made_from() {
        let event = event();
        let decoded = decode(&fields(&event, "/outbox/orders")).unwrap();
        assert_eq!(decoded, ReceivedEvent::from_event(&event, "/outbox/orders"));
        assert_eq!(decoded.headers.get("id").unwrap(), "not-the-event-id");
    }

    #[test]
    fn a_missing_id_is_a_permanent_failure() {
        let mut fields = fields(&event(), "/s");
        fields.retain(|(n, _)| n != b"id");
        let err = decode(&fields).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("id"), "{err}");
    }

    #[test]
    fn non_utf8_attributes_count_as_missing_and_data_may_be_absent() {
        let mut fields = fields(&event(), "/s");
        fields.retain(|(n, _)| n != b"data");
        let decoded = decode(&fields).unwrap();
        assert!(decoded.payload.as_bytes().is_empty());

        for (name, value) in &mut fields {
            if name == b"type" {
                *value = vec![0xff, 0xfe];
            }
        }
        let err = decode(&fields).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("type"), "{err}");
    }
}

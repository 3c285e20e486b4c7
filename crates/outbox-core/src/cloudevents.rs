//! The mapping of the envelope onto CloudEvents 1.0 context attributes.
//!
//! Every publisher sends events in a binding's binary content mode: the payload
//! is the message body and these attributes travel as headers, with the prefix
//! the binding prescribes (`ce-` for NATS and HTTP, `ce_` for Kafka).

use crate::Event;

/// The CloudEvents specification version the attributes follow.
pub const SPEC_VERSION: &str = "1.0";

/// The CloudEvents `source` every publisher uses unless configured otherwise:
/// `/outbox/` followed by the event's stream, so an `orders` event has the
/// source `/outbox/orders`.
pub const DEFAULT_SOURCE_TEMPLATE: &str = "/outbox/{stream}";

/// The CloudEvents context attributes of one event, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventAttributes {
    /// `(name, value)` pairs without a binding prefix.
    pub attributes: Vec<(&'static str, String)>,
}

impl CloudEventAttributes {
    /// Maps `event` onto CloudEvents, with `source` as the `source` attribute.
    ///
    /// | envelope | CloudEvents |
    /// | --- | --- |
    /// | `event_id` | `id` |
    /// | `event_type` | `type` |
    /// | (relay setting) | `source` |
    /// | `created_at` | `time` (RFC 3339, UTC) |
    /// | payload media type | `datacontenttype` |
    /// | `key` | `partitionkey` (Partitioning extension) |
    /// | `seq` | `sequence` (Sequence extension, zero-padded) |
    /// | `stream` | `outboxstream` (extension of this project) |
    ///
    /// The `stream` also selects the destination (subject, topic, exchange) by the
    /// publisher's own rule; the extension lets a consumer read it back whatever
    /// that rule was.
    pub fn of(event: &Event, source: &str) -> Self {
        let attributes = vec![
            ("specversion", SPEC_VERSION.to_owned()),
            ("id", event.event_id.to_string()),
            ("source", source.to_owned()),
            ("type", event.event_type.clone()),
            (
                "time",
                event
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            ("datacontenttype", event.payload.content_type().to_owned()),
            ("partitionkey", event.key.clone()),
            ("sequence", format_sequence(event.seq)),
            ("outboxstream", event.stream.clone()),
        ];
        CloudEventAttributes { attributes }
    }

    /// The value of one attribute.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Formats a key position for the CloudEvents `sequence` extension.
///
/// The extension compares values as strings, so positions are zero-padded to 19
/// digits, the width of the largest `i64`: `"0000000000000000042"`.
pub fn format_sequence(seq: i64) -> String {
    format!("{seq:019}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventId, Headers, Payload};
    use chrono::TimeZone;

    #[test]
    fn sequences_sort_as_strings_like_numbers() {
        let mut values: Vec<String> = [10, 9, 100, 1].into_iter().map(format_sequence).collect();
        values.sort();
        assert_eq!(
            values,
            [
                "0000000000000000001",
                "0000000000000000009",
                "0000000000000000010",
                "0000000000000000100"
            ]
        );
    }

    #[test]
    fn maps_every_envelope_field() {
        let event = Event {
            id: 7,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: "order-42".into(),
            seq: 3,
            partition: 12,
            event_type: "order.paid".into(),
            payload: Payload::bytes("application/json", "{}"),
            headers: Headers::new(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            attempts: 0,
        };
        let ce = CloudEventAttributes::of(&event, "/shop/orders");

        assert_eq!(ce.get("id"), Some(event.event_id.to_string().as_str()));
        assert_eq!(ce.get("type"), Some("order.paid"));
        assert_eq!(ce.get("source"), Some("/shop/orders"));
        assert_eq!(ce.get("time"), Some("2026-01-02T03:04:05.000000Z"));
        assert_eq!(ce.get("partitionkey"), Some("order-42"));
        assert_eq!(ce.get("sequence"), Some("0000000000000000003"));
        assert_eq!(ce.get("specversion"), Some("1.0"));
    }
}

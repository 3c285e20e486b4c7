//! The CloudEvents HTTP binding in binary content mode, both ways.
//!
//! The payload is the request body and its media type is `Content-Type`; every
//! other context attribute travels as a `ce-` header, its value percent-encoded
//! as the binding prescribes. The event's own headers go along as plain headers
//! unless their names are reserved (see [`RESERVED_HEADERS`]). [`received`] reads such a
//! request back into a [`ReceivedEvent`].

use std::collections::HashMap;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use outbox_core::{CloudEventAttributes, Error, ErrorKind, Event, Headers, ReceivedEvent, Result};
use tracing::debug;

use crate::signature::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// The prefix of the headers that carry CloudEvents attributes.
const PREFIX: &str = "ce-";

/// Header names that an event's own headers cannot use, compared ignoring case.
///
/// They are the hop-by-hop headers, which a proxy would consume, the headers
/// that frame the request or that the HTTP client sets itself, and the headers
/// of the signature scheme. Every name starting with `ce-` is reserved as well,
/// since a receiver reads those as CloudEvents attributes. An event header with
/// a reserved name is left out of the request, and a receiver leaves such
/// headers out of the event it decodes.
pub const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "expect",
    "accept",
    "accept-encoding",
    "user-agent",
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
];

/// Whether an event header named `name` is left out of the request.
pub(crate) fn is_reserved(name: &str) -> bool {
    let prefix = name.get(..PREFIX.len());
    prefix.is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        || RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
}

/// The headers of the request for `event`, with `source` as its CloudEvents
/// source and `signature` as its `webhook-signature`, signed at `timestamp`.
///
/// A header name or value that HTTP cannot carry fails with
/// [`ErrorKind::Permanent`]; stores refuse such headers before writing, so this
/// only meets events built by hand.
pub(crate) fn headers(
    event: &Event,
    source: &str,
    timestamp: u64,
    signature: &str,
) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in &event.headers {
        if is_reserved(name) {
            debug!(event_id = %event.event_id, header = %name, "left out a reserved header");
            continue;
        }
        headers.append(header_name(name)?, header_value(name, value)?);
    }

    for (name, value) in CloudEventAttributes::of(event, source).attributes {
        if name == "datacontenttype" {
            headers.insert(CONTENT_TYPE, header_value("content-type", &value)?);
        } else {
            let name = format!("{PREFIX}{name}");
            let value = HeaderValue::from_str(&percent_encode(&value))
                .expect("percent-encoded text is visible ascii");
            headers.insert(header_name(&name)?, value);
        }
    }

    let id = event.event_id.to_string();
    headers.insert(WEBHOOK_ID, header_value(WEBHOOK_ID, &id)?);
    headers.insert(WEBHOOK_TIMESTAMP, timestamp.into());
    headers.insert(
        WEBHOOK_SIGNATURE,
        header_value(WEBHOOK_SIGNATURE, signature)?,
    );
    Ok(headers)
}

/// Decodes the event of a request whose signature was verified.
///
/// Beyond [`ReceivedEvent::from_binary`]'s checks, the `ce-id` must equal the
/// `webhook-id` that the signature covers, and every `ce-` value must be
/// well-formed percent-encoded UTF-8; anything else fails with
/// [`ErrorKind::Permanent`]. The event's headers are the request's headers
/// that are not reserved, their names in lower case.
pub(crate) fn received(headers: &HeaderMap, body: Vec<u8>) -> Result<ReceivedEvent> {
    let mut attributes = HashMap::new();
    let mut own = Headers::new();
    for (name, value) in headers {
        let name = name.as_str();
        if let Some(attribute) = name.strip_prefix(PREFIX) {
            let decoded = percent_decode(value.as_bytes())
                .ok_or_else(|| malformed(format!("header {name} is not percent-encoded utf-8")))?;
            attributes.entry(attribute.to_owned()).or_insert(decoded);
        } else if !is_reserved(name) {
            let text = String::from_utf8(value.as_bytes().to_vec())
                .map_err(|e| malformed(format!("header {name} is not utf-8")).with_source(e))?;
            own.entry(name.to_owned()).or_insert(text);
        }
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let text = content_type.to_str().map_err(|e| {
            malformed("content-type is not visible ascii".to_owned()).with_source(e)
        })?;
        attributes.insert("datacontenttype".to_owned(), text.to_owned());
    }

    let signed_id = headers.get(WEBHOOK_ID).and_then(|v| v.to_str().ok());
    if let Some(id) = attributes.get("id")
        && signed_id != Some(id.as_str())
    {
        return Err(malformed(format!(
            "ce-id {id:?} differs from the signed webhook-id"
        )));
    }

    ReceivedEvent::from_binary(|name| attributes.get(name).cloned(), body, own)
}

fn header_name(name: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
        Error::new(
            ErrorKind::Permanent,
            format!("header name {name:?} cannot be sent over http"),
        )
        .with_source(e)
    })
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value).map_err(|e| {
        Error::new(
            ErrorKind::Permanent,
            format!("header {name:?} has a value that cannot be sent over http"),
        )
        .with_source(e)
    })
}

fn malformed(message: String) -> Error {
    Error::new(ErrorKind::Permanent, message)
}

/// Encodes an attribute value for a `ce-` header: space, `"`, `%` and every byte
/// outside printable ASCII become `%XX`.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes a `ce-` header value, or `None` when an escape is cut short or the
/// bytes are not UTF-8.
fn percent_decode(value: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = char::from(*bytes.next()?).to_digit(16)?;
            let low = char::from(*bytes.next()?).to_digit(16)?;
            out.push((high * 16 + low) as u8);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::{EventId, Payload};

    fn event(key: &str, headers: &[(&str, &str)]) -> Event {
        Event {
            id: 1,
            event_id: EventId::new(),
            stream: "orders".into(),
            key: key.into(),
            seq: 12,
            partition: 3,
            event_type: "order.placed".into(),
            payload: Payload::bytes("application/json; charset=utf-8", "{}"),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            attempts: 0,
        }
    }

    fn value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn every_attribute_becomes_a_header() {
        let event = event("order-7", &[]);
        let headers = headers(&event, "/outbox/orders", 1_750_000_000, "v1,c2ln").unwrap();
        let id = event.event_id.to_string();

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
        assert_eq!(value(&headers, "ce-outboxstream"), Some("orders"));
        assert_eq!(
            value(&headers, "content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(value(&headers, "ce-datacontenttype"), None);
        assert_eq!(value(&headers, "webhook-id"), Some(id.as_str()));
        assert_eq!(value(&headers, "webhook-timestamp"), Some("1750000000"));
        assert_eq!(value(&headers, "webhook-signature"), Some("v1,c2ln"));
        assert_eq!(headers.len(), 12);
    }

    #[test]
    fn attribute_values_are_percent_encoded_and_read_back() {
        let key = "order 7/\"ü\"%";
        let event = event(key, &[]);
        let headers = headers(&event, "/outbox/orders", 1, "v1,c2ln").unwrap();
        assert_eq!(
            value(&headers, "ce-partitionkey"),
            Some("order%207/%22%C3%BC%22%25")
        );

        let received = received(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(received.key, key);
        assert_eq!(
            received,
            ReceivedEvent::from_event(&event, "/outbox/orders")
        );
    }

    #[test]
    fn own_headers_pass_unless_reserved() {
        let event = event(
            "k",
            &[
                ("tenant", "acme"),
                (
                    "Traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("CE-ID", "forged"),
                ("ce-extra", "x"),
                ("Content-Type", "text/plain"),
                ("Transfer-Encoding", "chunked"),
                ("connection", "close"),
                ("webhook-signature", "v1,forged"),
            ],
        );
        let headers = headers(&event, "/s", 1, "v1,c2ln").unwrap();

        assert_eq!(value(&headers, "tenant"), Some("acme"));
        assert!(
            value(&headers, "traceparent")
                .unwrap()
                .starts_with("00-0af7")
        );
        assert_eq!(
            value(&headers, "ce-id"),
            Some(event.event_id.to_string().as_str())
        );
        assert_eq!(value(&headers, "ce-extra"), None);
        assert_eq!(
            value(&headers, "content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(value(&headers, "transfer-encoding"), None);
        assert_eq!(value(&headers, "connection"), None);
        assert_eq!(value(&headers, "webhook-signature"), Some("v1,c2ln"));

        let received = received(&headers, Vec::new()).unwrap();
        let names: Vec<&str> = received.headers.keys().map(String::as_str).collect();
        assert_eq!(names, ["tenant", "traceparent"]);
    }

    #[test]
    fn headers_http_cannot_carry_are_permanent_failures() {
        for (name, value) in [("bad name", "v"), ("bad:name", "v"), ("ok", "a\r\nb")] {
            let err = headers(&event("k", &[(name, value)]), "/s", 1, "v1,x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name:?}");
        }
    }

    #[test]
    fn a_ce_id_other_than_the_signed_id_is_malformed() {
        let event = event("k", &[]);
        let mut headers = headers(&event, "/s", 1, "v1,x").unwrap();
        headers.insert("webhook-id", HeaderValue::from_static("another"));

        let err = received(&headers, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("differs from the signed"), "{err}");
    }

    #[test]
    fn bad_escapes_are_malformed() {
        assert_eq!(percent_decode(b"a%2"), None);
        assert_eq!(percent_decode(b"a%zz"), None);
        assert_eq!(percent_decode(b"%FF"), None);
        assert_eq!(percent_decode(b"a%2Fb").as_deref(), Some("a/b"));

        let event = event("k", &[]);
        let mut headers = headers(&event, "/s", 1, "v1,x").unwrap();
        headers.insert("ce-partitionkey", HeaderValue::from_static("%C3"));
        let err = received(&headers, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}

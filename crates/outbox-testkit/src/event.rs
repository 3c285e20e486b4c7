//! Events as a relay hands them to a publisher, for the publishers' tests.

use chrono::Utc;
use outbox_core::{Event, EventId, Headers, Payload};

/// A stored event of `stream` and `key` at position `seq` (also its row id),
/// with the JSON payload `{"key":…,"seq":…}`, a fresh id, and one header,
/// `tenant`, set to `tenant-of-` and the key.
pub fn stored_event(stream: &str, key: &str, seq: i64, event_type: &str) -> Event {
    let mut headers = Headers::new();
    headers.insert("tenant".into(), format!("tenant-of-{key}"));
    Event {
        id: seq,
        event_id: EventId::new(),
        stream: stream.to_owned(),
        key: key.to_owned(),
        seq,
        partition: 0,
        event_type: event_type.to_owned(),
        payload: Payload::bytes(Payload::JSON, format!(r#"{{"key":"{key}","seq":{seq}}}"#)),
        headers,
        created_at: Utc::now(),
        attempts: 0,
    }
}

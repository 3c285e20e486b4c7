//! The relay's metrics, through the `metrics` facade.
//!
//! The relay records into whatever recorder the host application installed (a
//! Prometheus exporter, StatsD, nothing at all). Labels stay few and bounded:
//! `stream` and `publisher`, and `class` for failures; never a key or an id.
//!
//! | name | kind | labels | meaning |
//! | --- | --- | --- | --- |
//! | `outbox_events_published_total` | counter | s, p | events the broker acknowledged |
//! | `outbox_publish_attempts_total` | counter | s, p | publishes tried, acknowledged or not |
//! | `outbox_publish_failures_total` | counter | s, p, class | failed publishes |
//! | `outbox_dead_letters_total` | counter | s, p | events moved to the dead letters |
//! | `outbox_commit_to_ack_seconds` | histogram | s, p | an event's commit to its ack |
//! | `outbox_claims_total` | counter | p | batches claimed |
//! | `outbox_claimed_events_total` | counter | p | events claimed |
//! | `outbox_leases_held` | gauge | p | partitions this relay holds |
//! | `outbox_relay_up` | gauge | p | 1 while the relay runs, 0 once it stopped |
//! | `outbox_pending_events` | gauge | | events not yet published, all streams |
//! | `outbox_oldest_pending_age_seconds` | gauge | | age of the oldest pending event, or 0 |
//! | `outbox_dead_letters` | gauge | | events in the dead letters now |
//!
//! `s` is the `stream` label, `p` the `publisher` label, and `class` the failure's
//! [`ErrorKind`] in snake case (see [`class`]).
//!
//! The last three come from [`record_status`], which a host calls on a timer
//! with a fresh [`Status`]; `outbox relay` does so every few seconds.

use std::time::Duration;

use chrono::Utc;
use metrics::Label;

use crate::{ErrorKind, Event, Status};

/// The `stream` and `publisher` labels of one event; the publisher name is
/// static, so only the stream is copied.
fn labels(event: &Event, publisher: &'static str) -> Vec<Label> {
    vec![
        Label::new("stream", event.stream.clone()),
        Label::from_static_parts("publisher", publisher),
    ]
}

/// Counts an acknowledged event and its commit-to-ack latency.
pub(crate) fn published(event: &Event, publisher: &'static str) {
    let labels = labels(event, publisher);
    metrics::counter!("outbox_publish_attempts_total", labels.clone()).increment(1);
    metrics::counter!("outbox_events_published_total", labels.clone()).increment(1);
    let latency = (Utc::now() - event.created_at).to_std().unwrap_or_default();
    metrics::histogram!("outbox_commit_to_ack_seconds", labels).record(latency.as_secs_f64());
}

/// Counts a failed publish by its class.
pub(crate) fn failed(event: &Event, publisher: &'static str, kind: ErrorKind) {
    let mut labels = labels(event, publisher);
    metrics::counter!("outbox_publish_attempts_total", labels.clone()).increment(1);
    labels.push(Label::from_static_parts("class", class(kind)));
    metrics::counter!("outbox_publish_failures_total", labels).increment(1);
}

/// Counts an event moved to the dead letters.
pub(crate) fn dead_lettered(event: &Event, publisher: &'static str) {
    metrics::counter!("outbox_dead_letters_total", labels(event, publisher)).increment(1);
}

/// Counts a claimed batch of `events` events.
pub(crate) fn claimed(publisher: &'static str, events: usize) {
    metrics::counter!("outbox_claims_total", "publisher" => publisher).increment(1);
    metrics::counter!("outbox_claimed_events_total", "publisher" => publisher)
        .increment(events as u64);
}

/// Sets how many partitions the relay holds.
pub(crate) fn leases_held(publisher: &'static str, partitions: usize) {
    metrics::gauge!("outbox_leases_held", "publisher" => publisher).set(partitions as f64);
}

/// Marks the relay as running or stopped.
pub(crate) fn relay_up(publisher: &'static str, up: bool) {
    metrics::gauge!("outbox_relay_up", "publisher" => publisher).set(if up { 1.0 } else { 0.0 });
}

/// Sets the backlog gauges from a store's [`Status`].
pub fn record_status(status: &Status) {
    metrics::gauge!("outbox_pending_events").set(status.pending as f64);
    let age = status.oldest_pending_age.unwrap_or(Duration::ZERO);
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age.as_secs_f64());
    metrics::gauge!("outbox_dead_letters").set(status.dead_lettered as f64);
}

/// The wall clock in Unix milliseconds: the clock of the times in
/// [`crate::RelayStats`].
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `class` label of a failure.
pub fn class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Config => "config",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Transient => "transient",
        ErrorKind::Permanent => "permanent",
        ErrorKind::Storage => "storage",
    }
}

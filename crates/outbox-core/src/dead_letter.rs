//! The dead letters: events whose publication gave up, and the operator's tools
//! for them.
//!
//! [`DeadLetterStore`] lists dead letters by a [`DeadLetterFilter`], puts them
//! back for the relay to publish again, or discards them. A retried event goes
//! back at its original position in its key, with its original id, so the relay
//! publishes it before the key's later events that are still pending.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Event, EventId, Result};

/// One event in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event as it was when it gave up; `attempts` counts its failures.
    pub event: Event,
    /// The error of its last attempt.
    pub last_error: String,
    /// When it was moved to the dead letters, by the database's clock.
    pub dead_at: DateTime<Utc>,
    /// Whether the key's later events wait for it (the relay's `hold` policy).
    pub held: bool,
}

/// Which dead letters an operation applies to. Every field narrows the
/// selection; the default selects them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterFilter {
    /// Only these events.
    pub event_ids: Vec<EventId>,
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Only those dead for longer than this.
    pub older_than: Option<Duration>,
    /// Only those dead for less than this.
    pub newer_than: Option<Duration>,
    /// Only those whose last error contains this text.
    pub error_contains: Option<String>,
}

impl DeadLetterFilter {
    /// Whether the filter narrows the selection at all.
    pub fn is_everything(&self) -> bool {
        *self == DeadLetterFilter::default()
    }
}

/// A store's dead letters, for operators.
pub trait DeadLetterStore: Send + Sync {
    /// The dead letters `filter` selects, ordered by stream, key and position,
    /// at most `limit`.
    fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Puts the selected dead letters back into the outbox, each at its original
    /// position and with its attempts reset, in one transaction. Returns how
    /// many went back.
    fn retry_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes the selected dead letters for good, in one transaction. Returns
    /// how many went. A held key's later events go on being published.
    fn discard_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> impl Future<Output = Result<u64>> + Send;
}

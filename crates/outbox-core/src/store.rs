//! What every outbox store offers, whatever database sits behind it.
//!
//! Writing happens inside the caller's own transaction through each store's
//! `enqueue`, which is typed by its database driver and so lives with the store.
//! This trait covers what the tools and the relay need from any store.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::{Event, EventId, Result};

/// What one enqueued event was assigned by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The event's id, as given by the writer.
    pub event_id: EventId,
    /// The event's position within its key, assigned under the key's lock.
    pub seq: i64,
}

/// A snapshot of the outbox for operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Events committed and not yet published.
    pub pending: u64,
    /// Age of the pending event the relay takes next (the lowest row id), by
    /// the database's clock. Found through the primary key, so reading it costs
    /// the same on a backlog of any size. It can be a little younger than the
    /// oldest row: `created_at` is when the writer's transaction began, and a
    /// transaction that began earlier may have inserted later.
    #[serde(rename = "oldest_pending_age_seconds", serialize_with = "seconds")]
    pub oldest_pending_age: Option<Duration>,
    /// Events moved to the dead letters and not yet retried or discarded.
    pub dead_lettered: u64,
    /// The schema version the database is at.
    pub schema_version: i64,
}

fn seconds<S: serde::Serializer>(age: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match age {
        Some(age) => s.serialize_f64(age.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// An outbox store: the tables that hold pending events and dead letters.
pub trait OutboxStore: Send + Sync {
    /// Counts pending events and dead letters.
    fn status(&self) -> impl Future<Output = Result<Status>> + Send;

    /// The oldest pending events, up to `limit`, ordered by key and position.
    ///
    /// Meant for inspection and tests; the relay claims work differently.
    fn pending(&self, limit: u32) -> impl Future<Output = Result<Vec<Event>>> + Send;
}

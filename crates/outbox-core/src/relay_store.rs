//! What the relay needs from a store: partition leases, claims of pending
//! events, and the fenced writes that finish them.
//!
//! Every write a relay makes under a lease names the relay, and the store
//! applies it only while that relay still holds an unexpired lease on the
//! event's partition. A relay that was paused past its lease therefore cannot
//! finish, fail or dead-letter work that another relay has taken over.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use crate::{Event, Result};

/// The identity of one relay process, fresh at every start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(Uuid);

impl RelayId {
    /// A new, unique relay id.
    pub fn new() -> Self {
        RelayId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for RelayId {
    fn default() -> Self {
        RelayId::new()
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A pending event handed to a relay, with how long it must still wait if an
/// earlier attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The event.
    pub event: Event,
    /// Time left before the event may be tried again; `None` when it may be
    /// published now.
    pub retry_in: Option<Duration>,
}

/// The store side of the relay.
///
/// Ordering rests on one property every implementation must keep: the rows
/// returned by [`RelayStore::claim`] are the oldest pending rows of the given
/// partitions in row-id order, and a key's row ids follow its positions. So a
/// claimed batch holds, for each key in it, the key's earliest pending events.
pub trait RelayStore: Send + Sync + 'static {
    /// How many partitions the store spreads keys over.
    fn partition_count(&self) -> u16;

    /// Records `relay` as alive, renews its unexpired leases, gives up
    /// partitions above its fair share and takes free or expired ones up to it.
    /// Returns the partitions held afterwards.
    ///
    /// Call it only when no work of the partitions it may give up is in flight.
    fn maintain_leases(
        &self,
        relay: RelayId,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<i16>>> + Send;

    /// Gives up every lease of `relay` and forgets it, for a clean stop.
    fn release_leases(&self, relay: RelayId) -> impl Future<Output = Result<()>> + Send;

    /// The oldest pending events of `partitions`, up to `limit`, in row-id order,
    /// leaving out the keys in `skip_keys` (as `stream`, `key` pairs), keys held
    /// back by a dead letter, and the rows in `skip_ids` (published events whose
    /// delete has not committed yet).
    fn claim(
        &self,
        partitions: &[i16],
        skip_keys: &[(String, String)],
        skip_ids: &[i64],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Takes published events out of the outbox, under `relay`'s leases: with
    /// `keep`, into the published log ([`crate::PublishedLog`]) in the same
    /// statement or transaction, otherwise for good. Returns how many rows left
    /// the outbox; rows of partitions whose lease was lost are left alone.
    fn complete(
        &self,
        relay: RelayId,
        ids: &[i64],
        keep: bool,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Counts a failed attempt and defers the event by `retry_in`.
    fn fail(
        &self,
        relay: RelayId,
        id: i64,
        error: &str,
        retry_in: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves an event to the dead letters with its last error. With `hold`, the
    /// key's later events wait until the dead letter is retried or discarded.
    fn dead_letter(
        &self,
        relay: RelayId,
        id: i64,
        error: &str,
        hold: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Asks to be woken by the next commit that enqueues, before the relay's
    /// last look for work: a commit that lands after that look then wakes it.
    /// Stores without a commit notification do nothing.
    fn park(&self, relay: RelayId) -> impl Future<Output = Result<()>> + Send;

    /// Withdraws [`RelayStore::park`] when the last look found work after all.
    fn unpark(&self, relay: RelayId) -> impl Future<Output = Result<()>> + Send;

    /// Waits for a wake-up after [`RelayStore::park`], or until `timeout`
    /// passes, then withdraws the request. Stores without a commit notification
    /// sleep for `timeout`.
    fn wait_for_events(
        &self,
        relay: RelayId,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes, oldest first, up to `limit` kept events published longer than
    /// `older_than` ago. Returns how many went; fewer than `limit` means none
    /// that old is left. Rows another session is deleting are skipped, so
    /// several relays may prune at once.
    fn prune_kept(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Whether the published log holds no event at all.
    fn log_is_empty(&self) -> impl Future<Output = Result<bool>> + Send;

    /// Makes the space of published events reusable, without blocking writers
    /// (on PostgreSQL a `VACUUM` of the events table and the published log).
    /// The relay calls it after every [`crate::RelayConfig::reclaim_every`]
    /// published events and when a backlog is drained. Stores that need nothing
    /// of the kind do nothing.
    fn reclaim(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

//! The consumer inbox on SQLite.
//!
//! [`SqliteInbox`] runs a [`Handler`] inside a write transaction that first
//! inserts the event's `(consumer, event_id)` row into `outbox_inbox`; an
//! existing row makes the delivery a duplicate and the handler does not run.
//! SQLite admits one writer at a time, so handlers of different keys take turns
//! at the commit even when the runner starts them concurrently.

use std::time::Duration;

use outbox_core::inbox::{Handler, Inbox, Processed, check_consumer};
use outbox_core::{EventId, ReceivedEvent, Result};
use sqlx::SqliteConnection;

use crate::{SqliteStore, map_error};

/// How many records one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 5_000;

const RECORD: &str = "INSERT INTO outbox_inbox (consumer, event_id, stream, key, seq, event_type) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                      ON CONFLICT (consumer, event_id) DO NOTHING";

const CONTAINS: &str = "SELECT 1 FROM outbox_inbox WHERE consumer = ?1 AND event_id = ?2";

const PRUNE: &str = "DELETE FROM outbox_inbox WHERE consumer = ?1 AND event_id IN ( \
                         SELECT event_id FROM outbox_inbox \
                         WHERE consumer = ?1 AND handled_at < ?2 LIMIT ?3)";

/// The inbox of one consumer on SQLite, running `H` for each new event.
///
/// The handler receives the transaction's connection: whatever it writes
/// through it commits together with the inbox record, or not at all.
///
/// ```no_run
/// use outbox_core::inbox::{InboxRunner, handler_fn};
/// use outbox_sqlite::{SqliteInbox, SqliteStore, map_error};
///
/// # async fn run(consumer: impl outbox_core::Consumer + 'static) -> outbox_core::Result<()> {
/// let store = SqliteStore::connect("sqlite://shipping.db", Default::default()).await?;
/// store.migrate().await?;
///
/// let handler = handler_fn(|conn: &mut sqlx::SqliteConnection, event| {
///     Box::pin(async move {
///         sqlx::query("INSERT INTO shipments (order_key) VALUES (?1)")
///             .bind(&event.key)
///             .execute(conn)
///             .await
///             .map_err(map_error)?;
///         Ok(())
///     })
/// });
/// let inbox = SqliteInbox::new(&store, "shipping", handler)?;
/// InboxRunner::new(consumer, inbox).run(std::future::pending()).await?;
/// # Ok(())
/// # }
/// ```
pub struct SqliteInbox<H> {
    store: SqliteStore,
    consumer: String,
    handler: H,
}

impl<H: Handler<SqliteConnection>> SqliteInbox<H> {
    /// The inbox of `consumer` in `store`'s database.
    ///
    /// The name must be 1 to 200 characters (see
    /// [`outbox_core::inbox::check_consumer`]).
    pub fn new(store: &SqliteStore, consumer: impl Into<String>, handler: H) -> Result<Self> {
        let consumer = consumer.into();
        check_consumer(&consumer)?;
        Ok(SqliteInbox {
            store: store.clone(),
            consumer,
            handler,
        })
    }

    /// The consumer whose records this inbox keeps.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Whether this consumer has recorded `event_id`.
    pub async fn contains(&self, event_id: EventId) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(CONTAINS)
            .bind(&self.consumer)
            .bind(event_id.to_string())
            .fetch_optional(self.store.pool())
            .await
            .map_err(map_error)?;
        Ok(found.is_some())
    }
}

impl<H> Inbox for SqliteInbox<H>
where
    H: Handler<SqliteConnection> + 'static,
{
    async fn process(&self, event: &ReceivedEvent) -> Result<Processed> {
        let mut tx = self.store.begin().await?;

        let recorded = sqlx::query(RECORD)
            .bind(&self.consumer)
            .bind(event.event_id.to_string())
            .bind(event.stream.as_deref())
            .bind(&event.key)
            .bind(event.seq)
            .bind(&event.event_type)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        if recorded.rows_affected() == 0 {
            tx.rollback().await.map_err(map_error)?;
            return Ok(Processed::Duplicate);
        }

        // A handler error drops the transaction, which rolls it back.
        self.handler.handle(&mut *tx, event).await?;

        tx.commit().await.map_err(map_error)?;
        Ok(Processed::Applied)
    }

    async fn prune(&self, age: Duration) -> Result<u64> {
        let cutoff = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
        let mut pruned = 0;
        loop {
            let deleted = sqlx::query(PRUNE)
                .bind(&self.consumer)
                .bind(cutoff)
                .bind(PRUNE_BATCH)
                .execute(self.store.pool())
                .await
                .map_err(map_error)?
                .rows_affected();
            pruned += deleted;
            if deleted < PRUNE_BATCH as u64 {
                return Ok(pruned);
            }
        }
    }
}

//! The consumer inbox on PostgreSQL.
//!
//! [`PgInbox`] runs a [`Handler`] inside a transaction that first inserts the
//! event's `(consumer, event_id)` row into `<schema>.inbox`; an existing row makes
//! the delivery a duplicate and the handler does not run. The table comes with
//! the outbox schema (`outbox migrate`), and its SQL contract is in
//! `docs/inbox.md` for consumers written in other languages.

use std::time::Duration;

use outbox_core::inbox::{Handler, Inbox, Processed, check_consumer};
use outbox_core::{ReceivedEvent, Result};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::{PgStore, map_error};

/// How many records one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 5_000;

/// The inbox of one consumer on PostgreSQL, running `H` for each new event.
///
/// The handler receives the transaction's connection: whatever it writes
/// through it commits together with the inbox record, or not at all.
///
/// ```no_run
/// use outbox_core::inbox::{InboxRunner, handler_fn};
/// use outbox_postgres::{PgInbox, PgStore, map_error};
///
/// # async fn run(consumer: impl outbox_core::Consumer + 'static) -> outbox_core::Result<()> {
/// let store = PgStore::connect("postgres://postgres@127.0.0.1/test", Default::default()).await?;
/// store.migrate().await?;
///
/// let handler = handler_fn(|conn: &mut sqlx::PgConnection, event| {
///     Box::pin(async move {
///         sqlx::query("INSERT INTO shipments (order_key) VALUES ($1)")
///             .bind(&event.key)
///             .execute(conn)
///             .await
///             .map_err(map_error)?;
///         Ok(())
///     })
/// });
/// let inbox = PgInbox::new(&store, "shipping", handler)?;
/// InboxRunner::new(consumer, inbox).run(std::future::pending()).await?;
/// # Ok(())
/// # }
/// ```
pub struct PgInbox<H> {
    pool: PgPool,
    consumer: String,
    handler: H,
    record_sql: String,
    contains_sql: String,
    prune_sql: String,
}

impl<H: Handler<PgConnection>> PgInbox<H> {
    /// The inbox of `consumer` in `store`'s schema.
    ///
    /// The consumer name separates the records of consumers that share a
    /// database: each one applies every event once. It must be 1 to 200
    /// characters; anything else is [`outbox_core::ErrorKind::Config`].
    pub fn new(store: &PgStore, consumer: impl Into<String>, handler: H) -> Result<Self> {
        let consumer = consumer.into();
        check_consumer(&consumer)?;
        let q = store.schema().quoted();
        Ok(PgInbox {
            pool: store.pool().clone(),
            consumer,
            handler,
            record_sql: format!(
                "INSERT INTO {q}.inbox (consumer, event_id, stream, key, seq, event_type) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (consumer, event_id) DO NOTHING"
            ),
            contains_sql: format!("SELECT 1 FROM {q}.inbox WHERE consumer = $1 AND event_id = $2"),
            prune_sql: format!(
                "DELETE FROM {q}.inbox WHERE consumer = $1 AND event_id IN ( \
                     SELECT event_id FROM {q}.inbox \
                     WHERE consumer = $1 AND handled_at < now() - make_interval(secs => $2) \
                     LIMIT $3)"
            ),
        })
    }

    /// The consumer whose records this inbox keeps.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Whether this consumer has recorded `event_id`.
    pub async fn contains(&self, event_id: outbox_core::EventId) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(AssertSqlSafe(self.contains_sql.as_str()))
            .bind(&self.consumer)
            .bind(event_id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(found.is_some())
    }
}

impl<H> Inbox for PgInbox<H>
where
    H: Handler<PgConnection> + 'static,
{
    async fn process(&self, event: &ReceivedEvent) -> Result<Processed> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;

        let recorded = sqlx::query(AssertSqlSafe(self.record_sql.as_str()))
            .bind(&self.consumer)
            .bind(event.event_id.as_uuid())
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
        let mut pruned = 0;
        loop {
            let deleted = sqlx::query(AssertSqlSafe(self.prune_sql.as_str()))
                .bind(&self.consumer)
                .bind(age.as_secs_f64())
                .bind(PRUNE_BATCH)
                .execute(&self.pool)
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

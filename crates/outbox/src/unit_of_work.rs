//! The Unit of Work: one transaction for the aggregates' rows and the events
//! they recorded.
//!
//! Repositories write their rows through [`UnitOfWork::connection`] and hand
//! each saved aggregate to [`UnitOfWork::collect`], which takes the domain
//! events the aggregate recorded. [`UnitOfWork::commit`] stores those events and
//! commits, so the rows and the events become visible together or not at all.

use std::future::Future;

use outbox_core::{Enqueued, NewEvent, Result};
use sqlx::{Database, Transaction};

/// A store whose events can join a transaction of its own database.
pub trait TransactionalStore: Send + Sync {
    /// The sqlx database the store lives in.
    type Database: Database;

    /// Begins a transaction suited to writing events.
    fn begin(&self) -> impl Future<Output = Result<Transaction<'static, Self::Database>>> + Send;

    /// Stores `events` as part of the transaction that `conn` is in.
    fn enqueue_in<'c>(
        &'c self,
        conn: &'c mut <Self::Database as Database>::Connection,
        events: &'c [NewEvent],
    ) -> impl Future<Output = Result<Vec<Enqueued>>> + Send + 'c;

    /// Converts a driver error into an outbox error.
    fn map_error(err: sqlx::Error) -> outbox_core::Error;
}

/// Something that records domain events as its state changes, such as an order
/// that records `order.placed` when it is placed.
pub trait Aggregate {
    /// Takes the events recorded since the last call, oldest first.
    fn take_events(&mut self) -> Vec<NewEvent>;
}

/// A business transaction that also stores the events its aggregates recorded.
///
/// Dropping it without calling [`UnitOfWork::commit`] rolls everything back.
/// After a statement inside it failed, do not commit: PostgreSQL answers the
/// `COMMIT` of a failed transaction with a silent rollback.
pub struct UnitOfWork<'s, S: TransactionalStore> {
    store: &'s S,
    tx: Transaction<'static, S::Database>,
    events: Vec<NewEvent>,
}

impl<'s, S: TransactionalStore> UnitOfWork<'s, S> {
    /// Begins a transaction on `store`'s database.
    pub async fn begin(store: &'s S) -> Result<Self> {
        Ok(UnitOfWork {
            store,
            tx: store.begin().await?,
            events: Vec::new(),
        })
    }

    /// Joins a transaction the caller already began on the store's database.
    pub fn with_transaction(store: &'s S, tx: Transaction<'static, S::Database>) -> Self {
        UnitOfWork {
            store,
            tx,
            events: Vec::new(),
        }
    }

    /// The transaction's connection, for repositories to write their rows.
    pub fn connection(&mut self) -> &mut <S::Database as Database>::Connection {
        &mut self.tx
    }

    /// Adds one event to those stored on commit.
    pub fn record(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Takes the events `aggregate` recorded; they are stored on commit.
    pub fn collect(&mut self, aggregate: &mut impl Aggregate) {
        self.events.extend(aggregate.take_events());
    }

    /// The events that commit will store, in the order they were collected.
    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }

    /// Stores the collected events and commits the transaction.
    ///
    /// If any event is refused, nothing is committed and the transaction is
    /// rolled back when the error is returned.
    pub async fn commit(mut self) -> Result<Vec<Enqueued>> {
        let enqueued = self.store.enqueue_in(&mut self.tx, &self.events).await?;
        self.tx.commit().await.map_err(S::map_error)?;
        Ok(enqueued)
    }

    /// Rolls back the rows and discards the collected events.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.map_err(S::map_error)
    }
}

#[cfg(feature = "postgres")]
impl TransactionalStore for outbox_postgres::PgStore {
    type Database = sqlx::Postgres;

    async fn begin(&self) -> Result<Transaction<'static, sqlx::Postgres>> {
        self.pool()
            .begin()
            .await
            .map_err(outbox_postgres::map_error)
    }

    fn enqueue_in<'c>(
        &'c self,
        conn: &'c mut sqlx::PgConnection,
        events: &'c [NewEvent],
    ) -> impl Future<Output = Result<Vec<Enqueued>>> + Send + 'c {
        self.enqueue(conn, events)
    }

    fn map_error(err: sqlx::Error) -> outbox_core::Error {
        outbox_postgres::map_error(err)
    }
}

#[cfg(feature = "sqlite")]
impl TransactionalStore for outbox_sqlite::SqliteStore {
    type Database = sqlx::Sqlite;

    async fn begin(&self) -> Result<Transaction<'static, sqlx::Sqlite>> {
        outbox_sqlite::SqliteStore::begin(self).await
    }

    fn enqueue_in<'c>(
        &'c self,
        conn: &'c mut sqlx::SqliteConnection,
        events: &'c [NewEvent],
    ) -> impl Future<Output = Result<Vec<Enqueued>>> + Send + 'c {
        self.enqueue(conn, events)
    }

    fn map_error(err: sqlx::Error) -> outbox_core::Error {
        outbox_sqlite::map_error(err)
    }
}

//! Transactional outbox for Rust services: events commit with your data, and a
//! relay delivers them to the broker afterwards.
//!
//! A service stores the events of a business change in the same database
//! transaction as the change itself, so both commit or neither does, and never
//! talks to a broker on its commit path. This crate gathers the parts a service
//! needs:
//!
//! - the envelope and error types of [`outbox_core`], re-exported at the root;
//! - the stores, [`postgres`] and [`sqlite`], each behind its cargo feature;
//! - the [`UnitOfWork`], which collects the events that aggregates record and
//!   stores them with the aggregates' rows in one transaction;
//! - [`AnyStore`], a store chosen at run time from a database URL;
//! - on the consumer side, the [`inbox`]: [`inbox::InboxRunner`] reads a broker
//!   [`Consumer`] and applies each event once through
//!   [`postgres::PgInbox`] or [`sqlite::SqliteInbox`]. The broker adapters live in
//!   the publisher crates (`outbox-nats`, `outbox-rabbitmq`, …).
//!
//! ```no_run
//! use outbox::{NewEvent, UnitOfWork, sqlite::SqliteStore};
//! use serde_json::json;
//!
//! # async fn run() -> outbox::Result<()> {
//! let store = SqliteStore::connect("sqlite://shop.db", Default::default()).await?;
//! store.migrate().await?;
//!
//! let mut uow = UnitOfWork::begin(&store).await?;
//! sqlx::query("INSERT INTO orders (id, total) VALUES (?, ?)")
//!     .bind(42_i64)
//!     .bind(30_i64)
//!     .execute(uow.connection())
//!     .await
//!     .map_err(outbox::sqlite::map_error)?;
//! uow.record(NewEvent::json("orders", "order-42", "order.placed", &json!({"total": 30}))?);
//! uow.commit().await?;
//! # Ok(())
//! # }
//! ```

mod any;
mod unit_of_work;

pub use any::{AnyStore, StoreOptions};
pub use outbox_core::*;
pub use unit_of_work::{Aggregate, TransactionalStore, UnitOfWork};

/// The PostgreSQL store.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use outbox_postgres::*;
}

/// The SQLite store, the embedded default.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use outbox_sqlite::*;
}

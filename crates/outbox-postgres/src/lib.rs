//! The PostgreSQL store of the outbox.
//!
//! Events are written by [`PgStore::enqueue`] (or the free [`enqueue`]) inside
//! the caller's own transaction, into tables that live in a schema of their own
//! (`outbox` by default). [`migrate`] creates and upgrades that schema; the
//! layout and the reasons behind it are described in `migrations/0001_initial.sql`.
//!
//! ```no_run
//! use outbox_core::NewEvent;
//! use outbox_postgres::PgStore;
//! use serde_json::json;
//!
//! # async fn run() -> outbox_core::Result<()> {
//! let store = PgStore::connect("postgres://postgres@127.0.0.1/test", Default::default()).await?;
//! store.migrate().await?;
//!
//! let mut tx = store.pool().begin().await.map_err(outbox_postgres::map_error)?;
//! sqlx::query("INSERT INTO orders (id, total) VALUES ($1, $2)")
//!     .bind(42_i64)
//!     .bind(30_i64)
//!     .execute(&mut *tx)
//!     .await
//!     .map_err(outbox_postgres::map_error)?;
//! let event = NewEvent::json("orders", "order-42", "order.created", &json!({"total": 30}))?;
//! store.enqueue(&mut tx, &[event]).await?;
//! tx.commit().await.map_err(outbox_postgres::map_error)?;
//! # Ok(())
//! # }
//! ```

mod connect;
mod dead_letter;
mod error;
mod inbox;
mod migrate;
mod published;
mod relay;
mod store;

pub use connect::connect_pool;
pub use error::map_error;
pub use inbox::PgInbox;
pub use migrate::{LATEST_VERSION, MigrationReport, migrate};
pub use store::{PgOptions, PgStore, enqueue};

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "outbox";

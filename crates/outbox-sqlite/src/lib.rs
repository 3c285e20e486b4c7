//! The SQLite store of the outbox: the embedded default, no server needed.
//!
//! The layout mirrors the PostgreSQL store's, in tables prefixed `outbox_`.
//! SQLite admits one writer at a time, which makes positions and row ids follow
//! commit order by construction; the price is that writers queue for the
//! database lock, so transactions that enqueue should begin with
//! `BEGIN IMMEDIATE` (see [`SqliteStore::begin`]) to wait for it instead of
//! failing with `SQLITE_BUSY` when they upgrade from reading to writing.
//!
//! Every event lands in partition 0, so one relay publishes at a time.

mod dead_letter;
mod inbox;
mod migrate;
mod published;
mod relay;
mod store;

pub use inbox::SqliteInbox;
pub use migrate::{LATEST_VERSION, MigrationReport, migrate};
pub use store::{SqliteOptions, SqliteStore, connect_pool, enqueue, map_error};

//! Versioned schema migrations for SQLite, embedded in the binary.
//!
//! The same rules as on PostgreSQL: applied once, in order, in one transaction
//! that takes the write lock first; a newer schema or an altered migration is
//! refused.

use outbox_core::migration::{self, Migration};
use outbox_core::{Error, Result};
use sqlx::{Row, SqlitePool};

use crate::map_error;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial layout",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "consumer inbox",
        sql: include_str!("../migrations/0002_inbox.sql"),
    },
    Migration {
        version: 3,
        description: "dead letters can be retried in place",
        sql: include_str!("../migrations/0003_redrive.sql"),
    },
    Migration {
        version: 4,
        description: "published events kept for replay",
        sql: include_str!("../migrations/0004_published.sql"),
    },
];

/// The schema version this binary writes and expects.
pub const LATEST_VERSION: i64 = 4;

const PLACE: &str = "this database";

/// What a call to [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order; empty when the schema was current.
    pub applied: Vec<i64>,
    /// The schema's version afterwards.
    pub version: i64,
}

/// Creates the outbox tables or brings them up to [`LATEST_VERSION`].
///
/// Running it again on a current database changes nothing.
pub async fn migrate(pool: &SqlitePool) -> Result<MigrationReport> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(map_error)?;

    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
             version     INTEGER PRIMARY KEY,
             description TEXT    NOT NULL,
             checksum    TEXT    NOT NULL,
             applied_at  INTEGER NOT NULL
                 DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER))
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(map_error)?;

    let rows =
        sqlx::query("SELECT version, checksum FROM outbox_schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
    let applied: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r.get("version"), r.get("checksum")))
        .collect();
    let todo = migration::pending(MIGRATIONS, &applied, PLACE)?;

    for m in todo {
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(e).context(format!("migration {} failed", m.version)))?;
        sqlx::query(
            "INSERT INTO outbox_schema_migrations (version, description, checksum) \
             VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(m.checksum())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
    }
    tx.commit().await.map_err(map_error)?;

    let report = MigrationReport {
        applied: todo.iter().map(|m| m.version).collect(),
        version: todo
            .last()
            .map_or(applied.last().map_or(0, |a| a.0), |m| m.version),
    };
    if !report.applied.is_empty() {
        tracing::info!(version = report.version, applied = ?report.applied, "migrated schema");
    }
    Ok(report)
}

/// Checks that the tables exist at exactly the version this binary needs.
pub(crate) async fn check_version(pool: &SqlitePool) -> Result<i64> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                        WHERE type = 'table' AND name = 'outbox_schema_migrations')",
    )
    .fetch_one(pool)
    .await
    .map_err(map_error)?;
    if !exists {
        return Err(Error::config(
            "outbox tables are not set up in this database; run `outbox migrate`",
        ));
    }

    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM outbox_schema_migrations")
            .fetch_one(pool)
            .await
            .map_err(map_error)?;
    let version = version.unwrap_or(0);
    migration::require_version(PLACE, version, LATEST_VERSION)?;
    Ok(version)
}

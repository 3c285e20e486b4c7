//! Versioned schema migrations, embedded in the binary.
//!
//! Each migration is applied once, in order, inside one transaction that holds
//! an advisory lock for the schema, so concurrent migrators queue up instead of
//! racing. A database whose schema is newer than this binary knows is refused,
//! and so is one whose applied migrations differ from the embedded text.

use outbox_core::migration::{self, Migration};
use outbox_core::{Identifier, Result};
use sqlx::{AssertSqlSafe, PgPool, Row};

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

/// What a call to [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order; empty when the schema was current.
    pub applied: Vec<i64>,
    /// The schema's version afterwards.
    pub version: i64,
}

/// Creates the outbox schema or brings it up to [`LATEST_VERSION`].
///
/// Running it again on a current schema changes nothing.
pub async fn migrate(pool: &PgPool, schema: &Identifier) -> Result<MigrationReport> {
    let q = schema.quoted();
    let place = format!("schema {schema:?}");
    let mut tx = pool.begin().await.map_err(map_error)?;

    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("outbox migrate {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.schema_migrations (
             version     bigint      PRIMARY KEY,
             description text        NOT NULL,
             checksum    text        NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    )))
    .execute(&mut *tx)
    .await
    .map_err(map_error)?;

    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {q}.schema_migrations ORDER BY version"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_error)?;
    let applied: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r.get("version"), r.get("checksum")))
        .collect();
    let todo = migration::pending(MIGRATIONS, &applied, &place)?;

    for m in todo {
        sqlx::raw_sql(AssertSqlSafe(render(m.sql, schema)))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(e).context(format!("migration {} failed", m.version)))?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {q}.schema_migrations (version, description, checksum) \
             VALUES ($1, $2, $3)"
        )))
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
        let (version, applied) = (report.version, &report.applied);
        tracing::info!(%schema, version, ?applied, "migrated schema");
    }
    Ok(report)
}

/// Checks that the schema exists at exactly the version this binary needs.
pub(crate) async fn check_version(pool: &PgPool, schema: &Identifier) -> Result<i64> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                        WHERE table_schema = $1 AND table_name = 'schema_migrations')",
    )
    .bind(schema.as_str())
    .fetch_one(pool)
    .await
    .map_err(map_error)?;
    if !exists {
        return Err(outbox_core::Error::config(format!(
            "outbox schema {schema:?} is not set up; run `outbox migrate`"
        )));
    }

    let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(version) FROM {}.schema_migrations",
        schema.quoted()
    )))
    .fetch_one(pool)
    .await
    .map_err(map_error)?;
    let version = version.unwrap_or(0);
    migration::require_version(&format!("schema {schema:?}"), version, LATEST_VERSION)?;
    Ok(version)
}

/// The migration's SQL with the schema and channel names filled in.
fn render(sql: &str, schema: &Identifier) -> String {
    sql.replace("__SCHEMA__", &schema.quoted())
        .replace("__CHANNEL__", &channel(schema))
}

/// The NOTIFY channel writers signal on when a relay is parked.
pub(crate) fn channel(schema: &Identifier) -> String {
    format!("{schema}_events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_end_at_latest() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, LATEST_VERSION);
    }

    #[test]
    fn rendering_leaves_no_placeholder() {
        let schema = Identifier::new("shop").unwrap();
        let sql = render(MIGRATIONS[0].sql, &schema);
        assert!(!sql.contains("__"), "placeholder left in migration");
        assert!(sql.contains("\"shop\".events"));
        assert!(sql.contains("pg_notify('shop_events'"));
    }
}

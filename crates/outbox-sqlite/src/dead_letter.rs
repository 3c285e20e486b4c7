//! The dead letters on SQLite: listing, retrying in place, discarding.
//!
//! A retry lists the rows it puts back in `outbox_redrive` first, so that the
//! insert trigger keeps each row's id and position (see
//! `migrations/0003_redrive.sql`), all in one write transaction.

use chrono::{DateTime, Utc};
use outbox_core::{DeadLetter, DeadLetterFilter, DeadLetterStore, Error, ErrorKind, Result};
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{AssertSqlSafe, Row, Sqlite};

use crate::store::decode_event;
use crate::{SqliteStore, map_error};

/// The condition every operation shares, over binds `?1` to `?6`.
const SELECTED: &str = "(?1 = '[]' OR event_id IN (SELECT value FROM json_each(?1))) \
     AND (?2 IS NULL OR stream = ?2) \
     AND (?3 IS NULL OR key = ?3) \
     AND (?4 IS NULL OR dead_at < ?4) \
     AND (?5 IS NULL OR dead_at >= ?5) \
     AND (?6 IS NULL OR instr(last_error, ?6) > 0)";

const COLUMNS: &str = "id, event_id, stream, key, seq, partition, event_type, content_type, \
                       payload, headers, created_at";

fn bind<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    filter: &'q DeadLetterFilter,
) -> Query<'q, Sqlite, SqliteArguments> {
    let ids: Vec<String> = filter.event_ids.iter().map(ToString::to_string).collect();
    let now = Utc::now().timestamp_millis();
    let cutoff = |age: std::time::Duration| now - age.as_millis() as i64;
    query
        .bind(serde_json::to_string(&ids).expect("strings serialize"))
        .bind(filter.stream.as_deref())
        .bind(filter.key.as_deref())
        .bind(filter.older_than.map(cutoff))
        .bind(filter.newer_than.map(cutoff))
        .bind(filter.error_contains.as_deref())
}

impl DeadLetterStore for SqliteStore {
    async fn dead_letters(&self, filter: &DeadLetterFilter, limit: u32) -> Result<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT {COLUMNS}, attempts, last_error, dead_at, held FROM outbox_dead_letters \
             WHERE {SELECTED} ORDER BY stream, key, seq LIMIT ?7"
        );
        let rows = bind(sqlx::query(AssertSqlSafe(sql)), filter)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(map_error)?;

        rows.iter()
            .map(|row| {
                let dead_ms: i64 = row.try_get("dead_at").map_err(map_error)?;
                let held: i64 = row.try_get("held").map_err(map_error)?;
                Ok(DeadLetter {
                    event: decode_event(row)?,
                    last_error: row.try_get("last_error").map_err(map_error)?,
                    dead_at: DateTime::<Utc>::from_timestamp_millis(dead_ms).ok_or_else(|| {
                        Error::new(ErrorKind::Storage, "stored dead_at is out of range")
                    })?,
                    held: held != 0,
                })
            })
            .collect()
    }

    async fn retry_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let mut tx = self.begin().await?;

        let listed = format!(
            "INSERT INTO outbox_redrive (id) SELECT id FROM outbox_dead_letters WHERE {SELECTED}"
        );
        let moved = bind(sqlx::query(AssertSqlSafe(listed)), filter)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?
            .rows_affected();
        let steps = [
            format!(
                "INSERT INTO outbox_events ({COLUMNS}, attempts) \
                 SELECT {COLUMNS}, 0 FROM outbox_dead_letters \
                 WHERE id IN (SELECT id FROM outbox_redrive)"
            ),
            "DELETE FROM outbox_dead_letters WHERE id IN (SELECT id FROM outbox_redrive)".into(),
            "DELETE FROM outbox_redrive".into(),
        ];
        for step in steps {
            sqlx::query(AssertSqlSafe(step))
                .execute(&mut *tx)
                .await
                .map_err(|e| map_error(e).context("could not retry dead letters"))?;
        }

        tx.commit().await.map_err(map_error)?;
        if moved > 0 {
            tracing::info!(retried = moved, "retried dead letters");
        }
        Ok(moved)
    }

    async fn discard_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let sql = format!("DELETE FROM outbox_dead_letters WHERE {SELECTED}");
        let discarded = bind(sqlx::query(AssertSqlSafe(sql)), filter)
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not discard dead letters"))?
            .rows_affected();
        if discarded > 0 {
            tracing::info!(discarded, "discarded dead letters");
        }
        Ok(discarded)
    }
}

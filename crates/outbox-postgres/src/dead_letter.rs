//! The dead letters on PostgreSQL: listing, retrying in place, discarding.
//!
//! A retry moves rows from `dead_letters` back into `events` in one statement,
//! with `outbox.redrive` set for the transaction so that the insert trigger
//! keeps each row's id and position (see `migrations/0003_redrive.sql`).

use outbox_core::{DeadLetter, DeadLetterFilter, DeadLetterStore, Result};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};

use crate::store::decode_event;
use crate::{PgStore, map_error};

/// The condition every operation shares, over binds `$1` to `$6`.
const SELECTED: &str = "(cardinality($1::uuid[]) = 0 OR event_id = ANY($1)) \
     AND ($2::text IS NULL OR stream = $2) \
     AND ($3::text IS NULL OR key = $3) \
     AND ($4::float8 IS NULL OR dead_at < now() - make_interval(secs => $4)) \
     AND ($5::float8 IS NULL OR dead_at >= now() - make_interval(secs => $5)) \
     AND ($6::text IS NULL OR strpos(last_error, $6) > 0)";

const COLUMNS: &str = "id, event_id, stream, key, seq, partition, event_type, content_type, \
                       payload, headers, created_at";

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    filter: &'q DeadLetterFilter,
) -> Query<'q, Postgres, PgArguments> {
    let ids: Vec<uuid::Uuid> = filter.event_ids.iter().map(|id| id.as_uuid()).collect();
    query
        .bind(ids)
        .bind(filter.stream.as_deref())
        .bind(filter.key.as_deref())
        .bind(filter.older_than.map(|d| d.as_secs_f64()))
        .bind(filter.newer_than.map(|d| d.as_secs_f64()))
        .bind(filter.error_contains.as_deref())
}

impl DeadLetterStore for PgStore {
    async fn dead_letters(&self, filter: &DeadLetterFilter, limit: u32) -> Result<Vec<DeadLetter>> {
        let q = self.schema().quoted();
        let sql = format!(
            "SELECT {COLUMNS}, attempts, last_error, dead_at, held FROM {q}.dead_letters \
             WHERE {SELECTED} ORDER BY stream, key, seq LIMIT $7"
        );
        let rows = bind(sqlx::query(AssertSqlSafe(sql)), filter)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(map_error)?;

        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    event: decode_event(row)?,
                    last_error: row.try_get("last_error").map_err(map_error)?,
                    dead_at: row.try_get("dead_at").map_err(map_error)?,
                    held: row.try_get("held").map_err(map_error)?,
                })
            })
            .collect()
    }

    async fn retry_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let q = self.schema().quoted();
        let mut tx = self.pool().begin().await.map_err(map_error)?;

        sqlx::query("SELECT set_config('outbox.redrive', 'on', true)")
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let sql = format!(
            "WITH moved AS (DELETE FROM {q}.dead_letters WHERE {SELECTED} RETURNING *) \
             INSERT INTO {q}.events ({COLUMNS}, attempts) \
             SELECT {COLUMNS}, 0 FROM moved"
        );
        let moved = bind(sqlx::query(AssertSqlSafe(sql)), filter)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(e).context("could not retry dead letters"))?
            .rows_affected();

        tx.commit().await.map_err(map_error)?;
        if moved > 0 {
            tracing::info!(schema = %self.schema(), retried = moved, "retried dead letters");
        }
        Ok(moved)
    }

    async fn discard_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let q = self.schema().quoted();
        let sql = format!("DELETE FROM {q}.dead_letters WHERE {SELECTED}");
        let discarded = bind(sqlx::query(AssertSqlSafe(sql)), filter)
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not discard dead letters"))?
            .rows_affected();
        if discarded > 0 {
            tracing::info!(schema = %self.schema(), discarded, "discarded dead letters");
        }
        Ok(discarded)
    }
}

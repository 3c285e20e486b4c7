//! The published log on PostgreSQL: events kept for replay after their publish.
//!
//! The relay fills `published` when it keeps events
//! (`RelayConfig::keep_published`); `kept` reads it for a replay in row-id
//! order, walking the primary key from the last row read.

use outbox_core::{Event, PublishedLog, ReplayFilter, Result};
use sqlx::AssertSqlSafe;

use crate::store::decode_event;
use crate::{PgStore, map_error};

impl PublishedLog for PgStore {
    async fn kept(&self, filter: &ReplayFilter, after: i64, limit: u32) -> Result<Vec<Event>> {
        let q = self.schema().quoted();
        let sql = format!(
            "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                    payload, headers, created_at, attempts \
             FROM {q}.published \
             WHERE id > $1 AND created_at >= $2 \
               AND ($3::timestamptz IS NULL OR created_at < $3) \
               AND ($4::text IS NULL OR stream = $4) \
               AND ($5::text IS NULL OR key = $5) \
             ORDER BY id LIMIT $6"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.stream.as_deref())
            .bind(filter.key.as_deref())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not read published events"))?;
        rows.iter().map(decode_event).collect()
    }
}

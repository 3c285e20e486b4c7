//! The published log on SQLite: events kept for replay after their publish.
//!
//! The relay fills `outbox_published` when it keeps events
//! (`RelayConfig::keep_published`); `kept` reads it for a replay in row-id
//! order, walking the primary key from the last row read.

use outbox_core::{Event, PublishedLog, ReplayFilter, Result};

use crate::store::decode_event;
use crate::{SqliteStore, map_error};

impl PublishedLog for SqliteStore {
    async fn kept(&self, filter: &ReplayFilter, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                    payload, headers, created_at, attempts \
             FROM outbox_published \
             WHERE id > ?1 AND created_at >= ?2 \
               AND (?3 IS NULL OR created_at < ?3) \
               AND (?4 IS NULL OR stream = ?4) \
               AND (?5 IS NULL OR key = ?5) \
             ORDER BY id LIMIT ?6",
        )
        .bind(after)
        .bind(filter.since.timestamp_millis())
        .bind(filter.until.map(|t| t.timestamp_millis()))
        .bind(filter.stream.as_deref())
        .bind(filter.key.as_deref())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(|e| map_error(e).context("could not read published events"))?;
        rows.iter().map(decode_event).collect()
    }
}

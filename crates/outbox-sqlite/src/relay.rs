//! The relay's side of the SQLite store: one partition, one lease, claims in
//! row-id order, fenced completion, and polling instead of notifications.
//!
//! SQLite keeps every event in partition 0, so one relay publishes at a time and
//! any other relay on the same file waits as a standby until the lease expires.

use std::time::Duration;

use outbox_core::{Claimed, RelayId, RelayStore, Result};
use sqlx::Row;

use crate::store::decode_event;
use crate::{SqliteStore, map_error};

/// The database's clock, in Unix milliseconds.
macro_rules! now_ms {
    () => {
        "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
    };
}

/// The condition, on an event row `e`, that relay `?1` holds its partition.
macro_rules! owned {
    () => {
        concat!(
            "EXISTS (SELECT 1 FROM outbox_leases l WHERE l.partition = e.partition ",
            "AND l.owner = ?1 AND l.expires_at > ",
            now_ms!(),
            ")"
        )
    };
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RelayStore for SqliteStore {
    fn partition_count(&self) -> u16 {
        1
    }

    async fn maintain_leases(&self, relay: RelayId, ttl: Duration) -> Result<Vec<i16>> {
        let held: Option<i64> = sqlx::query_scalar(concat!(
            "UPDATE outbox_leases SET ",
            "fence = fence + CASE WHEN owner = ?1 AND expires_at > ",
            now_ms!(),
            " THEN 0 ELSE 1 END, ",
            "owner = ?1, expires_at = ",
            now_ms!(),
            " + ?2 ",
            "WHERE partition = 0 AND (owner IS NULL OR owner = ?1 OR expires_at <= ",
            now_ms!(),
            ") RETURNING partition"
        ))
        .bind(relay.to_string())
        .bind(millis(ttl))
        .fetch_optional(self.pool())
        .await
        .map_err(map_error)?;
        Ok(held.map(|p| vec![p as i16]).unwrap_or_default())
    }

    async fn release_leases(&self, relay: RelayId) -> Result<()> {
        sqlx::query("UPDATE outbox_leases SET owner = NULL, expires_at = NULL WHERE owner = ?")
            .bind(relay.to_string())
            .execute(self.pool())
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn claim(
        &self,
        partitions: &[i16],
        skip_keys: &[(String, String)],
        skip_ids: &[i64],
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        if !partitions.contains(&0) {
            return Ok(Vec::new());
        }
        let skip: Vec<String> = skip_keys.iter().map(|(s, k)| format!("{s}\n{k}")).collect();
        let skip = serde_json::to_string(&skip).expect("strings serialize");
        let skip_ids = serde_json::to_string(skip_ids).expect("integers serialize");

        let rows = sqlx::query(concat!(
            "SELECT e.id, e.event_id, e.stream, e.key, e.seq, e.partition, e.event_type, ",
            "e.content_type, e.payload, e.headers, e.created_at, e.attempts, ",
            "CASE WHEN e.next_attempt_at > ",
            now_ms!(),
            " THEN e.next_attempt_at - ",
            now_ms!(),
            " END AS retry_in_ms ",
            "FROM outbox_events e ",
            "WHERE (e.stream || char(10) || e.key) NOT IN (SELECT value FROM json_each(?1)) ",
            "AND e.id NOT IN (SELECT value FROM json_each(?3)) ",
            "AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters d ",
            "WHERE d.held AND d.stream = e.stream AND d.key = e.key) ",
            "ORDER BY e.id LIMIT ?2"
        ))
        .bind(skip)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(skip_ids)
        .fetch_all(self.pool())
        .await
        .map_err(|e| map_error(e).context("could not claim events"))?;

        rows.iter()
            .map(|row| {
                let retry_in: Option<i64> = row.try_get("retry_in_ms").map_err(map_error)?;
                Ok(Claimed {
                    event: decode_event(row)?,
                    retry_in: retry_in.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                })
            })
            .collect()
    }

    async fn complete(&self, relay: RelayId, ids: &[i64], keep: bool) -> Result<u64> {
        let ids = serde_json::to_string(ids).expect("integers serialize");
        let relay = relay.to_string();
        if !keep {
            let done = sqlx::query(concat!(
                "DELETE FROM outbox_events AS e ",
                "WHERE e.id IN (SELECT value FROM json_each(?2)) AND ",
                owned!()
            ))
            .bind(&relay)
            .bind(&ids)
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not mark events done"))?;
            return Ok(done.rows_affected());
        }
        // One transaction, taken with the write lock, so no other relay can take
        // the lease in between. The delete removes exactly the rows copied,
        // rather than checking the lease again: a lease that ran out between
        // the two statements would otherwise leave a copy of a pending event.
        let mut tx = self.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO outbox_published (id, event_id, stream, key, seq, partition, ",
            "event_type, content_type, payload, headers, created_at, attempts, published_at) ",
            "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, ",
            "payload, headers, created_at, attempts, ",
            now_ms!(),
            " FROM outbox_events AS e ",
            "WHERE e.id IN (SELECT value FROM json_each(?2)) AND ",
            owned!()
        ))
        .bind(&relay)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(e).context("could not keep published events"))?;
        let done = sqlx::query(
            "DELETE FROM outbox_events WHERE id IN ( \
                 SELECT id FROM outbox_published \
                 WHERE id IN (SELECT value FROM json_each(?1)))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(e).context("could not mark events done"))?;
        tx.commit().await.map_err(map_error)?;
        Ok(done.rows_affected())
    }

    async fn prune_kept(&self, older_than: Duration, limit: u32) -> Result<u64> {
        let pruned = sqlx::query(concat!(
            "DELETE FROM outbox_published WHERE id IN (",
            "SELECT id FROM outbox_published WHERE published_at < ",
            now_ms!(),
            " - ?1 ORDER BY published_at LIMIT ?2)"
        ))
        .bind(millis(older_than))
        .bind(i64::from(limit))
        .execute(self.pool())
        .await
        .map_err(|e| map_error(e).context("could not delete expired published events"))?;
        Ok(pruned.rows_affected())
    }

    async fn fail(&self, relay: RelayId, id: i64, error: &str, retry_in: Duration) -> Result<()> {
        sqlx::query(concat!(
            "UPDATE outbox_events AS e SET attempts = attempts + 1, last_error = ?3, ",
            "next_attempt_at = ",
            now_ms!(),
            " + ?4 WHERE e.id = ?2 AND ",
            owned!()
        ))
        .bind(relay.to_string())
        .bind(id)
        .bind(error)
        .bind(millis(retry_in))
        .execute(self.pool())
        .await
        .map_err(|e| map_error(e).context("could not record a failed attempt"))?;
        Ok(())
    }

    async fn dead_letter(&self, relay: RelayId, id: i64, error: &str, hold: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query(concat!(
            "INSERT INTO outbox_dead_letters (id, event_id, stream, key, seq, partition, ",
            "event_type, content_type, payload, headers, created_at, attempts, last_error, held) ",
            "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, ",
            "payload, headers, created_at, attempts + 1, ?3, ?4 FROM outbox_events AS e ",
            "WHERE e.id = ?2 AND ",
            owned!()
        ))
        .bind(relay.to_string())
        .bind(id)
        .bind(error)
        .bind(hold)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(e).context("could not dead-letter an event"))?;
        if moved.rows_affected() == 1 {
            sqlx::query("DELETE FROM outbox_events WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn log_is_empty(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM outbox_published)")
            .fetch_one(self.pool())
            .await
            .map_err(map_error)
    }

    async fn park(&self, _relay: RelayId) -> Result<()> {
        Ok(())
    }

    async fn unpark(&self, _relay: RelayId) -> Result<()> {
        Ok(())
    }

    async fn wait_for_events(&self, _relay: RelayId, timeout: Duration) -> Result<()> {
        tokio::time::sleep(timeout).await;
        Ok(())
    }
}

//! The relay's side of the PostgreSQL store: partition leases, claims, fenced
//! completion, and waking on the writers' NOTIFY.
//!
//! Every write under a lease checks, in the same statement, that the relay still
//! owns the event's partition and that the lease has not expired by the
//! database's clock. Relays never compare their own clocks with each other.

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{Claimed, PARTITION_COUNT, RelayId, RelayStore, Result};
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::Mutex;

use crate::store::decode_event;
use crate::{PgStore, map_error};

/// The relay's statements for one schema, rendered once.
#[derive(Debug)]
pub(crate) struct RelayStatements {
    heartbeat: Arc<str>,
    renew: Arc<str>,
    release_some: Arc<str>,
    take: Arc<str>,
    release_all: Arc<str>,
    claim: Arc<str>,
    complete: Arc<str>,
    complete_keeping: Arc<str>,
    prune_kept: Arc<str>,
    fail: Arc<str>,
    dead_letter: Arc<str>,
    park: Arc<str>,
    unpark: Arc<str>,
}

impl RelayStatements {
    pub(crate) fn new(s: &str) -> Self {
        let owned = "l.partition = e.partition AND l.owner = $1 AND l.expires_at > now()";
        RelayStatements {
            heartbeat: format!(
                "WITH beat AS ( \
                     INSERT INTO {s}.relays (relay_id, heartbeat_until) \
                     VALUES ($1, now() + $2 * interval '1 millisecond') \
                     ON CONFLICT (relay_id) \
                     DO UPDATE SET heartbeat_until = excluded.heartbeat_until), \
                 gone AS ( \
                     DELETE FROM {s}.relays WHERE heartbeat_until < now() - interval '1 hour') \
                 SELECT count(*) + 1 AS live FROM {s}.relays \
                 WHERE heartbeat_until > now() AND relay_id <> $1"
            )
            .into(),
            renew: format!(
                "UPDATE {s}.leases SET expires_at = now() + $2 * interval '1 millisecond' \
                 WHERE owner = $1 AND expires_at > now() RETURNING partition"
            )
            .into(),
            release_some: format!(
                "UPDATE {s}.leases SET owner = NULL, expires_at = NULL \
                 WHERE owner = $1 AND partition = ANY($2)"
            )
            .into(),
            take: format!(
                "UPDATE {s}.leases \
                 SET owner = $1, fence = fence + 1, \
                     expires_at = now() + $2 * interval '1 millisecond' \
                 WHERE partition IN ( \
                     SELECT partition FROM {s}.leases \
                     WHERE owner IS NULL OR expires_at <= now() \
                     ORDER BY partition LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING partition"
            )
            .into(),
            release_all: format!(
                "WITH freed AS ( \
                     UPDATE {s}.leases SET owner = NULL, expires_at = NULL WHERE owner = $1), \
                 parked AS (DELETE FROM {s}.parked_relays WHERE relay_id = $1) \
                 DELETE FROM {s}.relays WHERE relay_id = $1"
            )
            .into(),
            // `NOT IN (SELECT unnest(…))` becomes a hashed subplan, so leaving
            // out the rows being deleted costs one hash probe a row. The first
            // dead-letter test runs once per claim; only while a dead letter is
            // held does each row look one up.
            claim: format!(
                "SELECT e.id, e.event_id, e.stream, e.key, e.seq, e.partition, e.event_type, \
                        e.content_type, e.payload, e.headers, e.created_at, e.attempts, \
                        CASE WHEN e.next_attempt_at > now() THEN ceil(extract(epoch FROM \
                            e.next_attempt_at - now()) * 1000)::bigint END AS retry_in_ms \
                 FROM {s}.events e \
                 WHERE e.partition = ANY($1) \
                   AND NOT (e.stream || E'\\n' || e.key = ANY($2)) \
                   AND e.id NOT IN (SELECT unnest($3::bigint[])) \
                   AND (NOT EXISTS (SELECT 1 FROM {s}.dead_letters WHERE held) \
                        OR NOT EXISTS (SELECT 1 FROM {s}.dead_letters d \
                                       WHERE d.held AND d.stream = e.stream AND d.key = e.key)) \
                 ORDER BY e.id LIMIT $4"
            )
            .into(),
            complete: format!(
                "DELETE FROM {s}.events e USING {s}.leases l WHERE e.id = ANY($2) AND {owned}"
            )
            .into(),
            complete_keeping: format!(
                "WITH done AS ( \
                     DELETE FROM {s}.events e USING {s}.leases l \
                     WHERE e.id = ANY($2) AND {owned} RETURNING e.*) \
                 INSERT INTO {s}.published \
                     (id, event_id, stream, key, seq, partition, event_type, content_type, \
                      payload, headers, created_at, attempts) \
                 SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                        payload, headers, created_at, attempts FROM done"
            )
            .into(),
            prune_kept: format!(
                "DELETE FROM {s}.published WHERE id IN ( \
                     SELECT id FROM {s}.published \
                     WHERE published_at < now() - $1 * interval '1 millisecond' \
                     ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            )
            .into(),
            fail: format!(
                "UPDATE {s}.events e \
                 SET attempts = e.attempts + 1, last_error = $3, \
                     next_attempt_at = now() + $4 * interval '1 millisecond' \
                 FROM {s}.leases l WHERE e.id = $2 AND {owned}"
            )
            .into(),
            dead_letter: format!(
                "WITH moved AS ( \
                     DELETE FROM {s}.events e USING {s}.leases l \
                     WHERE e.id = $2 AND {owned} RETURNING e.*) \
                 INSERT INTO {s}.dead_letters \
                     (id, event_id, stream, key, seq, partition, event_type, content_type, \
                      payload, headers, created_at, attempts, last_error, held) \
                 SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                        payload, headers, created_at, attempts + 1, $3, $4 FROM moved"
            )
            .into(),
            park: format!(
                "INSERT INTO {s}.parked_relays (relay_id, parked_until) \
                 VALUES ($1, now() + $2 * interval '1 millisecond') \
                 ON CONFLICT (relay_id) DO UPDATE SET parked_until = excluded.parked_until"
            )
            .into(),
            unpark: format!("DELETE FROM {s}.parked_relays WHERE relay_id = $1").into(),
        }
    }
}

/// The connection that LISTENs for writers' notifications, opened on first use.
#[derive(Default)]
pub(crate) struct Wakeups(Mutex<Option<PgListener>>);

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wakeups")
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// The relay's claim statement as this store renders it: `$1` partitions,
    /// `$2` skipped keys (`stream` and `key` joined by a newline), `$3`
    /// skipped row ids, `$4` the limit. For benchmarks and `EXPLAIN`.
    #[doc(hidden)]
    pub fn claim_statement(&self) -> &str {
        &self.relay_sql().claim
    }

    fn query(
        &self,
        sql: &Arc<str>,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(AssertSqlSafe(sql.clone()))
    }

    /// Makes sure the LISTEN connection is open; a failure is logged and the
    /// relay falls back to polling.
    async fn ensure_listening(&self) {
        let mut guard = self.wakeups().0.lock().await;
        if guard.is_some() {
            return;
        }
        let listener = async {
            let mut l = PgListener::connect_with(self.pool()).await?;
            l.listen(&self.channel()).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listener.await {
            Ok(l) => *guard = Some(l),
            Err(err) => tracing::warn!(
                error = %map_error(err).chain(),
                "could not listen for notifications; polling instead"
            ),
        }
    }
}

impl RelayStore for PgStore {
    fn partition_count(&self) -> u16 {
        PARTITION_COUNT
    }

    async fn maintain_leases(&self, relay: RelayId, ttl: Duration) -> Result<Vec<i16>> {
        let sql = self.relay_sql();
        let id = relay.as_uuid();
        let mut tx = self.pool().begin().await.map_err(map_error)?;

        let live: i64 = self
            .query(&sql.heartbeat)
            .bind(id)
            .bind(millis(ttl))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?
            .get("live");
        let mut held: Vec<i16> = self
            .query(&sql.renew)
            .bind(id)
            .bind(millis(ttl))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| r.get("partition"))
            .collect();
        held.sort_unstable();

        let count = i64::from(PARTITION_COUNT);
        let share = usize::try_from((count + live - 1) / live.max(1)).unwrap_or(0);
        if held.len() > share {
            let surplus = held.split_off(share);
            self.query(&sql.release_some)
                .bind(id)
                .bind(&surplus)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        } else if held.len() < share {
            let taken = self
                .query(&sql.take)
                .bind(id)
                .bind(millis(ttl))
                .bind((share - held.len()) as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_error)?;
            held.extend(taken.iter().map(|r| r.get::<i16, _>("partition")));
            held.sort_unstable();
        }

        tx.commit().await.map_err(map_error)?;
        Ok(held)
    }

    async fn release_leases(&self, relay: RelayId) -> Result<()> {
        self.query(&self.relay_sql().release_all)
            .bind(relay.as_uuid())
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
        let skip: Vec<String> = skip_keys.iter().map(|(s, k)| format!("{s}\n{k}")).collect();
        let rows = self
            .query(&self.relay_sql().claim)
            .bind(partitions)
            .bind(&skip)
            .bind(skip_ids)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
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
        let sql = self.relay_sql();
        let done = self
            .query(if keep {
                &sql.complete_keeping
            } else {
                &sql.complete
            })
            .bind(relay.as_uuid())
            .bind(ids)
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not mark events done"))?;
        Ok(done.rows_affected())
    }

    async fn fail(&self, relay: RelayId, id: i64, error: &str, retry_in: Duration) -> Result<()> {
        self.query(&self.relay_sql().fail)
            .bind(relay.as_uuid())
            .bind(id)
            .bind(error)
            .bind(millis(retry_in))
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not record a failed attempt"))?;
        Ok(())
    }

    async fn dead_letter(&self, relay: RelayId, id: i64, error: &str, hold: bool) -> Result<()> {
        self.query(&self.relay_sql().dead_letter)
            .bind(relay.as_uuid())
            .bind(id)
            .bind(error)
            .bind(hold)
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not dead-letter an event"))?;
        Ok(())
    }

    async fn park(&self, relay: RelayId) -> Result<()> {
        self.ensure_listening().await;
        // Parked rows expire on their own, so a relay that dies while parked
        // does not make writers notify forever.
        self.query(&self.relay_sql().park)
            .bind(relay.as_uuid())
            .bind(60_000_i64)
            .execute(self.pool())
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn unpark(&self, relay: RelayId) -> Result<()> {
        self.query(&self.relay_sql().unpark)
            .bind(relay.as_uuid())
            .execute(self.pool())
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn prune_kept(&self, older_than: Duration, limit: u32) -> Result<u64> {
        let pruned = self
            .query(&self.relay_sql().prune_kept)
            .bind(millis(older_than))
            .bind(i64::from(limit))
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not delete expired published events"))?;
        Ok(pruned.rows_affected())
    }

    async fn log_is_empty(&self) -> Result<bool> {
        let sql = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {}.published)",
            self.schema().quoted()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(self.pool())
            .await
            .map_err(map_error)
    }

    async fn reclaim(&self) -> Result<()> {
        // Outside a transaction, as VACUUM must be; SKIP_LOCKED gives up at once
        // rather than queue behind a lock another session holds.
        //
        // INDEX_CLEANUP ON: by default VACUUM skips the index pass when under
        // 2 % of the pages hold dead rows, and leaves those rows' line pointers
        // in place. After a drain those pages are the table's last ones (the
        // newest rows go last), and a page with a line pointer left cannot be
        // cut off, so a large table would never shrink back.
        let s = self.schema().quoted();
        let sql = format!(
            "VACUUM (SKIP_LOCKED, DISABLE_PAGE_SKIPPING, INDEX_CLEANUP ON) \
             {s}.events, {s}.published"
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map_err(|e| map_error(e).context("could not vacuum the outbox tables"))?;
        Ok(())
    }

    async fn wait_for_events(&self, relay: RelayId, timeout: Duration) -> Result<()> {
        {
            let mut guard = self.wakeups().0.lock().await;
            match guard.as_mut() {
                Some(listener) => {
                    let woke = tokio::time::timeout(timeout, listener.recv()).await;
                    if let Ok(Err(err)) = woke {
                        // The connection broke: notifications may have been lost
                        // meanwhile, which the caller's next claim covers.
                        tracing::warn!(error = %map_error(err).chain(), "listener failed");
                        *guard = None;
                    }
                    while guard.as_mut().and_then(PgListener::next_buffered).is_some() {}
                }
                None => tokio::time::sleep(timeout).await,
            }
        }
        self.unpark(relay).await
    }
}

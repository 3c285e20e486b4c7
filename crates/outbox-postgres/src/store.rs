//! The PostgreSQL store: the write path inside the caller's transaction, and the
//! read side used by operators' tools.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::{
    Enqueued, Error, Event, EventId, Headers, Identifier, Limits, NewEvent, OutboxStore, Payload,
    Result, Status,
};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::migrate::{self, MigrationReport};
use crate::relay::{RelayStatements, Wakeups};
use crate::{DEFAULT_SCHEMA, connect_pool, map_error};

/// Settings of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema holding the outbox tables.
    pub schema: Identifier,
    /// Limits applied to every event before it is written.
    pub limits: Limits,
    /// Pool size when the store opens its own pool.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: Identifier::new(DEFAULT_SCHEMA).expect("the default schema name is valid"),
            limits: Limits::default(),
            max_connections: 8,
        }
    }
}

/// The statements of one schema, rendered once.
#[derive(Debug)]
struct Statements {
    insert: Arc<str>,
    status: Arc<str>,
    pending: Arc<str>,
}

impl Statements {
    fn new(schema: &Identifier) -> Self {
        let s = schema.quoted();
        Statements {
            insert: format!(
                "INSERT INTO {s}.events \
                     (event_id, stream, key, event_type, content_type, payload, headers) \
                 SELECT e, st, k, t, c, p, h::jsonb \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                             $6::bytea[], $7::text[]) AS u(e, st, k, t, c, p, h) \
                 RETURNING event_id, seq"
            )
            .into(),
            status: format!(
                "SELECT (SELECT count(*) FROM {s}.events) AS pending, \
                        (SELECT extract(epoch FROM now() - created_at)::float8 \
                           FROM {s}.events ORDER BY id LIMIT 1) AS oldest_age, \
                        (SELECT count(*) FROM {s}.dead_letters) AS dead_lettered, \
                        (SELECT max(version) FROM {s}.schema_migrations) AS version"
            )
            .into(),
            pending: format!(
                "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                        payload, headers, created_at, attempts \
                 FROM {s}.events ORDER BY stream, key, seq LIMIT $1"
            )
            .into(),
        }
    }
}

/// The outbox on PostgreSQL.
///
/// Cheap to clone: clones share the pool and the rendered statements.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    options: PgOptions,
    sql: Arc<Statements>,
    relay_sql: Arc<RelayStatements>,
    wakeups: Arc<Wakeups>,
}

impl PgStore {
    /// Opens a pool to `url` and wraps it. The schema is not checked; call
    /// [`PgStore::migrate`] or [`PgStore::check_schema`] next.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let pool = connect_pool(url, options.max_connections).await?;
        Ok(PgStore::new(pool, options))
    }

    /// Wraps an existing pool, such as the one the service already uses.
    pub fn new(pool: PgPool, options: PgOptions) -> Self {
        let sql = Arc::new(Statements::new(&options.schema));
        let relay_sql = Arc::new(RelayStatements::new(&options.schema.quoted()));
        PgStore {
            pool,
            options,
            sql,
            relay_sql,
            wakeups: Arc::default(),
        }
    }

    /// The pool, for beginning the transactions that events join.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the outbox tables.
    pub fn schema(&self) -> &Identifier {
        &self.options.schema
    }

    /// The limits applied to every event.
    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    pub(crate) fn relay_sql(&self) -> &RelayStatements {
        &self.relay_sql
    }

    pub(crate) fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// The channel on which writers NOTIFY a parked relay.
    pub fn channel(&self) -> String {
        migrate::channel(&self.options.schema)
    }

    /// Creates or upgrades the schema. See [`crate::migrate`].
    pub async fn migrate(&self) -> Result<MigrationReport> {
        migrate::migrate(&self.pool, &self.options.schema).await
    }

    /// Fails unless the schema exists at exactly the version this binary needs.
    pub async fn check_schema(&self) -> Result<i64> {
        migrate::check_version(&self.pool, &self.options.schema).await
    }

    /// Stores `events` as part of the transaction that `conn` is in.
    ///
    /// Every event is validated first; if any is refused, nothing is written.
    /// Each event's key row stays locked until the transaction ends, which is what
    /// hands out positions in commit order. Nothing here talks to a broker: the
    /// rows become visible to the relay when, and only if, the transaction
    /// commits.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        events: &[NewEvent],
    ) -> Result<Vec<Enqueued>> {
        insert(conn, &self.sql.insert, &self.options.limits, events).await
    }
}

/// Stores `events` in the default schema (`outbox`) with default limits, as part
/// of the transaction that `conn` is in. See [`PgStore::enqueue`].
pub async fn enqueue(conn: &mut PgConnection, events: &[NewEvent]) -> Result<Vec<Enqueued>> {
    static DEFAULT: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    let sql = DEFAULT.get_or_init(|| Statements::new(&PgOptions::default().schema));
    insert(conn, &sql.insert, &Limits::default(), events).await
}

async fn insert(
    conn: &mut PgConnection,
    sql: &Arc<str>,
    limits: &Limits,
    events: &[NewEvent],
) -> Result<Vec<Enqueued>> {
    for event in events {
        event.validate(limits)?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }

    let mut ids = Vec::with_capacity(events.len());
    let mut streams = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut content_types = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut headers = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.event_id().as_uuid());
        streams.push(e.stream());
        keys.push(e.key());
        types.push(e.event_type());
        content_types.push(e.payload().content_type());
        payloads.push(e.payload().as_bytes());
        headers.push(serde_json::to_string(e.headers()).expect("string maps serialize"));
    }

    let rows = sqlx::query(AssertSqlSafe(sql.clone()))
        .bind(&ids)
        .bind(&streams)
        .bind(&keys)
        .bind(&types)
        .bind(&content_types)
        .bind(&payloads)
        .bind(&headers)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e).context("could not enqueue events"))?;

    // RETURNING does not promise input order; answer in the caller's order.
    let mut assigned: Vec<(Uuid, i64)> = rows
        .iter()
        .map(|r| (r.get("event_id"), r.get("seq")))
        .collect();
    assigned.sort_unstable();
    ids.iter()
        .map(|id| {
            let i = assigned
                .binary_search_by_key(id, |(u, _)| *u)
                .map_err(|_| Error::new(outbox_core::ErrorKind::Storage, "event row missing"))?;
            Ok(Enqueued {
                event_id: EventId::from_uuid(*id),
                seq: assigned[i].1,
            })
        })
        .collect()
}

impl OutboxStore for PgStore {
    async fn status(&self) -> Result<Status> {
        let row = sqlx::query(AssertSqlSafe(self.sql.status.clone()))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_error(e).context("could not read the outbox status"))?;

        let age: Option<f64> = row.get("oldest_age");
        Ok(Status {
            pending: row.get::<i64, _>("pending") as u64,
            oldest_pending_age: age.map(|s| Duration::from_secs_f64(s.max(0.0))),
            dead_lettered: row.get::<i64, _>("dead_lettered") as u64,
            schema_version: row.get::<Option<i64>, _>("version").unwrap_or(0),
        })
    }

    async fn pending(&self, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.pending.clone()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_error(e).context("could not read pending events"))?;
        rows.iter().map(decode_event).collect()
    }
}

/// Reads an [`Event`] from a row of `events` or `dead_letters`.
pub(crate) fn decode_event(row: &PgRow) -> Result<Event> {
    let headers: serde_json::Value = row.try_get("headers").map_err(map_error)?;
    let content_type: String = row.try_get("content_type").map_err(map_error)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(map_error)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(map_error)?;

    Ok(Event {
        id: row.try_get("id").map_err(map_error)?,
        event_id: EventId::from_uuid(row.try_get("event_id").map_err(map_error)?),
        stream: row.try_get("stream").map_err(map_error)?,
        key: row.try_get("key").map_err(map_error)?,
        seq: row.try_get("seq").map_err(map_error)?,
        partition: row.try_get("partition").map_err(map_error)?,
        event_type: row.try_get("event_type").map_err(map_error)?,
        payload: Payload::bytes(content_type, payload),
        headers: headers_from_json(headers),
        created_at,
        attempts: row.try_get("attempts").map_err(map_error)?,
    })
}

/// Headers written by plain SQL may hold numbers or booleans; they are carried
/// as their JSON text.
fn headers_from_json(value: serde_json::Value) -> Headers {
    let serde_json::Value::Object(map) = value else {
        return Headers::new();
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

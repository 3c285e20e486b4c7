//! The SQLite store: the write path inside the caller's transaction, and the
//! read side used by operators' tools.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::{
    Enqueued, Error, ErrorKind, Event, EventId, Headers, Limits, NewEvent, OutboxStore, Payload,
    Result, Status,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::migrate::{self, MigrationReport};

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Limits applied to every event before it is written.
    pub limits: Limits,
    /// Pool size when the store opens its own pool.
    pub max_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            limits: Limits::default(),
            max_connections: 4,
        }
    }
}

/// Converts a sqlx error into an outbox [`Error`] of the fitting kind.
///
/// A busy or locked database is transient; a constraint or a `RAISE` from the
/// outbox's trigger is the caller's input; missing tables are configuration.
pub fn map_error(err: sqlx::Error) -> Error {
    let (kind, message) = match &err {
        sqlx::Error::Io(_) => (
            ErrorKind::Unavailable,
            "could not access the sqlite database",
        ),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            (ErrorKind::Unavailable, "no sqlite connection available")
        }
        sqlx::Error::Configuration(_) => (ErrorKind::Config, "invalid sqlite configuration"),
        sqlx::Error::Database(db) => classify(db.code().as_deref().unwrap_or(""), db.message()),
        _ => (ErrorKind::Storage, "sqlite query failed"),
    };
    Error::new(kind, message).with_source(err)
}

fn classify(code: &str, message: &str) -> (ErrorKind, &'static str) {
    // Extended result codes: the primary code is the low byte.
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        5 | 6 => (ErrorKind::Transient, "sqlite database is busy"),
        19 => (ErrorKind::InvalidInput, "sqlite rejected the event's data"),
        14 => (ErrorKind::Unavailable, "could not open the sqlite database"),
        1 if message.contains("no such table") => (
            ErrorKind::Config,
            "outbox tables are missing; run `outbox migrate`",
        ),
        1 if message.contains("not valid json") => (
            ErrorKind::InvalidInput,
            "payload is declared json but is not valid json",
        ),
        _ => (ErrorKind::Storage, "sqlite query failed"),
    }
}

/// Opens a pool on the database file at `url` (`sqlite://PATH`), creating it if
/// missing, in WAL mode with full synchronous writes and a 30-second busy timeout.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::config(format!("invalid sqlite url {url:?}")).with_source(e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));

    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("could not open sqlite database {url:?}"),
            )
            .with_source(e)
        })
}

/// The outbox on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    options: SqliteOptions,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite://PATH`) and wraps it.
    pub async fn connect(url: &str, options: SqliteOptions) -> Result<Self> {
        let pool = connect_pool(url, options.max_connections).await?;
        Ok(SqliteStore::new(pool, options))
    }

    /// Wraps an existing pool, such as the one the service already uses.
    pub fn new(pool: SqlitePool, options: SqliteOptions) -> Self {
        SqliteStore { pool, options }
    }

    /// The pool, for beginning the transactions that events join.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The limits applied to every event.
    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    /// Begins a write transaction with `BEGIN IMMEDIATE`, which waits for the
    /// database's write lock up front instead of failing later.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)
    }

    /// Creates or upgrades the outbox tables.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        migrate::migrate(&self.pool).await
    }

    /// Fails unless the tables exist at exactly the version this binary needs.
    pub async fn check_schema(&self) -> Result<i64> {
        migrate::check_version(&self.pool).await
    }

    /// Stores `events` as part of the transaction that `conn` is in.
    ///
    /// Every event is validated first; if any is refused, nothing is written.
    /// Nothing here talks to a broker.
    pub async fn enqueue(
        &self,
        conn: &mut SqliteConnection,
        events: &[NewEvent],
    ) -> Result<Vec<Enqueued>> {
        insert(conn, &self.options.limits, events).await
    }
}

/// Stores `events` with default limits as part of the transaction that `conn`
/// is in. See [`SqliteStore::enqueue`].
pub async fn enqueue(conn: &mut SqliteConnection, events: &[NewEvent]) -> Result<Vec<Enqueued>> {
    insert(conn, &Limits::default(), events).await
}

async fn insert(
    conn: &mut SqliteConnection,
    limits: &Limits,
    events: &[NewEvent],
) -> Result<Vec<Enqueued>> {
    for event in events {
        event.validate(limits)?;
    }

    let mut enqueued = Vec::with_capacity(events.len());
    for e in events {
        let headers = serde_json::to_string(e.headers()).expect("string maps serialize");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox_events \
                 (event_id, stream, key, event_type, content_type, payload, headers) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(e.event_id().to_string())
        .bind(e.stream())
        .bind(e.key())
        .bind(e.event_type())
        .bind(e.payload().content_type())
        .bind(e.payload().as_bytes())
        .bind(headers)
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| map_error(err).context("could not enqueue events"))?;

        // RETURNING reports the row before the trigger assigned its position.
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM outbox_events WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(map_error)?;
        enqueued.push(Enqueued {
            event_id: e.event_id(),
            seq,
        });
    }
    Ok(enqueued)
}

impl OutboxStore for SqliteStore {
    async fn status(&self) -> Result<Status> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox_events) AS pending, \
                    (SELECT CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER) \
                            - created_at FROM outbox_events ORDER BY id LIMIT 1) AS oldest_age_ms, \
                    (SELECT count(*) FROM outbox_dead_letters) AS dead_lettered, \
                    (SELECT max(version) FROM outbox_schema_migrations) AS version",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_error(e).context("could not read the outbox status"))?;

        let age: Option<i64> = row.get("oldest_age_ms");
        Ok(Status {
            pending: row.get::<i64, _>("pending") as u64,
            oldest_pending_age: age.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            dead_lettered: row.get::<i64, _>("dead_lettered") as u64,
            schema_version: row.get::<Option<i64>, _>("version").unwrap_or(0),
        })
    }

    async fn pending(&self, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, event_id, stream, key, seq, partition, event_type, content_type, \
                    payload, headers, created_at, attempts \
             FROM outbox_events ORDER BY stream, key, seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| map_error(e).context("could not read pending events"))?;
        rows.iter().map(decode_event).collect()
    }
}

/// Reads an [`Event`] from a row of `outbox_events` or `outbox_dead_letters`.
pub(crate) fn decode_event(row: &SqliteRow) -> Result<Event> {
    let event_id: String = row.try_get("event_id").map_err(map_error)?;
    let event_id = uuid::Uuid::parse_str(&event_id).map_err(|e| {
        Error::new(
            ErrorKind::Storage,
            format!("stored event_id {event_id:?} is not a uuid"),
        )
        .with_source(e)
    })?;
    let headers: String = row.try_get("headers").map_err(map_error)?;
    let headers: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&headers)
        .map_err(|e| {
            Error::new(ErrorKind::Storage, "stored headers are not a json object").with_source(e)
        })?;
    let created_ms: i64 = row.try_get("created_at").map_err(map_error)?;
    let created_at = DateTime::<Utc>::from_timestamp_millis(created_ms)
        .ok_or_else(|| Error::new(ErrorKind::Storage, "stored created_at is out of range"))?;
    let partition: i64 = row.try_get("partition").map_err(map_error)?;
    let content_type: String = row.try_get("content_type").map_err(map_error)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(map_error)?;

    Ok(Event {
        id: row.try_get("id").map_err(map_error)?,
        event_id: EventId::from_uuid(event_id),
        stream: row.try_get("stream").map_err(map_error)?,
        key: row.try_get("key").map_err(map_error)?,
        seq: row.try_get("seq").map_err(map_error)?,
        partition: partition as i16,
        event_type: row.try_get("event_type").map_err(map_error)?,
        payload: Payload::bytes(content_type, payload),
        headers: headers
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect::<Headers>(),
        created_at,
        attempts: row.try_get("attempts").map_err(map_error)?,
    })
}

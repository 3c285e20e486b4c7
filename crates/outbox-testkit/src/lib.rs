//! Fixtures for the integration tests: each test gets a PostgreSQL schema, a
//! SQLite file or a NATS stream of its own, so tests run in parallel without
//! seeing each other.
//!
//! A test that needs a service asks for it through [`pg`] (or `nats`, with the
//! `nats` feature). When the service cannot be reached the fixture panics if
//! `CI=true` (a missing service must fail the build) and otherwise prints why the
//! test is skipped and returns `None`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use outbox_core::Identifier;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

mod event;
pub use event::stored_event;

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
pub use kafka::{
    DEFAULT_KAFKA_BROKERS, KafkaFixture, KafkaServer, kafka, kafka_brokers, unique_topic_name,
};
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
pub use nats::{DEFAULT_NATS_URL, NatsFixture, NatsServer, nats, nats_url, unique_stream_name};
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_URL, RedisFixture, RedisServer, redis, redis_url};
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{
    DEFAULT_RABBITMQ_URL, RabbitFixture, close_connections_named, rabbitmq, rabbitmq_url,
};
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "mqtt")]
pub use mqtt::{DEFAULT_MQTT_URL, MosquittoServer, MqttFixture, mqtt, mqtt_url, unique_mqtt_name};

/// The PostgreSQL server tests use, unless `OUTBOX_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the test PostgreSQL server.
pub fn pg_url() -> String {
    std::env::var("OUTBOX_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Whether the tests run under CI, where a missing service is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports that `service` is unreachable: panics under CI, otherwise prints that
/// the test `test` is skipped and why.
pub fn unreachable(service: &str, test: &str, cause: &dyn std::fmt::Display) {
    if in_ci() {
        panic!("{service} is required under CI=true and is unreachable: {cause}");
    }
    // Written past the test harness's output capture, so a skip is seen.
    let line = format!("skipped {test}: {service} is unreachable: {cause}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// A private schema on the test PostgreSQL server, dropped by [`PgSchema::drop`].
pub struct PgSchema {
    /// A pool on the test database.
    pub pool: PgPool,
    /// The schema name, unique to this fixture.
    pub schema: Identifier,
    /// The database URL the pool was opened with.
    pub url: String,
}

/// A fresh, unused schema name on the test server, or `None` when PostgreSQL is
/// unreachable outside CI. The schema itself is not created.
pub async fn pg(test: &str) -> Option<PgSchema> {
    let url = pg_url();
    let options = match PgConnectOptions::from_str(&url) {
        Ok(o) => o.disable_statement_logging(),
        Err(e) => panic!("OUTBOX_TEST_DATABASE_URL is not a postgres url: {e}"),
    };
    // A direct connection first: a pool retries a refused connection until its
    // acquire timeout, which would make every test wait that long to skip.
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await;
    let pool = match probe {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    match pool {
        Ok(pool) => Some(PgSchema {
            pool,
            schema: unique_schema(),
            url,
        }),
        Err(e) => {
            unreachable("postgresql", test, &e);
            None
        }
    }
}

fn unique_schema() -> Identifier {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Identifier::new(&format!("t_{}", &id[id.len() - 20..])).expect("generated name is valid")
}

impl PgSchema {
    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema.quoted());
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .expect("drop test schema");
        // Connections still held elsewhere, such as a store's LISTEN connection,
        // would make `close` wait for them; the process exit closes them instead.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.pool.close()).await;
    }
}

/// A SQLite database file in a directory of its own, removed on drop.
pub struct SqliteFile {
    /// The database file.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SqliteFile {
    /// A fresh, not yet created database file.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temporary directory");
        SqliteFile {
            path: dir.path().join("outbox.db"),
            _dir: dir,
        }
    }

    /// `sqlite://PATH` for the file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    /// A pool on the file, creating it, in WAL mode with a generous busy timeout.
    pub async fn pool(&self) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("open sqlite test database")
    }
}

impl Default for SqliteFile {
    fn default() -> Self {
        SqliteFile::new()
    }
}

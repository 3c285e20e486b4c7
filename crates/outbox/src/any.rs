//! A store chosen at run time from a database URL, for tools such as the
//! `outbox` command that serve every database.

use outbox_core::{
    Enqueued, Error, Event, Identifier, Limits, NewEvent, OutboxStore, Result, Status,
};

/// Settings shared by every store kind.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The PostgreSQL schema holding the outbox tables; ignored by SQLite.
    pub schema: Identifier,
    /// Limits applied to every event before it is written.
    pub limits: Limits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            schema: Identifier::new("outbox").expect("the default schema name is valid"),
            limits: Limits::default(),
        }
    }
}

/// One of the stores compiled in, selected by the URL's scheme:
/// `postgres://` or `postgresql://` for PostgreSQL, `sqlite://PATH` for SQLite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(outbox_postgres::PgStore),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(outbox_sqlite::SqliteStore),
}

impl AnyStore {
    /// Connects to the database at `url`.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            #[cfg(feature = "postgres")]
            Some("postgres" | "postgresql") => {
                let options = outbox_postgres::PgOptions {
                    schema: options.schema,
                    limits: options.limits,
                    ..Default::default()
                };
                Ok(AnyStore::Postgres(
                    outbox_postgres::PgStore::connect(url, options).await?,
                ))
            }
            #[cfg(feature = "sqlite")]
            Some("sqlite") => {
                let options = outbox_sqlite::SqliteOptions {
                    limits: options.limits,
                    ..Default::default()
                };
                Ok(AnyStore::Sqlite(
                    outbox_sqlite::SqliteStore::connect(url, options).await?,
                ))
            }
            _ => Err(Error::config(format!(
                "unsupported database url scheme {:?}: expected one of {}",
                scheme.unwrap_or_default(),
                SUPPORTED.join(", ")
            ))),
        }
    }

    /// Creates or upgrades the outbox tables; returns the versions applied and
    /// the version reached.
    pub async fn migrate(&self) -> Result<(Vec<i64>, i64)> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.migrate().await.map(|r| (r.applied, r.version)),
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => s.migrate().await.map(|r| (r.applied, r.version)),
        }
    }

    /// Fails unless the outbox tables are at the version this binary needs.
    pub async fn check_schema(&self) -> Result<i64> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.check_schema().await,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => s.check_schema().await,
        }
    }

    /// Stores `events` in a transaction of their own and commits it.
    ///
    /// For tools and scripts; a service enqueues inside its own transaction.
    pub async fn enqueue_alone(&self, events: &[NewEvent]) -> Result<Vec<Enqueued>> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => {
                use outbox_postgres::map_error;
                let mut tx = s.pool().begin().await.map_err(map_error)?;
                let enqueued = s.enqueue(&mut tx, events).await?;
                tx.commit().await.map_err(map_error)?;
                Ok(enqueued)
            }
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => {
                let mut tx = s.begin().await?;
                let enqueued = s.enqueue(&mut tx, events).await?;
                tx.commit().await.map_err(outbox_sqlite::map_error)?;
                Ok(enqueued)
            }
        }
    }
}

const SUPPORTED: &[&str] = &[
    #[cfg(feature = "postgres")]
    "postgres://",
    #[cfg(feature = "sqlite")]
    "sqlite://",
];

impl OutboxStore for AnyStore {
    async fn status(&self) -> Result<Status> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.status().await,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => s.status().await,
        }
    }

    async fn pending(&self, limit: u32) -> Result<Vec<Event>> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.pending(limit).await,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => s.pending(limit).await,
        }
    }
}

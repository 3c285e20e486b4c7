//! A store chosen at run time from a database URL, for tools such as the
//! `outbox` command that serve every database.

use std::time::Duration;

use outbox_core::{
    Claimed, DeadLetter, DeadLetterFilter, DeadLetterStore, Enqueued, Error, Event, Identifier,
    Limits, NewEvent, OutboxStore, PublishedLog, RelayId, RelayStore, ReplayFilter, Result, Status,
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

/// Runs the same expression on whichever store `self` is.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres($s) => $e,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite($s) => $e,
        }
    };
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
        each!(self, s => s.migrate().await.map(|r| (r.applied, r.version)))
    }

    /// Fails unless the outbox tables are at the version this binary needs.
    pub async fn check_schema(&self) -> Result<i64> {
        each!(self, s => s.check_schema().await)
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
        each!(self, s => s.status().await)
    }

    async fn pending(&self, limit: u32) -> Result<Vec<Event>> {
        each!(self, s => s.pending(limit).await)
    }
}

impl DeadLetterStore for AnyStore {
    async fn dead_letters(&self, filter: &DeadLetterFilter, limit: u32) -> Result<Vec<DeadLetter>> {
        each!(self, s => s.dead_letters(filter, limit).await)
    }

    async fn retry_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        each!(self, s => s.retry_dead_letters(filter).await)
    }

    async fn discard_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        each!(self, s => s.discard_dead_letters(filter).await)
    }
}

impl PublishedLog for AnyStore {
    async fn kept(&self, filter: &ReplayFilter, after: i64, limit: u32) -> Result<Vec<Event>> {
        each!(self, s => s.kept(filter, after, limit).await)
    }
}

impl RelayStore for AnyStore {
    fn partition_count(&self) -> u16 {
        each!(self, s => s.partition_count())
    }

    async fn maintain_leases(&self, relay: RelayId, ttl: Duration) -> Result<Vec<i16>> {
        each!(self, s => s.maintain_leases(relay, ttl).await)
    }

    async fn release_leases(&self, relay: RelayId) -> Result<()> {
        each!(self, s => s.release_leases(relay).await)
    }

    async fn claim(
        &self,
        partitions: &[i16],
        skip_keys: &[(String, String)],
        skip_ids: &[i64],
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        each!(self, s => s.claim(partitions, skip_keys, skip_ids, limit).await)
    }

    async fn complete(&self, relay: RelayId, ids: &[i64], keep: bool) -> Result<u64> {
        each!(self, s => s.complete(relay, ids, keep).await)
    }

    async fn prune_kept(&self, older_than: Duration, limit: u32) -> Result<u64> {
        each!(self, s => s.prune_kept(older_than, limit).await)
    }

    async fn fail(&self, relay: RelayId, id: i64, error: &str, retry_in: Duration) -> Result<()> {
        each!(self, s => s.fail(relay, id, error, retry_in).await)
    }

    async fn dead_letter(&self, relay: RelayId, id: i64, error: &str, hold: bool) -> Result<()> {
        each!(self, s => s.dead_letter(relay, id, error, hold).await)
    }

    async fn park(&self, relay: RelayId) -> Result<()> {
        each!(self, s => s.park(relay).await)
    }

    async fn unpark(&self, relay: RelayId) -> Result<()> {
        each!(self, s => s.unpark(relay).await)
    }

    async fn log_is_empty(&self) -> Result<bool> {
        each!(self, s => s.log_is_empty().await)
    }

    async fn reclaim(&self) -> Result<()> {
        each!(self, s => s.reclaim().await)
    }

    async fn wait_for_events(&self, relay: RelayId, timeout: Duration) -> Result<()> {
        each!(self, s => s.wait_for_events(relay, timeout).await)
    }
}

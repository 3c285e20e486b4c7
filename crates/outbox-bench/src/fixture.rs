//! The private world of one measurement: a PostgreSQL schema and a JetStream
//! stream that nothing else uses, made at the start and removed at the end.
//!
//! Every measurement gets a fresh pair, so a drain never starts on the dead
//! rows of an earlier one. The relay under test is wired here exactly as a
//! service would wire it: a [`PgStore`] on its own pool and a
//! [`NatsPublisher`] on its own connection, wrapped only in the counting
//! layers of [`crate::metered`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use outbox::postgres::{PgOptions, PgStore, connect_pool};
use outbox::{Identifier, Relay, RelayConfig, RelayStats};
use outbox_nats::{NatsOptions, NatsPublisher};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::BenchResult;
use crate::metered::{MeteredPublisher, MeteredStore, PublishMeter, StoreMeter};

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// The PostgreSQL database.
    pub database_url: String,
    /// The NATS server.
    pub nats_url: String,
}

/// A schema and a stream of one measurement.
pub struct Fixture {
    /// Where the services are.
    pub services: Services,
    /// The schema, `bench_` and a random suffix.
    pub schema: Identifier,
    /// The outbox stream the events are written to; also the subject prefix.
    pub outbox_stream: String,
    /// The JetStream stream that receives them.
    pub jetstream_stream: String,
    /// A pool for the benchmark's own statements.
    pub admin: PgPool,
    /// An admin connection to NATS, independent of the relay's.
    pub jetstream: jetstream::Context,
    /// The publisher that made the stream, kept so that its connection closes
    /// only at the end.
    _setup: NatsPublisher,
}

/// Changes to the relay's wiring tried for comparison, never in the headline
/// figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Experiments {
    /// The relay's connections commit with `synchronous_commit = off`, so a
    /// delete of published rows does not wait for a WAL flush.
    pub async_commit: bool,
    /// The relay never parks, so writers never send NOTIFY; an idle relay
    /// polls every `poll_interval` instead. See [`MeteredStore::polling_only`].
    pub no_notify: bool,
    /// No relay runs at all (overhead only): the events stay in the table.
    pub no_relay: bool,
}

impl Fixture {
    /// Makes the schema and the stream.
    pub async fn create(services: &Services) -> BenchResult<Self> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let tag = &id[id.len() - 12..];
        let schema = Identifier::new(&format!("bench_{tag}"))?;
        let outbox_stream = format!("bench_{tag}");
        let jetstream_stream = format!("BENCH_{}", tag.to_uppercase());

        let admin = connect_pool(&services.database_url, 4).await?;
        let store = PgStore::new(admin.clone(), options(&schema));
        store.migrate().await?;
        // Tells a cleanup in another process that this schema is in use.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {q}.bench_run (pid integer NOT NULL); \
             INSERT INTO {q}.bench_run VALUES ({pid})",
            q = schema.quoted(),
            pid = std::process::id()
        )))
        .execute(&admin)
        .await?;

        let client = async_nats::ConnectOptions::new()
            .name("outbox-bench-admin")
            .connect(&services.nats_url)
            .await?;
        let publisher = connect_publisher(&services.nats_url).await?;
        let subjects = publisher.stream_subjects(&outbox_stream)?;
        publisher
            .ensure_stream(&jetstream_stream, &subjects, Duration::from_secs(120))
            .await?;

        Ok(Fixture {
            services: services.clone(),
            schema,
            outbox_stream,
            jetstream_stream,
            admin,
            jetstream: jetstream::new(client),
            _setup: publisher,
        })
    }

    /// The quoted schema name, for SQL text.
    pub fn q(&self) -> String {
        self.schema.quoted()
    }

    /// A store on a pool of its own, as the relay or a writer would open it.
    pub async fn store(&self, max_connections: u32) -> BenchResult<PgStore> {
        let options = PgOptions {
            max_connections,
            ..options(&self.schema)
        };
        Ok(PgStore::connect(&self.services.database_url, options).await?)
    }

    /// Starts a relay over this fixture's schema and stream: a store on a pool
    /// of eight connections, as [`PgOptions`] defaults to, and a publisher on a
    /// connection of its own.
    pub async fn start_relay(
        &self,
        config: RelayConfig,
        experiments: Experiments,
    ) -> BenchResult<RunningRelay> {
        let store = if experiments.async_commit {
            let connect = PgConnectOptions::from_str(&self.services.database_url)?
                .options([("synchronous_commit", "off")]);
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(connect)
                .await?;
            PgStore::new(pool, options(&self.schema))
        } else {
            self.store(8).await?
        };
        let (mut store, store_meter) = MeteredStore::new(store);
        if experiments.no_notify {
            store = store.polling_only();
        }
        let publisher = connect_publisher(&self.services.nats_url).await?;
        let (publisher, publish_meter) = MeteredPublisher::new(publisher);
        let relay = Relay::new(store, publisher, config);
        let stats = relay.stats();

        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(RunningRelay {
            stop,
            task,
            stats,
            store: store_meter,
            publisher: publish_meter,
        })
    }

    /// How many messages the JetStream stream holds.
    pub async fn stream_messages(&self) -> BenchResult<u64> {
        let mut stream = self.jetstream.get_stream(&self.jetstream_stream).await?;
        Ok(stream.info().await?.state.messages)
    }

    /// Rows left in the outbox table.
    pub async fn pending_rows(&self) -> BenchResult<i64> {
        let sql = format!("SELECT count(*) FROM {}.events", self.q());
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.admin)
            .await?)
    }

    /// Removes the stream and the schema. Errors are reported, not returned, so
    /// that a failed measurement still cleans up.
    pub async fn remove(self) {
        if let Err(err) = self.jetstream.delete_stream(&self.jetstream_stream).await {
            eprintln!(
                "warning: could not delete stream {}: {err}",
                self.jetstream_stream
            );
        }
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.q());
        if let Err(err) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.admin).await {
            eprintln!("warning: could not drop schema {}: {err}", self.schema);
        }
    }
}

async fn connect_publisher(nats_url: &str) -> BenchResult<NatsPublisher> {
    let options = NatsOptions {
        url: nats_url.to_owned(),
        client_name: "outbox-bench-relay".to_owned(),
        ..NatsOptions::default()
    };
    Ok(NatsPublisher::connect(options).await?)
}

/// Drops every `bench_` schema and deletes every `BENCH_` stream, which only
/// this benchmark makes, except those of a run still going on this machine;
/// for runs that were interrupted before cleaning up.
pub async fn remove_leftovers(services: &Services) -> BenchResult<()> {
    let admin = connect_pool(&services.database_url, 1).await?;
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")
            .fetch_all(&admin)
            .await?;
    let mut in_use = Vec::new();
    for name in schemas {
        let schema = Identifier::new(&name)?;
        let owner: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT pid FROM {}.bench_run",
            schema.quoted()
        )))
        .fetch_optional(&admin)
        .await
        .unwrap_or(None);
        if owner.is_some_and(running_bench) {
            println!("kept schema {name}: its run is still going");
            in_use.push(name.trim_start_matches("bench_").to_uppercase());
            continue;
        }
        let sql = format!("DROP SCHEMA {} CASCADE", schema.quoted());
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&admin).await?;
        println!("dropped schema {name}");
    }

    let js = jetstream::new(async_nats::connect(&services.nats_url).await?);
    let mut names = js.stream_names();
    let mut streams = Vec::new();
    while let Some(name) = names.next().await {
        let name = name?;
        let tag = name.strip_prefix("BENCH_");
        if tag.is_some_and(|t| !in_use.iter().any(|u| u == t)) {
            streams.push(name);
        }
    }
    for name in streams {
        js.delete_stream(&name).await?;
        println!("deleted stream {name}");
    }
    Ok(())
}

/// Whether `pid` is an `outbox-bench` process on this machine.
fn running_bench(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "outbox-bench")
}

fn options(schema: &Identifier) -> PgOptions {
    PgOptions {
        schema: schema.clone(),
        ..PgOptions::default()
    }
}

/// A relay running on the current runtime, with its meters.
pub struct RunningRelay {
    stop: oneshot::Sender<()>,
    task: JoinHandle<outbox::Result<()>>,
    /// The relay's own totals.
    pub stats: Arc<RelayStats>,
    /// What the relay asked of the store.
    pub store: Arc<StoreMeter>,
    /// What the relay asked of the broker.
    pub publisher: Arc<PublishMeter>,
}

impl RunningRelay {
    /// Stops the relay and waits for it to finish.
    pub async fn stop(self) -> BenchResult<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .map_err(|_| "the relay did not stop within 30 s")???;
        Ok(())
    }
}

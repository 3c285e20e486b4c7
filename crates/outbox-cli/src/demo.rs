//! `outbox demo`: an order service writes through the Unit of Work, rolls some
//! transactions back on purpose, a relay publishes, and the summary counts what
//! actually reached the broker.
//!
//! Everything in the summary is read back from the destination (the JSON lines
//! file, or the JetStream stream through a consumer of its own), never taken
//! from the relay's own counters.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use outbox::{
    AnyStore, Error, EventId, Identifier, NewEvent, OutboxStore, Relay, RelayConfig, Result,
    StoreOptions, UnitOfWork,
};
use serde::Serialize;
use serde_json::json;

use crate::publishers::AnyPublisher;

/// Settings of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Run against this database instead of a SQLite file in a fresh temporary
    /// directory. On PostgreSQL the demo uses a schema of its own and drops it
    /// at the end.
    #[arg(long, env = "OUTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Publish to this NATS server instead of a JSON lines file.
    #[arg(long, env = "OUTBOX_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// JetStream stream to publish into; the demo deletes and recreates it.
    #[arg(long, default_value = "OUTBOX_DEMO")]
    pub nats_stream: String,

    /// Transactions to write, one event each.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,

    /// Orders (keys) the events are spread over.
    #[arg(long, default_value_t = 50)]
    pub keys: usize,
}

/// What the demo observed.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Where the outbox lived.
    pub store: String,
    /// Where the events went: a file path or `nats:STREAM`.
    pub output: String,
    /// The JetStream stream, when publishing to NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Events in committed transactions.
    pub committed_events: usize,
    /// Events in transactions rolled back on purpose.
    pub rolled_back_events: usize,
    /// Messages read back from the destination.
    pub published: usize,
    /// Committed events never read back.
    pub missing: usize,
    /// Messages whose event belonged to a rolled-back transaction.
    pub published_from_rolled_back: usize,
    /// Messages carrying an event id already seen.
    pub duplicates: usize,
    /// Messages that arrived with a position lower than one already seen for
    /// their key.
    pub per_key_order_violations: usize,
    /// Wall time from the first write to the last message read back.
    pub elapsed_ms: u64,
}

/// One message read back: its event id, key and position.
struct Delivered {
    event_id: String,
    key: String,
    seq: i64,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.keys == 0 || args.events == 0 {
        return Err(Error::invalid_input(
            "--events and --keys must be at least 1",
        ));
    }
    let started = Instant::now();
    let dir = demo_dir()?;

    let (store_url, schema) = match &args.database_url {
        Some(url) => (url.clone(), Identifier::new(&demo_schema_name())?),
        None => (
            format!("sqlite://{}", dir.join("outbox.db").display()),
            Identifier::new("outbox")?,
        ),
    };
    let options = StoreOptions {
        schema: schema.clone(),
        ..StoreOptions::default()
    };
    let store = AnyStore::connect(&store_url, options).await?;
    store.migrate().await?;
    create_orders_table(&store).await?;

    let outcome = demo(&args, &store, &store_url, &dir, started).await;
    if args.database_url.is_some() {
        drop_schema(&store, &schema).await?;
    }
    let summary = outcome?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("plain struct serializes")
        );
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Writes, relays and reads back; the caller cleans up whatever the outcome.
async fn demo(
    args: &DemoArgs,
    store: &AnyStore,
    store_url: &str,
    dir: &std::path::Path,
    started: Instant,
) -> Result<Summary> {
    let (publisher, output, stream) = open_publisher(args, dir).await?;
    let config = RelayConfig {
        poll_interval: Duration::from_millis(if args.database_url.is_some() {
            1000
        } else {
            20
        }),
        ..RelayConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = Relay::new(store.clone(), publisher, config);
    let relay = tokio::spawn(relay.run(async { stopped.await.unwrap_or(()) }));

    let (committed, rolled_back) = write_orders(store, args.events, args.keys).await?;
    wait_until_drained(store).await?;
    let _ = stop.send(());
    relay.await.map_err(|e| {
        Error::new(outbox::ErrorKind::Storage, "relay task failed").with_source(e)
    })??;

    let delivered = match &stream {
        #[cfg(feature = "nats")]
        Some(name) => read_stream(args.nats_url.as_deref().unwrap_or_default(), name).await?,
        _ => read_file(&output)?,
    };
    Ok(summarize(
        store_url,
        output,
        stream,
        &committed,
        &rolled_back,
        &delivered,
        started,
    ))
}

fn demo_dir() -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("outbox-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::config(format!("cannot create demo directory {}", dir.display())).with_source(e)
    })?;
    Ok(dir)
}

fn demo_schema_name() -> String {
    let id = EventId::new().to_string().replace('-', "");
    format!("outbox_demo_{}", &id[id.len() - 12..])
}

async fn create_orders_table(store: &AnyStore) -> Result<()> {
    match store {
        #[cfg(feature = "postgres")]
        AnyStore::Postgres(s) => {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {}.demo_orders \
                 (id text PRIMARY KEY, version bigint NOT NULL)",
                s.schema().quoted()
            );
            sqlx_exec_pg(s, sql).await
        }
        #[cfg(feature = "sqlite")]
        AnyStore::Sqlite(s) => sqlx::query(
            "CREATE TABLE IF NOT EXISTS demo_orders \
                 (id TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        )
        .execute(s.pool())
        .await
        .map(drop)
        .map_err(outbox::sqlite::map_error),
        #[allow(unreachable_patterns)]
        _ => Err(Error::config("the demo does not support this store")),
    }
}

#[cfg(feature = "postgres")]
async fn sqlx_exec_pg(store: &outbox::postgres::PgStore, sql: String) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .map(drop)
        .map_err(outbox::postgres::map_error)
}

async fn drop_schema(store: &AnyStore, schema: &Identifier) -> Result<()> {
    #[cfg(feature = "postgres")]
    if let AnyStore::Postgres(s) = store {
        return sqlx_exec_pg(s, format!("DROP SCHEMA {} CASCADE", schema.quoted())).await;
    }
    let _ = (store, schema);
    Ok(())
}

async fn open_publisher(
    args: &DemoArgs,
    dir: &std::path::Path,
) -> Result<(AnyPublisher, String, Option<String>)> {
    #[cfg(feature = "nats")]
    if let Some(url) = &args.nats_url {
        // Subjects under the stream's own name, so the demo's stream overlaps no
        // other stream on the server.
        let prefix = subject_prefix(&args.nats_stream)?;
        let options = outbox_nats::NatsOptions {
            url: url.clone(),
            subject_template: format!("{prefix}.{{stream}}.{{type}}"),
            ..Default::default()
        };
        let publisher = outbox_nats::NatsPublisher::connect(options).await?;
        reset_stream(url, &args.nats_stream).await?;
        let subjects = [format!("{prefix}.>")];
        publisher
            .ensure_stream(&args.nats_stream, &subjects, Duration::ZERO)
            .await?;
        let output = format!("nats:{}", args.nats_stream);
        return Ok((
            AnyPublisher::Nats(Box::new(publisher)),
            output,
            Some(args.nats_stream.clone()),
        ));
    }
    #[cfg(not(feature = "nats"))]
    if args.nats_url.is_some() {
        return Err(Error::config("this build has no nats publisher"));
    }

    let path = dir.join("events.jsonl");
    let publisher = outbox_file::FilePublisher::open(&path, Default::default())?;
    Ok((
        AnyPublisher::File(publisher),
        path.display().to_string(),
        None,
    ))
}

/// The subject token for a JetStream stream name: the name in lowercase.
#[cfg(feature = "nats")]
fn subject_prefix(stream: &str) -> Result<String> {
    let token = stream.to_lowercase();
    let valid = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(token)
    } else {
        Err(Error::invalid_input(format!(
            "invalid --nats-stream {stream:?}: expected ASCII letters, digits, `_` or `-`"
        )))
    }
}

/// Writes `events` transactions over `keys` orders through the Unit of Work;
/// every seventh is rolled back after its event was recorded. Returns the ids
/// of committed and of rolled-back events.
async fn write_orders(
    store: &AnyStore,
    events: usize,
    keys: usize,
) -> Result<(HashSet<String>, HashSet<String>)> {
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    let mut versions: HashMap<usize, i64> = HashMap::new();

    for i in 0..events {
        let order = i % keys;
        let version = versions.get(&order).copied().unwrap_or(0) + 1;
        let event_type = if version == 1 {
            "order.created"
        } else {
            "order.updated"
        };
        let key = format!("order-{order}");
        let event = NewEvent::json(
            "orders",
            &key,
            event_type,
            &json!({"order": key, "version": version}),
        )?;
        let id = event.event_id().to_string();
        let roll_back = i % 7 == 6;

        match store {
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => {
                let mut uow = UnitOfWork::begin(s).await?;
                let sql = format!(
                    "INSERT INTO {}.demo_orders VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    s.schema().quoted()
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&key)
                    .bind(version)
                    .execute(uow.connection())
                    .await
                    .map_err(outbox::postgres::map_error)?;
                uow.record(event);
                if roll_back {
                    uow.rollback().await?
                } else {
                    uow.commit().await.map(drop)?
                }
            }
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => {
                let mut uow = UnitOfWork::begin(s).await?;
                sqlx::query(
                    "INSERT INTO demo_orders VALUES (?, ?) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                )
                .bind(&key)
                .bind(version)
                .execute(uow.connection())
                .await
                .map_err(outbox::sqlite::map_error)?;
                uow.record(event);
                if roll_back {
                    uow.rollback().await?
                } else {
                    uow.commit().await.map(drop)?
                }
            }
            #[allow(unreachable_patterns)]
            _ => return Err(Error::config("the demo does not support this store")),
        }

        if roll_back {
            rolled_back.insert(id);
        } else {
            versions.insert(order, version);
            committed.insert(id);
        }
    }
    Ok((committed, rolled_back))
}

async fn wait_until_drained(store: &AnyStore) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.status().await?.pending > 0 {
        if Instant::now() > deadline {
            return Err(Error::new(
                outbox::ErrorKind::Transient,
                "the relay did not drain the outbox within 120 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn read_file(path: &str) -> Result<Vec<Delivered>> {
    Ok(outbox_file::read_events(path)?
        .into_iter()
        .map(|e| Delivered {
            event_id: e.event_id.to_string(),
            key: e.key,
            seq: e.seq,
        })
        .collect())
}

#[cfg(feature = "nats")]
fn nats_error(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
    move |e| Error::new(outbox::ErrorKind::Unavailable, what).with_source(e)
}

#[cfg(feature = "nats")]
async fn reset_stream(url: &str, name: &str) -> Result<()> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| nats_error("cannot connect to nats")(e.into()))?;
    let js = async_nats::jetstream::new(client);
    // A missing stream is what we want; any other failure shows up on create.
    let _ = js.delete_stream(name).await;
    Ok(())
}

/// Reads every message of the stream through an ordered consumer of its own.
#[cfg(feature = "nats")]
async fn read_stream(url: &str, name: &str) -> Result<Vec<Delivered>> {
    use futures_util::StreamExt;

    let client = async_nats::connect(url)
        .await
        .map_err(|e| nats_error("cannot connect to nats")(e.into()))?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| nats_error("cannot open the stream")(e.into()))?;
    let total = stream
        .info()
        .await
        .map_err(|e| nats_error("cannot read the stream")(e.into()))?
        .state
        .messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| nats_error("cannot create a consumer")(e.into()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats_error("cannot consume")(e.into()))?;

    let mut delivered = Vec::new();
    while (delivered.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            return Err(Error::new(
                outbox::ErrorKind::Unavailable,
                "reading the stream back stalled",
            ));
        };
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        delivered.push(Delivered {
            event_id: header("Nats-Msg-Id").unwrap_or_default(),
            key: header("ce-partitionkey").unwrap_or_default(),
            seq: header("ce-sequence")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        });
    }
    Ok(delivered)
}

fn summarize(
    store: &str,
    output: String,
    stream: Option<String>,
    committed: &HashSet<String>,
    rolled_back: &HashSet<String>,
    delivered: &[Delivered],
    started: Instant,
) -> Summary {
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    let (mut duplicates, mut from_rolled_back, mut violations) = (0, 0, 0);

    for d in delivered {
        if !seen.insert(d.event_id.as_str()) {
            duplicates += 1;
            continue;
        }
        if rolled_back.contains(&d.event_id) {
            from_rolled_back += 1;
        }
        let last = last_seq.entry(d.key.as_str()).or_insert(0);
        if d.seq <= *last {
            violations += 1;
        }
        *last = (*last).max(d.seq);
    }
    let missing = committed
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .count();

    Summary {
        store: redact(store),
        output,
        stream,
        committed_events: committed.len(),
        rolled_back_events: rolled_back.len(),
        published: delivered.len(),
        missing,
        published_from_rolled_back: from_rolled_back,
        duplicates,
        per_key_order_violations: violations,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (auth, host) = rest.split_once('@')?;
        let user = auth.split(':').next().unwrap_or("");
        Some(format!("{scheme}://{user}@{host}"))
    }) {
        Some(clean) => clean,
        None => url.to_owned(),
    }
}

fn print_summary(s: &Summary) {
    println!(
        "outbox demo: {} transactions through the Unit of Work",
        s.committed_events + s.rolled_back_events
    );
    println!("  store:                      {}", s.store);
    println!("  output:                     {}", s.output);
    println!("  committed events:           {}", s.committed_events);
    println!("  rolled back on purpose:     {}", s.rolled_back_events);
    println!("  published (read back):      {}", s.published);
    println!("  missing:                    {}", s.missing);
    println!(
        "  from rolled-back txs:       {}",
        s.published_from_rolled_back
    );
    println!("  duplicates:                 {}", s.duplicates);
    println!(
        "  per-key order violations:   {}",
        s.per_key_order_violations
    );
    println!("  elapsed:                    {} ms", s.elapsed_ms);
}

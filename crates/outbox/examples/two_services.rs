//! Two services joined by the outbox and the inbox.
//!
//! The order service places orders through a unit of work: the order row and its
//! `order.placed` event commit together, and every tenth order's card is declined
//! after the row was written, so that unit of work rolls back. A relay publishes
//! the committed events. The shipping service consumes them through its inbox and
//! writes one shipment per order into its own database.
//!
//! On the embedded default (two SQLite files and a file of events, in a fresh
//! temporary directory):
//!
//! ```text
//! cargo run -p outbox --example two_services
//! ```
//!
//! On PostgreSQL and NATS JetStream (schemas `orders_example` and
//! `shipping_example`, and a stream `EXAMPLE_ORDERS`, all recreated):
//!
//! ```text
//! cargo run -p outbox --example two_services -- \
//!     postgres://postgres@127.0.0.1:5432/test nats://127.0.0.1:4222
//! ```
//!
//! It exits with status 1 unless every committed order has exactly one shipment
//! and no declined order has any.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use outbox::inbox::{Handler, Inbox, InboxRunner, InboxStats};
use outbox::postgres::{PgInbox, PgOptions, PgStore};
use outbox::sqlite::{SqliteInbox, SqliteStore};
use outbox::{
    BoxFuture, Consumer, Error, Identifier, NewEvent, Publisher, ReceivedEvent, Relay, RelayConfig,
    RelayStore, Result, TransactionalStore, UnitOfWork,
};
use outbox_file::{FileConsumer, FileOptions, FilePublisher};
use outbox_nats::{NatsConsumer, NatsConsumerOptions, NatsOptions, NatsPublisher};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, SqliteConnection};
use tokio::sync::Notify;

/// How many orders the order service places.
const ORDERS: i64 = 200;

/// The body of `order.placed`.
#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
    total_cents: i64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [] => embedded().await?,
        [database_url, nats_url] => servers(database_url, nats_url).await?,
        _ => {
            return Err(Error::config("usage: two_services [POSTGRES_URL NATS_URL]"));
        }
    };

    println!("orders committed: {}", outcome.committed.len());
    println!("orders declined:  {}", outcome.declined.len());
    println!("shipments:        {}", outcome.shipped.len());
    println!(
        "inbox: {} applied, {} duplicates",
        outcome.inbox.applied, outcome.inbox.duplicates
    );
    let declined_shipped = outcome.shipped.intersection(&outcome.declined).count();
    if outcome.shipped != outcome.committed || declined_shipped > 0 {
        eprintln!("shipments do not match the committed orders");
        std::process::exit(1);
    }
    println!("every committed order shipped once; no declined order shipped");
    Ok(())
}

/// What the two services ended with.
struct Outcome {
    committed: BTreeSet<i64>,
    declined: BTreeSet<i64>,
    shipped: BTreeSet<i64>,
    inbox: InboxStats,
}

/// SQLite for both services, a file as the broker.
async fn embedded() -> Result<Outcome> {
    let dir = std::env::temp_dir().join(format!("outbox-two-services-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::config("cannot create the example's directory").with_source(e))?;
    println!("files in {}", dir.display());
    let sqlite = |name: &str| format!("sqlite://{}", dir.join(name).display());

    let orders = SqliteStore::connect(&sqlite("orders.db"), Default::default()).await?;
    orders.migrate().await?;
    execute_sqlite(&orders, ORDERS_TABLE).await?;
    let shipping = SqliteStore::connect(&sqlite("shipping.db"), Default::default()).await?;
    shipping.migrate().await?;
    execute_sqlite(&shipping, SHIPMENTS_TABLE).await?;

    let events = dir.join("events.jsonl");
    let publisher = FilePublisher::open(&events, FileOptions::default())?;
    let consumer = FileConsumer::open(&events).await?;
    let inbox = SqliteInbox::new(&shipping, "shipping", Shipping)?;

    let shipped = || async {
        sqlx::query_scalar("SELECT order_id FROM shipments")
            .fetch_all(shipping.pool())
            .await
            .map_err(outbox::sqlite::map_error)
    };
    run(orders, publisher, consumer, inbox, shipped).await
}

/// PostgreSQL for both services, each in a schema of its own; NATS as the broker.
async fn servers(database_url: &str, nats_url: &str) -> Result<Outcome> {
    let store = |schema: &str| {
        let options = PgOptions {
            schema: Identifier::new(schema).expect("a valid schema name"),
            ..PgOptions::default()
        };
        PgStore::connect(database_url, options)
    };
    let orders = store("orders_example").await?;
    let shipping = store("shipping_example").await?;
    for (service, table) in [(&orders, ORDERS_TABLE), (&shipping, SHIPMENTS_TABLE)] {
        let schema = service.schema().quoted();
        execute_pg(service, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
        service.migrate().await?;
        execute_pg(service, &format!("SET search_path TO {schema}; {table}")).await?;
    }

    let publisher = NatsPublisher::connect(NatsOptions {
        url: nats_url.to_owned(),
        subject_template: "example.{stream}.{type}".into(),
        ..NatsOptions::default()
    })
    .await?;
    let client = async_nats::connect(nats_url).await.map_err(|e| {
        Error::new(outbox::ErrorKind::Unavailable, "cannot reach nats").with_source(e)
    })?;
    // The stream may not exist yet; either way it is created afresh below.
    let _ = async_nats::jetstream::new(client)
        .delete_stream("EXAMPLE_ORDERS")
        .await;
    publisher
        .ensure_stream(
            "EXAMPLE_ORDERS",
            &["example.orders.>"],
            Duration::from_secs(120),
        )
        .await?;
    let consumer = NatsConsumer::connect(NatsConsumerOptions {
        url: nats_url.to_owned(),
        stream: "EXAMPLE_ORDERS".into(),
        durable: "shipping".into(),
        ..NatsConsumerOptions::default()
    })
    .await?;
    let inbox = PgInbox::new(&shipping, "shipping", Shipping)?;

    let shipped = || async {
        let sql = format!(
            "SELECT order_id FROM {}.shipments",
            shipping.schema().quoted()
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(shipping.pool())
            .await
            .map_err(outbox::postgres::map_error)
    };
    run(orders, publisher, consumer, inbox, shipped).await
}

const ORDERS_TABLE: &str = "CREATE TABLE IF NOT EXISTS orders \
    (id BIGINT PRIMARY KEY, total_cents BIGINT NOT NULL)";

const SHIPMENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS shipments \
    (order_id BIGINT PRIMARY KEY, total_cents BIGINT NOT NULL)";

async fn execute_sqlite(store: &SqliteStore, sql: &str) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .map_err(outbox::sqlite::map_error)?;
    Ok(())
}

async fn execute_pg(store: &PgStore, sql: &str) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .map_err(outbox::postgres::map_error)?;
    Ok(())
}

/// Runs the relay and the shipping service while the order service places its
/// orders, and stops both once every committed order has shipped.
async fn run<S, P, C, I, F, Fut>(
    orders: S,
    publisher: P,
    consumer: C,
    inbox: I,
    shipped: F,
) -> Result<Outcome>
where
    S: OrderService + RelayStore + Clone + 'static,
    P: Publisher + 'static,
    C: Consumer + 'static,
    I: Inbox,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<i64>>>,
{
    let stop = Arc::new(Notify::new());
    let stopped = |stop: &Arc<Notify>| {
        let stop = stop.clone();
        async move { stop.notified().await }
    };
    let relay_config = RelayConfig {
        poll_interval: Duration::from_millis(50),
        ..RelayConfig::default()
    };
    let relay =
        tokio::spawn(Relay::new(orders.clone(), publisher, relay_config).run(stopped(&stop)));
    let shipping = tokio::spawn(InboxRunner::new(consumer, inbox).run(stopped(&stop)));

    let mut committed = BTreeSet::new();
    let mut declined = BTreeSet::new();
    for order_id in 1..=ORDERS {
        let card_ok = order_id % 10 != 0;
        if place_order(&orders, order_id, card_ok).await? {
            committed.insert(order_id);
        } else {
            declined.insert(order_id);
        }
    }

    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if shipped().await?.len() >= committed.len() {
                return Ok::<_, Error>(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    stop.notify_waiters();
    let task_failed = |e| Error::new(outbox::ErrorKind::Storage, "a task failed").with_source(e);
    relay.await.map_err(task_failed)??;
    let inbox = shipping.await.map_err(task_failed)??;
    if waited.is_err() {
        eprintln!("not every committed order shipped within 60 s");
    }

    Ok(Outcome {
        committed,
        declined,
        shipped: shipped().await?.into_iter().collect(),
        inbox,
    })
}

/// Places one order in a unit of work; a declined card drops it before commit.
/// Returns whether the order committed.
async fn place_order<S: OrderService>(store: &S, order_id: i64, card_ok: bool) -> Result<bool> {
    let total_cents = 500 + order_id * 7;
    let mut uow = UnitOfWork::begin(store).await?;
    S::insert_order(uow.connection(), order_id, total_cents).await?;
    uow.record(NewEvent::json(
        "orders",
        format!("order-{order_id}"),
        "order.placed",
        &OrderPlaced {
            order_id,
            total_cents,
        },
    )?);

    if !card_ok {
        // Dropping the unit of work rolls back the row and the event.
        return Ok(false);
    }
    uow.commit().await?;
    Ok(true)
}

/// The order service's one write, in each store's SQL.
trait OrderService: TransactionalStore {
    fn insert_order(
        conn: &mut <Self::Database as sqlx::Database>::Connection,
        order_id: i64,
        total_cents: i64,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl OrderService for SqliteStore {
    async fn insert_order(conn: &mut SqliteConnection, order_id: i64, total: i64) -> Result<()> {
        sqlx::query("INSERT INTO orders (id, total_cents) VALUES (?1, ?2)")
            .bind(order_id)
            .bind(total)
            .execute(conn)
            .await
            .map_err(outbox::sqlite::map_error)?;
        Ok(())
    }
}

impl OrderService for PgStore {
    async fn insert_order(conn: &mut PgConnection, order_id: i64, total: i64) -> Result<()> {
        sqlx::query("INSERT INTO orders_example.orders (id, total_cents) VALUES ($1, $2)")
            .bind(order_id)
            .bind(total)
            .execute(conn)
            .await
            .map_err(outbox::postgres::map_error)?;
        Ok(())
    }
}

/// The shipping service's handler: one shipment row per placed order.
struct Shipping;

impl Shipping {
    fn order(event: &ReceivedEvent) -> Result<OrderPlaced> {
        serde_json::from_slice(event.payload.as_bytes()).map_err(|e| {
            Error::new(outbox::ErrorKind::Permanent, "order.placed has a bad body").with_source(e)
        })
    }
}

impl Handler<SqliteConnection> for Shipping {
    fn handle<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        event: &'a ReceivedEvent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let order = Shipping::order(event)?;
            sqlx::query("INSERT INTO shipments (order_id, total_cents) VALUES (?1, ?2)")
                .bind(order.order_id)
                .bind(order.total_cents)
                .execute(conn)
                .await
                .map_err(outbox::sqlite::map_error)?;
            Ok(())
        })
    }
}

impl Handler<PgConnection> for Shipping {
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a ReceivedEvent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let order = Shipping::order(event)?;
            sqlx::query(
                "INSERT INTO shipping_example.shipments (order_id, total_cents) VALUES ($1, $2)",
            )
            .bind(order.order_id)
            .bind(order.total_cents)
            .execute(conn)
            .await
            .map_err(outbox::postgres::map_error)?;
            Ok(())
        })
    }
}

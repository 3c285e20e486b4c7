//! The inbox against real stores and a real broker: events published to
//! JetStream, consumed by a durable consumer, applied through the PostgreSQL and
//! SQLite inboxes. Each effect is a row; the tests count rows, not calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use futures::StreamExt;
use outbox::inbox::{Handler, Inbox, InboxConfig, InboxRunner, InboxStats};
use outbox::postgres::{PgInbox, PgOptions, PgStore, map_error as pg_error};
use outbox::sqlite::{SqliteInbox, SqliteStore, map_error as sqlite_error};
use outbox::{
    Acknowledge, BoxFuture, Consumer, Delivery, Error, ErrorKind, Event, EventId, Payload,
    Publisher, ReceivedEvent, RetryPolicy,
};
use outbox_nats::{NatsConsumer, NatsConsumerOptions, NatsOptions, NatsPublisher};
use outbox_testkit::{NatsFixture, PgSchema, SqliteFile};
use sqlx::{AssertSqlSafe, PgConnection, SqliteConnection};
use tokio::sync::Notify;

const KEYS: usize = 50;
const PER_KEY: i64 = 20;

/// `KEYS` × `PER_KEY` events of stream `orders`, each key's in order.
fn events() -> Vec<Event> {
    let mut events = Vec::new();
    for seq in 1..=PER_KEY {
        for k in 0..KEYS {
            events.push(Event {
                id: events.len() as i64 + 1,
                event_id: EventId::new(),
                stream: "orders".into(),
                key: format!("order-{k}"),
                seq,
                partition: 0,
                event_type: "order.placed".into(),
                payload: Payload::bytes("application/json", format!("{{\"seq\":{seq}}}")),
                headers: Default::default(),
                created_at: Utc::now(),
                attempts: 0,
            });
        }
    }
    events
}

/// A stream of the fixture's name with a 100 ms deduplication window, so that
/// publishing the same events again after a pause stores them a second time.
async fn stream_with_short_window(nats: &NatsFixture) -> String {
    let subject = format!("{}.>", nats.stream.to_lowercase());
    nats.jetstream
        .create_stream(stream::Config {
            name: nats.stream.clone(),
            subjects: vec![subject],
            duplicate_window: Duration::from_millis(100),
            ..stream::Config::default()
        })
        .await
        .expect("create stream");
    nats.stream.clone()
}

/// Publishes as the relay does: one event of a key at a time, keys concurrently.
async fn publish(nats: &NatsFixture, events: &[Event]) {
    let publisher = NatsPublisher::connect(NatsOptions {
        url: nats.url.clone(),
        subject_template: format!("{}.{{type}}", nats.stream.to_lowercase()),
        ..NatsOptions::default()
    })
    .await
    .expect("connect publisher");
    let mut by_key: HashMap<&str, Vec<&Event>> = HashMap::new();
    for event in events {
        by_key.entry(&event.key).or_default().push(event);
    }
    futures::stream::iter(by_key.into_values())
        .for_each_concurrent(None, |key_events| {
            let publisher = &publisher;
            async move {
                for event in key_events {
                    publisher.publish(event).await.expect("publish");
                }
            }
        })
        .await;
}

async fn stored_messages(nats: &NatsFixture) -> u64 {
    let mut stream = nats.jetstream.get_stream(&nats.stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

fn consumer_options(nats: &NatsFixture) -> NatsConsumerOptions {
    NatsConsumerOptions {
        url: nats.url.clone(),
        stream: nats.stream.clone(),
        durable: "shipping".into(),
        ack_wait: Duration::from_secs(10),
        max_ack_pending: 256,
        ..NatsConsumerOptions::default()
    }
}

fn config() -> InboxConfig {
    InboxConfig {
        max_unsettled: 128,
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            multiplier: 2.0,
        },
        ..InboxConfig::default()
    }
}

/// Runs the inbox until `done` says the work is complete, or fails after 60 s.
async fn run_until<C, I>(consumer: C, inbox: I, done: impl AsyncFn() -> bool) -> InboxStats
where
    C: Consumer + 'static,
    I: Inbox,
{
    let stop = Arc::new(Notify::new());
    let runner = tokio::spawn({
        let stop = stop.clone();
        InboxRunner::new(consumer, inbox)
            .with_config(config())
            .run(async move { stop.notified().await })
    });
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    stop.notify_one();
    let stats = runner.await.unwrap().unwrap();
    finished.expect("the inbox did not finish within 60 s");
    stats
}

/// Fails the first try of every event whose key ends in `7`, after writing its
/// effect, so that the test sees whether the rollback took the effect along.
#[derive(Default)]
struct Tries {
    per_event: std::sync::Mutex<HashMap<EventId, u32>>,
}

impl Tries {
    fn fail_first(&self, event: &ReceivedEvent) -> outbox::Result<()> {
        let mut tries = self.per_event.lock().unwrap();
        let n = tries.entry(event.event_id).or_default();
        *n += 1;
        if event.key.ends_with('7') && *n == 1 {
            return Err(Error::new(ErrorKind::Transient, "shipping is busy"));
        }
        Ok(())
    }

    fn total(&self) -> u32 {
        self.per_event.lock().unwrap().values().sum()
    }
}

/// Writes one shipment row per event into the PostgreSQL test schema.
struct PgShipping {
    insert: String,
    tries: Arc<Tries>,
}

impl Handler<PgConnection> for PgShipping {
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a ReceivedEvent,
    ) -> BoxFuture<'a, outbox::Result<()>> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(self.insert.as_str()))
                .bind(event.event_id.as_uuid())
                .bind(&event.key)
                .bind(event.seq)
                .execute(&mut *conn)
                .await
                .map_err(pg_error)?;
            self.tries.fail_first(event)
        })
    }
}

/// Writes one shipment row per event into the SQLite test database.
struct SqliteShipping {
    tries: Arc<Tries>,
}

impl Handler<SqliteConnection> for SqliteShipping {
    fn handle<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        event: &'a ReceivedEvent,
    ) -> BoxFuture<'a, outbox::Result<()>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO shipments (event_id, key, seq) VALUES (?1, ?2, ?3)")
                .bind(event.event_id.to_string())
                .bind(&event.key)
                .bind(event.seq)
                .execute(&mut *conn)
                .await
                .map_err(sqlite_error)?;
            self.tries.fail_first(event)
        })
    }
}

/// The shipments as (key, seq) in the order they were written.
type Effects = Vec<(String, i64)>;

/// One store under test: its inbox and a way to read the effects back.
trait Store {
    type Inbox: Inbox;
    fn inbox(&self, tries: Arc<Tries>) -> Self::Inbox;
    async fn effects(&self) -> Effects;
    async fn recorded(&self) -> i64;
}

struct Pg {
    store: PgStore,
    db: PgSchema,
}

impl Pg {
    async fn new(test: &str) -> Option<Pg> {
        let db = outbox_testkit::pg(test).await?;
        let store = PgStore::new(
            db.pool.clone(),
            PgOptions {
                schema: db.schema.clone(),
                ..PgOptions::default()
            },
        );
        store.migrate().await.unwrap();
        let q = db.schema.quoted();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {q}.shipments (n bigserial PRIMARY KEY, event_id uuid NOT NULL, \
             key text NOT NULL, seq bigint NOT NULL)"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        Some(Pg { store, db })
    }
}

impl Store for Pg {
    type Inbox = PgInbox<PgShipping>;

    fn inbox(&self, tries: Arc<Tries>) -> Self::Inbox {
        let insert = format!(
            "INSERT INTO {}.shipments (event_id, key, seq) VALUES ($1, $2, $3)",
            self.db.schema.quoted()
        );
        PgInbox::new(&self.store, "shipping", PgShipping { insert, tries }).unwrap()
    }

    async fn effects(&self) -> Effects {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT key, seq FROM {}.shipments ORDER BY n",
            self.db.schema.quoted()
        )))
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    async fn recorded(&self) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.inbox WHERE consumer = 'shipping'",
            self.db.schema.quoted()
        )))
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

struct Lite {
    store: SqliteStore,
    _file: SqliteFile,
}

impl Lite {
    async fn new() -> Lite {
        let file = SqliteFile::new();
        let store = SqliteStore::new(file.pool().await, Default::default());
        store.migrate().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE shipments (n INTEGER PRIMARY KEY AUTOINCREMENT, \
             event_id TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        Lite { store, _file: file }
    }
}

impl Store for Lite {
    type Inbox = SqliteInbox<SqliteShipping>;

    fn inbox(&self, tries: Arc<Tries>) -> Self::Inbox {
        SqliteInbox::new(&self.store, "shipping", SqliteShipping { tries }).unwrap()
    }

    async fn effects(&self) -> Effects {
        sqlx::query_as("SELECT key, seq FROM shipments ORDER BY n")
            .fetch_all(self.store.pool())
            .await
            .unwrap()
    }

    async fn recorded(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox_inbox WHERE consumer = 'shipping'")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

/// Every event's effect exactly once.
fn assert_exactly_once(effects: &Effects) {
    assert_eq!(
        effects.len(),
        KEYS * PER_KEY as usize,
        "one effect per event"
    );
    let mut distinct = effects.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), effects.len(), "an event applied twice");
}

/// Every event's effect exactly once, and each key's effects in order.
fn assert_exactly_once_in_order(effects: &Effects) {
    assert_exactly_once(effects);
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (key, seq) in effects {
        let previous = last.insert(key, *seq).unwrap_or(0);
        assert_eq!(*seq, previous + 1, "key {key} applied out of order");
    }
}

/// Publishes the events twice, as a broker without deduplication would deliver
/// them, and checks that each is applied once.
async fn delivered_twice_applied_once(store: impl Store, test: &str) {
    let Some(nats) = outbox_testkit::nats(test).await else {
        return;
    };
    stream_with_short_window(&nats).await;
    let events = events();
    publish(&nats, &events).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&nats, &events).await;
    assert_eq!(stored_messages(&nats).await, 2 * events.len() as u64);

    let tries = Arc::new(Tries::default());
    let consumer = NatsConsumer::connect(consumer_options(&nats))
        .await
        .unwrap();
    let stats = run_until(consumer, store.inbox(tries.clone()), async || {
        store.recorded().await == events.len() as i64
    })
    .await;

    let consumer = NatsConsumer::connect(consumer_options(&nats))
        .await
        .unwrap();
    let rest = run_until(consumer, store.inbox(tries.clone()), async || {
        pending_acks(&nats).await == 0
    })
    .await;

    assert_eq!(stats.applied + rest.applied, events.len() as u64);
    // A message redelivered while its first copy was still being handled adds a
    // duplicate; at least every second copy is one.
    assert!(stats.duplicates + rest.duplicates >= events.len() as u64);
    assert_exactly_once_in_order(&store.effects().await);
    nats.drop().await;
}

/// Messages delivered or waiting and not yet acknowledged by the durable consumer.
async fn pending_acks(nats: &NatsFixture) -> u64 {
    let stream = nats.jetstream.get_stream(&nats.stream).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("shipping").await.unwrap();
    let info = consumer.info().await.unwrap();
    info.num_pending + info.num_ack_pending as u64
}

/// Settles deliveries normally until `limit` acks, then stops acknowledging and
/// asks the runner to stop: the consumer "dies" between commit and ack.
struct DiesAfterAcks<C> {
    inner: C,
    acks_left: Arc<AtomicU32>,
    died: Arc<Notify>,
}

struct MaybeAck {
    inner: Delivery,
    acks_left: Arc<AtomicU32>,
    died: Arc<Notify>,
}

impl Acknowledge for MaybeAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, outbox::Result<()>> {
        Box::pin(async move {
            let alive = self
                .acks_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if alive {
                self.inner.ack().await
            } else {
                self.died.notify_one();
                // The commit happened; the ack never reaches the broker.
                Ok(())
            }
        })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, outbox::Result<()>> {
        Box::pin(async move { self.inner.reject().await })
    }
}

impl<C: Consumer> Consumer for DiesAfterAcks<C> {
    fn name(&self) -> &'static str {
        "dies-after-acks"
    }

    async fn next(&mut self) -> outbox::Result<Option<Delivery>> {
        let Some(delivery) = self.inner.next().await? else {
            return Ok(None);
        };
        let event = delivery
            .event()
            .cloned()
            .map_err(|e| Error::new(e.kind(), "malformed"));
        let ack = MaybeAck {
            inner: delivery,
            acks_left: self.acks_left.clone(),
            died: self.died.clone(),
        };
        Ok(Some(Delivery::decoded(event, ack)))
    }
}

/// A consumer stops acknowledging after 400 commits; a new one takes over and
/// gets the committed-but-unacknowledged messages again.
/// The new consumer resumes at the ack floor, so each key's effects stay in order.
async fn killed_between_commit_and_ack(store: impl Store, test: &str) {
    let Some(nats) = outbox_testkit::nats(test).await else {
        return;
    };
    stream_with_short_window(&nats).await;
    let events = events();
    publish(&nats, &events).await;
    let tries = Arc::new(Tries::default());

    let died = Arc::new(Notify::new());
    let dying = DiesAfterAcks {
        inner: NatsConsumer::connect(consumer_options(&nats))
            .await
            .unwrap(),
        acks_left: Arc::new(AtomicU32::new(400)),
        died: died.clone(),
    };
    let first = InboxRunner::new(dying, store.inbox(tries.clone()))
        .with_config(config())
        .run(async move { died.notified().await });
    let first = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("first consumer stops")
        .unwrap();
    assert!(first.applied + first.duplicates >= 400, "{first:?}");
    assert!(
        store.recorded().await > 400,
        "some commits were left unacknowledged"
    );

    let consumer = NatsConsumer::connect(consumer_options(&nats))
        .await
        .unwrap();
    let second = run_until(consumer, store.inbox(tries.clone()), async || {
        pending_acks(&nats).await == 0
    })
    .await;

    assert!(
        second.duplicates > 0,
        "the unacknowledged commits came again"
    );
    assert_eq!(first.applied + second.applied, events.len() as u64);
    assert_exactly_once_in_order(&store.effects().await);
    nats.drop().await;
}

/// A handler error rolls back the effect and the record, and the event is tried
/// again: the failing keys' events run twice but leave one effect each.
async fn handler_error_rolls_back(store: impl Store, test: &str) {
    let Some(nats) = outbox_testkit::nats(test).await else {
        return;
    };
    stream_with_short_window(&nats).await;
    let events = events();
    publish(&nats, &events).await;
    let tries = Arc::new(Tries::default());

    let consumer = NatsConsumer::connect(consumer_options(&nats))
        .await
        .unwrap();
    let stats = run_until(consumer, store.inbox(tries.clone()), async || {
        pending_acks(&nats).await == 0
    })
    .await;

    let failing = events.iter().filter(|e| e.key.ends_with('7')).count() as u64;
    assert!(failing > 0);
    assert_eq!(stats.failures, failing);
    assert_eq!(u64::from(tries.total()), events.len() as u64 + failing);
    assert_eq!(store.recorded().await, events.len() as i64);
    assert_exactly_once_in_order(&store.effects().await);
    nats.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_applies_events_delivered_twice_once() {
    let Some(pg) = Pg::new("postgres_applies_events_delivered_twice_once").await else {
        return;
    };
    delivered_twice_applied_once(pg, "postgres_applies_events_delivered_twice_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_applies_events_delivered_twice_once() {
    delivered_twice_applied_once(
        Lite::new().await,
        "sqlite_applies_events_delivered_twice_once",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_a_consumer_killed_between_commit_and_ack() {
    let test = "postgres_survives_a_consumer_killed_between_commit_and_ack";
    let Some(pg) = Pg::new(test).await else {
        return;
    };
    killed_between_commit_and_ack(pg, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_a_consumer_killed_between_commit_and_ack() {
    let test = "sqlite_survives_a_consumer_killed_between_commit_and_ack";
    killed_between_commit_and_ack(Lite::new().await, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_handler_error_rolls_back_effect_and_record() {
    let test = "postgres_handler_error_rolls_back_effect_and_record";
    let Some(pg) = Pg::new(test).await else {
        return;
    };
    handler_error_rolls_back(pg, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handler_error_rolls_back_effect_and_record() {
    let test = "sqlite_handler_error_rolls_back_effect_and_record";
    handler_error_rolls_back(Lite::new().await, test).await;
}

#[tokio::test]
async fn pruning_removes_only_old_records() {
    let lite = Lite::new().await;
    let inbox = lite.inbox(Arc::default());
    let event = ReceivedEvent::from_event(&events()[0], "/test");
    inbox.process(&event).await.unwrap();

    assert_eq!(inbox.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(inbox.prune(Duration::from_millis(10)).await.unwrap(), 1);
    assert!(!inbox.contains(event.event_id).await.unwrap());
}

#[tokio::test]
async fn an_invalid_consumer_name_is_a_configuration_error() {
    let lite = Lite::new().await;
    let tries = Arc::new(Tries::default());
    let err = SqliteInbox::new(&lite.store, "", SqliteShipping { tries })
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config);
}

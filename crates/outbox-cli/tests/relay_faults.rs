//! The `outbox relay` binary under the faults a relay must survive, run as real
//! processes against PostgreSQL and NATS JetStream: rolled-back transactions, a
//! broker outage, a crash between the broker's ack and the delete, a transaction
//! that commits late, several relays, a relay paused past its lease, a key that
//! always fails, SIGTERM in the middle of a drain, and the demo's own check.
//!
//! Each test has a schema and a JetStream stream of its own. What reached the
//! broker is always read back through an ordered consumer on a connection of its
//! own, never taken from the relay.

#![cfg(all(feature = "postgres", feature = "nats"))]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream};
use futures_util::StreamExt;
use outbox::postgres::{PgOptions, PgStore};
use outbox::{Identifier, NewEvent, OutboxStore};
use outbox_testkit::NatsServer;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, Row};

/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;

/// Lease length given to every relay, in seconds: short, so that a takeover
/// after a crash or a pause happens within the test.
const LEASE_SECONDS: &str = "2";

/// Shutdown grace given to every relay, in seconds.
const GRACE_SECONDS: u64 = 3;

/// Where a committed event must show up: its key and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    key: String,
    seq: i64,
}

/// Committed events by id.
type Ledger = HashMap<String, Committed>;

/// One message as a reader saw it: its subject and what its headers say.
#[derive(Debug, Clone)]
struct Delivered {
    subject: String,
    msg_id: String,
    key: String,
    seq: i64,
}

impl Delivered {
    fn of(message: &async_nats::Message) -> Delivered {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| panic!("no {name} on {}", message.subject))
        };
        Delivered {
            subject: message.subject.to_string(),
            msg_id: header("Nats-Msg-Id"),
            key: header("ce-partitionkey"),
            seq: header("ce-sequence")
                .parse()
                .expect("ce-sequence is a number"),
        }
    }
}

/// A schema and a JetStream stream of one test's own, and the way to run
/// relays on them. Dropping it drops the schema and deletes the stream.
struct Harness {
    store: PgStore,
    pg_url: String,
    schema: Identifier,
    nats_url: String,
    jetstream: jetstream::Context,
    /// The JetStream stream. It binds the subjects of the outbox stream
    /// `orders` only, and keeps the server's duplicate window of two minutes,
    /// longer than any test.
    stream: String,
    /// The first token of every subject the relays publish to.
    subject_prefix: String,
    spawned: AtomicUsize,
}

impl Harness {
    /// Sets up a migrated schema and a stream, on `server` or else on the
    /// shared NATS server. `None` when a service is missing outside CI.
    async fn new(test: &str, server: Option<&NatsServer>) -> Option<Harness> {
        let pg = outbox_testkit::pg(test).await?;
        let (nats_url, client, stream) = match server {
            Some(server) => {
                let client = async_nats::connect(server.url())
                    .await
                    .expect("connect to the private nats server");
                (server.url(), client, outbox_testkit::unique_stream_name())
            }
            None => {
                let nats = outbox_testkit::nats(test).await?;
                (nats.url, nats.client, nats.stream)
            }
        };
        let options = PgOptions {
            schema: pg.schema.clone(),
            ..PgOptions::default()
        };
        let harness = Harness {
            store: PgStore::new(pg.pool.clone(), options),
            pg_url: pg.url.clone(),
            schema: pg.schema.clone(),
            nats_url,
            jetstream: jetstream::new(client),
            subject_prefix: stream.to_lowercase(),
            stream,
            spawned: AtomicUsize::new(0),
        };

        harness
            .store
            .migrate()
            .await
            .expect("migrate the test schema");
        let config = stream::Config {
            name: harness.stream.clone(),
            subjects: vec![format!("{}.orders.>", harness.subject_prefix)],
            storage: stream::StorageType::File,
            ..stream::Config::default()
        };
        harness
            .jetstream
            .create_stream(config)
            .await
            .expect("create the test stream");
        Some(harness)
    }

    /// Starts `outbox relay` on this schema and stream, with `settings` (as
    /// environment variables) on top of the defaults of these tests.
    fn relay(&self, settings: &[(&str, &str)]) -> Process {
        let mut command = outbox_command();
        command
            .arg("relay")
            .env("OUTBOX_DATABASE_URL", &self.pg_url)
            .env("OUTBOX_SCHEMA", self.schema.as_str())
            .env("OUTBOX_PUBLISHER", "nats")
            .env("OUTBOX_NATS_URL", &self.nats_url)
            .env(
                "OUTBOX_NATS_SUBJECT",
                format!("{}.{{stream}}.{{type}}", self.subject_prefix),
            )
            .env("OUTBOX_LEASE_SECONDS", LEASE_SECONDS)
            .env("OUTBOX_POLL_INTERVAL_MS", "100")
            .env("OUTBOX_SHUTDOWN_GRACE_SECONDS", GRACE_SECONDS.to_string())
            .env("OUTBOX_LOG", "info")
            .envs(settings.iter().copied());
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        Process::spawn(command, &format!("{}-relay-{n}", self.stream))
    }

    /// Commits `events` in transactions of `per_transaction` events each.
    async fn commit(&self, events: &[NewEvent], per_transaction: usize) -> Ledger {
        let mut committed = Ledger::new();
        for chunk in events.chunks(per_transaction) {
            let mut tx = self.store.pool().begin().await.expect("begin");
            let enqueued = self.store.enqueue(&mut tx, chunk).await.expect("enqueue");
            tx.commit().await.expect("commit");

            for (event, e) in chunk.iter().zip(enqueued) {
                let at = Committed {
                    key: event.key().to_owned(),
                    seq: e.seq,
                };
                committed.insert(e.event_id.to_string(), at);
            }
        }
        committed
    }

    /// Enqueues `events` in one transaction and rolls it back; returns their ids.
    async fn roll_back(&self, events: &[NewEvent]) -> HashSet<String> {
        let mut tx = self.store.pool().begin().await.expect("begin");
        self.store.enqueue(&mut tx, events).await.expect("enqueue");
        tx.rollback().await.expect("roll back");
        events.iter().map(|e| e.event_id().to_string()).collect()
    }

    async fn pending(&self) -> u64 {
        self.store.status().await.expect("outbox status").pending
    }

    /// The ids of the events still in the outbox table.
    async fn pending_ids(&self) -> HashSet<String> {
        let schema = self.schema.quoted();
        let sql = format!("SELECT event_id::text FROM {schema}.events");
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(self.store.pool())
            .await
            .expect("read pending ids")
            .into_iter()
            .collect()
    }

    /// The relays that hold an unexpired lease right now.
    async fn lease_owners(&self) -> HashSet<String> {
        let sql = format!(
            "SELECT DISTINCT owner::text FROM {}.leases WHERE expires_at > now()",
            self.schema.quoted()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(self.store.pool())
            .await
            .expect("read lease owners")
            .into_iter()
            .collect()
    }

    /// Partitions with an owner, expired or not.
    async fn owned_partitions(&self) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM {}.leases WHERE owner IS NOT NULL",
            self.schema.quoted()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(self.store.pool())
            .await
            .expect("count owned partitions")
    }

    /// Messages in the stream, or `None` while the broker cannot say.
    async fn stored(&self) -> Option<u64> {
        let lookup = async {
            let stream = self.jetstream.get_stream(&self.stream).await.ok()?;
            Some(stream.cached_info().state.messages)
        };
        tokio::time::timeout(Duration::from_secs(2), lookup)
            .await
            .ok()
            .flatten()
    }

    async fn await_stored(&self, at_least: u64, limit: Duration) {
        let what = format!("{at_least} messages in the stream");
        eventually(&what, limit, || async {
            self.stored().await.is_some_and(|n| n >= at_least)
        })
        .await;
    }

    /// Waits until the outbox table is empty: every event was acknowledged by
    /// the broker or moved to the dead letters.
    async fn await_drained(&self, limit: Duration) {
        eventually("a drained outbox", limit, || async {
            self.pending().await == 0
        })
        .await;
    }

    /// Subscribes to `subject` on a connection of its own.
    async fn tap(&self, subject: &str) -> Tap {
        let client = async_nats::connect(&self.nats_url)
            .await
            .expect("connect the tap");
        let subscriber = client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        client.flush().await.expect("register the subscription");
        Tap { client, subscriber }
    }

    /// Every message of the stream in stream order, read by an ordered consumer
    /// on a connection of its own.
    async fn read_back(&self) -> Vec<Delivered> {
        let client = async_nats::connect(&self.nats_url)
            .await
            .expect("connect the reader");
        let js = jetstream::new(client);
        let stream = js.get_stream(&self.stream).await.expect("open the stream");
        let total = stream.cached_info().state.messages;
        let config = OrderedConfig {
            headers_only: true,
            ..OrderedConfig::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .expect("create a consumer");
        let mut messages = consumer.messages().await.expect("consume");

        let mut delivered = Vec::with_capacity(total as usize);
        while (delivered.len() as u64) < total {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next());
            let message = next
                .await
                .expect("the next message within 10 s")
                .expect("the consumer goes on")
                .expect("a message");
            delivered.push(Delivered::of(&message));
        }
        delivered
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let pg_url = self.pg_url.clone();
        let schema = self.schema.clone();
        let nats_url = self.nats_url.clone();
        let stream = self.stream.clone();

        // Drop may run while a panic unwinds inside the test's runtime, so the
        // cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a cleanup runtime");
            runtime.block_on(async {
                let drop_schema = async {
                    let mut conn = sqlx::PgConnection::connect(&pg_url).await?;
                    let quoted = schema.quoted();
                    let sql = format!("DROP SCHEMA IF EXISTS {quoted} CASCADE");
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
                    Ok::<_, sqlx::Error>(())
                };
                let delete_stream = async {
                    // A private server may be down already; its store goes with it.
                    if let Ok(client) = async_nats::connect(&nats_url).await {
                        let _ = jetstream::new(client).delete_stream(&stream).await;
                    }
                };
                let limit = Duration::from_secs(10);
                let (dropped, _) = tokio::join!(
                    tokio::time::timeout(limit, drop_schema),
                    tokio::time::timeout(limit, delete_stream)
                );
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("could not drop test schema {schema}: {dropped:?}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A plain NATS subscription: it sees every message published on its subjects,
/// also those that JetStream drops as duplicates.
struct Tap {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
}

impl Tap {
    /// The messages received so far; call it once the publishers have stopped.
    async fn drain(&mut self) -> Vec<Delivered> {
        self.client.flush().await.expect("flush the tap");
        let mut seen = Vec::new();
        let quiet = Duration::from_millis(500);
        loop {
            let next = tokio::time::timeout(quiet, self.subscriber.next()).await;
            let Ok(Some(message)) = next else {
                break;
            };
            seen.push(Delivered::of(&message));
        }
        seen
    }
}

/// A child process of a test. Its output goes to files that are printed when
/// the test fails, and it is killed when dropped, so a failing test leaves no
/// process behind.
struct Process {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn spawn(mut command: Command, name: &str) -> Process {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("relay_faults");
        std::fs::create_dir_all(&dir).expect("create the log directory");
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));

        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the stdout file"))
            .stderr(File::create(&stderr).expect("create the stderr file"))
            .spawn()
            .expect("start the outbox binary");
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// Sends the signal `name` (`TERM`, `STOP`, `CONT`) to the process.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_none()
    }

    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {limit:?}",
                self.stderr.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops a relay with SIGTERM and checks that it exits with status 0.
    async fn stop(&mut self) {
        self.signal("TERM");
        let status = self
            .exit_within(Duration::from_secs(GRACE_SECONDS + 10))
            .await;
        assert!(status.success(), "the relay exited with {status}");
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("--- end of {}:\n{tail}", self.stderr.display());
        } else {
            let _ = std::fs::remove_file(&self.stdout);
            let _ = std::fs::remove_file(&self.stderr);
        }
    }
}

/// The `outbox` binary with no `OUTBOX_` variable inherited from the test's
/// environment, logging without colours.
fn outbox_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUTBOX_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Polls `holds` until it is true, failing the test after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !holds().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `count` events of the outbox stream `orders`, dealt in turn to `keys` keys
/// named `{prefix}-0`, `{prefix}-1`, ….
fn orders(prefix: &str, keys: usize, count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| {
            let key = format!("{prefix}-{}", i % keys);
            NewEvent::json("orders", key, "order.touched", &json!({ "i": i }))
                .expect("a valid event")
        })
        .collect()
}

/// Checks the stream against what was committed: every committed event exactly
/// once, under its own id with its own key and position, and each key's
/// positions arriving as 1, 2, 3, … without a gap.
fn assert_exactly_once_in_order(delivered: &[Delivered], committed: &Ledger) {
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();

    for (n, d) in delivered.iter().enumerate() {
        let Some(expected) = committed.get(&d.msg_id) else {
            panic!(
                "message {n} carries {}, the id of no committed event",
                d.msg_id
            );
        };
        assert!(
            seen.insert(d.msg_id.as_str()),
            "message {n}: event {} is in the stream twice",
            d.msg_id
        );
        assert_eq!(
            (d.key.as_str(), d.seq),
            (expected.key.as_str(), expected.seq),
            "message {n}: key and position of event {}",
            d.msg_id
        );
        let previous = last.insert(&d.key, d.seq).unwrap_or(0);
        assert_eq!(
            d.seq,
            previous + 1,
            "message {n}: key {} went from position {previous} to {}",
            d.key,
            d.seq
        );
    }

    assert_eq!(
        seen.len(),
        committed.len(),
        "{} committed events never reached the stream",
        committed.len() - seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_events_stay_unpublished_and_a_broker_outage_loses_nothing() {
    let test = "rolled_back_events_stay_unpublished_and_a_broker_outage_loses_nothing";
    let Some(mut server) = NatsServer::spawn(test) else {
        return;
    };
    let Some(harness) = Harness::new(test, Some(&server)).await else {
        return;
    };
    let mut relay = harness.relay(&[]);

    // Rolled-back transactions sit between committed ones on the same keys:
    // their positions go back to the key, so the committed ones have no gap.
    let mut committed = harness.commit(&orders("before", 10, 50), 10).await;
    let mut rolled_back = harness.roll_back(&orders("before", 10, 50)).await;
    committed.extend(harness.commit(&orders("before", 10, 50), 10).await);
    harness.await_drained(Duration::from_secs(30)).await;
    // The broker may acknowledge before its file store has written the
    // message; a moment here makes the kill below test the relay, not that.
    tokio::time::sleep(Duration::from_secs(1)).await;

    server.stop();
    committed.extend(harness.commit(&orders("outage", 20, 250), 25).await);
    rolled_back.extend(harness.roll_back(&orders("outage", 20, 100)).await);
    committed.extend(harness.commit(&orders("outage", 20, 250), 25).await);
    // Long enough for the relay to claim the new events and fail to publish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        harness.pending().await,
        500,
        "pending events during the outage"
    );
    assert!(relay.is_running(), "the relay gave up during the outage");

    server.start();
    harness.await_drained(Duration::from_secs(60)).await;
    let delivered = harness.read_back().await;
    let leaked = delivered.iter().filter(|d| rolled_back.contains(&d.msg_id));
    assert_eq!(
        leaked.count(),
        0,
        "events of rolled-back transactions were published"
    );
    assert_exactly_once_in_order(&delivered, &committed);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_ack_and_delete_redelivers_under_the_same_id() {
    let test = "a_crash_between_ack_and_delete_redelivers_under_the_same_id";
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    let committed = harness.commit(&orders("order", 10, 1000), 100).await;

    // One batch holds every event, so none is deleted before the crash.
    let mut crashing = harness.relay(&[
        ("OUTBOX_FAILPOINT", "crash-after-ack:300"),
        ("OUTBOX_BATCH_SIZE", "1000"),
    ]);
    let status = crashing.exit_within(Duration::from_secs(30)).await;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the relay ended with {status}"
    );

    let before = harness.read_back().await;
    let pending = harness.pending_ids().await;
    let stored_and_pending = before.iter().filter(|d| pending.contains(&d.msg_id));
    assert!(
        before.len() >= 300,
        "only {} messages before the crash",
        before.len()
    );
    assert!(
        stored_and_pending.count() >= 300,
        "the events acknowledged before the crash are no longer pending"
    );

    let mut relay = harness.relay(&[]);
    harness.await_drained(Duration::from_secs(60)).await;
    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_still_published() {
    let test = "a_transaction_that_commits_late_is_still_published";
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    let mut relay = harness.relay(&[]);

    // The slow transaction takes its row id before all the others.
    let late = NewEvent::json("orders", "late", "order.touched", &json!({}));
    let late = late.unwrap();
    let late_id = late.event_id().to_string();
    let mut slow = harness.store.pool().begin().await.unwrap();
    harness.store.enqueue(&mut slow, &[late]).await.unwrap();
    let opened = Instant::now();

    let mut committed = harness.commit(&orders("order", 20, 200), 10).await;
    harness.await_drained(Duration::from_secs(30)).await;
    tokio::time::sleep_until((opened + Duration::from_millis(1500)).into()).await;
    slow.commit().await.unwrap();
    let at = Committed {
        key: "late".to_owned(),
        seq: 1,
    };
    committed.insert(late_id.clone(), at);

    harness.await_drained(Duration::from_secs(30)).await;
    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);
    assert_eq!(
        delivered.last().map(|d| d.msg_id.as_str()),
        Some(late_id.as_str()),
        "the late event comes after the events committed before it"
    );
    relay.stop().await;
}

/// Drains 20,000 events over 200 keys with `relay_count` relays; the later ones
/// join while the first is at work, so partitions change hands mid-drain.
async fn drain_with_relays(test: &str, relay_count: usize) {
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    let committed = harness.commit(&orders("order", 200, 20_000), 500).await;

    let mut relays = vec![harness.relay(&[])];
    harness.await_stored(2_000, Duration::from_secs(30)).await;
    relays.extend((1..relay_count).map(|_| harness.relay(&[])));

    let mut owners = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while harness.pending().await > 0 {
        owners.extend(harness.lease_owners().await);
        assert!(
            Instant::now() < deadline,
            "waited 90 s for a drained outbox"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(owners.len(), relay_count, "relays that held partitions");

    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);
    for relay in &mut relays {
        relay.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_relays_publish_everything_once_and_in_order() {
    drain_with_relays("two_relays_publish_everything_once_and_in_order", 2).await;
    drain_with_relays("three_relays_publish_everything_once_and_in_order", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_paused_past_its_lease_is_fenced_out() {
    let test = "a_relay_paused_past_its_lease_is_fenced_out";
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    let committed = harness.commit(&orders("order", 50, 20_000), 500).await;

    // The paused relay publishes under subjects of its own, so that a plain
    // subscriber sees all it sends, duplicates that JetStream drops included.
    let prefix = &harness.subject_prefix;
    let paused_subjects = format!("{prefix}.orders.paused.");
    let mut sent_by_paused = harness.tap(&format!("{paused_subjects}>")).await;
    let template = format!("{prefix}.{{stream}}.paused.{{type}}");
    let mut paused = harness.relay(&[("OUTBOX_NATS_SUBJECT", &template)]);
    harness.await_stored(1_000, Duration::from_secs(30)).await;
    assert_eq!(
        harness.lease_owners().await.len(),
        1,
        "one relay holds the leases"
    );
    paused.signal("STOP");
    let at_pause = harness.stored().await.expect("stream state");

    // The other relay takes over once the paused one's leases expire and gets
    // well past the events the paused one had claimed. Its own leases are long,
    // so that they cannot expire under it on a busy machine.
    let mut other = harness.relay(&[("OUTBOX_LEASE_SECONDS", "10")]);
    harness
        .await_stored(at_pause + 2_000, Duration::from_secs(30))
        .await;
    paused.signal("CONT");
    assert!(
        harness.pending().await > 0,
        "the takeover drained everything already"
    );

    harness.await_drained(Duration::from_secs(90)).await;
    paused.stop().await;
    other.stop().await;
    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);

    // Once resumed, the paused relay may finish the one publish per key it had
    // in flight. Sending more of what the other relay had stored already is
    // stale work published without a lease.
    let stored_by_other: HashSet<&str> = delivered
        .iter()
        .filter(|d| !d.subject.starts_with(&paused_subjects))
        .map(|d| d.msg_id.as_str())
        .collect();
    let mut stale: HashMap<String, usize> = HashMap::new();
    for d in sent_by_paused.drain().await {
        if stored_by_other.contains(d.msg_id.as_str()) {
            *stale.entry(d.key).or_default() += 1;
        }
    }
    assert!(
        stale.values().all(|&n| n <= 1),
        "the paused relay published stale events after resuming: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_always_fails_is_dead_lettered_and_the_others_flow() {
    let test = "a_key_that_always_fails_is_dead_lettered_and_the_others_flow";
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    // No JetStream stream binds the subjects of the outbox stream `unrouted`,
    // so every publish of its events gets "no responders".
    let poison: Vec<NewEvent> = (0..5)
        .map(|i| NewEvent::json("unrouted", "poison", "t", &json!({ "i": i })))
        .collect::<Result<_, _>>()
        .unwrap();
    let mut committed = harness.commit(&orders("order", 10, 150), 10).await;
    let poisoned = harness.commit(&poison, 1).await;
    committed.extend(harness.commit(&orders("order", 10, 150), 10).await);

    let mut relay = harness.relay(&[("OUTBOX_MAX_ATTEMPTS", "3")]);
    harness.await_drained(Duration::from_secs(60)).await;
    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);

    let sql = format!(
        "SELECT event_id::text AS id, attempts, last_error FROM {}.dead_letters",
        harness.schema.quoted()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(harness.store.pool())
        .await
        .unwrap();
    let dead: HashSet<String> = rows.iter().map(|r| r.get("id")).collect();
    let expected: HashSet<String> = poisoned.keys().cloned().collect();
    assert_eq!(
        dead, expected,
        "the dead letters are the failing key's events"
    );
    for row in &rows {
        assert_eq!(
            row.get::<i32, _>("attempts"),
            3,
            "attempts of a dead letter"
        );
        assert!(!row.get::<String, _>("last_error").is_empty());
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_drain_exits_cleanly_and_loses_nothing() {
    let test = "sigterm_mid_drain_exits_cleanly_and_loses_nothing";
    let Some(harness) = Harness::new(test, None).await else {
        return;
    };
    let committed = harness.commit(&orders("order", 200, 20_000), 500).await;

    let mut first = harness.relay(&[]);
    harness.await_stored(3_000, Duration::from_secs(30)).await;
    first.signal("TERM");
    let margin = Duration::from_secs(5);
    let status = first
        .exit_within(Duration::from_secs(GRACE_SECONDS) + margin)
        .await;
    assert_eq!(status.code(), Some(0), "the relay ended with {status}");
    assert!(
        harness.pending().await > 0,
        "the relay drained everything before the signal"
    );
    assert_eq!(
        harness.owned_partitions().await,
        0,
        "the stopped relay kept leases"
    );

    let mut second = harness.relay(&[]);
    harness.await_drained(Duration::from_secs(90)).await;
    let delivered = harness.read_back().await;
    assert_exactly_once_in_order(&delivered, &committed);
    second.stop().await;
}

/// Runs `outbox demo --json` with `args` and returns its summary.
async fn demo(name: &str, args: &[&str]) -> serde_json::Value {
    let mut command = outbox_command();
    command.arg("demo").arg("--json").args(args);
    let mut demo = Process::spawn(command, name);
    let status = demo.exit_within(Duration::from_secs(120)).await;
    assert!(status.success(), "the demo exited with {status}");
    serde_json::from_str(&demo.output()).expect("the demo prints one json object")
}

fn assert_clean_summary(summary: &serde_json::Value) {
    let count = |field: &str| {
        summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a count in {summary}"))
    };
    assert_eq!(count("published_from_rolled_back"), 0, "{summary}");
    assert_eq!(count("duplicates"), 0, "{summary}");
    assert_eq!(count("per_key_order_violations"), 0, "{summary}");
    assert_eq!(count("missing"), 0, "{summary}");
    assert!(count("committed_events") > 0, "{summary}");
    assert!(count("rolled_back_events") > 0, "{summary}");
    assert_eq!(count("published"), count("committed_events"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_finds_nothing_wrong_embedded_and_on_postgres_with_nats() {
    let test = "the_demo_finds_nothing_wrong_embedded_and_on_postgres_with_nats";
    let name = outbox_testkit::unique_stream_name();
    let embedded = demo(&format!("{name}-embedded"), &[]).await;
    assert_clean_summary(&embedded);

    // A private server: the demo binds `orders.>`, which another stream on a
    // shared server may hold.
    let Some(pg) = outbox_testkit::pg(test).await else {
        return;
    };
    let Some(server) = NatsServer::spawn(test) else {
        return;
    };
    let url = server.url();
    let args = [
        "--database-url",
        pg.url.as_str(),
        "--nats-url",
        url.as_str(),
        "--nats-stream",
        name.as_str(),
    ];
    let summary = demo(&format!("{name}-nats"), &args).await;
    assert_clean_summary(&summary);
    assert_eq!(summary["stream"].as_str(), Some(name.as_str()), "{summary}");
}

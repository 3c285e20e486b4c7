//! The relay engine against real stores, publishing through a recorder that
//! checks the ordering rule as it goes: a key's next event is never handed to
//! the publisher while the previous one is unacknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use outbox::postgres::{PgOptions, PgStore};
use outbox::sqlite::SqliteStore;
use outbox::{
    DeadLetterPolicy, Error, ErrorKind, Event, NewEvent, OutboxStore, PublishedLog, Publisher,
    Relay, RelayConfig, RelayId, RelayStore, ReplayFilter, RetryPolicy,
};
use serde_json::json;
use tokio::sync::oneshot;

/// Records every publish; fails every event of `fail_key` with `fail_kind`,
/// and the event at `fail_once` (key and position) the first time only.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(String, i64, String)>>,
    in_flight: Mutex<HashSet<String>>,
    overlaps: Mutex<u64>,
    max_concurrent: Mutex<(usize, usize)>,
    fail_key: Option<(String, ErrorKind)>,
    fail_once: Option<(String, i64)>,
    failed_once: Mutex<bool>,
}

impl Recorder {
    fn failing(key: &str, kind: ErrorKind) -> Self {
        Recorder {
            fail_key: Some((key.to_owned(), kind)),
            ..Recorder::default()
        }
    }
}

impl Publisher for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn publish(&self, event: &Event) -> outbox::Result<()> {
        if !self.in_flight.lock().unwrap().insert(event.key.clone()) {
            *self.overlaps.lock().unwrap() += 1;
        }
        {
            let mut m = self.max_concurrent.lock().unwrap();
            m.0 += 1;
            m.1 = m.1.max(m.0);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
        self.max_concurrent.lock().unwrap().0 -= 1;
        self.in_flight.lock().unwrap().remove(&event.key);

        if let Some((_, kind)) = self.fail_key.as_ref().filter(|(key, _)| *key == event.key) {
            return Err(Error::new(*kind, "refused by the test broker"));
        }
        if self.fail_once.as_ref() == Some(&(event.key.clone(), event.seq))
            && !std::mem::replace(&mut *self.failed_once.lock().unwrap(), true)
        {
            return Err(Error::new(
                ErrorKind::Transient,
                "refused once by the test broker",
            ));
        }
        let id = event.event_id.to_string();
        self.log
            .lock()
            .unwrap()
            .push((event.key.clone(), event.seq, id));
        Ok(())
    }
}

fn config() -> RelayConfig {
    RelayConfig {
        batch_size: 500,
        concurrency: 64,
        poll_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(5),
        max_attempts: 3,
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
        },
        ..RelayConfig::default()
    }
}

async fn pg_store(test: &str) -> Option<(outbox_testkit::PgSchema, PgStore)> {
    let pg = outbox_testkit::pg(test).await?;
    let options = PgOptions {
        schema: pg.schema.clone(),
        ..PgOptions::default()
    };
    let store = PgStore::new(pg.pool.clone(), options);
    store.migrate().await.unwrap();
    Some((pg, store))
}

async fn enqueue_many(store: &impl outbox::TransactionalStore, events: usize, keys: usize) {
    for chunk in (0..events).collect::<Vec<_>>().chunks(50) {
        let mut uow = outbox::UnitOfWork::begin(store).await.unwrap();
        for &i in chunk {
            let key = format!("key-{}", i % keys);
            uow.record(NewEvent::json("orders", key, "order.touched", &json!({"i": i})).unwrap());
        }
        uow.commit().await.unwrap();
    }
}

/// Waits until `store` has no pending events, or fails after `limit`.
async fn drained(store: &impl OutboxStore, limit: Duration) {
    let wait = async {
        while store.status().await.unwrap().pending > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("outbox drained in time");
}

/// Checks that every key's positions arrived as 1, 2, 3, … exactly once.
fn assert_in_order(log: &[(String, i64, String)], keys: usize, per_key: i64) {
    let mut by_key: HashMap<&str, Vec<i64>> = HashMap::new();
    for (key, seq, _) in log {
        by_key.entry(key).or_default().push(*seq);
    }
    assert_eq!(by_key.len(), keys);
    for (key, seqs) in by_key {
        let expected: Vec<i64> = (1..=per_key).collect();
        assert_eq!(seqs, expected, "key {key}");
    }
}

fn spawn<S, P>(relay: Relay<S, P>) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>)
where
    S: RelayStore,
    P: Publisher + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async { stopped.await.unwrap_or(()) })
            .await
            .unwrap();
    });
    (stop, task)
}

/// Runs `relay` until `store` has no pending events, then stops it cleanly.
async fn run_until_drained<S, P>(store: &impl OutboxStore, relay: Relay<S, P>)
where
    S: RelayStore,
    P: Publisher + 'static,
{
    let (stop, task) = spawn(relay);
    drained(store, Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_drain_keeps_every_key_in_order() {
    let Some((pg, store)) = pg_store("postgres_drain_keeps_every_key_in_order").await else {
        return;
    };
    enqueue_many(&store, 3000, 30).await;

    let recorder = std::sync::Arc::new(Recorder::default());
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config());
    run_until_drained(&store, relay).await;

    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(log.len(), 3000);
    assert_in_order(&log, 30, 100);
    assert_eq!(
        *recorder.overlaps.lock().unwrap(),
        0,
        "a key had two events in flight"
    );
    assert!(
        recorder.max_concurrent.lock().unwrap().1 > 1,
        "keys were not published concurrently"
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_drain_keeps_every_key_in_order() {
    let file = outbox_testkit::SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    enqueue_many(&store, 1000, 10).await;

    let recorder = std::sync::Arc::new(Recorder::default());
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config());
    run_until_drained(&store, relay).await;

    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(log.len(), 1000);
    assert_in_order(&log, 10, 100);
    assert_eq!(*recorder.overlaps.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_published() {
    let Some((pg, store)) = pg_store("a_late_commit_is_published").await else {
        return;
    };
    let recorder = std::sync::Arc::new(Recorder::default());
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config());
    let (stop, task) = spawn(relay);

    // The slow transaction takes its row id first and commits last.
    let mut slow = store.pool().begin().await.unwrap();
    let late = NewEvent::json("orders", "slow", "t", &json!({})).unwrap();
    store
        .enqueue(&mut slow, std::slice::from_ref(&late))
        .await
        .unwrap();
    enqueue_many(&store, 200, 20).await;
    drained(&store, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    slow.commit().await.unwrap();
    drained(&store, Duration::from_secs(30)).await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(log.len(), 201);
    assert!(
        log.iter()
            .any(|(_, _, id)| *id == late.event_id().to_string())
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_is_dead_lettered_and_the_others_flow() {
    let Some((pg, store)) = pg_store("a_failing_key_is_dead_lettered").await else {
        return;
    };
    enqueue_many(&store, 400, 20).await;
    let recorder = std::sync::Arc::new(Recorder::failing("key-7", ErrorKind::Transient));
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config());
    run_until_drained(&store, relay).await;

    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(log.len(), 380, "every other key published");
    assert!(log.iter().all(|(key, _, _)| key != "key-7"));
    let status = store.status().await.unwrap();
    assert_eq!(
        status.dead_lettered, 20,
        "the key moved on after each dead letter"
    );
    let attempts: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT attempts FROM {}.dead_letters",
        pg.schema.quoted()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(attempts.iter().all(|a| *a == 3), "{attempts:?}");
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_stops_the_key_at_its_dead_letter() {
    let Some((pg, store)) = pg_store("hold_stops_the_key_at_its_dead_letter").await else {
        return;
    };
    enqueue_many(&store, 100, 10).await;
    let recorder = std::sync::Arc::new(Recorder::failing("key-3", ErrorKind::Permanent));
    let config = RelayConfig {
        dead_letter_policy: DeadLetterPolicy::Hold,
        ..config()
    };
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config);
    let (stop, task) = spawn(relay);

    let settled = async {
        loop {
            let s = store.status().await.unwrap();
            if s.pending == 9 && s.dead_lettered == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settled)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();

    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(log.len(), 90);
    let status = store.status().await.unwrap();
    assert_eq!(
        (status.pending, status.dead_lettered),
        (9, 1),
        "key-3 held at its first event"
    );
    let first: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT attempts FROM {}.dead_letters WHERE key = 'key-3' AND seq = 1",
        pg.schema.quoted()
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(first, 1, "a permanent error dead-letters at once");
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_fences_out_the_old_owner() {
    let Some((pg, store)) = pg_store("a_lost_lease_fences_out_the_old_owner").await else {
        return;
    };
    enqueue_many(&store, 10, 10).await;
    let ids: Vec<i64> = store
        .pending(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let (old, new) = (RelayId::new(), RelayId::new());

    let held = store
        .maintain_leases(old, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(held.len(), 256);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = store
        .maintain_leases(new, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        taken.len(),
        256,
        "the silent relay no longer counts as live"
    );

    assert_eq!(
        store.complete(old, &ids, false).await.unwrap(),
        0,
        "expired lease refused"
    );
    store
        .dead_letter(old, ids[0], "stale", false)
        .await
        .unwrap();
    assert_eq!(store.status().await.unwrap().dead_lettered, 0);

    let claimed = store.claim(&taken, &[], &[], 100).await.unwrap();
    let claimed: Vec<i64> = claimed.iter().map(|c| c.event.id).collect();
    assert_eq!(
        store.complete(new, &claimed, false).await.unwrap(),
        claimed.len() as u64
    );
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_without_breaking_order() {
    let Some((pg, store)) = pg_store("two_relays_share_the_work").await else {
        return;
    };
    enqueue_many(&store, 4000, 40).await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let config = RelayConfig {
        lease_ttl: Duration::from_millis(900),
        batch_size: 100,
        ..config()
    };
    let a = spawn(Relay::new(
        store.clone(),
        ArcPublisher(recorder.clone()),
        config.clone(),
    ));
    let b = spawn(Relay::new(
        store.clone(),
        ArcPublisher(recorder.clone()),
        config,
    ));

    drained(&store, Duration::from_secs(60)).await;
    for (stop, task) in [a, b] {
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .unwrap()
            .unwrap();
    }

    // Per key, each publish is the next position or a repeat of one already
    // published (a lease handed over before the delete landed); never a jump.
    let log = recorder.log.lock().unwrap().clone();
    let mut highest: HashMap<&str, i64> = HashMap::new();
    let mut ids = HashSet::new();
    for (key, seq, id) in &log {
        let first_time = ids.insert(id.clone());
        let top = highest.entry(key).or_insert(0);
        if first_time {
            assert_eq!(*seq, *top + 1, "key {key}: {seq} published after {top}");
            *top = *seq;
        } else {
            assert!(*seq <= *top, "key {key}: repeat of {seq} beyond {top}");
        }
    }
    assert_eq!(ids.len(), 4000, "every event published");
    assert_eq!(*recorder.overlaps.lock().unwrap(), 0);
    pg.drop().await;
}

/// Lets several relays share one recorder.
struct ArcPublisher(std::sync::Arc<Recorder>);

impl Publisher for ArcPublisher {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn publish(
        &self,
        event: &Event,
    ) -> impl std::future::Future<Output = outbox::Result<()>> + Send {
        self.0.publish(event)
    }
}

/// One key, many batches, its fifth event refused once: the relay claims the
/// next batch while publishing the current one, and must not publish that
/// batch's events of the key before the refused one goes through.
async fn a_retried_event_is_not_overtaken_by_the_next_batch<S>(store: S)
where
    S: RelayStore + OutboxStore + outbox::TransactionalStore + Clone,
{
    enqueue_many(&store, 60, 1).await;
    let recorder = std::sync::Arc::new(Recorder {
        fail_once: Some(("key-0".into(), 5)),
        ..Recorder::default()
    });
    let config = RelayConfig {
        batch_size: 10,
        ..config()
    };
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config);
    run_until_drained(&store, relay).await;

    assert!(
        *recorder.failed_once.lock().unwrap(),
        "the event was refused"
    );
    let log = recorder.log.lock().unwrap().clone();
    assert_in_order(&log, 1, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retried_event_is_not_overtaken() {
    let file = outbox_testkit::SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    a_retried_event_is_not_overtaken_by_the_next_batch(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retried_event_is_not_overtaken() {
    let Some((pg, store)) = pg_store("postgres_retried_event_is_not_overtaken").await else {
        return;
    };
    a_retried_event_is_not_overtaken_by_the_next_batch(store).await;
    pg.drop().await;
}

/// Completing with `keep` moves events into the published log under the
/// relay's lease only; the log reads back by filter, and expiry empties it in
/// batches of the size asked.
async fn keeping_moves_events_to_the_log_and_expiry_empties_it<S>(store: &S)
where
    S: RelayStore + PublishedLog + OutboxStore + outbox::TransactionalStore,
{
    enqueue_many(store, 10, 2).await;
    let (stranger, owner) = (RelayId::new(), RelayId::new());
    let held = store
        .maintain_leases(owner, Duration::from_secs(30))
        .await
        .unwrap();
    let claimed: Vec<Event> = store
        .claim(&held, &[], &[], 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event)
        .collect();
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 10);
    let everything = ReplayFilter {
        since: chrono::Utc::now() - chrono::Duration::hours(1),
        until: None,
        stream: None,
        key: None,
    };

    assert_eq!(store.complete(stranger, &ids, true).await.unwrap(), 0);
    assert!(store.kept(&everything, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.complete(owner, &ids, true).await.unwrap(), 10);
    assert_eq!(store.status().await.unwrap().pending, 0);

    let kept = store.kept(&everything, 0, 100).await.unwrap();
    assert_eq!(kept, claimed, "kept as they were claimed, in row-id order");
    let one_key = ReplayFilter {
        key: Some("key-1".into()),
        ..everything.clone()
    };
    let kept = store.kept(&one_key, 0, 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(store.kept(&everything, ids[6], 100).await.unwrap().len(), 3);
    assert_eq!(store.kept(&everything, 0, 4).await.unwrap().len(), 4);
    let later = ReplayFilter {
        since: chrono::Utc::now() + chrono::Duration::minutes(1),
        ..everything.clone()
    };
    assert!(store.kept(&later, 0, 100).await.unwrap().is_empty());
    let other_stream = ReplayFilter {
        stream: Some("payments".into()),
        ..everything.clone()
    };
    assert!(store.kept(&other_stream, 0, 100).await.unwrap().is_empty());

    assert_eq!(
        store
            .prune_kept(Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batches: Vec<u64> = [
        store.prune_kept(Duration::ZERO, 4).await.unwrap(),
        store.prune_kept(Duration::ZERO, 4).await.unwrap(),
        store.prune_kept(Duration::ZERO, 4).await.unwrap(),
    ]
    .into();
    assert_eq!(batches, [4, 4, 2]);
    assert!(store.kept(&everything, 0, 100).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_published_events_and_expires_them() {
    let Some((pg, store)) = pg_store("postgres_keeps_published_events").await else {
        return;
    };
    keeping_moves_events_to_the_log_and_expiry_empties_it(&store).await;
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_published_events_and_expires_them() {
    let file = outbox_testkit::SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    keeping_moves_events_to_the_log_and_expiry_empties_it(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_keeps_leaves_every_event_in_the_log() {
    let Some((pg, store)) = pg_store("a_relay_that_keeps").await else {
        return;
    };
    enqueue_many(&store, 2000, 20).await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let config = RelayConfig {
        keep_published: Some(Duration::from_secs(3600)),
        ..config()
    };
    let relay = Relay::new(store.clone(), ArcPublisher(recorder.clone()), config);
    run_until_drained(&store, relay).await;

    let everything = ReplayFilter {
        since: chrono::Utc::now() - chrono::Duration::hours(1),
        until: None,
        stream: None,
        key: None,
    };
    let kept = store.kept(&everything, 0, 5000).await.unwrap();
    let log = recorder.log.lock().unwrap().clone();
    let mut published: Vec<&str> = log.iter().map(|(_, _, id)| id.as_str()).collect();
    let kept_ids: Vec<String> = kept.iter().map(|e| e.event_id.to_string()).collect();
    let mut kept_ids: Vec<&str> = kept_ids.iter().map(String::as_str).collect();
    published.sort_unstable();
    kept_ids.sort_unstable();
    assert_eq!(
        kept_ids, published,
        "the log holds exactly what was published"
    );
    pg.drop().await;
}

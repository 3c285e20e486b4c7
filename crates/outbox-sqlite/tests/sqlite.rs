//! The SQLite store against real database files: atomicity with the business
//! change, positions under concurrency, writers queueing for the lock, bad
//! input, migrations, plain SQL writers and the status snapshot.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use outbox_core::{ErrorKind, Limits, NewEvent, OutboxStore, Payload};
use outbox_sqlite::{LATEST_VERSION, SqliteOptions, SqliteStore, map_error, migrate};
use outbox_testkit::SqliteFile;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

/// The longest any wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// A migrated database file with an `orders` business table.
async fn setup() -> (SqliteFile, SqliteStore) {
    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, SqliteOptions::default());
    store.migrate().await.expect("migrate");
    sqlx::raw_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    (db, store)
}

fn unix_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

fn event(key: &str, n: i64) -> NewEvent {
    NewEvent::json("orders", key, "order.created", &json!({ "n": n })).unwrap()
}

async fn count(conn: impl sqlx::SqliteExecutor<'_>, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn insert_order(conn: &mut SqliteConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO orders (id, total) VALUES (?, 10)")
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

#[tokio::test]
async fn business_row_and_events_commit_together() {
    let (_db, store) = setup().await;

    let mut tx = store.begin().await.unwrap();
    insert_order(&mut tx, 1).await.unwrap();
    let events = [event("order-1", 1), event("order-1", 2)];
    let enqueued = store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(enqueued.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(count(store.pool(), "orders").await, 1);
    assert_eq!(count(store.pool(), "outbox_events").await, 2);
}

#[tokio::test]
async fn a_transaction_that_does_not_commit_leaves_nothing() {
    let (_db, store) = setup().await;

    // Explicit rollback.
    let mut tx = store.begin().await.unwrap();
    insert_order(&mut tx, 1).await.unwrap();
    store
        .enqueue(&mut tx, &[event("order-1", 1)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // An error inside the transaction: the business insert fails after enqueue.
    // SQLite undoes only the failed statement, so the writer gives up the whole
    // transaction the way service code does, by returning early and dropping it.
    let failed = async {
        let mut tx = store.begin().await.unwrap();
        store
            .enqueue(&mut tx, &[event("order-2", 1)])
            .await
            .unwrap();
        insert_order(&mut tx, 2).await?;
        insert_order(&mut tx, 2).await?;
        tx.commit().await
    }
    .await;
    let err = map_error(failed.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    // Dropped without commit.
    {
        let mut tx = store.begin().await.unwrap();
        insert_order(&mut tx, 3).await.unwrap();
        store
            .enqueue(&mut tx, &[event("order-3", 1)])
            .await
            .unwrap();
    }

    assert_eq!(count(store.pool(), "orders").await, 0);
    assert_eq!(count(store.pool(), "outbox_events").await, 0);
    assert_eq!(count(store.pool(), "outbox_key_positions").await, 0);

    // A rolled-back position is handed out again: positions have no gaps.
    let mut tx = store.begin().await.unwrap();
    let events = [
        event("order-1", 1),
        event("order-2", 1),
        event("order-3", 1),
    ];
    let enqueued = store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        enqueued.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 1, 1]
    );
}

#[tokio::test]
async fn concurrent_writers_get_positions_in_write_order() {
    let (_db, store) = setup().await;
    sqlx::raw_sql(
        "CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
         WITH RECURSIVE i (x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x < 49)
         INSERT INTO counters (key, n) SELECT 'key-' || x, 0 FROM i;",
    )
    .execute(store.pool())
    .await
    .unwrap();
    const BUMP: &str = "UPDATE counters SET n = n + 1 WHERE key = ? RETURNING n";

    // Each writer bumps its key's business counter and enqueues the counter's
    // new value, in one transaction. The counter records the order in which the
    // writes to that key happened; the event's position must follow it.
    let writers = (0..1000).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = format!("key-{}", i % 50);
            let mut tx = store.begin().await?;
            let n: i64 = sqlx::query_scalar(BUMP)
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_error)?;
            let enqueued = store.enqueue(&mut tx, &[event(&key, n)]).await?;
            tx.commit().await.map_err(map_error)?;
            Ok::<_, outbox_core::Error>(enqueued[0])
        })
    });
    let results = within("1000 writers", try_join_all(writers)).await.unwrap();
    let ids: HashSet<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap().event_id)
        .collect();
    assert_eq!(ids.len(), 1000);

    let events = store.pending(5000).await.unwrap();
    assert_eq!(events.len(), 1000, "every event stored once");
    let stored_ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(stored_ids, ids);

    let mut by_key: HashMap<&str, Vec<(i64, i64, i64)>> = HashMap::new();
    for e in &events {
        let payload: serde_json::Value = serde_json::from_slice(e.payload.as_bytes()).unwrap();
        let n = payload["n"].as_i64().expect("payload carries the counter");
        by_key.entry(&e.key).or_default().push((e.id, e.seq, n));
    }
    assert_eq!(by_key.len(), 50);
    let expected: Vec<(i64, i64)> = (1..=20).map(|n| (n, n)).collect();
    for (key, mut rows) in by_key {
        // One writer at a time: row ids follow commit order, and so do positions.
        rows.sort();
        let positions: Vec<(i64, i64)> = rows.iter().map(|&(_, seq, n)| (seq, n)).collect();
        assert_eq!(
            positions, expected,
            "key {key}: position must follow write order"
        );
    }
}

#[tokio::test]
async fn a_second_writer_waits_for_the_open_write_transaction() {
    let (_db, store) = setup().await;

    let mut first = store.begin().await.unwrap();
    insert_order(&mut first, 1).await.unwrap();
    let first_enqueued = store
        .enqueue(&mut first, &[event("customer-1", 1)])
        .await
        .unwrap()[0];

    // The second writer reads before it writes, as services do: beginning with
    // the write lock is what lets it wait instead of failing on the upgrade.
    let mut second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await?;
            let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
                .fetch_one(&mut *tx)
                .await
                .map_err(map_error)?;
            insert_order(&mut tx, orders + 1).await.map_err(map_error)?;
            let new = [event("customer-1", orders + 1)];
            let enqueued = store.enqueue(&mut tx, &new).await?;
            tx.commit().await.map_err(map_error)?;
            Ok::<_, outbox_core::Error>((orders, enqueued[0]))
        }
    });
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
    assert!(
        waited.is_err(),
        "the second writer did not wait: {waited:?}"
    );
    let visible = store.pending(10).await.unwrap();
    assert!(visible.is_empty(), "uncommitted event must not be visible");

    first.commit().await.unwrap();
    let (orders_seen, second_enqueued) =
        within("the waiting writer", second).await.unwrap().unwrap();
    assert_eq!(
        orders_seen, 1,
        "the waiting writer reads what the first committed"
    );

    let events = store.pending(10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_id, first_enqueued.event_id);
    assert_eq!(events[1].event_id, second_enqueued.event_id);
    assert_eq!((events[0].seq, events[1].seq), (1, 2));
    assert!(events[0].id < events[1].id, "row ids follow commit order");
}

#[tokio::test]
async fn a_deferred_writer_that_read_a_stale_snapshot_gets_a_transient_error() {
    let (_db, store) = setup().await;

    // A plain BEGIN takes no lock; its first read fixes the snapshot it sees.
    let mut stale = store.pool().begin().await.unwrap();
    assert_eq!(count(&mut *stale, "orders").await, 0);

    let mut tx = store.begin().await.unwrap();
    store
        .enqueue(&mut tx, &[event("order-1", 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Writing now would build on rows that have since changed: SQLite refuses
    // at once instead of waiting, and the caller should retry the transaction.
    let err = store
        .enqueue(&mut stale, &[event("order-1", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{}", err.chain());
    stale.rollback().await.unwrap();

    let mut retry = store.begin().await.unwrap();
    let enqueued = store
        .enqueue(&mut retry, &[event("order-1", 2)])
        .await
        .unwrap();
    retry.commit().await.unwrap();
    assert_eq!(enqueued[0].seq, 2);
}

#[tokio::test]
async fn bad_events_are_refused_and_nothing_is_written() {
    let (_db, store) = setup().await;
    let small = SqliteStore::new(
        store.pool().clone(),
        SqliteOptions {
            limits: Limits {
                max_payload_bytes: 16,
                ..Limits::default()
            },
            ..SqliteOptions::default()
        },
    );

    let not_json = NewEvent::new(
        "orders",
        "k",
        "t",
        Payload::bytes("application/json", "{oops"),
    );
    let too_big = NewEvent::json("orders", "k", "t", &json!({"text": "x".repeat(32)})).unwrap();
    let no_stream = NewEvent::json("", "k", "t", &json!({})).unwrap();
    let no_key = NewEvent::json("orders", "", "t", &json!({})).unwrap();
    let cases = [
        (&store, not_json),
        (&small, too_big),
        (&store, no_stream),
        (&store, no_key),
    ];
    for (store, bad) in cases {
        let mut tx = store.begin().await.unwrap();
        insert_order(&mut tx, 1).await.unwrap();
        let err = store
            .enqueue(&mut tx, &[event("ok", 1), bad])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.chain());

        // Refused before the good event was written, not undone afterwards.
        assert_eq!(count(&mut *tx, "outbox_events").await, 0);
        tx.rollback().await.unwrap();
    }
    assert_eq!(count(store.pool(), "outbox_events").await, 0);
    assert_eq!(count(store.pool(), "outbox_key_positions").await, 0);

    // Writers in other languages get the same check from the database, with the
    // library's reading of a media type: any case, parameters, blanks before `;`.
    for content_type in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/json ; charset=utf-8",
        "application/cloudevents+json\t;x=y",
        "application/cloudevents+json",
    ] {
        let err = sqlx::query(
            "INSERT INTO outbox_events (stream, key, event_type, content_type, payload) \
             VALUES ('orders', 'k', 't', ?, CAST('{oops' AS BLOB))",
        )
        .bind(content_type)
        .execute(store.pool())
        .await
        .unwrap_err();
        assert_eq!(
            map_error(err).kind(),
            ErrorKind::InvalidInput,
            "{content_type}"
        );
    }
    let err = sqlx::query(
        "INSERT INTO outbox_events (stream, key, event_type, payload) \
         VALUES ('orders', 'k', 't', CAST('{oops' AS BLOB))",
    )
    .execute(store.pool())
    .await
    .unwrap_err();
    assert_eq!(map_error(err).kind(), ErrorKind::InvalidInput);
    assert_eq!(count(store.pool(), "outbox_events").await, 0);
    assert_eq!(count(store.pool(), "outbox_key_positions").await, 0);

    // A payload given as text instead of a blob, and a stream the library
    // would refuse, are refused by the database as well.
    for sql in [
        "INSERT INTO outbox_events (stream, key, event_type, payload) \
         VALUES ('orders', 'k', 't', '{}')",
        "INSERT INTO outbox_events (stream, key, event_type, payload) \
         VALUES ('or ders', 'k', 't', CAST('{}' AS BLOB))",
        "INSERT INTO outbox_events (stream, key, event_type, payload) \
         VALUES ('.orders', 'k', 't', CAST('{}' AS BLOB))",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert_eq!(map_error(err).kind(), ErrorKind::InvalidInput, "{sql}");
    }
    assert_eq!(count(store.pool(), "outbox_events").await, 0);

    // The check is for payloads declared json only.
    sqlx::query(
        "INSERT INTO outbox_events (stream, key, event_type, content_type, payload) \
         VALUES ('orders', 'k', 't', 'text/plain', CAST('{oops' AS BLOB))",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(count(store.pool(), "outbox_events").await, 1);
}

#[tokio::test]
async fn migrating_twice_changes_nothing_and_newer_schemas_are_refused() {
    let db = SqliteFile::new();
    let pool = db.pool().await;
    let store = SqliteStore::new(pool.clone(), SqliteOptions::default());

    let first = migrate(&pool).await.unwrap();
    assert_eq!(first.applied, (1..=LATEST_VERSION).collect::<Vec<_>>());
    assert_eq!(first.version, LATEST_VERSION);

    let again = migrate(&pool).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, LATEST_VERSION);
    assert_eq!(store.check_schema().await.unwrap(), LATEST_VERSION);

    sqlx::query(
        "INSERT INTO outbox_schema_migrations (version, description, checksum) \
         VALUES (99, 'from the future', '0')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let err = store.migrate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("newer than"), "{err}");
    let err = store.check_schema().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("newer than"), "{err}");
}

#[tokio::test]
async fn an_unmigrated_database_is_a_configuration_error() {
    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, SqliteOptions::default());

    let err = store.check_schema().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("outbox migrate"), "{err}");

    let mut tx = store.begin().await.unwrap();
    let err = store
        .enqueue(&mut tx, &[event("order-1", 1)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());
}

#[tokio::test]
async fn plain_sql_writers_get_ids_positions_and_partitions() {
    let (_db, store) = setup().await;
    let before_ms = unix_ms();

    sqlx::query(
        "INSERT INTO outbox_events (stream, key, event_type, payload) \
         VALUES ('orders', 'order-7', 'order.created', CAST('{\"total\": 5}' AS BLOB))",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox_events (stream, key, event_type, payload, headers) \
         VALUES ('orders', 'order-7', 'order.paid', CAST('{}' AS BLOB), '{\"n\": 1}')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let after_ms = unix_ms();

    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, created_at FROM outbox_events ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 2);
    for (text, created_ms) in &stored {
        let id = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(id.get_version_num(), 7, "{text}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{text}");
        assert_eq!(id.to_string(), *text, "stored in canonical lowercase form");

        // The id's leading 48 bits are the row's creation time in Unix
        // milliseconds. The schema derives milliseconds from `julianday`, whose
        // floating point may round them down by one.
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let ms = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
        assert_eq!(ms, *created_ms, "{text}");
        assert!(
            (before_ms - 1..=after_ms).contains(&ms),
            "{text}: {ms} not in {before_ms}.."
        );
    }
    assert_ne!(stored[0].0, stored[1].0);

    let events = store.pending(10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].seq, events[1].seq), (1, 2));
    assert_eq!((events[0].partition, events[1].partition), (0, 0));
    assert_eq!(events[1].headers.get("n").map(String::as_str), Some("1"));
    assert_eq!(events[0].payload.as_bytes(), br#"{"total": 5}"#);
    assert_eq!(events[0].payload.content_type(), Payload::JSON);
}

#[tokio::test]
async fn status_counts_pending_events() {
    let (_db, store) = setup().await;
    let empty = store.status().await.unwrap();
    assert_eq!((empty.pending, empty.dead_lettered), (0, 0));
    assert_eq!(empty.oldest_pending_age, None);

    for i in 0..7 {
        let mut tx = store.begin().await.unwrap();
        store
            .enqueue(&mut tx, &[event(&format!("k{i}"), i)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let status = store.status().await.unwrap();
    assert_eq!(status.pending, 7);
    assert_eq!(status.dead_lettered, 0);
    assert!(status.oldest_pending_age.is_some());
    assert_eq!(status.schema_version, LATEST_VERSION);
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_named_in_the_error() {
    let url = "sqlite:///nonexistent-dir/x/y.db";
    let err = SqliteStore::connect(url, SqliteOptions::default())
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(err.to_string().contains("/nonexistent-dir/x/y.db"), "{err}");

    let err = SqliteStore::connect("sqlite://x.db?mode=sideways", SqliteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());
}

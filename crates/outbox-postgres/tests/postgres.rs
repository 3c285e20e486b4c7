//! The PostgreSQL store against a real server: atomicity with the business
//! change, positions under concurrency, out-of-order commits, bad input,
//! migrations and the wake-up signal.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::try_join_all;
use outbox_core::{ErrorKind, Identifier, Limits, NewEvent, OutboxStore, Payload, RelayStore};
use outbox_postgres::{PgOptions, PgStore, migrate};
use outbox_testkit::PgSchema;
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

async fn setup(test: &str) -> Option<(PgSchema, PgStore)> {
    let pg = outbox_testkit::pg(test).await?;
    let options = PgOptions {
        schema: pg.schema.clone(),
        ..PgOptions::default()
    };
    let store = PgStore::new(pg.pool.clone(), options);
    store.migrate().await.expect("migrate");
    let orders = format!(
        "CREATE TABLE {}.orders (id bigint PRIMARY KEY, total bigint NOT NULL)",
        pg.schema.quoted()
    );
    sqlx::raw_sql(AssertSqlSafe(orders))
        .execute(&pg.pool)
        .await
        .unwrap();
    Some((pg, store))
}

fn event(key: &str, n: i64) -> NewEvent {
    NewEvent::json("orders", key, "order.created", &json!({ "n": n })).unwrap()
}

async fn count(pg: &PgSchema, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {}.{table}", pg.schema.quoted());
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&pg.pool)
        .await
        .unwrap()
}

async fn insert_order(
    pg: &PgSchema,
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {}.orders (id, total) VALUES ($1, 10)",
        pg.schema.quoted()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

#[tokio::test]
async fn business_row_and_events_commit_together() {
    let Some((pg, store)) = setup("business_row_and_events_commit_together").await else {
        return;
    };

    let mut tx = pg.pool.begin().await.unwrap();
    insert_order(&pg, &mut tx, 1).await.unwrap();
    let enqueued = store
        .enqueue(&mut tx, &[event("order-1", 1), event("order-1", 2)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(enqueued.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(count(&pg, "orders").await, 1);
    assert_eq!(count(&pg, "events").await, 2);
    pg.drop().await;
}

#[tokio::test]
async fn a_transaction_that_does_not_commit_leaves_nothing() {
    let Some((pg, store)) = setup("a_transaction_that_does_not_commit_leaves_nothing").await else {
        return;
    };

    // Explicit rollback.
    let mut tx = pg.pool.begin().await.unwrap();
    insert_order(&pg, &mut tx, 1).await.unwrap();
    store
        .enqueue(&mut tx, &[event("order-1", 1)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // An error inside the transaction: the business insert fails after enqueue.
    let mut tx = pg.pool.begin().await.unwrap();
    store
        .enqueue(&mut tx, &[event("order-2", 1)])
        .await
        .unwrap();
    insert_order(&pg, &mut tx, 2).await.unwrap();
    let duplicate = insert_order(&pg, &mut tx, 2).await;
    assert!(duplicate.is_err());
    // PostgreSQL answers COMMIT of an aborted transaction with a rollback.
    let _ = tx.commit().await;

    // Dropped without commit.
    {
        let mut tx = pg.pool.begin().await.unwrap();
        insert_order(&pg, &mut tx, 3).await.unwrap();
        store
            .enqueue(&mut tx, &[event("order-3", 1)])
            .await
            .unwrap();
    }

    assert_eq!(count(&pg, "orders").await, 0);
    assert_eq!(count(&pg, "events").await, 0);

    // A rolled-back position is handed out again: positions have no gaps.
    let mut tx = pg.pool.begin().await.unwrap();
    let enqueued = store
        .enqueue(&mut tx, &[event("order-1", 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(enqueued[0].seq, 1);
    pg.drop().await;
}

#[tokio::test]
async fn concurrent_writers_get_positions_in_write_order() {
    let Some((pg, store)) = setup("concurrent_writers_get_positions_in_write_order").await else {
        return;
    };
    let counters = format!(
        "CREATE TABLE {s}.counters (key text PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO {s}.counters SELECT 'key-' || i, 0 FROM generate_series(0, 49) i;",
        s = pg.schema.quoted()
    );
    sqlx::raw_sql(AssertSqlSafe(counters))
        .execute(&pg.pool)
        .await
        .unwrap();
    let bump = format!(
        "UPDATE {}.counters SET n = n + 1 WHERE key = $1 RETURNING n",
        pg.schema.quoted()
    );

    // Each writer bumps its key's business counter and enqueues the counter's
    // new value, in one transaction. The counter records the order in which the
    // writes to that key happened; the event's position must follow it.
    let writers = (0..1000).map(|i| {
        let (store, pool, bump) = (store.clone(), pg.pool.clone(), bump.clone());
        tokio::spawn(async move {
            let key = format!("key-{}", i % 50);
            let mut tx = pool.begin().await?;
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(bump))
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
            let enqueued = store.enqueue(&mut tx, &[event(&key, n)]).await.unwrap();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(enqueued[0])
        })
    });
    let results: Vec<_> = try_join_all(writers).await.unwrap();
    let ids: HashSet<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap().event_id)
        .collect();
    assert_eq!(ids.len(), 1000);

    let events = store.pending(5000).await.unwrap();
    assert_eq!(events.len(), 1000, "every event stored once");
    let stored_ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(stored_ids, ids);

    let mut by_key: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for e in &events {
        let payload: serde_json::Value = serde_json::from_slice(e.payload.as_bytes()).unwrap();
        by_key
            .entry(&e.key)
            .or_default()
            .push((e.seq, payload["n"].as_i64().unwrap()));
    }
    assert_eq!(by_key.len(), 50);
    for (key, mut positions) in by_key {
        positions.sort();
        let expected: Vec<(i64, i64)> = (1..=20).map(|n| (n, n)).collect();
        assert_eq!(
            positions, expected,
            "key {key}: position must follow write order"
        );
    }
    pg.drop().await;
}

#[tokio::test]
async fn a_transaction_that_commits_last_is_not_lost() {
    let Some((pg, store)) = setup("a_transaction_that_commits_last_is_not_lost").await else {
        return;
    };

    let mut slow = pg.pool.begin().await.unwrap();
    let first = store.enqueue(&mut slow, &[event("slow", 1)]).await.unwrap()[0];

    for i in 0..20 {
        let mut tx = pg.pool.begin().await.unwrap();
        store
            .enqueue(&mut tx, &[event(&format!("fast-{i}"), 1)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let before = store.pending(100).await.unwrap();
    assert_eq!(before.len(), 20, "uncommitted event must not be visible");

    slow.commit().await.unwrap();

    let after = store.pending(100).await.unwrap();
    assert_eq!(after.len(), 21);
    let slow_row = after.iter().find(|e| e.event_id == first.event_id).unwrap();
    let max_fast_id = after
        .iter()
        .filter(|e| e.key != "slow")
        .map(|e| e.id)
        .max()
        .unwrap();
    assert!(
        slow_row.id < max_fast_id,
        "the slow event took its id before the others committed"
    );
    pg.drop().await;
}

#[tokio::test]
async fn bad_events_are_refused_and_nothing_is_written() {
    let Some((pg, store)) = setup("bad_events_are_refused_and_nothing_is_written").await else {
        return;
    };
    let small = PgStore::new(
        pg.pool.clone(),
        PgOptions {
            schema: pg.schema.clone(),
            limits: Limits {
                max_payload_bytes: 16,
                ..Limits::default()
            },
            ..PgOptions::default()
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
        (&store, not_json, "not valid json"),
        (&small, too_big, "exceeds the limit of 16 bytes"),
        (&store, no_stream, "stream is empty"),
        (&store, no_key, "key is empty"),
    ];
    for (store, bad, expected) in cases {
        let mut tx = pg.pool.begin().await.unwrap();
        insert_order(&pg, &mut tx, 1).await.unwrap();
        let err = store
            .enqueue(&mut tx, &[event("ok", 1), bad])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(expected), "{err}");
        tx.rollback().await.unwrap();
    }
    assert_eq!(count(&pg, "events").await, 0);
    assert_eq!(count(&pg, "key_positions").await, 0);

    // Writers in other languages get the same checks from the database.
    let raw = format!(
        "INSERT INTO {}.events (stream, key, event_type, content_type, payload) \
         VALUES ($1, 'k', 't', $2, convert_to($3, 'UTF8'))",
        pg.schema.quoted()
    );
    let refused = [
        ("orders", "application/json", "{oops"),
        ("orders", "application/json ; charset=utf-8", "{oops"),
        ("orders", "application/cloudevents+json", "[1"),
        ("or ders", "application/json", "{}"),
        ("", "application/json", "{}"),
    ];
    for (stream, content_type, payload) in refused {
        let err = sqlx::query(AssertSqlSafe(raw.clone()))
            .bind(stream)
            .bind(content_type)
            .bind(payload)
            .execute(&pg.pool)
            .await
            .unwrap_err();
        let kind = outbox_postgres::map_error(err).kind();
        assert_eq!(kind, ErrorKind::InvalidInput, "{stream:?} {content_type:?}");
    }
    assert_eq!(count(&pg, "events").await, 0);
    pg.drop().await;
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    for name in ["Outbox", "out;drop", "pg_catalog", ""] {
        let err = name.parse::<Identifier>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}");
        assert!(err.to_string().contains("invalid schema name"));
    }
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let url = "postgres://app:hunter2@127.0.0.1:1/shop";
    let err = PgStore::connect(url, PgOptions::default())
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("127.0.0.1:1/shop"), "{err}");
    assert!(
        err.chain().to_lowercase().contains("refused"),
        "{}",
        err.chain()
    );
    assert!(!err.chain().contains("hunter2"));
    assert!(!format!("{err:?}").contains("hunter2"));

    let err = PgStore::connect("postgres://app:hunter2@[bad", PgOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!err.chain().contains("hunter2"));
}

#[tokio::test]
async fn migrating_twice_changes_nothing_and_newer_schemas_are_refused() {
    let Some((pg, store)) = setup("migrating_twice_changes_nothing").await else {
        return;
    };

    let again = migrate(&pg.pool, &pg.schema).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, outbox_postgres::LATEST_VERSION);
    assert_eq!(
        store.check_schema().await.unwrap(),
        outbox_postgres::LATEST_VERSION
    );

    let future = format!(
        "INSERT INTO {}.schema_migrations (version, description, checksum) \
         VALUES (99, 'from the future', '0')",
        pg.schema.quoted()
    );
    sqlx::query(AssertSqlSafe(future))
        .execute(&pg.pool)
        .await
        .unwrap();

    let err = store.migrate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("newer than"), "{err}");
    let err = store.check_schema().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    pg.drop().await;
}

#[tokio::test]
async fn an_unmigrated_schema_is_a_configuration_error() {
    let Some(pg) = outbox_testkit::pg("an_unmigrated_schema_is_a_configuration_error").await else {
        return;
    };
    let store = PgStore::new(
        pg.pool.clone(),
        PgOptions {
            schema: pg.schema.clone(),
            ..PgOptions::default()
        },
    );
    let err = store.check_schema().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("outbox migrate"));
    pg.drop().await;
}

#[tokio::test]
async fn plain_sql_writers_get_ids_positions_and_partitions() {
    let Some((pg, store)) = setup("plain_sql_writers_get_ids_positions_and_partitions").await
    else {
        return;
    };
    let s = pg.schema.quoted();

    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT * FROM {s}.enqueue('orders', 'order-7', 'order.created', '{{\"total\": 5}}')"
    )))
    .fetch_one(&pg.pool)
    .await
    .unwrap();
    let id: uuid::Uuid = row.get("event_id");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(row.get::<i64, _>("seq"), 1);

    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {s}.events (stream, key, event_type, payload, headers) \
         VALUES ('orders', 'order-7', 'order.paid', convert_to('{{}}', 'UTF8'), '{{\"n\": 1}}')"
    )))
    .execute(&pg.pool)
    .await
    .unwrap();

    let events = store.pending(10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].seq, 2);
    assert_eq!(events[0].partition, events[1].partition);
    assert!((0..256).contains(&events[0].partition));
    assert_eq!(events[1].headers.get("n").map(String::as_str), Some("1"));
    assert_eq!(events[0].payload.as_bytes(), br#"{"total": 5}"#);
    pg.drop().await;
}

/// Whether no notification arrives within 300 ms.
async fn quiet(listener: &mut sqlx::postgres::PgListener) -> bool {
    tokio::time::timeout(Duration::from_millis(300), listener.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn a_parked_relay_is_notified_on_commit_only() {
    let Some((pg, store)) = setup("a_parked_relay_is_notified_on_commit_only").await else {
        return;
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(&pg.pool)
        .await
        .unwrap();
    listener.listen(&store.channel()).await.unwrap();

    // No relay parked: writers do not pay for a NOTIFY.
    let mut tx = pg.pool.begin().await.unwrap();
    store.enqueue(&mut tx, &[event("a", 1)]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(quiet(&mut listener).await, "notified with no relay parked");

    let park = format!(
        "INSERT INTO {}.parked_relays VALUES (gen_random_uuid(), now() + interval '1 minute')",
        pg.schema.quoted()
    );
    sqlx::query(AssertSqlSafe(park))
        .execute(&pg.pool)
        .await
        .unwrap();

    let mut tx = pg.pool.begin().await.unwrap();
    store.enqueue(&mut tx, &[event("b", 1)]).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        quiet(&mut listener).await,
        "notified for a rolled-back transaction"
    );

    let mut tx = pg.pool.begin().await.unwrap();
    store.enqueue(&mut tx, &[event("c", 1)]).await.unwrap();
    tx.commit().await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("notified within 5 s")
        .unwrap();
    assert_eq!(note.channel(), store.channel());
    drop(listener);
    pg.drop().await;
}

#[tokio::test]
async fn status_counts_pending_events() {
    let Some((pg, store)) = setup("status_counts_pending_events").await else {
        return;
    };
    let empty = store.status().await.unwrap();
    assert_eq!((empty.pending, empty.dead_lettered), (0, 0));
    assert_eq!(empty.oldest_pending_age, None);

    for i in 0..7 {
        let mut tx = pg.pool.begin().await.unwrap();
        store
            .enqueue(&mut tx, &[event(&format!("k{i}"), i)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let status = store.status().await.unwrap();
    assert_eq!(status.pending, 7);
    assert!(status.oldest_pending_age.is_some());
    assert_eq!(status.schema_version, outbox_postgres::LATEST_VERSION);
    pg.drop().await;
}

#[tokio::test]
async fn reclaim_shrinks_a_drained_table_whose_last_rows_went_last() {
    let Some((pg, store)) = setup("reclaim_shrinks_a_drained_table").await else {
        return;
    };
    let s = pg.schema.quoted();
    let run = |sql: String| {
        let pool = pg.pool.clone();
        async move {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap()
        }
    };
    let heap_pages = || async {
        let sql = format!("SELECT pg_relation_size('{s}.events') / 8192");
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .fetch_one(&pg.pool)
            .await
            .unwrap()
    };
    run(format!(
        "INSERT INTO {s}.events (stream, key, event_type, payload) \
         SELECT 'orders', 'k' || (g % 100), 'order.created', \
                convert_to('{{\"n\": ' || g || ', \"pad\": \"' \
                           || repeat('x', 100) || '\"}}', 'UTF8') \
         FROM generate_series(1, 20000) AS g"
    ))
    .await;
    let full = heap_pages().await;
    assert!(
        full > 300,
        "the table should span hundreds of pages, has {full}"
    );

    // A drain as the relay does it: most rows deleted and reclaimed, then the
    // last few, newest rows, on under 2 % of the pages, deleted and reclaimed.
    run(format!(
        "DELETE FROM {s}.events WHERE id <= (SELECT max(id) - 150 FROM {s}.events)"
    ))
    .await;
    store.reclaim().await.unwrap();
    run(format!("DELETE FROM {s}.events")).await;
    store.reclaim().await.unwrap();

    assert_eq!(heap_pages().await, 0, "the drained table kept its pages");
    pg.drop().await;
}

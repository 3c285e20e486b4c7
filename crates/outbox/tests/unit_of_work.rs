//! The Unit of Work on both stores: the aggregates' rows and their events
//! commit together, in the order the events were recorded, or not at all.

use outbox::{Aggregate, ErrorKind, NewEvent, OutboxStore, Payload, UnitOfWork};
use outbox::{postgres::PgStore, sqlite::SqliteStore};
use serde_json::json;
use sqlx::AssertSqlSafe;

/// An aggregate that records one event per call to `touch`.
struct Counter {
    key: String,
    recorded: Vec<NewEvent>,
}

impl Counter {
    fn new(key: &str) -> Self {
        Counter {
            key: key.to_owned(),
            recorded: Vec::new(),
        }
    }

    fn touch(&mut self, n: i64) {
        let event = NewEvent::json("counters", &self.key, "counter.touched", &json!({ "n": n }));
        self.recorded.push(event.unwrap());
    }
}

impl Aggregate for Counter {
    fn take_events(&mut self) -> Vec<NewEvent> {
        std::mem::take(&mut self.recorded)
    }
}

fn not_json() -> NewEvent {
    NewEvent::new(
        "counters",
        "bad",
        "t",
        Payload::bytes("application/json", "{"),
    )
}

/// `(key, seq, n)` of every pending event, sorted.
async fn pending(store: &impl OutboxStore) -> Vec<(String, i64, i64)> {
    let mut out: Vec<_> = store
        .pending(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e.payload.as_bytes()).unwrap();
            (e.key, e.seq, v["n"].as_i64().unwrap_or(-1))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn sqlite_unit_of_work() {
    let file = outbox_testkit::SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    let rows = "CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL)";
    sqlx::query(rows).execute(store.pool()).await.unwrap();
    let save = "INSERT INTO counters VALUES ($1, $2) \
                ON CONFLICT (key) DO UPDATE SET n = excluded.n";

    // Committed: the row and both events, positions in recording order.
    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    let mut c = Counter::new("a");
    c.touch(1);
    c.touch(2);
    sqlx::query(save)
        .bind("a")
        .bind(2)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.collect(&mut c);
    assert_eq!(uow.events().len(), 2);
    let enqueued = uow.commit().await.unwrap();
    assert_eq!(enqueued.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

    // Rolled back, dropped, and refused at commit: nothing of them remains.
    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    sqlx::query(save)
        .bind("b")
        .bind(1)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.record(NewEvent::json("counters", "b", "t", &json!({"n": 1})).unwrap());
    uow.rollback().await.unwrap();

    {
        let mut uow = UnitOfWork::begin(&store).await.unwrap();
        sqlx::query(save)
            .bind("c")
            .bind(1)
            .execute(uow.connection())
            .await
            .unwrap();
        uow.record(NewEvent::json("counters", "c", "t", &json!({"n": 1})).unwrap());
    }

    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    sqlx::query(save)
        .bind("d")
        .bind(1)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.record(not_json());
    assert_eq!(
        uow.commit().await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM counters ORDER BY key")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(keys, ["a"]);
    assert_eq!(
        pending(&store).await,
        [("a".into(), 1, 1), ("a".into(), 2, 2)]
    );
}

#[tokio::test]
async fn postgres_unit_of_work() {
    let Some(pg) = outbox_testkit::pg("postgres_unit_of_work").await else {
        return;
    };
    let options = outbox::postgres::PgOptions {
        schema: pg.schema.clone(),
        ..Default::default()
    };
    let store = PgStore::new(pg.pool.clone(), options);
    store.migrate().await.unwrap();
    let s = pg.schema.quoted();
    let rows = format!("CREATE TABLE {s}.counters (key text PRIMARY KEY, n bigint NOT NULL)");
    sqlx::raw_sql(AssertSqlSafe(rows))
        .execute(store.pool())
        .await
        .unwrap();
    let save = format!(
        "INSERT INTO {s}.counters VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET n = excluded.n"
    );
    let save = || sqlx::query(AssertSqlSafe(save.clone()));

    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    let mut c = Counter::new("a");
    c.touch(1);
    c.touch(2);
    save()
        .bind("a")
        .bind(2_i64)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.collect(&mut c);
    let enqueued = uow.commit().await.unwrap();
    assert_eq!(enqueued.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    save()
        .bind("b")
        .bind(1_i64)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.record(NewEvent::json("counters", "b", "t", &json!({"n": 1})).unwrap());
    uow.rollback().await.unwrap();

    {
        let mut uow = UnitOfWork::begin(&store).await.unwrap();
        save()
            .bind("c")
            .bind(1_i64)
            .execute(uow.connection())
            .await
            .unwrap();
        uow.record(NewEvent::json("counters", "c", "t", &json!({"n": 1})).unwrap());
    }

    let mut uow = UnitOfWork::begin(&store).await.unwrap();
    save()
        .bind("d")
        .bind(1_i64)
        .execute(uow.connection())
        .await
        .unwrap();
    uow.record(not_json());
    assert_eq!(
        uow.commit().await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let keys: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT key FROM {s}.counters ORDER BY key"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(keys, ["a"]);
    assert_eq!(
        pending(&store).await,
        [("a".into(), 1, 1), ("a".into(), 2, 2)]
    );
    drop(store);
    pg.drop().await;
}

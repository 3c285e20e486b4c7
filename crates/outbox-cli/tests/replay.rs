//! Keeping published events and replaying them: a relay run with
//! `--keep-published` leaves the outbox empty and the published log full;
//! `outbox replay` sends a selection of the log again, under the same ids and in
//! each key's order; a short keep empties the log by itself.

mod support;

use std::path::Path;
use std::time::Duration;

use outbox::{NewEvent, OutboxStore};
use serde_json::Value;
use support::{PoisonEndpoint, Relay, SECRET, eventually, ok, orders_database, outbox};

/// (id, key, sequence, stream) of every line of a file publisher's output.
fn published_lines(path: &Path) -> Vec<(String, String, u64, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let text = |name: &str| v[name].as_str().unwrap().to_owned();
            (
                text("id"),
                text("partitionkey"),
                text("sequence").parse().unwrap(),
                text("outboxstream"),
            )
        })
        .collect()
}

/// A relay publishing to the file `output`, keeping what it published for `keep`.
fn relay_keeping(url: &str, output: &Path, keep: &str) -> Relay {
    Relay::start(&[
        "--database-url",
        url,
        "--publisher",
        "file",
        "--output",
        output.to_str().unwrap(),
        "--keep-published",
        keep,
    ])
}

/// Counts the rows of an SQLite table through the store's pool.
async fn rows(store: &outbox::sqlite::SqliteStore, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn enqueue(store: &outbox::sqlite::SqliteStore, stream: &str, keys: &[&str], per_key: u32) {
    let events: Vec<NewEvent> = (0..per_key)
        .flat_map(|n| keys.iter().map(move |key| (n, *key)))
        .map(|(n, key)| {
            NewEvent::json(stream, key, "order.changed", &serde_json::json!({ "n": n })).unwrap()
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
}

/// A database file migrated by the binary, its URL, a store on it, and a
/// directory for the publishers' files.
async fn migrated() -> (
    outbox_testkit::SqliteFile,
    String,
    outbox::sqlite::SqliteStore,
    tempfile::TempDir,
) {
    let db = outbox_testkit::SqliteFile::new();
    let url = db.url();
    ok(&["migrate", "--database-url", &url]);
    let store = outbox::sqlite::SqliteStore::new(db.pool().await, Default::default());
    (db, url, store, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_events_replay_under_their_ids_in_key_order() {
    let (_db, url, store, dir) = migrated().await;
    let first = dir.path().join("first.jsonl");

    let early = chrono::Utc::now();
    enqueue(&store, "orders", &["o-1", "o-2", "o-3"], 10).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    enqueue(&store, "payments", &["p-1"], 5).await;

    let relay = relay_keeping(&url, &first, "1h");
    eventually("35 events published", async || {
        published_lines(&first).len() == 35 && store.status().await.unwrap().pending == 0
    })
    .await;
    eventually("35 events kept", async || {
        rows(&store, "outbox_published").await == 35
    })
    .await;
    drop(relay);
    assert_eq!(rows(&store, "outbox_events").await, 0);

    // Everything, to a second file: the same ids, each key in its order.
    let all = dir.path().join("all.jsonl");
    let since = early.to_rfc3339();
    let out = ok(&[
        "replay",
        "--database-url",
        &url,
        "--since",
        &since,
        "--publisher",
        "file",
        "--output",
        all.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), "replayed 35 events");
    let mut original = published_lines(&first);
    let mut replayed = published_lines(&all);
    for lines in [&original, &replayed] {
        for key in ["o-1", "o-2", "o-3", "p-1"] {
            let seqs: Vec<u64> = lines.iter().filter(|l| l.1 == key).map(|l| l.2).collect();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "key {key} out of order");
        }
    }
    original.sort();
    replayed.sort();
    assert_eq!(
        replayed, original,
        "a replay sends the kept events as they were"
    );

    // A stream and a key narrow it; so does a time.
    let one_key = dir.path().join("one-key.jsonl");
    ok(&[
        "replay",
        "--database-url",
        &url,
        "--since",
        "1h",
        "--stream",
        "orders",
        "--key",
        "o-2",
        "--publisher",
        "file",
        "--output",
        one_key.to_str().unwrap(),
    ]);
    let lines = published_lines(&one_key);
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l.1 == "o-2" && l.3 == "orders"));

    let later = dir.path().join("later.jsonl");
    let out = ok(&[
        "replay",
        "--database-url",
        &url,
        "--since",
        &middle.to_rfc3339(),
        "--publisher",
        "file",
        "--output",
        later.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["published"], 5, "{out}");
    assert_eq!(report["complete"], true, "{out}");
    assert!(published_lines(&later).iter().all(|l| l.3 == "payments"));

    // A dry run counts and publishes nothing.
    let out = ok(&[
        "replay",
        "--database-url",
        &url,
        "--since",
        &since,
        "--stream",
        "orders",
        "--dry-run",
        "--json",
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["would_publish"], 30, "{out}");

    // The published log is unchanged by all of it.
    assert_eq!(rows(&store, "outbox_published").await, 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_is_refused_stops_and_resumes_where_it_stopped() {
    let (db, store) = orders_database().await;
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let relay = relay_keeping(&url, &output, "1h");
    eventually("8 events kept", async || {
        rows(&store, "outbox_published").await == 8
    })
    .await;
    drop(relay);

    // The endpoint refuses order-1's second event: that key stops there, and
    // the replay stops after the batch, naming the row to resume after.
    let endpoint = PoisonEndpoint::start().await;
    let replay = |after: &str| {
        outbox(&[
            "replay",
            "--database-url",
            &url,
            "--since",
            &since,
            "--after",
            after,
            "--publisher",
            "webhook",
            "--webhook-url",
            &endpoint.url,
            "--webhook-secret",
            SECRET,
            "--json",
        ])
    };
    let failed = replay("0");
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let report: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["published"], 5, "order-1's first and all of order-2");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("resume with --after"), "{stderr}");
    let resume = report["resume_after"].as_i64().unwrap().to_string();
    assert_eq!(endpoint.accepted.lock().await["order-1"], vec![1]);

    endpoint.fix();
    let resumed = replay(&resume);
    assert!(resumed.status.success(), "{resumed:?}");
    let accepted = endpoint.accepted.lock().await.clone();
    assert_eq!(accepted["order-1"], vec![1, 2, 3, 4]);
    // order-2's events after the resume point are sent again: at least once,
    // under the same ids, in order.
    let order_2 = &accepted["order-2"];
    assert_eq!(&order_2[..4], &[1, 2, 3, 4]);
    assert!(order_2[4..].windows(2).all(|w| w[0] < w[1]), "{order_2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_keep_empties_the_published_log_by_itself() {
    let (_db, url, store, dir) = migrated().await;
    let output = dir.path().join("out.jsonl");
    enqueue(&store, "orders", &["a", "b"], 20).await;

    let _relay = relay_keeping(&url, &output, "3s");
    eventually("40 events published and kept", async || {
        published_lines(&output).len() == 40 && rows(&store, "outbox_published").await == 40
    })
    .await;
    eventually("the log emptied after the keep", async || {
        rows(&store, "outbox_published").await == 0
    })
    .await;
    assert_eq!(store.status().await.unwrap().pending, 0);
}

#[test]
fn bad_replay_and_keep_settings_are_refused_by_name() {
    let db = outbox_testkit::SqliteFile::new();
    let url = db.url();
    ok(&["migrate", "--database-url", &url]);

    let out = outbox(&["replay", "--database-url", &url, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--since") && stderr.contains("RFC 3339"),
        "{stderr}"
    );

    let out = outbox(&[
        "replay",
        "--database-url",
        &url,
        "--since",
        "1h",
        "--until",
        "2h",
    ]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until"));

    let out = outbox(&[
        "relay",
        "--database-url",
        &url,
        "--publisher",
        "stdout",
        "--keep-published",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep-published"));
}

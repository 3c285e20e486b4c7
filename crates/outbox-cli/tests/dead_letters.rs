//! `outbox dead-letters` against a relay that dead-letters a poison event: the
//! event is listed, and once its cause is fixed a retry publishes it in its
//! key's order, before the key's events that waited behind it.

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox::sqlite::SqliteStore;
use outbox::{Consumer, NewEvent, OutboxStore};
use outbox_testkit::SqliteFile;
use tokio::sync::Mutex;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn outbox(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUTBOX_") {
            command.env_remove(name);
        }
    }
    command.args(args).output().expect("run outbox")
}

fn ok(args: &[&str]) -> String {
    let out = outbox(args);
    assert!(
        out.status.success(),
        "outbox {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `holds` every 50 ms until it is true, failing after 30 s.
async fn eventually(what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !holds().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_held_listed_and_retried_in_its_keys_order() {
    // The endpoint refuses `order-1`'s second event while `broken` is set: a
    // 422, which the relay takes as permanent and dead-letters at once.
    let mut receiver = outbox_webhook::WebhookReceiver::bind(outbox_webhook::ReceiverOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: Some(outbox_webhook::WebhookSecret::parse(SECRET).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr());
    let broken = Arc::new(AtomicBool::new(true));
    let accepted: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let consumer = tokio::spawn({
        let (broken, accepted) = (broken.clone(), accepted.clone());
        async move {
            while let Ok(Some(delivery)) = receiver.next().await {
                let event = delivery.event().unwrap().clone();
                let seq = event.seq.unwrap();
                if event.key == "order-1" && seq == 2 && broken.load(Ordering::SeqCst) {
                    delivery.reject().await.unwrap();
                    continue;
                }
                accepted
                    .lock()
                    .await
                    .entry(event.key)
                    .or_default()
                    .push(seq);
                delivery.ack().await.unwrap();
            }
        }
    });

    let db = SqliteFile::new();
    let url = db.url();
    let store = SqliteStore::new(db.pool().await, Default::default());
    store.migrate().await.unwrap();
    let events: Vec<NewEvent> = (1..=4)
        .flat_map(|_| ["order-1", "order-2"])
        .map(|key| NewEvent::json("orders", key, "order.changed", &serde_json::json!({})).unwrap())
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    let _relay = Relay(
        Command::new(env!("CARGO_BIN_EXE_outbox"))
            .args(["relay", "--database-url", &url, "--publisher", "webhook"])
            .args(["--webhook-url", &hook, "--webhook-secret", SECRET])
            .args(["--dead-letter-policy", "hold"])
            .env_remove("OUTBOX_PUBLISHER")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the relay"),
    );

    // The other key flows; the poisoned key stops behind its dead letter.
    eventually("order-2 published", async || {
        accepted.lock().await.get("order-2").map(Vec::len) == Some(4)
    })
    .await;
    eventually("the dead letter", async || {
        store.status().await.unwrap().dead_lettered == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted.lock().await.get("order-1"), Some(&vec![1]));

    let listed = ok(&["dead-letters", "list", "--database-url", &url, "--json"]);
    let lines: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert_eq!(lines[0]["key"], "order-1");
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[0]["held"], true);
    assert!(
        lines[0]["last_error"].as_str().unwrap().contains("422"),
        "{listed}"
    );
    let event_id = lines[0]["event_id"].as_str().unwrap().to_owned();
    let shown = ok(&["dead-letters", "show", "--database-url", &url, &event_id]);
    assert!(shown.contains("holds key:   yes"), "{shown}");

    // Acting without naming anything is refused, and changes nothing.
    let refused = outbox(&["dead-letters", "retry", "--database-url", &url]);
    assert_eq!(refused.status.code(), Some(65));
    assert_eq!(store.status().await.unwrap().dead_lettered, 1);

    broken.store(false, Ordering::SeqCst);
    let retried = ok(&["dead-letters", "retry", "--database-url", &url, &event_id]);
    assert_eq!(retried.trim(), "retried 1 dead letter");

    eventually("order-1 published", async || {
        accepted.lock().await.get("order-1").map(Vec::len) == Some(4)
    })
    .await;
    assert_eq!(accepted.lock().await["order-1"], vec![1, 2, 3, 4]);
    let status = store.status().await.unwrap();
    assert_eq!((status.pending, status.dead_lettered), (0, 0));
    consumer.abort();
}

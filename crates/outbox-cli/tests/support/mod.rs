//! Pieces the process-level tests share: the `outbox` binary with a clean
//! environment, a relay process killed on drop, and a webhook endpoint that
//! refuses one event while told to.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox::Consumer;
use tokio::sync::Mutex;

/// The signing secret of the test endpoints.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The `outbox` binary with no `OUTBOX_` variable inherited from the test's
/// environment.
pub fn outbox_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUTBOX_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

pub fn outbox(args: &[&str]) -> Output {
    outbox_command().args(args).output().expect("run outbox")
}

/// Runs `outbox ARGS`, failing the test unless it succeeds; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = outbox(args);
    assert!(
        out.status.success(),
        "outbox {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A relay process, killed when dropped.
pub struct Relay(pub Child);

impl Relay {
    pub fn start(args: &[&str]) -> Relay {
        let child = outbox_command()
            .arg("relay")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the relay");
        Relay(child)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `holds` every 50 ms until it is true, failing after 30 s.
pub async fn eventually(what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !holds().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook endpoint that answers 422 to the second event of `order-1` while
/// `broken` is set, and records the positions it accepted per key.
pub struct PoisonEndpoint {
    pub url: String,
    pub broken: Arc<AtomicBool>,
    pub accepted: Arc<Mutex<HashMap<String, Vec<i64>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PoisonEndpoint {
    pub async fn start() -> PoisonEndpoint {
        let options = outbox_webhook::ReceiverOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Some(outbox_webhook::WebhookSecret::parse(SECRET).unwrap()),
            ..Default::default()
        };
        let mut receiver = outbox_webhook::WebhookReceiver::bind(options)
            .await
            .unwrap();
        let url = format!("http://{}/hook", receiver.local_addr());
        let broken = Arc::new(AtomicBool::new(true));
        let accepted: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
        let task = tokio::spawn({
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
        PoisonEndpoint {
            url,
            broken,
            accepted,
            task,
        }
    }

    /// How many events of `key` were accepted.
    pub async fn accepted_count(&self, key: &str) -> usize {
        self.accepted.lock().await.get(key).map_or(0, Vec::len)
    }

    /// Lets the poison event through from now on.
    pub fn fix(&self) {
        self.broken.store(false, Ordering::SeqCst);
    }
}

impl Drop for PoisonEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Four events each of `order-1` and `order-2`, in a migrated SQLite database.
pub async fn orders_database() -> (outbox_testkit::SqliteFile, outbox::sqlite::SqliteStore) {
    use outbox::NewEvent;
    let file = outbox_testkit::SqliteFile::new();
    let store = outbox::sqlite::SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    let events: Vec<NewEvent> = (1..=4)
        .flat_map(|_| ["order-1", "order-2"])
        .map(|key| NewEvent::json("orders", key, "order.changed", &serde_json::json!({})).unwrap())
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    (file, store)
}

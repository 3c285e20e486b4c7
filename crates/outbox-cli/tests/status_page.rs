//! The relay's status page in headless Chromium: it shows the pending count
//! the database has, lists the dead letter, and its retry button re-drives it.
//!
//! Needs Node.js, Debian's `chromium` and `npm install` in `tests/browser`
//! (`.ci/run` sees to all three); without them the test is skipped, or fails
//! under `CI=true`.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use outbox::OutboxStore;
use support::{PoisonEndpoint, Relay, SECRET, eventually, orders_database};

/// Whether node, chromium and the page driver are all here; under CI their
/// absence fails the test.
fn browser_ready(dir: &Path) -> bool {
    let node = Command::new("node").arg("--version").output().is_ok();
    let chromium = Path::new("/usr/bin/chromium").exists();
    let driver = dir.join("node_modules/playwright-core").exists();
    if node && chromium && driver {
        return true;
    }
    let missing = format!("node: {node}, chromium: {chromium}, playwright-core: {driver}");
    if outbox_testkit::in_ci() {
        panic!("the status page test needs a browser ({missing}); run .ci/run");
    }
    eprintln!("skipping the status page test: {missing}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_backlog_and_its_retry_button_redrives() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser_ready(&dir) {
        return;
    }
    let endpoint = PoisonEndpoint::start().await;
    let (db, store) = orders_database().await;
    let http = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _relay = Relay::start(&[
        "--database-url",
        &db.url(),
        "--publisher",
        "webhook",
        "--webhook-url",
        &endpoint.url,
        "--webhook-secret",
        SECRET,
        "--dead-letter-policy",
        "hold",
        "--http-listen",
        &http.to_string(),
    ]);
    eventually("the dead letter", async || {
        let status = store.status().await.unwrap();
        status.dead_lettered == 1 && endpoint.accepted_count("order-2").await == 4
    })
    .await;
    let pending = store.status().await.unwrap().pending;
    assert_eq!(pending, 2, "order-1's events behind the dead letter");
    let letters = outbox::DeadLetterStore::dead_letters(&store, &Default::default(), 10)
        .await
        .unwrap();
    let event_id = letters[0].event.event_id.to_string();

    endpoint.fix();
    let url = format!("http://{http}/");
    let page = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            Command::new("node")
                .arg(dir.join("status_page.mjs"))
                .args([&url, &pending.to_string(), &event_id])
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    assert!(
        page.status.success(),
        "{}{}",
        String::from_utf8_lossy(&page.stdout),
        String::from_utf8_lossy(&page.stderr)
    );

    eventually("order-1 published", async || {
        endpoint.accepted_count("order-1").await == 4
    })
    .await;
    assert_eq!(endpoint.accepted.lock().await["order-1"], vec![1, 2, 3, 4]);
    assert_eq!(store.status().await.unwrap().dead_lettered, 0);
}

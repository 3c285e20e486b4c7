//! `outbox dead-letters` against a relay that dead-letters a poison event: the
//! event is listed, and once its cause is fixed a retry publishes it in its
//! key's order, before the key's events that waited behind it.

mod support;

use std::time::Duration;

use outbox::OutboxStore;
use support::{PoisonEndpoint, Relay, SECRET, eventually, ok, orders_database, outbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_held_listed_and_retried_in_its_keys_order() {
    let endpoint = PoisonEndpoint::start().await;
    let (db, store) = orders_database().await;
    let url = db.url();
    let _relay = Relay::start(&[
        "--database-url",
        &url,
        "--publisher",
        "webhook",
        "--webhook-url",
        &endpoint.url,
        "--webhook-secret",
        SECRET,
        "--dead-letter-policy",
        "hold",
    ]);

    // The other key flows; the poisoned key stops behind its dead letter.
    eventually("order-2 published", async || {
        endpoint.accepted_count("order-2").await == 4
    })
    .await;
    eventually("the dead letter", async || {
        store.status().await.unwrap().dead_lettered == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        endpoint.accepted.lock().await.get("order-1"),
        Some(&vec![1])
    );

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

    endpoint.fix();
    let retried = ok(&["dead-letters", "retry", "--database-url", &url, &event_id]);
    assert_eq!(retried.trim(), "retried 1 dead letter");

    eventually("order-1 published", async || {
        endpoint.accepted_count("order-1").await == 4
    })
    .await;
    assert_eq!(endpoint.accepted.lock().await["order-1"], vec![1, 2, 3, 4]);
    let status = store.status().await.unwrap();
    assert_eq!((status.pending, status.dead_lettered), (0, 0));
}

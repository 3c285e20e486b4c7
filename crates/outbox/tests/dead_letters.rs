//! Dead letters on both stores: filtered listing, a retry that puts an event
//! back at its own position, and a discard.

use std::time::Duration;

use outbox::{
    AnyStore, DeadLetterFilter, DeadLetterStore, NewEvent, OutboxStore, RelayId, RelayStore,
    StoreOptions,
};

/// Three events of `order-1` and one of `order-2`; the second of `order-1` is
/// dead-lettered (held), then listed, retried and checked, then dead-lettered
/// again and discarded.
async fn retry_and_discard(store: AnyStore) {
    store.migrate().await.unwrap();
    let events: Vec<NewEvent> = ["order-1", "order-1", "order-1", "order-2"]
        .iter()
        .map(|key| NewEvent::json("orders", *key, "order.changed", &serde_json::json!({})).unwrap())
        .collect();
    store.enqueue_alone(&events).await.unwrap();
    let relay = RelayId::new();
    let partitions = store
        .maintain_leases(relay, Duration::from_secs(30))
        .await
        .unwrap();
    let claimed = store.claim(&partitions, &[], &[], 10).await.unwrap();
    let second = claimed
        .iter()
        .map(|c| c.event.clone())
        .find(|e| e.key == "order-1" && e.seq == 2)
        .unwrap();
    store
        .dead_letter(relay, second.id, "broker said 422: no", true)
        .await
        .unwrap();

    let everything = DeadLetterFilter::default();
    let listed = store.dead_letters(&everything, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event.event_id, second.event_id);
    assert!(listed[0].held);
    assert_eq!(listed[0].last_error, "broker said 422: no");
    for (filter, expected) in [
        (
            DeadLetterFilter {
                key: Some("order-2".into()),
                ..everything.clone()
            },
            0,
        ),
        (
            DeadLetterFilter {
                error_contains: Some("422".into()),
                ..everything.clone()
            },
            1,
        ),
        (
            DeadLetterFilter {
                error_contains: Some("500".into()),
                ..everything.clone()
            },
            0,
        ),
        (
            DeadLetterFilter {
                older_than: Some(Duration::from_secs(3600)),
                ..everything.clone()
            },
            0,
        ),
        (
            DeadLetterFilter {
                newer_than: Some(Duration::from_secs(3600)),
                ..everything.clone()
            },
            1,
        ),
        (
            DeadLetterFilter {
                stream: Some("orders".into()),
                ..everything.clone()
            },
            1,
        ),
    ] {
        let found = store.dead_letters(&filter, 10).await.unwrap().len();
        assert_eq!(found, expected, "{filter:?}");
    }

    // Held: the key's third event is not claimed while its second is dead.
    let held: Vec<_> = store.claim(&partitions, &[], &[], 10).await.unwrap();
    assert!(
        held.iter()
            .all(|c| c.event.key != "order-1" || c.event.seq == 1)
    );

    assert_eq!(store.retry_dead_letters(&everything).await.unwrap(), 1);
    assert!(
        store
            .dead_letters(&everything, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let back = store
        .claim(&partitions, &[], &[], 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event)
        .find(|e| e.event_id == second.event_id)
        .expect("the retried event is claimable again");
    assert_eq!((back.id, back.seq, back.attempts), (second.id, 2, 0));

    // New events still get the next position, not the retried one's.
    let fourth = NewEvent::json("orders", "order-1", "order.changed", &serde_json::json!({}));
    let later = store.enqueue_alone(&[fourth.unwrap()]).await.unwrap();
    assert_eq!(later[0].seq, 4);

    store
        .dead_letter(relay, second.id, "again", false)
        .await
        .unwrap();
    let only_it = DeadLetterFilter {
        event_ids: vec![second.event_id],
        ..DeadLetterFilter::default()
    };
    assert_eq!(store.discard_dead_letters(&only_it).await.unwrap(), 1);
    assert_eq!(store.status().await.unwrap().dead_lettered, 0);
}

#[tokio::test]
async fn sqlite_dead_letters_are_retried_in_place_and_discarded() {
    let file = outbox_testkit::SqliteFile::new();
    let store = AnyStore::connect(&file.url(), StoreOptions::default())
        .await
        .unwrap();
    retry_and_discard(store).await;
}

#[tokio::test]
async fn postgres_dead_letters_are_retried_in_place_and_discarded() {
    let Some(pg) = outbox_testkit::pg("postgres_dead_letters_are_retried_in_place").await else {
        return;
    };
    let options = StoreOptions {
        schema: pg.schema.clone(),
        ..StoreOptions::default()
    };
    let store = AnyStore::connect(&pg.url, options).await.unwrap();
    retry_and_discard(store).await;
    pg.drop().await;
}

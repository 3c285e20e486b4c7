//! The NATS publisher against a real JetStream server.
//!
//! Every test publishes into a stream of its own and reads the results back with a
//! consumer on a separate client, never through the publisher. Tests that stop the
//! broker run a private `nats-server`; the others share the test server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use outbox_core::{ErrorKind, Event, Payload, Publisher, format_sequence};
use outbox_nats::{NatsOptions, NatsPublisher};
use outbox_testkit::stored_event as event;
use outbox_testkit::{NatsFixture, NatsServer, nats, unique_stream_name};

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// JetStream's default duplicate window, used for every stream here.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

async fn connect(url: &str, ack_timeout: Duration) -> NatsPublisher {
    let options = NatsOptions {
        url: url.to_owned(),
        ack_timeout,
        ..NatsOptions::default()
    };
    bounded(NatsPublisher::connect(options))
        .await
        .expect("connect publisher")
}

/// A publisher on the fixture's server, with the fixture's stream set up.
async fn publisher_with_stream(fixture: &NatsFixture) -> NatsPublisher {
    let publisher = connect(&fixture.url, Duration::from_secs(5)).await;
    let subjects = publisher.stream_subjects(&fixture.stream).unwrap();
    bounded(publisher.ensure_stream(&fixture.stream, &subjects, DUPLICATE_WINDOW))
        .await
        .expect("ensure stream");
    publisher
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

async fn stored_count(jetstream: &jetstream::Context, name: &str) -> u64 {
    let mut stream = bounded(jetstream.get_stream(name)).await.unwrap();
    bounded(stream.info()).await.unwrap().state.messages
}

/// Reads every message of the stream `name` in stream order, through an ephemeral
/// consumer of `jetstream`, after checking that the stream holds `count` of them.
async fn read_back(
    jetstream: &jetstream::Context,
    name: &str,
    count: usize,
) -> Vec<jetstream::Message> {
    assert_eq!(stored_count(jetstream, name).await, count as u64);

    let stream = bounded(jetstream.get_stream(name)).await.unwrap();
    let reader = bounded(stream.create_consumer(consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(300),
        max_ack_pending: 100_000,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    }))
    .await
    .unwrap();

    let mut messages = bounded(reader.messages()).await.unwrap();
    let mut read = Vec::with_capacity(count);
    while read.len() < count {
        let next = bounded(messages.next()).await;
        read.push(next.expect("message stream ended").expect("read message"));
    }
    read
}

fn header<'a>(message: &'a jetstream::Message, name: &str) -> &'a str {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
        .unwrap_or_else(|| panic!("message has no {name} header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_stored_once_each_and_in_key_order() {
    let Some(fixture) = nats("concurrent_publishes_are_stored_once_each_and_in_key_order").await
    else {
        return;
    };
    let publisher = Arc::new(publisher_with_stream(&fixture).await);

    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let mut events: HashMap<String, Vec<Event>> = HashMap::new();
    for key in &keys {
        let of_key = (1..=50)
            .map(|seq| {
                let event_type = if seq % 2 == 0 {
                    "order.paid"
                } else {
                    "order.placed"
                };
                event(&fixture.stream, key, seq, event_type)
            })
            .collect();
        events.insert(key.clone(), of_key);
    }

    // One task per key, as the relay does: keys in parallel, each key in order.
    let mut tasks = Vec::new();
    for of_key in events.values() {
        let of_key = of_key.clone();
        let publisher = Arc::clone(&publisher);
        tasks.push(tokio::spawn(async move {
            for event in &of_key {
                publisher.publish(event).await.expect("publish");
            }
        }));
    }
    bounded(async {
        for task in tasks {
            task.await.expect("publishing task");
        }
    })
    .await;

    let mut expected: HashMap<String, Event> = events
        .values()
        .flatten()
        .map(|e| (e.event_id.to_string(), e.clone()))
        .collect();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for message in read_back(&fixture.jetstream, &fixture.stream, 5_000).await {
        let id = header(&message, "Nats-Msg-Id");
        let event = expected
            .remove(id)
            .unwrap_or_else(|| panic!("event {id} stored twice or never published"));

        assert_eq!(
            message.subject.as_str(),
            format!("{}.{}", event.stream, event.event_type)
        );
        assert_eq!(header(&message, "ce-id"), id);
        assert_eq!(header(&message, "ce-specversion"), "1.0");
        assert_eq!(
            header(&message, "ce-source"),
            format!("/outbox/{}", fixture.stream)
        );
        assert_eq!(header(&message, "ce-type"), event.event_type);
        assert_eq!(
            header(&message, "ce-time"),
            event
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        assert_eq!(header(&message, "ce-partitionkey"), event.key);
        assert_eq!(header(&message, "ce-sequence"), format_sequence(event.seq));
        assert_eq!(header(&message, "Content-Type"), "application/json");
        assert_eq!(
            header(&message, "tenant"),
            format!("tenant-of-{}", event.key)
        );
        assert_eq!(message.payload.as_ref(), event.payload.as_bytes());

        let previous = last_seq.insert(event.key.clone(), event.seq).unwrap_or(0);
        assert!(
            previous < event.seq,
            "key {} stored seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty(), "{} events missing", expected.len());

    fixture.drop().await;
}

#[tokio::test]
async fn the_same_event_published_twice_is_stored_once() {
    let Some(fixture) = nats("the_same_event_published_twice_is_stored_once").await else {
        return;
    };
    let publisher = publisher_with_stream(&fixture).await;
    let event = event(&fixture.stream, "order-1", 1, "order.placed");

    bounded(publisher.publish(&event)).await.unwrap();
    bounded(publisher.publish(&event)).await.unwrap();
    let (a, b) =
        bounded(async { tokio::join!(publisher.publish(&event), publisher.publish(&event)) }).await;
    a.unwrap();
    b.unwrap();

    let stored = read_back(&fixture.jetstream, &fixture.stream, 1).await;
    assert_eq!(
        header(&stored[0], "Nats-Msg-Id"),
        event.event_id.to_string()
    );

    fixture.drop().await;
}

#[tokio::test]
async fn oversized_payloads_are_permanent_failures() {
    let Some(fixture) = nats("oversized_payloads_are_permanent_failures").await else {
        return;
    };
    let publisher = publisher_with_stream(&fixture).await;

    let mut big = event(&fixture.stream, "order-1", 1, "order.placed");
    big.payload = Payload::bytes("application/octet-stream", vec![0; publisher.max_payload()]);
    let err = bounded(publisher.publish(&big)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let fits = event(&fixture.stream, "order-1", 2, "order.placed");
    bounded(publisher.publish(&fits)).await.unwrap();
    assert_eq!(stored_count(&fixture.jetstream, &fixture.stream).await, 1);

    fixture.drop().await;
}

#[tokio::test]
async fn invalid_subjects_are_permanent_failures() {
    let Some(fixture) = nats("invalid_subjects_are_permanent_failures").await else {
        return;
    };
    let publisher = publisher_with_stream(&fixture).await;

    for event_type in [
        "order..placed",
        "order.*",
        "order.>",
        "order.",
        "order placed",
    ] {
        let event = event(&fixture.stream, "order-1", 1, event_type);
        let err = bounded(publisher.publish(&event)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{event_type:?}");
    }
    assert_eq!(stored_count(&fixture.jetstream, &fixture.stream).await, 0);

    fixture.drop().await;
}

#[tokio::test]
async fn a_subject_without_a_stream_is_a_transient_failure() {
    let Some(fixture) = nats("a_subject_without_a_stream_is_a_transient_failure").await else {
        return;
    };
    let publisher = connect(&fixture.url, Duration::from_secs(5)).await;

    let event = event(&unique_stream_name(), "order-1", 1, "order.placed");
    let err = bounded(publisher.publish(&event)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
}

#[tokio::test]
async fn ensure_stream_creates_once_and_leaves_an_existing_stream_alone() {
    let Some(fixture) =
        nats("ensure_stream_creates_once_and_leaves_an_existing_stream_alone").await
    else {
        return;
    };
    let publisher = connect(&fixture.url, Duration::from_secs(5)).await;
    let subjects = publisher.stream_subjects(&fixture.stream).unwrap();
    assert_eq!(subjects, [format!("{}.>", fixture.stream)]);

    let window = Duration::from_secs(30);
    bounded(publisher.ensure_stream(&fixture.stream, &subjects, window))
        .await
        .unwrap();
    bounded(publisher.ensure_stream(&fixture.stream, &["elsewhere.>"], DUPLICATE_WINDOW))
        .await
        .unwrap();

    let mut stream = bounded(fixture.jetstream.get_stream(&fixture.stream))
        .await
        .unwrap();
    let config = bounded(stream.info()).await.unwrap().config.clone();
    assert_eq!(config.subjects, subjects);
    assert_eq!(config.duplicate_window, window);
    assert_eq!(config.storage, stream::StorageType::File);

    let err = bounded(publisher.ensure_stream("bad.name", &subjects, window))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    fixture.drop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let options = NatsOptions {
        url: format!("nats://relay:s3cret@127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::default()
    };

    let err = bounded(NatsPublisher::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.chain().contains("s3cret"), "{}", err.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_until_it_returns() {
    let Some(mut server) = NatsServer::spawn("a_stopped_server_is_unavailable_until_it_returns")
    else {
        return;
    };
    let name = unique_stream_name();
    // Far longer than the test allows: the outage must be noticed, not waited out.
    let publisher = connect(&server.url(), Duration::from_secs(20)).await;
    let subjects = publisher.stream_subjects(&name).unwrap();
    bounded(publisher.ensure_stream(&name, &subjects, DUPLICATE_WINDOW))
        .await
        .unwrap();

    let before = event(&name, "order-1", 1, "order.placed");
    bounded(publisher.publish(&before)).await.unwrap();

    server.stop();
    let during = event(&name, "order-1", 2, "order.placed");
    let started = Instant::now();
    let err = bounded(publisher.publish(&during)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    server.start();
    bounded(async {
        loop {
            match publisher.publish(&during).await {
                Ok(()) => break,
                Err(err) => assert!(err.is_retryable(), "{}", err.chain()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let after = event(&name, "order-1", 3, "order.placed");
    bounded(publisher.publish(&after)).await.unwrap();

    let reader = bounded(async_nats::connect(server.url())).await.unwrap();
    let jetstream = jetstream::new(reader);
    let stored = read_back(&jetstream, &name, 3).await;
    let ids: Vec<&str> = stored.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(
        ids,
        [
            before.event_id.to_string(),
            during.event_id.to_string(),
            after.event_id.to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cut_off_by_a_crash_fail_at_once_and_retry_without_duplicates() {
    let Some(mut server) =
        NatsServer::spawn("publishes_cut_off_by_a_crash_fail_at_once_and_retry_without_duplicates")
    else {
        return;
    };
    let name = unique_stream_name();
    // Far longer than the test allows, so a publish can only end in time by
    // noticing that its connection is gone.
    let ack_timeout = Duration::from_secs(20);
    let publisher = Arc::new(connect(&server.url(), ack_timeout).await);
    let subjects = publisher.stream_subjects(&name).unwrap();
    bounded(publisher.ensure_stream(&name, &subjects, DUPLICATE_WINDOW))
        .await
        .unwrap();

    let events: Vec<Event> = (0..300)
        .map(|k| event(&name, &format!("key-{k}"), 1, "order.placed"))
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = events
        .iter()
        .cloned()
        .map(|event| {
            let publisher = Arc::clone(&publisher);
            tokio::spawn(async move { publisher.publish(&event).await })
        })
        .collect();
    server.stop();

    let mut failed = Vec::new();
    for (task, event) in tasks.into_iter().zip(&events) {
        if let Err(err) = bounded(task).await.expect("publishing task") {
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
            failed.push(event);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    server.start();
    bounded(async {
        for event in failed {
            while let Err(err) = publisher.publish(event).await {
                assert!(err.is_retryable(), "{}", err.chain());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await;

    let reader = bounded(async_nats::connect(server.url())).await.unwrap();
    let stored = read_back(&jetstream::new(reader), &name, events.len()).await;
    let mut ids: Vec<&str> = stored.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    let mut expected: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

/// The consumer adapter reads back what the publisher wrote, decodes a foreign
/// message as malformed, and an unacknowledged message comes again on reconnect.
#[tokio::test]
async fn the_consumer_decodes_acks_and_redelivers() {
    use outbox_core::{Consumer, ReceivedEvent};
    use outbox_nats::{NatsConsumer, NatsConsumerOptions};

    let Some(fixture) = nats("the_consumer_decodes_acks_and_redelivers").await else {
        return;
    };
    let publisher = publisher_with_stream(&fixture).await;
    let mut first = event(&fixture.stream, "order-1", 1, "order.placed");
    first.headers.insert("tenant".into(), "acme".into());
    let second = event(&fixture.stream, "order-1", 2, "order.paid");
    bounded(publisher.publish(&first)).await.unwrap();
    bounded(publisher.publish(&second)).await.unwrap();
    let subject = format!("{}.foreign", fixture.stream);
    bounded(async {
        fixture
            .jetstream
            .publish(subject, "x".into())
            .await
            .unwrap()
            .await
    })
    .await
    .unwrap();

    let options = NatsConsumerOptions {
        url: fixture.url.clone(),
        stream: fixture.stream.clone(),
        durable: "reader".into(),
        ..NatsConsumerOptions::default()
    };
    let mut consumer = bounded(NatsConsumer::connect(options.clone()))
        .await
        .unwrap();
    let delivery = bounded(consumer.next()).await.unwrap().unwrap();
    let expected = ReceivedEvent::from_event(&first, &format!("/outbox/{}", fixture.stream));
    assert_eq!(delivery.event().unwrap(), &expected);
    bounded(delivery.ack()).await.unwrap();
    let unacked = bounded(consumer.next()).await.unwrap().unwrap();
    assert_eq!(unacked.event().unwrap().event_id, second.event_id);
    let foreign = bounded(consumer.next()).await.unwrap().unwrap();
    assert_eq!(foreign.event().unwrap_err().kind(), ErrorKind::Permanent);
    bounded(foreign.ack()).await.unwrap();
    drop(unacked);
    drop(consumer);

    let mut again = bounded(NatsConsumer::connect(options)).await.unwrap();
    let delivery = bounded(again.next()).await.unwrap().unwrap();
    assert_eq!(delivery.event().unwrap().event_id, second.event_id);

    fixture.drop().await;
}

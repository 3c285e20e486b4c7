//! The MQTT publisher and consumer against a real Mosquitto.
//!
//! Every test uses a stream, hence a topic, and client ids of its own. What the
//! publisher sent is read back by a subscriber written with rumqttc directly,
//! never through this crate; the consumer adapter is tested against the
//! publisher. Tests that stop the broker run a private `mosquitto`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use outbox_core::{
    Consumer, ErrorKind, Event, EventId, Headers, Payload, Publisher, ReceivedEvent,
};
use outbox_mqtt::{MqttConsumer, MqttConsumerOptions, MqttOptions, MqttPublisher};
use outbox_testkit::{MosquittoServer, MqttFixture, mqtt, unique_mqtt_name};
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};
use tokio::sync::mpsc;

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// How long a test waits to be sure that nothing more arrives.
const QUIET: Duration = Duration::from_millis(500);

fn event(stream: &str, key: &str, seq: i64) -> Event {
    let body = format!(r#"{{"key":"{key}","seq":{seq}}}"#);
    let mut headers = Headers::new();
    headers.insert("tenant".into(), format!("tenant-of-{key}"));
    Event {
        id: seq,
        event_id: EventId::new(),
        stream: stream.to_owned(),
        key: key.to_owned(),
        seq,
        partition: 0,
        event_type: "order.placed".to_owned(),
        payload: Payload::bytes(Payload::JSON, body),
        headers,
        created_at: Utc::now(),
        attempts: 0,
    }
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

async fn publisher(url: &str) -> MqttPublisher {
    let options = MqttOptions {
        url: url.to_owned(),
        ..MqttOptions::default()
    };
    bounded(MqttPublisher::connect(options))
        .await
        .expect("connect publisher")
}

fn consumer_options(fixture: &MqttFixture, client_id: &str) -> MqttConsumerOptions {
    MqttConsumerOptions {
        url: fixture.url.clone(),
        client_id: client_id.to_owned(),
        topic_filter: format!("outbox/{}", fixture.stream),
        ..MqttConsumerOptions::default()
    }
}

async fn consumer(options: &MqttConsumerOptions) -> MqttConsumer {
    bounded(MqttConsumer::connect(options.clone()))
        .await
        .expect("connect consumer")
}

async fn next_event(consumer: &mut MqttConsumer) -> outbox_core::Delivery {
    bounded(consumer.next())
        .await
        .expect("next delivery")
        .expect("consumer ended")
}

/// The id of the event a delivery carries.
fn id_of(delivery: &outbox_core::Delivery) -> EventId {
    delivery.event().expect("a decoded event").event_id
}

/// A subscriber of its own, written with rumqttc alone: a clean session with
/// automatic acknowledgements, whose messages arrive on a channel.
struct RawSubscriber {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl RawSubscriber {
    async fn subscribe(options: rumqttc::MqttOptions, filter: &str) -> RawSubscriber {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();

        bounded(async {
            loop {
                match eventloop.poll().await.expect("raw subscriber connection") {
                    MqttEvent::Incoming(Packet::SubAck(_)) => break,
                    _ => continue,
                }
            }
        })
        .await;

        let (sender, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                        if sender.send(publish).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => panic!("raw subscriber lost its connection: {err}"),
                }
            }
        });
        RawSubscriber {
            client,
            messages,
            task,
        }
    }

    async fn next(&mut self) -> rumqttc::Publish {
        bounded(self.messages.recv())
            .await
            .expect("raw subscriber ended")
    }

    /// Whether nothing more arrives for a while.
    async fn is_quiet(&mut self) -> bool {
        tokio::time::timeout(QUIET, self.messages.recv())
            .await
            .is_err()
    }
}

impl Drop for RawSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_arrive_complete_and_in_key_order() {
    let Some(fixture) = mqtt("concurrent_publishes_arrive_complete_and_in_key_order").await else {
        return;
    };
    let topic = format!("outbox/{}", fixture.stream);
    let mut subscriber =
        RawSubscriber::subscribe(fixture.client_options(&unique_mqtt_name()), &topic).await;
    let publisher = Arc::new(publisher(&fixture.url).await);

    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let events: Vec<Vec<Event>> = keys
        .iter()
        .map(|key| {
            (1..=50)
                .map(|seq| event(&fixture.stream, key, seq))
                .collect()
        })
        .collect();

    // One task per key, as the relay does: keys in parallel, each key in order.
    let started = Instant::now();
    let tasks: Vec<_> = events
        .iter()
        .cloned()
        .map(|of_key| {
            let publisher = Arc::clone(&publisher);
            tokio::spawn(async move {
                for event in &of_key {
                    publisher.publish(event).await.expect("publish");
                }
            })
        })
        .collect();
    bounded(async {
        for task in tasks {
            task.await.expect("publishing task");
        }
    })
    .await;
    let published_in = started.elapsed();

    let mut expected: HashMap<String, &Event> = events
        .iter()
        .flatten()
        .map(|e| (e.event_id.to_string(), e))
        .collect();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for _ in 0..5_000 {
        let message = subscriber.next().await;
        assert_eq!(message.topic, topic);
        assert_eq!(message.qos, QoS::AtLeastOnce);
        assert!(!message.retain);

        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let id = body["id"].as_str().expect("id attribute");
        // MQTT has no deduplication; without a reconnect nothing comes twice.
        let event = expected
            .remove(id)
            .unwrap_or_else(|| panic!("event {id} received twice or never published"));
        assert_eq!(body["partitionkey"], event.key.as_str());
        assert_eq!(
            body["outboxheaders"],
            format!(r#"{{"tenant":"tenant-of-{}"}}"#, event.key)
        );
        assert_eq!(body["data"]["seq"], event.seq);

        let previous = last_seq.insert(event.key.clone(), event.seq).unwrap_or(0);
        assert!(
            previous < event.seq,
            "key {} arrived with seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty(), "{} events missing", expected.len());
    assert!(subscriber.is_quiet().await, "more messages than events");

    eprintln!(
        "published 5,000 events over 100 keys in {} ms ({:.0} events/s)",
        published_in.as_millis(),
        5_000.0 / published_in.as_secs_f64()
    );
    let _ = subscriber.client.try_disconnect();
}

#[tokio::test]
async fn one_message_carries_the_cloudevent_byte_for_byte() {
    let Some(fixture) = mqtt("one_message_carries_the_cloudevent_byte_for_byte").await else {
        return;
    };
    let topic = format!("outbox/{}", fixture.stream);
    let mut subscriber =
        RawSubscriber::subscribe(fixture.client_options(&unique_mqtt_name()), &topic).await;
    let publisher = publisher(&fixture.url).await;

    let id = "0197a3c0-7d2e-7000-8000-0000000000aa";
    let mut headers = Headers::new();
    headers.insert("tenant".into(), "acme".into());
    let event = Event {
        id: 1,
        event_id: EventId::from_uuid(id.parse().unwrap()),
        stream: fixture.stream.clone(),
        key: "eu/order-7".into(),
        seq: 42,
        partition: 9,
        event_type: "order.placed".into(),
        payload: Payload::bytes(Payload::JSON, r#"{"total":30}"#),
        headers,
        created_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
        attempts: 0,
    };
    bounded(publisher.publish(&event)).await.unwrap();

    let message = subscriber.next().await;
    let expected = format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/outbox/{stream}","#,
            r#""type":"order.placed","time":"2026-03-04T05:06:07.000000Z","#,
            r#""datacontenttype":"application/json","partitionkey":"eu/order-7","#,
            r#""sequence":"0000000000000000042","outboxstream":"{stream}","#,
            r#""outboxheaders":"{{\"tenant\":\"acme\"}}","data":{{"total":30}}}}"#
        ),
        id = id,
        stream = fixture.stream
    );
    assert_eq!(std::str::from_utf8(&message.payload).unwrap(), expected);
    assert_eq!(message.topic, topic);
}

#[tokio::test]
async fn the_topic_template_escapes_keys_into_one_level() {
    let Some(fixture) = mqtt("the_topic_template_escapes_keys_into_one_level").await else {
        return;
    };
    let filter = format!("shop/{}/+", fixture.stream);
    let mut subscriber =
        RawSubscriber::subscribe(fixture.client_options(&unique_mqtt_name()), &filter).await;
    let options = MqttOptions {
        url: fixture.url.clone(),
        topic_template: "shop/{stream}/{key}".into(),
        ..MqttOptions::default()
    };
    let publisher = bounded(MqttPublisher::connect(options)).await.unwrap();

    for key in ["plain", "eu/7", "a+b#c"] {
        let event = event(&fixture.stream, key, 1);
        bounded(publisher.publish(&event)).await.unwrap();
        assert_eq!(
            publisher.topic_for(&event).unwrap(),
            subscriber.next().await.topic
        );
    }
    assert!(subscriber.is_quiet().await);
}

#[tokio::test]
async fn oversized_messages_are_permanent_failures_and_send_nothing() {
    let Some(fixture) = mqtt("oversized_messages_are_permanent_failures_and_send_nothing").await
    else {
        return;
    };
    let topic = format!("outbox/{}", fixture.stream);
    let mut subscriber =
        RawSubscriber::subscribe(fixture.client_options(&unique_mqtt_name()), &topic).await;
    let options = MqttOptions {
        url: fixture.url.clone(),
        max_message_bytes: 4096,
        ..MqttOptions::default()
    };
    let publisher = bounded(MqttPublisher::connect(options)).await.unwrap();

    let mut big = event(&fixture.stream, "order-1", 1);
    big.payload = Payload::bytes("application/octet-stream", vec![7; 4096]);
    let err = bounded(publisher.publish(&big)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let mut not_json = event(&fixture.stream, "order-1", 1);
    not_json.payload = Payload::bytes(Payload::JSON, "{nope");
    let err = bounded(publisher.publish(&not_json)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let fits = event(&fixture.stream, "order-1", 2);
    bounded(publisher.publish(&fits)).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&subscriber.next().await.payload).unwrap();
    assert_eq!(body["id"], fits.event_id.to_string());
    assert!(subscriber.is_quiet().await);
}

#[tokio::test]
async fn the_consumer_decodes_what_the_publisher_sent() {
    let Some(fixture) = mqtt("the_consumer_decodes_what_the_publisher_sent").await else {
        return;
    };
    let options = consumer_options(&fixture, &unique_mqtt_name());
    let mut consumer = consumer(&options).await;
    let publisher = publisher(&fixture.url).await;

    let json = event(&fixture.stream, "order-1", 1);
    let mut binary = event(&fixture.stream, "order-1", 2);
    binary.payload = Payload::bytes("application/octet-stream", vec![0, 159, 255, b'\n']);
    binary.headers.clear();
    for sent in [&json, &binary] {
        bounded(publisher.publish(sent)).await.unwrap();
    }

    let source = format!("/outbox/{}", fixture.stream);
    for sent in [&json, &binary] {
        let delivery = next_event(&mut consumer).await;
        assert_eq!(
            delivery.event().unwrap(),
            &ReceivedEvent::from_event(sent, &source)
        );
        bounded(delivery.ack()).await.unwrap();
    }
    assert_eq!(consumer.name(), "mqtt");

    bounded(consumer.close()).await;
    bounded(MqttConsumer::delete_session(options))
        .await
        .unwrap();
}

#[tokio::test]
async fn acked_deliveries_stay_acked_and_a_dropped_one_comes_back() {
    let Some(fixture) = mqtt("acked_deliveries_stay_acked_and_a_dropped_one_comes_back").await
    else {
        return;
    };
    let options = consumer_options(&fixture, &unique_mqtt_name());
    let mut first = consumer(&options).await;
    let publisher = publisher(&fixture.url).await;

    let events: Vec<Event> = (1..=4)
        .map(|seq| event(&fixture.stream, "order-1", seq))
        .collect();
    for event in &events[..3] {
        bounded(publisher.publish(event)).await.unwrap();
    }

    // Three unacknowledged at once, settled out of order, one never.
    let d1 = next_event(&mut first).await;
    let d2 = next_event(&mut first).await;
    let d3 = next_event(&mut first).await;
    let received: Vec<EventId> = [&d1, &d2, &d3].into_iter().map(id_of).collect();
    let sent: Vec<EventId> = events[..3].iter().map(|e| e.event_id).collect();
    assert_eq!(received, sent);
    bounded(d3.ack()).await.unwrap();
    bounded(d1.ack()).await.unwrap();
    drop(d2);
    bounded(first.close()).await;

    // The same client id resumes the session: only the dropped one comes back.
    let mut second = consumer(&options).await;
    let again = next_event(&mut second).await;
    assert_eq!(id_of(&again), events[1].event_id);
    bounded(again.ack()).await.unwrap();

    bounded(publisher.publish(&events[3])).await.unwrap();
    let fresh = next_event(&mut second).await;
    assert_eq!(id_of(&fresh), events[3].event_id);
    bounded(fresh.ack()).await.unwrap();
    bounded(second.close()).await;

    // Nothing is left in the session once everything was acknowledged.
    let mut third = consumer(&options).await;
    let nothing = tokio::time::timeout(QUIET, third.next()).await;
    assert!(nothing.is_err(), "a settled message came back: {nothing:?}");
    bounded(third.close()).await;
    bounded(MqttConsumer::delete_session(options))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_keeps_messages_published_while_its_consumer_is_away() {
    let Some(fixture) = mqtt("a_session_keeps_messages_published_while_its_consumer_is_away").await
    else {
        return;
    };
    let options = consumer_options(&fixture, &unique_mqtt_name());
    bounded(MqttConsumer::ensure_session(options.clone()))
        .await
        .unwrap();

    let publisher = publisher(&fixture.url).await;
    let sent = event(&fixture.stream, "order-1", 1);
    bounded(publisher.publish(&sent)).await.unwrap();

    let mut consumer = consumer(&options).await;
    let delivery = next_event(&mut consumer).await;
    assert_eq!(id_of(&delivery), sent.event_id);
    bounded(delivery.ack()).await.unwrap();
    bounded(consumer.close()).await;

    // Once deleted, the session no longer collects messages.
    bounded(MqttConsumer::delete_session(options.clone()))
        .await
        .unwrap();
    bounded(publisher.publish(&event(&fixture.stream, "order-1", 2)))
        .await
        .unwrap();
    let mut consumer = crate::consumer(&options).await;
    let nothing = tokio::time::timeout(QUIET, consumer.next()).await;
    assert!(
        nothing.is_err(),
        "a deleted session kept a message: {nothing:?}"
    );
    bounded(consumer.close()).await;
    bounded(MqttConsumer::delete_session(options))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_malformed_message_is_delivered_as_malformed_and_rejected() {
    let Some(fixture) = mqtt("a_malformed_message_is_delivered_as_malformed_and_rejected").await
    else {
        return;
    };
    let options = consumer_options(&fixture, &unique_mqtt_name());
    let mut consumer = consumer(&options).await;

    // Sent by a plain client: a structured event without `id`, then garbage.
    let (raw, mut eventloop) = AsyncClient::new(fixture.client_options(&unique_mqtt_name()), 10);
    let without_id = concat!(
        r#"{"specversion":"1.0","source":"/outbox/x","type":"order.placed","#,
        r#""time":"2026-03-04T05:06:07.000000Z","datacontenttype":"application/json","#,
        r#""partitionkey":"order-1","sequence":"0000000000000000001","#,
        r#""outboxstream":"x","data":{}}"#
    );
    let topic = format!("outbox/{}", fixture.stream);
    for body in [without_id.as_bytes(), b"\xff not json"] {
        raw.publish(&topic, QoS::AtLeastOnce, false, body.to_vec())
            .await
            .unwrap();
    }
    // Both acknowledged before the good event goes out, so they come first.
    bounded(async {
        let mut acked = 0;
        while acked < 2 {
            if let MqttEvent::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await;
    let good = event(&fixture.stream, "order-1", 1);
    bounded(publisher(&fixture.url).await.publish(&good))
        .await
        .unwrap();

    for _ in 0..2 {
        let delivery = next_event(&mut consumer).await;
        let err = delivery.event().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{}", err.chain());
        bounded(delivery.reject()).await.unwrap();
    }
    let delivery = next_event(&mut consumer).await;
    assert_eq!(id_of(&delivery), good.event_id);
    bounded(delivery.ack()).await.unwrap();
    bounded(consumer.close()).await;

    // Rejected means taken off the session: nothing comes back.
    let mut consumer = crate::consumer(&options).await;
    let nothing = tokio::time::timeout(QUIET, consumer.next()).await;
    assert!(
        nothing.is_err(),
        "a rejected message came back: {nothing:?}"
    );
    bounded(consumer.close()).await;
    bounded(MqttConsumer::delete_session(options))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable_and_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("mqtt://relay:s3cret@127.0.0.1:{port}");

    let options = MqttOptions {
        url: url.clone(),
        connect_timeout: Duration::from_secs(2),
        ..MqttOptions::default()
    };
    let err = bounded(MqttPublisher::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.chain().contains("s3cret"), "{}", err.chain());

    let options = MqttConsumerOptions {
        url,
        connect_timeout: Duration::from_secs(2),
        ..MqttConsumerOptions::default()
    };
    let err = bounded(MqttConsumer::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(!err.chain().contains("s3cret"), "{}", err.chain());
}

#[tokio::test]
async fn bad_settings_are_configuration_errors() {
    let cases = [
        MqttOptions {
            url: "http://127.0.0.1:1883".into(),
            ..MqttOptions::default()
        },
        MqttOptions {
            topic_template: "outbox/#".into(),
            ..MqttOptions::default()
        },
        MqttOptions {
            max_in_flight: 0,
            ..MqttOptions::default()
        },
        MqttOptions {
            keep_alive: Duration::from_secs(1),
            ..MqttOptions::default()
        },
    ];
    for options in cases {
        let shown = format!("{options:?}");
        let err = bounded(MqttPublisher::connect(options)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cut_off_by_a_broker_crash_fail_at_once_and_succeed_after_it_returns() {
    let Some(mut server) = MosquittoServer::spawn(
        "publishes_cut_off_by_a_broker_crash_fail_at_once_and_succeed_after_it_returns",
    ) else {
        return;
    };
    let stream = unique_mqtt_name();
    // Far longer than the test allows: a publish can only end in time by
    // noticing that its connection is gone.
    let options = MqttOptions {
        url: server.url(),
        ack_timeout: Duration::from_secs(30),
        ..MqttOptions::default()
    };
    let publisher = Arc::new(bounded(MqttPublisher::connect(options)).await.unwrap());
    bounded(publisher.publish(&event(&stream, "warm-up", 1)))
        .await
        .unwrap();

    let events: Vec<Event> = (0..300)
        .map(|k| event(&stream, &format!("key-{k}"), 1))
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
        match bounded(task).await.unwrap() {
            Ok(()) => {}
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
                failed.push(event.clone());
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publishes took {:?} to fail",
        started.elapsed()
    );
    assert!(!failed.is_empty(), "the crash cut off no publish");
    let during = event(&stream, "during", 1);
    let err = bounded(publisher.publish(&during)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    // Back up: the connection task reconnects and the retries go through, to
    // a subscriber that sees each of them.
    server.start();
    let fixture = MqttFixture {
        url: server.url(),
        host: "127.0.0.1".into(),
        port: server.port(),
        stream: stream.clone(),
    };
    let mut subscriber = RawSubscriber::subscribe(
        fixture.client_options(&unique_mqtt_name()),
        &format!("outbox/{stream}"),
    )
    .await;
    bounded(async {
        loop {
            match publisher.publish(&during).await {
                Ok(()) => break,
                Err(err) => assert!(err.is_retryable(), "{}", err.chain()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for event in &failed {
        bounded(publisher.publish(event)).await.unwrap();
    }

    let mut expected: HashSet<String> = std::iter::once(&during)
        .chain(&failed)
        .map(|e| e.event_id.to_string())
        .collect();
    let mut seen = HashSet::new();
    while !expected.is_empty() {
        let body: serde_json::Value =
            serde_json::from_slice(&subscriber.next().await.payload).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        // At least once: a copy of an event already seen is allowed.
        assert!(
            expected.remove(&id) || seen.contains(&id),
            "unexpected event {id}"
        );
        seen.insert(id);
    }
    eprintln!(
        "{} of 300 publishes were cut off by the crash and retried",
        failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_resubscribes_after_a_broker_restart_and_refuses_stale_acks() {
    let Some(mut server) = MosquittoServer::spawn(
        "the_consumer_resubscribes_after_a_broker_restart_and_refuses_stale_acks",
    ) else {
        return;
    };
    let fixture = MqttFixture {
        url: server.url(),
        host: "127.0.0.1".into(),
        port: server.port(),
        stream: unique_mqtt_name(),
    };
    let options = consumer_options(&fixture, &unique_mqtt_name());
    let mut consumer = consumer(&options).await;
    let publisher = publisher(&fixture.url).await;

    let before = event(&fixture.stream, "order-1", 1);
    bounded(publisher.publish(&before)).await.unwrap();
    let stale = next_event(&mut consumer).await;
    assert_eq!(id_of(&stale), before.event_id);

    // The private broker keeps no sessions across a restart: the consumer must
    // subscribe again by itself for the next event to reach it.
    server.stop();
    server.start();
    let after = event(&fixture.stream, "order-1", 2);
    let delivery = bounded(async {
        loop {
            if publisher.publish(&after).await.is_ok()
                && let Ok(next) = tokio::time::timeout(QUIET, consumer.next()).await
            {
                break next.expect("next delivery").expect("consumer ended");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(id_of(&delivery), after.event_id);

    let err = bounded(stale.ack()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    bounded(delivery.ack()).await.unwrap();
    bounded(consumer.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_resolves_only_on_its_puback() {
    let Some(server) = MosquittoServer::spawn("a_publish_resolves_only_on_its_puback") else {
        return;
    };
    let fixture = MqttFixture {
        url: server.url(),
        host: "127.0.0.1".into(),
        port: server.port(),
        stream: unique_mqtt_name(),
    };
    let topic = format!("outbox/{}", fixture.stream);
    let mut subscriber =
        RawSubscriber::subscribe(fixture.client_options(&unique_mqtt_name()), &topic).await;
    let ack_timeout = Duration::from_secs(1);
    let options = MqttOptions {
        url: server.url(),
        ack_timeout,
        ..MqttOptions::default()
    };
    let publisher = bounded(MqttPublisher::connect(options)).await.unwrap();
    bounded(publisher.publish(&event(&fixture.stream, "order-1", 1)))
        .await
        .unwrap();
    subscriber.next().await;

    // A frozen broker takes the bytes into its socket and answers nothing.
    server.pause();
    let unanswered = event(&fixture.stream, "order-1", 2);
    let started = Instant::now();
    let err = bounded(publisher.publish(&unanswered)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(started.elapsed() >= ack_timeout, "{:?}", started.elapsed());
    server.resume();

    // The message was taken after all: a timed-out publish may be stored, and
    // the retry makes a second copy with the same id.
    let body: serde_json::Value = serde_json::from_slice(&subscriber.next().await.payload).unwrap();
    assert_eq!(body["id"], unanswered.event_id.to_string());
    bounded(publisher.publish(&unanswered)).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&subscriber.next().await.payload).unwrap();
    assert_eq!(body["id"], unanswered.event_id.to_string());
}

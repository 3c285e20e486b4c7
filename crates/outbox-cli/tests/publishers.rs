//! `outbox relay --publisher NAME` against each real broker on this machine:
//! events enqueued in SQLite, published by the binary, read back through the
//! broker's consumer adapter, every event once and each key in order.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outbox::sqlite::SqliteStore;
use outbox::{Consumer, EventId, NewEvent};
use outbox_testkit::SqliteFile;

const KEYS: usize = 4;
const PER_KEY: usize = 10;

/// A stream name no other test uses that every broker accepts in its names.
fn unique_stream() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t{}", &id[id.len() - 16..])
}

/// A migrated SQLite database holding `KEYS` × `PER_KEY` events of `stream`.
async fn outbox_with_events(stream: &str) -> (SqliteFile, Vec<EventId>) {
    let file = SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    let mut events = Vec::new();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            let payload = serde_json::json!({ "n": n });
            events
                .push(NewEvent::json(stream, format!("key-{k}"), "thing.done", &payload).unwrap());
        }
    }
    let ids = events.iter().map(NewEvent::event_id).collect();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    (file, ids)
}

/// The relay binary, killed when dropped.
struct RelayProcess(Child);

impl RelayProcess {
    fn start(database_url: &str, args: &[&str]) -> RelayProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OUTBOX_") {
                command.env_remove(name);
            }
        }
        command
            .args(["relay", "--database-url", database_url])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        RelayProcess(command.spawn().expect("start the relay"))
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads deliveries until every id in `expected` arrived, acknowledging each,
/// and checks that each arrived once and each key's events in order.
async fn read_back(consumer: &mut impl Consumer, expected: &[EventId]) {
    let mut seen: HashMap<EventId, u32> = HashMap::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < expected.len() {
            let delivery = match consumer.next().await {
                Ok(delivery) => delivery.expect("open"),
                // A topic the relay has not created yet, say: read again.
                Err(err) if err.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(err) => panic!("read: {}", err.chain()),
            };
            let event = delivery.event().expect("a well-formed event").clone();
            *seen.entry(event.event_id).or_default() += 1;
            let seq = event.seq.expect("a sequence");
            let previous = last_seq.insert(event.key.clone(), seq).unwrap_or(0);
            assert_eq!(seq, previous + 1, "key {} out of order", event.key);
            delivery.ack().await.expect("ack");
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "only {} of {} events arrived",
        seen.len(),
        expected.len()
    );
    for id in expected {
        assert_eq!(seen.get(id), Some(&1), "event {id}");
    }
}

#[tokio::test]
async fn relay_publishes_to_rabbitmq() {
    let Some(rabbit) = outbox_testkit::rabbitmq("relay_publishes_to_rabbitmq").await else {
        return;
    };
    let stream = unique_stream();
    let spec = outbox_rabbitmq::QueueSpec::new(&rabbit.name, "outbox", [format!("{stream}.#")]);
    outbox_rabbitmq::declare_queue(&rabbit.url, &spec)
        .await
        .unwrap();
    let mut consumer =
        outbox_rabbitmq::RabbitConsumer::connect(outbox_rabbitmq::RabbitConsumerOptions {
            url: rabbit.url.clone(),
            queue: rabbit.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (db, ids) = outbox_with_events(&stream).await;

    let _relay = RelayProcess::start(
        &db.url(),
        &["--publisher", "rabbitmq", "--rabbitmq-url", &rabbit.url],
    );
    read_back(&mut consumer, &ids).await;
    drop(consumer);
    rabbit.drop().await;
}

#[tokio::test]
async fn relay_publishes_to_redis() {
    let Some(redis) = outbox_testkit::redis("relay_publishes_to_redis") else {
        return;
    };
    let stream = unique_stream();
    let key = format!("{}:{stream}", redis.name);
    let mut consumer = outbox_redis::RedisConsumer::connect(outbox_redis::RedisConsumerOptions {
        url: redis.url.clone(),
        ..outbox_redis::RedisConsumerOptions::new(&key, "readers", "reader-1")
    })
    .await
    .unwrap();
    let (db, ids) = outbox_with_events(&stream).await;

    let template = format!("{}:{{stream}}", redis.name);
    let _relay = RelayProcess::start(
        &db.url(),
        &[
            "--publisher",
            "redis",
            "--redis-url",
            &redis.url,
            "--redis-stream",
            &template,
        ],
    );
    read_back(&mut consumer, &ids).await;
}

#[tokio::test]
async fn relay_publishes_to_mqtt() {
    let Some(mqtt) = outbox_testkit::mqtt("relay_publishes_to_mqtt").await else {
        return;
    };
    let stream = unique_stream();
    let options = outbox_mqtt::MqttConsumerOptions {
        url: mqtt.url.clone(),
        client_id: format!("reader-{stream}"),
        topic_filter: format!("outbox/{stream}"),
        ..Default::default()
    };
    let mut consumer = outbox_mqtt::MqttConsumer::connect(options).await.unwrap();
    let (db, ids) = outbox_with_events(&stream).await;

    let _relay = RelayProcess::start(&db.url(), &["--publisher", "mqtt", "--mqtt-url", &mqtt.url]);
    read_back(&mut consumer, &ids).await;
    consumer.close().await;
}

#[tokio::test]
async fn relay_publishes_to_a_webhook() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut receiver = outbox_webhook::WebhookReceiver::bind(outbox_webhook::ReceiverOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: Some(outbox_webhook::WebhookSecret::parse(secret).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = unique_stream();
    let (db, ids) = outbox_with_events(&stream).await;

    let url = format!("http://{}/events/{{stream}}", receiver.local_addr());
    let _relay = RelayProcess::start(
        &db.url(),
        &[
            "--publisher",
            "webhook",
            "--webhook-url",
            &url,
            "--webhook-secret",
            secret,
        ],
    );
    read_back(&mut receiver, &ids).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn relay_publishes_to_kafka() {
    use outbox::OutboxStore;

    let Some(kafka) = outbox_testkit::kafka("relay_publishes_to_kafka") else {
        return;
    };
    let stream = unique_stream();
    let (db, ids) = outbox_with_events(&stream).await;

    let _relay = RelayProcess::start(
        &db.url(),
        &["--publisher", "kafka", "--kafka-brokers", &kafka.brokers],
    );
    // The relay creates the topic by publishing to it; a consumer subscribed
    // before would learn of it only at its next metadata refresh.
    let store = SqliteStore::new(db.pool().await, Default::default());
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while !store.pending(1).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    drained
        .await
        .expect("the relay published everything within 60 s");
    let mut consumer = outbox_kafka::KafkaConsumer::connect(outbox_kafka::KafkaConsumerOptions {
        brokers: kafka.brokers.clone(),
        group_id: format!("readers-{stream}"),
        topics: vec![stream.clone()],
        session_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    read_back(&mut consumer, &ids).await;
}

#[test]
fn a_publisher_left_out_of_the_build_is_named() {
    if cfg!(feature = "kafka") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args([
            "relay",
            "--database-url",
            "sqlite://unused.db",
            "--publisher",
            "kafka",
        ])
        .env_remove("OUTBOX_PUBLISHER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features kafka"), "{stderr}");
}

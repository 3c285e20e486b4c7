//! The Kafka publisher and consumer against a real Kafka-API broker.
//!
//! Every test uses topics and consumer groups of its own. Publishes are checked
//! by reading the topic back with a plain rdkafka consumer assigned to every
//! partition, never through the crate's own consumer; the consumer adapter is
//! checked against records that the publisher or a plain producer wrote.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use outbox_core::{
    Consumer, Delivery, ErrorKind, Event, EventId, Payload, Publisher, ReceivedEvent,
    format_sequence,
};
use outbox_kafka::{KafkaConsumer, KafkaConsumerOptions, KafkaOptions, KafkaPublisher};
use outbox_testkit::stored_event as event;
use outbox_testkit::{KafkaFixture, KafkaServer, kafka};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// The group session timeout of the tests' consumers. tansu answers a group's
/// first JoinGroup only after about half of it (23 s at librdkafka's default of
/// 45 s), so the tests keep it short. A Kafka broker refuses values below its
/// `group.min.session.timeout.ms`, 6 s unless lowered.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

async fn publisher(fixture: &KafkaFixture) -> KafkaPublisher {
    let options = KafkaOptions {
        brokers: fixture.brokers.clone(),
        ..KafkaOptions::default()
    };
    bounded(KafkaPublisher::connect(options))
        .await
        .expect("connect publisher")
}

/// A publisher with the fixture's topic created with `partitions` partitions.
async fn publisher_with_topic(fixture: &KafkaFixture, partitions: i32) -> KafkaPublisher {
    let publisher = publisher(fixture).await;
    bounded(publisher.ensure_topic(&fixture.topic, partitions, 1))
        .await
        .expect("create topic");
    publisher
}

async fn consumer(fixture: &KafkaFixture, group: &str) -> KafkaConsumer {
    consumer_with(fixture, group, 1_000).await
}

async fn consumer_with(fixture: &KafkaFixture, group: &str, max_unsettled: usize) -> KafkaConsumer {
    let options = KafkaConsumerOptions {
        brokers: fixture.brokers.clone(),
        group_id: group.to_owned(),
        topics: vec![fixture.topic.clone()],
        session_timeout: SESSION_TIMEOUT,
        max_unsettled,
        ..KafkaConsumerOptions::default()
    };
    bounded(KafkaConsumer::connect(options))
        .await
        .expect("connect consumer")
}

async fn next(consumer: &mut KafkaConsumer) -> Delivery {
    bounded(consumer.next())
        .await
        .expect("read delivery")
        .expect("consumer ended")
}

fn event_of(delivery: &Delivery) -> &ReceivedEvent {
    delivery.event().expect("delivery decodes")
}

fn client_config(fixture: &KafkaFixture) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &fixture.brokers);
    config
}

/// Deletes the fixture's topic and the consumer group `group`, if given.
async fn clean_up(fixture: &KafkaFixture, group: Option<&str>) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(fixture).create().expect("admin client");
    let options = AdminOptions::new();
    let results = bounded(admin.delete_topics(&[&fixture.topic], &options))
        .await
        .expect("delete topic");
    for result in results {
        result.expect("topic deleted");
    }

    if let Some(group) = group {
        let results = bounded(admin.delete_groups(&[group], &options))
            .await
            .expect("delete group");
        for result in results {
            result.expect("group deleted");
        }
    }
}

fn partition_count(fixture: &KafkaFixture) -> usize {
    let probe: BaseConsumer = client_config(fixture).create().expect("metadata client");
    let metadata = probe
        .fetch_metadata(Some(&fixture.topic), Duration::from_secs(10))
        .expect("topic metadata");
    metadata.topics()[0].partitions().len()
}

/// Reads `count` records of the fixture's topic from the start of every
/// partition, with a plain consumer outside any group, in the order each
/// partition holds them.
async fn read_back(fixture: &KafkaFixture, count: usize) -> Vec<OwnedMessage> {
    // librdkafka wants a group id even for assigned partitions; the reader never
    // joins the group or commits.
    let reader: StreamConsumer = client_config(fixture)
        .set("group.id", format!("{}-reader", fixture.topic))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partition_count(fixture) {
        assignment
            .add_partition_offset(&fixture.topic, partition as i32, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&assignment).expect("assign partitions");

    let mut read = Vec::with_capacity(count);
    while read.len() < count {
        let message = bounded(reader.recv()).await.expect("read record");
        read.push(message.detach());
    }
    read
}

fn header(message: &OwnedMessage, name: &str) -> String {
    let headers = message.headers().expect("record has headers");
    let value = headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .unwrap_or_else(|| panic!("record has no {name} header"));
    String::from_utf8(value.to_vec()).expect("utf-8 header")
}

fn all_headers(message: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_stored_once_each_and_in_key_order() {
    let Some(fixture) = kafka("concurrent_publishes_are_stored_once_each_and_in_key_order") else {
        return;
    };
    let publisher = publisher_with_topic(&fixture, 4).await;
    assert_eq!(partition_count(&fixture), 4);

    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let events: Vec<Vec<Event>> = keys
        .iter()
        .map(|key| {
            (1..=50)
                .map(|seq| event(&fixture.topic, key, seq, "order.placed"))
                .collect()
        })
        .collect();

    // As the relay does: keys in parallel, the events of one key one at a time.
    let started = Instant::now();
    let publisher = &publisher;
    bounded(join_all(events.iter().map(|of_key| async move {
        for event in of_key {
            publisher.publish(event).await.expect("publish");
        }
    })))
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "published 5000 events over 100 keys in {elapsed:?} ({:.0} events/s)",
        5000.0 / elapsed.as_secs_f64()
    );

    let mut expected: HashMap<String, &Event> = events
        .iter()
        .flatten()
        .map(|e| (e.event_id.to_string(), e))
        .collect();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let records = read_back(&fixture, 5_000).await;
    for record in &records {
        let id = header(record, "ce_id");
        let event = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("event {id} stored twice or never published"));

        assert_eq!(record.topic(), fixture.topic);
        assert_eq!(record.key(), Some(event.key.as_bytes()));
        assert_eq!(record.payload(), Some(event.payload.as_bytes()));
        assert_eq!(header(record, "ce_partitionkey"), event.key);
        assert_eq!(header(record, "ce_sequence"), format_sequence(event.seq));
        assert_eq!(header(record, "tenant"), format!("tenant-of-{}", event.key));

        let partition = *partition_of
            .entry(event.key.clone())
            .or_insert(record.partition());
        assert_eq!(
            partition,
            record.partition(),
            "key {} in two partitions",
            event.key
        );
        let previous = last_seq.insert(event.key.clone(), event.seq).unwrap_or(0);
        assert_eq!(
            previous + 1,
            event.seq,
            "key {} stored seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty(), "{} events missing", expected.len());
    let used: HashSet<i32> = partition_of.values().copied().collect();
    assert_eq!(used.len(), 4, "100 keys should spread over all partitions");

    // One record byte for byte: the binding's headers, in order, then the event's.
    let first = &events[0][0];
    let record = records
        .iter()
        .find(|r| header(r, "ce_id") == first.event_id.to_string())
        .unwrap();
    let expected_headers: Vec<(String, Vec<u8>)> = [
        ("content-type", "application/json".to_owned()),
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", first.event_id.to_string()),
        ("ce_source", format!("/outbox/{}", fixture.topic)),
        ("ce_type", "order.placed".to_owned()),
        (
            "ce_time",
            first
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        ("ce_partitionkey", "key-0".to_owned()),
        ("ce_sequence", "0000000000000000001".to_owned()),
        ("ce_outboxstream", fixture.topic.clone()),
        ("tenant", "tenant-of-key-0".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.into_bytes()))
    .collect();
    assert_eq!(all_headers(record), expected_headers);
    assert_eq!(record.key(), Some(&b"key-0"[..]));
    assert_eq!(record.payload(), Some(&br#"{"key":"key-0","seq":1}"#[..]));

    clean_up(&fixture, None).await;
}

#[tokio::test]
async fn ensure_topic_creates_once_and_leaves_an_existing_topic_alone() {
    let Some(fixture) = kafka("ensure_topic_creates_once_and_leaves_an_existing_topic_alone")
    else {
        return;
    };
    let publisher = publisher(&fixture).await;

    bounded(publisher.ensure_topic(&fixture.topic, 3, 1))
        .await
        .unwrap();
    bounded(publisher.ensure_topic(&fixture.topic, 1, 1))
        .await
        .unwrap();
    assert_eq!(partition_count(&fixture), 3);

    for (name, partitions) in [("bad topic", 1), ("ok-name", 0)] {
        let err = bounded(publisher.ensure_topic(name, partitions, 1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name} {partitions}");
    }

    clean_up(&fixture, None).await;
}

#[tokio::test]
async fn oversized_records_are_permanent_failures() {
    let Some(fixture) = kafka("oversized_records_are_permanent_failures") else {
        return;
    };
    let publisher = publisher_with_topic(&fixture, 1).await;

    let mut big = event(&fixture.topic, "order-1", 1, "order.placed");
    big.payload = Payload::bytes("application/octet-stream", vec![0; 2 * 1024 * 1024]);
    let err = bounded(publisher.publish(&big)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{}", err.chain());

    let fits = event(&fixture.topic, "order-1", 2, "order.placed");
    bounded(publisher.publish(&fits)).await.unwrap();
    let stored = read_back(&fixture, 1).await;
    assert_eq!(header(&stored[0], "ce_id"), fits.event_id.to_string());

    clean_up(&fixture, None).await;
}

#[tokio::test]
async fn invalid_topics_are_permanent_failures() {
    let Some(fixture) = kafka("invalid_topics_are_permanent_failures") else {
        return;
    };
    let options = KafkaOptions {
        brokers: fixture.brokers.clone(),
        topic_template: "{stream}.{type}".into(),
        ..KafkaOptions::default()
    };
    let publisher = bounded(KafkaPublisher::connect(options)).await.unwrap();

    for event_type in ["order placed", "order/placed", "ordér"] {
        let event = event(&fixture.topic, "order-1", 1, event_type);
        let err = bounded(publisher.publish(&event)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{event_type:?}");
    }
    assert_eq!(
        publisher.topic_for("orders", "order.placed").unwrap(),
        "orders.order.placed"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let brokers = format!("127.0.0.1:{port}");

    let started = Instant::now();
    let options = KafkaOptions {
        brokers: brokers.clone(),
        connect_timeout: Duration::from_secs(1),
        ..KafkaOptions::default()
    };
    let err = bounded(KafkaPublisher::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(err.message().contains(&brokers), "{err}");

    let options = KafkaConsumerOptions {
        brokers: brokers.clone(),
        topics: vec!["orders".into()],
        connect_timeout: Duration::from_secs(1),
        ..KafkaConsumerOptions::default()
    };
    let err = bounded(KafkaConsumer::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(err.message().contains(&brokers), "{err}");

    // Each gives up when its connect timeout ends.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_decodes_what_the_publisher_sent() {
    let Some(fixture) = kafka("the_consumer_decodes_what_the_publisher_sent") else {
        return;
    };
    let publisher = publisher_with_topic(&fixture, 2).await;
    let mut sent: Vec<Event> = (1..=3)
        .map(|seq| event(&fixture.topic, &format!("order-{seq}"), seq, "order.placed"))
        .collect();
    sent[1].payload = Payload::bytes("text/plain", "plain words");
    sent[2].headers.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    for event in &sent {
        bounded(publisher.publish(event)).await.unwrap();
    }

    let group = format!("{}-g", fixture.topic);
    let mut consumer = consumer(&fixture, &group).await;
    let mut expected: HashMap<EventId, ReceivedEvent> = sent
        .iter()
        .map(|e| {
            let source = format!("/outbox/{}", fixture.topic);
            (e.event_id, ReceivedEvent::from_event(e, &source))
        })
        .collect();
    for _ in 0..sent.len() {
        let delivery = next(&mut consumer).await;
        let received = event_of(&delivery).clone();
        let want = expected
            .remove(&received.event_id)
            .expect("an event that was sent, once");
        assert_eq!(received, want);
        delivery.ack().await.unwrap();
    }
    bounded(consumer.close()).await.unwrap();

    clean_up(&fixture, Some(&group)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_deliveries_stay_done_and_dropped_ones_come_again() {
    let Some(fixture) = kafka("acked_deliveries_stay_done_and_dropped_ones_come_again") else {
        return;
    };
    // One partition, so that offsets follow the publishing order.
    let publisher = publisher_with_topic(&fixture, 1).await;
    let sent: Vec<Event> = (1..=6)
        .map(|seq| event(&fixture.topic, &format!("order-{seq}"), 1, "order.placed"))
        .collect();
    for event in &sent {
        bounded(publisher.publish(event)).await.unwrap();
    }
    let group = format!("{}-g", fixture.topic);

    // All six out at once; settled out of order, the third dropped.
    let mut first = consumer(&fixture, &group).await;
    let mut deliveries = Vec::new();
    for _ in 0..sent.len() {
        deliveries.push(next(&mut first).await);
    }
    let ids: Vec<EventId> = deliveries.iter().map(|d| event_of(d).event_id).collect();
    let sent_ids: Vec<EventId> = sent.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, sent_ids);

    let mut deliveries: Vec<Option<Delivery>> = deliveries.into_iter().map(Some).collect();
    for index in [5, 1, 0, 3, 4] {
        deliveries[index].take().unwrap().ack().await.unwrap();
    }
    drop(deliveries);
    bounded(first.close()).await.unwrap();

    // The dropped one comes again, and the settled ones after it with it.
    let mut second = consumer(&fixture, &group).await;
    let mut again = Vec::new();
    for _ in 2..sent.len() {
        let delivery = next(&mut second).await;
        again.push(event_of(&delivery).event_id);
        delivery.ack().await.unwrap();
    }
    assert_eq!(again, sent_ids[2..]);
    bounded(second.close()).await.unwrap();

    // Everything was acked: only a new event is delivered.
    let later = event(&fixture.topic, "order-7", 1, "order.placed");
    bounded(publisher.publish(&later)).await.unwrap();
    let mut third = consumer(&fixture, &group).await;
    let delivery = next(&mut third).await;
    assert_eq!(event_of(&delivery).event_id, later.event_id);
    delivery.ack().await.unwrap();
    bounded(third.close()).await.unwrap();

    clean_up(&fixture, Some(&group)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_an_id_is_malformed_and_can_be_rejected() {
    let Some(fixture) = kafka("a_record_without_an_id_is_malformed_and_can_be_rejected") else {
        return;
    };
    let publisher = publisher_with_topic(&fixture, 1).await;

    let raw: FutureProducer = client_config(&fixture).create().expect("raw producer");
    let headers = [
        ("ce_specversion", "1.0"),
        ("ce_type", "order.placed"),
        ("ce_source", "/elsewhere"),
        ("ce_partitionkey", "order-1"),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |all, (key, value)| {
        all.insert(Header {
            key,
            value: Some(value),
        })
    });
    let record = FutureRecord::to(&fixture.topic)
        .key("order-1")
        .payload("{}")
        .headers(headers);
    bounded(raw.send(record, Duration::from_secs(10)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let valid = event(&fixture.topic, "order-1", 1, "order.placed");
    bounded(publisher.publish(&valid)).await.unwrap();

    let group = format!("{}-g", fixture.topic);
    let mut consumer = consumer(&fixture, &group).await;
    let malformed = next(&mut consumer).await;
    let err = malformed.event().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.message().contains("id"), "{err}");
    malformed.reject().await.unwrap();

    let delivery = next(&mut consumer).await;
    assert_eq!(event_of(&delivery).event_id, valid.event_id);
    delivery.ack().await.unwrap();
    bounded(consumer.close()).await.unwrap();

    clean_up(&fixture, Some(&group)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_waits_while_max_unsettled_deliveries_are_out() {
    let Some(fixture) = kafka("next_waits_while_max_unsettled_deliveries_are_out") else {
        return;
    };
    let publisher = publisher_with_topic(&fixture, 1).await;
    for seq in 1..=3 {
        let event = event(&fixture.topic, "order-1", seq, "order.placed");
        bounded(publisher.publish(&event)).await.unwrap();
    }

    let group = format!("{}-g", fixture.topic);
    let mut consumer = consumer_with(&fixture, &group, 2).await;
    let one = next(&mut consumer).await;
    let two = next(&mut consumer).await;
    assert_eq!(event_of(&one).seq, Some(1));
    assert_eq!(event_of(&two).seq, Some(2));

    let blocked = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(blocked.is_err(), "a third delivery came while two were out");

    one.ack().await.unwrap();
    let three = next(&mut consumer).await;
    assert_eq!(event_of(&three).seq, Some(3));
    two.ack().await.unwrap();
    three.ack().await.unwrap();
    bounded(consumer.close()).await.unwrap();

    clean_up(&fixture, Some(&group)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_a_stopped_broker_fail_as_unavailable_within_the_message_timeout() {
    let Some(mut server) = KafkaServer::spawn(
        "publishes_to_a_stopped_broker_fail_as_unavailable_within_the_message_timeout",
    ) else {
        return;
    };
    let message_timeout = Duration::from_secs(2);
    let options = KafkaOptions {
        brokers: server.brokers(),
        message_timeout,
        ..KafkaOptions::default()
    };
    let publisher = bounded(KafkaPublisher::connect(options.clone()))
        .await
        .unwrap();
    let stream = outbox_testkit::unique_topic_name();
    let before = event(&stream, "order-0", 1, "order.placed");
    bounded(publisher.publish(&before)).await.unwrap();

    // Many publishes in flight when the broker dies: each ends, and none hangs.
    let events: Vec<Event> = (1..=50)
        .map(|k| event(&stream, &format!("order-{k}"), 1, "order.placed"))
        .collect();
    let started = Instant::now();
    let (results, ()) = bounded(async {
        tokio::join!(
            join_all(events.iter().map(|e| publisher.publish(e))),
            async { server.stop() }
        )
    })
    .await;
    let mut failed = 0;
    for result in results {
        if let Err(err) = result {
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
            failed += 1;
        }
    }
    let cut_off = started.elapsed();
    let during = event(&stream, "order-0", 2, "order.placed");
    let err = bounded(publisher.publish(&during)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(
        started.elapsed() < 2 * message_timeout + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("{failed} of 50 publishes in flight failed, all within {cut_off:?}");

    // tansu keeps producer ids in memory only: once restarted it refuses the
    // old producer's id for good (a Kafka broker keeps them across restarts),
    // so the check of the return uses a fresh publisher.
    server.start();
    let fresh = bounded(async {
        loop {
            match KafkaPublisher::connect(options.clone()).await {
                Ok(publisher) => break publisher,
                Err(err) => assert!(err.is_retryable(), "{}", err.chain()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    bounded(fresh.publish(&during)).await.unwrap();
}

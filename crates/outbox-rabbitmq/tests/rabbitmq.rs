//! The RabbitMQ publisher and consumer against the real broker.
//!
//! Every test works on queues and exchanges named after its own fixture, deleted
//! at the end. What the publisher sent is read back with lapin directly, never
//! through the consumer adapter, except in the tests of the adapter itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use outbox_core::{
    Consumer, ErrorKind, Event, EventId, Headers, Payload, Publisher, ReceivedEvent,
    format_sequence,
};
use outbox_rabbitmq::{
    QueueSpec, RabbitConsumer, RabbitConsumerOptions, RabbitOptions, RabbitPublisher, declare_queue,
};
use outbox_testkit::stored_event as event;
use outbox_testkit::{RabbitFixture, close_connections_named, rabbitmq};

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits to conclude that no further message comes.
const QUIET: Duration = Duration::from_millis(500);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

/// Options publishing to the fixture's exchange, under the default routing key.
fn options(fixture: &RabbitFixture) -> RabbitOptions {
    RabbitOptions {
        url: fixture.url.clone(),
        exchange_template: fixture.name.clone(),
        ..RabbitOptions::default()
    }
}

async fn connect(options: RabbitOptions) -> RabbitPublisher {
    bounded(RabbitPublisher::connect(options))
        .await
        .expect("connect publisher")
}

/// Declares the fixture's exchange and a queue of the same name that receives
/// every event of the stream `stream`.
async fn queue_for_stream(fixture: &RabbitFixture, stream: &str) -> QueueSpec {
    let spec = QueueSpec::new(&fixture.name, &fixture.name, [format!("{stream}.#")]);
    bounded(declare_queue(&fixture.url, &spec))
        .await
        .expect("declare queue");
    spec
}

async fn ready_count(fixture: &RabbitFixture, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    bounded(
        fixture
            .channel
            .queue_declare(queue.into(), passive, FieldTable::default()),
    )
    .await
    .expect("look up queue")
    .message_count()
}

/// Reads `count` messages of `queue` with a consumer of the fixture's own
/// connection, acknowledging them.
async fn read_back(
    fixture: &RabbitFixture,
    queue: &str,
    count: usize,
) -> Vec<lapin::message::Delivery> {
    let channel = fixture.connection.create_channel().await.unwrap();
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut reader = channel
        .basic_consume(
            queue.into(),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut read = Vec::with_capacity(count);
    while read.len() < count {
        let delivery = bounded(reader.next())
            .await
            .expect("subscription ended")
            .expect("read message");
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        read.push(delivery);
    }
    read
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_arrive_once_each_and_in_key_order() {
    let Some(fixture) = rabbitmq("concurrent_publishes_arrive_once_each_and_in_key_order").await
    else {
        return;
    };
    let stream = fixture.name.clone();
    queue_for_stream(&fixture, &stream).await;
    let publisher = connect(options(&fixture)).await;

    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let events: HashMap<String, Vec<Event>> = keys
        .iter()
        .map(|key| {
            let of_key = (1..=50)
                .map(|seq| {
                    let event_type = if seq % 2 == 0 {
                        "order.paid"
                    } else {
                        "order.placed"
                    };
                    event(&stream, key, seq, event_type)
                })
                .collect();
            (key.clone(), of_key)
        })
        .collect();

    // Keys in parallel, each key in order, as the relay publishes.
    let started = Instant::now();
    bounded(
        futures::stream::iter(events.values())
            .map(|of_key| async {
                let of_key: &Vec<Event> = of_key;
                for event in of_key {
                    publisher.publish(event).await.expect("publish");
                }
            })
            .buffer_unordered(100)
            .collect::<Vec<()>>(),
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "published 5000 events over 100 keys in {elapsed:?} ({:.0} events/s)",
        5000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(ready_count(&fixture, &fixture.name).await, 5000);

    let mut expected: HashMap<String, Event> = events
        .values()
        .flatten()
        .map(|e| (e.event_id.to_string(), e.clone()))
        .collect();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let mut checked_bytes = false;
    for message in read_back(&fixture, &fixture.name, 5000).await {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        let event = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("event {id} stored twice or never published"));
        assert_eq!(
            message.routing_key.as_str(),
            format!("{}.{}", event.stream, event.event_type)
        );
        assert_eq!(message.data, event.payload.as_bytes());

        if !checked_bytes {
            let time = event
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let headers: BTreeMap<ShortString, AMQPValue> = [
                ("cloudEvents_specversion", text("1.0")),
                ("cloudEvents_id", text(&id)),
                ("cloudEvents_source", text(&format!("/outbox/{stream}"))),
                ("cloudEvents_type", text(&event.event_type)),
                ("cloudEvents_time", text(&time)),
                ("cloudEvents_partitionkey", text(&event.key)),
                ("cloudEvents_sequence", text(&format_sequence(event.seq))),
                ("cloudEvents_outboxstream", text(&stream)),
                ("tenant", text(&format!("tenant-of-{}", event.key))),
            ]
            .into_iter()
            .map(|(name, value)| (ShortString::from(name), value))
            .collect();
            let expected_properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_headers(headers.into())
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into())
                .with_timestamp(event.created_at.timestamp() as u64);
            assert_eq!(message.properties, expected_properties);
            checked_bytes = true;
        }

        let previous = last_seq.insert(event.key.clone(), event.seq).unwrap_or(0);
        assert!(
            previous < event.seq,
            "key {} arrived with seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty(), "{} events missing", expected.len());
    assert_eq!(ready_count(&fixture, &fixture.name).await, 0);

    fixture.drop().await;
}

#[tokio::test]
async fn publishing_to_an_exchange_with_no_bound_queue_is_not_a_success() {
    let Some(fixture) =
        rabbitmq("publishing_to_an_exchange_with_no_bound_queue_is_not_a_success").await
    else {
        return;
    };
    let publisher = connect(options(&fixture)).await;
    bounded(publisher.ensure_exchange(&fixture.name))
        .await
        .unwrap();

    let event = event(&fixture.name, "order-1", 1, "order.placed");
    let err = bounded(publisher.publish(&event)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{}", err.chain());

    // The channel survives a return: the next routable publish goes through.
    queue_for_stream(&fixture, &fixture.name).await;
    bounded(publisher.publish(&event)).await.unwrap();
    assert_eq!(ready_count(&fixture, &fixture.name).await, 1);

    fixture.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_count_against_their_own_publish_when_many_are_in_flight() {
    let Some(fixture) =
        rabbitmq("returns_count_against_their_own_publish_when_many_are_in_flight").await
    else {
        return;
    };
    let stream = fixture.name.clone();
    let spec = QueueSpec::new(&fixture.name, &fixture.name, [format!("{stream}.bound.#")]);
    bounded(declare_queue(&fixture.url, &spec)).await.unwrap();
    let publisher = connect(options(&fixture)).await;

    let events: Vec<(bool, Event)> = (0..1000)
        .map(|n| {
            let bound = n % 4 != 0;
            let event_type = if bound {
                "bound.order"
            } else {
                "unbound.order"
            };
            (bound, event(&stream, &format!("key-{n}"), 1, event_type))
        })
        .collect();
    let outcomes: Vec<(bool, outbox_core::Result<()>)> = bounded(
        futures::stream::iter(&events)
            .map(|(bound, event)| async { (*bound, publisher.publish(event).await) })
            .buffer_unordered(256)
            .collect(),
    )
    .await;

    for (bound, outcome) in &outcomes {
        match (bound, outcome) {
            (true, Ok(())) => {}
            (false, Err(err)) => assert_eq!(err.kind(), ErrorKind::Transient),
            (true, Err(err)) => panic!("a routable event failed: {}", err.chain()),
            (false, Ok(())) => panic!("an unroutable event was reported as published"),
        }
    }
    assert_eq!(ready_count(&fixture, &fixture.name).await, 750);

    fixture.drop().await;
}

#[tokio::test]
async fn a_missing_exchange_is_transient_unless_the_publisher_declares_it() {
    let Some(fixture) =
        rabbitmq("a_missing_exchange_is_transient_unless_the_publisher_declares_it").await
    else {
        return;
    };
    let event = event(&fixture.name, "order-1", 1, "order.placed");
    let exists = || async {
        let channel = fixture.connection.create_channel().await.unwrap();
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                fixture.name.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await
            .is_ok()
    };

    let publisher = connect(options(&fixture)).await;
    let err = bounded(publisher.publish(&event)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{}", err.chain());
    assert!(
        !exists().await,
        "the publisher created the exchange unasked"
    );

    let declaring = connect(RabbitOptions {
        declare_exchange: true,
        ..options(&fixture)
    })
    .await;
    queue_for_stream(&fixture, &fixture.name).await;
    bounded(declaring.publish(&event)).await.unwrap();
    assert!(exists().await);
    assert_eq!(ready_count(&fixture, &fixture.name).await, 1);

    fixture.drop().await;
}

#[tokio::test]
async fn invalid_destinations_are_permanent_failures_and_send_nothing() {
    let Some(fixture) =
        rabbitmq("invalid_destinations_are_permanent_failures_and_send_nothing").await
    else {
        return;
    };
    queue_for_stream(&fixture, &fixture.name).await;
    let by_type = connect(RabbitOptions {
        exchange_template: "{type}".into(),
        ..options(&fixture)
    })
    .await;
    let err = bounded(by_type.publish(&event(&fixture.name, "k", 1, "order/placed")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let publisher = connect(options(&fixture)).await;
    let long_type = "t".repeat(260);
    let err = bounded(publisher.publish(&event(&fixture.name, "k", 1, &long_type)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(ready_count(&fixture, &fixture.name).await, 0);

    fixture.drop().await;
}

async fn consumer(fixture: &RabbitFixture, queue: &str, connection_name: &str) -> RabbitConsumer {
    bounded(RabbitConsumer::connect(RabbitConsumerOptions {
        url: fixture.url.clone(),
        queue: queue.to_owned(),
        prefetch: 10,
        connection_name: connection_name.to_owned(),
        ..RabbitConsumerOptions::default()
    }))
    .await
    .expect("connect consumer")
}

async fn next_delivery(consumer: &mut RabbitConsumer) -> outbox_core::Delivery {
    bounded(consumer.next())
        .await
        .expect("read delivery")
        .expect("subscription ended")
}

/// Asserts that nothing is delivered within [`QUIET`].
async fn assert_quiet(consumer: &mut RabbitConsumer) {
    if let Ok(next) = tokio::time::timeout(QUIET, consumer.next()).await {
        let delivery = next.expect("read").expect("open subscription");
        panic!("unexpected delivery {:?}", delivery.event());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_deliveries_stay_settled_and_dropped_ones_come_back() {
    let Some(fixture) = rabbitmq("acked_deliveries_stay_settled_and_dropped_ones_come_back").await
    else {
        return;
    };
    let stream = fixture.name.clone();
    queue_for_stream(&fixture, &stream).await;
    let publisher = connect(options(&fixture)).await;
    let events: Vec<Event> = (1..=3)
        .map(|seq| event(&stream, "order-1", seq, "order.placed"))
        .collect();
    for event in &events {
        bounded(publisher.publish(event)).await.unwrap();
    }

    // All three are handed over before any is settled, in publish order.
    let mut first = consumer(&fixture, &fixture.name, &fixture.derived("first")).await;
    let mut deliveries = Vec::new();
    for event in &events {
        let delivery = next_delivery(&mut first).await;
        let source = format!("/outbox/{stream}");
        assert_eq!(
            delivery.event().unwrap(),
            &ReceivedEvent::from_event(event, &source)
        );
        deliveries.push(delivery);
    }
    let mut deliveries = deliveries.into_iter();
    let (one, two, three) = (
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
    );
    bounded(one.ack()).await.unwrap();
    bounded(three.ack()).await.unwrap();
    drop(two);
    drop(first);

    let mut second = consumer(&fixture, &fixture.name, &fixture.derived("second")).await;
    let again = next_delivery(&mut second).await;
    assert_eq!(again.event().unwrap().event_id, events[1].event_id);
    assert_quiet(&mut second).await;
    bounded(again.ack()).await.unwrap();
    drop(second);

    assert_eq!(ready_count(&fixture, &fixture.name).await, 0);
    fixture.drop().await;
}

#[tokio::test]
async fn rejected_deliveries_go_to_the_dead_letter_exchange() {
    let Some(fixture) = rabbitmq("rejected_deliveries_go_to_the_dead_letter_exchange").await else {
        return;
    };
    let dead = fixture.derived("dead");
    let channel = &fixture.channel;
    channel
        .exchange_declare(
            dead.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            dead.as_str().into(),
            dead.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut spec = QueueSpec::new(
        &fixture.name,
        &fixture.name,
        [format!("{}.#", fixture.name)],
    );
    spec.dead_letter_exchange = Some(dead.clone());
    bounded(declare_queue(&fixture.url, &spec)).await.unwrap();
    let publisher = connect(options(&fixture)).await;
    let event = event(&fixture.name, "order-1", 1, "order.placed");
    bounded(publisher.publish(&event)).await.unwrap();

    let mut consumer = consumer(&fixture, &fixture.name, &fixture.name).await;
    bounded(next_delivery(&mut consumer).await.reject())
        .await
        .unwrap();

    let dead_lettered = bounded(async {
        loop {
            let get = channel.basic_get(dead.as_str().into(), BasicGetOptions::default());
            if let Some(message) = get.await.unwrap() {
                break message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        dead_lettered
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        event.event_id.to_string()
    );
    dead_lettered
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    assert_quiet(&mut consumer).await;

    drop(consumer);
    fixture.drop().await;
}

/// Publishes a message with `headers` straight to the fixture's queue.
async fn publish_raw(fixture: &RabbitFixture, headers: &[(&str, &str)]) {
    let table: BTreeMap<ShortString, AMQPValue> = headers
        .iter()
        .map(|(name, value)| (ShortString::from(*name), text(value)))
        .collect();
    let properties = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(table.into());
    fixture
        .channel
        .basic_publish(
            "".into(),
            fixture.name.as_str().into(),
            BasicPublishOptions::default(),
            b"hello",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn plain_queue(fixture: &RabbitFixture) {
    fixture
        .channel
        .queue_declare(
            fixture.name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_without_a_cloudevents_id_is_malformed_and_permanent() {
    let Some(fixture) =
        rabbitmq("a_message_without_a_cloudevents_id_is_malformed_and_permanent").await
    else {
        return;
    };
    plain_queue(&fixture).await;
    publish_raw(
        &fixture,
        &[
            ("cloudEvents_specversion", "1.0"),
            ("cloudEvents_type", "order.placed"),
            ("cloudEvents_source", "/elsewhere"),
            ("cloudEvents_partitionkey", "order-1"),
        ],
    )
    .await;

    let mut consumer = consumer(&fixture, &fixture.name, &fixture.name).await;
    let delivery = next_delivery(&mut consumer).await;
    let err = delivery.event().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    bounded(delivery.reject()).await.unwrap();
    assert_quiet(&mut consumer).await;

    drop(consumer);
    fixture.drop().await;
}

#[tokio::test]
async fn attributes_under_the_colon_prefix_are_read_too() {
    let Some(fixture) = rabbitmq("attributes_under_the_colon_prefix_are_read_too").await else {
        return;
    };
    plain_queue(&fixture).await;
    let id = EventId::new().to_string();
    publish_raw(
        &fixture,
        &[
            ("cloudEvents:specversion", "1.0"),
            ("cloudEvents:id", &id),
            ("cloudEvents:type", "order.placed"),
            ("cloudEvents:source", "/elsewhere"),
            ("cloudEvents:partitionkey", "order-1"),
            ("cloudEvents:sequence", "7"),
            ("tenant", "acme"),
        ],
    )
    .await;

    let mut consumer = consumer(&fixture, &fixture.name, &fixture.name).await;
    let delivery = next_delivery(&mut consumer).await;
    let received = delivery.event().unwrap();
    assert_eq!(received.event_id.to_string(), id);
    assert_eq!(received.seq, Some(7));
    assert_eq!(received.payload, Payload::bytes("text/plain", "hello"));
    assert_eq!(
        received.headers,
        Headers::from([("tenant".into(), "acme".into())])
    );
    bounded(delivery.ack()).await.unwrap();

    drop(consumer);
    fixture.drop().await;
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_unavailable() {
    let url = format!("amqp://relay:s3cret@127.0.0.1:{}/%2f", closed_port());

    let err = bounded(RabbitPublisher::connect(RabbitOptions {
        url: url.clone(),
        ..RabbitOptions::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("relay:***@127.0.0.1"), "{err}");
    assert!(!err.chain().contains("s3cret"), "{}", err.chain());

    let err = bounded(RabbitConsumer::connect(RabbitConsumerOptions {
        url,
        queue: "anything".into(),
        ..RabbitConsumerOptions::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn refused_credentials_and_missing_queues_are_configuration_errors() {
    let Some(fixture) =
        rabbitmq("refused_credentials_and_missing_queues_are_configuration_errors").await
    else {
        return;
    };
    // Only the default test url is known to carry a password to spoil.
    let wrong = fixture.url.replacen("guest:guest", "guest:wrong", 1);
    if wrong != fixture.url {
        let err = bounded(RabbitPublisher::connect(RabbitOptions {
            url: wrong,
            ..RabbitOptions::default()
        }))
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());
    }

    let err = bounded(RabbitConsumer::connect(RabbitConsumerOptions {
        url: fixture.url.clone(),
        queue: fixture.name.clone(),
        ..RabbitConsumerOptions::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());

    fixture.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_fails_publishes_as_unavailable_and_the_next_reconnects() {
    let test = "a_closed_connection_fails_publishes_as_unavailable_and_the_next_reconnects";
    let Some(fixture) = rabbitmq(test).await else {
        return;
    };
    let stream = fixture.name.clone();
    queue_for_stream(&fixture, &stream).await;
    let connection_name = fixture.derived("publisher");
    let publisher = Arc::new(
        connect(RabbitOptions {
            connection_name: connection_name.clone(),
            ..options(&fixture)
        })
        .await,
    );

    // Fifty keys publish without pause, so publishes are in flight when the
    // broker closes the connection.
    let closed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..50)
        .map(|k| {
            let publisher = Arc::clone(&publisher);
            let closed = Arc::clone(&closed);
            let stream = stream.clone();
            tokio::spawn(async move {
                let (mut failures, mut after_close) = (Vec::new(), 0);
                for seq in 1..=100_000 {
                    let event = event(&stream, &format!("key-{k}"), seq, "order.placed");
                    let was_closed = closed.load(Ordering::SeqCst);
                    match publisher.publish(&event).await {
                        Ok(()) if was_closed => after_close += 1,
                        Ok(()) => {}
                        Err(err) => failures.push(err),
                    }
                    if after_close >= 20 {
                        break;
                    }
                }
                (failures, after_close)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = tokio::task::spawn_blocking({
        let name = connection_name.clone();
        move || close_connections_named(test, &name)
    })
    .await
    .unwrap();
    let Some(count) = count else {
        return;
    };
    assert_eq!(count, 1, "one publisher connection to close");
    closed.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    for task in tasks {
        let (failed, after_close) = bounded(task).await.unwrap();
        assert_eq!(after_close, 20, "a key stopped publishing after the close");
        failures.extend(failed);
    }
    eprintln!(
        "{} publishes failed when the connection was closed",
        failures.len()
    );
    assert!(!failures.is_empty(), "no publish was cut off by the close");
    for err in &failures {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    }

    drop(publisher);
    fixture.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reconnects_after_its_connection_is_closed() {
    let test = "the_consumer_reconnects_after_its_connection_is_closed";
    let Some(fixture) = rabbitmq(test).await else {
        return;
    };
    let stream = fixture.name.clone();
    queue_for_stream(&fixture, &stream).await;
    let publisher = connect(options(&fixture)).await;
    let event = event(&stream, "order-1", 1, "order.placed");
    bounded(publisher.publish(&event)).await.unwrap();

    let connection_name = fixture.derived("consumer");
    let mut consumer = consumer(&fixture, &fixture.name, &connection_name).await;
    let unsettled = next_delivery(&mut consumer).await;

    let count = tokio::task::spawn_blocking({
        let name = connection_name.clone();
        move || close_connections_named(test, &name)
    })
    .await
    .unwrap();
    let Some(count) = count else {
        return;
    };
    assert_eq!(count, 1, "one consumer connection to close");

    let err = bounded(consumer.next()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    let err = bounded(unsettled.ack()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());

    let again = next_delivery(&mut consumer).await;
    assert_eq!(again.event().unwrap().event_id, event.event_id);
    bounded(again.ack()).await.unwrap();
    assert_quiet(&mut consumer).await;

    drop(consumer);
    fixture.drop().await;
}

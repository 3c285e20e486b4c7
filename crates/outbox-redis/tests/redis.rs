//! The Redis publisher and consumer against a real Redis server.
//!
//! Every test uses keys of its own, named after its fixture, and reads what the
//! publisher wrote with plain commands on a separate connection, never through
//! the crate under test. Tests that stop the server run a private `redis-server`;
//! the others share the test server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use outbox_core::{Consumer, Delivery, ErrorKind, Event, Publisher, ReceivedEvent};
use outbox_redis::{RedisConsumer, RedisConsumerOptions, RedisOptions, RedisPublisher};
use outbox_testkit::stored_event as event;
use outbox_testkit::{RedisServer, redis};
use redis::aio::MultiplexedConnection;

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits to be sure that nothing more is delivered.
const QUIET: Duration = Duration::from_millis(300);

/// A stream entry as the raw client reads it: id and flat field list.
type RawEntry = (String, Vec<Vec<u8>>);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

async fn publisher(url: &str) -> RedisPublisher {
    let options = RedisOptions {
        url: url.to_owned(),
        ..RedisOptions::default()
    };
    bounded(RedisPublisher::connect(options))
        .await
        .expect("connect publisher")
}

async fn raw(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(WAIT));
    bounded(client.get_multiplexed_async_connection_with_config(&config))
        .await
        .expect("connect raw client")
}

async fn query<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, cmd: &redis::Cmd) -> T {
    bounded(cmd.query_async(conn)).await.expect("raw command")
}

/// Every entry of `key`, oldest first.
async fn entries(conn: &mut MultiplexedConnection, key: &str) -> Vec<RawEntry> {
    query(conn, redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await
}

/// The value of `name` in a flat field list.
fn field<'a>(fields: &'a [Vec<u8>], name: &str) -> &'a str {
    let at = fields
        .chunks(2)
        .position(|pair| pair[0] == name.as_bytes())
        .unwrap_or_else(|| panic!("entry has no field {name}"));
    std::str::from_utf8(&fields[at * 2 + 1]).unwrap()
}

/// How many entries of `group` on `key` are delivered and not acknowledged.
async fn pending(conn: &mut MultiplexedConnection, key: &str, group: &str) -> i64 {
    let summary: (i64, redis::Value, redis::Value, redis::Value) =
        query(conn, redis::cmd("XPENDING").arg(key).arg(group)).await;
    summary.0
}

fn consumer_options(url: &str, key: &str, consumer: &str) -> RedisConsumerOptions {
    RedisConsumerOptions {
        url: url.to_owned(),
        block: Duration::from_millis(100),
        claim_min_idle: None,
        ..RedisConsumerOptions::new(key, "g", consumer)
    }
}

async fn consumer(options: RedisConsumerOptions) -> RedisConsumer {
    bounded(RedisConsumer::connect(options))
        .await
        .expect("connect consumer")
}

async fn next(consumer: &mut RedisConsumer) -> Delivery {
    bounded(consumer.next())
        .await
        .expect("read delivery")
        .expect("consumer ended")
}

/// Asserts that no delivery comes within [`QUIET`].
async fn assert_quiet(consumer: &mut RedisConsumer) {
    if let Ok(delivery) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!(
            "unexpected delivery: {:?}",
            delivery.map(|d| d.map(|d| d.event().ok().cloned()))
        );
    }
}

fn event_of(delivery: &Delivery) -> &ReceivedEvent {
    delivery.event().expect("delivery decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_keep_every_event_once_and_in_key_order() {
    let Some(fixture) = redis("concurrent_publishes_keep_every_event_once_and_in_key_order") else {
        return;
    };
    let publisher = publisher(&fixture.url).await;

    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let events: Vec<Vec<Event>> = keys
        .iter()
        .map(|key| {
            (1..=50)
                .map(|seq| {
                    let event_type = if seq % 2 == 0 {
                        "order.paid"
                    } else {
                        "order.placed"
                    };
                    event(&fixture.name, key, seq, event_type)
                })
                .collect()
        })
        .collect();

    // As the relay does: keys concurrently, the events of one key one at a time.
    let started = Instant::now();
    bounded(
        futures::stream::iter(&events)
            .map(|of_key| {
                let publisher = &publisher;
                async move {
                    for event in of_key {
                        publisher.publish(event).await.expect("publish");
                    }
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<()>>(),
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "published 5000 events in {elapsed:?} ({:.0} events/s)",
        5000.0 / elapsed.as_secs_f64()
    );

    let mut conn = raw(&fixture.url).await;
    let key = format!("outbox:{}", fixture.name);
    let stored = entries(&mut conn, &key).await;
    assert_eq!(stored.len(), 5000);

    let mut expected: HashMap<String, &Event> = events
        .iter()
        .flatten()
        .map(|e| (e.event_id.to_string(), e))
        .collect();
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    for (_, fields) in &stored {
        let id = field(fields, "id");
        let event = expected
            .remove(id)
            .unwrap_or_else(|| panic!("event {id} stored twice or never published"));
        let previous = last_seq.insert(&event.key, event.seq).unwrap_or(0);
        assert_eq!(
            previous + 1,
            event.seq,
            "key {} stored seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty(), "{} events missing", expected.len());

    // One entry, byte for byte.
    let sample = &events[7][11];
    let (_, fields) = stored
        .iter()
        .find(|(_, f)| field(f, "id") == sample.event_id.to_string())
        .unwrap();
    let time = sample
        .created_at
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let want: Vec<(&str, String)> = vec![
        ("specversion", "1.0".into()),
        ("id", sample.event_id.to_string()),
        ("source", format!("/outbox/{}", fixture.name)),
        ("type", "order.paid".into()),
        ("time", time),
        ("datacontenttype", "application/json".into()),
        ("partitionkey", "key-7".into()),
        ("sequence", "0000000000000000012".into()),
        ("outboxstream", fixture.name.clone()),
        ("data", r#"{"key":"key-7","seq":12}"#.into()),
        ("header:tenant", "tenant-of-key-7".into()),
    ];
    let want: Vec<Vec<u8>> = want
        .into_iter()
        .flat_map(|(n, v)| [n.as_bytes().to_vec(), v.into_bytes()])
        .collect();
    let shown = |f: &[Vec<u8>]| -> Vec<String> {
        f.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    };
    assert_eq!(shown(fields), shown(&want));
    assert_eq!(fields, &want);
}

#[tokio::test]
async fn the_template_picks_the_stream_and_max_len_trims_it() {
    let Some(fixture) = redis("the_template_picks_the_stream_and_max_len_trims_it") else {
        return;
    };
    let options = RedisOptions {
        url: fixture.url.clone(),
        stream_template: "t:{stream}:{type}".into(),
        source_template: "https://shop.example/{type}".into(),
        max_len: Some(10),
        ..RedisOptions::default()
    };
    let publisher = bounded(RedisPublisher::connect(options)).await.unwrap();
    let key = publisher.stream_key(&fixture.name, "order.paid");
    assert_eq!(key, format!("t:{}:order.paid", fixture.name));

    for seq in 1..=500 {
        let event = event(&fixture.name, "k", seq, "order.paid");
        bounded(publisher.publish(&event)).await.unwrap();
    }
    let other = event(&fixture.name, "k", 501, "order.placed");
    bounded(publisher.publish(&other)).await.unwrap();

    let mut conn = raw(&fixture.url).await;
    let length: usize = query(&mut conn, redis::cmd("XLEN").arg(&key)).await;
    // `~` trims whole nodes of the stream only, so more than 10 may stay.
    assert!((10..500).contains(&length), "{length} entries kept");

    let placed = entries(&mut conn, &format!("t:{}:order.placed", fixture.name)).await;
    assert_eq!(placed.len(), 1);
    assert_eq!(
        field(&placed[0].1, "source"),
        "https://shop.example/order.placed"
    );
    assert_eq!(field(&placed[0].1, "id"), other.event_id.to_string());
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_is_a_permanent_failure() {
    let Some(fixture) = redis("a_key_that_is_not_a_stream_is_a_permanent_failure") else {
        return;
    };
    let mut conn = raw(&fixture.url).await;
    let key = format!("outbox:{}", fixture.name);
    let _: () = query(&mut conn, redis::cmd("SET").arg(&key).arg("not a stream")).await;

    let publisher = publisher(&fixture.url).await;
    let err = bounded(publisher.publish(&event(&fixture.name, "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{}", err.chain());
    assert!(err.chain().contains("WRONGTYPE"), "{}", err.chain());

    let options = consumer_options(&fixture.url, &key, "c");
    let err = bounded(RedisConsumer::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());
}

#[tokio::test]
async fn too_few_replicas_is_a_transient_failure_after_the_entry_was_added() {
    let Some(fixture) = redis("too_few_replicas_is_a_transient_failure_after_the_entry_was_added")
    else {
        return;
    };
    let options = RedisOptions {
        url: fixture.url.clone(),
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(100),
        ..RedisOptions::default()
    };
    let publisher = bounded(RedisPublisher::connect(options)).await.unwrap();

    let started = Instant::now();
    let err = bounded(publisher.publish(&event(&fixture.name, "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{}", err.chain());
    assert!(started.elapsed() >= Duration::from_millis(100));

    let mut conn = raw(&fixture.url).await;
    let stored = entries(&mut conn, &format!("outbox:{}", fixture.name)).await;
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_bad_urls_are_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://relay:s3cret@127.0.0.1:{port}");
    let options = RedisOptions {
        url: url.clone(),
        connect_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    };
    let err = bounded(RedisPublisher::connect(options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.chain().contains("s3cret"), "{}", err.chain());

    let err = bounded(RedisConsumer::connect(consumer_options(&url, "s", "c")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());

    for bad in ["http://127.0.0.1:6379", "redis://:pw@127.0.0.1:6379/notadb"] {
        let options = RedisOptions {
            url: bad.into(),
            ..RedisOptions::default()
        };
        let err = bounded(RedisPublisher::connect(options)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {}", err.chain());
        assert!(!err.chain().contains(":pw@"), "{}", err.chain());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumer_carry_on_after_a_server_restart() {
    let Some(mut server) =
        RedisServer::spawn("publisher_and_consumer_carry_on_after_a_server_restart")
    else {
        return;
    };
    let url = server.url();
    let publisher = publisher(&url).await;
    let mut consumer = consumer(consumer_options(&url, "outbox:restart", "c")).await;

    let before = event("restart", "k", 1, "t");
    bounded(publisher.publish(&before)).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(event_of(&delivery).event_id, before.event_id);
    bounded(delivery.ack()).await.unwrap();

    server.stop();
    let during = event("restart", "k", 2, "t");
    let started = Instant::now();
    let err = bounded(publisher.publish(&during)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    let err = bounded(publisher.publish(&during)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The server comes back empty: no stream, no group.
    server.start();
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

    let delivery = bounded(async {
        loop {
            match consumer.next().await {
                Ok(delivery) => break delivery.expect("consumer ended"),
                Err(err) => assert!(err.is_retryable(), "{}", err.chain()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(event_of(&delivery).event_id, during.event_id);
    bounded(delivery.ack()).await.unwrap();

    let mut conn = raw(&url).await;
    let stored = entries(&mut conn, "outbox:restart").await;
    let ids: Vec<&str> = stored.iter().map(|(_, f)| field(f, "id")).collect();
    assert_eq!(ids, [during.event_id.to_string()]);
}

#[tokio::test]
async fn the_consumer_decodes_what_the_publisher_sent_in_stream_order() {
    let Some(fixture) = redis("the_consumer_decodes_what_the_publisher_sent_in_stream_order")
    else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let mut consumer = consumer(consumer_options(&fixture.url, &key, "c")).await;

    let mut sent = Vec::new();
    for seq in 1..=3 {
        let mut event = event(&fixture.name, "order-9", seq, "order.placed");
        event
            .headers
            .insert("traceparent".into(), format!("00-{seq:032}-{seq:016}-01"));
        event.headers.insert("id".into(), "not the event id".into());
        bounded(publisher.publish(&event)).await.unwrap();
        sent.push(event);
    }

    let mut deliveries = Vec::new();
    for event in &sent {
        let delivery = next(&mut consumer).await;
        let source = format!("/outbox/{}", fixture.name);
        assert_eq!(
            event_of(&delivery),
            &ReceivedEvent::from_event(event, &source)
        );
        deliveries.push(delivery);
    }

    let mut conn = raw(&fixture.url).await;
    assert_eq!(pending(&mut conn, &key, "g").await, 3);
    for delivery in deliveries {
        bounded(delivery.ack()).await.unwrap();
    }
    assert_eq!(pending(&mut conn, &key, "g").await, 0);
}

#[tokio::test]
async fn after_a_restart_acked_entries_stay_acked_and_dropped_ones_come_back() {
    let Some(fixture) =
        redis("after_a_restart_acked_entries_stay_acked_and_dropped_ones_come_back")
    else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let options = consumer_options(&fixture.url, &key, "c");
    let mut first = consumer(options.clone()).await;

    let events: Vec<Event> = (1..=5)
        .map(|seq| event(&fixture.name, "k", seq, "t"))
        .collect();
    for event in &events[..4] {
        bounded(publisher.publish(event)).await.unwrap();
    }

    // All four at once, unsettled; then settled out of order, one dropped.
    let mut held = Vec::new();
    for event in &events[..4] {
        let delivery = next(&mut first).await;
        assert_eq!(event_of(&delivery).event_id, event.event_id);
        held.push(delivery);
    }
    let fourth = held.pop().unwrap();
    let third = held.pop().unwrap();
    let second = held.pop().unwrap();
    let one = held.pop().unwrap();
    bounded(fourth.ack()).await.unwrap();
    bounded(one.ack()).await.unwrap();
    drop(second);
    bounded(third.ack()).await.unwrap();
    drop(first);

    bounded(publisher.publish(&events[4])).await.unwrap();
    let mut second_run = consumer(options).await;
    let again = next(&mut second_run).await;
    assert_eq!(event_of(&again).event_id, events[1].event_id);
    let new = next(&mut second_run).await;
    assert_eq!(event_of(&new).event_id, events[4].event_id);
    assert_quiet(&mut second_run).await;

    bounded(again.ack()).await.unwrap();
    bounded(new.ack()).await.unwrap();
    let mut conn = raw(&fixture.url).await;
    assert_eq!(pending(&mut conn, &key, "g").await, 0);
}

#[tokio::test]
async fn entries_left_idle_by_another_consumer_are_claimed() {
    let Some(fixture) = redis("entries_left_idle_by_another_consumer_are_claimed") else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let events: Vec<Event> = (1..=2)
        .map(|seq| event(&fixture.name, "k", seq, "t"))
        .collect();
    for event in &events {
        bounded(publisher.publish(event)).await.unwrap();
    }

    let mut dead = consumer(consumer_options(&fixture.url, &key, "dead")).await;
    let taken = [next(&mut dead).await, next(&mut dead).await];
    drop(taken);
    drop(dead);
    let abandoned = Instant::now();

    let min_idle = Duration::from_millis(300);
    let options = RedisConsumerOptions {
        claim_min_idle: Some(min_idle),
        ..consumer_options(&fixture.url, &key, "alive")
    };
    let mut alive = consumer(options).await;
    for event in &events {
        let delivery = next(&mut alive).await;
        assert!(abandoned.elapsed() >= min_idle, "{:?}", abandoned.elapsed());
        assert_eq!(event_of(&delivery).event_id, event.event_id);
        bounded(delivery.ack()).await.unwrap();
    }

    let mut conn = raw(&fixture.url).await;
    assert_eq!(pending(&mut conn, &key, "g").await, 0);
}

#[tokio::test]
async fn max_in_flight_bounds_the_unsettled_deliveries() {
    let Some(fixture) = redis("max_in_flight_bounds_the_unsettled_deliveries") else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let events: Vec<Event> = (1..=3)
        .map(|seq| event(&fixture.name, "k", seq, "t"))
        .collect();
    for event in &events {
        bounded(publisher.publish(event)).await.unwrap();
    }

    let options = RedisConsumerOptions {
        max_in_flight: 2,
        batch_size: 1,
        ..consumer_options(&fixture.url, &key, "c")
    };
    let mut consumer = consumer(options).await;
    let one = next(&mut consumer).await;
    let two = next(&mut consumer).await;
    assert_eq!(event_of(&two).event_id, events[1].event_id);
    assert_quiet(&mut consumer).await;

    bounded(one.ack()).await.unwrap();
    let three = next(&mut consumer).await;
    assert_eq!(event_of(&three).event_id, events[2].event_id);
}

#[tokio::test]
async fn a_malformed_entry_is_permanent_and_rejected_to_the_dead_letter_stream() {
    let Some(fixture) =
        redis("a_malformed_entry_is_permanent_and_rejected_to_the_dead_letter_stream")
    else {
        return;
    };
    let key = format!("outbox:{}", fixture.name);
    let dead_letters = format!("{key}:dead");
    let mut conn = raw(&fixture.url).await;
    let mut add = redis::cmd("XADD");
    add.arg(&key).arg("*");
    for (name, value) in [
        ("specversion", "1.0"),
        ("source", "/elsewhere"),
        ("type", "order.placed"),
        ("partitionkey", "k"),
        ("data", "{}"),
    ] {
        add.arg(name).arg(value);
    }
    let malformed_id: String = query(&mut conn, &add).await;
    let good = event(&fixture.name, "k", 1, "t");
    bounded(publisher(&fixture.url).await.publish(&good))
        .await
        .unwrap();

    let options = RedisConsumerOptions {
        dead_letter_stream: Some(dead_letters.clone()),
        ..consumer_options(&fixture.url, &key, "c")
    };
    let mut consumer = consumer(options).await;
    let delivery = next(&mut consumer).await;
    let err = delivery.event().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("id"), "{err}");
    bounded(delivery.reject()).await.unwrap();

    let delivery = next(&mut consumer).await;
    assert_eq!(event_of(&delivery).event_id, good.event_id);
    bounded(delivery.reject()).await.unwrap();

    let original = entries(&mut conn, &key).await;
    let copied = entries(&mut conn, &dead_letters).await;
    assert_eq!(original[0].0, malformed_id);
    let fields = |entries: &[RawEntry]| entries.iter().map(|e| e.1.clone()).collect::<Vec<_>>();
    assert_eq!(fields(&copied), fields(&original));
    assert_eq!(pending(&mut conn, &key, "g").await, 0);
}

#[tokio::test]
async fn without_a_dead_letter_stream_a_reject_only_acknowledges() {
    let Some(fixture) = redis("without_a_dead_letter_stream_a_reject_only_acknowledges") else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    bounded(publisher.publish(&event(&fixture.name, "k", 1, "t")))
        .await
        .unwrap();

    let mut consumer = consumer(consumer_options(&fixture.url, &key, "c")).await;
    let delivery = next(&mut consumer).await;
    let mut conn = raw(&fixture.url).await;
    assert_eq!(pending(&mut conn, &key, "g").await, 1);
    bounded(delivery.reject()).await.unwrap();
    assert_eq!(pending(&mut conn, &key, "g").await, 0);

    let keys: Vec<String> = query(
        &mut conn,
        redis::cmd("KEYS").arg(format!("*{}*", fixture.name)),
    )
    .await;
    assert_eq!(keys, [key]);
}

#[tokio::test]
async fn a_cancelled_next_loses_nothing() {
    let Some(fixture) = redis("a_cancelled_next_loses_nothing") else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let options = RedisConsumerOptions {
        block: Duration::from_secs(5),
        ..consumer_options(&fixture.url, &key, "c")
    };
    let mut consumer = consumer(options).await;

    // Cut off while its read waits on the server; the server hands the next
    // entry to that same read, so only carrying the read on delivers it.
    assert_quiet(&mut consumer).await;
    let event = event(&fixture.name, "k", 1, "t");
    bounded(publisher.publish(&event)).await.unwrap();

    let started = Instant::now();
    let delivery = next(&mut consumer).await;
    assert_eq!(event_of(&delivery).event_id, event.event_id);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    bounded(delivery.ack()).await.unwrap();
}

#[tokio::test]
async fn pending_entries_deleted_from_the_stream_are_acknowledged_and_skipped() {
    let Some(fixture) =
        redis("pending_entries_deleted_from_the_stream_are_acknowledged_and_skipped")
    else {
        return;
    };
    let publisher = publisher(&fixture.url).await;
    let key = publisher.stream_key(&fixture.name, "t");
    let events: Vec<Event> = (1..=2)
        .map(|seq| event(&fixture.name, "k", seq, "t"))
        .collect();
    for event in &events {
        bounded(publisher.publish(event)).await.unwrap();
    }

    let options = consumer_options(&fixture.url, &key, "c");
    let mut first = consumer(options.clone()).await;
    drop([next(&mut first).await, next(&mut first).await]);
    drop(first);

    let mut conn = raw(&fixture.url).await;
    let stored = entries(&mut conn, &key).await;
    let _: i64 = query(&mut conn, redis::cmd("XDEL").arg(&key).arg(&stored[0].0)).await;
    assert_eq!(pending(&mut conn, &key, "g").await, 2);

    let mut second = consumer(options).await;
    let delivery = next(&mut second).await;
    assert_eq!(event_of(&delivery).event_id, events[1].event_id);
    bounded(delivery.ack()).await.unwrap();
    assert_eq!(pending(&mut conn, &key, "g").await, 0);
}

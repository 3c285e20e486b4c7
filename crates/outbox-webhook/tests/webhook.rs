//! The webhook publisher and receiver against real HTTP servers on the loopback.
//!
//! Every test starts its own servers on `127.0.0.1`, port 0, so parallel runs
//! never meet. The endpoints that check what the publisher sends are axum
//! handlers written here, not the crate's receiver, and they check signatures
//! with the `hmac` crate directly. The relay tests run the real relay engine over
//! an SQLite outbox in a temporary file.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use outbox_core::{
    Consumer, Delivery, ErrorKind, Event, EventId, NewEvent, OutboxStore, Payload, Publisher,
    ReceivedEvent, Relay, RelayConfig, Result, RetryPolicy, Status, format_sequence,
};
use outbox_sqlite::SqliteStore;
use outbox_testkit::SqliteFile;
use outbox_testkit::stored_event as event;
use outbox_webhook::{
    ReceiverOptions, WebhookOptions, WebhookPublisher, WebhookReceiver, WebhookSecret, sign,
};
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits to be sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// The key the publishers, endpoints and receivers of these tests share.
const KEY: &[u8] = b"the key these tests share, 32 b.";

fn secret() -> WebhookSecret {
    WebhookSecret::from_bytes(KEY).unwrap()
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer within the test's bound")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a test endpoint saw of one request.
#[derive(Clone)]
struct Request {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request has no {name} header"))
            .to_str()
            .unwrap()
    }

    /// Whether one of the request's signatures is HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}` under [`KEY`], computed here without the crate.
    fn is_signed(&self) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(self.header("webhook-id").as_bytes());
        mac.update(b".");
        mac.update(self.header("webhook-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
    }
}

type Answer = Arc<dyn Fn(&Request) -> StatusCode + Send + Sync>;
type Seen = Arc<Mutex<Vec<Request>>>;

/// A test endpoint that records every request and answers as `answer` says.
struct Endpoint {
    addr: SocketAddr,
    seen: Seen,
    server: JoinHandle<()>,
}

impl Endpoint {
    async fn start(answer: impl Fn(&Request) -> StatusCode + Send + Sync + 'static) -> Self {
        let seen = Seen::default();
        let answer: Answer = Arc::new(answer);
        let router = Router::new()
            .fallback(record)
            .with_state((seen.clone(), answer));
        Endpoint::serve(router, seen).await
    }

    async fn serve(router: Router, seen: Seen) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Endpoint { addr, seen, server }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(
    State((seen, answer)): State<(Seen, Answer)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let request = Request {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    seen.lock().unwrap().push(request.clone());
    let status = answer(&request);
    // A redirect names a target, so that following it would show.
    (status, [("location", "/followed")])
}

async fn publisher(url: String) -> WebhookPublisher {
    bounded(WebhookPublisher::connect(WebhookOptions {
        url,
        secrets: vec![secret()],
        ..WebhookOptions::default()
    }))
    .await
    .expect("connect publisher")
}

/// A port on the loopback that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_arrive_signed_and_in_key_order() {
    let endpoint = Endpoint::start(|_| StatusCode::NO_CONTENT).await;
    let url = endpoint.url("/in/{stream}/{type}");
    let publisher = Arc::new(publisher(url).await);

    let mut events: HashMap<String, Vec<Event>> = HashMap::new();
    for k in 0..100 {
        let key = format!("key {k}/ü");
        let of_key = (1..=50)
            .map(|seq| {
                let event_type = if seq % 2 == 0 {
                    "order.paid"
                } else {
                    "order placed"
                };
                event("orders", &key, seq, event_type)
            })
            .collect();
        events.insert(key, of_key);
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
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 5_000);
    for request in &seen {
        let id = request.header("webhook-id");
        let event = expected
            .remove(id)
            .unwrap_or_else(|| panic!("event {id} posted twice or never published"));

        assert!(request.is_signed(), "event {id} is not signed with the key");
        let sent_at: u64 = request.header("webhook-timestamp").parse().unwrap();
        assert!(unix_now().abs_diff(sent_at) < 60, "timestamp {sent_at}");

        let encoded_type = event.event_type.replace(' ', "%20");
        assert_eq!(request.path, format!("/in/orders/{encoded_type}"));
        let encoded_key = event.key.replace(' ', "%20").replace('ü', "%C3%BC");
        assert_eq!(request.header("ce-partitionkey"), encoded_key);
        assert_eq!(request.header("ce-id"), id);
        assert_eq!(request.header("ce-type"), encoded_type);
        assert_eq!(request.header("ce-sequence"), format_sequence(event.seq));
        assert_eq!(
            request.headers["tenant"].as_bytes(),
            format!("tenant-of-{}", event.key).as_bytes()
        );
        assert_eq!(request.body.as_ref(), event.payload.as_bytes());

        let previous = last_seq.insert(event.key.clone(), event.seq).unwrap_or(0);
        assert_eq!(
            event.seq,
            previous + 1,
            "key {} posted seq {} after {previous}",
            event.key,
            event.seq
        );
    }
    assert!(expected.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_carries_exactly_the_binding() {
    let endpoint = Endpoint::start(|_| StatusCode::OK).await;
    let publisher = publisher(endpoint.url("/hook")).await;
    let mut sent = event("orders", "order-7", 12, "order.placed");
    sent.created_at = "2026-03-04T05:06:07.000089Z".parse().unwrap();
    sent.headers
        .insert("traceparent".into(), "00-0af7-b7ad-01".into());
    bounded(publisher.publish(&sent)).await.unwrap();

    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    let id = sent.event_id.to_string();
    let host = endpoint.addr.to_string();
    let mut expected = vec![
        ("accept", "*/*"),
        ("ce-id", id.as_str()),
        ("ce-outboxstream", "orders"),
        ("ce-partitionkey", "order-7"),
        ("ce-sequence", "0000000000000000012"),
        ("ce-source", "/outbox/orders"),
        ("ce-specversion", "1.0"),
        ("ce-time", "2026-03-04T05:06:07.000089Z"),
        ("ce-type", "order.placed"),
        ("content-length", "26"),
        ("content-type", "application/json"),
        ("host", host.as_str()),
        ("tenant", "tenant-of-order-7"),
        ("traceparent", "00-0af7-b7ad-01"),
        (
            "user-agent",
            concat!("outbox-webhook/", env!("CARGO_PKG_VERSION")),
        ),
        ("webhook-id", id.as_str()),
    ];
    let signature = request.header("webhook-signature");
    let timestamp = request.header("webhook-timestamp");
    expected.push(("webhook-signature", signature));
    expected.push(("webhook-timestamp", timestamp));
    expected.sort();

    let mut actual: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    actual.sort();
    assert_eq!(actual, expected);
    assert_eq!(request.path, "/hook");
    assert_eq!(request.body.as_ref(), br#"{"key":"order-7","seq":12}"#);
    assert!(request.is_signed());
    let signed_at: u64 = timestamp.parse().unwrap();
    assert_eq!(
        signature,
        sign(&secret(), &id, signed_at, request.body.as_ref())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_transient_and_the_retry_goes_through() {
    let endpoint = Endpoint::start(|request| {
        if request.path == "/first" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    })
    .await;
    let publisher = publisher(endpoint.url("/{type}")).await;
    let mut sent = event("orders", "k", 1, "first");

    let err = bounded(publisher.publish(&sent)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().ends_with("answered 500"), "{err}");

    sent.event_type = "second".into();
    bounded(publisher.publish(&sent)).await.unwrap();
    assert_eq!(endpoint.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_map_onto_error_kinds() {
    let endpoint = Endpoint::start(|request| {
        let code = request.path.trim_start_matches('/').parse().unwrap_or(200);
        StatusCode::from_u16(code).unwrap()
    })
    .await;
    let publisher = publisher(endpoint.url("/{type}")).await;

    let cases = [
        ("200", None),
        ("202", None),
        ("204", None),
        ("301", Some(ErrorKind::Permanent)),
        ("302", Some(ErrorKind::Permanent)),
        ("307", Some(ErrorKind::Permanent)),
        ("400", Some(ErrorKind::Permanent)),
        ("401", Some(ErrorKind::Permanent)),
        ("404", Some(ErrorKind::Permanent)),
        ("408", Some(ErrorKind::Transient)),
        ("413", Some(ErrorKind::Permanent)),
        ("422", Some(ErrorKind::Permanent)),
        ("429", Some(ErrorKind::Transient)),
        ("500", Some(ErrorKind::Transient)),
        ("502", Some(ErrorKind::Transient)),
        ("503", Some(ErrorKind::Transient)),
    ];
    for (code, kind) in cases {
        let outcome = bounded(publisher.publish(&event("s", "k", 1, code))).await;
        assert_eq!(outcome.err().map(|e| e.kind()), kind, "status {code}");
    }

    let paths: Vec<String> = endpoint.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), cases.len(), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p == "/followed"),
        "a redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_slower_than_the_timeout_is_transient() {
    let router = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        StatusCode::OK
    });
    let endpoint = Endpoint::serve(router, Seen::default()).await;
    let publisher = bounded(WebhookPublisher::connect(WebhookOptions {
        url: endpoint.url("/slow"),
        secrets: vec![secret()],
        timeout: Duration::from_millis(300),
        ..WebhookOptions::default()
    }))
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let err = bounded(publisher.publish(&event("s", "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{}", err.chain());
    assert!(
        err.message().contains("did not answer within 300 ms"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_is_unavailable() {
    let url = format!("http://127.0.0.1:{}/hook", closed_port());
    let err = bounded(WebhookPublisher::connect(WebhookOptions {
        url,
        secrets: vec![secret()],
        ..WebhookOptions::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_incomplete_options() {
    let endpoint = Endpoint::start(|_| StatusCode::OK).await;
    let cases = [
        WebhookOptions {
            secrets: vec![secret()],
            ..WebhookOptions::default()
        },
        WebhookOptions {
            url: endpoint.url("/hook"),
            ..WebhookOptions::default()
        },
        WebhookOptions {
            url: endpoint.url("/{key}"),
            secrets: vec![secret()],
            ..WebhookOptions::default()
        },
        WebhookOptions {
            url: endpoint.url("/hook"),
            secrets: vec![secret()],
            timeout: Duration::ZERO,
            ..WebhookOptions::default()
        },
    ];
    for options in cases {
        let shown = format!("{options:?}");
        let err = bounded(WebhookPublisher::connect(options))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{shown}");
    }
    assert!(endpoint.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_went_away_is_unavailable() {
    let endpoint = Endpoint::start(|_| StatusCode::OK).await;
    let publisher = publisher(endpoint.url("/hook")).await;
    endpoint.server.abort();
    let _ = endpoint.server.await;

    let err = bounded(publisher.publish(&event("s", "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_the_answer_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hang_up = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
        }
    });
    let publisher = publisher(format!("http://{addr}/hook")).await;

    let err = bounded(publisher.publish(&event("s", "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    hang_up.abort();
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        batch_size: 100,
        concurrency: 16,
        poll_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(5),
        max_attempts: 5,
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
        },
        ..RelayConfig::default()
    }
}

/// An SQLite outbox in a temporary file, holding `events`.
async fn sqlite_outbox(events: &[NewEvent]) -> (SqliteFile, SqliteStore) {
    let file = SqliteFile::new();
    let store = SqliteStore::new(file.pool().await, Default::default());
    store.migrate().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, events).await.unwrap();
    tx.commit().await.unwrap();
    (file, store)
}

fn new_event(key: &str, event_type: &str, n: usize) -> NewEvent {
    let payload = Payload::bytes(Payload::JSON, format!(r#"{{"n":{n}}}"#));
    NewEvent::new("orders", key, event_type, payload)
}

/// Runs the relay over `store` until its status satisfies `settled`.
async fn relay_until(
    store: &SqliteStore,
    publisher: WebhookPublisher,
    settled: impl Fn(&Status) -> bool,
) {
    let relay = Relay::new(store.clone(), publisher, relay_config());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move { stopped.await.unwrap_or(()) }));

    bounded(async {
        while !settled(&store.status().await.unwrap()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.send(()).unwrap();
    bounded(task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_retries_a_500_and_delivers_in_key_order() {
    let failed_once = Mutex::new(HashSet::new());
    let endpoint = Endpoint::start(move |request| {
        let id = request.header("webhook-id").to_owned();
        if failed_once.lock().unwrap().insert(id) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    })
    .await;
    let events: Vec<NewEvent> = (0..10)
        .map(|n| new_event(&format!("key-{}", n % 2), "order.placed", n))
        .collect();
    let (_file, store) = sqlite_outbox(&events).await;

    let publisher = publisher(endpoint.url("/in/{stream}")).await;
    relay_until(&store, publisher, |s| s.pending == 0).await;

    let status = store.status().await.unwrap();
    assert_eq!(status.dead_lettered, 0);
    let mut positions: HashMap<String, Vec<i64>> = HashMap::new();
    for request in endpoint.seen() {
        assert!(request.is_signed());
        let seq: i64 = request.header("ce-sequence").parse().unwrap();
        let key = request.header("ce-partitionkey").to_owned();
        positions.entry(key).or_default().push(seq);
    }
    // Each event failed once and went through on the retry, before the next.
    let expected: Vec<i64> = (1..=5).flat_map(|seq| [seq, seq]).collect();
    assert_eq!(positions.len(), 2);
    for (key, seqs) in positions {
        assert_eq!(seqs, expected, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_sends_the_event_to_the_dead_letters() {
    let endpoint = Endpoint::start(|request| {
        if request.path.ends_with("/order.refused") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    })
    .await;
    let publisher = publisher(endpoint.url("/in/{type}")).await;

    let err = bounded(publisher.publish(&event("s", "k", 1, "order.refused")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);

    let poison = new_event("poison", "order.refused", 1);
    let (_file, store) =
        sqlite_outbox(&[poison.clone(), new_event("fine", "order.placed", 2)]).await;
    relay_until(&store, publisher, |s| s.pending == 0).await;

    let status = store.status().await.unwrap();
    assert_eq!(status.dead_lettered, 1);
    let (event_id, attempts, last_error): (String, i64, String) =
        sqlx::query_as("SELECT event_id, attempts, last_error FROM outbox_dead_letters")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(event_id, poison.event_id().to_string());
    assert_eq!(attempts, 1, "a permanent failure dead-letters at once");
    assert!(last_error.contains("answered 400"), "{last_error}");

    let paths: Vec<String> = endpoint.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths.contains(&"/in/order.placed".to_owned()));
}

async fn receiver() -> WebhookReceiver {
    bounded(WebhookReceiver::bind(ReceiverOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: Some(secret()),
        ..ReceiverOptions::default()
    }))
    .await
    .expect("bind receiver")
}

async fn publisher_to(receiver: &WebhookReceiver) -> Arc<WebhookPublisher> {
    let url = format!("http://{}/hooks/{{stream}}", receiver.local_addr());
    Arc::new(publisher(url).await)
}

fn spawn_publish(publisher: &Arc<WebhookPublisher>, event: &Event) -> JoinHandle<Result<()>> {
    let (publisher, event) = (Arc::clone(publisher), event.clone());
    tokio::spawn(async move { publisher.publish(&event).await })
}

async fn next(receiver: &mut WebhookReceiver) -> Delivery {
    bounded(receiver.next())
        .await
        .expect("receive")
        .expect("a delivery")
}

async fn nothing_arrives(receiver: &mut WebhookReceiver) {
    let next = tokio::time::timeout(QUIET, receiver.next()).await;
    assert!(next.is_err(), "unexpected delivery {next:?}");
}

/// The headers of a hand-made request for event `id`, signed at `timestamp`
/// over `body`, without the attribute `omit`.
fn hand_made(id: &str, timestamp: u64, body: &[u8], omit: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "/hand/made"),
        ("ce-type", "order.placed"),
        ("ce-partitionkey", "k"),
        ("content-type", "application/json"),
        ("webhook-id", id),
    ] {
        if name != omit {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
    }
    headers.insert("webhook-timestamp", timestamp.into());
    let signature = sign(&secret(), id, timestamp, body);
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );
    headers
}

fn spawn_post(
    receiver: &WebhookReceiver,
    headers: HeaderMap,
    body: &'static [u8],
) -> JoinHandle<StatusCode> {
    let url = format!("http://{}/hand", receiver.local_addr());
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("post");
        response.status()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_hands_over_what_the_publisher_sent() {
    let mut receiver = receiver().await;
    let publisher = publisher_to(&receiver).await;
    let sent = event("orders", "order 7/ü", 3, "order.placed");

    let publish = spawn_publish(&publisher, &sent);
    let delivery = next(&mut receiver).await;
    let received = delivery.event().expect("decoded");
    assert_eq!(
        *received,
        ReceivedEvent::from_event(&sent, "/outbox/orders")
    );
    assert!(
        !publish.is_finished(),
        "answered before the delivery was settled"
    );

    bounded(delivery.ack()).await.unwrap();
    bounded(publish)
        .await
        .unwrap()
        .expect("acknowledged publish");
    nothing_arrives(&mut receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_become_the_answers() {
    let mut receiver = receiver().await;
    let body: &[u8] = br#"{"n":1}"#;

    for (settle, status) in [
        ("ack", StatusCode::NO_CONTENT),
        ("reject", StatusCode::UNPROCESSABLE_ENTITY),
        ("drop", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let id = EventId::new().to_string();
        let post = spawn_post(&receiver, hand_made(&id, unix_now(), body, ""), body);
        let delivery = next(&mut receiver).await;
        assert_eq!(delivery.event().unwrap().event_id.to_string(), id);
        match settle {
            "ack" => bounded(delivery.ack()).await.unwrap(),
            "reject" => bounded(delivery.reject()).await.unwrap(),
            _ => drop(delivery),
        }
        assert_eq!(bounded(post).await.unwrap(), status, "{settle}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_is_retried_and_a_rejected_one_is_dead_lettered() {
    let mut receiver = receiver().await;
    let publisher = publisher_to(&receiver).await;
    let sent = event("orders", "k", 1, "order.placed");

    let publish = spawn_publish(&publisher, &sent);
    drop(next(&mut receiver).await);
    let err = bounded(publish).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().ends_with("answered 503"), "{err}");

    let publish = spawn_publish(&publisher, &sent);
    let again = next(&mut receiver).await;
    assert_eq!(again.event().unwrap().event_id, sent.event_id);
    bounded(again.ack()).await.unwrap();
    bounded(publish).await.unwrap().unwrap();

    let refused = event("orders", "k", 2, "order.placed");
    let publish = spawn_publish(&publisher, &refused);
    bounded(next(&mut receiver).await.reject()).await.unwrap();
    let err = bounded(publish).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.message().ends_with("answered 422"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_request_is_refused_without_a_delivery() {
    let mut receiver = receiver().await;
    let url = format!("http://{}/hooks", receiver.local_addr());
    let stranger = bounded(WebhookPublisher::connect(WebhookOptions {
        url,
        secrets: vec![WebhookSecret::from_bytes("not the shared key").unwrap()],
        ..WebhookOptions::default()
    }))
    .await
    .unwrap();

    let err = bounded(stranger.publish(&event("orders", "k", 1, "t")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.message().ends_with("answered 401"), "{err}");

    let id = EventId::new().to_string();
    let tampered = spawn_post(&receiver, hand_made(&id, unix_now(), b"{}", ""), b"{ }");
    assert_eq!(bounded(tampered).await.unwrap(), StatusCode::UNAUTHORIZED);
    let stale = hand_made(&id, unix_now() - 600, b"{}", "");
    let stale = spawn_post(&receiver, stale, b"{}");
    assert_eq!(bounded(stale).await.unwrap(), StatusCode::UNAUTHORIZED);
    let unsigned = spawn_post(&receiver, HeaderMap::new(), b"{}");
    assert_eq!(bounded(unsigned).await.unwrap(), StatusCode::UNAUTHORIZED);

    nothing_arrives(&mut receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_ce_id_is_a_malformed_delivery() {
    let mut receiver = receiver().await;
    let id = EventId::new().to_string();
    let post = spawn_post(&receiver, hand_made(&id, unix_now(), b"{}", "ce-id"), b"{}");

    let delivery = next(&mut receiver).await;
    let err = delivery.event().expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("no cloudevents id"), "{err}");
    bounded(delivery.reject()).await.unwrap();
    assert_eq!(bounded(post).await.unwrap(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_deliveries_may_be_unsettled_at_once() {
    let mut receiver = receiver().await;
    let publisher = publisher_to(&receiver).await;
    let events: Vec<Event> = (0..5)
        .map(|k| event("orders", &format!("key-{k}"), 1, "order.placed"))
        .collect();
    let publishes: Vec<_> = events
        .iter()
        .map(|e| spawn_publish(&publisher, e))
        .collect();

    let mut deliveries = Vec::new();
    for _ in &events {
        deliveries.push(next(&mut receiver).await);
    }
    let ids: HashSet<EventId> = deliveries
        .iter()
        .map(|d| d.event().unwrap().event_id)
        .collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id).collect());
    assert!(publishes.iter().all(|p| !p.is_finished()));

    for delivery in deliveries.into_iter().rev() {
        bounded(delivery.ack()).await.unwrap();
    }
    for publish in publishes {
        bounded(publish).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_after_the_sender_gave_up_fails() {
    let mut receiver = receiver().await;
    let url = format!("http://{}/hooks", receiver.local_addr());
    let impatient = Arc::new(
        bounded(WebhookPublisher::connect(WebhookOptions {
            url,
            secrets: vec![secret()],
            timeout: Duration::from_millis(300),
            ..WebhookOptions::default()
        }))
        .await
        .unwrap(),
    );

    let publish = spawn_publish(&impatient, &event("orders", "k", 1, "t"));
    let delivery = next(&mut receiver).await;
    let err = bounded(publish).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);

    // The server notices the closed connection when it next polls it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = bounded(delivery.ack()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
}

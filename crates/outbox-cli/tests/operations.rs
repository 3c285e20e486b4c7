//! The relay's operator endpoints against a real database and a broker that
//! goes away: `/healthz`, `/readyz` and the backlog gauges of `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outbox::sqlite::SqliteStore;
use outbox::{NewEvent, OutboxStore};
use outbox_testkit::{NatsServer, SqliteFile};

/// Sends `GET path` and returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", path, "")
}

/// Sends one request with `headers` (each ending in CRLF) and returns the status
/// code and the body.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

/// The value of the unlabelled metric `name` in a Prometheus text page.
fn gauge(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Polls `holds` every 100 ms until it is true, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !holds().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn enqueue(store: &SqliteStore, count: usize) {
    let events: Vec<NewEvent> = (0..count)
        .map(|i| {
            let payload = serde_json::json!({ "i": i });
            NewEvent::json(
                "orders",
                format!("order-{}", i % 10),
                "order.placed",
                &payload,
            )
            .unwrap()
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.enqueue(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_backlog_gauges_follow_a_broker_outage() {
    let Some(mut nats) = NatsServer::spawn("readiness_and_backlog_gauges_follow_a_broker_outage")
    else {
        return;
    };
    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, Default::default());
    store.migrate().await.unwrap();
    let http = free_port();

    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUTBOX_") {
            command.env_remove(name);
        }
    }
    let relay = command
        .args(["relay", "--database-url", &db.url(), "--publisher", "nats"])
        .args(["--nats-url", &nats.url(), "--nats-stream", "OPS"])
        .args(["--nats-subjects", "orders.>"])
        .args(["--http-listen", &http.to_string()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the relay");
    let _relay = Relay(relay);

    eventually("the endpoints", Duration::from_secs(20), async || {
        get(http, "/healthz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    enqueue(&store, 200).await;
    eventually("publishing", Duration::from_secs(20), async || {
        store.status().await.unwrap().pending == 0
    })
    .await;
    assert_eq!(get(http, "/readyz").unwrap().0, 200);
    let page = get(http, "/metrics").unwrap().1;
    assert!(
        page.contains("outbox_events_published_total{stream=\"orders\",publisher=\"nats\"} 200"),
        "{page}"
    );
    assert!(
        page.contains(
            "outbox_commit_to_ack_seconds_count{stream=\"orders\",publisher=\"nats\"} 200"
        ),
        "{page}"
    );
    assert!(
        page.contains("outbox_commit_to_ack_seconds_bucket{"),
        "a histogram, not a summary: {page}"
    );

    // The broker goes away under load: readiness names it, and the gauges
    // follow the backlog as the database counts it.
    nats.stop();
    enqueue(&store, 100).await;
    eventually("unready", Duration::from_secs(30), async || {
        get(http, "/readyz").is_some_and(|(code, body)| code == 503 && body.contains("broker"))
    })
    .await;
    eventually("the backlog gauge", Duration::from_secs(20), async || {
        let page = get(http, "/metrics").map(|r| r.1).unwrap_or_default();
        gauge(&page, "outbox_pending_events") == Some(100.0)
    })
    .await;
    assert_eq!(store.status().await.unwrap().pending, 100);
    let page = get(http, "/metrics").unwrap().1;
    assert!(
        gauge(&page, "outbox_oldest_pending_age_seconds").unwrap() > 0.0,
        "{page}"
    );
    assert_eq!(get(http, "/healthz").unwrap().0, 200, "alive while unready");

    nats.start();
    eventually("ready again", Duration::from_secs(60), async || {
        get(http, "/readyz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    eventually("the backlog drained", Duration::from_secs(30), async || {
        store.status().await.unwrap().pending == 0
    })
    .await;
    eventually("the gauge at zero", Duration::from_secs(20), async || {
        let page = get(http, "/metrics").map(|r| r.1).unwrap_or_default();
        gauge(&page, "outbox_pending_events") == Some(0.0)
    })
    .await;
}

#[test]
fn a_bad_listen_address_is_a_configuration_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["relay", "--database-url", "sqlite://unused.db"])
        .args(["--publisher", "stdout", "--http-listen", "localhost"])
        .env_remove("OUTBOX_HTTP_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen address"));
}

#[tokio::test]
async fn the_admin_api_asks_for_its_token() {
    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, Default::default());
    store.migrate().await.unwrap();
    enqueue(&store, 3).await;
    let http = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    // A relay whose endpoint cannot be found: the backlog stays where it is.
    let relay = command
        .args([
            "relay",
            "--database-url",
            &db.url(),
            "--publisher",
            "webhook",
        ])
        .args(["--webhook-url", "http://{stream}.invalid/hook"])
        .args(["--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        .args([
            "--http-listen",
            &http.to_string(),
            "--admin-token",
            "s3cret",
        ])
        .env_remove("OUTBOX_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _relay = Relay(relay);

    eventually("the endpoints", Duration::from_secs(20), async || {
        get(http, "/healthz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    assert_eq!(get(http, "/api/status").unwrap().0, 401);
    let wrong = request(
        http,
        "GET",
        "/api/status",
        "Authorization: Bearer s3crex\r\n",
    );
    assert_eq!(wrong.unwrap().0, 401);
    let (code, body) = request(
        http,
        "GET",
        "/api/status",
        "Authorization: Bearer s3cret\r\n",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["pending"], 3);
    let (code, _) = request(
        http,
        "POST",
        "/api/dead-letters/01890a5d-ac96-774b-bcce-b302099a8057/retry",
        "Authorization: Bearer s3cret\r\n",
    )
    .unwrap();
    assert_eq!(code, 404, "no such dead letter");

    let exposed = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args([
            "relay",
            "--database-url",
            &db.url(),
            "--publisher",
            "stdout",
        ])
        .args(["--http-listen", "0.0.0.0:0"])
        .env_remove("OUTBOX_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(exposed.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&exposed.stderr).contains("without a token"));
}

#[tokio::test]
async fn status_watch_prints_the_backlog_every_interval() {
    use std::io::BufRead;

    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, Default::default());
    store.migrate().await.unwrap();
    enqueue(&store, 2).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["status", "--database-url", &db.url(), "--watch", "--json"])
        .args(["--interval", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        let second = lines.next().unwrap().unwrap();
        (first, second)
    });
    let (first, second) = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("two redraws within 20 s")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(first["pending"], 2);
    assert!(first["backlog_change_per_second"].is_null());
    assert_eq!(second["pending"], 2);
    assert_eq!(second["backlog_change_per_second"], 0.0);
}

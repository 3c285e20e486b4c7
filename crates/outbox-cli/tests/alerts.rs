//! The relay's built-in alerts against a real database and a broker that goes
//! away: each rule fires once and resolves once, in the log and on the webhook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use outbox::sqlite::SqliteStore;
use outbox::{NewEvent, OutboxStore};
use outbox_testkit::{NatsServer, SqliteFile};
use serde_json::Value;

/// A receiver of webhook POSTs: every body it is sent comes out of the channel.
fn receiver() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes());
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

/// One alert as the webhook received it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    starts_at: String,
    ends_at: Option<String>,
}

fn parse(body: &str) -> Vec<Received> {
    let alerts: Vec<Value> = serde_json::from_str(body).expect("a JSON array");
    alerts
        .iter()
        .map(|alert| {
            assert_eq!(alert["labels"]["service"], "outbox", "{alert}");
            assert!(alert["labels"]["severity"].is_string(), "{alert}");
            assert!(alert["annotations"]["summary"].is_string(), "{alert}");
            assert!(alert["annotations"]["description"].is_string(), "{alert}");
            Received {
                name: alert["labels"]["alertname"].as_str().unwrap().to_owned(),
                starts_at: alert["startsAt"].as_str().unwrap().to_owned(),
                ends_at: alert["endsAt"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// Collects what `bodies` brings until `done` holds of everything received so
/// far, failing after `limit`.
fn collect_until(
    what: &str,
    bodies: &mpsc::Receiver<String>,
    seen: &mut Vec<Received>,
    limit: Duration,
    done: impl Fn(&[Received]) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "waited {limit:?} for {what}; got {seen:?}");
        if let Ok(body) = bodies.recv_timeout(left.min(Duration::from_millis(200))) {
            seen.extend(parse(&body));
        }
    }
}

fn fired(seen: &[Received], name: &str) -> usize {
    seen.iter()
        .filter(|a| a.name == name && a.ends_at.is_none())
        .count()
}

fn resolved(seen: &[Received], name: &str) -> usize {
    seen.iter()
        .filter(|a| a.name == name && a.ends_at.is_some())
        .count()
}

/// Polls `holds` every 100 ms until it is true, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !holds().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Relay {
    child: Child,
    log: PathBuf,
}

impl Relay {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- relay log:\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn enqueue(store: &SqliteStore, count: usize) {
    let events: Vec<NewEvent> = (0..count)
        .map(|i| {
            let payload = serde_json::json!({ "i": i });
            NewEvent::json(
                "orders",
                format!("order-{}", i % 5),
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

const BROKER: &str = "OutboxBrokerUnreachable";
const LAG: &str = "OutboxLagHigh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_fires_and_resolves_each_alert_once() {
    let Some(mut nats) = NatsServer::spawn("a_broker_outage_fires_and_resolves_each_alert_once")
    else {
        return;
    };
    let db = SqliteFile::new();
    let store = SqliteStore::new(db.pool().await, Default::default());
    store.migrate().await.unwrap();
    let (hook, bodies) = receiver();
    let log = std::env::temp_dir().join(format!("outbox-alerts-{}.log", outbox::EventId::new()));

    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUTBOX_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(["--log", "info", "relay", "--database-url", &db.url()])
        .args(["--publisher", "nats", "--nats-url", &nats.url()])
        .args(["--nats-stream", "ALERTS", "--nats-subjects", "orders.>"])
        .args(["--status-interval-seconds", "0.5"])
        .args(["--alert-lag-seconds", "1", "--alert-for-seconds", "1"])
        .args(["--alert-broker-seconds", "1"])
        .args(["--alert-webhook", &format!("http://{hook}/api/v2/alerts")])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the relay");
    let relay = Relay { child, log };

    enqueue(&store, 50).await;
    eventually("publishing", Duration::from_secs(20), async || {
        store.status().await.unwrap().pending == 0
    })
    .await;
    assert!(bodies.try_recv().is_err(), "no alert while healthy");

    // The broker goes away under load: both rules fire, once.
    nats.stop();
    enqueue(&store, 50).await;
    let mut seen = Vec::new();
    collect_until(
        "both to fire",
        &bodies,
        &mut seen,
        Duration::from_secs(25),
        |s| fired(s, BROKER) >= 1 && fired(s, LAG) >= 1,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(body) = bodies.try_recv() {
        seen.extend(parse(&body));
    }
    assert_eq!(fired(&seen, BROKER), 1, "{seen:?}");
    assert_eq!(fired(&seen, LAG), 1, "{seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "nothing else while the outage lasts: {seen:?}"
    );

    // The broker is back: the backlog drains and both resolve, once.
    nats.start();
    collect_until(
        "both to resolve",
        &bodies,
        &mut seen,
        Duration::from_secs(30),
        |s| resolved(s, BROKER) >= 1 && resolved(s, LAG) >= 1,
    );
    eventually("the backlog drained", Duration::from_secs(10), async || {
        store.status().await.unwrap().pending == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(body) = bodies.try_recv() {
        seen.extend(parse(&body));
    }
    assert_eq!(seen.len(), 4, "one fire and one resolve each: {seen:?}");
    for name in [BROKER, LAG] {
        assert_eq!(resolved(&seen, name), 1, "{seen:?}");
        let mut mine = seen.iter().filter(|a| a.name == name);
        let (fire, resolve) = (mine.next().unwrap(), mine.next().unwrap());
        assert!(fire.ends_at.is_none(), "fired first: {seen:?}");
        assert_eq!(fire.starts_at, resolve.starts_at, "{seen:?}");
        assert!(resolve.ends_at.as_deref().unwrap() >= resolve.starts_at.as_str());
    }

    let text = relay.log();
    for name in [BROKER, LAG] {
        let lines = |what: &str| {
            text.lines()
                .filter(|l| l.contains(what) && l.contains(name))
                .count()
        };
        assert_eq!(lines("alert fired"), 1, "{name}");
        assert_eq!(lines("alert resolved"), 1, "{name}");
    }
    assert!(
        !text.contains("could not send alerts"),
        "every POST succeeded"
    );
}

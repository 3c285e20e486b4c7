//! `outbox status --watch`: the backlog redrawn in the terminal.
//!
//! Every interval it reads the store's status and, when given a relay's HTTP
//! address, that relay's running totals from `/api/relay`, and redraws the
//! figures with their rates of change. With `--json` it prints one object per
//! interval instead, for scripts.

use std::time::{Duration, Instant};

use outbox::{Error, ErrorKind, OutboxStore, Result};

use crate::cli::DatabaseArgs;

pub async fn run(db: &DatabaseArgs, json: bool, interval: f64, relay: Option<&str>) -> Result<()> {
    if !(interval.is_finite() && interval > 0.0) {
        return Err(Error::invalid_input(
            "--interval must be a positive number of seconds",
        ));
    }
    let relay = relay.map(relay_address).transpose()?;
    let store = crate::commands::open_checked(db).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval));
    let mut last: Option<(Instant, u64, Option<u64>)> = None;

    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::relay::shutdown_signal() => return Ok(()),
        }
        let status = store.status().await?;
        let published = match relay {
            Some(addr) => relay_published(addr).await,
            None => None,
        };
        let now = Instant::now();
        let (backlog_rate, publish_rate) = match last {
            Some((at, pending, before)) => {
                let secs = now.duration_since(at).as_secs_f64();
                let backlog = (status.pending as f64 - pending as f64) / secs;
                let publish = match (before, published) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / secs),
                    _ => None,
                };
                (Some(backlog), publish)
            }
            None => (None, None),
        };
        last = Some((now, status.pending, published));

        if json {
            let mut value = serde_json::to_value(&status).expect("plain struct serializes");
            value["backlog_change_per_second"] = serde_json::json!(backlog_rate);
            value["published_per_second"] = serde_json::json!(publish_rate);
            println!("{value}");
        } else {
            let rate = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:+.1}"));
            print!(
                "\x1b[2J\x1b[H{}backlog change/s:    {}\npublished/s:         {}\n",
                crate::commands::render(&status),
                rate(backlog_rate),
                publish_rate.map_or("- (pass --relay)".to_owned(), |r| format!("{r:.1}")),
            );
        }
    }
}

/// `http://HOST:PORT` or `HOST:PORT` as a socket address.
fn relay_address(text: &str) -> Result<std::net::SocketAddr> {
    let bare = text.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(bare)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("relay address {text:?} is not http://HOST:PORT"),
            )
        })
}

/// The relay's published count from `/api/relay`, or `None` when it does not
/// answer.
async fn relay_published(addr: std::net::SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request =
            format!("GET /api/relay HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        value["published"].as_u64()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

//! RabbitMQ fixtures: the shared test broker with names of each test's own, and
//! a way to cut one named connection off as the broker would.
//!
//! [`rabbitmq`] follows the same rule as [`crate::pg`]: an unreachable broker
//! skips the test, or fails it under `CI=true`. [`RabbitFixture::drop`] deletes
//! the queues and exchanges named after the fixture.

use std::process::Command;
use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};

use crate::unreachable;

/// The broker tests use, unless `OUTBOX_TEST_RABBITMQ_URL` says otherwise.
pub const DEFAULT_RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The URL of the shared test broker.
pub fn rabbitmq_url() -> String {
    std::env::var("OUTBOX_TEST_RABBITMQ_URL").unwrap_or_else(|_| DEFAULT_RABBITMQ_URL.to_owned())
}

/// A connection to the shared test broker and a name of this test's own.
pub struct RabbitFixture {
    /// The broker's URL.
    pub url: String,
    /// A connection independent of any publisher or consumer under test.
    pub connection: Connection,
    /// A channel on `connection`, for declaring and reading in tests.
    pub channel: Channel,
    /// A name unique to this fixture, valid as a queue, an exchange and an
    /// outbox stream: `T_` and the last 20 hex digits of a fresh UUIDv7.
    pub name: String,
}

/// Connects to the shared test broker, or returns `None` when it is unreachable
/// outside CI. Nothing is declared.
pub async fn rabbitmq(test: &str) -> Option<RabbitFixture> {
    let url = rabbitmq_url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let connection = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            unreachable("rabbitmq", test, &e);
            return None;
        }
        Err(_) => {
            unreachable("rabbitmq", test, &"no answer within 5 s");
            return None;
        }
    };
    let channel = connection
        .create_channel()
        .await
        .expect("open a channel on the test broker");

    let id = uuid::Uuid::now_v7().simple().to_string();
    Some(RabbitFixture {
        url,
        connection,
        channel,
        name: format!("T_{}", &id[id.len() - 20..]),
    })
}

impl RabbitFixture {
    /// A second name of this fixture, `NAME-suffix`, also deleted by
    /// [`RabbitFixture::drop`] when the suffix is one of `dead`, `other`.
    pub fn derived(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Deletes the queues and exchanges named [`RabbitFixture::name`] and its
    /// `dead` and `other` derivations, those that exist, and closes the
    /// connection.
    pub async fn drop(self) {
        let names = [
            self.name.clone(),
            self.derived("dead"),
            self.derived("other"),
        ];
        for name in &names {
            // A fresh channel each time: deleting can close one on an error.
            let channel = self.connection.create_channel().await.expect("channel");
            let _ = channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
            let channel = self.connection.create_channel().await.expect("channel");
            let _ = channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Closes, from the broker's side, every connection whose client named it
/// `connection_name`, through `rabbitmqctl`, and returns how many it closed.
///
/// Returns `None` (skipping the test, or panicking under CI) when `rabbitmqctl`
/// cannot be run; it needs to run on the broker's machine with its Erlang cookie.
pub fn close_connections_named(test: &str, connection_name: &str) -> Option<usize> {
    let listed = match Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-s"])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            let cause = String::from_utf8_lossy(&out.stderr).into_owned();
            unreachable("rabbitmqctl", test, &cause);
            return None;
        }
        Err(e) => {
            unreachable("rabbitmqctl", test, &e);
            return None;
        }
    };

    let needle = format!("{{\"connection_name\",\"{connection_name}\"}}");
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a test"])
            .output()
            .expect("run rabbitmqctl close_connection");
        assert!(
            status.status.success(),
            "rabbitmqctl close_connection {pid} failed"
        );
    }
    Some(pids.len())
}

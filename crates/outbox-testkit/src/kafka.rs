//! Kafka fixtures: where the shared test broker is, whether it answers, and topic
//! and group names of each test's own.
//!
//! [`kafka`] follows the same rule as [`crate::pg`]: an unreachable broker skips
//! the test, or fails it under `CI=true`. The probe is a TCP connection only, so
//! this module needs no Kafka client; tests talk to the broker with their own.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::unreachable;

/// The Kafka broker tests use, unless `OUTBOX_TEST_KAFKA` says otherwise.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// How long the reachability probe waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The bootstrap brokers of the shared test Kafka, as `host:port[,host:port…]`.
pub fn kafka_brokers() -> String {
    std::env::var("OUTBOX_TEST_KAFKA").unwrap_or_else(|_| DEFAULT_KAFKA_BROKERS.to_owned())
}

/// A name no other test uses, valid as a Kafka topic, a consumer group and an
/// outbox stream: `t-` and the last 20 hex digits of a fresh UUIDv7, which are
/// mostly random.
pub fn unique_topic_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t-{}", &id[id.len() - 20..])
}

/// The shared test broker and a topic name of this test's own.
#[derive(Debug, Clone)]
pub struct KafkaFixture {
    /// The bootstrap brokers.
    pub brokers: String,
    /// A name unique to this fixture; see [`unique_topic_name`]. No topic of
    /// that name is created.
    pub topic: String,
}

/// Checks that the first bootstrap broker accepts a TCP connection, or returns
/// `None` when it does not outside CI.
pub fn kafka(test: &str) -> Option<KafkaFixture> {
    let brokers = kafka_brokers();
    let first = brokers.split(',').next().unwrap_or_default().trim();
    match probe(first) {
        Ok(()) => Some(KafkaFixture {
            brokers,
            topic: unique_topic_name(),
        }),
        Err(e) => {
            unreachable("kafka", test, &format!("{first}: {e}"));
            None
        }
    }
}

fn probe(broker: &str) -> std::io::Result<()> {
    let mut last = std::io::Error::other("the address resolves to nothing");
    for addr in broker.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

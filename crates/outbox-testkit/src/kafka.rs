//! Kafka fixtures: where the shared test broker is, whether it answers, topic
//! names of each test's own, and private brokers for tests that stop one.
//!
//! [`kafka`] follows the same rule as [`crate::pg`]: an unreachable broker skips
//! the test, or fails it under `CI=true`. [`KafkaServer`] runs a `tansu` broker
//! and applies the same rule when the binary is missing. The probes are TCP
//! connections only, so this module needs no Kafka client; tests talk to the
//! broker with their own.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// How long a private broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `tansu` broker of a test's own on a free port of 127.0.0.1, with in-memory
/// storage; killed on drop.
///
/// [`KafkaServer::stop`] kills the process at once, as a crash would;
/// [`KafkaServer::start`] runs it again on the same port. Its storage is in
/// memory, so a restarted broker has lost every topic, record, group and
/// producer id. The binary is `tansu` on the `PATH` unless `OUTBOX_TEST_TANSU`
/// names another (`crates/outbox-kafka/ci.sh` links one into `/usr/local/bin`).
pub struct KafkaServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl KafkaServer {
    /// Starts a private broker and waits until it accepts connections, or
    /// returns `None` when the binary cannot be run outside CI.
    ///
    /// # Panics
    ///
    /// When the broker exits at start three times, or does not accept
    /// connections within 15 seconds.
    pub fn spawn(test: &str) -> Option<KafkaServer> {
        let binary = std::env::var_os("OUTBOX_TEST_TANSU")
            .map_or_else(|| PathBuf::from("tansu"), PathBuf::from);

        // The port is free when picked but may be taken before the broker binds
        // it, so a broker that exits at once is tried again on another port.
        let mut server = KafkaServer {
            binary,
            port: free_port(),
            child: None,
        };
        for _ in 0..3 {
            match server.launch() {
                Ok(true) => return Some(server),
                Ok(false) => server.port = free_port(),
                Err(e) => {
                    unreachable("tansu", test, &e);
                    return None;
                }
            }
        }
        panic!("tansu exited at start three times");
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker and waits for the process to end. Does nothing when it is
    /// stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().expect("wait for tansu to exit");
        }
    }

    /// Runs the broker again on the same port, empty, and waits until it accepts
    /// connections. Does nothing when it is running.
    ///
    /// # Panics
    ///
    /// When the broker cannot be run or exits at once.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        match self.launch() {
            Ok(true) => {}
            Ok(false) => panic!("tansu exited at restart on {}", self.brokers()),
            Err(e) => panic!("tansu cannot be run again: {e}"),
        }
    }

    /// Starts the process; `Ok(false)` when it exited before accepting
    /// connections.
    fn launch(&mut self) -> std::io::Result<bool> {
        let url = format!("tcp://{}", self.brokers());
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(true);
            }
            let child = self.child.as_mut().expect("just started");
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(false);
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("tansu did not accept connections within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

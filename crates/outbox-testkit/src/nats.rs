//! NATS fixtures: the shared test server with a stream name of each test's own,
//! and private `nats-server` processes for tests that stop and restart the broker.
//!
//! [`nats`] follows the same rule as [`crate::pg`]: an unreachable server skips the
//! test, or fails it under `CI=true`. [`NatsServer`] needs the `nats-server` binary
//! and applies the same rule when it is missing.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::GetStreamErrorKind;

use crate::unreachable;

/// The NATS server tests use, unless `OUTBOX_TEST_NATS_URL` says otherwise.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The URL of the shared test NATS server.
pub fn nats_url() -> String {
    std::env::var("OUTBOX_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// A name no other test uses, valid as an outbox stream, a JetStream stream and a
/// subject token: `T_` and the last 20 hex digits of a fresh UUIDv7, which are
/// mostly random.
pub fn unique_stream_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("T_{}", &id[id.len() - 20..])
}

/// A connection to the shared test server and a stream name of this test's own.
pub struct NatsFixture {
    /// The server's URL.
    pub url: String,
    /// A client connected to the server, independent of any publisher under test.
    pub client: async_nats::Client,
    /// A JetStream context on `client`.
    pub jetstream: jetstream::Context,
    /// A name unique to this fixture; see [`unique_stream_name`].
    pub stream: String,
}

/// Connects to the shared test server with JetStream, or returns `None` when it is
/// unreachable outside CI. No stream is created.
pub async fn nats(test: &str) -> Option<NatsFixture> {
    let url = nats_url();
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url.as_str())
        .await;
    let client = match connect {
        Ok(client) => client,
        Err(e) => {
            unreachable("nats", test, &e);
            return None;
        }
    };

    // A look-up of a stream that does not exist is answered by JetStream itself,
    // so an answer of any kind shows that JetStream is on.
    let jetstream = jetstream::new(client.clone());
    let stream = unique_stream_name();
    match jetstream.get_stream(&stream).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {}
        Err(e) => {
            unreachable("nats jetstream", test, &e);
            return None;
        }
    }
    Some(NatsFixture {
        url,
        client,
        jetstream,
        stream,
    })
}

impl NatsFixture {
    /// Deletes the JetStream stream named [`NatsFixture::stream`], if a test made it.
    pub async fn drop(self) {
        if self.jetstream.get_stream(&self.stream).await.is_ok() {
            self.jetstream
                .delete_stream(&self.stream)
                .await
                .expect("delete test stream");
        }
    }
}

/// A `nats-server` with JetStream of a test's own, on a free port of 127.0.0.1 with
/// a store in a temporary directory; killed and removed on drop.
///
/// [`NatsServer::stop`] kills the process at once, as a crash would;
/// [`NatsServer::start`] runs it again on the same port and store, so streams and
/// messages survive. The binary is `nats-server` on the `PATH` unless
/// `OUTBOX_TEST_NATS_SERVER` names another.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a private server and waits until it accepts connections, or returns
    /// `None` when the binary cannot be run outside CI.
    pub fn spawn(test: &str) -> Option<NatsServer> {
        let binary = std::env::var_os("OUTBOX_TEST_NATS_SERVER")
            .map_or_else(|| PathBuf::from("nats-server"), PathBuf::from);
        let store = tempfile::tempdir().expect("create temporary directory");

        // The port is free when picked but may be taken before the server binds it,
        // so a server that exits at once is tried again on another port.
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store,
            child: None,
        };
        for _ in 0..3 {
            match server.launch() {
                Ok(()) => return Some(server),
                Err(Launch::Missing(e)) => {
                    unreachable("nats-server", test, &e);
                    return None;
                }
                Err(Launch::Exited) => server.port = free_port(),
            }
        }
        panic!(
            "nats-server exited at start three times: {}",
            server.log_tail()
        );
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server and waits for the process to end. Does nothing when it is
    /// stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().expect("wait for nats-server to exit");
        }
    }

    /// Runs the server again on the same port and store, and waits until it
    /// accepts connections. Does nothing when it is running.
    ///
    /// # Panics
    ///
    /// When the server does not start within 15 seconds.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        match self.launch() {
            Ok(()) => {}
            Err(Launch::Missing(e)) => panic!("nats-server cannot be run again: {e}"),
            Err(Launch::Exited) => panic!(
                "nats-server exited at restart on {}: {}",
                self.url(),
                self.log_tail()
            ),
        }
    }

    fn launch(&mut self) -> Result<(), Launch> {
        let child = Command::new(&self.binary)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Launch::Missing)?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.announces_jetstream() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("just started");
            if child.try_wait().expect("poll nats-server").is_some() {
                self.child = None;
                return Err(Launch::Exited);
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "nats-server did not accept connections within {START_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether the server answers a connection with an `INFO` line that says
    /// JetStream is on.
    fn announces_jetstream(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
            return false;
        };
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok();

        let mut line = String::new();
        if BufReader::new(stream).read_line(&mut line).is_err() {
            return false;
        }
        line.starts_with("INFO ") && line.contains("\"jetstream\":true")
    }

    /// The end of the server's log file, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }
}

enum Launch {
    Missing(std::io::Error),
    Exited,
}

impl Drop for NatsServer {
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

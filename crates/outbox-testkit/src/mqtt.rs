//! MQTT fixtures: the shared test broker with topic and client names of each
//! test's own, and private `mosquitto` processes for tests that stop the broker.
//!
//! [`mqtt`] follows the same rule as [`crate::pg`]: an unreachable broker skips
//! the test, or fails it under `CI=true`. [`MosquittoServer`] needs the
//! `mosquitto` binary and applies the same rule when it is missing.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unreachable;

/// The MQTT broker tests use, unless `OUTBOX_TEST_MQTT_URL` says otherwise.
pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";

/// How long a private broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The URL of the shared test MQTT broker, `mqtt://host:port` without
/// credentials.
pub fn mqtt_url() -> String {
    std::env::var("OUTBOX_TEST_MQTT_URL").unwrap_or_else(|_| DEFAULT_MQTT_URL.to_owned())
}

/// A name no other test uses, valid as an outbox stream, a topic level and a
/// client id: `T_` and the last 20 hex digits of a fresh UUIDv7.
pub fn unique_mqtt_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("T_{}", &id[id.len() - 20..])
}

/// The shared test broker and a stream name of this test's own.
pub struct MqttFixture {
    /// The broker's URL.
    pub url: String,
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// A name unique to this fixture; see [`unique_mqtt_name`].
    pub stream: String,
}

/// Checks that the shared test broker accepts an MQTT connection, or returns
/// `None` when it does not outside CI.
pub async fn mqtt(test: &str) -> Option<MqttFixture> {
    let url = mqtt_url();
    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().expect("OUTBOX_TEST_MQTT_URL port")),
        None => (authority, 1883),
    };
    let fixture = MqttFixture {
        host: host.to_owned(),
        port,
        url: url.clone(),
        stream: unique_mqtt_name(),
    };

    let options = fixture.client_options(&unique_mqtt_name());
    if let Err(cause) = probe(options).await {
        unreachable("mqtt", test, &cause);
        return None;
    }
    Some(fixture)
}

impl MqttFixture {
    /// Settings for an independent rumqttc client of the broker, with a clean
    /// session and automatic acknowledgements.
    pub fn client_options(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20);
        options
    }
}

/// Connects once and waits for the CONNACK.
async fn probe(options: rumqttc::MqttOptions) -> Result<(), String> {
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 1);
    match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no connack within 5 s".to_owned()),
    }
}

/// A `mosquitto` of a test's own on a free port of 127.0.0.1, in memory, with
/// anonymous access; killed on drop.
///
/// [`MosquittoServer::stop`] kills the process at once, as a crash would;
/// [`MosquittoServer::start`] runs it again on the same port, empty;
/// [`MosquittoServer::pause`] freezes it. The
/// binary is `mosquitto` on the `PATH` or in `/usr/sbin` unless
/// `OUTBOX_TEST_MOSQUITTO` names another.
pub struct MosquittoServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MosquittoServer {
    /// Starts a private broker and waits until it accepts connections, or
    /// returns `None` when the binary cannot be run outside CI.
    pub fn spawn(test: &str) -> Option<MosquittoServer> {
        let binary = std::env::var_os("OUTBOX_TEST_MOSQUITTO").map_or_else(
            || {
                let sbin = PathBuf::from("/usr/sbin/mosquitto");
                if sbin.exists() {
                    sbin
                } else {
                    PathBuf::from("mosquitto")
                }
            },
            PathBuf::from,
        );
        let mut server = MosquittoServer {
            binary,
            port: free_port(),
            dir: tempfile::tempdir().expect("create temporary directory"),
            child: None,
        };
        // The port is free when picked but may be taken before the broker binds
        // it, so a broker that exits at once is tried again on another port.
        for _ in 0..3 {
            match server.launch() {
                Ok(()) => return Some(server),
                Err(Launch::Missing(e)) => {
                    unreachable("mosquitto", test, &e);
                    return None;
                }
                Err(Launch::Exited) => server.port = free_port(),
            }
        }
        panic!("mosquitto exited at start three times");
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port the broker listens on, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker and waits for the process to end. Does nothing when it
    /// is stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().expect("wait for mosquitto to exit");
        }
    }

    /// Freezes the broker with SIGSTOP: connections stay open, nothing is
    /// answered, as with a hung broker. [`MosquittoServer::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("mosquitto is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} mosquitto failed");
    }

    /// Runs the broker again on the same port and waits until it accepts
    /// connections. Does nothing when it is running.
    ///
    /// # Panics
    ///
    /// When the broker does not start within 15 seconds.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        match self.launch() {
            Ok(()) => {}
            Err(Launch::Missing(e)) => panic!("mosquitto cannot be run again: {e}"),
            Err(Launch::Exited) => panic!("mosquitto exited at restart on {}", self.url()),
        }
    }

    fn launch(&mut self) -> Result<(), Launch> {
        let config = self.dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
            self.port
        );
        std::fs::write(&config, text).expect("write mosquitto.conf");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Launch::Missing)?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("just started");
            if child.try_wait().expect("poll mosquitto").is_some() {
                self.child = None;
                return Err(Launch::Exited);
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("mosquitto did not accept connections within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

enum Launch {
    Missing(std::io::Error),
    Exited,
}

impl Drop for MosquittoServer {
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

//! Redis fixtures: the shared test server with key names of each test's own, and
//! private `redis-server` processes for tests that stop and restart the broker.
//!
//! [`redis`] follows the same rule as [`crate::pg`]: an unreachable server skips
//! the test, or fails it under `CI=true`. The fixtures speak the few commands they
//! need over a plain socket, so this module needs no Redis client library.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unreachable;

/// The Redis server tests use, unless `OUTBOX_TEST_REDIS_URL` says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Deletes every key that matches `ARGV[1]`; run on fixture drop.
const DELETE_MATCHING: &str =
    "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 0";

/// The URL of the shared test Redis server.
pub fn redis_url() -> String {
    std::env::var("OUTBOX_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// The shared test server and a name of this test's own.
///
/// On drop, every key whose name contains [`RedisFixture::name`] is deleted, even
/// when the test panicked. The clean-up speaks to the server without credentials,
/// so it does nothing on a server that requires them.
pub struct RedisFixture {
    /// The server's URL.
    pub url: String,
    /// A name unique to this fixture: `T_` and the last 20 hex digits of a fresh
    /// UUIDv7. Use it in every key and outbox stream name the test makes.
    pub name: String,
    address: String,
}

/// Checks that the shared test server answers, or returns `None` when it is
/// unreachable outside CI. No key is created.
pub fn redis(test: &str) -> Option<RedisFixture> {
    let url = redis_url();
    let address = address_of(&url);
    match command(&address, &[b"PING"]) {
        Ok(_) => Some(RedisFixture {
            url,
            name: unique_name(),
            address,
        }),
        Err(e) => {
            unreachable("redis", test, &e);
            None
        }
    }
}

impl Drop for RedisFixture {
    fn drop(&mut self) {
        let pattern = format!("*{}*", self.name);
        let args: [&[u8]; 4] = [
            b"EVAL",
            DELETE_MATCHING.as_bytes(),
            b"0",
            pattern.as_bytes(),
        ];
        let _ = command(&self.address, &args);
    }
}

/// A `redis-server` of a test's own on a free port of 127.0.0.1, keeping nothing
/// on disk; killed on drop.
///
/// [`RedisServer::stop`] kills the process at once, as a crash would, which loses
/// every key; [`RedisServer::start`] runs it again, empty, on the same port. The
/// binary is `redis-server` on the `PATH` unless `OUTBOX_TEST_REDIS_SERVER` names
/// another.
pub struct RedisServer {
    binary: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a private server and waits until it answers, or returns `None` when
    /// the binary cannot be run outside CI.
    pub fn spawn(test: &str) -> Option<RedisServer> {
        let binary =
            std::env::var("OUTBOX_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut server = RedisServer {
            binary,
            port: free_port(),
            dir: tempfile::tempdir().expect("create temporary directory"),
            child: None,
        };

        // The port is free when picked but may be taken before the server binds
        // it, so a server that exits at once is tried again on another port.
        for _ in 0..3 {
            match server.launch() {
                Ok(()) => return Some(server),
                Err(Launch::Missing(e)) => {
                    unreachable("redis-server", test, &e);
                    return None;
                }
                Err(Launch::Exited) => server.port = free_port(),
            }
        }
        panic!("redis-server exited at start three times");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for the process to end. Does nothing when it is
    /// stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().expect("wait for redis-server to exit");
        }
    }

    /// Runs the server again, empty, on the same port, and waits until it answers.
    /// Does nothing when it is running.
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
            Err(Launch::Missing(e)) => panic!("redis-server cannot be run again: {e}"),
            Err(Launch::Exited) => panic!("redis-server exited at restart on {}", self.url()),
        }
    }

    fn launch(&mut self) -> Result<(), Launch> {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Launch::Missing)?;
        self.child = Some(child);

        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if command(&address, &[b"PING"]).is_ok_and(|reply| reply == "+PONG") {
                return Ok(());
            }
            let child = self.child.as_mut().expect("just started");
            if child.try_wait().expect("poll redis-server").is_some() {
                self.child = None;
                return Err(Launch::Exited);
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("redis-server did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

enum Launch {
    Missing(std::io::Error),
    Exited,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command and returns the first line of the reply.
fn command(address: &str, args: &[&[u8]]) -> std::io::Result<String> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address does not resolve")
    })?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;

    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;

    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// `host:port` of a `redis://[user:password@]host[:port][/db]` URL.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    }
}

fn unique_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("T_{}", &id[id.len() - 20..])
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

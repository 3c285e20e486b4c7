//! The Redis publisher: each event becomes one entry of a Redis stream.
//!
//! [`RedisPublisher`] holds one multiplexed connection that reconnects by itself;
//! concurrent publishes share it and are pipelined. A publish resolves when the
//! `XADD` reply (the new entry's id) arrives, and optionally after `WAIT`.

use std::fmt;
use std::time::Duration;

use outbox_core::{Error, ErrorKind, Event, Publisher, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, info};

use crate::entry;
use crate::failure;
use crate::options::{RedisOptions, redact_url};
use outbox_core::Template;

/// Publishes outbox events as Redis stream entries.
///
/// Each event is one `XADD <key> [MAXLEN ~ N] * <fields>`, with the fields laid
/// out as the crate documentation describes and the key from the stream
/// template. Redis numbers the entries of a stream in the order it adds them, so
/// the events of one key keep their order within one stream as long as they are
/// published one after another, which the relay does.
///
/// [`RedisPublisher::connect`] fails with `Config` for invalid options or a URL
/// the client refuses (and for credentials the server refuses), and with
/// `Unavailable` when the server cannot be reached within the connect timeout.
///
/// After a lost connection, the next command fails as `Unavailable` and starts a
/// single reconnection attempt; each later command starts another one while the
/// server stays away, so publishes fail at once during an outage and succeed again
/// as soon as it is over. A publish whose reply is lost may still have added its
/// entry: the retry adds a second one with the same event id.
pub struct RedisPublisher {
    connection: ConnectionManager,
    stream: Template,
    source: Template,
    max_len: Option<u64>,
    wait_replicas: u32,
    wait_timeout: Duration,
    url: String,
}

impl RedisPublisher {
    /// Checks `options` and connects to the server.
    ///
    /// ```no_run
    /// use outbox_redis::{RedisOptions, RedisPublisher};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = RedisPublisher::connect(RedisOptions::default()).await?;
    /// assert_eq!(publisher.stream_key("orders", "order.placed"), "outbox:orders");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: RedisOptions) -> Result<RedisPublisher> {
        let url = redact_url(&options.url);
        let stream = Template::parse(&options.stream_template)
            .map_err(|e| e.context("invalid redis stream template"))?;
        let source = Template::parse(&options.source_template)
            .map_err(|e| e.context("invalid redis source template"))?;
        check_options(&options)?;

        let connection = connect(
            &options.url,
            &url,
            options.connect_timeout,
            options.response_timeout,
        )
        .await?;
        let version = server_version(&connection).await;
        info!(url = %url, server_version = %version, "redis publisher ready");

        Ok(RedisPublisher {
            connection,
            stream,
            source,
            max_len: options.max_len,
            wait_replicas: options.wait_replicas,
            wait_timeout: options.wait_timeout,
            url,
        })
    }

    /// The key of the Redis stream that events of `stream` and `event_type` are
    /// added to.
    pub fn stream_key(&self, stream: &str, event_type: &str) -> String {
        self.stream.render(stream, event_type)
    }

    /// Adds one entry and, when asked to, waits for replicas; returns the id.
    async fn add(&self, key: &str, fields: entry::Fields) -> Result<String> {
        let mut add = redis::cmd("XADD");
        add.arg(key);
        if let Some(max_len) = self.max_len {
            add.arg("MAXLEN").arg("~").arg(max_len);
        }
        add.arg("*");
        for (name, value) in fields {
            add.arg(name).arg(value);
        }

        let mut connection = self.connection.clone();
        let failed = |e| failure::command_failure(e, format!("cannot add to redis stream {key}"));
        if self.wait_replicas == 0 {
            return add.query_async(&mut connection).await.map_err(failed);
        }

        let wait_ms = self.wait_timeout.as_millis().max(1);
        let (id, replicas): (String, u32) = redis::pipe()
            .add_command(add)
            .cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(wait_ms as u64)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        if replicas < self.wait_replicas {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "{replicas} of {} redis replicas confirmed entry {id} of {key} \
                     within {wait_ms} ms",
                    self.wait_replicas
                ),
            ));
        }
        Ok(id)
    }
}

impl Publisher for RedisPublisher {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let key = self.stream_key(&event.stream, &event.event_type);
        let source = self.source.render(&event.stream, &event.event_type);

        let id = self.add(&key, entry::fields(event, &source)).await?;

        debug!(event_id = %event.event_id, stream_key = %key, entry_id = %id, "added entry");
        Ok(())
    }
}

impl fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("source", &self.source)
            .field("max_len", &self.max_len)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

fn check_options(options: &RedisOptions) -> Result<()> {
    if options.response_timeout.is_zero() || options.connect_timeout.is_zero() {
        return Err(Error::config("redis timeouts must be above zero"));
    }
    if options.max_len == Some(0) {
        return Err(Error::config("redis max_len must be above zero"));
    }
    if options.wait_replicas > 0 {
        if options.wait_timeout.is_zero() {
            // `WAIT n 0` would block for ever.
            return Err(Error::config("redis wait timeout must be above zero"));
        }
        if options.response_timeout <= options.wait_timeout {
            return Err(Error::config(
                "redis response timeout must exceed the wait timeout",
            ));
        }
    }
    Ok(())
}

/// Opens a reconnecting multiplexed connection to `url` (`shown` is the redacted
/// form), trying once to connect.
pub(crate) async fn connect(
    url: &str,
    shown: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| failure::connect_failure(e, shown))?;

    // A failed reconnection is not retried by the client: the next command starts
    // another attempt, so a command during an outage fails at once.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    let connect = ConnectionManager::new_with_config(client, config);
    match tokio::time::timeout(connect_timeout, connect).await {
        Err(_) => Err(failure::connect_timeout(shown)),
        Ok(Err(e)) => Err(failure::connect_failure(e, shown)),
        Ok(Ok(connection)) => Ok(connection),
    }
}

/// The server's version from `INFO server`, or `unknown`.
pub(crate) async fn server_version(connection: &ConnectionManager) -> String {
    let mut connection = connection.clone();
    let info: Option<String> = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok();
    info.as_deref()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("redis_version:")))
        .unwrap_or("unknown")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(options: RedisOptions) -> Error {
        let err = check_options(&options).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{options:?}");
        err
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        check_options(&RedisOptions::default()).unwrap();
        config_error(RedisOptions {
            response_timeout: Duration::ZERO,
            ..RedisOptions::default()
        });
        config_error(RedisOptions {
            max_len: Some(0),
            ..RedisOptions::default()
        });
        config_error(RedisOptions {
            wait_replicas: 1,
            wait_timeout: Duration::ZERO,
            ..RedisOptions::default()
        });
        let err = config_error(RedisOptions {
            wait_replicas: 1,
            wait_timeout: Duration::from_secs(5),
            ..RedisOptions::default()
        });
        assert!(err.message().contains("exceed"), "{err}");
    }
}

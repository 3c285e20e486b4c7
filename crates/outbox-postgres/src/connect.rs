//! Opening connection pools from a URL without ever echoing its password.

use std::str::FromStr;
use std::time::Duration;

use outbox_core::{Error, ErrorKind, Result};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a pool of up to `max_connections` to the database at `url`.
///
/// A malformed URL is a [`ErrorKind::Config`] error; a server that cannot be
/// reached is [`ErrorKind::Unavailable`], with a message that names the host and
/// port and a cause that says why. Neither repeats the URL, so a password in it
/// never reaches a log.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<PgPool> {
    let target = describe(url);
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        Error::config(format!("invalid postgresql url for {target}")).with_source(redact(e, url))
    })?;

    // One direct connection first: a pool retries until its timeout and then
    // reports only that it timed out, hiding why the server could not be reached.
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await;
    let failure = match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            None
        }
        Ok(Err(e)) => Some(e),
        Err(_) => Some(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    };
    if let Some(e) = failure {
        let kind = match e {
            sqlx::Error::Database(_) | sqlx::Error::Configuration(_) => ErrorKind::Config,
            _ => ErrorKind::Unavailable,
        };
        return Err(
            Error::new(kind, format!("could not connect to postgresql at {target}"))
                .with_source(redact(e, url)),
        );
    }

    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options))
}

/// `host:port/database` of a URL, or a placeholder when it does not parse.
fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "an unparseable url".to_owned(),
    }
}

/// A driver error's text with the URL's password, if any, replaced by `***`.
#[derive(Debug)]
struct Redacted(String);

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

fn redact(err: sqlx::Error, url: &str) -> Redacted {
    let text = err.to_string();
    let password = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty());
    Redacted(match password {
        Some(p) => text.replace(&p, "***"),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_without_credentials() {
        let d = describe("postgres://app:s3cret@db.internal:6432/shop");
        assert_eq!(d, "db.internal:6432/shop");
    }
}

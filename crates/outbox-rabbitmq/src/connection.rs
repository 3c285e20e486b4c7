//! Opening AMQP connections: the URL checks and the bounded connect that the
//! publisher, the consumer and the declaration helper share.

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use outbox_core::{Error, Result};

use crate::failure;

/// Parses `url`; `shown` is its redacted form, for errors.
pub(crate) fn parse_url(url: &str, shown: &str) -> Result<AMQPUri> {
    let uri = AMQPUri::from_str(url).map_err(|cause| {
        Error::config(format!("invalid amqp url {shown}")).with_source(std::io::Error::other(cause))
    })?;
    if uri.scheme == AMQPScheme::AMQPS {
        return Err(Error::config(format!(
            "amqp url {shown} asks for tls, which outbox-rabbitmq is built without"
        )));
    }
    Ok(uri)
}

/// Connects to `uri` within `timeout`, naming the connection `name`.
pub(crate) async fn open(
    uri: &AMQPUri,
    shown: &str,
    name: &str,
    timeout: Duration,
) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connect = Connection::connect_uri(uri.clone(), properties);
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(failure::connect_timeout(shown, timeout)),
        Ok(Err(err)) => Err(failure::connect_failure(err, shown)),
        Ok(Ok(connection)) => Ok(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn bad_urls_are_configuration_errors_without_the_password() {
        for url in [
            "http://u:pw@h:1",
            "amqp://u:pw@h:notaport",
            "amqps://u:pw@h",
        ] {
            let shown = crate::options::redact_url(url);
            let err = parse_url(url, &shown).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.chain().contains("pw"), "{}", err.chain());
        }
        let uri = parse_url(crate::DEFAULT_URL, "shown").unwrap();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.port, 5672);
    }
}

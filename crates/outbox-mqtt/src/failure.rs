//! How MQTT failures map onto the outbox's error kinds.
//!
//! Every error this crate returns is made here, following the classification in
//! the documentation of [`crate::MqttPublisher`] and [`crate::MqttConsumer`].
//! MQTT 3.1.1 has no negative acknowledgement of a publish, so apart from what
//! is refused before sending, failures are about the connection.

use std::time::Duration;

use outbox_core::{Error, ErrorKind};
use rumqttc::{ConnectReturnCode, ConnectionError};

/// The kind of a failed connection, by what the client reported.
pub(crate) fn connection_kind(err: &ConnectionError) -> ErrorKind {
    match err {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                ErrorKind::Unavailable
            }
            ConnectReturnCode::RefusedProtocolVersion
            | ConnectReturnCode::BadClientId
            | ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized => ErrorKind::Config,
        },
        #[cfg(feature = "tls")]
        ConnectionError::Tls(_) => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    }
}

/// The outbox error for a failed first connection to `url` (already redacted).
pub(crate) fn connect_failure(err: ConnectionError, url: &str) -> Error {
    let kind = connection_kind(&err);
    let message = match &err {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => format!("mqtt broker at {url} refused the credentials"),
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            format!("mqtt broker at {url} refused the client id")
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::RefusedProtocolVersion) => {
            format!("mqtt broker at {url} does not speak mqtt 3.1.1")
        }
        _ if kind == ErrorKind::Config => format!("tls setup with the mqtt broker at {url} failed"),
        _ => format!("mqtt broker at {url} is unreachable"),
    };
    Error::new(kind, message).with_source(err)
}

/// Connecting took longer than the connect timeout.
pub(crate) fn connect_timeout(url: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "mqtt broker at {url} did not answer within {} ms",
            after.as_millis()
        ),
    )
}

/// The broker refused the subscription to `filter` (SUBACK failure code).
pub(crate) fn subscription_refused(filter: &str) -> Error {
    Error::config(format!(
        "mqtt broker refused the subscription to {filter:?}"
    ))
}

/// The client is between connections: nothing is sent until it reconnects.
pub(crate) fn not_connected(url: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("not connected to the mqtt broker at {url}"),
    )
}

/// The connection a publish went out on was lost before its PUBACK arrived.
pub(crate) fn connection_lost(url: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("lost connection to the mqtt broker at {url} before the puback"),
    )
}

/// No PUBACK arrived within `ack_timeout`.
pub(crate) fn ack_timeout(ack_timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("no puback within {} ms", ack_timeout.as_millis()),
    )
}

/// The connection task has ended: the publisher or consumer was closed.
pub(crate) fn closed() -> Error {
    Error::new(ErrorKind::Unavailable, "mqtt connection is closed")
}

/// Every slot of the client's request channel holds a publish: the broker has
/// stopped acknowledging.
pub(crate) fn queue_full() -> Error {
    Error::new(ErrorKind::Unavailable, "mqtt publish queue is full")
}

/// The message is larger than the configured limit.
pub(crate) fn too_large(size: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::Permanent,
        format!("mqtt message of {size} bytes exceeds the limit of {max} bytes"),
    )
}

/// An acknowledgement for a message received on a connection that is gone;
/// the broker delivers the message again on the new one.
pub(crate) fn stale_ack() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "message came on an mqtt connection since lost; the broker redelivers it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_split_into_unavailable_and_misconfigured() {
        for code in [
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::BadClientId,
            ConnectReturnCode::RefusedProtocolVersion,
        ] {
            let err = ConnectionError::ConnectionRefused(code);
            assert_eq!(connection_kind(&err), ErrorKind::Config, "{code:?}");
        }
        let busy = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        assert_eq!(connection_kind(&busy), ErrorKind::Unavailable);

        let err = connect_failure(
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "mqtt://relay:***@h:1",
        );
        assert_eq!(
            err.message(),
            "mqtt broker at mqtt://relay:***@h:1 refused the credentials"
        );
    }

    #[test]
    fn network_trouble_is_unavailable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            ConnectionError::Io(refused),
            ConnectionError::NetworkTimeout,
            ConnectionError::FlushTimeout,
            ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp),
        ] {
            assert_eq!(connection_kind(&err), ErrorKind::Unavailable, "{err:?}");
        }

        let err = connect_failure(ConnectionError::NetworkTimeout, "mqtt://h:1");
        assert_eq!(err.message(), "mqtt broker at mqtt://h:1 is unreachable");
        for err in [
            not_connected("u"),
            connection_lost("u"),
            ack_timeout(Duration::from_secs(1)),
            connect_timeout("u", Duration::from_secs(1)),
            closed(),
            stale_ack(),
            queue_full(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        }
    }

    #[test]
    fn refused_content_is_permanent_or_a_setting() {
        assert_eq!(too_large(10, 5).kind(), ErrorKind::Permanent);
        assert_eq!(subscription_refused("a/#").kind(), ErrorKind::Config);
    }
}

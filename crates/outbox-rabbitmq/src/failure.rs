//! How RabbitMQ failures map onto the outbox's error kinds.
//!
//! Every error this crate returns is made here, following the classification in
//! the documentation of [`crate::RabbitPublisher`] and [`crate::RabbitConsumer`].
//! The kind decides what the caller does: pause, retry the event, send it to the
//! dead letters, or refuse to start.

use std::time::Duration;

use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
use outbox_core::{Error, ErrorKind};

/// The error the broker closed the channel or connection with, if it did.
fn amqp_error(err: &lapin::Error) -> Option<&AMQPError> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e),
        _ => None,
    }
}

fn soft(err: &lapin::Error) -> Option<&AMQPSoftError> {
    match amqp_error(err)?.kind() {
        AMQPErrorKind::Soft(soft) => Some(soft),
        AMQPErrorKind::Hard(_) => None,
    }
}

/// The kind of a failed publish, by what the client reported.
///
/// A channel closed by the broker over this message is an answer about the
/// message or its exchange: a missing exchange (404) or refused access (403) may
/// be fixed by an operator, so it is retried; a refused message (406, which
/// RabbitMQ sends for one over its `max_message_size`) and a message the client
/// cannot encode are permanent. Everything else means the connection is gone.
pub(crate) fn publish_kind(err: &lapin::Error) -> ErrorKind {
    if let Some(soft) = soft(err) {
        return match soft {
            AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::CONTENTTOOLARGE => {
                ErrorKind::Permanent
            }
            _ => ErrorKind::Transient,
        };
    }
    match err.kind() {
        lapin::ErrorKind::SerialisationError(_) => ErrorKind::Permanent,
        _ => ErrorKind::Unavailable,
    }
}

/// The outbox error for a failed publish to `exchange`.
pub(crate) fn publish_failure(err: lapin::Error, exchange: &str) -> Error {
    let kind = publish_kind(&err);
    let message = match soft(&err) {
        Some(AMQPSoftError::NOTFOUND) => format!("exchange {exchange:?} does not exist"),
        Some(AMQPSoftError::ACCESSREFUSED) => {
            format!("rabbitmq refused access to exchange {exchange:?}")
        }
        Some(_) => format!("rabbitmq refused the message for exchange {exchange:?}"),
        None if kind == ErrorKind::Permanent => "message cannot be encoded for amqp".to_owned(),
        None => "rabbitmq connection lost before the confirm".to_owned(),
    };
    Error::new(kind, message).with_source(err)
}

/// The broker returned the message: no queue is bound to its routing key.
///
/// Transient, not permanent: a missing binding is a fault of the topology, which
/// an operator or a consumer deploying its queue fixes, not of the event. A
/// retry with backoff delivers the event once the binding exists, and one that
/// never appears still ends in the dead letters when the relay's attempts run out.
pub(crate) fn unroutable(exchange: &str, routing_key: &str, code: u16, reason: &str) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!(
            "rabbitmq returned the message: no queue of exchange {exchange:?} is bound \
             to routing key {routing_key:?} ({code} {reason})"
        ),
    )
}

/// The broker refused to take responsibility for the message (a `basic.nack`).
pub(crate) fn nacked(exchange: &str) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!("rabbitmq nacked the message for exchange {exchange:?}"),
    )
}

/// The broker confirmed a message of a channel that was not in confirm mode.
pub(crate) fn not_confirmed() -> Error {
    Error::new(
        ErrorKind::Transient,
        "rabbitmq did not confirm the message: the channel is not in confirm mode",
    )
}

/// No confirm arrived within `timeout`.
pub(crate) fn confirm_timeout(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("no confirm from rabbitmq within {} ms", timeout.as_millis()),
    )
}

/// The kind of a failed connection attempt: refused credentials, a virtual host
/// the user may not open and an unsupported protocol are settings to fix;
/// everything else is a broker that cannot be reached.
pub(crate) fn connect_kind(err: &lapin::Error) -> ErrorKind {
    if let Some(e) = amqp_error(err) {
        return match e.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH) => {
                ErrorKind::Config
            }
            _ => ErrorKind::Unavailable,
        };
    }
    match err.kind() {
        lapin::ErrorKind::AuthProviderError(_)
        | lapin::ErrorKind::InvalidProtocolVersion(_)
        | lapin::ErrorKind::NoDefaultRuntime => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    }
}

/// The outbox error for a failed connection to `url` (already redacted).
pub(crate) fn connect_failure(err: lapin::Error, url: &str) -> Error {
    let kind = connect_kind(&err);
    let message = match kind {
        ErrorKind::Config => format!("rabbitmq at {url} refused the connection settings"),
        _ => format!("rabbitmq at {url} is unreachable"),
    };
    Error::new(kind, message).with_source(err)
}

/// Connecting took longer than the connect timeout.
pub(crate) fn connect_timeout(url: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "rabbitmq at {url} did not answer within {} ms",
            after.as_millis()
        ),
    )
}

/// Opening a channel failed: the connection is going or gone.
pub(crate) fn channel_failure(err: lapin::Error) -> Error {
    Error::new(ErrorKind::Unavailable, "cannot open a rabbitmq channel").with_source(err)
}

/// The kind of a failed declaration or subscription: the broker refusing it
/// (the name exists with other settings, a missing exchange or queue, no
/// permission, an exclusive queue of another connection) is a setting to fix;
/// a lost connection is not.
pub(crate) fn setup_kind(err: &lapin::Error) -> ErrorKind {
    if soft(err).is_some() {
        ErrorKind::Config
    } else {
        ErrorKind::Unavailable
    }
}

/// The outbox error for a failed declaration or subscription, described by `what`.
pub(crate) fn setup_failure(err: lapin::Error, what: String) -> Error {
    Error::new(setup_kind(&err), what).with_source(err)
}

/// Acknowledging or rejecting a delivery failed.
pub(crate) fn settle_failure(err: lapin::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "cannot settle the delivery: the broker will deliver it again",
    )
    .with_source(err)
}

/// A delivery whose channel has closed can no longer be settled.
pub(crate) fn channel_closed() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the channel of the delivery is closed: the broker will deliver it again",
    )
}

/// The subscription broke: the connection or channel closed under it.
pub(crate) fn consume_failure(err: lapin::Error, queue: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("lost the subscription to queue {queue:?}"),
    )
    .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_with(code: u16) -> lapin::Error {
        let error = AMQPError::from_id(code, "closed".into()).expect("known code");
        lapin::ErrorKind::ProtocolError(error).into()
    }

    fn io(kind: std::io::ErrorKind) -> lapin::Error {
        std::io::Error::new(kind, "io").into()
    }

    #[test]
    fn answers_about_the_exchange_are_transient() {
        let err = publish_failure(closed_with(404), "outbox");
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(err.message(), "exchange \"outbox\" does not exist");

        assert_eq!(publish_kind(&closed_with(403)), ErrorKind::Transient);
        assert_eq!(
            unroutable("x", "k", 312, "NO_ROUTE").kind(),
            ErrorKind::Transient
        );
        assert_eq!(nacked("x").kind(), ErrorKind::Transient);
        assert_eq!(not_confirmed().kind(), ErrorKind::Transient);
    }

    #[test]
    fn refused_messages_are_permanent() {
        assert_eq!(publish_kind(&closed_with(406)), ErrorKind::Permanent);
        assert_eq!(publish_kind(&closed_with(311)), ErrorKind::Permanent);
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        for err in [
            closed_with(320),
            closed_with(541),
            io(std::io::ErrorKind::ConnectionReset),
            lapin::ErrorKind::MissingHeartbeatError.into(),
            lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into(),
        ] {
            assert_eq!(publish_kind(&err), ErrorKind::Unavailable, "{err}");
        }
        let err = publish_failure(io(std::io::ErrorKind::BrokenPipe), "x");
        assert_eq!(err.message(), "rabbitmq connection lost before the confirm");
        assert_eq!(
            confirm_timeout(Duration::from_secs(1)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(channel_closed().kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn connect_failures_split_into_unreachable_and_misconfigured() {
        for err in [closed_with(403), closed_with(530), closed_with(402)] {
            assert_eq!(connect_kind(&err), ErrorKind::Config, "{err}");
        }
        for err in [io(std::io::ErrorKind::ConnectionRefused), closed_with(320)] {
            assert_eq!(connect_kind(&err), ErrorKind::Unavailable, "{err}");
        }

        let err = connect_failure(io(std::io::ErrorKind::ConnectionRefused), "amqp://u:***@h");
        assert_eq!(err.message(), "rabbitmq at amqp://u:***@h is unreachable");
    }

    #[test]
    fn refused_setup_is_a_configuration_error() {
        assert_eq!(setup_kind(&closed_with(404)), ErrorKind::Config);
        assert_eq!(setup_kind(&closed_with(406)), ErrorKind::Config);
        assert_eq!(
            setup_kind(&io(std::io::ErrorKind::ConnectionReset)),
            ErrorKind::Unavailable
        );
    }
}

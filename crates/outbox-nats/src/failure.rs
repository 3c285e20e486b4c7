//! How NATS failures map onto the outbox's error kinds.
//!
//! Every error this crate returns is made here, following the classification in
//! the documentation of [`crate::NatsPublisher`]. The kind decides what the relay
//! does: pause everything, retry the event, or send it to the dead letters.

use std::error::Error as _;
use std::time::Duration;

use async_nats::ConnectErrorKind;
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
    PublishErrorKind,
};
use outbox_core::{Error, ErrorKind};

/// The kind of a failed publish, by what the client reported.
pub(crate) fn publish_kind(err: &PublishError) -> ErrorKind {
    match err.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => ErrorKind::Unavailable,
        PublishErrorKind::MaxAckPending => ErrorKind::Unavailable,
        PublishErrorKind::StreamNotFound => ErrorKind::Transient,
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            ErrorKind::Transient
        }
        PublishErrorKind::MaxPayloadExceeded => ErrorKind::Permanent,
        PublishErrorKind::Other if is_answer(err) => ErrorKind::Transient,
        PublishErrorKind::Other => ErrorKind::Unavailable,
    }
}

/// Whether `err` carries an answer from the server about this message (a
/// JetStream error, or an ack that could not be read), rather than a failure of
/// the connection.
fn is_answer(err: &PublishError) -> bool {
    err.source().is_some_and(|source| {
        source.is::<async_nats::jetstream::Error>() || source.is::<serde_json::Error>()
    })
}

/// The outbox error for a failed publish.
pub(crate) fn publish_failure(err: PublishError) -> Error {
    let kind = publish_kind(&err);
    let message = match err.kind() {
        PublishErrorKind::TimedOut => "no puback from nats within the ack timeout",
        PublishErrorKind::BrokenPipe => "nats connection lost before the puback",
        PublishErrorKind::MaxAckPending => "too many publishes await a puback",
        PublishErrorKind::StreamNotFound => "no jetstream stream is bound to the subject",
        PublishErrorKind::MaxPayloadExceeded => "message exceeds the server's max_payload",
        PublishErrorKind::Other if kind == ErrorKind::Transient => "jetstream refused the message",
        _ => "nats connection closed",
    };
    Error::new(kind, message).with_source(err)
}

/// No PubAck arrived within `ack_timeout`.
pub(crate) fn ack_timeout(ack_timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("no puback from nats within {} ms", ack_timeout.as_millis()),
    )
}

/// The connection a publish went out on was lost before its PubAck arrived.
pub(crate) fn connection_lost(url: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("lost connection to nats at {url} before the puback"),
    )
}

/// The client is between connections: nothing is sent until it reconnects.
pub(crate) fn not_connected(url: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("not connected to nats at {url}"),
    )
}

/// The message is larger than the server accepts.
pub(crate) fn too_large(size: usize, max_payload: usize) -> Error {
    Error::new(
        ErrorKind::Permanent,
        format!("message of {size} bytes exceeds the server's max_payload of {max_payload} bytes"),
    )
}

/// The kind of a failed first connection.
pub(crate) fn connect_kind(kind: ConnectErrorKind) -> ErrorKind {
    match kind {
        ConnectErrorKind::ServerParse
        | ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls => ErrorKind::Config,
        ConnectErrorKind::Dns
        | ConnectErrorKind::TimedOut
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => ErrorKind::Unavailable,
    }
}

/// The outbox error for a failed first connection to `url` (already redacted).
pub(crate) fn connect_failure(err: async_nats::ConnectError, url: &str) -> Error {
    let kind = connect_kind(err.kind());
    let message = match err.kind() {
        ConnectErrorKind::ServerParse => format!("invalid nats url {url}"),
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            format!("nats at {url} refused the credentials")
        }
        ConnectErrorKind::Tls => format!("tls setup with nats at {url} failed"),
        _ => format!("nats at {url} is unreachable"),
    };
    Error::new(kind, message).with_source(err)
}

/// Connecting took longer than the connect timeout.
pub(crate) fn connect_timeout(url: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "nats at {url} did not answer within {} ms",
            after.as_millis()
        ),
    )
}

/// The outbox error for a failed look-up of the stream `name`.
pub(crate) fn get_stream_failure(err: GetStreamError, name: &str) -> Error {
    let kind = match err.kind() {
        GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => ErrorKind::Config,
        GetStreamErrorKind::JetStream(_) => ErrorKind::Config,
        GetStreamErrorKind::Request => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("cannot look up jetstream stream {name:?}")).with_source(err)
}

/// The outbox error for a failed creation of the stream `name`.
pub(crate) fn create_stream_failure(err: CreateStreamError, name: &str) -> Error {
    let kind = match err.kind() {
        CreateStreamErrorKind::EmptyStreamName
        | CreateStreamErrorKind::InvalidStreamName
        | CreateStreamErrorKind::DomainAndExternalSet
        | CreateStreamErrorKind::JetStream(_) => ErrorKind::Config,
        CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::Response
        | CreateStreamErrorKind::NotFound => ErrorKind::Unavailable,
        CreateStreamErrorKind::ResponseParse => ErrorKind::Transient,
    };
    Error::new(kind, format!("cannot create jetstream stream {name:?}")).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: usize, err_code: u64) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": "refused",
        }))
        .unwrap()
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            let err = publish_failure(PublishError::new(kind));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{kind:?}");
        }

        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed");
        let err = publish_failure(PublishError::with_source(PublishErrorKind::Other, closed));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.message(), "nats connection closed");

        assert_eq!(
            ack_timeout(Duration::from_secs(5)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(not_connected("nats://h:1").kind(), ErrorKind::Unavailable);
        assert_eq!(connection_lost("nats://h:1").kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn answers_about_the_message_are_transient() {
        let err = publish_failure(PublishError::new(PublishErrorKind::StreamNotFound));
        assert_eq!(err.kind(), ErrorKind::Transient);

        let refused = PublishError::with_source(PublishErrorKind::Other, api_error(503, 10077));
        let err = publish_failure(refused);
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(err.message(), "jetstream refused the message");
        assert!(err.chain().contains("refused (code 503"), "{}", err.chain());

        let garbled = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = publish_failure(PublishError::with_source(PublishErrorKind::Other, garbled));
        assert_eq!(err.kind(), ErrorKind::Transient);

        for kind in [
            PublishErrorKind::WrongLastMessageId,
            PublishErrorKind::WrongLastSequence,
        ] {
            assert_eq!(
                publish_failure(PublishError::new(kind)).kind(),
                ErrorKind::Transient
            );
        }
    }

    #[test]
    fn oversized_messages_are_permanent() {
        let err = publish_failure(PublishError::new(PublishErrorKind::MaxPayloadExceeded));
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(too_large(10, 5).kind(), ErrorKind::Permanent);
    }

    #[test]
    fn connect_failures_split_into_unreachable_and_misconfigured() {
        for kind in [
            ConnectErrorKind::Io,
            ConnectErrorKind::TimedOut,
            ConnectErrorKind::Dns,
            ConnectErrorKind::MaxReconnects,
        ] {
            assert_eq!(connect_kind(kind), ErrorKind::Unavailable, "{kind:?}");
        }
        for kind in [
            ConnectErrorKind::ServerParse,
            ConnectErrorKind::Authentication,
            ConnectErrorKind::AuthorizationViolation,
            ConnectErrorKind::Tls,
        ] {
            assert_eq!(connect_kind(kind), ErrorKind::Config, "{kind:?}");
        }

        let err = connect_failure(
            async_nats::ConnectError::new(ConnectErrorKind::Io),
            "nats://relay:***@h:1",
        );
        assert_eq!(err.message(), "nats at nats://relay:***@h:1 is unreachable");
    }

    #[test]
    fn stream_setup_failures_are_classified() {
        let overlap =
            CreateStreamError::new(CreateStreamErrorKind::JetStream(api_error(400, 10065)));
        assert_eq!(
            create_stream_failure(overlap, "S").kind(),
            ErrorKind::Config
        );

        let no_js = CreateStreamError::new(CreateStreamErrorKind::JetStreamUnavailable);
        assert_eq!(
            create_stream_failure(no_js, "S").kind(),
            ErrorKind::Unavailable
        );

        let lost = GetStreamError::new(GetStreamErrorKind::Request);
        assert_eq!(get_stream_failure(lost, "S").kind(), ErrorKind::Unavailable);

        let bad = GetStreamError::new(GetStreamErrorKind::InvalidStreamName);
        assert_eq!(get_stream_failure(bad, "S").kind(), ErrorKind::Config);
    }
}

//! How Redis failures map onto the outbox's error kinds.
//!
//! Every error this crate returns for a failed command is made here. The kind
//! decides what the relay does: pause while the server is out of reach, retry the
//! event later, or send it to the dead letters.

use std::borrow::Cow;

use redis::RedisError;

use outbox_core::{Error, ErrorKind};

/// Error codes the server answers with while it is briefly unable to take a
/// command: out of memory, a script running, a dataset loading, a cluster
/// resharding. The same command may succeed later.
const TRANSIENT_CODES: [&str; 4] = ["OOM", "BUSY", "LOADING", "TRYAGAIN"];

/// Error codes that say this server cannot take writes from this client at all
/// for now (a replica after a failover, a primary cut off from its replicas, a
/// cluster down, credentials no longer accepted). They concern every event, not
/// this one, so the relay pauses instead of counting attempts.
const UNAVAILABLE_CODES: [&str; 6] = [
    "READONLY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "NOAUTH",
    "WRONGPASS",
    "NOREPLICAS",
];

/// The kind of a failed command.
///
/// | what failed | kind |
/// | --- | --- |
/// | connection refused, reset or lost, I/O errors, no reply in time | `Unavailable` |
/// | the codes in `UNAVAILABLE_CODES`, failed authentication | `Unavailable` |
/// | `OOM`, `BUSY`, `LOADING`, `TRYAGAIN` | `Transient` |
/// | a reply this crate could not read | `Transient` |
/// | `WRONGTYPE`, `ERR`, `NOPERM` and every other error code | `Permanent` |
/// | invalid client settings | `Config` |
pub(crate) fn kind_of(err: &RedisError) -> ErrorKind {
    if let Some(code) = server_code(err) {
        return if TRANSIENT_CODES.contains(&code.as_str()) {
            ErrorKind::Transient
        } else if UNAVAILABLE_CODES.contains(&code.as_str()) {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Permanent
        };
    }

    match err.kind() {
        redis::ErrorKind::Io
        | redis::ErrorKind::AuthenticationFailed
        | redis::ErrorKind::ClusterConnectionNotFound => ErrorKind::Unavailable,
        redis::ErrorKind::InvalidClientConfig => ErrorKind::Config,
        _ if err.is_timeout() || err.is_connection_dropped() => ErrorKind::Unavailable,
        _ => ErrorKind::Transient,
    }
}

/// The error code of the first server error `err` carries, such as `WRONGTYPE`,
/// also when it came inside a pipeline or transaction.
fn server_code(err: &RedisError) -> Option<String> {
    let errors = err.clone().into_server_errors()?;
    errors.first().map(|(_, e)| e.code().to_owned())
}

/// The outbox error for a failed command, with `what` saying what was tried.
pub(crate) fn command_failure(err: RedisError, what: impl Into<Cow<'static, str>>) -> Error {
    Error::new(kind_of(&err), what).with_source(err)
}

/// The kind of a failed first connection: settings the server or the client
/// refuses are configuration errors, everything else means the server is out of
/// reach.
pub(crate) fn connect_kind(err: &RedisError) -> ErrorKind {
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
            ErrorKind::Config
        }
        _ => match server_code(err).as_deref() {
            Some("NOAUTH" | "WRONGPASS" | "NOPERM") => ErrorKind::Config,
            _ => ErrorKind::Unavailable,
        },
    }
}

/// The outbox error for a failed first connection to `url` (already redacted).
pub(crate) fn connect_failure(err: RedisError, url: &str) -> Error {
    let kind = connect_kind(&err);
    let message = match kind {
        ErrorKind::Config => format!("redis at {url} refused the settings or credentials"),
        _ => format!("redis at {url} is unreachable"),
    };
    Error::new(kind, message).with_source(err)
}

/// Connecting took longer than the connect timeout.
pub(crate) fn connect_timeout(url: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("redis at {url} did not answer in time"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// The error the client makes of a server's error reply `line`.
    fn reply(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    fn io_error(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::from(kind))
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Other,
        ] {
            assert_eq!(kind_of(&io_error(kind)), ErrorKind::Unavailable, "{kind:?}");
            let err = command_failure(io_error(kind), "cannot add the entry");
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
        let auth = RedisError::from((redis::ErrorKind::AuthenticationFailed, "denied"));
        assert_eq!(kind_of(&auth), ErrorKind::Unavailable);
    }

    #[test]
    fn busy_servers_are_transient() {
        for line in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "BUSY Redis is busy running a script.",
            "LOADING Redis is loading the dataset in memory",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            assert_eq!(kind_of(&reply(line)), ErrorKind::Transient, "{line}");
        }
    }

    #[test]
    fn servers_that_cannot_take_writes_are_unavailable() {
        for line in [
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down",
            "CLUSTERDOWN The cluster is down",
            "NOAUTH Authentication required.",
            "NOREPLICAS Not enough good replicas to write.",
        ] {
            assert_eq!(kind_of(&reply(line)), ErrorKind::Unavailable, "{line}");
        }
    }

    #[test]
    fn command_errors_are_permanent() {
        for line in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
            "NOPERM User relay has no permissions to access the 'outbox:x' key",
            "EXECABORT Transaction discarded because of previous errors.",
            "SOMENEWCODE not known to this crate",
        ] {
            assert_eq!(kind_of(&reply(line)), ErrorKind::Permanent, "{line}");
        }
    }

    #[test]
    fn unreadable_replies_are_transient() {
        let err = RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not an id"));
        assert_eq!(kind_of(&err), ErrorKind::Transient);
    }

    #[test]
    fn refused_settings_are_configuration_errors_when_connecting() {
        let config = RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad url"));
        assert_eq!(connect_kind(&config), ErrorKind::Config);
        assert_eq!(
            connect_kind(&reply("WRONGPASS invalid username-password pair")),
            ErrorKind::Config
        );
        assert_eq!(
            connect_kind(&io_error(io::ErrorKind::ConnectionRefused)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            connect_kind(&reply("LOADING Redis is loading")),
            ErrorKind::Unavailable
        );

        let err = connect_failure(io_error(io::ErrorKind::ConnectionRefused), "redis://h:1");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.message(), "redis at redis://h:1 is unreachable");
    }
}

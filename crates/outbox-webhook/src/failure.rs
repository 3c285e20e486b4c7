//! How the answers and failures of a webhook endpoint map onto the outbox's
//! error kinds.
//!
//! Every error of a publish is made here, following the table in the crate's
//! documentation. The kind decides what the relay does: pause everything, retry
//! the event, or send it to the dead letters.

use std::time::Duration;

use outbox_core::{Error, ErrorKind};
use reqwest::StatusCode;

/// The kind of failure an answer with `status` means, or `None` for success.
///
/// 2xx succeeds; 408, 429 and 5xx are worth another attempt; every other status,
/// redirects included, refuses the event for good.
pub(crate) fn status_kind(status: StatusCode) -> Option<ErrorKind> {
    match status.as_u16() {
        200..=299 => None,
        408 | 429 => Some(ErrorKind::Transient),
        300..=499 => Some(ErrorKind::Permanent),
        _ => Some(ErrorKind::Transient),
    }
}

/// The outcome of a publish that `url` answered with `status`.
pub(crate) fn check_status(status: StatusCode, url: &str) -> Result<(), Error> {
    match status_kind(status) {
        None => Ok(()),
        Some(kind) => Err(Error::new(
            kind,
            format!("webhook endpoint {url} answered {}", status.as_u16()),
        )),
    }
}

/// The kind of a request that got no answer.
///
/// No connection (refused, unresolvable, connect timeout): the endpoint is down,
/// as a broker would be. An answer that did not come within the timeout, on a
/// connection that was made: something about this event may be at fault, so
/// the attempt counts. A connection lost while waiting, and anything else the
/// client reports: down.
pub(crate) fn send_kind(err: &reqwest::Error) -> ErrorKind {
    if err.is_builder() {
        ErrorKind::Permanent
    } else if err.is_connect() {
        ErrorKind::Unavailable
    } else if err.is_timeout() {
        ErrorKind::Transient
    } else {
        ErrorKind::Unavailable
    }
}

/// The outbox error for a request to `url` that got no answer within `timeout`
/// or none at all.
pub(crate) fn send_failure(err: reqwest::Error, url: &str, timeout: Duration) -> Error {
    let kind = send_kind(&err);
    let message = if err.is_builder() {
        format!("cannot build the request to {url}")
    } else if err.is_connect() {
        format!("webhook endpoint {url} is unreachable")
    } else if err.is_timeout() {
        format!(
            "webhook endpoint {url} did not answer within {} ms",
            timeout.as_millis()
        )
    } else {
        format!("lost the connection to {url} before the answer")
    };
    // The client's error shows the full URL, which may hold credentials.
    Error::new(kind, message).with_source(err.without_url())
}

/// The endpoint cannot be reached when the publisher is built.
pub(crate) fn probe_failure(url: &str, err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("webhook endpoint {url} is unreachable"),
    )
    .with_source(err)
}

/// Connecting to the endpoint took longer than the connect timeout when the
/// publisher was built.
pub(crate) fn probe_timeout(url: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "webhook endpoint {url} did not accept a connection within {} ms",
            after.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: u16) -> Option<ErrorKind> {
        status_kind(StatusCode::from_u16(code).unwrap())
    }

    #[test]
    fn success_is_any_2xx() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(kind(code), None, "{code}");
        }
    }

    #[test]
    fn busy_or_failing_endpoints_are_retried() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(kind(code), Some(ErrorKind::Transient), "{code}");
        }
    }

    #[test]
    fn refusals_and_redirects_are_permanent() {
        for code in [
            300, 301, 302, 307, 308, 400, 401, 403, 404, 409, 413, 422, 499,
        ] {
            assert_eq!(kind(code), Some(ErrorKind::Permanent), "{code}");
        }
    }

    #[test]
    fn informational_and_unknown_statuses_are_retried() {
        for code in [100, 199, 600, 999] {
            assert_eq!(kind(code), Some(ErrorKind::Transient), "{code}");
        }
    }

    #[test]
    fn the_message_names_the_status() {
        let err = check_status(StatusCode::BAD_REQUEST, "http://h/x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.message(), "webhook endpoint http://h/x answered 400");
        check_status(StatusCode::NO_CONTENT, "http://h/x").unwrap();
    }
}

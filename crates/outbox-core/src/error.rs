//! The single error type of the outbox and the classification that drives retries.
//!
//! Every fallible operation in every crate of the project returns [`Error`]. Its
//! [`ErrorKind`] tells the caller what to do next: fix the input, fix the
//! configuration, retry later, or give up on the event.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// A `Result` whose error is the outbox [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, in terms of what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input was rejected before anything was written: an empty
    /// stream, a payload declared JSON that is not, a payload over the limit.
    InvalidInput,
    /// The configuration cannot work: an invalid schema name, a malformed URL, a
    /// database schema that is missing or newer than this binary. Refuse to start.
    Config,
    /// A database or broker could not be reached. Retrying later may succeed.
    Unavailable,
    /// The operation failed in a way that a retry may fix: a serialization
    /// failure, a deadlock, a broker timeout.
    Transient,
    /// Retrying cannot succeed: the broker refused this event for good (too
    /// large, an invalid subject). The event belongs in the dead letters.
    Permanent,
    /// The database answered with an error that fits none of the above.
    Storage,
}

impl ErrorKind {
    /// Whether the same operation may succeed if it is tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Transient)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Config => "configuration error",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Transient => "transient failure",
            ErrorKind::Permanent => "permanent failure",
            ErrorKind::Storage => "storage error",
        })
    }
}

/// An outbox error: a kind, a short lowercase message, and the underlying cause.
///
/// The message says what failed in the outbox's terms; the cause, when there is
/// one, is available through [`std::error::Error::source`] and is never folded
/// into the message.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Source>,
}

impl Error {
    /// Creates an error of `kind` with a message and no cause.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Wraps this error under a higher-level message, keeping its kind.
    pub fn context(self, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind: self.kind,
            message: message.into(),
            source: Some(Box::new(self)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The message followed by every cause in the chain, separated by `: `.
    ///
    /// Suitable for a log field or a stored `last_error`.
    pub fn chain(&self) -> String {
        let mut text = self.message.to_string();
        let mut next = self.source();
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        text
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(ErrorKind::Unavailable, "could not connect").with_source(io);

        assert_eq!(err.to_string(), "could not connect");
        assert_eq!(err.chain(), "could not connect: refused");
        assert!(err.is_retryable());
    }

    #[test]
    fn only_unavailable_and_transient_are_retryable() {
        let retryable: Vec<_> = [
            ErrorKind::InvalidInput,
            ErrorKind::Config,
            ErrorKind::Unavailable,
            ErrorKind::Transient,
            ErrorKind::Permanent,
            ErrorKind::Storage,
        ]
        .into_iter()
        .filter(|k| k.is_retryable())
        .collect();

        assert_eq!(retryable, [ErrorKind::Unavailable, ErrorKind::Transient]);
    }
}

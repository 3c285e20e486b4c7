//! How database errors become outbox errors.
//!
//! The SQLSTATE class decides the kind: connection and resource problems are
//! retryable, data and integrity violations are the caller's input, a missing
//! schema or table is a configuration problem.

use outbox_core::{Error, ErrorKind};

/// Converts a sqlx error into an outbox [`Error`] of the fitting kind.
pub fn map_error(err: sqlx::Error) -> Error {
    let (kind, message) = match &err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            (ErrorKind::Unavailable, "lost the connection to postgresql")
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            (ErrorKind::Unavailable, "no postgresql connection available")
        }
        sqlx::Error::Configuration(_) => (ErrorKind::Config, "invalid postgresql configuration"),
        sqlx::Error::Database(db) => classify(db.code().as_deref().unwrap_or("")),
        _ => (ErrorKind::Storage, "postgresql query failed"),
    };
    Error::new(kind, message).with_source(err)
}

fn classify(code: &str) -> (ErrorKind, &'static str) {
    match code {
        "40001" | "40P01" => (ErrorKind::Transient, "transaction conflict in postgresql"),
        "3F000" | "42P01" | "42883" => (
            ErrorKind::Config,
            "outbox schema is missing or incomplete; run `outbox migrate`",
        ),
        "22P02" => (
            ErrorKind::InvalidInput,
            "postgresql rejected the event's data",
        ),
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
            (ErrorKind::Unavailable, "postgresql is not accepting work")
        }
        c if c.starts_with("22") || c.starts_with("23") => (
            ErrorKind::InvalidInput,
            "postgresql rejected the event's data",
        ),
        _ => (ErrorKind::Storage, "postgresql query failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_map_to_kinds() {
        assert_eq!(classify("40001").0, ErrorKind::Transient);
        assert_eq!(classify("08006").0, ErrorKind::Unavailable);
        assert_eq!(classify("57P01").0, ErrorKind::Unavailable);
        assert_eq!(classify("23505").0, ErrorKind::InvalidInput);
        assert_eq!(classify("3F000").0, ErrorKind::Config);
        assert_eq!(classify("XX000").0, ErrorKind::Storage);
    }
}

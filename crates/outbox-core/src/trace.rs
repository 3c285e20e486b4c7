//! W3C trace context: the `traceparent` recorded on every event built while a
//! trace is current.
//!
//! The outbox does not depend on a tracing backend. A host application that has
//! one installs a source with [`set_traceparent_source`]; from then on
//! [`crate::NewEvent::new`] asks it for the current `traceparent` and records it
//! in the event's headers, so consumers can join the producer's trace.

use std::sync::OnceLock;

use crate::{Error, Result};

/// The header name under which the trace context travels.
pub const TRACEPARENT: &str = "traceparent";

type Source = fn() -> Option<String>;

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Installs the function that returns the current `traceparent`, if any.
///
/// It can be installed once per process; a second call returns `false` and
/// leaves the first source in place.
///
/// ```
/// fn from_my_tracer() -> Option<String> {
///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into())
/// }
/// outbox_core::trace::set_traceparent_source(from_my_tracer);
/// ```
pub fn set_traceparent_source(source: Source) -> bool {
    SOURCE.set(source).is_ok()
}

/// The current `traceparent` according to the installed source, if it is well
/// formed. A malformed value from the source is dropped rather than stored.
pub fn current_traceparent() -> Option<String> {
    let value = (SOURCE.get()?)()?;
    parse_traceparent(&value).ok()?;
    Some(value)
}

/// Checks that `value` is a version-00 `traceparent`:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub fn parse_traceparent(value: &str) -> Result<()> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');

    let valid = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && !zero(parts[1])
        && hex(parts[2], 16)
        && !zero(parts[2])
        && hex(parts[3], 2);
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "invalid traceparent {value:?}: expected 00-<32 hex>-<16 hex>-<2 hex>"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_w3c_example() {
        parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    }

    #[test]
    fn refuses_malformed_values() {
        for value in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse_traceparent(value).is_err(), "{value}");
        }
    }
}

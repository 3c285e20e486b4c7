//! Validated SQL identifiers for configurable names such as the PostgreSQL schema.
//!
//! Names that end up inside SQL text cannot be bound as parameters, so they are
//! checked against a strict pattern once, at configuration time, and quoted on
//! every use. Anything outside the pattern is refused, never escaped.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The longest identifier accepted.
///
/// PostgreSQL allows 63 bytes; the outbox derives its notification channel from
/// the schema name (`<schema>_events`), which must fit in the same 63 bytes.
const MAX_LEN: usize = 48;

/// An SQL identifier that is safe to place, quoted, into SQL text.
///
/// It starts with a lowercase ASCII letter or an underscore, continues with
/// lowercase letters, digits and underscores, is at most 48 bytes long, and does
/// not start with `pg_` (PostgreSQL reserves that prefix).
///
/// ```
/// use outbox_core::Identifier;
///
/// let schema: Identifier = "billing_outbox".parse()?;
/// assert_eq!(schema.quoted(), "\"billing_outbox\"");
///
/// assert!("outbox; drop table users".parse::<Identifier>().is_err());
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identifier(String);

impl Identifier {
    /// Validates `name` as an identifier.
    pub fn new(name: &str) -> Result<Self> {
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');

        if !first_ok || !rest_ok || name.len() > MAX_LEN || name.starts_with("pg_") {
            return Err(Error::config(format!(
                "invalid schema name {name:?}: expected 1 to {MAX_LEN} lowercase letters, \
                 digits or underscores, starting with a letter or underscore, not `pg_`"
            )));
        }
        Ok(Identifier(name.to_owned()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name in double quotes, ready for SQL text.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl FromStr for Identifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Identifier::new(s)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accepts_plain_names() {
        for name in ["outbox", "_private", "shop2_events", &"a".repeat(48)] {
            assert_eq!(Identifier::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_anything_that_would_need_escaping() {
        let long = "a".repeat(49);
        for name in [
            "",
            "Outbox",
            "1outbox",
            "out-box",
            "out box",
            "outbox\"; drop schema public; --",
            "pg_outbox",
            "schéma",
            &long,
        ] {
            let err = Identifier::new(name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{name:?}");
        }
    }
}

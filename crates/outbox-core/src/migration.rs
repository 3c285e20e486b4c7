//! Bookkeeping shared by every store's embedded migrations.
//!
//! A store lists its migrations as [`Migration`]s and records each one it
//! applies with its [`Migration::checksum`]. [`pending`] compares that record
//! with the embedded list and decides what is left to apply, refusing a
//! database that is newer than the binary or whose history differs from it.

use crate::{Error, Result};

/// One embedded schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version: 1, 2, 3, … without gaps.
    pub version: i64,
    /// A few words on what it changes.
    pub description: &'static str,
    /// The SQL script, possibly with placeholders the store fills in.
    pub sql: &'static str,
}

impl Migration {
    /// A stable digest of the script (64-bit FNV-1a, in hex), recorded when the
    /// migration is applied.
    pub fn checksum(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.sql.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// The migrations of `embedded` still to apply, given the `(version, checksum)`
/// pairs recorded in the database, sorted by version. `place` names the schema or
/// database in error messages.
pub fn pending<'m>(
    embedded: &'m [Migration],
    applied: &[(i64, String)],
    place: &str,
) -> Result<&'m [Migration]> {
    let latest = embedded.last().map_or(0, |m| m.version);
    let current = applied.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(newer_than_binary(place, current, latest));
    }

    for (version, sum) in applied {
        match embedded.iter().find(|m| m.version == *version) {
            Some(m) if m.checksum() == *sum => {}
            _ => {
                return Err(Error::config(format!(
                    "migration {version} recorded in {place} differs from the one this \
                     binary carries; refusing to continue"
                )));
            }
        }
    }
    let start = embedded.partition_point(|m| m.version <= current);
    Ok(&embedded[start..])
}

/// Fails unless `version`, read from `place`, is exactly `latest`.
pub fn require_version(place: &str, version: i64, latest: i64) -> Result<()> {
    if version > latest {
        return Err(newer_than_binary(place, version, latest));
    }
    if version < latest {
        return Err(Error::config(format!(
            "{place} is at schema version {version}, this binary needs {latest}; \
             run `outbox migrate`"
        )));
    }
    Ok(())
}

fn newer_than_binary(place: &str, version: i64, latest: i64) -> Error {
    Error::config(format!(
        "{place} is at schema version {version}, newer than the {latest} this binary \
         supports; upgrade outbox"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const EMBEDDED: &[Migration] = &[
        Migration {
            version: 1,
            description: "one",
            sql: "CREATE TABLE a (x int)",
        },
        Migration {
            version: 2,
            description: "two",
            sql: "CREATE TABLE b (x int)",
        },
    ];

    fn record(upto: usize) -> Vec<(i64, String)> {
        EMBEDDED[..upto]
            .iter()
            .map(|m| (m.version, m.checksum()))
            .collect()
    }

    #[test]
    fn applies_what_is_missing() {
        assert_eq!(pending(EMBEDDED, &record(0), "db").unwrap().len(), 2);
        assert_eq!(pending(EMBEDDED, &record(1), "db").unwrap()[0].version, 2);
        assert!(pending(EMBEDDED, &record(2), "db").unwrap().is_empty());
    }

    #[test]
    fn refuses_a_newer_or_different_history() {
        let mut newer = record(2);
        newer.push((3, "x".into()));
        let err = pending(EMBEDDED, &newer, "db").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("newer than the 2"));

        let altered = vec![(1, "0000".to_owned())];
        let err = pending(EMBEDDED, &altered, "db").unwrap_err();
        assert!(err.to_string().contains("differs"));
    }

    #[test]
    fn requires_the_exact_version() {
        require_version("db", 2, 2).unwrap();
        assert!(
            require_version("db", 1, 2)
                .unwrap_err()
                .to_string()
                .contains("outbox migrate")
        );
        assert!(
            require_version("db", 3, 2)
                .unwrap_err()
                .to_string()
                .contains("upgrade")
        );
    }
}

//! Reading published events back, for tests, demos and tools.
//!
//! The functions here turn the publishers' output into [`PublishedEvent`] values
//! so that a caller can check what reached the destination: which ids, how many
//! times, and in which order per key. They read synchronously and all at once.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use outbox_core::{Error, ErrorKind, Result};

use crate::line::{PublishedEvent, parse_line};

/// Reads every event of a file written by [`crate::FilePublisher`], in file order.
///
/// A file that cannot be opened is [`ErrorKind::Config`]; a failure while
/// reading is [`ErrorKind::Unavailable`]. A line that is not an event, or not
/// UTF-8, fails the whole read with [`ErrorKind::InvalidInput`] and a message
/// naming the line number, counted from 1; the detail is in the error's source.
/// Empty lines are malformed too, since the publishers never write one.
///
/// Reading blocks the calling thread until the whole file is parsed. A file that
/// a publisher is still appending to may end in a line not yet complete, which
/// fails the read; read once the publishes of interest have resolved.
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_file::read_events;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("events.jsonl");
/// std::fs::write(&path, "{\"specversion\":\"1.0\"}\n").unwrap();
///
/// let err = read_events(&path).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert!(err.to_string().starts_with("line 1 of "));
/// ```
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<PublishedEvent>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| {
        let message = format!("cannot open event file {}", path.display());
        Error::config(message).with_source(e)
    })?;

    let origin = format!(" of {}", path.display());
    read_lines(BufReader::new(file), &origin)
}

/// Parses the events in `text`, such as the captured output of a
/// [`crate::StdoutPublisher`], one per line.
///
/// Failures are those of [`read_events`] for a malformed line.
///
/// ```
/// use outbox_file::parse_events;
///
/// assert!(parse_events("")?.is_empty());
/// assert!(parse_events("{}\n").is_err());
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn parse_events(text: &str) -> Result<Vec<PublishedEvent>> {
    read_lines(text.as_bytes(), "")
}

/// Parses every line of `reader`; `origin` follows the line number in messages.
fn read_lines(reader: impl BufRead, origin: &str) -> Result<Vec<PublishedEvent>> {
    let mut events = Vec::new();

    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                Error::invalid_input(format!("line {number}{origin} is not utf-8"))
            } else {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("could not read line {number}{origin}"),
                )
            }
            .with_source(e)
        })?;

        let event = parse_line(&line)
            .map_err(|e| e.context(format!("line {number}{origin} is not a valid event")))?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = concat!(
        r#"{"specversion":"1.0","id":"0197a3c0-7d2e-7000-8000-000000000001","#,
        r#""source":"/outbox/orders","type":"order.created","#,
        r#""time":"2026-01-02T03:04:05.000000Z","datacontenttype":"text/plain","#,
        r#""partitionkey":"order-42","sequence":"0000000000000000001","#,
        r#""outboxstream":"orders","data_base64":"eA=="}"#,
    );

    #[test]
    fn every_line_becomes_an_event() {
        let events = parse_events(&format!("{LINE}\n{LINE}\r\n{LINE}")).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].payload.as_bytes(), b"x");
    }

    #[test]
    fn a_malformed_line_is_named_by_its_number() {
        for (text, number) in [
            (format!("{LINE}\n{LINE}\n{{\"specversion\"\n{LINE}\n"), 3),
            (format!("{LINE}\n\n{LINE}\n"), 2),
            (format!("{}\n", &LINE[..30]), 1),
        ] {
            let err = parse_events(&text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(
                err.to_string().starts_with(&format!("line {number} ")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_invalid_input() {
        let mut bytes = format!("{LINE}\n").into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");

        let err = read_lines(&bytes[..], "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().starts_with("line 2 "), "{err}");
    }

    #[test]
    fn a_missing_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_events(dir.path().join("absent.jsonl")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

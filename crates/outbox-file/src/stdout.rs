//! The standard-output publisher: the file publisher's lines, on standard output.
//!
//! It suits demos and pipelines (`outbox relay | jq`). Every batch of lines is
//! written under the process's standard-output lock, so neither concurrent
//! publishes nor other writers in the process split a line.

use std::io::{self, Write};

use outbox_core::{Event, Publisher, Result};

use crate::line::{DEFAULT_SOURCE, SourceTemplate, encode};
use crate::writer::{LineWriter, Sink};

/// Settings of a [`StdoutPublisher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdoutOptions {
    /// The CloudEvents `source` of every event, as in
    /// [`crate::FileOptions::source`]: `{stream}` is replaced by the event's
    /// stream, and the default is [`DEFAULT_SOURCE`].
    pub source: String,
}

impl Default for StdoutOptions {
    fn default() -> Self {
        StdoutOptions {
            source: DEFAULT_SOURCE.to_owned(),
        }
    }
}

/// Writes each event to standard output as one line of CloudEvents JSON, in the
/// format of [`crate::FilePublisher`].
///
/// `publish` resolves once the line has been flushed to the operating system.
/// A closed or failing standard output, such as a pipe whose reader exited, is
/// [`outbox_core::ErrorKind::Unavailable`]. Unlike the file publisher it cannot
/// take back a line that was only partly written.
///
/// ```
/// use outbox_core::Publisher;
/// use outbox_file::{StdoutOptions, StdoutPublisher};
/// # use outbox_core::{Event, EventId, Headers, Payload};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> outbox_core::Result<()> {
/// # let event = Event {
/// #     id: 1,
/// #     event_id: EventId::new(),
/// #     stream: "orders".into(),
/// #     key: "order-42".into(),
/// #     seq: 1,
/// #     partition: 0,
/// #     event_type: "order.created".into(),
/// #     payload: Payload::json(&serde_json::json!({ "total": 30 })).unwrap(),
/// #     headers: Headers::new(),
/// #     created_at: chrono::Utc::now(),
/// #     attempts: 0,
/// # };
/// let options = StdoutOptions {
///     source: "/shop/{stream}".to_owned(),
/// };
/// let publisher = StdoutPublisher::new(options)?;
/// publisher.publish(&event).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StdoutPublisher {
    source: SourceTemplate,
    writer: LineWriter,
}

impl StdoutPublisher {
    /// Starts the thread that writes to standard output.
    ///
    /// An invalid `source` is [`outbox_core::ErrorKind::Config`].
    pub fn new(options: StdoutOptions) -> Result<Self> {
        StdoutPublisher::with_sink(options, StdoutSink)
    }

    fn with_sink(options: StdoutOptions, sink: impl Sink) -> Result<Self> {
        let source = SourceTemplate::new(&options.source)?;
        let writer = LineWriter::spawn(sink, "standard output")?;
        Ok(StdoutPublisher { source, writer })
    }
}

impl Publisher for StdoutPublisher {
    fn name(&self) -> &'static str {
        "stdout"
    }

    /// Writes the event's line and waits until it is flushed.
    async fn publish(&self, event: &Event) -> Result<()> {
        let line = encode(event, &self.source)?;
        self.writer.write(line).await
    }
}

struct StdoutSink;

impl Sink for StdoutSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(batch)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_line;
    use crate::writer::tests::MemorySink;
    use chrono::Utc;
    use outbox_core::{ErrorKind, EventId, Headers, Payload};
    use std::sync::Arc;
    use std::time::Duration;

    fn event(key: &str, seq: i64) -> Event {
        Event {
            id: seq,
            event_id: EventId::new(),
            stream: "audit".into(),
            key: key.into(),
            seq,
            partition: 0,
            event_type: "user.seen".into(),
            payload: Payload::bytes("text/plain", format!("{key} {seq}")),
            headers: Headers::new(),
            created_at: Utc::now(),
            attempts: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_events_come_out_as_whole_lines() {
        let sink = MemorySink::default();
        let options = StdoutOptions {
            source: "urn:shop:{stream}".to_owned(),
        };
        let publisher = StdoutPublisher::with_sink(options, sink.clone()).unwrap();
        let publisher = Arc::new(publisher);
        assert_eq!(publisher.name(), "stdout");

        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let publisher = Arc::clone(&publisher);
            tasks.spawn(async move {
                let key = format!("user-{task}");
                for seq in 1..=50 {
                    publisher.publish(&event(&key, seq)).await.unwrap();
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(30), tasks.join_all())
            .await
            .expect("publishing did not finish within 30 s");

        let text = String::from_utf8(sink.bytes()).unwrap();
        let events: Vec<_> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert_eq!(events.len(), 400);
        assert!(events.iter().all(|e| e.source == "urn:shop:audit"));
        for task in 0..8 {
            let key = format!("user-{task}");
            let seqs: Vec<i64> = events
                .iter()
                .filter(|e| e.key == key)
                .map(|e| e.seq)
                .collect();
            assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_invalid_source_is_a_configuration_error() {
        let options = StdoutOptions {
            source: "/shop orders".to_owned(),
        };
        let err = StdoutPublisher::new(options).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

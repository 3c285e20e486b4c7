//! Reading a file of published events as a broker subscription.
//!
//! [`FileConsumer`] follows a file that [`crate::FilePublisher`] appends to and
//! hands each complete line over as a [`Delivery`]. A file has no
//! acknowledgements: settling a delivery does nothing, and a consumer opened
//! again reads the file from the start, so the inbox is what makes each effect
//! happen once.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outbox_core::{Acknowledge, BoxFuture, Consumer, Delivery, Error, ReceivedEvent, Result};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

use crate::{PublishedEvent, parse_line};

/// Follows a file of published events from its first line.
///
/// `next` waits, polling every `poll_interval`, until a complete line is there;
/// it never returns `None`, like a subscription that stays open. A line that does
/// not parse is delivered as malformed.
///
/// ```no_run
/// use outbox_core::Consumer;
/// use outbox_file::FileConsumer;
///
/// # async fn run() -> outbox_core::Result<()> {
/// let mut consumer = FileConsumer::open("events.jsonl").await?;
/// while let Some(delivery) = consumer.next().await? {
///     println!("{:?}", delivery.event().map(|e| &e.key));
/// }
/// # Ok(())
/// # }
/// ```
pub struct FileConsumer {
    path: PathBuf,
    reader: BufReader<tokio::fs::File>,
    offset: u64,
    line: String,
    poll_interval: Duration,
}

impl FileConsumer {
    /// Opens `path` for reading from its start. A file that does not exist is
    /// [`outbox_core::ErrorKind::Config`].
    pub async fn open(path: impl AsRef<Path>) -> Result<FileConsumer> {
        let path = path.as_ref().to_path_buf();
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            Error::config(format!("cannot open event file {}", path.display())).with_source(e)
        })?;
        Ok(FileConsumer {
            path,
            reader: BufReader::new(file),
            offset: 0,
            line: String::new(),
            poll_interval: Duration::from_millis(20),
        })
    }

    /// Sets how often `next` looks for new lines at the end of the file.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }
}

impl Consumer for FileConsumer {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            self.line.clear();
            let read = self.reader.read_line(&mut self.line).await.map_err(|e| {
                Error::new(
                    outbox_core::ErrorKind::Unavailable,
                    format!("cannot read event file {}", self.path.display()),
                )
                .with_source(e)
            })?;
            if self.line.ends_with('\n') {
                self.offset += read as u64;
                let event = parse_line(&self.line).map(received).map_err(|e| {
                    Error::new(outbox_core::ErrorKind::Permanent, "bad line").with_source(e)
                });
                return Ok(Some(Delivery::decoded(event, NoAck)));
            }

            // The end of the file, or a line still being written: look again
            // from the start of that line.
            self.reader
                .seek(SeekFrom::Start(self.offset))
                .await
                .map_err(|e| {
                    Error::new(
                        outbox_core::ErrorKind::Unavailable,
                        "cannot seek event file",
                    )
                    .with_source(e)
                })?;
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

fn received(event: PublishedEvent) -> ReceivedEvent {
    ReceivedEvent {
        event_id: event.event_id,
        stream: Some(event.stream),
        key: event.key,
        seq: Some(event.seq),
        event_type: event.event_type,
        source: event.source,
        time: Some(event.time),
        payload: event.payload,
        headers: event.headers,
    }
}

/// A file cannot be acknowledged; both settlements do nothing.
struct NoAck;

impl Acknowledge for NoAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

//! The file publisher: every event appended to one file as a line of JSON.
//!
//! A single writer thread owns the file, so concurrent publishes never split a
//! line, and the file only ever grows by whole lines: a failed write is cut back
//! off, and a partial last line left by a crash is removed when the file is
//! opened again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use outbox_core::{Error, ErrorKind, Event, Publisher, Result};

use crate::line::{DEFAULT_SOURCE, SourceTemplate, encode, parse_line};
use crate::writer::{LineWriter, Sink};

/// Settings of a [`FilePublisher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// Whether each write is also synced to the disk ([`File::sync_data`])
    /// before the events it holds count as published.
    ///
    /// Off by default: an event then counts as published once the operating
    /// system holds it, which survives a crash of the process but not a power
    /// loss or a kernel crash. On, the file survives those too, at the price of
    /// one disk sync per write. Writes gather every event waiting at that
    /// moment, so concurrent publishes share a sync.
    pub fsync: bool,
    /// The CloudEvents `source` of every event. `{stream}` is replaced by the
    /// event's stream; the default is [`DEFAULT_SOURCE`], `/outbox/{stream}`.
    /// It must not be empty or contain whitespace.
    pub source: String,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            fsync: false,
            source: DEFAULT_SOURCE.to_owned(),
        }
    }
}

/// Appends each event to a file as one line of CloudEvents JSON.
///
/// This is the destination of the embedded setup: no broker, and a file that
/// [`crate::read_events`] reads back. `publish` resolves once the line has been
/// handed to the operating system (and synced to the disk with
/// [`FileOptions::fsync`]). Events published one after another appear in that
/// order; events published at the same time appear in some order, each on its
/// own line.
///
/// Failures: a path that cannot be opened is [`ErrorKind::Config`]; a write
/// that fails, such as on a full disk, is [`ErrorKind::Unavailable`] and is
/// removed from the file again, so the relay's retry writes it anew; a payload
/// declared JSON that does not parse is [`ErrorKind::Permanent`].
///
/// Each file must have one publisher at a time. Nothing coordinates a second one,
/// in this process or another: their lines could mix, and the clean-up after a
/// failed write of one could remove lines of the other. When a sync fails after a
/// successful write, the lines stay in the file and their publishes fail; the
/// relay then publishes them again, which readers see as duplicates of one id.
///
/// ```
/// use outbox_core::Publisher;
/// use outbox_file::{FileOptions, FilePublisher, read_events};
/// # use outbox_core::{Event, EventId, Headers, Payload};
/// # fn order_event(seq: i64) -> Event {
/// #     Event {
/// #         id: seq,
/// #         event_id: EventId::new(),
/// #         stream: "orders".into(),
/// #         key: "order-42".into(),
/// #         seq,
/// #         partition: 0,
/// #         event_type: "order.created".into(),
/// #         payload: Payload::json(&serde_json::json!({ "total": 30 })).unwrap(),
/// #         headers: Headers::new(),
/// #         created_at: chrono::Utc::now(),
/// #         attempts: 0,
/// #     }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> outbox_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("events.jsonl");
/// let publisher = FilePublisher::open(&path, FileOptions::default())?;
///
/// publisher.publish(&order_event(1)).await?;
/// publisher.publish(&order_event(2)).await?;
///
/// let events = read_events(&path)?;
/// assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
/// assert_eq!(events[0].source, "/outbox/orders");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FilePublisher {
    path: PathBuf,
    source: SourceTemplate,
    writer: LineWriter,
}

impl FilePublisher {
    /// Opens `path` for appending, creating the file if needed, and starts the
    /// thread that writes to it.
    ///
    /// A missing directory, a path that is a directory, or one the process may
    /// not write is [`ErrorKind::Config`], as is an invalid `source`. A partial
    /// last line, which only a crash during a write leaves, is removed first: no
    /// publish of it had succeeded.
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let source = SourceTemplate::new(&options.source)?;

        let mut file = open_file(&path)?;
        repair_tail(&mut file, &path)?;
        if options.fsync {
            sync_directory(&path)?;
        }

        let sink = FileSink {
            file,
            fsync: options.fsync,
            torn_at: None,
        };
        let writer = LineWriter::spawn(sink, path.display().to_string())?;
        Ok(FilePublisher {
            path,
            source,
            writer,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Publisher for FilePublisher {
    fn name(&self) -> &'static str {
        "file"
    }

    /// Appends the event's line and waits until it is written.
    ///
    /// If the returned future is dropped after the line was queued, the line is
    /// still written.
    async fn publish(&self, event: &Event) -> Result<()> {
        let line = encode(event, &self.source)?;
        self.writer.write(line).await
    }
}

fn open_file(path: &Path) -> Result<File> {
    if path.as_os_str().is_empty() {
        return Err(Error::config("event file path is empty"));
    }

    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            let message = if e.kind() == io::ErrorKind::NotFound {
                format!("directory of event file {} does not exist", path.display())
            } else {
                format!("cannot open event file {}", path.display())
            };
            Error::config(message).with_source(e)
        })
}

/// Makes the file end with a line feed: a whole last line without one gets it,
/// a fragment of a line is cut off.
fn repair_tail(file: &mut File, path: &Path) -> Result<()> {
    let unreadable = |e: io::Error| {
        Error::new(
            ErrorKind::Unavailable,
            format!("could not read the end of event file {}", path.display()),
        )
        .with_source(e)
    };

    let len = file.metadata().map_err(unreadable)?.len();
    if len == 0 || last_byte(file, len).map_err(unreadable)? == b'\n' {
        return Ok(());
    }

    let start = last_line_start(file, len).map_err(unreadable)?;
    let mut fragment = Vec::new();
    file.seek(SeekFrom::Start(start)).map_err(unreadable)?;
    file.read_to_end(&mut fragment).map_err(unreadable)?;

    let whole = std::str::from_utf8(&fragment).is_ok_and(|t| parse_line(t).is_ok());
    let repaired = if whole {
        file.write_all(b"\n")
    } else {
        file.set_len(start)
    };
    repaired.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("could not repair the end of event file {}", path.display()),
        )
        .with_source(e)
    })?;

    if !whole {
        tracing::warn!(
            path = %path.display(),
            bytes = len - start,
            "removed a partial last line from the event file"
        );
    }
    Ok(())
}

fn last_byte(file: &mut File, len: u64) -> io::Result<u8> {
    let mut byte = [0];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// The offset just after the last line feed before `len`, or 0 if there is none.
fn last_line_start(file: &mut File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut buffer = vec![0; CHUNK as usize];
    let mut end = len;

    while end > 0 {
        let begin = end.saturating_sub(CHUNK);
        let chunk = &mut buffer[..(end - begin) as usize];
        file.seek(SeekFrom::Start(begin))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(begin + at as u64 + 1);
        }
        end = begin;
    }
    Ok(0)
}

/// Syncs the directory holding `path`, so that a newly created file's name
/// survives a power loss along with its lines.
#[cfg(unix)]
fn sync_directory(path: &Path) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("could not sync the directory of {}", path.display()),
            )
            .with_source(e)
        })
}

/// Directories cannot be opened for syncing here; the file's own syncs remain.
#[cfg(not(unix))]
fn sync_directory(_path: &Path) -> Result<()> {
    Ok(())
}

struct FileSink {
    file: File,
    fsync: bool,
    /// Where a failed write began, when cutting it off failed too; the next
    /// write tries again first, so no line is ever appended to a fragment.
    torn_at: Option<u64>,
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        if let Some(start) = self.torn_at {
            self.file.set_len(start)?;
            self.torn_at = None;
        }

        // `File` has no buffer of its own: once `write_all` returns, the
        // operating system holds every byte.
        let start = self.file.metadata()?.len();
        if let Err(err) = self.file.write_all(batch) {
            if self.file.set_len(start).is_err() {
                self.torn_at = Some(start);
            }
            return Err(err);
        }

        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, content).unwrap();
        let file = open_file(&path).unwrap();
        (dir, path, file)
    }

    const WHOLE: &str = concat!(
        r#"{"specversion":"1.0","id":"0197a3c0-7d2e-7000-8000-000000000001","#,
        r#""source":"/outbox/orders","type":"order.created","#,
        r#""time":"2026-01-02T03:04:05.000000Z","datacontenttype":"text/plain","#,
        r#""partitionkey":"order-42","sequence":"0000000000000000001","#,
        r#""outboxstream":"orders","data_base64":"eA=="}"#,
    );

    #[test]
    fn a_partial_last_line_is_cut_off() {
        let content = format!("{WHOLE}\n{}", &WHOLE[..40]);
        let (_dir, path, mut file) = file_with(content.as_bytes());

        repair_tail(&mut file, &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{WHOLE}\n")
        );
    }

    #[test]
    fn a_lone_fragment_empties_the_file() {
        let (_dir, path, mut file) = file_with(&WHOLE.as_bytes()[..40]);

        repair_tail(&mut file, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn a_whole_last_line_gets_its_line_feed() {
        let content = format!("{WHOLE}\n{WHOLE}");
        let (_dir, path, mut file) = file_with(content.as_bytes());

        repair_tail(&mut file, &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{WHOLE}\n{WHOLE}\n")
        );
    }

    #[test]
    fn a_line_start_is_found_across_chunks() {
        let long = "y".repeat(200 * 1024);
        let content = format!("{WHOLE}\n{long}");
        let (_dir, path, mut file) = file_with(content.as_bytes());

        let len = file.metadata().unwrap().len();
        assert_eq!(
            last_line_start(&mut file, len).unwrap(),
            WHOLE.len() as u64 + 1
        );
        repair_tail(&mut file, &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{WHOLE}\n")
        );
    }

    #[test]
    fn files_ending_in_a_line_feed_are_left_alone() {
        let content = format!("{WHOLE}\n");
        let (_dir, path, mut file) = file_with(content.as_bytes());

        repair_tail(&mut file, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }
}

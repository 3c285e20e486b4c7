//! The one thread that writes a publisher's lines, so that lines never interleave.
//!
//! Publishing tasks hand complete lines to the thread over a bounded channel and
//! wait for its answer. The thread takes every line already waiting, writes them
//! with one call to the [`Sink`], and answers all of their tasks at once, so one
//! `fsync` covers many events. The blocking writes stay off the async runtime.

use std::io;
use std::sync::Arc;
use std::thread;

use outbox_core::{Error, ErrorKind, Result};
use tokio::sync::{mpsc, oneshot};

/// How many lines may wait for the thread before publishing tasks wait to queue.
const QUEUE_CAPACITY: usize = 1024;

/// A batch stops taking waiting lines once it holds this many bytes.
const BATCH_BYTES: usize = 1024 * 1024;

/// Where a writer thread puts its bytes.
pub(crate) trait Sink: Send + 'static {
    /// Writes `batch`, a run of whole lines, and returns once the operating
    /// system holds all of it, or fails having left no partial line behind if
    /// the sink can manage that.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()>;
}

/// The publishing side of a writer thread. The thread stops once this is dropped
/// and the lines already queued are written.
#[derive(Debug)]
pub(crate) struct LineWriter {
    requests: mpsc::Sender<Request>,
    target: Arc<str>,
}

#[derive(Debug)]
struct Request {
    line: Vec<u8>,
    done: oneshot::Sender<Outcome>,
}

type Outcome = std::result::Result<(), Arc<io::Error>>;

impl LineWriter {
    /// Starts a thread writing to `sink`; `target` names it in error messages.
    pub(crate) fn spawn(sink: impl Sink, target: impl Into<Arc<str>>) -> Result<Self> {
        let (requests, receiver) = mpsc::channel(QUEUE_CAPACITY);
        thread::Builder::new()
            .name("outbox-line-writer".to_owned())
            .spawn(move || run(sink, receiver))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    "could not start the line writer thread",
                )
                .with_source(e)
            })?;
        Ok(LineWriter {
            requests,
            target: target.into(),
        })
    }

    /// Queues `line` and waits until it is written.
    ///
    /// A line whose future is dropped after it was queued is still written.
    pub(crate) async fn write(&self, line: Vec<u8>) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        if self.requests.send(Request { line, done }).await.is_err() {
            return Err(self.stopped());
        }

        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("could not write events to {}", self.target),
            )
            .with_source(err)),
            Err(_) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!("the writer of {} has stopped", self.target),
        )
    }
}

fn run(mut sink: impl Sink, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();

    while let Some(first) = requests.blocking_recv() {
        batch.extend_from_slice(&first.line);
        waiting.push(first.done);
        while batch.len() < BATCH_BYTES
            && let Ok(next) = requests.try_recv()
        {
            batch.extend_from_slice(&next.line);
            waiting.push(next.done);
        }

        let outcome = sink.write_batch(&batch).map_err(Arc::new);

        for done in waiting.drain(..) {
            // The task may have stopped waiting; its line is written all the same.
            let _ = done.send(outcome.clone());
        }
        batch.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Collects batches in memory; fails the batches whose index is listed.
    #[derive(Clone, Default)]
    pub(crate) struct MemorySink {
        pub(crate) batches: Arc<Mutex<Vec<Vec<u8>>>>,
        pub(crate) failing: Arc<Mutex<Vec<usize>>>,
    }

    impl MemorySink {
        /// Everything written so far.
        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.batches.lock().unwrap().concat()
        }
    }

    impl Sink for MemorySink {
        fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
            let mut batches = self.batches.lock().unwrap();
            let index = batches.len();
            batches.push(Vec::new());
            if self.failing.lock().unwrap().contains(&index) {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
            }
            batches[index] = batch.to_vec();
            Ok(())
        }
    }

    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), future)
            .await
            .expect("the writer did not answer within 30 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lines_never_interleave() {
        let sink = MemorySink::default();
        let writer = Arc::new(LineWriter::spawn(sink.clone(), "memory").unwrap());

        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16 {
            let writer = Arc::clone(&writer);
            tasks.spawn(async move {
                for n in 0..100 {
                    let line = format!("{task}:{n}:{}\n", "x".repeat(100 + n));
                    writer.write(line.into_bytes()).await.unwrap();
                }
            });
        }
        within(tasks.join_all()).await;

        let text = String::from_utf8(sink.bytes()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1600);
        for line in &lines {
            let mut parts = line.split(':');
            let _task = parts.next().unwrap();
            let n: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next().unwrap(), "x".repeat(100 + n));
        }
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 1600);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_its_lines_and_the_next_one_succeeds() {
        let sink = MemorySink::default();
        sink.failing.lock().unwrap().push(0);
        let writer = LineWriter::spawn(sink.clone(), "memory").unwrap();

        let err = within(writer.write(b"one\n".to_vec())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(std::error::Error::source(&err).is_some());

        within(writer.write(b"two\n".to_vec())).await.unwrap();
        assert_eq!(sink.bytes(), b"two\n");
    }
}

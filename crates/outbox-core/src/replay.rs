//! Published events kept for replay, and the replay itself.
//!
//! With [`crate::RelayConfig::keep_published`] set, the relay moves each
//! acknowledged event into the store's published log, in the statement that
//! takes it out of the outbox, instead of deleting it. It removes events from
//! the log once they have been published for longer than that, in bounded
//! batches, so the log holds a sliding window of history while the outbox
//! itself stays as small as the backlog.
//!
//! [`replay`] publishes a selection of the log once more, under the events' own
//! ids, each key in its original order. A replay does not touch the outbox or
//! the relay's leases, so it runs beside a relay without slowing it beyond the
//! reads it makes.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream;

use crate::relay::{group_by_key, publish_within};
use crate::{Error, Event, Publisher, Result, RetryPolicy};

/// Which kept events a replay publishes. Every field narrows the selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFilter {
    /// Only events created at or after this time (the writer's commit time, by
    /// the database's clock).
    pub since: DateTime<Utc>,
    /// Only events created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this key.
    pub key: Option<String>,
}

/// A store's log of published events, kept for replay.
pub trait PublishedLog: Send + Sync {
    /// Kept events that `filter` selects with a row id above `after`, in row-id
    /// order (which, for each key, is its order of positions), at most `limit`.
    ///
    /// The stores walk the primary key from `after` and test each row against
    /// the filter; there is no index on `created_at`, stream or key, so the
    /// first read of a replay whose `since` is late in a large log reads every
    /// kept row before it.
    fn kept(
        &self,
        filter: &ReplayFilter,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Kept events read per query.
    pub batch_size: u32,
    /// Keys published at once; each key's events go one after the other.
    pub concurrency: usize,
    /// The longest one publish may take before it counts as failed.
    pub publish_timeout: Duration,
    /// Attempts per event before a failure that may pass (an unreachable or
    /// overloaded broker) stops the replay; a permanent failure stops it at once.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Start after this row id: 0 for the start of the selection, or the
    /// [`ReplayReport::resume_after`] of a replay that stopped.
    pub after: i64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            batch_size: 1000,
            concurrency: 256,
            publish_timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry: RetryPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
                multiplier: 2.0,
            },
            after: 0,
        }
    }
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    /// Events the broker acknowledged.
    pub published: u64,
    /// Every selected event with a row id up to this one was published (or the
    /// replay started after it): a replay started with this as
    /// [`ReplayOptions::after`] goes on where this one stopped.
    pub resume_after: i64,
    /// Why the replay stopped before the end of the selection, if it did.
    pub error: Option<Error>,
}

/// Publishes the kept events `filter` selects, in row-id order per key, until
/// the selection is exhausted or an event cannot be published.
///
/// Events keep their ids, so a consumer with an inbox, or a broker's duplicate
/// window (JetStream's `Nats-Msg-Id`), drops those it already has: a replay
/// feeds a new or rebuilt consumer, or a destination that lost its data.
/// `progress` is called after every batch.
pub async fn replay<L, P>(
    log: &L,
    publisher: &P,
    filter: &ReplayFilter,
    options: &ReplayOptions,
    mut progress: impl FnMut(&ReplayReport),
) -> ReplayReport
where
    L: PublishedLog,
    P: Publisher,
{
    let mut report = ReplayReport {
        published: 0,
        resume_after: options.after,
        error: None,
    };
    loop {
        let batch = match log
            .kept(filter, report.resume_after, options.batch_size.max(1))
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                report.error = Some(err.context("could not read the published events"));
                return report;
            }
        };
        let Some(last) = batch.last().map(|e| e.id) else {
            return report;
        };
        let results: Vec<KeyResult> = stream::iter(group_by_key(batch, |e| e))
            .map(|(_, events)| publish_key(publisher, events, options))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;

        let mut first_unpublished: Option<i64> = None;
        for result in results {
            report.published += result.published;
            if let Some((id, err)) = result.failed
                && first_unpublished.is_none_or(|first| id < first)
            {
                first_unpublished = Some(id);
                report.error = Some(err);
            }
        }
        match first_unpublished {
            Some(id) => {
                report.resume_after = id - 1;
                progress(&report);
                return report;
            }
            None => {
                report.resume_after = last;
                progress(&report);
            }
        }
    }
}

struct KeyResult {
    published: u64,
    /// The row id of the first event that failed, and why.
    failed: Option<(i64, Error)>,
}

async fn publish_key<P: Publisher>(
    publisher: &P,
    events: Vec<Event>,
    options: &ReplayOptions,
) -> KeyResult {
    let mut result = KeyResult {
        published: 0,
        failed: None,
    };
    for event in events {
        match publish_with_retries(publisher, &event, options).await {
            Ok(()) => result.published += 1,
            Err(err) => {
                let err = err.context(format!(
                    "could not replay event {} (row {})",
                    event.event_id, event.id
                ));
                result.failed = Some((event.id, err));
                break;
            }
        }
    }
    result
}

async fn publish_with_retries<P: Publisher>(
    publisher: &P,
    event: &Event,
    options: &ReplayOptions,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        match publish_within(publisher, event, options.publish_timeout).await {
            Ok(()) => return Ok(()),
            Err(err) if err.kind().is_retryable() && attempt < options.max_attempts => {
                tokio::time::sleep(options.retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

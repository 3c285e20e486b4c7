//! The relay engine: claim a batch, publish it, await the broker's acks, mark
//! the events done.
//!
//! A relay holds leases on partitions and reads the oldest pending events of
//! those partitions. Events of one key are published one at a time, each only
//! after the previous one was acknowledged; different keys are published
//! concurrently, so throughput comes from many keys in flight, not from
//! pipelining within a key. Acknowledged events are deleted in one statement
//! per batch, overlapped with the next claim.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use tokio::task::JoinHandle;

use crate::relay_store::{Claimed, RelayId, RelayStore};
use crate::telemetry;
use crate::{Error, ErrorKind, Event, Publisher, Result, RetryPolicy};

/// What happens to a key's later events when one of its events is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterPolicy {
    /// The key moves on: later events are published. Order is kept among the
    /// events that are delivered.
    #[default]
    Skip,
    /// The key stops until the dead letter is retried or discarded.
    Hold,
}

/// A point in the relay where a test can inject a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailSite {
    /// The broker acknowledged an event that is not yet marked done;
    /// `published` counts the acknowledgements so far, this one included.
    AfterAck {
        /// Acknowledged events so far.
        published: u64,
    },
}

/// A hook called at each [`FailSite`]; it may abort the process.
#[derive(Clone, Default)]
pub struct Failpoints(Option<Arc<dyn Fn(FailSite) + Send + Sync>>);

impl Failpoints {
    /// Calls `hook` at every fail site.
    pub fn new(hook: impl Fn(FailSite) + Send + Sync + 'static) -> Self {
        Failpoints(Some(Arc::new(hook)))
    }

    fn hit(&self, site: FailSite) {
        if let Some(hook) = &self.0 {
            hook(site);
        }
    }
}

impl fmt::Debug for Failpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Failpoints(set)"
        } else {
            "Failpoints(none)"
        })
    }
}

/// Settings of a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events claimed per batch.
    pub batch_size: usize,
    /// Keys published concurrently within a batch.
    pub concurrency: usize,
    /// How long a partition lease lasts without renewal.
    pub lease_ttl: Duration,
    /// The longest an idle relay waits before looking for events again, in case
    /// a wake-up notification was lost.
    pub poll_interval: Duration,
    /// How long after its last batch the relay keeps polling every
    /// [`RelayConfig::busy_poll_interval`] before it parks and waits for a
    /// notification. Under sustained load it therefore never parks, and writers
    /// never pay for a `NOTIFY`, which serializes commits database-wide.
    pub busy_linger: Duration,
    /// The pause between looks for work while lingering.
    pub busy_poll_interval: Duration,
    /// Failed attempts after which an event is dead-lettered.
    pub max_attempts: u32,
    /// What a dead letter does to its key.
    pub dead_letter_policy: DeadLetterPolicy,
    /// Backoff between attempts of a failing event.
    pub retry: RetryPolicy,
    /// Backoff while the broker or the database is unreachable.
    pub outage_retry: RetryPolicy,
    /// The longest one publish may take before it counts as the broker being
    /// unreachable.
    pub publish_timeout: Duration,
    /// How long a stop waits for in-flight publishes before abandoning them.
    pub shutdown_grace: Duration,
    /// After how many published events the store reclaims their space
    /// ([`RelayStore::reclaim`]), so the table stays bounded under sustained
    /// load even where autovacuum is off or slow; it also reclaims twice once it
    /// parks after a drain, so that a drained table shrinks back to its empty
    /// size. 0 turns both off.
    pub reclaim_every: u64,
    /// Keep published events for replay for this long after their publish
    /// ([`crate::replay`]), instead of deleting them. The relay moves each one
    /// into the store's published log as it leaves the outbox, and deletes
    /// from the log, in batches, those published longer ago. `None`, the
    /// default, deletes published events at once.
    pub keep_published: Option<Duration>,
    /// Crash injection for tests; none in production.
    pub failpoints: Failpoints,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 1000,
            concurrency: 512,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            busy_linger: Duration::from_millis(500),
            busy_poll_interval: Duration::from_millis(2),
            max_attempts: 10,
            dead_letter_policy: DeadLetterPolicy::Skip,
            retry: RetryPolicy::default(),
            outage_retry: RetryPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
                multiplier: 2.0,
            },
            publish_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            reclaim_every: 100_000,
            keep_published: None,
            failpoints: Failpoints::default(),
        }
    }
}

/// Running totals of a relay, readable while it runs.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Events acknowledged by the broker.
    pub published: AtomicU64,
    /// Failed attempts that will be retried.
    pub failed_attempts: AtomicU64,
    /// Events moved to the dead letters.
    pub dead_lettered: AtomicU64,
    /// Batches claimed.
    pub batches: AtomicU64,
    /// When the broker became unreachable, in Unix milliseconds; 0 while it is
    /// reachable (or was never tried).
    pub broker_down_since_ms: AtomicU64,
    /// When the database began failing the relay's queries, in Unix
    /// milliseconds; 0 while they succeed.
    pub store_down_since_ms: AtomicU64,
    /// When the broker last acknowledged an event, in Unix milliseconds; 0 before
    /// the first.
    pub last_ack_ms: AtomicU64,
}

impl RelayStats {
    /// Notes the start of an outage in `since`, unless one is already noted.
    fn outage(since: &AtomicU64) {
        let _ = since.compare_exchange(
            0,
            telemetry::unix_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// How many events must have been deleted for a relay that ran out of work to
/// reclaim their space; a trickle of events is left to autovacuum.
const IDLE_RECLAIM_MIN: u64 = 1_000;

/// Kept events deleted per statement when they expire: a statement holds its
/// row locks only briefly, and the next batch starts after it committed.
const PRUNE_BATCH: u32 = 5_000;

/// The longest time between two looks for expired kept events.
const PRUNE_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// A relay: one process's share of the work of publishing the outbox.
pub struct Relay<S, P> {
    id: RelayId,
    store: Arc<S>,
    publisher: Arc<P>,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

/// What happened to one key's events in a batch.
struct KeyOutcome {
    key: (String, String),
    done: Vec<i64>,
    retry_at: Option<Instant>,
}

/// State shared by the keys of one batch.
struct Batch {
    lease_deadline: Instant,
    broker_down: AtomicBool,
}

/// What the loop remembers between batches.
struct LoopState {
    partitions: Vec<i16>,
    lease_deadline: Instant,
    next_maintenance: Instant,
    /// Keys whose head event waits for a retry, and until when.
    retry_at: HashMap<(String, String), Instant>,
    /// Acknowledged events whose delete is in flight: a claim may still see them.
    deleting: HashSet<i64>,
    delete_task: Option<JoinHandle<()>>,
    /// When the last batch with events was claimed.
    last_work: Option<Instant>,
    /// Consecutive batches that hit an unreachable broker or database.
    outages: u32,
    paused_until: Option<Instant>,
    /// Events deleted since the store last reclaimed their space.
    unreclaimed: u64,
    /// Events deleted since the relay last reclaimed on running out of work.
    drained: u64,
    /// Reclaims made since the backlog drained; the relay makes two.
    idle_reclaims: u32,
    reclaim_task: Option<JoinHandle<()>>,
    /// When to look for expired kept events next.
    next_prune: Instant,
    prune_task: Option<JoinHandle<()>>,
    /// Kept events deleted since their space was last reclaimed.
    pruned: Arc<AtomicU64>,
    /// The next batch, claimed while the previous one was published; used only
    /// if that one was published whole and the leases did not change since.
    prefetched: Option<Vec<Claimed>>,
}

impl LoopState {
    fn new() -> Self {
        let now = Instant::now();
        LoopState {
            partitions: Vec::new(),
            lease_deadline: now,
            next_maintenance: now,
            retry_at: HashMap::new(),
            deleting: HashSet::new(),
            delete_task: None,
            last_work: None,
            outages: 0,
            paused_until: None,
            unreclaimed: 0,
            drained: 0,
            idle_reclaims: 0,
            reclaim_task: None,
            next_prune: now,
            prune_task: None,
            pruned: Arc::default(),
            prefetched: None,
        }
    }

    fn time_to_maintenance(&self) -> Duration {
        self.next_maintenance
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10))
    }
}

type Wait = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl<S: RelayStore, P: Publisher + 'static> Relay<S, P> {
    /// A relay over `store` publishing through `publisher`.
    pub fn new(store: S, publisher: P, config: RelayConfig) -> Self {
        Relay {
            id: RelayId::new(),
            store: Arc::new(store),
            publisher: Arc::new(publisher),
            config,
            stats: Arc::default(),
        }
    }

    /// This relay's identity in the lease table.
    pub fn id(&self) -> RelayId {
        self.id
    }

    /// The relay's running totals.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Publishes until `shutdown` resolves, then stops cleanly.
    ///
    /// On shutdown no new batch is claimed and no new publish starts. Publishes
    /// already in flight get [`RelayConfig::shutdown_grace`] to be acknowledged;
    /// acknowledged events are marked done, and the leases are given up. Events
    /// whose publish was abandoned stay pending and are published again, with
    /// the same id, by the next relay.
    ///
    /// Errors from the database or the broker are retried with backoff and do
    /// not end the loop.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let stopping = AtomicBool::new(false);
        let mut state = LoopState::new();
        tracing::info!(relay_id = %self.id, publisher = self.publisher.name(), "relay started");
        telemetry::relay_up(self.publisher.name(), true);

        loop {
            let idle = {
                let mut step = std::pin::pin!(self.step(&mut state, &stopping));
                tokio::select! {
                    idle = &mut step => idle,
                    () = &mut shutdown => {
                        stopping.store(true, Ordering::Relaxed);
                        let grace = self.config.shutdown_grace;
                        if tokio::time::timeout(grace, &mut step).await.is_err() {
                            tracing::warn!(relay_id = %self.id, "abandoned in-flight publishes");
                        }
                        break;
                    }
                }
            };
            if let Some(wait) = idle {
                tokio::select! {
                    () = wait => {}
                    () = &mut shutdown => break,
                }
            }
        }

        self.settle(&mut state).await;
        if let Err(err) = self.store.release_leases(self.id).await {
            tracing::warn!(relay_id = %self.id, error = %err.chain(), "could not release leases");
        }
        telemetry::relay_up(self.publisher.name(), false);
        telemetry::leases_held(self.publisher.name(), 0);
        tracing::info!(
            relay_id = %self.id,
            published = self.stats.published.load(Ordering::Relaxed),
            dead_lettered = self.stats.dead_lettered.load(Ordering::Relaxed),
            "relay stopped"
        );
        Ok(())
    }

    /// One turn of the loop: maintain leases when due, claim a batch, publish
    /// it. Returns what to wait on when there is nothing to do right now.
    async fn step(&self, state: &mut LoopState, stopping: &AtomicBool) -> Option<Wait> {
        let now = Instant::now();
        if let Some(until) = state.paused_until.filter(|until| now < *until) {
            return Some(Box::pin(tokio::time::sleep_until(until.into())));
        }
        state.paused_until = None;

        if state.partitions.is_empty() || now >= state.next_maintenance {
            if let Err(err) = self.maintain(state).await {
                tracing::warn!(relay_id = %self.id, error = %err.chain(), "could not renew leases");
                RelayStats::outage(&self.stats.store_down_since_ms);
                self.pause(state);
                return None;
            }
            if state.partitions.is_empty() {
                return Some(Box::pin(tokio::time::sleep(self.config.poll_interval)));
            }
        }

        if let Some(keep) = self.config.keep_published
            && now >= state.next_prune
        {
            state.next_prune =
                now + (keep / 2).clamp(Duration::from_millis(100), PRUNE_INTERVAL_MAX);
            self.prune(state, keep);
        }

        state.retry_at.retain(|_, at| *at > now);
        let skip: Vec<(String, String)> = state.retry_at.keys().cloned().collect();
        let mut claimed = match state.prefetched.take() {
            Some(batch) => batch,
            None => {
                // The delete of the previous batch may not have committed yet,
                // and its rows, the oldest, would fill the claim: the store
                // leaves them out.
                let deleting: Vec<i64> = state.deleting.iter().copied().collect();
                let claimed = self
                    .store
                    .claim(&state.partitions, &skip, &deleting, self.config.batch_size)
                    .await;
                match claimed {
                    Ok(claimed) => {
                        self.stats.store_down_since_ms.store(0, Ordering::Relaxed);
                        claimed
                    }
                    Err(err) => {
                        let error = err.chain();
                        tracing::warn!(relay_id = %self.id, %error, "could not claim events");
                        RelayStats::outage(&self.stats.store_down_since_ms);
                        self.pause(state);
                        return None;
                    }
                }
            }
        };

        if claimed.is_empty() {
            self.settle(state).await;
            let busy = self.config.busy_linger;
            if state
                .last_work
                .is_some_and(|at| now.duration_since(at) < busy)
            {
                return Some(Box::pin(tokio::time::sleep(self.config.busy_poll_interval)));
            }
            match self.claim_after_parking(state, &skip).await {
                Ok(Some(more)) => claimed = more,
                Ok(None) => {
                    // A drained backlog, quiet for the linger: reclaim now, which
                    // also lets the table shrink, unless only a trickle went by.
                    // Waiting out the linger lets every transaction that saw the
                    // deleted rows end first. A reclaim still running defers this
                    // one to the next idle turn.
                    // A second reclaim on the next idle turn catches rows a
                    // transaction still saw during the first.
                    if state.drained >= IDLE_RECLAIM_MIN && self.reclaim(state) {
                        state.idle_reclaims += 1;
                        if state.idle_reclaims >= 2 {
                            state.drained = 0;
                            state.idle_reclaims = 0;
                        }
                    }
                    let (store, id) = (self.store.clone(), self.id);
                    let timeout = self.config.poll_interval.min(state.time_to_maintenance());
                    return Some(Box::pin(async move {
                        if let Err(err) = store.wait_for_events(id, timeout).await {
                            tracing::warn!(relay_id = %id, error = %err.chain(), "wait failed");
                            tokio::time::sleep(timeout).await;
                        }
                    }));
                }
                Err(err) => {
                    tracing::warn!(relay_id = %self.id, error = %err.chain(), "could not park");
                    self.pause(state);
                    return None;
                }
            }
        }

        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        state.last_work = Some(Instant::now());
        let batch_size = claimed.len();
        telemetry::claimed(self.publisher.name(), batch_size);
        let batch = Batch {
            lease_deadline: state.lease_deadline,
            broker_down: AtomicBool::new(false),
        };
        // A full batch means more may be waiting: claim the next one while this
        // one is published, leaving out this batch and the rows being deleted.
        // It is used only if this batch is published whole, so no key can
        // overtake an event of its own that failed or was not sent.
        let prefetch = (batch_size == self.config.batch_size).then(|| {
            let mut exclude: Vec<i64> = state.deleting.iter().copied().collect();
            exclude.extend(claimed.iter().map(|c| c.event.id));
            exclude
        });
        let publish = stream::iter(group_by_key(claimed, |c| &c.event))
            .map(|(key, events)| self.publish_key(key, events, &batch, stopping))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect::<Vec<KeyOutcome>>();
        let next = async {
            match &prefetch {
                Some(exclude) => Some(
                    self.store
                        .claim(&state.partitions, &skip, exclude, self.config.batch_size)
                        .await,
                ),
                None => None,
            }
        };
        let (outcomes, next) = tokio::join!(publish, next);

        let mut done = Vec::with_capacity(batch_size);
        for outcome in outcomes {
            done.extend(outcome.done);
            if let Some(at) = outcome.retry_at {
                state.retry_at.insert(outcome.key, at);
            }
        }
        tracing::debug!(relay_id = %self.id, batch_size, published = done.len(), "published batch");
        let whole = done.len() == batch_size && !stopping.load(Ordering::Relaxed);
        if let Some(Ok(next)) = next
            && whole
            && !next.is_empty()
        {
            state.prefetched = Some(next);
        }

        if batch.broker_down.load(Ordering::Relaxed) {
            RelayStats::outage(&self.stats.broker_down_since_ms);
            self.pause(state);
        } else if !done.is_empty() {
            state.outages = 0;
            self.stats.broker_down_since_ms.store(0, Ordering::Relaxed);
        }
        if !done.is_empty() {
            self.stats
                .last_ack_ms
                .store(telemetry::unix_ms(), Ordering::Relaxed);
        }
        self.start_delete(state, done).await;
        None
    }

    /// Publishes one key's events in order, each after the previous one was
    /// acknowledged, stopping at the first that cannot be published now.
    async fn publish_key(
        &self,
        key: (String, String),
        events: Vec<Claimed>,
        batch: &Batch,
        stopping: &AtomicBool,
    ) -> KeyOutcome {
        let mut outcome = KeyOutcome {
            key,
            done: Vec::new(),
            retry_at: None,
        };
        for claimed in events {
            // Fencing: publish only while the lease surely still holds by this
            // process's monotonic clock, which keeps counting while it is paused.
            if stopping.load(Ordering::Relaxed)
                || batch.broker_down.load(Ordering::Relaxed)
                || Instant::now() >= batch.lease_deadline
            {
                break;
            }
            if let Some(wait) = claimed.retry_in {
                outcome.retry_at = Some(Instant::now() + wait);
                break;
            }

            let event = &claimed.event;
            let published =
                publish_within(self.publisher.as_ref(), event, self.config.publish_timeout).await;
            match published {
                Ok(()) => {
                    telemetry::published(event, self.publisher.name());
                    let n = self.stats.published.fetch_add(1, Ordering::Relaxed) + 1;
                    self.config
                        .failpoints
                        .hit(FailSite::AfterAck { published: n });
                    outcome.done.push(event.id);
                }
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    telemetry::failed(event, self.publisher.name(), err.kind());
                    if !batch.broker_down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            relay_id = %self.id,
                            publisher = self.publisher.name(),
                            error = %err.chain(),
                            "broker unavailable; pausing"
                        );
                    }
                    break;
                }
                Err(err) => {
                    let (go_on, retry_at) = self.handle_failure(event, &err).await;
                    outcome.retry_at = retry_at;
                    if !go_on {
                        break;
                    }
                }
            }
        }
        outcome
    }

    /// Records a failed attempt: dead-letters the event when it is out of
    /// attempts or can never succeed, otherwise defers it. Returns whether the
    /// key may go on to its next event, and when to retry it if not.
    async fn handle_failure(&self, event: &Event, err: &Error) -> (bool, Option<Instant>) {
        let attempts = u32::try_from(event.attempts).unwrap_or(0) + 1;
        let give_up = err.kind() == ErrorKind::Permanent || attempts >= self.config.max_attempts;
        telemetry::failed(event, self.publisher.name(), err.kind());

        if give_up {
            let hold = self.config.dead_letter_policy == DeadLetterPolicy::Hold;
            if let Err(e) = self
                .store
                .dead_letter(self.id, event.id, &err.chain(), hold)
                .await
            {
                let (event_id, error) = (event.event_id, e.chain());
                tracing::warn!(%event_id, %error, "could not dead-letter");
                return (
                    false,
                    Some(Instant::now() + self.config.retry.delay(attempts)),
                );
            }
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            telemetry::dead_lettered(event, self.publisher.name());
            tracing::error!(
                event_id = %event.event_id,
                stream = %event.stream,
                attempt = attempts,
                error = %err.chain(),
                "dead-lettered event"
            );
            return (!hold, None);
        }

        let delay = self.config.retry.delay(attempts);
        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            event_id = %event.event_id,
            stream = %event.stream,
            attempt = attempts,
            retry_in_ms = delay.as_millis() as u64,
            error = %err.chain(),
            "publish failed; will retry"
        );
        if let Err(e) = self
            .store
            .fail(self.id, event.id, &err.chain(), delay)
            .await
        {
            let (event_id, error) = (event.event_id, e.chain());
            tracing::warn!(%event_id, %error, "could not record failure");
        }
        (false, Some(Instant::now() + delay))
    }

    /// Parks, then looks once more: an event committed between the empty claim
    /// and the park sent no wake-up, and is found here instead. Returns the
    /// batch when there is one (and unparks), `None` when it is time to wait.
    async fn claim_after_parking(
        &self,
        state: &LoopState,
        skip: &[(String, String)],
    ) -> Result<Option<Vec<Claimed>>> {
        self.store.park(self.id).await?;
        let claimed = self
            .store
            .claim(&state.partitions, skip, &[], self.config.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(None);
        }
        self.store.unpark(self.id).await?;
        Ok(Some(claimed))
    }

    /// Renews and rebalances the leases. Waits for in-flight deletes first, as
    /// partitions given up must have no work left behind.
    async fn maintain(&self, state: &mut LoopState) -> Result<()> {
        // The leases may change: a batch claimed under the old ones is dropped.
        state.prefetched = None;
        self.settle(state).await;
        let ttl = self.config.lease_ttl;
        let started = Instant::now();
        let partitions = self.store.maintain_leases(self.id, ttl).await?;

        if partitions != state.partitions {
            tracing::info!(relay_id = %self.id, partitions = partitions.len(), "leases changed");
        }
        telemetry::leases_held(self.publisher.name(), partitions.len());
        state.partitions = partitions;
        // A margin below the lease's length covers the time the renewal took
        // and clock rate differences between this host and the database.
        state.lease_deadline = started + ttl.mul_f64(0.8);
        state.next_maintenance = started + ttl / 3;
        Ok(())
    }

    /// Backs off after a batch that found the broker or the database down.
    fn pause(&self, state: &mut LoopState) {
        state.prefetched = None;
        state.outages = state.outages.saturating_add(1);
        let delay = self.config.outage_retry.delay(state.outages);
        let pause_ms = delay.as_millis() as u64;
        tracing::debug!(relay_id = %self.id, outages = state.outages, pause_ms, "pausing");
        state.paused_until = Some(Instant::now() + delay);
    }

    /// Waits for the delete in flight, if any.
    async fn settle(&self, state: &mut LoopState) {
        if let Some(task) = state.delete_task.take() {
            let _ = task.await;
        }
        state.deleting.clear();
    }

    /// Reclaims the space of deleted events in the background, unless a reclaim
    /// still runs or reclaiming is off. Returns whether one started.
    fn reclaim(&self, state: &mut LoopState) -> bool {
        if self.config.reclaim_every == 0 {
            return false;
        }
        if state
            .reclaim_task
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return false;
        }
        let (store, id, deleted) = (self.store.clone(), self.id, state.unreclaimed);
        state.unreclaimed = 0;
        state.reclaim_task = Some(tokio::spawn(async move {
            let started = Instant::now();
            match store.reclaim().await {
                Ok(()) => tracing::debug!(
                    relay_id = %id,
                    deleted,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reclaimed the space of published events"
                ),
                Err(err) => tracing::warn!(
                    relay_id = %id,
                    error = %err.chain(),
                    "could not reclaim the space of published events"
                ),
            }
        }));
        true
    }

    /// Deletes kept events published longer than `keep` ago, in the
    /// background and in batches, unless a prune still runs. Reclaims the
    /// log's space after every [`RelayConfig::reclaim_every`] deleted events,
    /// and when a prune leaves it empty, so that it can shrink.
    fn prune(&self, state: &mut LoopState, keep: Duration) {
        if state.prune_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (store, id, total) = (self.store.clone(), self.id, state.pruned.clone());
        let reclaim_every = self.config.reclaim_every;
        state.prune_task = Some(tokio::spawn(async move {
            let mut pruned = 0;
            loop {
                match store.prune_kept(keep, PRUNE_BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(PRUNE_BATCH) {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(
                            relay_id = %id,
                            error = %err.chain(),
                            "could not delete expired published events"
                        );
                        break;
                    }
                }
            }
            if pruned == 0 || reclaim_every == 0 {
                return;
            }
            tracing::debug!(relay_id = %id, pruned, "deleted expired published events");
            let unreclaimed = total.fetch_add(pruned, Ordering::Relaxed) + pruned;
            let due = unreclaimed >= reclaim_every
                || (unreclaimed >= IDLE_RECLAIM_MIN && store.log_is_empty().await.unwrap_or(false));
            if due {
                total.store(0, Ordering::Relaxed);
                if let Err(err) = store.reclaim().await {
                    tracing::warn!(
                        relay_id = %id,
                        error = %err.chain(),
                        "could not reclaim the space of expired published events"
                    );
                }
            }
        }));
    }

    /// Deletes acknowledged events in the background, after the previous
    /// delete finished; the next claim runs meanwhile and skips these ids.
    async fn start_delete(&self, state: &mut LoopState, done: Vec<i64>) {
        self.settle(state).await;
        if done.is_empty() {
            return;
        }
        state.deleting.extend(done.iter().copied());
        state.unreclaimed += done.len() as u64;
        state.drained += done.len() as u64;
        if self.config.reclaim_every > 0 && state.unreclaimed >= self.config.reclaim_every {
            self.reclaim(state);
        }
        let (store, id) = (self.store.clone(), self.id);
        let keep = self.config.keep_published.is_some();
        state.delete_task = Some(tokio::spawn(async move {
            match store.complete(id, &done, keep).await {
                Ok(n) if n < done.len() as u64 => tracing::warn!(
                    relay_id = %id,
                    expected = done.len(),
                    deleted = n,
                    "some published events were under a lost lease; another relay sends them again"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    relay_id = %id,
                    error = %err.chain(),
                    "could not mark events done; they will be published again"
                ),
            }
        }));
    }
}

/// Publishes `event`, counting no acknowledgement within `limit` as the broker
/// being unavailable.
pub(crate) async fn publish_within<P: Publisher>(
    publisher: &P,
    event: &Event,
    limit: Duration,
) -> Result<()> {
    tokio::time::timeout(limit, publisher.publish(event))
        .await
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Unavailable, "publish timed out")))
}

/// Splits a batch into keys, keeping each key's events in batch order.
pub(crate) fn group_by_key<T>(
    items: Vec<T>,
    event: impl Fn(&T) -> &Event,
) -> Vec<((String, String), Vec<T>)> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut runs: Vec<((String, String), Vec<T>)> = Vec::new();
    for item in items {
        let e = event(&item);
        let key = (e.stream.clone(), e.key.clone());
        match index.get(&key) {
            Some(&i) => runs[i].1.push(item),
            None => {
                index.insert(key.clone(), runs.len());
                runs.push((key, vec![item]));
            }
        }
    }
    runs
}

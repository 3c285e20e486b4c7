//! The inbox: a consumer's effect happens once, however often the broker delivers.
//!
//! A store's inbox ([`Inbox`]) runs the application's [`Handler`] inside a
//! database transaction that also records `(consumer, event_id)`; a second
//! delivery of the same event finds the record and is skipped. [`InboxRunner`]
//! reads a broker [`Consumer`], keeps each key on one task at a time so that a
//! key's events are handled in the order the broker delivered them, and
//! acknowledges a message only after its transaction committed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::consumer::BoxFuture;
use crate::{Consumer, Delivery, ErrorKind, ReceivedEvent, Result, RetryPolicy};

/// The application's effect of one event, run inside the inbox's transaction.
///
/// `conn` is the store's connection with the transaction open: every write made
/// through it commits or rolls back together with the inbox record. An error
/// rolls both back; [`ErrorKind::Permanent`] means the event can never be
/// handled and is rejected at once, any other kind is tried again.
///
/// ```
/// use outbox_core::{BoxFuture, ReceivedEvent, Result, inbox::Handler};
///
/// /// Counts events per type in a map standing in for a connection.
/// struct CountTypes;
///
/// impl Handler<std::collections::HashMap<String, u32>> for CountTypes {
///     fn handle<'a>(
///         &'a self,
///         conn: &'a mut std::collections::HashMap<String, u32>,
///         event: &'a ReceivedEvent,
///     ) -> BoxFuture<'a, Result<()>> {
///         Box::pin(async move {
///             *conn.entry(event.event_type.clone()).or_default() += 1;
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait Handler<C: ?Sized>: Send + Sync {
    /// Applies `event` through `conn`.
    fn handle<'a>(&'a self, conn: &'a mut C, event: &'a ReceivedEvent)
    -> BoxFuture<'a, Result<()>>;
}

/// A [`Handler`] made from a function, as [`handler_fn`] returns.
pub struct HandlerFn<F>(F);

/// Makes a [`Handler`] of a function that returns a boxed future.
///
/// ```
/// use outbox_core::inbox::{Handler, handler_fn};
///
/// let handler = handler_fn(|log: &mut Vec<String>, event| {
///     Box::pin(async move {
///         log.push(event.key.clone());
///         Ok(())
///     })
/// });
/// # fn is_handler<H: Handler<Vec<String>>>(_: &H) {}
/// # is_handler(&handler);
/// ```
pub fn handler_fn<C, F>(f: F) -> HandlerFn<F>
where
    C: ?Sized,
    F: for<'a> Fn(&'a mut C, &'a ReceivedEvent) -> BoxFuture<'a, Result<()>> + Send + Sync,
{
    HandlerFn(f)
}

impl<C, F> Handler<C> for HandlerFn<F>
where
    C: ?Sized,
    F: for<'a> Fn(&'a mut C, &'a ReceivedEvent) -> BoxFuture<'a, Result<()>> + Send + Sync,
{
    fn handle<'a>(
        &'a self,
        conn: &'a mut C,
        event: &'a ReceivedEvent,
    ) -> BoxFuture<'a, Result<()>> {
        (self.0)(conn, event)
    }
}

/// What the inbox did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The handler ran and its transaction committed with the inbox record.
    Applied,
    /// The event was recorded before; the handler did not run.
    Duplicate,
}

/// A store's inbox for one consumer: records event ids and runs the handler in
/// the same transaction.
pub trait Inbox: Send + Sync + 'static {
    /// Runs the handler for `event` unless the consumer has recorded it already.
    ///
    /// On `Ok` the transaction has committed (or the event was a duplicate), so
    /// the broker message may be acknowledged. On an error nothing of the
    /// handler's remains and the event is not recorded.
    fn process(&self, event: &ReceivedEvent) -> impl Future<Output = Result<Processed>> + Send;

    /// Deletes this consumer's records older than `age`, in bounded batches, and
    /// returns how many went.
    fn prune(&self, age: Duration) -> impl Future<Output = Result<u64>> + Send;
}

/// Checks a consumer name against the inbox tables' rule: 1 to 200 characters.
///
/// The name separates the records of consumers that share a database, so that
/// each of them applies every event once. Anything else is
/// [`ErrorKind::Config`].
pub fn check_consumer(consumer: &str) -> Result<()> {
    if consumer.is_empty() || consumer.chars().count() > 200 {
        return Err(crate::Error::config(format!(
            "consumer name {consumer:?} must be 1 to 200 characters"
        )));
    }
    Ok(())
}

/// Settings of an [`InboxRunner`].
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// How many deliveries may be received and not yet settled, across all keys.
    /// Keep it at or below the broker's own prefetch or in-flight limit.
    pub max_unsettled: usize,
    /// How many tries a handler gets before the message is rejected; `None`
    /// retries until shutdown, holding the key.
    pub max_attempts: Option<u32>,
    /// The pause between tries of one event.
    pub retry: RetryPolicy,
    /// How long recorded ids are kept. It must exceed the longest time after
    /// which the broker may still deliver a message again (a JetStream
    /// deduplication window and ack wait, a Kafka group's retention of
    /// uncommitted offsets, a RabbitMQ queue's message TTL).
    pub retention: Duration,
    /// How often old records are pruned.
    pub prune_interval: Duration,
    /// How long a shutdown waits for handlers already running.
    pub shutdown_grace: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            max_unsettled: 256,
            max_attempts: Some(10),
            retry: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What an [`InboxRunner`] did, counted when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Events whose handler committed.
    pub applied: u64,
    /// Deliveries recognised as already handled.
    pub duplicates: u64,
    /// Handler runs that failed and were rolled back.
    pub failures: u64,
    /// Messages rejected: malformed, refused for good, or out of attempts.
    pub rejected: u64,
    /// Acknowledgements the broker did not take; those messages come again.
    pub ack_failures: u64,
}

/// Reads a [`Consumer`] and applies each delivery through an [`Inbox`].
///
/// Deliveries of one key are handled one after the other, in the order received;
/// different keys run concurrently, up to [`InboxConfig::max_unsettled`]
/// deliveries at a time. A message is acknowledged only after the inbox
/// committed it, so a crash between the commit and the acknowledgement leads to a
/// redelivery that the inbox recognises as a duplicate.
pub struct InboxRunner<C, I> {
    consumer: C,
    inbox: Arc<I>,
    config: InboxConfig,
}

impl<C, I> InboxRunner<C, I>
where
    C: Consumer + 'static,
    I: Inbox,
{
    /// A runner with the default [`InboxConfig`].
    pub fn new(consumer: C, inbox: I) -> Self {
        InboxRunner {
            consumer,
            inbox: Arc::new(inbox),
            config: InboxConfig::default(),
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: InboxConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs until `shutdown` resolves or the consumer ends, then waits up to
    /// the grace period for the handlers already running.
    ///
    /// Deliveries received but not yet started are dropped unsettled at shutdown,
    /// so the broker delivers them again. The runner fails only when the consumer
    /// returns an error that is not retryable.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<InboxStats> {
        let InboxRunner {
            consumer,
            inbox,
            config,
        } = self;
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_unsettled.max(1)));
        let (tx, mut rx) = mpsc::channel(config.max_unsettled.max(1));
        let reader = tokio::spawn(read(consumer, permits, tx));
        let pruner = tokio::spawn(prune(inbox.clone(), config.clone()));

        let mut keys: HashMap<String, VecDeque<Pending>> = HashMap::new();
        let mut tasks: JoinSet<(Option<String>, Outcome)> = JoinSet::new();
        let mut stats = InboxStats::default();
        let mut reader_result = Ok(());
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let (key, outcome) = joined.expect("an inbox task panicked");
                    outcome.count(&mut stats);
                    if let Some(key) = key {
                        start_next(&mut keys, &mut tasks, key, &inbox, &config);
                    }
                }
                received = rx.recv() => match received {
                    Some(Ok(pending)) => {
                        dispatch(pending, &mut keys, &mut tasks, &inbox, &config);
                    }
                    Some(Err(err)) => {
                        reader_result = Err(err);
                        break;
                    }
                    None => {
                        while let Some(joined) = tasks.join_next().await {
                            let (key, outcome) = joined.expect("an inbox task panicked");
                            outcome.count(&mut stats);
                            if let Some(key) = key {
                                start_next(&mut keys, &mut tasks, key, &inbox, &config);
                            }
                        }
                        break;
                    }
                },
            }
        }

        reader.abort();
        pruner.abort();
        drop(keys);
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while let Some(joined) = tasks.join_next().await {
                let (_, outcome) = joined.expect("an inbox task panicked");
                outcome.count(&mut stats);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "inbox handlers still running at the end of the grace period"
            );
            tasks.abort_all();
        }
        tracing::info!(
            applied = stats.applied,
            duplicates = stats.duplicates,
            rejected = stats.rejected,
            "inbox stopped"
        );
        reader_result.map(|()| stats)
    }
}

/// A delivery and the permit that counts it as unsettled.
struct Pending {
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
}

/// Reads the consumer into the channel, waiting for a permit before each read
/// so that no more than the configured number of deliveries is unsettled.
async fn read<C: Consumer>(
    mut consumer: C,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Result<Pending>>,
) {
    let mut outage = 0u32;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let delivery = loop {
            match consumer.next().await {
                Ok(delivery) => break delivery,
                Err(err) if err.is_retryable() => {
                    outage += 1;
                    let pause = Duration::from_millis(200 * u64::from(outage.min(25)));
                    tracing::warn!(
                        consumer = consumer.name(),
                        error = %err.chain(),
                        pause_ms = pause.as_millis() as u64,
                        "broker unavailable, reading again later"
                    );
                    tokio::time::sleep(pause).await;
                }
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        };
        outage = 0;

        let Some(delivery) = delivery else {
            return;
        };
        let pending = Pending {
            delivery,
            _permit: permit,
        };
        if tx.send(Ok(pending)).await.is_err() {
            return;
        }
    }
}

/// Queues `pending` behind its key, or starts it when the key is idle.
fn dispatch<I: Inbox>(
    pending: Pending,
    keys: &mut HashMap<String, VecDeque<Pending>>,
    tasks: &mut JoinSet<(Option<String>, Outcome)>,
    inbox: &Arc<I>,
    config: &Arc<InboxConfig>,
) {
    let key = match pending.delivery.event() {
        Ok(event) => event.key.clone(),
        Err(_) => {
            tasks.spawn(settle(pending, None, inbox.clone(), config.clone()));
            return;
        }
    };
    match keys.get_mut(&key) {
        Some(queue) => queue.push_back(pending),
        None => {
            keys.insert(key.clone(), VecDeque::new());
            tasks.spawn(settle(pending, Some(key), inbox.clone(), config.clone()));
        }
    }
}

/// Starts the next delivery queued behind `key`, or marks the key idle.
fn start_next<I: Inbox>(
    keys: &mut HashMap<String, VecDeque<Pending>>,
    tasks: &mut JoinSet<(Option<String>, Outcome)>,
    key: String,
    inbox: &Arc<I>,
    config: &Arc<InboxConfig>,
) {
    let Some(queue) = keys.get_mut(&key) else {
        return;
    };
    match queue.pop_front() {
        Some(next) => {
            tasks.spawn(settle(next, Some(key), inbox.clone(), config.clone()));
        }
        None => {
            keys.remove(&key);
        }
    }
}

/// How one delivery ended.
#[derive(Debug, Default)]
struct Outcome {
    processed: Option<Processed>,
    failures: u64,
    rejected: bool,
    ack_failed: bool,
}

impl Outcome {
    fn count(&self, stats: &mut InboxStats) {
        match self.processed {
            Some(Processed::Applied) => stats.applied += 1,
            Some(Processed::Duplicate) => stats.duplicates += 1,
            None => {}
        }
        stats.failures += self.failures;
        stats.rejected += u64::from(self.rejected);
        stats.ack_failures += u64::from(self.ack_failed);
    }
}

/// Processes one delivery through the inbox, retrying as configured, and
/// settles the broker message.
async fn settle<I: Inbox>(
    pending: Pending,
    key: Option<String>,
    inbox: Arc<I>,
    config: Arc<InboxConfig>,
) -> (Option<String>, Outcome) {
    let mut outcome = Outcome::default();
    let Pending { delivery, _permit } = pending;

    let event = match delivery.event() {
        Ok(event) => event.clone(),
        Err(err) => {
            tracing::error!(error = %err.chain(), "rejecting a malformed message");
            outcome.rejected = true;
            if let Err(err) = delivery.reject().await {
                tracing::warn!(error = %err.chain(), "broker did not take a rejection");
            }
            return (key, outcome);
        }
    };

    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match inbox.process(&event).await {
            Ok(processed) => {
                outcome.processed = Some(processed);
                if let Err(err) = delivery.ack().await {
                    outcome.ack_failed = true;
                    tracing::warn!(
                        event_id = %event.event_id,
                        error = %err.chain(),
                        "acknowledgement failed, the broker will deliver again"
                    );
                }
                return (key, outcome);
            }
            Err(err) => {
                outcome.failures += 1;
                let out_of_attempts = config.max_attempts.is_some_and(|max| attempt >= max);
                if err.kind() == ErrorKind::Permanent || out_of_attempts {
                    tracing::error!(
                        event_id = %event.event_id,
                        stream = event.stream.as_deref().unwrap_or(""),
                        attempt,
                        error = %err.chain(),
                        "handler gave up, rejecting the message"
                    );
                    outcome.rejected = true;
                    if let Err(err) = delivery.reject().await {
                        tracing::warn!(error = %err.chain(), "broker did not take a rejection");
                    }
                    return (key, outcome);
                }
                let pause = config.retry.delay(attempt);
                tracing::warn!(
                    event_id = %event.event_id,
                    attempt,
                    retry_in_ms = pause.as_millis() as u64,
                    error = %err.chain(),
                    "handler failed, trying again"
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Prunes old records every interval, for as long as the runner runs.
async fn prune<I: Inbox>(inbox: Arc<I>, config: Arc<InboxConfig>) {
    let mut tick = tokio::time::interval(config.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inbox.prune(config.retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned inbox records"),
            Err(err) => tracing::warn!(error = %err.chain(), "pruning the inbox failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Acknowledge, Error, EventId, Headers, Payload};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An in-memory broker queue: deliveries in order, acks and rejections noted.
    struct Queue {
        items: VecDeque<Delivery>,
    }

    #[derive(Default)]
    struct Settled {
        acked: Mutex<Vec<EventId>>,
        rejected: Mutex<u32>,
    }

    struct Ack {
        id: Option<EventId>,
        settled: Arc<Settled>,
    }

    impl Acknowledge for Ack {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
            Box::pin(async move {
                self.settled.acked.lock().unwrap().push(self.id.unwrap());
                Ok(())
            })
        }
        fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
            Box::pin(async move {
                *self.settled.rejected.lock().unwrap() += 1;
                Ok(())
            })
        }
    }

    impl Consumer for Queue {
        fn name(&self) -> &'static str {
            "memory"
        }
        async fn next(&mut self) -> Result<Option<Delivery>> {
            Ok(self.items.pop_front())
        }
    }

    fn received(key: &str, seq: i64) -> ReceivedEvent {
        ReceivedEvent {
            event_id: EventId::new(),
            stream: Some("orders".into()),
            key: key.into(),
            seq: Some(seq),
            event_type: "order.placed".into(),
            source: "/test".into(),
            time: None,
            payload: Payload::bytes("application/json", "{}"),
            headers: Headers::new(),
        }
    }

    /// Records what it handled; fails the first `fail_first` tries of each
    /// event, and every try of key `poison`.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, i64)>>,
        done: Mutex<Vec<EventId>>,
        running: Mutex<Vec<String>>,
        overlaps: AtomicU32,
        tries: Mutex<HashMap<EventId, u32>>,
        fail_first: u32,
    }

    impl Inbox for Recorder {
        async fn process(&self, event: &ReceivedEvent) -> Result<Processed> {
            if self.done.lock().unwrap().contains(&event.event_id) {
                return Ok(Processed::Duplicate);
            }
            {
                let mut running = self.running.lock().unwrap();
                if running.contains(&event.key) {
                    self.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                running.push(event.key.clone());
            }
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
            self.running.lock().unwrap().retain(|k| k != &event.key);

            if event.key == "poison" {
                return Err(Error::new(ErrorKind::Transient, "poison"));
            }
            let tries = {
                let mut tries = self.tries.lock().unwrap();
                let n = tries.entry(event.event_id).or_default();
                *n += 1;
                *n
            };
            if tries <= self.fail_first {
                return Err(Error::new(ErrorKind::Transient, "not yet"));
            }
            self.seen
                .lock()
                .unwrap()
                .push((event.key.clone(), event.seq.unwrap()));
            self.done.lock().unwrap().push(event.event_id);
            Ok(Processed::Applied)
        }

        async fn prune(&self, _age: Duration) -> Result<u64> {
            Ok(0)
        }
    }

    fn quick() -> InboxConfig {
        InboxConfig {
            max_unsettled: 16,
            retry: RetryPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
                multiplier: 2.0,
            },
            ..InboxConfig::default()
        }
    }

    fn queue(events: Vec<ReceivedEvent>, settled: &Arc<Settled>) -> Queue {
        let items = events
            .into_iter()
            .map(|event| {
                let ack = Ack {
                    id: Some(event.event_id),
                    settled: settled.clone(),
                };
                Delivery::new(event, ack)
            })
            .collect();
        Queue { items }
    }

    #[tokio::test]
    async fn keys_run_in_order_and_never_overlap() {
        let mut events = Vec::new();
        for seq in 1..=20 {
            for key in ["a", "b", "c", "d"] {
                events.push(received(key, seq));
            }
        }
        let duplicate = events[5].clone();
        events.push(duplicate);
        let settled = Arc::new(Settled::default());
        let inbox = Recorder {
            fail_first: 1,
            ..Recorder::default()
        };

        let runner = InboxRunner::new(queue(events, &settled), inbox).with_config(quick());
        let inbox = runner.inbox.clone();
        let stats = runner.run(std::future::pending()).await.unwrap();

        assert_eq!(stats.applied, 80);
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.failures, 80);
        assert_eq!(settled.acked.lock().unwrap().len(), 81);
        assert_eq!(inbox.overlaps.load(Ordering::SeqCst), 0);
        let seen = inbox.seen.lock().unwrap();
        for key in ["a", "b", "c", "d"] {
            let seqs: Vec<i64> = seen
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "key {key}");
        }
    }

    #[tokio::test]
    async fn a_failing_key_is_rejected_after_its_attempts_and_others_go_on() {
        let settled = Arc::new(Settled::default());
        let events = vec![received("poison", 1), received("a", 1), received("a", 2)];
        let config = InboxConfig {
            max_attempts: Some(3),
            ..quick()
        };

        let stats = InboxRunner::new(queue(events, &settled), Recorder::default())
            .with_config(config)
            .run(std::future::pending())
            .await
            .unwrap();

        assert_eq!(stats.applied, 2);
        assert_eq!(stats.failures, 3);
        assert_eq!(stats.rejected, 1);
        assert_eq!(*settled.rejected.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_malformed_message_is_rejected() {
        let settled = Arc::new(Settled::default());
        let ack = Ack {
            id: None,
            settled: settled.clone(),
        };
        let consumer = Queue {
            items: [Delivery::malformed(
                Error::new(ErrorKind::Permanent, "no id"),
                ack,
            )]
            .into(),
        };

        let stats = InboxRunner::new(consumer, Recorder::default())
            .with_config(quick())
            .run(std::future::pending())
            .await
            .unwrap();

        assert_eq!(stats.rejected, 1);
        assert_eq!(*settled.rejected.lock().unwrap(), 1);
    }
}

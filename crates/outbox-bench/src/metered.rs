//! Counting wrappers around the relay's store and publisher, so a run can say
//! where the relay spent its time without changing the relay.
//!
//! [`MeteredStore`] and [`MeteredPublisher`] pass every call through and add
//! a few relaxed atomic updates, negligible next to a database or broker round
//! trip. The count of rows deleted through [`MeteredStore`] is also how the
//! drain knows, without polling the table, that the outbox is empty.
//!
//! [`MeteredStore`] can also try one change to the relay's claim from the
//! outside, for comparison only: leaving out of a claim the rows whose delete
//! is still in flight (see [`MeteredStore::skipping_deletes`]), and polling
//! instead of parking (see [`MeteredStore::polling_only`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outbox::{Claimed, Event, Publisher, RelayId, RelayStore, Result};
use serde_json::{Value, json};

/// One claim as the relay saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClaimSample {
    /// How long the claim took.
    pub took: Duration,
    /// Rows it returned.
    pub rows: usize,
}

/// Totals of the store calls a relay made.
#[derive(Debug)]
pub struct StoreMeter {
    claims: Mutex<Vec<ClaimSample>>,
    completes: AtomicU64,
    completed_rows: AtomicU64,
    complete_micros: AtomicU64,
    parks: AtomicU64,
    unparks: AtomicU64,
    waits: AtomicU64,
    lease_renewals: AtomicU64,
}

impl StoreMeter {
    fn new() -> Self {
        StoreMeter {
            claims: Mutex::new(Vec::new()),
            completes: AtomicU64::new(0),
            completed_rows: AtomicU64::new(0),
            complete_micros: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            unparks: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            lease_renewals: AtomicU64::new(0),
        }
    }

    /// Rows deleted as published so far.
    pub fn completed_rows(&self) -> u64 {
        self.completed_rows.load(Ordering::Acquire)
    }

    /// Every claim so far, in order.
    pub fn claims(&self) -> Vec<ClaimSample> {
        self.claims.lock().expect("claim log lock").clone()
    }

    /// The totals as JSON.
    pub fn to_json(&self) -> Value {
        let claims = self.claims();
        let rows: usize = claims.iter().map(|c| c.rows).sum();
        let empty = claims.iter().filter(|c| c.rows == 0).count();
        let claim_ms: f64 = claims.iter().map(|c| c.took.as_secs_f64() * 1e3).sum();
        let completes = self.completes.load(Ordering::Relaxed);
        let complete_ms = self.complete_micros.load(Ordering::Relaxed) as f64 / 1e3;
        json!({
            "claims": claims.len(),
            "empty_claims": empty,
            "claimed_rows": rows,
            "claim_ms_total": claim_ms.round(),
            "claim_ms_mean": round2(claim_ms / claims.len().max(1) as f64),
            "completes": completes,
            "completed_rows": self.completed_rows(),
            "complete_ms_total": complete_ms.round(),
            "complete_ms_mean": round2(complete_ms / completes.max(1) as f64),
            "parks": self.parks.load(Ordering::Relaxed),
            "unparks": self.unparks.load(Ordering::Relaxed),
            "waits": self.waits.load(Ordering::Relaxed),
            "lease_renewals": self.lease_renewals.load(Ordering::Relaxed),
        })
    }
}

/// Rounds to two decimals, for figures in milliseconds.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A [`RelayStore`] that counts and times the calls to the store it wraps.
pub struct MeteredStore<S> {
    inner: S,
    meter: Arc<StoreMeter>,
    /// Whether parking is skipped and waiting is a plain sleep.
    polling: bool,
}

impl<S: RelayStore> MeteredStore<S> {
    /// Wraps `inner`; the meter is shared with the caller.
    pub fn new(inner: S) -> (Self, Arc<StoreMeter>) {
        let meter = Arc::new(StoreMeter::new());
        (
            MeteredStore {
                inner,
                meter: meter.clone(),
                polling: false,
            },
            meter,
        )
    }

    /// Makes the relay poll instead of waiting for a NOTIFY: parking does
    /// nothing, so writers never notify, and a wait is a sleep.
    pub fn polling_only(mut self) -> Self {
        self.polling = true;
        self
    }
}

impl<S: RelayStore> RelayStore for MeteredStore<S> {
    fn partition_count(&self) -> u16 {
        self.inner.partition_count()
    }

    async fn maintain_leases(&self, relay: RelayId, ttl: Duration) -> Result<Vec<i16>> {
        self.meter.lease_renewals.fetch_add(1, Ordering::Relaxed);
        self.inner.maintain_leases(relay, ttl).await
    }

    async fn release_leases(&self, relay: RelayId) -> Result<()> {
        self.inner.release_leases(relay).await
    }

    async fn claim(
        &self,
        partitions: &[i16],
        skip_keys: &[(String, String)],
        skip_ids: &[i64],
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        let started = Instant::now();
        let claimed = self
            .inner
            .claim(partitions, skip_keys, skip_ids, limit)
            .await?;
        let sample = ClaimSample {
            took: started.elapsed(),
            rows: claimed.len(),
        };
        self.meter
            .claims
            .lock()
            .expect("claim log lock")
            .push(sample);
        Ok(claimed)
    }

    async fn complete(&self, relay: RelayId, ids: &[i64], keep: bool) -> Result<u64> {
        let started = Instant::now();
        let deleted = self.inner.complete(relay, ids, keep).await?;
        let micros = started.elapsed().as_micros() as u64;
        self.meter.completes.fetch_add(1, Ordering::Relaxed);
        self.meter
            .complete_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.meter
            .completed_rows
            .fetch_add(deleted, Ordering::Release);
        Ok(deleted)
    }

    async fn prune_kept(&self, older_than: Duration, limit: u32) -> Result<u64> {
        self.inner.prune_kept(older_than, limit).await
    }

    async fn log_is_empty(&self) -> Result<bool> {
        self.inner.log_is_empty().await
    }

    async fn fail(&self, relay: RelayId, id: i64, error: &str, retry_in: Duration) -> Result<()> {
        self.inner.fail(relay, id, error, retry_in).await
    }

    async fn dead_letter(&self, relay: RelayId, id: i64, error: &str, hold: bool) -> Result<()> {
        self.inner.dead_letter(relay, id, error, hold).await
    }

    async fn park(&self, relay: RelayId) -> Result<()> {
        self.meter.parks.fetch_add(1, Ordering::Relaxed);
        if self.polling {
            return Ok(());
        }
        self.inner.park(relay).await
    }

    async fn unpark(&self, relay: RelayId) -> Result<()> {
        self.meter.unparks.fetch_add(1, Ordering::Relaxed);
        if self.polling {
            return Ok(());
        }
        self.inner.unpark(relay).await
    }

    async fn reclaim(&self) -> Result<()> {
        self.inner.reclaim().await
    }

    async fn wait_for_events(&self, relay: RelayId, timeout: Duration) -> Result<()> {
        self.meter.waits.fetch_add(1, Ordering::Relaxed);
        if self.polling {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        self.inner.wait_for_events(relay, timeout).await
    }
}

/// Totals of the publishes a relay made.
#[derive(Debug, Default)]
pub struct PublishMeter {
    publishes: AtomicU64,
    failures: AtomicU64,
    micros: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl PublishMeter {
    /// The totals as JSON.
    pub fn to_json(&self) -> Value {
        let n = self.publishes.load(Ordering::Relaxed);
        let ms = self.micros.load(Ordering::Relaxed) as f64 / 1e3;
        json!({
            "publishes": n,
            "failures": self.failures.load(Ordering::Relaxed),
            "publish_ms_mean": round2(ms / n.max(1) as f64),
            "peak_in_flight": self.peak_in_flight.load(Ordering::Relaxed),
        })
    }
}

/// A [`Publisher`] that counts, times and tracks the concurrency of the
/// publishes of the publisher it wraps.
pub struct MeteredPublisher<P> {
    inner: P,
    meter: Arc<PublishMeter>,
}

impl<P: Publisher> MeteredPublisher<P> {
    /// Wraps `inner`; the meter is shared with the caller.
    pub fn new(inner: P) -> (Self, Arc<PublishMeter>) {
        let meter = Arc::new(PublishMeter::default());
        (
            MeteredPublisher {
                inner,
                meter: meter.clone(),
            },
            meter,
        )
    }
}

impl<P: Publisher> Publisher for MeteredPublisher<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let now = self.meter.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.meter.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let started = Instant::now();

        let published = self.inner.publish(event).await;

        self.meter.in_flight.fetch_sub(1, Ordering::Relaxed);
        let micros = started.elapsed().as_micros() as u64;
        self.meter.micros.fetch_add(micros, Ordering::Relaxed);
        match &published {
            Ok(()) => self.meter.publishes.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.meter.failures.fetch_add(1, Ordering::Relaxed),
        };
        published
    }
}

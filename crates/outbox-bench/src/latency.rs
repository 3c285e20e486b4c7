//! Steady state: writers commit events at a fixed rate, one per transaction,
//! and an independent consumer notes when each one reaches JetStream.
//!
//! Nothing here trusts the relay. The writers note the time just after each
//! `COMMIT` returns; the consumer, on its own connection and thread, notes the
//! time each message is delivered to it; both use the process's monotonic
//! clock. Arrival minus commit includes the relay's wake-up, claim and
//! publish, the PubAck, and the broker's delivery to the consumer, so it is an
//! upper bound on commit-to-PubAck.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::postgres::PgStore;
use outbox::{NewEvent, RelayConfig};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::BenchResult;
use crate::consumer::ArrivalRecorder;
use crate::fixture::{Experiments, Fixture, Services};
use crate::metered::round2;
use crate::probe::CpuSnapshot;
use crate::stats::Percentiles;

/// The load of the steady-state run.
#[derive(Debug, Clone)]
pub struct LatencyParams {
    /// Commits per second, one event each.
    pub rate: u32,
    /// How long latencies are recorded.
    pub duration: Duration,
    /// How long the load runs before recording starts.
    pub warmup: Duration,
    /// Concurrent writer connections; one alone cannot commit 1,000 times a
    /// second when each commit waits for a WAL flush.
    pub writers: usize,
    /// Keys, split evenly among the writers so no two writers share one.
    pub keys: u64,
}

/// What the writers did.
struct WriterLog {
    /// Event id, when its transaction began, when its COMMIT returned.
    commits: Vec<(Uuid, Instant, Instant)>,
    errors: u64,
    window: (Instant, Instant),
}

/// Runs the load, collects arrivals; prints the summary and returns the record.
pub async fn run(
    services: &Services,
    params: &LatencyParams,
    config: &RelayConfig,
    experiments: Experiments,
) -> BenchResult<Value> {
    let fixture = Fixture::create(services).await?;
    let result = measure(&fixture, params, config, experiments).await;
    fixture.remove().await;
    result
}

async fn measure(
    fixture: &Fixture,
    params: &LatencyParams,
    config: &RelayConfig,
    experiments: Experiments,
) -> BenchResult<Value> {
    let recorder = ArrivalRecorder::start(&fixture.services.nats_url, &fixture.jetstream_stream)?;
    let relay = fixture.start_relay(config.clone(), experiments).await?;
    let store = fixture.store(params.writers as u32).await?;
    eprintln!(
        "latency: {} commits/s from {} writers, {} s warm-up, {} s measured",
        params.rate,
        params.writers,
        params.warmup.as_secs(),
        params.duration.as_secs()
    );

    let writer = {
        let (params, stream) = (params.clone(), fixture.outbox_stream.clone());
        std::thread::spawn(move || -> BenchResult<WriterLog> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(write(store, stream, params))
        })
    };

    tokio::time::sleep(params.warmup).await;
    let cpu_start = CpuSnapshot::take();
    tokio::time::sleep(params.duration).await;
    let cpu = cpu_start.until(&CpuSnapshot::take());
    let log = tokio::task::spawn_blocking(move || writer.join())
        .await?
        .map_err(|_| "the writer thread panicked")??;

    // Give the last commits time to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.seen() < log.commits.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals: HashMap<Uuid, Instant> = recorder.finish()?.into_iter().collect();
    let relay_json = json!({
        "published": relay.stats.published.load(std::sync::atomic::Ordering::Relaxed),
        "batches": relay.stats.batches.load(std::sync::atomic::Ordering::Relaxed),
    });
    let store_json = relay.store.to_json();
    let publisher_json = relay.publisher.to_json();
    relay.stop().await?;

    let (from, to) = log.window;
    let mut latencies = Vec::new();
    let mut tx_times = Vec::new();
    let mut missing = 0u64;
    let mut early = 0u64;
    let mut measured = 0u64;
    for (id, begun, committed) in &log.commits {
        if *committed < from || *committed >= to {
            continue;
        }
        measured += 1;
        tx_times.push(*committed - *begun);
        match arrivals.get(id) {
            Some(arrived) if arrived < committed => {
                // The relay read the row before COMMIT's reply reached the writer.
                early += 1;
                latencies.push(Duration::ZERO);
            }
            Some(arrived) => latencies.push(*arrived - *committed),
            None => missing += 1,
        }
    }
    let latency = Percentiles::of(&latencies);
    let tx = Percentiles::of(&tx_times);
    let achieved = measured as f64 / (to - from).as_secs_f64();

    println!(
        "latency  batch_size {:>5}  concurrency {:>4}: {:.0} commits/s achieved (asked {})",
        config.batch_size, config.concurrency, achieved, params.rate
    );
    println!("       commit→arrival {}", latency.line());
    println!("       writer transaction {}", tx.line());
    println!(
        "       missing {missing}, arrived before the writer saw COMMIT return {early}, \
         writer errors {}",
        log.errors
    );
    println!("       {}", cpu.line());

    if missing > 0 {
        return Err(format!("{missing} committed events never reached the consumer").into());
    }
    Ok(json!({
        "measurement": "latency",
        "batch_size": config.batch_size,
        "concurrency": config.concurrency,
        "rate_asked": params.rate,
        "rate_achieved": achieved.round(),
        "writers": params.writers,
        "keys": params.keys,
        "warmup_s": params.warmup.as_secs(),
        "duration_s": params.duration.as_secs(),
        "commit_to_arrival": latency.to_json(),
        "writer_transaction": tx.to_json(),
        "missing": missing,
        "arrived_before_commit_returned": early,
        "writer_errors": log.errors,
        "cpu": cpu.to_json(),
        "relay": relay_json,
        "events_per_batch": round2(
            relay_json["published"].as_f64().unwrap_or(0.0)
                / relay_json["batches"].as_f64().unwrap_or(1.0).max(1.0)
        ),
        "store": store_json,
        "publisher": publisher_json,
    }))
}

/// Commits `params.rate` events a second for the warm-up and the measured
/// window, on the calling thread's runtime.
async fn write(store: PgStore, stream: String, params: LatencyParams) -> BenchResult<WriterLog> {
    let tickets = Arc::new(Semaphore::new(0));
    let started = Instant::now();
    let window = (
        started + params.warmup,
        started + params.warmup + params.duration,
    );

    // One ticket per period; a writer held up by a slow commit leaves its
    // tickets to the others, and missed ticks are made up so the mean holds.
    let pacer = {
        let tickets = tickets.clone();
        let end = window.1;
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / f64::from(params.rate.max(1)));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < end {
                ticks.tick().await;
                tickets.add_permits(1);
            }
            tickets.close();
        })
    };

    let keys_each = (params.keys / params.writers as u64).max(1);
    let writers = (0..params.writers).map(|w| {
        let (store, stream, tickets) = (store.clone(), stream.clone(), tickets.clone());
        async move {
            let mut commits = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while let Ok(ticket) = tickets.acquire().await {
                ticket.forget();
                let key = format!("key-{w}-{}", n % keys_each);
                let event = NewEvent::json(&stream, key, "bench.committed", &json!({"n": n}))?;
                let id = event.event_id().as_uuid();
                let begun = Instant::now();
                match commit_one(&store, event).await {
                    Ok(()) => commits.push((id, begun, Instant::now())),
                    Err(err) => {
                        errors += 1;
                        eprintln!("latency: a writer's commit failed: {err}");
                    }
                }
                n += 1;
            }
            Ok::<_, outbox::Error>((commits, errors))
        }
    });
    let results = join_all(writers).await;
    pacer.await?;

    let mut log = WriterLog {
        commits: Vec::new(),
        errors: 0,
        window,
    };
    for result in results {
        let (commits, errors) = result?;
        log.commits.extend(commits);
        log.errors += errors;
    }
    Ok(log)
}

/// One transaction holding one event.
async fn commit_one(store: &PgStore, event: NewEvent) -> outbox::Result<()> {
    let mut tx = store
        .pool()
        .begin()
        .await
        .map_err(outbox::postgres::map_error)?;
    store.enqueue(&mut tx, &[event]).await?;
    tx.commit().await.map_err(outbox::postgres::map_error)
}

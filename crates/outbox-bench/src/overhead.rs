//! Write overhead: business transactions per second with and without an
//! outbox event in each, in alternating short phases of one run.
//!
//! Each transaction inserts one business row; in a "with" phase it also
//! enqueues one event through [`PgStore::enqueue`]. Alternating phases, in
//! the order without-with, with-without, … so that a slow drift of the disk
//! favours neither side, and comparing medians, keeps the noisy disk of a
//! small machine from deciding the result. A relay runs all along, parking
//! between "with" phases, so the writers' notify logic behaves as it does in
//! production.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::postgres::{PgStore, map_error};
use outbox::{NewEvent, RelayConfig};
use serde_json::{Value, json};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Postgres};

use crate::BenchResult;
use crate::fixture::{Experiments, Fixture, Services};
use crate::probe::CpuSnapshot;
use crate::stats::median;

/// The shape of the overhead run.
#[derive(Debug, Clone)]
pub struct OverheadParams {
    /// Pairs of phases measured, after one pair of warm-up.
    pub pairs: usize,
    /// Length of one phase.
    pub phase: Duration,
    /// Concurrent writer connections.
    pub writers: usize,
    /// Keys, split evenly among the writers.
    pub keys: u64,
}

/// Runs the phases; prints the summary and returns the record.
pub async fn run(
    services: &Services,
    params: &OverheadParams,
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
    params: &OverheadParams,
    config: &RelayConfig,
    experiments: Experiments,
) -> BenchResult<Value> {
    let q = fixture.q();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {q}.orders ( \
             id         bigserial   PRIMARY KEY, \
             customer   text        NOT NULL, \
             amount     bigint      NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())"
    )))
    .execute(&fixture.admin)
    .await?;

    let relay = match experiments.no_relay {
        true => None,
        false => Some(fixture.start_relay(config.clone(), experiments).await?),
    };
    let store = fixture.store(params.writers as u32).await?;
    eprintln!(
        "overhead: {} writers, {} + 1 warm-up pairs of {} s phases",
        params.writers,
        params.pairs,
        params.phase.as_secs_f64()
    );

    let cpu_start = CpuSnapshot::take();
    let phases = {
        let (params, stream, q) = (params.clone(), fixture.outbox_stream.clone(), q.clone());
        std::thread::spawn(move || -> BenchResult<Vec<Phase>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_phases(store, stream, q, params))
        })
    };
    let phases = tokio::task::spawn_blocking(move || phases.join())
        .await?
        .map_err(|_| "the writer thread panicked")??;
    let cpu = cpu_start.until(&CpuSnapshot::take());

    let (mut published, mut store_json) = (0, Value::Null);
    if let Some(relay) = relay {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fixture.pending_rows().await? > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        published = relay.stats.published.load(Ordering::Relaxed);
        store_json = relay.store.to_json();
        relay.stop().await?;
    }
    let pending = fixture.pending_rows().await?;

    let pick = |with_event: bool, f: fn(&Phase) -> f64| -> Vec<f64> {
        phases
            .iter()
            .filter(|p| p.with_event == with_event)
            .map(f)
            .collect()
    };
    let without = pick(false, |p| p.tx_per_s);
    let with = pick(true, |p| p.tx_per_s);
    let pg_cost = (
        median(&pick(false, |p| p.postgres_us)),
        median(&pick(true, |p| p.postgres_us)),
    );
    let bench_cost = (
        median(&pick(false, |p| p.bench_us)),
        median(&pick(true, |p| p.bench_us)),
    );
    let paired: Vec<f64> = phases
        .chunks(2)
        .map(|pair| {
            let w = pair
                .iter()
                .find(|p| p.with_event)
                .map_or(0.0, |p| p.tx_per_s);
            let wo = pair
                .iter()
                .find(|p| !p.with_event)
                .map_or(1.0, |p| p.tx_per_s);
            w / wo
        })
        .collect();
    let (m_without, m_with) = (median(&without), median(&with));
    let ratio = m_with / m_without;
    let paired_ratio = median(&paired);

    println!(
        "overhead  batch_size {:>5}  concurrency {:>4}: without {:.0} tx/s, with {:.0} tx/s \
         (medians of {} phases each)",
        config.batch_size,
        config.concurrency,
        m_without,
        m_with,
        without.len()
    );
    println!(
        "       ratio {:.3} → overhead {:.1} %; median of per-pair ratios {:.3} → {:.1} %",
        ratio,
        (1.0 - ratio) * 100.0,
        paired_ratio,
        (1.0 - paired_ratio) * 100.0
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("       without, per phase: {}", fmt(&without));
    println!("       with, per phase:    {}", fmt(&with));
    println!(
        "       cpu per transaction (medians): postgres {:.0} µs without, {:.0} µs with; \
         bench (writers and relay) {:.0} µs without, {:.0} µs with",
        pg_cost.0, pg_cost.1, bench_cost.0, bench_cost.1
    );
    println!("       relay published {published}, outbox holds {pending} rows afterwards");
    println!("       {}", cpu.line());

    Ok(json!({
        "measurement": "overhead",
        "batch_size": config.batch_size,
        "concurrency": config.concurrency,
        "writers": params.writers,
        "keys": params.keys,
        "phase_s": params.phase.as_secs_f64(),
        "pairs": params.pairs,
        "without_tx_per_s": m_without.round(),
        "with_tx_per_s": m_with.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "overhead_pct": ((1.0 - ratio) * 1000.0).round() / 10.0,
        "paired_ratio_median": (paired_ratio * 1000.0).round() / 1000.0,
        "paired_overhead_pct": ((1.0 - paired_ratio) * 1000.0).round() / 10.0,
        "without_phases": without.iter().map(|x| x.round()).collect::<Vec<_>>(),
        "with_phases": with.iter().map(|x| x.round()).collect::<Vec<_>>(),
        "postgres_us_per_tx": { "without": pg_cost.0.round(), "with": pg_cost.1.round() },
        "bench_us_per_tx": { "without": bench_cost.0.round(), "with": bench_cost.1.round() },
        "relay_published": published,
        "pending_after": pending,
        "cpu": cpu.to_json(),
        "store": store_json,
    }))
}

/// One measured phase.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Whether each transaction also enqueued an event.
    with_event: bool,
    /// Business transactions committed per second.
    tx_per_s: f64,
    /// PostgreSQL CPU per transaction, in µs.
    postgres_us: f64,
    /// This process's CPU (writers and relay) per transaction, in µs.
    bench_us: f64,
}

/// Runs the warm-up pair and the measured pairs; returns the measured phases
/// in order.
async fn run_phases(
    store: PgStore,
    stream: String,
    q: String,
    params: OverheadParams,
) -> BenchResult<Vec<Phase>> {
    let mut conns = Vec::with_capacity(params.writers);
    for _ in 0..params.writers {
        conns.push(store.pool().acquire().await?);
    }
    let insert = format!("INSERT INTO {q}.orders (customer, amount) VALUES ($1, $2)");
    let keys_each = (params.keys / params.writers as u64).max(1);

    let mut results = Vec::new();
    for pair in 0..=params.pairs {
        // Pair 0 warms up; the order flips every pair.
        let order = if pair.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        };
        for with_event in order {
            let deadline = Instant::now() + params.phase;
            let cpu_start = CpuSnapshot::take();
            let started = Instant::now();
            let counts = join_all(conns.iter_mut().enumerate().map(|(w, conn)| {
                let ctx = Writer {
                    store: &store,
                    stream: &stream,
                    insert: &insert,
                    prefix: format!("customer-{w}-"),
                    keys: keys_each,
                };
                ctx.run(conn, with_event, deadline)
            }))
            .await;
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = cpu_start.until(&CpuSnapshot::take());
            let mut total = 0u64;
            for count in counts {
                total += count?;
            }
            let per_tx = |pct: f64| pct / 100.0 * elapsed / total.max(1) as f64 * 1e6;
            if pair > 0 {
                results.push(Phase {
                    with_event,
                    tx_per_s: total as f64 / elapsed,
                    postgres_us: per_tx(cpu.postgres),
                    bench_us: per_tx(cpu.bench),
                });
            }
        }
    }
    Ok(results)
}

/// One writer's share of a phase.
struct Writer<'a> {
    store: &'a PgStore,
    stream: &'a str,
    insert: &'a str,
    prefix: String,
    keys: u64,
}

impl Writer<'_> {
    /// Commits business transactions until `deadline`; returns how many.
    async fn run(
        self,
        conn: &mut PoolConnection<Postgres>,
        with_event: bool,
        deadline: Instant,
    ) -> outbox::Result<u64> {
        let mut n = 0u64;
        while Instant::now() < deadline {
            let customer = format!("{}{}", self.prefix, n % self.keys);
            let mut tx = conn.begin().await.map_err(map_error)?;
            sqlx::query(AssertSqlSafe(self.insert.to_owned()))
                .bind(&customer)
                .bind(n as i64)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
            if with_event {
                let payload = json!({"customer": customer, "amount": n});
                let event = NewEvent::json(self.stream, customer, "order.placed", &payload)?;
                self.store.enqueue(&mut tx, &[event]).await?;
            }
            tx.commit().await.map_err(map_error)?;
            n += 1;
        }
        Ok(n)
    }
}

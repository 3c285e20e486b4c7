//! Backlog drain: a million events already in the outbox, one relay started,
//! and the time until the table is empty with every event acknowledged.
//!
//! The backlog is written by plain `INSERT … SELECT` through the outbox table,
//! so the table's trigger assigns positions, ids and partitions exactly as for
//! an application's writes; events go round-robin over the keys, as many keys
//! interleave in a busy outbox. The fill is timed separately and not counted.
//! Afterwards the stream's message count, and on request every key's order,
//! are checked from the broker's side.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::postgres::{PgOptions, PgStore};
use outbox::{RelayConfig, RelayStore};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::BenchResult;
use crate::consumer::check_order;
use crate::fixture::{Experiments, Fixture, Services};
use crate::metered::{ClaimSample, round2};
use crate::probe::{CpuSnapshot, RssSampler};
use crate::stats::median;

/// What to drain.
#[derive(Debug, Clone)]
pub struct DrainParams {
    /// Events in the backlog.
    pub events: u64,
    /// Keys they are spread over.
    pub keys: u64,
    /// Approximate size of each JSON payload.
    pub payload_bytes: usize,
    /// Whether to read the whole stream back and check every key's order.
    pub check_order: bool,
}

/// Rows per fill statement: large enough to amortise the round trip, small
/// enough that one statement's WAL does not force a checkpoint by itself.
const FILL_CHUNK: u64 = 50_000;

/// Fills, drains and checks; prints the summary and returns the JSON record.
pub async fn run(
    services: &Services,
    params: &DrainParams,
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
    params: &DrainParams,
    config: &RelayConfig,
    experiments: Experiments,
) -> BenchResult<Value> {
    eprintln!(
        "drain: filling {} events over {} keys into {}",
        params.events, params.keys, fixture.schema
    );
    let fill = fill(fixture, params).await?;
    let table_before = table_size(&fixture.admin, &fixture.q()).await?;
    let plan_full = explain_claim(fixture, config.batch_size).await?;
    let claim_cost = claim_cost(fixture, config.batch_size).await?;

    eprintln!(
        "drain: filled in {:.1} s; starting the relay (batch_size {}, concurrency {})",
        fill.as_secs_f64(),
        config.batch_size,
        config.concurrency
    );
    let sampler = RssSampler::start(Duration::from_millis(100));
    let cpu_start = CpuSnapshot::take();
    let started = Instant::now();
    let relay = fixture.start_relay(config.clone(), experiments).await?;

    // Generous: ten times slower than the slowest published relay measured here.
    let limit = Duration::from_secs(60 + params.events / 100);
    let mut next_report = Duration::from_secs(5);
    while relay.store.completed_rows() < params.events {
        let elapsed = started.elapsed();
        if elapsed > limit {
            relay.stop().await?;
            return Err(format!("the drain did not finish within {} s", limit.as_secs()).into());
        }
        if elapsed >= next_report {
            let done = relay.store.completed_rows();
            eprintln!(
                "drain: {done} done after {:.0} s ({:.0} events/s)",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64()
            );
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    let cpu = cpu_start.until(&CpuSnapshot::take());
    let rss = sampler.finish();

    let stats = json!({
        "published": relay.stats.published.load(std::sync::atomic::Ordering::Relaxed),
        "batches": relay.stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        "failed_attempts": relay.stats.failed_attempts.load(std::sync::atomic::Ordering::Relaxed),
    });
    // The relay reclaims the table's space once the backlog is gone; it must
    // still run for its VACUUM to finish.
    let table_after_drain = table_size(&fixture.admin, &fixture.q()).await?;
    let vacuum_wait = wait_for_vacuum(&fixture.admin, &fixture.q()).await?;
    let claims = relay.store.claims();
    let store = relay.store.to_json();
    let publisher = relay.publisher.to_json();
    relay.stop().await?;

    let pending = fixture.pending_rows().await?;
    let messages = stream_count(fixture, params.events).await?;
    let table_after = table_size(&fixture.admin, &fixture.q()).await?;
    let plan_drained = explain_claim(fixture, config.batch_size).await?;
    let order = if params.check_order {
        eprintln!("drain: reading the stream back to check every key's order");
        Some(
            check_order(
                &fixture.services.nats_url,
                &fixture.jetstream_stream,
                params.events,
            )
            .await?,
        )
    } else {
        None
    };

    let rate = params.events as f64 / took.as_secs_f64();
    let (early, late) = claim_trend(&claims);
    println!(
        "drain  batch_size {:>5}  concurrency {:>4}: {} events in {:.2} s = {:.0} events/s",
        config.batch_size,
        config.concurrency,
        params.events,
        took.as_secs_f64(),
        rate
    );
    println!(
        "       fill {:.1} s ({:.0} rows/s, not counted); rss start {:.1} MiB, peak {:.1} MiB, \
         end {:.1} MiB",
        fill.as_secs_f64(),
        params.events as f64 / fill.as_secs_f64(),
        rss.start_kib as f64 / 1024.0,
        rss.peak_kib as f64 / 1024.0,
        rss.end_kib as f64 / 1024.0
    );
    println!("       {}", cpu.line());
    let per_event = |pct: f64| pct / 100.0 * took.as_secs_f64() / params.events as f64 * 1e6;
    println!(
        "       cpu per event: postgres {:.1} µs, nats-server {:.1} µs, bench {:.1} µs",
        per_event(cpu.postgres),
        per_event(cpu.nats),
        per_event(cpu.bench)
    );
    println!(
        "       claim of {} rows before the drain: statement and fetch {} ms, \
         store claim with decoding {} ms",
        config.batch_size, claim_cost["fetch_ms"], claim_cost["store_claim_ms"]
    );
    println!(
        "       claims: first tenth {:.2} ms for {:.0} rows, last tenth {:.2} ms for {:.0} rows",
        early.0, early.1, late.0, late.1
    );
    println!(
        "       stream holds {messages} messages, outbox holds {pending} rows{}",
        match &order {
            Some(o) if o.ok(params.events) => format!("; all {} keys in order", o.keys),
            Some(o) => format!("; ORDER CHECK FAILED: {:?}", o),
            None => String::new(),
        }
    );

    if messages != params.events || pending != 0 {
        return Err(format!(
            "drain incomplete: stream holds {messages} of {} messages, {pending} rows pending",
            params.events
        )
        .into());
    }

    Ok(json!({
        "measurement": "drain",
        "batch_size": config.batch_size,
        "concurrency": config.concurrency,
        "keep_published_s": config.keep_published.map(|d| d.as_secs_f64()),
        "events": params.events,
        "keys": params.keys,
        "payload_bytes": params.payload_bytes,
        "fill_s": round2(fill.as_secs_f64()),
        "drain_s": round2(took.as_secs_f64()),
        "events_per_s": rate.round(),
        "rss": rss.to_json(),
        "cpu": cpu.to_json(),
        "cpu_us_per_event": {
            "postgres": round2(per_event(cpu.postgres)),
            "nats": round2(per_event(cpu.nats)),
            "bench": round2(per_event(cpu.bench)),
        },
        "stream_messages": messages,
        "pending_after": pending,
        "order_check": order.map(|o| o.to_json()),
        "relay": stats,
        "store": store,
        "publisher": publisher,
        "claim_first_tenth": { "ms_mean": round2(early.0), "rows_mean": early.1.round() },
        "claim_last_tenth": { "ms_mean": round2(late.0), "rows_mean": late.1.round() },
        "table_before": table_before,
        "table_after_drain": table_after_drain,
        "vacuum_wait_s": vacuum_wait,
        "table_after": table_after,
        "claim_cost": claim_cost,
        "explain_full_backlog": plan_full,
        "explain_drained_table": plan_drained,
    }))
}

/// Writes the backlog, then vacuums, analyses and checkpoints so the drain
/// starts from a settled table. Returns the time the inserts took.
///
/// Two connections fill at once, each owning half of the keys, so that
/// neither waits on the other's key locks; with an odd key count one does all.
async fn fill(fixture: &Fixture, params: &DrainParams) -> BenchResult<Duration> {
    let q = fixture.q();
    // `{"i":N,"pad":"xx…"}`: the fixed part is about 20 bytes.
    let pad = "x".repeat(params.payload_bytes.saturating_sub(20));
    let sql = format!(
        "INSERT INTO {q}.events (stream, key, event_type, payload) \
         SELECT $1, 'key-' || (g % $2), 'bench.filled', \
                convert_to('{{\"i\":' || g || ',\"pad\":\"' || $3 || '\"}}', 'UTF8') \
         FROM generate_series($4::bigint, $5::bigint) AS g \
         WHERE g % $6 = $7"
    );
    let fillers: i64 = if params.keys.is_multiple_of(2) { 2 } else { 1 };

    let started = Instant::now();
    let mut from = 0;
    while from < params.events {
        let to = (from + FILL_CHUNK).min(params.events) - 1;
        let inserts = (0..fillers).map(|part| {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(&fixture.outbox_stream)
                .bind(params.keys as i64)
                .bind(&pad)
                .bind(from as i64)
                .bind(to as i64)
                .bind(fillers)
                .bind(part)
                .execute(&fixture.admin)
        });
        for inserted in join_all(inserts).await {
            inserted?;
        }
        from = to + 1;
    }
    let took = started.elapsed();

    // Autovacuum may be off (it is on this project's CI machine): analyse by
    // hand so the planner knows the table, as autovacuum would after a fill.
    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM (ANALYZE) {q}.events")))
        .execute(&fixture.admin)
        .await?;
    sqlx::raw_sql("CHECKPOINT").execute(&fixture.admin).await?;
    Ok(took)
}

/// The stream's message count once it reaches `expected`, or after ten seconds.
async fn stream_count(fixture: &Fixture, expected: u64) -> BenchResult<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let messages = fixture.stream_messages().await?;
        if messages >= expected || Instant::now() > deadline {
            return Ok(messages);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mean duration (ms) and rows of the first and the last tenth of the claims
/// that returned rows: whether claims slow down as dead rows pile up.
fn claim_trend(claims: &[ClaimSample]) -> ((f64, f64), (f64, f64)) {
    let busy: Vec<&ClaimSample> = claims.iter().filter(|c| c.rows > 0).collect();
    let tenth = (busy.len() / 10).max(1).min(busy.len());
    let mean = |part: &[&ClaimSample]| {
        let n = part.len().max(1) as f64;
        let ms: f64 = part.iter().map(|c| c.took.as_secs_f64() * 1e3).sum();
        let rows: usize = part.iter().map(|c| c.rows).sum();
        (ms / n, rows as f64 / n)
    };
    (mean(&busy[..tenth]), mean(&busy[busy.len() - tenth..]))
}

/// Waits, up to a minute, for a VACUUM of the events table that the relay may
/// have started when the backlog drained; returns the seconds waited.
async fn wait_for_vacuum(pool: &PgPool, q: &str) -> BenchResult<f64> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let sql = format!(
        "SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid = '{q}.events'::regclass"
    );
    while started.elapsed() < Duration::from_secs(60) {
        let running: i64 = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
            .fetch_one(pool)
            .await?;
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Sizes of the events table and its primary key, in MiB.
async fn table_size(pool: &PgPool, q: &str) -> BenchResult<Value> {
    let sql = format!(
        "SELECT pg_relation_size('{q}.events') AS heap, \
                pg_relation_size('{q}.events_pkey') AS pkey, \
                s.n_live_tup, s.n_dead_tup, s.vacuum_count \
         FROM pg_stat_user_tables s WHERE s.relid = '{q}.events'::regclass"
    );
    let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(pool).await?;
    let mib = |b: i64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    Ok(json!({
        "heap_mib": mib(row.get("heap")),
        "pkey_mib": mib(row.get("pkey")),
        "live_rows": row.get::<i64, _>("n_live_tup"),
        "dead_rows": row.get::<i64, _>("n_dead_tup"),
        "vacuums": row.get::<i64, _>("vacuum_count"),
    }))
}

/// A store on the fixture's schema, through the admin pool.
fn admin_store(fixture: &Fixture) -> PgStore {
    PgStore::new(
        fixture.admin.clone(),
        PgOptions {
            schema: fixture.schema.clone(),
            ..PgOptions::default()
        },
    )
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the relay's claim for every partition and
/// no skipped keys, as one relay that holds all leases issues it.
async fn explain_claim(fixture: &Fixture, limit: usize) -> BenchResult<Vec<String>> {
    let store = admin_store(fixture);
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", store.claim_statement());
    let partitions: Vec<i16> = (0..256).collect();
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&partitions)
        .bind(Vec::<String>::new())
        .bind(Vec::<i64>::new())
        .bind(limit as i64)
        .fetch_all(&fixture.admin)
        .await?;

    // The plan spells out all 256 partitions; one range says the same.
    let all = format!(
        "'{{{}}}'",
        partitions
            .iter()
            .map(i16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(rows
        .iter()
        .map(|r| r.get::<String, _>(0).replace(&all, "'{0..255}'"))
        .collect())
}

/// Where a claim's time goes, on the full backlog: the statement alone with
/// its rows fetched but not decoded, then the store's claim, which also
/// decodes every row into an event. Medians of five tries each, in ms.
async fn claim_cost(fixture: &Fixture, limit: usize) -> BenchResult<Value> {
    let partitions: Vec<i16> = (0..256).collect();
    let store = admin_store(fixture);
    let sql = store.claim_statement().to_owned();

    let mut fetch = Vec::new();
    let mut claim = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(&partitions)
            .bind(Vec::<String>::new())
            .bind(Vec::<i64>::new())
            .bind(limit as i64)
            .fetch_all(&fixture.admin)
            .await?;
        fetch.push(started.elapsed().as_secs_f64() * 1e3);
        drop(rows);

        let started = Instant::now();
        let claimed = store.claim(&partitions, &[], &[], limit).await?;
        claim.push(started.elapsed().as_secs_f64() * 1e3);
        drop(claimed);
    }
    Ok(json!({
        "rows": limit,
        "fetch_ms": round2(median(&fetch)),
        "store_claim_ms": round2(median(&claim)),
    }))
}

//! `outbox-bench`: the relay against a real PostgreSQL and NATS JetStream,
//! in-process, measuring backlog drain, steady-state latency and the write
//! overhead of an event.
//!
//! Each measurement runs in a schema and a JetStream stream of its own, both
//! removed at the end. The binary prints a human summary as it goes and one
//! JSON line with every figure last. `BENCHMARKS.md` at the workspace root
//! describes the method and the results.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use outbox::RelayConfig;
use serde_json::{Value, json};
use sqlx::Row;

mod consumer;
mod drain;
mod fixture;
mod latency;
mod metered;
mod overhead;
mod probe;
mod stats;

use fixture::{Experiments, Services};

/// Errors of the benchmark: anything, reported with its chain.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Which measurement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Measurement {
    /// Backlog drain: events per second until a prefilled outbox is empty.
    Drain,
    /// Steady state: commit-to-arrival latency at a fixed commit rate.
    Latency,
    /// Business transactions per second with and without an event.
    Overhead,
    /// All three, in that order.
    All,
    /// Removes the `bench_*` schemas and `BENCH_*` streams that interrupted
    /// runs left behind, then exits.
    Cleanup,
}

/// A change to the relay's wiring, tried for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Experiment {
    /// The relay's connections commit with `synchronous_commit = off`.
    AsyncCommit,
    /// The relay polls and never parks, so writers never send NOTIFY.
    NoNotify,
    /// Overhead only: no relay runs.
    NoRelay,
}

/// Benchmark of the outbox relay against PostgreSQL and NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "outbox-bench", version)]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    measurement: Measurement,

    /// The PostgreSQL database; a private schema is made in it and dropped.
    #[arg(
        long,
        env = "OUTBOX_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,

    /// The NATS server, with JetStream enabled.
    #[arg(
        long,
        env = "OUTBOX_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,

    /// Relay batch sizes to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    batch_size: Vec<usize>,

    /// Relay concurrencies (keys in flight) to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512")]
    concurrency: Vec<usize>,

    /// Times to repeat each measurement and setting.
    #[arg(long, default_value_t = 1)]
    runs: usize,

    /// Drain: events in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,

    /// Drain: keys the backlog is spread over, round-robin.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,

    /// Drain: approximate bytes of each event's JSON payload.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,

    /// Drain: read the stream back and check every key's order.
    #[arg(long)]
    check_order: bool,

    /// Latency: commits per second, one event each.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,

    /// Latency: seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    duration: u64,

    /// Latency: seconds of load before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,

    /// Latency and overhead: concurrent writer connections.
    #[arg(long, default_value_t = 8)]
    writers: usize,

    /// Latency and overhead: keys, split among the writers.
    #[arg(long, default_value_t = 64)]
    writer_keys: u64,

    /// Overhead: measured pairs of phases (without, with), after one warm-up pair.
    #[arg(long, default_value_t = 10)]
    pairs: usize,

    /// Overhead: seconds per phase.
    #[arg(long, default_value_t = 3.0)]
    phase_secs: f64,

    /// Before each measurement, wait up to this many seconds for other
    /// programs on the machine to go quiet (below a quarter of one core).
    #[arg(long, default_value_t = 0)]
    quiet_wait: u64,

    /// Keep published events this many seconds for replay, as the relay's
    /// `--keep-published` does [default: delete them once published].
    #[arg(long)]
    keep_published_secs: Option<f64>,

    /// Changes to the relay's wiring to try, comma-separated; the results are
    /// labelled with them and are not the relay as shipped.
    #[arg(long, value_enum, value_delimiter = ',')]
    experiment: Vec<Experiment>,

    /// Log filter for the relay's own logs, on stderr. The fill's statements
    /// are slow by design, so sqlx's slow-statement warnings are off.
    #[arg(long, env = "RUST_LOG", default_value = "warn,sqlx::query=error")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Two workers, one per core of the machine this was written for; the
    // writers and the consumer run on threads of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut text = err.to_string();
            let mut cause = err.source();
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> BenchResult<()> {
    let services = Services {
        database_url: args.database_url.clone(),
        nats_url: args.nats_url.clone(),
    };
    if args.measurement == Measurement::Cleanup {
        return fixture::remove_leftovers(&services).await;
    }
    let machine = machine(&services).await?;
    println!(
        "machine: {} cores, {} MiB, kernel {}, {}, nats-server {}",
        machine["cores"],
        machine["memory_mib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["postgres"].as_str().unwrap_or("?"),
        machine["nats"].as_str().unwrap_or("?")
    );
    let experiments = Experiments {
        async_commit: args.experiment.contains(&Experiment::AsyncCommit),
        no_notify: args.experiment.contains(&Experiment::NoNotify),
        no_relay: args.experiment.contains(&Experiment::NoRelay),
    };
    let labels: Vec<&str> = args
        .experiment
        .iter()
        .map(|e| match e {
            Experiment::AsyncCommit => "async-commit",
            Experiment::NoNotify => "no-notify",
            Experiment::NoRelay => "no-relay",
        })
        .collect();
    if !labels.is_empty() {
        println!(
            "experiments (not the relay as shipped): {}",
            labels.join(", ")
        );
    }

    let wants = |m: Measurement| args.measurement == m || args.measurement == Measurement::All;
    let mut results: Vec<Value> = Vec::new();
    for &batch_size in &args.batch_size {
        for &concurrency in &args.concurrency {
            let config = RelayConfig {
                batch_size,
                concurrency,
                keep_published: args.keep_published_secs.map(Duration::from_secs_f64),
                ..RelayConfig::default()
            };
            for _ in 0..args.runs {
                let mut record = |mut r: Value, busy: f64| {
                    r["experiments"] = json!(labels);
                    r["busy_before_pct"] = json!(busy.round());
                    results.push(r);
                };
                if wants(Measurement::Drain) {
                    let busy = wait_for_quiet(args.quiet_wait).await;
                    let params = drain::DrainParams {
                        events: args.events,
                        keys: args.keys,
                        payload_bytes: args.payload_bytes,
                        check_order: args.check_order,
                    };
                    record(
                        drain::run(&services, &params, &config, experiments).await?,
                        busy,
                    );
                }
                if wants(Measurement::Latency) {
                    let busy = wait_for_quiet(args.quiet_wait).await;
                    let params = latency::LatencyParams {
                        rate: args.rate,
                        duration: Duration::from_secs(args.duration),
                        warmup: Duration::from_secs(args.warmup),
                        writers: args.writers,
                        keys: args.writer_keys,
                    };
                    record(
                        latency::run(&services, &params, &config, experiments).await?,
                        busy,
                    );
                }
                if wants(Measurement::Overhead) {
                    let busy = wait_for_quiet(args.quiet_wait).await;
                    let params = overhead::OverheadParams {
                        pairs: args.pairs,
                        phase: Duration::from_secs_f64(args.phase_secs),
                        writers: args.writers,
                        keys: args.writer_keys,
                    };
                    record(
                        overhead::run(&services, &params, &config, experiments).await?,
                        busy,
                    );
                }
            }
        }
    }

    let summary = summarize(&results);
    for line in summary.iter().filter_map(|s| s["line"].as_str()) {
        println!("{line}");
    }
    let report = json!({ "machine": machine, "summary": summary, "runs": results });
    println!("{report}");
    Ok(())
}

/// The spread over repeated runs of each measurement and setting.
fn summarize(results: &[Value]) -> Vec<Value> {
    let mut groups: Vec<(String, usize, usize, Vec<&Value>)> = Vec::new();
    for r in results {
        let m = r["measurement"].as_str().unwrap_or("?").to_owned();
        let b = r["batch_size"].as_u64().unwrap_or(0) as usize;
        let c = r["concurrency"].as_u64().unwrap_or(0) as usize;
        match groups.iter_mut().find(|g| g.0 == m && g.1 == b && g.2 == c) {
            Some(g) => g.3.push(r),
            None => groups.push((m, b, c, vec![r])),
        }
    }

    groups
        .into_iter()
        .map(|(m, b, c, runs)| {
            let (field, unit) = match m.as_str() {
                "drain" => ("/events_per_s", "events/s"),
                "latency" => ("/commit_to_arrival/p99_ms", "ms p99"),
                _ => ("/overhead_pct", "% overhead"),
            };
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.pointer(field).and_then(Value::as_f64))
                .collect();
            let s = stats::spread(&values);
            let line = format!(
                "summary {m:<8} batch_size {b:>5} concurrency {c:>4}: median {} {unit} \
                 (min {}, max {}, {} runs)",
                s["median"], s["min"], s["max"], s["runs"]
            );
            json!({
                "measurement": m,
                "batch_size": b,
                "concurrency": c,
                "figure": field.trim_start_matches('/'),
                "spread": s,
                "line": line,
            })
        })
        .collect()
}

/// What the figures were measured on.
async fn machine(services: &Services) -> BenchResult<Value> {
    let pool = outbox::postgres::connect_pool(&services.database_url, 1).await?;
    let row = sqlx::query("SELECT version() AS v")
        .fetch_one(&pool)
        .await?;
    let postgres: String = row.get("v");
    pool.close().await;
    let client = async_nats::connect(&services.nats_url).await?;
    let nats = client.server_info().version;

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_mib": memory_kib / 1024,
        "kernel": kernel.trim(),
        "postgres": postgres.split(" on ").next().unwrap_or(&postgres),
        "nats": nats,
    }))
}

/// Waits, up to `limit` seconds, until the machine is quiet; warns when it is
/// not. Returns the CPU, in percent of one core, that was busy in the last
/// second before the measurement.
async fn wait_for_quiet(limit: u64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(limit);
    loop {
        let before = probe::CpuSnapshot::take();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = before.until(&probe::CpuSnapshot::take());
        let busy = cpu.other + cpu.postgres + cpu.nats;
        if busy < 25.0 {
            return busy;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "warning: the machine is busy before the measurement ({})",
                cpu.line()
            );
            return busy;
        }
    }
}

//! The relay's HTTP endpoints: Prometheus metrics, liveness and readiness.
//!
//! `GET /metrics` renders every metric the relay records (see
//! [`outbox::telemetry`]) in the Prometheus text format. `GET /healthz` answers
//! 200 while the process serves requests. `GET /readyz` answers 200 only while the
//! database answers, the broker is reachable, and the relay makes progress when
//! there is a backlog; otherwise 503 with one line per reason. `GET /` is a
//! status page with the backlog, throughput and lag charts and the dead letters
//! with a retry button; it reads the admin API ([`crate::admin`]), served on the
//! same address, and `GET /api/relay`, the relay's running totals.
//!
//! [`sample`] is the task that reads the store's status on a timer: it feeds
//! the backlog gauges, readiness and the built-in alerts, and runs whenever
//! either the endpoints or the alerts are on.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use outbox::{AnyStore, Error, OutboxStore, RelayStats, Result, Status};

use crate::alerts::{Alerts, Observation};

/// How long a backlog may sit without an acknowledgement before the relay counts
/// as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// How often the store's status is sampled unless `--status-interval-seconds`
/// says otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Bucket bounds of `outbox_commit_to_ack_seconds`, in seconds: rendered as a
/// Prometheus histogram, so quantiles can be taken across relays.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What the endpoints read: the relay's counters and the latest backlog sample.
#[derive(Clone)]
struct Shared {
    metrics: PrometheusHandle,
    stats: Arc<RelayStats>,
    sample: Arc<Mutex<Sample>>,
}

/// The latest look at the database.
#[derive(Default)]
pub struct Sample {
    status: Option<Status>,
    error: Option<String>,
}

/// Installs the Prometheus recorder, binds `listen` and serves the endpoints in
/// the background, answering readiness from `sample`, which [`sample`] (the
/// task) must keep fresh.
///
/// A port that cannot be bound, or a non-loopback address without an admin
/// token, is [`outbox::ErrorKind::Config`]. Returns the bound
/// address, which differs from `listen` when its port is 0.
pub async fn serve(
    listen: SocketAddr,
    store: AnyStore,
    stats: Arc<RelayStats>,
    sample: Arc<Mutex<Sample>>,
    admin_token: Option<String>,
) -> Result<SocketAddr> {
    crate::admin::check_exposure(listen, admin_token.as_deref())?;
    let recorder = |e| Error::config("cannot install the metrics recorder").with_source(e);
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("outbox_commit_to_ack_seconds".to_owned()),
            &LATENCY_BUCKETS,
        )
        .map_err(recorder)?
        .install_recorder()
        .map_err(recorder)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {listen}")).with_source(e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot listen on {listen}")).with_source(e))?;

    let shared = Shared {
        metrics,
        stats,
        sample,
    };
    let app = axum::Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(status_page))
        .route("/api/relay", get(relay_counts))
        .with_state(shared)
        .merge(crate::admin::router(store, admin_token));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "http endpoints stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

/// Every `interval`, for as long as the process runs: reads the store's
/// status, refreshes the backlog gauges and the readiness sample `into`, and
/// hands the status with the relay's `stats` to `alerts`.
///
/// The looks are sequential: a status query that hangs delays the next look,
/// and with it every alert, the broker's included, until the store's own
/// timeout ends it.
pub async fn sample(
    store: AnyStore,
    stats: Arc<RelayStats>,
    interval: Duration,
    into: Arc<Mutex<Sample>>,
    mut alerts: Option<Alerts>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = store.status().await;

        let seen = {
            let mut sample = into.lock().expect("sample lock");
            match status {
                Ok(status) => {
                    outbox::telemetry::record_status(&status);
                    sample.status = Some(status);
                    sample.error = None;
                }
                Err(err) => sample.error = Some(err.chain()),
            }
            Observation {
                now_ms: outbox::telemetry::unix_ms(),
                status: sample
                    .error
                    .is_none()
                    .then(|| sample.status.clone())
                    .flatten(),
                broker_down_since_ms: stats.broker_down_since_ms.load(Ordering::Relaxed),
                last_ack_ms: stats.last_ack_ms.load(Ordering::Relaxed),
            }
        };

        if let Some(alerts) = &mut alerts {
            alerts.observe(&seen);
        }
    }
}

/// The status page: one HTML file with its script and style inline, no external
/// assets. It polls the admin API every two seconds.
async fn status_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("status_page.html"))
}

/// The relay's running totals, for the status page's throughput chart.
async fn relay_counts(State(shared): State<Shared>) -> axum::Json<serde_json::Value> {
    let stats = &shared.stats;
    axum::Json(serde_json::json!({
        "published": stats.published.load(Ordering::Relaxed),
        "failed_attempts": stats.failed_attempts.load(Ordering::Relaxed),
        "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
        "broker_down_since_ms": stats.broker_down_since_ms.load(Ordering::Relaxed),
        "last_ack_ms": stats.last_ack_ms.load(Ordering::Relaxed),
    }))
}

async fn render_metrics(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}

async fn ready(State(shared): State<Shared>) -> (StatusCode, String) {
    let reasons = {
        let sample = shared.sample.lock().expect("sample lock");
        unready_reasons(&shared.stats, &sample, outbox::telemetry::unix_ms())
    };
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

/// Why the relay is not ready, empty when it is.
fn unready_reasons(stats: &RelayStats, sample: &Sample, now_ms: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(error) = &sample.error {
        reasons.push(format!("database: {error}"));
    } else if stats.store_down_since_ms.load(Ordering::Relaxed) != 0 {
        reasons.push("database: the relay's queries are failing".to_owned());
    }
    let broker_down = stats.broker_down_since_ms.load(Ordering::Relaxed);
    if broker_down != 0 {
        let seconds = now_ms.saturating_sub(broker_down) / 1000;
        reasons.push(format!("broker: unreachable for {seconds} s"));
    }

    let stalled_for =
        Duration::from_millis(now_ms.saturating_sub(stats.last_ack_ms.load(Ordering::Relaxed)));
    if let Some(status) = &sample.status {
        let old_backlog = status
            .oldest_pending_age
            .is_some_and(|age| age > STALL_AFTER);
        if status.pending > 0 && old_backlog && stalled_for > STALL_AFTER {
            reasons.push(format!(
                "progress: {} events pending and none acknowledged for {} s",
                status.pending,
                stalled_for.as_secs()
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pending: u64, age_s: u64) -> Status {
        Status {
            pending,
            oldest_pending_age: (pending > 0).then(|| Duration::from_secs(age_s)),
            dead_lettered: 0,
            schema_version: 2,
        }
    }

    #[test]
    fn a_healthy_relay_is_ready() {
        let stats = RelayStats::default();
        let sample = Sample {
            status: Some(status(0, 0)),
            error: None,
        };
        assert!(unready_reasons(&stats, &sample, 1_000_000).is_empty());
    }

    #[test]
    fn each_cause_is_named() {
        let now = 10_000_000;
        let stats = RelayStats::default();
        stats
            .broker_down_since_ms
            .store(now - 30_000, Ordering::Relaxed);
        stats.last_ack_ms.store(now - 120_000, Ordering::Relaxed);
        let sample = Sample {
            status: Some(status(5, 300)),
            error: Some("lost the connection".into()),
        };

        let reasons = unready_reasons(&stats, &sample, now);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("database:"));
        assert_eq!(reasons[1], "broker: unreachable for 30 s");
        assert!(reasons[2].starts_with("progress: 5 events pending"));
    }

    #[test]
    fn a_fresh_backlog_is_not_a_stall() {
        let now = 10_000_000;
        let stats = RelayStats::default();
        stats.last_ack_ms.store(now - 120_000, Ordering::Relaxed);
        let sample = Sample {
            status: Some(status(5, 10)),
            error: None,
        };
        assert!(unready_reasons(&stats, &sample, now).is_empty());
    }
}

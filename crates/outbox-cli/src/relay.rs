//! `outbox relay`: settings from flags, the environment and an optional TOML
//! file, the publisher they select, and a relay that stops cleanly on SIGINT or
//! SIGTERM.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use outbox::{
    AnyStore, DeadLetterPolicy, Error, FailSite, Failpoints, Identifier, Relay, RelayConfig,
    Result, StoreOptions,
};
use serde::Deserialize;

use crate::alerts::{AlertSettings, Alerts, Thresholds};
use crate::http::{DEFAULT_SAMPLE_INTERVAL, Sample};
use crate::publishers::{Destination, PublisherSettings};

/// Every setting of the relay. A flag wins over its environment variable, which
/// wins over the TOML file, which wins over the default.
#[derive(Debug, Args, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RelayArgs {
    /// TOML file with any of these settings, named as the long flags with `_`
    /// for `-` (`database_url = "…"`).
    #[arg(long, env = "OUTBOX_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`.
    #[arg(long, env = "OUTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL schema holding the outbox tables [default: outbox].
    #[arg(long, env = "OUTBOX_SCHEMA")]
    pub schema: Option<String>,

    /// Where events go: nats, rabbitmq, kafka, redis, mqtt, webhook, file or
    /// stdout, as compiled in [default: nats].
    #[arg(long, env = "OUTBOX_PUBLISHER")]
    pub publisher: Option<String>,

    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, env = "OUTBOX_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// JetStream stream to create if missing, with `--nats-subjects`.
    #[arg(long, env = "OUTBOX_NATS_STREAM")]
    pub nats_stream: Option<String>,

    /// Subjects of the stream created by `--nats-stream`, comma-separated
    /// [default: the stream's name in lowercase, then `.>`].
    #[arg(long, env = "OUTBOX_NATS_SUBJECTS")]
    pub nats_subjects: Option<String>,

    /// Subject of each event, from `{stream}` and `{type}` [default: {stream}.{type}].
    #[arg(long, env = "OUTBOX_NATS_SUBJECT")]
    pub nats_subject: Option<String>,

    /// RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, env = "OUTBOX_RABBITMQ_URL", hide_env_values = true)]
    pub rabbitmq_url: Option<String>,

    /// Exchange of each event, from `{stream}` and `{type}` [default: outbox].
    #[arg(long, env = "OUTBOX_RABBITMQ_EXCHANGE")]
    pub rabbitmq_exchange: Option<String>,

    /// Routing key of each event, from `{stream}` and `{type}`
    /// [default: {stream}.{type}].
    #[arg(long, env = "OUTBOX_RABBITMQ_ROUTING_KEY")]
    pub rabbitmq_routing_key: Option<String>,

    /// Declare each exchange (durable, topic) before publishing to it.
    #[arg(long, env = "OUTBOX_RABBITMQ_DECLARE_EXCHANGE")]
    pub rabbitmq_declare_exchange: Option<bool>,

    /// Kafka bootstrap servers, comma-separated [default: 127.0.0.1:9092].
    #[arg(long, env = "OUTBOX_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Topic of each event, from `{stream}` and `{type}` [default: {stream}].
    #[arg(long, env = "OUTBOX_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,

    /// Redis URL [default: redis://127.0.0.1:6379].
    #[arg(long, env = "OUTBOX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis stream key of each event, from `{stream}` and `{type}`
    /// [default: outbox:{stream}].
    #[arg(long, env = "OUTBOX_REDIS_STREAM")]
    pub redis_stream: Option<String>,

    /// Trim each Redis stream to about this many entries (`MAXLEN ~`); trimming
    /// can drop entries no consumer has read [default: no trimming].
    #[arg(long, env = "OUTBOX_REDIS_MAX_LEN")]
    pub redis_max_len: Option<u64>,

    /// MQTT broker URL [default: mqtt://127.0.0.1:1883].
    #[arg(long, env = "OUTBOX_MQTT_URL", hide_env_values = true)]
    pub mqtt_url: Option<String>,

    /// Topic of each event, from `{stream}`, `{type}` and `{key}`
    /// [default: outbox/{stream}].
    #[arg(long, env = "OUTBOX_MQTT_TOPIC")]
    pub mqtt_topic: Option<String>,

    /// MQTT client id [default: outbox- and 16 random hex digits].
    #[arg(long, env = "OUTBOX_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,

    /// URL each event is POSTed to, from `{stream}` and `{type}`.
    #[arg(long, env = "OUTBOX_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// Signing secret (`whsec_…`); several, space-separated, sign with each.
    #[arg(long, env = "OUTBOX_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Seconds a webhook request may take [default: 10].
    #[arg(long, env = "OUTBOX_WEBHOOK_TIMEOUT_SECONDS")]
    pub webhook_timeout_seconds: Option<f64>,

    /// File the file publisher appends JSON lines to [default: outbox-events.jsonl].
    #[arg(long, env = "OUTBOX_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Address to serve /metrics, /healthz and /readyz on, such as
    /// 127.0.0.1:9464 [default: none, no HTTP endpoints].
    #[arg(long, env = "OUTBOX_HTTP_LISTEN")]
    pub http_listen: Option<String>,

    /// Token the admin API asks for as `Authorization: Bearer TOKEN`; required
    /// when --http-listen is not a loopback address.
    #[arg(long, env = "OUTBOX_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Seconds between looks at the store's status, which feed the backlog
    /// gauges, readiness and the alerts [default: 5].
    #[arg(long, env = "OUTBOX_STATUS_INTERVAL_SECONDS")]
    pub status_interval_seconds: Option<f64>,

    /// Evaluate the built-in alerts and log each one that fires or resolves
    /// [default: true].
    #[arg(long, env = "OUTBOX_ALERTS")]
    pub alerts: Option<bool>,

    /// `OutboxLagHigh` fires when the oldest pending event has been older than
    /// this many seconds for `--alert-for-seconds` [default: 60].
    #[arg(long, env = "OUTBOX_ALERT_LAG_SECONDS")]
    pub alert_lag_seconds: Option<f64>,

    /// Seconds the lag must last before `OutboxLagHigh` fires, and the dead
    /// letters must stay flat before `OutboxDeadLetters` resolves [default: 30].
    #[arg(long, env = "OUTBOX_ALERT_FOR_SECONDS")]
    pub alert_for_seconds: Option<f64>,

    /// `OutboxBrokerUnreachable` fires when the broker has been unreachable
    /// for longer than this many seconds [default: 30].
    #[arg(long, env = "OUTBOX_ALERT_BROKER_SECONDS")]
    pub alert_broker_seconds: Option<f64>,

    /// `OutboxStalled` fires when a backlog older than this many seconds saw
    /// no acknowledgement for as long [default: 120].
    #[arg(long, env = "OUTBOX_ALERT_STALL_SECONDS")]
    pub alert_stall_seconds: Option<f64>,

    /// `http://` URL each alert change is POSTed to, as Alertmanager's
    /// `/api/v2/alerts` reads it [default: none, alerts are only logged].
    #[arg(long, env = "OUTBOX_ALERT_WEBHOOK", hide_env_values = true)]
    pub alert_webhook: Option<String>,

    /// Events claimed per batch [default: 1000].
    #[arg(long, env = "OUTBOX_BATCH_SIZE")]
    pub batch_size: Option<usize>,

    /// Keys published concurrently [default: 512].
    #[arg(long, env = "OUTBOX_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// Seconds a partition lease lasts without renewal [default: 30].
    #[arg(long, env = "OUTBOX_LEASE_SECONDS")]
    pub lease_seconds: Option<f64>,

    /// Milliseconds between looks for work when idle [default: 1000 on
    /// PostgreSQL, which also wakes on commit; 50 on SQLite].
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,

    /// Failed attempts before an event is dead-lettered [default: 10].
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,

    /// After a dead letter the key goes on (`skip`) or waits (`hold`) [default: skip].
    #[arg(long, env = "OUTBOX_DEAD_LETTER_POLICY")]
    pub dead_letter_policy: Option<String>,

    /// Seconds a stop waits for in-flight publishes [default: 10].
    #[arg(long, env = "OUTBOX_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<f64>,

    /// Keep published events this long (`90s`, `15m`, `12h`, `7d`) for
    /// `outbox replay`, instead of deleting them once published [default: keep
    /// nothing].
    #[arg(long, env = "OUTBOX_KEEP_PUBLISHED")]
    pub keep_published: Option<String>,
}

/// The relay's settings after flags, environment and file were merged.
pub(crate) struct Settings {
    pub(crate) database_url: String,
    pub(crate) schema: Identifier,
    pub(crate) destination: Destination,
    http_listen: Option<std::net::SocketAddr>,
    admin_token: Option<String>,
    status_interval: Duration,
    alerts: Option<AlertSettings>,
    pub(crate) config: RelayConfig,
}

pub(crate) fn merge(args: RelayArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(format!("cannot read config file {}", path.display())).with_source(e)
            })?;
            toml::from_str::<RelayArgs>(&text).map_err(|e| {
                Error::config(format!("invalid config file {}", path.display())).with_source(e)
            })?
        }
        None => RelayArgs::default(),
    };
    macro_rules! pick {
        ($field:ident) => {
            args.$field.or(file.$field)
        };
    }

    let database_url = pick!(database_url).ok_or_else(|| {
        Error::config("no database url: set --database-url, OUTBOX_DATABASE_URL or database_url")
    })?;
    let sqlite = database_url.starts_with("sqlite:");
    let defaults = RelayConfig::default();
    let seconds = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(Error::config(format!(
                "{name} must be a positive number of seconds"
            )))
        }
    };
    let dead_letter_policy = match pick!(dead_letter_policy).as_deref() {
        None | Some("skip") => DeadLetterPolicy::Skip,
        Some("hold") => DeadLetterPolicy::Hold,
        Some(other) => {
            return Err(Error::config(format!(
                "unknown dead letter policy {other:?}: expected skip or hold"
            )));
        }
    };
    let positive = |name: &str, v: usize| {
        if v == 0 {
            Err(Error::config(format!("{name} must be at least 1")))
        } else {
            Ok(v)
        }
    };

    let destination = Destination::choose(PublisherSettings {
        publisher: pick!(publisher),
        nats_url: pick!(nats_url),
        nats_stream: pick!(nats_stream),
        nats_subjects: pick!(nats_subjects),
        nats_subject: pick!(nats_subject),
        rabbitmq_url: pick!(rabbitmq_url),
        rabbitmq_exchange: pick!(rabbitmq_exchange),
        rabbitmq_routing_key: pick!(rabbitmq_routing_key),
        rabbitmq_declare_exchange: pick!(rabbitmq_declare_exchange),
        kafka_brokers: pick!(kafka_brokers),
        kafka_topic: pick!(kafka_topic),
        redis_url: pick!(redis_url),
        redis_stream: pick!(redis_stream),
        redis_max_len: pick!(redis_max_len),
        mqtt_url: pick!(mqtt_url),
        mqtt_topic: pick!(mqtt_topic),
        mqtt_client_id: pick!(mqtt_client_id),
        webhook_url: pick!(webhook_url),
        webhook_secret: pick!(webhook_secret),
        webhook_timeout_seconds: pick!(webhook_timeout_seconds),
        output: pick!(output),
    })?;
    // A publisher with a timeout of its own answers within it; the relay's
    // timer, which treats expiry as an outage, waits a little longer.
    let publish_timeout = match destination.own_timeout() {
        Some(own) => defaults.publish_timeout.max(own + Duration::from_secs(5)),
        None => defaults.publish_timeout,
    };

    let config = RelayConfig {
        batch_size: positive(
            "batch size",
            pick!(batch_size).unwrap_or(defaults.batch_size),
        )?,
        concurrency: positive(
            "concurrency",
            pick!(concurrency).unwrap_or(defaults.concurrency),
        )?,
        lease_ttl: match pick!(lease_seconds) {
            Some(v) => seconds("lease", v)?,
            None => defaults.lease_ttl,
        },
        poll_interval: Duration::from_millis(
            pick!(poll_interval_ms)
                .unwrap_or(if sqlite { 50 } else { 1000 })
                .max(1),
        ),
        max_attempts: pick!(max_attempts).unwrap_or(defaults.max_attempts).max(1),
        dead_letter_policy,
        shutdown_grace: match pick!(shutdown_grace_seconds) {
            Some(v) => seconds("shutdown grace", v)?,
            None => defaults.shutdown_grace,
        },
        publish_timeout,
        keep_published: pick!(keep_published)
            .map(|text| crate::replay::parse_span("--keep-published", &text))
            .transpose()
            .map_err(|e| Error::config(e.message().to_owned()))?,
        failpoints: failpoints_from_env()?,
        ..defaults
    };
    let alerts = if pick!(alerts).unwrap_or(true) {
        let or = |v: Option<f64>, name: &str, default: Duration| match v {
            Some(v) => seconds(name, v),
            None => Ok(default),
        };
        let t = Thresholds::default();
        Some(AlertSettings {
            thresholds: Thresholds {
                lag: or(pick!(alert_lag_seconds), "alert lag", t.lag)?,
                hold: or(pick!(alert_for_seconds), "alert for", t.hold)?,
                broker: or(pick!(alert_broker_seconds), "alert broker", t.broker)?,
                stall: or(pick!(alert_stall_seconds), "alert stall", t.stall)?,
            },
            webhook: pick!(alert_webhook).map(alert_webhook).transpose()?,
        })
    } else {
        None
    };
    let status_interval = match pick!(status_interval_seconds) {
        Some(v) => seconds("status interval", v)?,
        None => DEFAULT_SAMPLE_INTERVAL,
    };

    Ok(Settings {
        database_url,
        schema: Identifier::new(pick!(schema).as_deref().unwrap_or("outbox"))?,
        destination,
        http_listen: match pick!(http_listen) {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| {
                Error::config(format!(
                    "invalid http listen address {text:?}: expected HOST:PORT"
                ))
                .with_source(e)
            })?),
        },
        admin_token: pick!(admin_token),
        status_interval,
        alerts,
        config,
    })
}

/// Checks the alert webhook's URL: `http://` only, as the binary has no TLS.
fn alert_webhook(text: String) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(&text)
        .map_err(|e| Error::config("invalid alert webhook url").with_source(e))?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(Error::config(
            "invalid alert webhook url: expected http://HOST[:PORT]/PATH",
        ));
    }
    Ok(url)
}

/// `OUTBOX_FAILPOINT=crash-after-ack:N` aborts the process right after the N-th
/// acknowledgement, before the event is marked done. For fault-injection tests.
fn failpoints_from_env() -> Result<Failpoints> {
    let Ok(spec) = std::env::var("OUTBOX_FAILPOINT") else {
        return Ok(Failpoints::default());
    };
    let n: u64 = spec
        .strip_prefix("crash-after-ack:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::config(format!(
                "invalid OUTBOX_FAILPOINT {spec:?}: expected crash-after-ack:N"
            ))
        })?;
    Ok(Failpoints::new(move |site| {
        let FailSite::AfterAck { published } = site;
        if published == n {
            eprintln!("failpoint: aborting after acknowledgement {n}");
            std::process::abort();
        }
    }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("stop requested");
}

/// Opens the store the settings name, and checks its schema is this binary's.
pub(crate) async fn open_store(settings: &Settings) -> Result<AnyStore> {
    let options = StoreOptions {
        schema: settings.schema.clone(),
        ..StoreOptions::default()
    };
    let store = AnyStore::connect(&settings.database_url, options).await?;
    store.check_schema().await?;
    Ok(store)
}

/// Runs the relay until SIGINT or SIGTERM.
pub async fn run(args: RelayArgs) -> Result<()> {
    let settings = merge(args)?;
    let store = open_store(&settings).await?;
    let publisher = settings.destination.open().await?;

    let relay = Relay::new(store.clone(), publisher, settings.config);
    let stats = relay.stats();
    let sample = Arc::new(Mutex::new(Sample::default()));
    if let Some(listen) = settings.http_listen {
        crate::http::serve(
            listen,
            store.clone(),
            stats.clone(),
            sample.clone(),
            settings.admin_token,
        )
        .await?;
    }
    if settings.http_listen.is_some() || settings.alerts.is_some() {
        let started_ms = outbox::telemetry::unix_ms();
        let alerts = match settings.alerts {
            Some(alerts) => Some(Alerts::start(alerts, started_ms)?),
            None => None,
        };
        let interval = settings.status_interval;
        tokio::spawn(crate::http::sample(store, stats, interval, sample, alerts));
    }
    relay.run(shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::ErrorKind;

    fn config_file(text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("outbox-relay-{}.toml", outbox::EventId::new()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let path = config_file(
            "database_url = \"sqlite://from-file.db\"\nbatch_size = 77\nconcurrency = 5\n",
        );
        let args = RelayArgs {
            config: Some(path.clone()),
            concurrency: Some(9),
            ..RelayArgs::default()
        };
        let settings = merge(args).unwrap();

        assert_eq!(settings.database_url, "sqlite://from-file.db");
        assert_eq!(settings.config.batch_size, 77);
        assert_eq!(settings.config.concurrency, 9);
        assert_eq!(
            settings.config.poll_interval,
            Duration::from_millis(50),
            "sqlite default"
        );
        assert!(matches!(settings.destination, Destination::Nats { .. }));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn alerts_are_on_by_default_and_take_their_thresholds() {
        let sqlite = || RelayArgs {
            database_url: Some("sqlite://x.db".into()),
            ..RelayArgs::default()
        };
        let settings = merge(sqlite()).unwrap();
        let alerts = settings.alerts.expect("on by default");
        assert_eq!(alerts.thresholds, Thresholds::default());
        assert_eq!(alerts.webhook, None);
        assert_eq!(settings.status_interval, Duration::from_secs(5));

        let path = config_file("alert_lag_seconds = 2.5\nalert_webhook = \"http://h:1/a\"\n");
        let settings = merge(RelayArgs {
            config: Some(path.clone()),
            alert_stall_seconds: Some(7.0),
            status_interval_seconds: Some(0.5),
            ..sqlite()
        })
        .unwrap();
        let alerts = settings.alerts.unwrap();
        assert_eq!(alerts.thresholds.lag, Duration::from_millis(2500));
        assert_eq!(alerts.thresholds.stall, Duration::from_secs(7));
        assert_eq!(alerts.thresholds.broker, Duration::from_secs(30));
        assert_eq!(alerts.webhook.unwrap().as_str(), "http://h:1/a");
        assert_eq!(settings.status_interval, Duration::from_millis(500));
        std::fs::remove_file(path).unwrap();

        let off = merge(RelayArgs {
            alerts: Some(false),
            ..sqlite()
        })
        .unwrap();
        assert!(off.alerts.is_none());
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        let typo = config_file("databse_url = \"x\"\n");
        let cases = [
            RelayArgs::default(),
            RelayArgs {
                config: Some(typo.clone()),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                dead_letter_policy: Some("sometimes".into()),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                batch_size: Some(0),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                lease_seconds: Some(-1.0),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                schema: Some("Bad Schema".into()),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                alert_lag_seconds: Some(0.0),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                status_interval_seconds: Some(f64::NAN),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                alert_webhook: Some("https://alerts.example/hook".into()),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                alert_webhook: Some("not a url".into()),
                ..RelayArgs::default()
            },
            RelayArgs {
                database_url: Some("sqlite://x.db".into()),
                keep_published: Some("a while".into()),
                ..RelayArgs::default()
            },
        ];
        for args in cases {
            let err = merge(args).err().expect("refused");
            assert_eq!(err.kind(), ErrorKind::Config, "{}", err.chain());
        }
        std::fs::remove_file(typo).unwrap();
    }
}

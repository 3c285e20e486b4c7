//! `outbox replay`: publish kept events once more, from the published log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use outbox::replay::{ReplayFilter, ReplayOptions, ReplayReport, replay};
use outbox::{Error, PublishedLog, Result};

use crate::relay::RelayArgs;

/// What to replay, and where to. The database and the publisher come from the
/// relay's settings (flags, environment or `--config`), so a replay can reuse
/// the relay's config file; settings of the relay loop itself are ignored,
/// except `--batch-size` and `--concurrency`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Replay events created at or after this time: RFC 3339
    /// (`2026-12-03T09:00:00Z`) or a span before now (`90s`, `15m`, `2h`, `7d`).
    #[arg(long)]
    pub since: String,

    /// Replay only events created before this time, written as `--since` is.
    #[arg(long)]
    pub until: Option<String>,

    /// Replay only this stream.
    #[arg(long)]
    pub stream: Option<String>,

    /// Replay only this key.
    #[arg(long)]
    pub key: Option<String>,

    /// Start after this row id: the `resume after` of a replay that stopped.
    #[arg(long, default_value_t = 0)]
    pub after: i64,

    /// Count what would be replayed, and publish nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub relay: RelayArgs,
}

/// The relay's settings a replay reads but does not use: the relay's loop, its
/// HTTP endpoints and alerts. They stay accepted, so that a replay can share the
/// relay's environment and config file, and are left out of `--help`.
const RELAY_ONLY: &[&str] = &[
    "http_listen",
    "admin_token",
    "status_interval_seconds",
    "alerts",
    "alert_lag_seconds",
    "alert_for_seconds",
    "alert_broker_seconds",
    "alert_stall_seconds",
    "alert_webhook",
    "lease_seconds",
    "poll_interval_ms",
    "max_attempts",
    "dead_letter_policy",
    "shutdown_grace_seconds",
    "keep_published",
];

/// Hides the relay-only settings from `outbox replay --help`.
pub fn hide_relay_only(arg: clap::Arg) -> clap::Arg {
    if RELAY_ONLY.contains(&arg.get_id().as_str()) {
        arg.hide(true)
    } else {
        arg
    }
}

/// A span of time: a number of seconds, or a number with `s`, `m`, `h` or `d`.
pub fn parse_span(name: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && scale.is_finite() => {
            Ok(Duration::from_secs_f64(n * scale))
        }
        _ => Err(Error::invalid_input(format!(
            "invalid {name} {text:?}: expected a positive number with s, m, h or d, such as 15m"
        ))),
    }
}

/// A point in time: RFC 3339, or a span before `now`.
fn parse_time(name: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let span = parse_span(name, text).map_err(|_| {
        Error::invalid_input(format!(
            "invalid {name} {text:?}: expected an RFC 3339 time such as \
             2026-12-03T09:00:00Z, or a span before now such as 2h"
        ))
    })?;
    let span = chrono::Duration::from_std(span)
        .map_err(|_| Error::invalid_input(format!("{name} {text:?} is too far back")))?;
    Ok(now - span)
}

pub async fn run(args: ReplayArgs) -> Result<()> {
    let now = Utc::now();
    let filter = ReplayFilter {
        since: parse_time("--since", &args.since, now)?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time("--until", t, now))
            .transpose()?,
        stream: args.stream,
        key: args.key,
    };
    if filter.until.is_some_and(|until| until <= filter.since) {
        return Err(Error::invalid_input("--until must be later than --since"));
    }
    let settings = crate::relay::merge(args.relay)?;
    let store = crate::relay::open_store(&settings).await?;

    if args.dry_run {
        return dry_run(&store, &filter, args.after, args.json).await;
    }
    let publisher = settings.destination.open().await?;
    let options = ReplayOptions {
        batch_size: u32::try_from(settings.config.batch_size).unwrap_or(u32::MAX),
        concurrency: settings.config.concurrency,
        publish_timeout: settings.config.publish_timeout,
        after: args.after,
        ..ReplayOptions::default()
    };
    let json = args.json;
    let report = replay(&store, &publisher, &filter, &options, |report| {
        if !json {
            tracing::info!(published = report.published, "replaying");
        }
    })
    .await;
    print_report(&report, json);
    match report.error {
        None => Ok(()),
        Some(err) => Err(err.context(format!(
            "replay stopped after {} events; resume with --after {}",
            report.published, report.resume_after
        ))),
    }
}

fn print_report(report: &ReplayReport, json: bool) {
    if json {
        let out = serde_json::json!({
            "published": report.published,
            "resume_after": report.resume_after,
            "complete": report.error.is_none(),
            "error": report.error.as_ref().map(|e| e.chain()),
        });
        println!("{out}");
    } else if report.error.is_none() {
        println!("replayed {} events", report.published);
    }
}

async fn dry_run<L: PublishedLog>(
    store: &L,
    filter: &ReplayFilter,
    mut after: i64,
    json: bool,
) -> Result<()> {
    let (mut count, mut first, mut last) = (0u64, None, None);
    loop {
        let page = store.kept(filter, after, 1000).await?;
        let Some(end) = page.last() else { break };
        after = end.id;
        count += page.len() as u64;
        let times = page.iter().map(|e| e.created_at);
        first = times.clone().chain(first).min();
        last = times.chain(last).max();
    }
    if json {
        let out = serde_json::json!({
            "would_publish": count,
            "oldest_created_at": first,
            "newest_created_at": last,
        });
        println!("{out}");
    } else {
        match (first, last) {
            (Some(first), Some(last)) => println!(
                "would replay {count} events, created from {} to {}",
                first.to_rfc3339(),
                last.to_rfc3339()
            ),
            _ => println!(
                "no kept events match; the relay keeps published events only with --keep-published"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_leaves_out_exactly_the_relay_only_settings() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let replay = cli.find_subcommand("replay").expect("replay subcommand");
        for name in RELAY_ONLY {
            let arg = replay.get_arguments().find(|a| a.get_id() == *name);
            assert!(
                arg.is_some_and(|a| a.is_hide_set()),
                "{name} is not a hidden argument"
            );
        }
        for shown in [
            "since",
            "database_url",
            "publisher",
            "batch_size",
            "concurrency",
        ] {
            let arg = replay
                .get_arguments()
                .find(|a| a.get_id() == shown)
                .unwrap();
            assert!(!arg.is_hide_set(), "{shown} is hidden");
        }
    }

    #[test]
    fn spans_take_units_and_refuse_nonsense() {
        assert_eq!(parse_span("x", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_span("x", "15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_span("x", "1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_span("x", "7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "0", "-5m", "5w", "m", "soon", "NaNs"] {
            let err = parse_span("--keep-published", bad).unwrap_err();
            assert!(
                err.chain().contains("--keep-published"),
                "{bad}: {}",
                err.chain()
            );
        }
    }

    #[test]
    fn times_are_rfc3339_or_a_span_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = parse_time("--since", "2026-12-03T09:30:00+01:00", now).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-03T08:30:00+00:00");
        let ago = parse_time("--since", "2h", now).unwrap();
        assert_eq!(ago.to_rfc3339(), "2026-12-03T10:00:00+00:00");
        let err = parse_time("--since", "yesterday", now).unwrap_err();
        assert!(err.chain().contains("RFC 3339"), "{}", err.chain());
    }
}

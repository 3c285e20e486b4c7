//! Built-in alerts: four rules `outbox relay` evaluates itself on every status
//! sample, so a relay without Prometheus still says when it is in trouble.
//!
//! [`Evaluator`] is the pure state machine: it reads an [`Observation`] with an
//! explicit timestamp and returns the rules that started or stopped firing.
//! [`Alerts`] logs each change once and, with a webhook, POSTs it in the JSON
//! Alertmanager accepts on `/api/v2/alerts`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use outbox::{Error, Result, Status};
use reqwest::Url;
use serde_json::json;
use tokio::sync::mpsc;

/// How long one webhook POST may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The thresholds of the rules; see [`Alert`] for what each one reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Age of the oldest pending event above which the relay lags.
    pub lag: Duration,
    /// How long the lag must last before [`Alert::LagHigh`] fires, and how long
    /// the dead letters must stay flat before [`Alert::DeadLetters`] resolves.
    pub hold: Duration,
    /// How long the broker may be unreachable.
    pub broker: Duration,
    /// How long a backlog may go without an acknowledgement.
    pub stall: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            lag: Duration::from_secs(60),
            hold: Duration::from_secs(30),
            broker: Duration::from_secs(30),
            stall: Duration::from_secs(120),
        }
    }
}

/// The alert settings of `outbox relay`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// When each rule fires.
    pub thresholds: Thresholds,
    /// Where each change is POSTed, if anywhere.
    pub webhook: Option<Url>,
}

/// One look at the relay, as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// When the look was taken, in Unix milliseconds.
    pub now_ms: u64,
    /// The store's answer, `None` when the query failed.
    pub status: Option<Status>,
    /// `RelayStats::broker_down_since_ms`: 0 while the broker is reachable.
    pub broker_down_since_ms: u64,
    /// `RelayStats::last_ack_ms`: 0 before the first acknowledgement.
    pub last_ack_ms: u64,
}

/// A built-in rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// The oldest pending event is older than [`Thresholds::lag`], on every
    /// sample for [`Thresholds::hold`]. Resolves on the first sample at or
    /// under the threshold. Value: the age in seconds.
    LagHigh,
    /// The dead-letter count grew since the previous sample. Resolves once it
    /// has not grown for [`Thresholds::hold`], or as soon as it is back at 0.
    /// The count found at start is the baseline and fires nothing; the
    /// `outbox_dead_letters > 0` Prometheus rule covers dead letters that sit.
    /// Value: the count.
    DeadLetters,
    /// The relay's publishes have failed as unreachable for longer than
    /// [`Thresholds::broker`]. Resolves on the first acknowledgement after the
    /// outage, so with nothing to publish it stays firing until an event
    /// goes out. Value: seconds unreachable.
    BrokerUnreachable,
    /// Events are pending, the oldest for longer than [`Thresholds::stall`],
    /// and nothing was acknowledged for as long (or since the start). Resolves
    /// when either stops being true. Value: seconds since the last
    /// acknowledgement.
    Stalled,
}

impl Alert {
    /// Every rule, in the order they are evaluated.
    pub const ALL: [Alert; 4] = [
        Alert::LagHigh,
        Alert::DeadLetters,
        Alert::BrokerUnreachable,
        Alert::Stalled,
    ];

    /// The `alertname` label, shared with `ops/prometheus/outbox-alerts.yml`.
    pub fn name(self) -> &'static str {
        match self {
            Alert::LagHigh => "OutboxLagHigh",
            Alert::DeadLetters => "OutboxDeadLetters",
            Alert::BrokerUnreachable => "OutboxBrokerUnreachable",
            Alert::Stalled => "OutboxStalled",
        }
    }

    /// The `severity` label: `critical` when nothing is being published.
    pub fn severity(self) -> &'static str {
        match self {
            Alert::LagHigh | Alert::DeadLetters => "warning",
            Alert::BrokerUnreachable | Alert::Stalled => "critical",
        }
    }

    /// The `summary` annotation.
    pub fn summary(self) -> &'static str {
        match self {
            Alert::LagHigh => "outbox events wait too long to be published",
            Alert::DeadLetters => "outbox events were moved to the dead letters",
            Alert::BrokerUnreachable => "the outbox relay cannot reach its broker",
            Alert::Stalled => "the outbox relay acknowledges nothing despite a backlog",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether a rule started or stopped firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The condition held long enough.
    Fired,
    /// The condition is over.
    Resolved,
}

/// A rule that started or stopped firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Which rule.
    pub alert: Alert,
    /// Fired or resolved.
    pub edge: Edge,
    /// When it fired, in Unix milliseconds (also on the resolve).
    pub fired_ms: u64,
    /// When it resolved, in Unix milliseconds.
    pub resolved_ms: Option<u64>,
    /// The figure the rule read, as [`Alert`] describes for each.
    pub value: u64,
    /// What was seen, for the `description` annotation.
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Inactive,
    Pending { since_ms: u64 },
    Firing { fired_ms: u64 },
}

/// The rules' state between samples. Each rule fires once when its condition
/// has held long enough and resolves once when it no longer holds; a sample
/// without a status (the query failed) leaves the rules that read it as they
/// are.
#[derive(Debug)]
pub struct Evaluator {
    thresholds: Thresholds,
    started_ms: u64,
    states: [State; 4],
    dead_letters: Option<u64>,
    dead_letters_grew_ms: u64,
}

impl Evaluator {
    /// An evaluator for a relay started at `started_ms` (Unix milliseconds).
    pub fn new(thresholds: Thresholds, started_ms: u64) -> Evaluator {
        Evaluator {
            thresholds,
            started_ms,
            states: [State::Inactive; 4],
            dead_letters: None,
            dead_letters_grew_ms: 0,
        }
    }

    /// Reads one observation and returns the rules that fired or resolved.
    pub fn evaluate(&mut self, seen: &Observation) -> Vec<Transition> {
        let mut changes = Vec::new();
        for alert in Alert::ALL {
            let Some((holds, value, description)) = self.condition(alert, seen) else {
                continue;
            };
            let hold = match alert {
                Alert::LagHigh => self.thresholds.hold,
                _ => Duration::ZERO,
            };
            let state = &mut self.states[alert.index()];
            let edge = step(state, holds, seen.now_ms, hold);
            if let Some((edge, fired_ms)) = edge {
                changes.push(Transition {
                    alert,
                    edge,
                    fired_ms,
                    resolved_ms: (edge == Edge::Resolved).then_some(seen.now_ms),
                    value,
                    description,
                });
            }
        }
        changes
    }

    /// Whether `alert`'s condition holds (and since when), the value it read
    /// and a description; `None` when the observation cannot tell.
    fn condition(
        &mut self,
        alert: Alert,
        seen: &Observation,
    ) -> Option<(Option<u64>, u64, String)> {
        let now = seen.now_ms;
        let t = &self.thresholds;
        match alert {
            Alert::LagHigh => {
                let status = seen.status.as_ref()?;
                let age = status.oldest_pending_age.unwrap_or_default();
                let holds = (age > t.lag).then_some(now);
                let text = format!(
                    "the oldest of {} pending events is {} s old (threshold {} s)",
                    status.pending,
                    age.as_secs(),
                    t.lag.as_secs()
                );
                Some((holds, age.as_secs(), text))
            }
            Alert::DeadLetters => {
                let count = seen.status.as_ref()?.dead_lettered;
                let before = self.dead_letters.replace(count);
                if before.is_some_and(|before| count > before) {
                    self.dead_letters_grew_ms = now;
                }
                let quiet = now.saturating_sub(self.dead_letters_grew_ms);
                let recent = self.dead_letters_grew_ms != 0 && quiet < millis(t.hold);
                let holds = (count > 0 && recent).then_some(now);
                let text = match before {
                    Some(before) if count > before => {
                        format!("the dead letters grew from {before} to {count}")
                    }
                    _ if count == 0 => "the dead letters are empty".to_owned(),
                    _ => format!("{count} dead letters, none new for {} s", quiet / 1000),
                };
                Some((holds, count, text))
            }
            Alert::BrokerUnreachable => {
                let since = seen.broker_down_since_ms;
                let down = if since == 0 {
                    0
                } else {
                    now.saturating_sub(since)
                };
                let holds = (since != 0 && down > millis(t.broker)).then_some(since);
                let text = if since == 0 {
                    "the broker acknowledges again".to_owned()
                } else {
                    format!(
                        "the broker has been unreachable for {} s (threshold {} s)",
                        down / 1000,
                        t.broker.as_secs()
                    )
                };
                Some((holds, down / 1000, text))
            }
            Alert::Stalled => {
                let status = seen.status.as_ref()?;
                let last = seen.last_ack_ms.max(self.started_ms);
                let quiet = now.saturating_sub(last);
                let old = status.oldest_pending_age.is_some_and(|age| age > t.stall);
                let stalled = status.pending > 0 && old && quiet > millis(t.stall);
                let text = format!(
                    "{} events pending and none acknowledged for {} s (threshold {} s)",
                    status.pending,
                    quiet / 1000,
                    t.stall.as_secs()
                );
                Some((stalled.then_some(now), quiet / 1000, text))
            }
        }
    }
}

/// Moves one rule's state on: `holds` is when its condition began to hold as
/// far as this sample knows, `None` when it does not hold. Returns the edge
/// and when the rule fired.
fn step(state: &mut State, holds: Option<u64>, now_ms: u64, hold: Duration) -> Option<(Edge, u64)> {
    match (holds, *state) {
        (None, State::Firing { fired_ms }) => {
            *state = State::Inactive;
            Some((Edge::Resolved, fired_ms))
        }
        (None, _) => {
            *state = State::Inactive;
            None
        }
        (Some(_), State::Firing { .. }) => None,
        (Some(since), State::Inactive | State::Pending { .. }) => {
            let since_ms = match *state {
                State::Pending { since_ms: earlier } => earlier.min(since),
                _ => since,
            };
            if now_ms.saturating_sub(since_ms) >= millis(hold) {
                *state = State::Firing { fired_ms: now_ms };
                Some((Edge::Fired, now_ms))
            } else {
                *state = State::Pending { since_ms };
                None
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The evaluator of a running relay, with the log lines and the webhook that
/// report its changes.
///
/// The webhook sends each change once, as it happens, and does not repeat a
/// firing alert. Alertmanager takes an alert it has not heard of for its
/// `resolve_timeout` (5 minutes by default) as resolved, so an outage longer
/// than that shows there as resolved before the relay resolves it; the
/// Prometheus rules in `ops/prometheus` do not have this limit. Only `http://`
/// URLs are supported, because the binary is built without a TLS stack.
pub struct Alerts {
    evaluator: Evaluator,
    webhook: Option<mpsc::UnboundedSender<Transition>>,
}

impl Alerts {
    /// Starts evaluating at `started_ms`, and the webhook's sender task if
    /// there is a webhook. Must run inside the tokio runtime.
    pub fn start(settings: AlertSettings, started_ms: u64) -> Result<Alerts> {
        let webhook = match settings.webhook {
            None => None,
            Some(url) => {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(WEBHOOK_TIMEOUT)
                    .build()
                    .map_err(|e| Error::config("cannot build the http client").with_source(e))?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(deliver(client, url, rx));
                Some(tx)
            }
        };
        Ok(Alerts {
            evaluator: Evaluator::new(settings.thresholds, started_ms),
            webhook,
        })
    }

    /// Evaluates `seen`, logs each change and hands it to the webhook without
    /// waiting for the POST.
    pub fn observe(&mut self, seen: &Observation) {
        for change in self.evaluator.evaluate(seen) {
            log(&change);
            if let Some(webhook) = &self.webhook {
                // The sender task lives as long as the process.
                let _ = webhook.send(change);
            }
        }
    }
}

fn log(change: &Transition) {
    let alert = change.alert.name();
    let severity = change.alert.severity();
    let value = change.value;
    let description = change.description.as_str();
    match (change.edge, severity) {
        (Edge::Fired, "critical") => {
            tracing::error!(alert, severity, value, description, "alert fired");
        }
        (Edge::Fired, _) => {
            tracing::warn!(alert, severity, value, description, "alert fired");
        }
        (Edge::Resolved, _) => {
            let resolved_ms = change.resolved_ms.unwrap_or(change.fired_ms);
            let fired_for_s = resolved_ms.saturating_sub(change.fired_ms) / 1000;
            tracing::info!(
                alert,
                severity,
                value,
                fired_for_s,
                description,
                "alert resolved"
            );
        }
    }
}

/// POSTs each change, together with the changes earlier POSTs failed to
/// deliver (the latest per rule), until the process ends.
async fn deliver(
    client: reqwest::Client,
    url: Url,
    mut changes: mpsc::UnboundedReceiver<Transition>,
) {
    let shown = shown(&url);
    let mut unsent: Vec<Transition> = Vec::new();
    while let Some(change) = changes.recv().await {
        let mut batch = vec![change];
        while let Ok(more) = changes.try_recv() {
            batch.push(more);
        }
        for change in batch {
            unsent.retain(|earlier| earlier.alert != change.alert);
            unsent.push(change);
        }

        let body = payload(&unsent).to_string();
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match sent {
            Ok(_) => {
                tracing::debug!(url = %shown, alert_count = unsent.len(), "sent alerts");
                unsent.clear();
            }
            Err(err) => {
                tracing::warn!(
                    url = %shown,
                    alert_count = unsent.len(),
                    error = %err,
                    "could not send alerts; retrying on the next change"
                );
            }
        }
    }
}

/// The scheme, host and port of `url`: paths and queries may hold tokens.
fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The Alertmanager `postableAlerts` body of `changes`.
pub fn payload(changes: &[Transition]) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = changes
        .iter()
        .map(|change| {
            let mut alert = json!({
                "labels": {
                    "alertname": change.alert.name(),
                    "severity": change.alert.severity(),
                    "service": "outbox",
                },
                "annotations": {
                    "summary": change.alert.summary(),
                    "description": change.description,
                },
                "startsAt": timestamp(change.fired_ms),
            });
            if let Some(resolved) = change.resolved_ms {
                alert["endsAt"] = json!(timestamp(resolved));
            }
            alert
        })
        .collect();
    serde_json::Value::Array(alerts)
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager reads it.
fn timestamp(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn thresholds() -> Thresholds {
        Thresholds {
            lag: Duration::from_secs(60),
            hold: Duration::from_secs(30),
            broker: Duration::from_secs(30),
            stall: Duration::from_secs(120),
        }
    }

    fn status(pending: u64, age_s: u64, dead_lettered: u64) -> Option<Status> {
        Some(Status {
            pending,
            oldest_pending_age: (pending > 0).then(|| Duration::from_secs(age_s)),
            dead_lettered,
            schema_version: 2,
        })
    }

    /// A healthy observation `s` seconds after T0, acknowledged just now.
    fn at(s: u64) -> Observation {
        Observation {
            now_ms: T0 + s * 1000,
            status: status(0, 0, 0),
            broker_down_since_ms: 0,
            last_ack_ms: T0 + s * 1000,
        }
    }

    fn edges(changes: &[Transition]) -> Vec<(Alert, Edge)> {
        changes.iter().map(|c| (c.alert, c.edge)).collect()
    }

    #[test]
    fn lag_fires_once_after_the_hold_and_resolves_once() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let lagging = |s: u64, age: u64| Observation {
            status: status(10, age, 0),
            ..at(s)
        };

        assert!(rules.evaluate(&lagging(0, 61)).is_empty(), "pending");
        assert!(rules.evaluate(&lagging(20, 81)).is_empty(), "pending");
        let fired = rules.evaluate(&lagging(30, 91));
        assert_eq!(edges(&fired), [(Alert::LagHigh, Edge::Fired)]);
        assert_eq!(fired[0].value, 91);
        assert_eq!(fired[0].fired_ms, T0 + 30_000);
        for s in [35, 40, 500] {
            assert!(rules.evaluate(&lagging(s, s + 61)).is_empty(), "no repeat");
        }

        let resolved = rules.evaluate(&lagging(505, 60));
        assert_eq!(edges(&resolved), [(Alert::LagHigh, Edge::Resolved)]);
        assert_eq!(resolved[0].fired_ms, T0 + 30_000);
        assert_eq!(resolved[0].resolved_ms, Some(T0 + 505_000));
        assert!(rules.evaluate(&at(510)).is_empty(), "no repeat");
    }

    #[test]
    fn a_lag_that_dips_starts_its_hold_again() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let lagging = |s: u64, age: u64| Observation {
            status: status(10, age, 0),
            ..at(s)
        };

        assert!(rules.evaluate(&lagging(0, 70)).is_empty());
        assert!(rules.evaluate(&lagging(20, 30)).is_empty(), "dipped");
        assert!(rules.evaluate(&lagging(40, 70)).is_empty(), "held 0 s");
        assert!(rules.evaluate(&lagging(60, 70)).is_empty(), "held 20 s");
        assert_eq!(
            edges(&rules.evaluate(&lagging(70, 70))),
            [(Alert::LagHigh, Edge::Fired)]
        );
    }

    #[test]
    fn a_failed_status_query_changes_no_status_rule() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let lagging = Observation {
            status: status(10, 100, 0),
            ..at(0)
        };
        rules.evaluate(&lagging);
        assert_eq!(
            edges(&rules.evaluate(&Observation {
                status: status(10, 130, 0),
                ..at(30)
            })),
            [(Alert::LagHigh, Edge::Fired)]
        );

        let blind = Observation {
            status: None,
            ..at(40)
        };
        assert!(rules.evaluate(&blind).is_empty(), "still firing, unseen");
        assert_eq!(
            edges(&rules.evaluate(&at(50))),
            [(Alert::LagHigh, Edge::Resolved)]
        );
    }

    #[test]
    fn the_broker_fires_after_its_threshold_and_resolves_on_an_ack() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let down = |s: u64| Observation {
            broker_down_since_ms: T0 + 1000,
            last_ack_ms: T0,
            ..at(s)
        };

        assert!(rules.evaluate(&down(5)).is_empty());
        assert!(rules.evaluate(&down(31)).is_empty(), "30 s is not above");
        let fired = rules.evaluate(&down(32));
        assert_eq!(edges(&fired), [(Alert::BrokerUnreachable, Edge::Fired)]);
        assert_eq!(fired[0].value, 31);
        assert!(fired[0].description.contains("unreachable for 31 s"));
        assert!(rules.evaluate(&down(100)).is_empty(), "no repeat");

        let resolved = rules.evaluate(&at(101));
        assert_eq!(
            edges(&resolved),
            [(Alert::BrokerUnreachable, Edge::Resolved)]
        );
        assert!(rules.evaluate(&at(102)).is_empty());
    }

    #[test]
    fn the_broker_rule_needs_no_status() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let down = Observation {
            status: None,
            broker_down_since_ms: T0,
            ..at(60)
        };
        assert_eq!(
            edges(&rules.evaluate(&down)),
            [(Alert::BrokerUnreachable, Edge::Fired)]
        );
    }

    #[test]
    fn dead_letters_fire_on_growth_and_resolve_when_flat_for_the_hold() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let dead = |s: u64, count: u64| Observation {
            status: status(0, 0, count),
            ..at(s)
        };

        assert!(rules.evaluate(&dead(0, 3)).is_empty(), "the baseline");
        assert!(rules.evaluate(&dead(5, 3)).is_empty());
        let fired = rules.evaluate(&dead(10, 5));
        assert_eq!(edges(&fired), [(Alert::DeadLetters, Edge::Fired)]);
        assert_eq!(fired[0].description, "the dead letters grew from 3 to 5");
        assert!(
            rules.evaluate(&dead(20, 6)).is_empty(),
            "grew again, firing"
        );
        assert!(rules.evaluate(&dead(45, 6)).is_empty(), "flat for 25 s");

        let resolved = rules.evaluate(&dead(50, 6));
        assert_eq!(edges(&resolved), [(Alert::DeadLetters, Edge::Resolved)]);
        assert!(rules.evaluate(&dead(100, 6)).is_empty(), "no repeat");
        assert_eq!(
            edges(&rules.evaluate(&dead(105, 7))),
            [(Alert::DeadLetters, Edge::Fired)]
        );
    }

    #[test]
    fn dead_letters_resolve_at_once_when_emptied() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let dead = |s: u64, count: u64| Observation {
            status: status(0, 0, count),
            ..at(s)
        };

        rules.evaluate(&dead(0, 0));
        assert_eq!(
            edges(&rules.evaluate(&dead(5, 2))),
            [(Alert::DeadLetters, Edge::Fired)]
        );
        let resolved = rules.evaluate(&dead(6, 0));
        assert_eq!(edges(&resolved), [(Alert::DeadLetters, Edge::Resolved)]);
        assert_eq!(resolved[0].description, "the dead letters are empty");
    }

    #[test]
    fn a_stall_needs_an_old_backlog_and_no_ack() {
        let mut rules = Evaluator::new(thresholds(), T0);
        let stuck = |s: u64, age: u64, last_ack_s: u64| Observation {
            status: status(5, age, 0),
            last_ack_ms: T0 + last_ack_s * 1000,
            ..at(s)
        };

        // Idle for long, then a fresh event: no stall yet.
        let fresh = rules.evaluate(&stuck(1000, 1, 0));
        assert!(!edges(&fresh).contains(&(Alert::Stalled, Edge::Fired)));
        // An old backlog that still moves: no stall.
        let moving = rules.evaluate(&stuck(1100, 500, 1099));
        assert!(!edges(&moving).contains(&(Alert::Stalled, Edge::Fired)));

        let fired = rules.evaluate(&stuck(1300, 700, 1099));
        assert!(edges(&fired).contains(&(Alert::Stalled, Edge::Fired)));
        let stalled = fired.iter().find(|c| c.alert == Alert::Stalled).unwrap();
        assert_eq!(stalled.value, 201);
        assert!(
            rules.evaluate(&stuck(1400, 800, 1099)).is_empty(),
            "no repeat"
        );

        let resolved = rules.evaluate(&stuck(1405, 5, 1404));
        assert!(edges(&resolved).contains(&(Alert::Stalled, Edge::Resolved)));
    }

    #[test]
    fn a_relay_that_never_acked_counts_from_its_start() {
        let mut rules = Evaluator::new(thresholds(), T0 + 100_000);
        let stuck = |s: u64| Observation {
            status: status(5, 500, 0),
            last_ack_ms: 0,
            ..at(s)
        };

        let early = rules.evaluate(&stuck(200));
        assert!(!edges(&early).contains(&(Alert::Stalled, Edge::Fired)));
        let late = rules.evaluate(&stuck(221));
        assert!(edges(&late).contains(&(Alert::Stalled, Edge::Fired)));
    }

    #[test]
    fn the_payload_is_what_alertmanager_reads() {
        let fired = Transition {
            alert: Alert::BrokerUnreachable,
            edge: Edge::Fired,
            fired_ms: T0,
            resolved_ms: None,
            value: 31,
            description: "the broker has been unreachable for 31 s".into(),
        };
        let resolved = Transition {
            alert: Alert::LagHigh,
            edge: Edge::Resolved,
            fired_ms: T0,
            resolved_ms: Some(T0 + 1500),
            value: 0,
            description: "x".into(),
        };

        let body = payload(&[fired, resolved]);
        let alerts = body.as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["labels"]["alertname"], "OutboxBrokerUnreachable");
        assert_eq!(alerts[0]["labels"]["severity"], "critical");
        assert_eq!(alerts[0]["labels"]["service"], "outbox");
        assert_eq!(
            alerts[0]["annotations"]["summary"],
            Alert::BrokerUnreachable.summary()
        );
        assert_eq!(alerts[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(alerts[0].get("endsAt").is_none());
        assert_eq!(alerts[1]["endsAt"], "2023-11-14T22:13:21.500Z");
    }

    #[test]
    fn the_shown_url_drops_path_and_query() {
        let url = Url::parse("http://alerts.example:9093/hook/s3cret?token=x").unwrap();
        assert_eq!(shown(&url), "http://alerts.example:9093");
    }
}

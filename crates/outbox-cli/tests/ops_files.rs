//! The files in `ops/`: the Prometheus alerting rules and the Grafana dashboard
//! are well formed and read only metrics the relay documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    let path = repo(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The metric names in the table of `outbox-core/src/telemetry.rs`, with
/// their kinds.
fn documented() -> BTreeMap<String, String> {
    let names: BTreeMap<String, String> = read("crates/outbox-core/src/telemetry.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('`')?;
            let kind = rest.trim_start_matches(" |").split('|').next()?.trim();
            Some((name.to_owned(), kind.to_owned()))
        })
        .filter(|(name, _)| name.starts_with("outbox_"))
        .collect();
    assert!(names.len() >= 10, "the table was not found: {names:?}");
    names
}

/// The metrics `expr` reads that are not documented, a histogram's series
/// (`_bucket`, `_sum`, `_count`) counting as its own name.
fn undocumented(expr: &str, documented: &BTreeMap<String, String>) -> Vec<String> {
    let mut missing = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("outbox_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| documented.get(*base).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        if !documented.contains_key(base) {
            missing.push(name.to_owned());
        }
        rest = &tail[end..];
    }
    missing
}

fn metrics_in(expr: &str) -> Vec<String> {
    undocumented(expr, &BTreeMap::new())
}

#[test]
fn the_metric_check_flags_unknown_names() {
    let known = documented();
    assert_eq!(known["outbox_commit_to_ack_seconds"], "histogram");
    assert_eq!(known["outbox_leases_held"], "gauge");
    assert_eq!(
        undocumented("sum(rate(outbox_events_published_total[1m]))", &known),
        Vec::<String>::new()
    );
    assert_eq!(
        undocumented("rate(outbox_commit_to_ack_seconds_bucket[5m])", &known),
        Vec::<String>::new()
    );
    assert_eq!(
        undocumented("outbox_pending_events > 0 and outbox_lag_total", &known),
        ["outbox_lag_total"]
    );
    assert_eq!(
        undocumented("outbox_leases_held_bucket", &known),
        ["outbox_leases_held_bucket"],
        "a gauge has no buckets"
    );
}

#[test]
fn every_alert_rule_is_complete_and_reads_documented_metrics() {
    let known = documented();
    let rules: Yaml = serde_norway::from_str(&read("ops/prometheus/outbox-alerts.yml"))
        .expect("the rules file is YAML");

    let groups = rules["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    let mut names = BTreeSet::new();
    for group in groups {
        assert!(group["name"].is_string(), "a group without a name");
        let list = group["rules"].as_sequence().expect("rules");
        assert!(!list.is_empty(), "an empty group");
        for rule in list {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: expr"));
            let text = |v: &Yaml| v.as_str().is_some_and(|s| !s.trim().is_empty());
            assert!(text(&rule["for"]), "{name}: for");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{name}: severity {severity:?}"
            );
            assert!(text(&rule["annotations"]["summary"]), "{name}: summary");
            assert!(
                text(&rule["annotations"]["description"]),
                "{name}: description"
            );
            assert_eq!(
                undocumented(expr, &known),
                Vec::<String>::new(),
                "{name} reads metrics telemetry.rs does not document"
            );
            assert!(
                !metrics_in(expr).is_empty(),
                "{name} reads no outbox metric"
            );
            assert!(names.insert(name.to_owned()), "{name} twice");
        }
    }

    // The relay's built-in alerts have their Prometheus twins.
    for builtin in [
        "OutboxLagHigh",
        "OutboxDeadLetters",
        "OutboxBrokerUnreachable",
        "OutboxStalled",
    ] {
        assert!(names.contains(builtin), "{builtin} missing from the rules");
    }
}

#[test]
fn promtool_accepts_the_rules() {
    let rules = repo("ops/prometheus/outbox-alerts.yml");
    let out = match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !outbox_testkit::in_ci(),
                "promtool is required under CI=true (ops/ci.sh installs it): {e}"
            );
            // Written past the harness's output capture, so the skip is seen.
            let line = format!("skipped promtool_accepts_the_rules: no promtool: {e}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_dashboard_panel_has_a_title_and_documented_targets() {
    let known = documented();
    let dashboard: Json = serde_json::from_str(&read("ops/grafana/outbox-dashboard.json"))
        .expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string());

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {panel}");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no target");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: expr"));
            assert_eq!(
                undocumented(expr, &known),
                Vec::<String>::new(),
                "{title} reads metrics telemetry.rs does not document"
            );
            used.extend(metrics_in(expr));
        }
    }

    for signal in [
        "outbox_pending_events",
        "outbox_oldest_pending_age_seconds",
        "outbox_events_published_total",
        "outbox_commit_to_ack_seconds_bucket",
        "outbox_publish_failures_total",
        "outbox_dead_letters",
        "outbox_relay_up",
        "outbox_leases_held",
    ] {
        assert!(used.contains(signal), "no panel shows {signal}");
    }
}

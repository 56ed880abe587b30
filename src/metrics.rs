//! Prometheus metrics: a small process-wide registry of counters, gauges and
//! histograms with labels, rendered at `/metrics` in the text exposition format.
//! Anything records with one call (`crate::metrics::webhook("whatsapp", "ok")`, or
//! `crate::metrics::inc(NAME, &[("label", value)])` for a new metric, described in
//! [`DESCRIPTIONS`]). Label values must come from small fixed sets (platforms,
//! outcomes), never from ids or payloads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;

pub const WEBHOOK_REQUESTS: &str = "omnigate_webhook_requests_total";
pub const INBOX_OPEN: &str = "omnigate_inbox_open_events";
pub const INBOX_OLDEST_AGE: &str = "omnigate_inbox_oldest_event_age_seconds";
pub const PROCESSING_SECONDS: &str = "omnigate_event_processing_seconds";
pub const END_TO_END_SECONDS: &str = "omnigate_event_end_to_end_seconds";
pub const EVENTS_HANDLED: &str = "omnigate_events_handled_total";
pub const SENDS: &str = "omnigate_outbound_sends_total";
pub const SEND_SECONDS: &str = "omnigate_outbound_send_seconds";
pub const PROVIDER_CALLS: &str = "omnigate_provider_calls_total";
pub const PROVIDER_FAILOVERS: &str = "omnigate_provider_failovers_total";
pub const RETENTION_DELETED: &str = "omnigate_retention_deleted_total";
pub const RATE_LIMITED: &str = "omnigate_admin_rate_limited_total";
// -- telegram, discord ----
pub const GATEWAY_SESSIONS: &str = "omnigate_discord_gateway_sessions";
pub const GATEWAY_LEASES: &str = "omnigate_discord_gateway_lease_attempts_total";

/// Name, type and help of every metric (unlisted names are exported untyped).
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (WEBHOOK_REQUESTS, Kind::Counter, "Webhook deliveries by platform and outcome (ok, duplicate, bad_signature, too_large, unknown_channel, unavailable, bad_request, error)."),
    (INBOX_OPEN, Kind::Gauge, "Inbox events not yet done, all instances together."),
    (INBOX_OLDEST_AGE, Kind::Gauge, "Age of the oldest inbox event not yet done (0 when none)."),
    (PROCESSING_SECONDS, Kind::Histogram, "Time from claiming an inbox event to completing it."),
    (END_TO_END_SECONDS, Kind::Histogram, "Time from receiving an inbox event to completing it (reply queued)."),
    (EVENTS_HANDLED, Kind::Counter, "Inbox events handled by result (done, retry, failed, lease_lost)."),
    (SENDS, Kind::Counter, "Outbound sends by platform and result (sent, retry, failed, parked)."),
    (SEND_SECONDS, Kind::Histogram, "Duration of one outbound platform API call."),
    (PROVIDER_CALLS, Kind::Counter, "Assistant provider calls by provider and result."),
    (PROVIDER_FAILOVERS, Kind::Counter, "Fail-overs from one assistant provider to the next."),
    (RETENTION_DELETED, Kind::Counter, "Rows deleted by the retention sweeper, by data class."),
    (RATE_LIMITED, Kind::Counter, "Admin API requests refused with 429."),
    (GATEWAY_SESSIONS, Kind::Gauge, "Discord gateway sessions this instance holds."),
    (GATEWAY_LEASES, Kind::Counter, "Tries to take a Discord bot's gateway session lease, by result (taken, busy: another instance holds it, error)."),
];

/// Histogram bucket bounds, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

type Labels = Vec<(&'static str, String)>;

enum Series {
    Counter(u64),
    Gauge(f64),
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

static REGISTRY: LazyLock<Mutex<BTreeMap<&'static str, BTreeMap<Labels, Series>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn with_series(
    name: &'static str,
    labels: &[(&'static str, &str)],
    f: impl FnOnce(&mut Series),
    new: impl FnOnce() -> Series,
) {
    let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
    if let Ok(mut registry) = REGISTRY.lock() {
        let series = registry
            .entry(name)
            .or_default()
            .entry(labels)
            .or_insert_with(new);
        f(series);
    }
}

/// Adds one to a counter.
pub fn inc(name: &'static str, labels: &[(&'static str, &str)]) {
    add(name, labels, 1);
}

/// Adds `n` to a counter.
pub fn add(name: &'static str, labels: &[(&'static str, &str)], n: u64) {
    with_series(
        name,
        labels,
        |s| {
            if let Series::Counter(c) = s {
                *c += n;
            }
        },
        || Series::Counter(0),
    );
}

/// Sets a gauge.
pub fn set(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    with_series(
        name,
        labels,
        |s| {
            if let Series::Gauge(g) = s {
                *g = value;
            }
        },
        || Series::Gauge(0.0),
    );
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
    with_series(
        name,
        labels,
        |s| {
            if let Series::Histogram { counts, sum, count } = s {
                for (bound, c) in BUCKETS.iter().zip(counts.iter_mut()) {
                    if seconds <= *bound {
                        *c += 1;
                    }
                }
                *sum += seconds;
                *count += 1;
            }
        },
        || Series::Histogram {
            counts: vec![0; BUCKETS.len()],
            sum: 0.0,
            count: 0,
        },
    );
}

// -- one-line recorders for the spine and the features around it ----------------------

pub fn webhook(platform: &str, outcome: &str) {
    inc(
        WEBHOOK_REQUESTS,
        &[("platform", platform), ("outcome", outcome)],
    );
}

pub fn send(platform: &str, result: &str, seconds: f64) {
    inc(SENDS, &[("platform", platform), ("result", result)]);
    observe(SEND_SECONDS, &[("platform", platform)], seconds);
}

pub fn provider_call(provider: &str, result: &str) {
    inc(
        PROVIDER_CALLS,
        &[("provider", provider), ("result", result)],
    );
}

pub fn provider_failover(from: &str, to: &str) {
    inc(PROVIDER_FAILOVERS, &[("from", from), ("to", to)]);
}

pub fn retention_deleted(class: &str, rows: u64) {
    add(RETENTION_DELETED, &[("class", class)], rows);
}

/// An inbox event finished: its result and, when done, its latencies.
pub fn event_handled(result: &str, processing: f64, end_to_end: Option<f64>) {
    inc(EVENTS_HANDLED, &[("result", result)]);
    observe(PROCESSING_SECONDS, &[], processing);
    if let Some(e2e) = end_to_end {
        observe(END_TO_END_SECONDS, &[], e2e);
    }
}

// -- exposition ------------------------------------------------------------------------

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// The registry in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let mut out = String::new();
    let Ok(registry) = REGISTRY.lock() else {
        return out;
    };
    for (name, series) in registry.iter() {
        let described = DESCRIPTIONS.iter().find(|(n, _, _)| n == name);
        if let Some((_, kind, help)) = described {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        for (labels, value) in series {
            match value {
                Series::Counter(c) => {
                    let _ = writeln!(out, "{name}{} {c}", label_text(labels, None));
                }
                Series::Gauge(g) => {
                    let _ = writeln!(out, "{name}{} {g}", label_text(labels, None));
                }
                Series::Histogram { counts, sum, count } => {
                    for (bound, c) in BUCKETS.iter().zip(counts) {
                        let le = label_text(labels, Some(("le", bound.to_string())));
                        let _ = writeln!(out, "{name}_bucket{le} {c}");
                    }
                    let inf = label_text(labels, Some(("le", "+Inf".to_string())));
                    let _ = writeln!(out, "{name}_bucket{inf} {count}");
                    let _ = writeln!(out, "{name}_sum{} {sum}", label_text(labels, None));
                    let _ = writeln!(out, "{name}_count{} {count}", label_text(labels, None));
                }
            }
        }
    }
    out
}

/// `GET /metrics`: the registry, with the inbox gauges read from the database.
pub async fn endpoint(State(app): State<App>) -> Response {
    match app.store.inbox_backlog().await {
        Ok(backlog) => {
            set(INBOX_OPEN, &[], backlog.open as f64);
            let age = backlog
                .oldest_received_at
                .map(|at| ((crate::store::now_ms() - at).max(0) as f64) / 1000.0)
                .unwrap_or(0.0);
            set(INBOX_OLDEST_AGE, &[], age);
        }
        Err(e) => tracing::warn!(error = %e, "inbox gauges unavailable"),
    }
    // The AI pipeline keeps its own counters (provider calls, failovers, breakers,
    // tokens and cost); they are exposed here with the rest.
    let mut body = render();
    body.push_str(&app.ai.metrics());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// Set by a webhook handler on its response when the outcome is not plain from the
/// status (a delivery whose events were all stored before is `duplicate`).
#[derive(Debug, Clone, Copy)]
pub struct WebhookOutcome(pub &'static str);

/// Middleware on the webhook routes: counts each POST by platform and outcome.
pub async fn track_webhooks(req: Request, next: Next) -> Response {
    let counted = req.method() == axum::http::Method::POST;
    let platform = platform_of(req.uri().path());
    let response = next.run(req).await;
    if counted {
        let outcome = match response.extensions().get::<WebhookOutcome>() {
            Some(WebhookOutcome(outcome)) => outcome,
            None => match response.status().as_u16() {
                200..=299 => "ok",
                401 | 403 => "bad_signature",
                404 => "unknown_channel",
                413 => "too_large",
                503 => "unavailable",
                400..=499 => "bad_request",
                _ => "error",
            },
        };
        webhook(platform, outcome);
    }
    response
}

/// The platform of a webhook path, from a fixed set (paths are caller-controlled).
fn platform_of(path: &str) -> &'static str {
    let segment = path
        .strip_prefix("/webhooks/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    match segment {
        "meta" => "meta",
        "slack" => "slack",
        other => other
            .parse::<channels::ChannelKind>()
            .map(|k| k.as_str())
            .unwrap_or("other"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_text_format() {
        inc("omnigate_test_only_total", &[("a", "x\"y")]);
        observe("omnigate_test_only_seconds", &[], 0.2);
        let text = render();
        assert!(text.contains("omnigate_test_only_total{a=\"x\\\"y\"} 1"));
        assert!(text.contains("omnigate_test_only_seconds_bucket{le=\"0.1\"} 0"));
        assert!(text.contains("omnigate_test_only_seconds_bucket{le=\"0.25\"} 1"));
        assert!(text.contains("omnigate_test_only_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("omnigate_test_only_seconds_count 1"));
    }

    #[test]
    fn webhook_platform_label_is_from_a_fixed_set() {
        assert_eq!(platform_of("/webhooks/whatsapp/abc"), "whatsapp");
        assert_eq!(platform_of("/webhooks/meta"), "meta");
        assert_eq!(platform_of("/webhooks/../../etc"), "other");
        assert_eq!(platform_of("/webhooks/attacker-chosen-label/x"), "other");
    }
}

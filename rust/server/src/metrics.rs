//! Prometheus text exposition (format 0.0.4) of the core's counters, written by hand: a
//! dozen families of plain counters need no client library.
//!
//! The names, types, help texts and labels are the module's (`synapse_rendezvous/metrics.py`),
//! so that one dashboard and one set of alerts serve both, with one difference: the
//! module labels every sample with its homeserver's `server_name`, since Synapse can run
//! several homeservers in one process. A standalone server serves one, and Prometheus
//! already labels every sample it scrapes with the target's `instance` (and `job`), which
//! is what tells several servers apart (and what `docs/grafana-dashboard.json` filters on);
//! a label of our own under that name would clash with it. So the samples carry no
//! `server_name` label. The server adds a few families of its own, under
//! `synapse_rendezvous_server_`.

use std::fmt::Write;

use synapse_rendezvous_core::metrics::{
    MetricsSnapshot, ProtocolMetrics, LATENCY_BUCKETS, STORE_ERROR_KINDS,
};
use synapse_rendezvous_core::Protocol;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PREFIX: &str = "synapse_rendezvous";

/// What the server itself counts, beside the core's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Client connections open now.
    pub open_connections: u64,
    /// Client connections accepted since start.
    pub accepted_connections: u64,
    /// Connections to Redis up now (Redis store only).
    pub redis_connections_up: Option<u64>,
}

/// One reading of everything, as the exposition text.
pub fn render(
    snapshot: &MetricsSnapshot,
    store: &str,
    live_sessions: Option<usize>,
    server: &ServerStats,
) -> String {
    let mut out = String::with_capacity(4096);
    let store_label = format!("store=\"{store}\"");
    family(
        &mut out,
        "live_sessions",
        "gauge",
        "Rendezvous sessions alive now",
    );
    if let Some(live) = live_sessions {
        sample(&mut out, "live_sessions", &store_label, live);
    }
    family(
        &mut out,
        "sessions_expired_total",
        "counter",
        "Rendezvous sessions removed after they expired",
    );
    sample(
        &mut out,
        "sessions_expired_total",
        &store_label,
        snapshot.sessions_expired,
    );
    protocol_families(&mut out, snapshot, &store_label);
    family(
        &mut out,
        "store_errors_total",
        "counter",
        "Failed store calls by kind",
    );
    for (kind, count) in STORE_ERROR_KINDS.iter().zip(snapshot.store_errors) {
        let labels = format!("{store_label},kind=\"{kind}\"");
        sample(&mut out, "store_errors_total", &labels, count);
    }
    family(
        &mut out,
        "store_latency_seconds",
        "histogram",
        "Duration of store calls",
    );
    for (bound, count) in LATENCY_BUCKETS.iter().zip(snapshot.latency_buckets) {
        let labels = format!("{store_label},le=\"{}\"", python_float(*bound));
        sample(&mut out, "store_latency_seconds_bucket", &labels, count);
    }
    let labels = format!("{store_label},le=\"+Inf\"");
    sample(
        &mut out,
        "store_latency_seconds_bucket",
        &labels,
        snapshot.latency_count,
    );
    sample(
        &mut out,
        "store_latency_seconds_count",
        &store_label,
        snapshot.latency_count,
    );
    sample(
        &mut out,
        "store_latency_seconds_sum",
        &store_label,
        snapshot.latency_sum_seconds,
    );
    server_families(&mut out, server);
    out
}

/// A per-protocol counter family: name, help text, and its value in one protocol's share.
type Counter = (&'static str, &'static str, fn(&ProtocolMetrics) -> u64);

/// The families labelled by `protocol`, as the module writes them.
fn protocol_families(out: &mut String, snapshot: &MetricsSnapshot, store_label: &str) {
    let counters: [Counter; 5] = [
        ("sessions_created", "Rendezvous sessions created", |p| {
            p.sessions_created
        }),
        (
            "sessions_deleted",
            "Rendezvous sessions completed by DELETE",
            |p| p.sessions_deleted,
        ),
        (
            "conflicts",
            "Writes refused as concurrent: 412 (MSC4108, stale If-Match) or 409 (MSC4388)",
            |p| p.conflicts,
        ),
        (
            "rate_limited",
            "Requests refused with 429 by a per-client limit",
            |p| p.rate_limited,
        ),
        (
            "retries",
            "MSC4388 writes answered as idempotent retries (stale token, same data)",
            |p| p.retries,
        ),
    ];
    for (name, help, value) in counters {
        let name = format!("{name}_total");
        family(out, &name, "counter", help);
        for protocol in Protocol::ALL {
            let labels = format!("{store_label},protocol=\"{}\"", protocol.name());
            sample(out, &name, &labels, value(snapshot.protocol(protocol)));
        }
    }
    family(
        out,
        "responses_total",
        "counter",
        "Rendezvous responses by protocol, request method and status code",
    );
    for protocol in Protocol::ALL {
        for (method, status, count) in &snapshot.protocol(protocol).responses {
            let status = if *status == 0 {
                "other".to_owned()
            } else {
                status.to_string()
            };
            let labels = format!(
                "protocol=\"{}\",method=\"{method}\",status=\"{status}\"",
                protocol.name()
            );
            sample(out, "responses_total", &labels, count);
        }
    }
}

fn server_families(out: &mut String, server: &ServerStats) {
    family(
        out,
        "server_open_connections",
        "gauge",
        "Client connections open now",
    );
    sample(out, "server_open_connections", "", server.open_connections);
    family(
        out,
        "server_accepted_connections_total",
        "counter",
        "Client connections accepted since start",
    );
    sample(
        out,
        "server_accepted_connections_total",
        "",
        server.accepted_connections,
    );
    if let Some(up) = server.redis_connections_up {
        family(
            out,
            "server_redis_connections_up",
            "gauge",
            "Connections to Redis open and usable now",
        );
        sample(out, "server_redis_connections_up", "", up);
    }
    family(
        out,
        "server_info",
        "gauge",
        "The running synapse-rendezvous-server, by version",
    );
    let labels = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    sample(out, "server_info", &labels, 1);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}_{name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{PREFIX}_{name} {value}");
    } else {
        let _ = writeln!(out, "{PREFIX}_{name}{{{labels}}} {value}");
    }
}

/// A bucket bound spelt as Python's `str(float)` spells it (`5e-05`, `0.0001`, `1.0`), as
/// the module's samples carry it: the `le` label is compared as text when series of both
/// are summed.
fn python_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e16 {
        return format!("{value:.1}");
    }
    if value != 0.0 && value.abs() < 1e-4 {
        // Rust writes `5e-5`; Python pads the exponent to two digits.
        let text = format!("{value:e}");
        if let Some((mantissa, exponent)) = text.split_once('e') {
            let (sign, digits) = exponent
                .strip_prefix('-')
                .map_or(("+", exponent), |digits| ("-", digits));
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_spelt_like_python() {
        let spelt: Vec<String> = LATENCY_BUCKETS.iter().map(|b| python_float(*b)).collect();
        assert_eq!(
            spelt,
            [
                "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                "0.025", "0.05", "0.1", "0.25", "0.5", "1.0"
            ]
        );
    }

    #[test]
    fn exposition_has_the_module_families() {
        let mut by_protocol: [ProtocolMetrics; 2] = Default::default();
        by_protocol[Protocol::Msc4108.index()] = ProtocolMetrics {
            sessions_created: 3,
            responses: vec![("GET", 304, 7), ("OTHER", 0, 1)],
            ..ProtocolMetrics::default()
        };
        by_protocol[Protocol::Msc4388.index()].retries = 2;
        let snapshot = MetricsSnapshot {
            sessions_created: 3,
            responses: vec![("GET", 304, 7), ("OTHER", 0, 1)],
            by_protocol,
            latency_count: 2,
            latency_buckets: [2; LATENCY_BUCKETS.len()],
            latency_sum_seconds: 0.5,
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, "memory", Some(4), &ServerStats::default());
        for line in [
            "# TYPE synapse_rendezvous_live_sessions gauge",
            "synapse_rendezvous_live_sessions{store=\"memory\"} 4",
            "# TYPE synapse_rendezvous_sessions_created_total counter",
            "synapse_rendezvous_sessions_created_total{store=\"memory\",protocol=\"msc4108\"} 3",
            "synapse_rendezvous_sessions_created_total{store=\"memory\",protocol=\"msc4388\"} 0",
            "synapse_rendezvous_retries_total{store=\"memory\",protocol=\"msc4388\"} 2",
            "synapse_rendezvous_responses_total{protocol=\"msc4108\",method=\"GET\",status=\"304\"} 7",
            "synapse_rendezvous_responses_total{protocol=\"msc4108\",method=\"OTHER\",status=\"other\"} 1",
            "synapse_rendezvous_store_errors_total{store=\"memory\",kind=\"timeout\"} 0",
            "synapse_rendezvous_store_latency_seconds_bucket{store=\"memory\",le=\"5e-05\"} 2",
            "synapse_rendezvous_store_latency_seconds_bucket{store=\"memory\",le=\"+Inf\"} 2",
            "synapse_rendezvous_store_latency_seconds_sum{store=\"memory\"} 0.5",
            "synapse_rendezvous_server_open_connections 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("server_name"));
    }
}

//! Counters of what the API did, kept in atomics so that counting costs nothing measurable
//! on the request path; the binding exports them to Prometheus at scrape time.
//!
//! Request counters are kept per protocol ([`MetricsSnapshot::by_protocol`], indexed by
//! [`Protocol::index`], labelled by [`Protocol::name`]); the snapshot's older top-level
//! fields are their totals over both protocols, so exporters written before MSC4388 keep
//! reporting what they did (all of it MSC4108 while MSC4388 is off). Expiry, store errors
//! and store latency belong to the store, which serves both protocols, and stay totals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::session::Protocol;
use crate::store::StoreError;

/// Methods counted separately; anything else is counted as `OTHER`.
pub const METHODS: [&str; 7] = ["POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "OTHER"];
/// Statuses counted separately; anything else is counted as status 0.
pub const STATUSES: [u16; 16] = [
    200, 201, 202, 204, 304, 307, 400, 403, 404, 405, 409, 412, 413, 429, 500, 503,
];
/// One slot per counted status, plus one for the rest.
const STATUS_SLOTS: usize = STATUSES.len() + 1;
/// Upper bounds of the store latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// Kinds of store error, in the order of [`MetricsSnapshot::store_errors`].
pub const STORE_ERROR_KINDS: [&str; 4] = ["unavailable", "timeout", "overloaded", "corrupt"];

/// The live counters of one API instance.
#[derive(Debug)]
pub struct Metrics {
    per_protocol: [Counters; 2],
    sessions_expired: AtomicU64,
    store_errors: [AtomicU64; STORE_ERROR_KINDS.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

/// The request counters of one protocol.
#[derive(Debug)]
struct Counters {
    sessions_created: AtomicU64,
    sessions_deleted: AtomicU64,
    conflicts: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
    responses: [[AtomicU64; STATUS_SLOTS]; METHODS.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            sessions_created: AtomicU64::new(0),
            sessions_deleted: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// The request counters of one protocol at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtocolMetrics {
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions ended by DELETE.
    pub sessions_deleted: u64,
    /// Writes refused as concurrent (MSC4108: 412 for a stale `If-Match`; MSC4388: 409).
    pub conflicts: u64,
    /// Requests refused by a rate limit or the per-client session cap.
    pub rate_limited: u64,
    /// MSC4388 writes acknowledged as idempotent retries (stale token, same data); always 0
    /// for MSC4108.
    pub retries: u64,
    /// `(method, status, count)` for every pair seen at least once.
    pub responses: Vec<(&'static str, u16, u64)>,
}

/// A copy of every counter at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// Sessions created (both protocols).
    pub sessions_created: u64,
    /// Sessions ended by DELETE.
    pub sessions_deleted: u64,
    /// Ended sessions the store removed, by any call.
    pub sessions_expired: u64,
    /// Writes refused because their `If-Match` was stale (412).
    pub conflicts: u64,
    /// Requests refused by a rate limit or the per-client session cap.
    pub rate_limited: u64,
    /// `(method, status, count)` for every pair seen at least once.
    pub responses: Vec<(&'static str, u16, u64)>,
    /// Store errors, by [`STORE_ERROR_KINDS`].
    pub store_errors: [u64; STORE_ERROR_KINDS.len()],
    /// Cumulative counts per [`LATENCY_BUCKETS`] bound.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    /// Store calls measured.
    pub latency_count: u64,
    /// Their total duration, in seconds.
    pub latency_sum_seconds: f64,
    /// The request counters of each protocol, by [`Protocol::index`]: the fields above
    /// (but `sessions_expired` and the store's) are their sums.
    pub by_protocol: [ProtocolMetrics; 2],
}

impl MetricsSnapshot {
    /// The counters of `protocol`.
    pub fn protocol(&self, protocol: Protocol) -> &ProtocolMetrics {
        &self.by_protocol[protocol.index()]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            per_protocol: std::array::from_fn(|_| Counters::default()),
            sessions_expired: AtomicU64::new(0),
            store_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    fn of(&self, protocol: Protocol) -> &Counters {
        &self.per_protocol[protocol.index()]
    }

    pub(crate) fn session_created(&self, protocol: Protocol) {
        self.of(protocol)
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_deleted(&self, protocol: Protocol) {
        self.of(protocol)
            .sessions_deleted
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self, protocol: Protocol) {
        self.of(protocol).retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn expired(&self, count: usize) {
        if count > 0 {
            self.sessions_expired
                .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    pub(crate) fn conflict(&self, protocol: Protocol) {
        self.of(protocol).conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self, protocol: Protocol) {
        self.of(protocol)
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, protocol: Protocol, method: &Method, status: StatusCode) {
        let method = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let status = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUS_SLOTS - 1);
        self.of(protocol).responses[method][status].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one store call: its duration, and its error if it failed.
    pub(crate) fn store_call(&self, elapsed: Duration, error: Option<&StoreError>) {
        let seconds = elapsed.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(error) = error {
            let kind = match error {
                StoreError::Unavailable(_) => 0,
                StoreError::Timeout => 1,
                StoreError::Overloaded => 2,
                StoreError::Corrupt(_) => 3,
            };
            self.store_errors[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every counter, now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let by_protocol: [ProtocolMetrics; 2] =
            std::array::from_fn(|index| self.per_protocol[index].snapshot());
        let sum = |field: fn(&ProtocolMetrics) -> u64| by_protocol.iter().map(field).sum();
        let mut responses = Vec::new();
        for (m, method) in METHODS.iter().enumerate() {
            for slot in 0..STATUS_SLOTS {
                let count: u64 = self
                    .per_protocol
                    .iter()
                    .map(|counters| load(&counters.responses[m][slot]))
                    .sum();
                if count > 0 {
                    let status = STATUSES.get(slot).copied().unwrap_or(0);
                    responses.push((*method, status, count));
                }
            }
        }
        #[allow(clippy::cast_precision_loss)] // nanoseconds summed stay far below 2^53 for years
        let latency_sum_seconds = load(&self.latency_sum_nanos) as f64 / 1e9;
        MetricsSnapshot {
            sessions_created: sum(|p| p.sessions_created),
            sessions_deleted: sum(|p| p.sessions_deleted),
            sessions_expired: load(&self.sessions_expired),
            conflicts: sum(|p| p.conflicts),
            rate_limited: sum(|p| p.rate_limited),
            responses,
            store_errors: std::array::from_fn(|i| load(&self.store_errors[i])),
            latency_buckets: std::array::from_fn(|i| load(&self.latency_buckets[i])),
            latency_count: load(&self.latency_count),
            latency_sum_seconds,
            by_protocol,
        }
    }
}

impl Counters {
    fn snapshot(&self) -> ProtocolMetrics {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut responses = Vec::new();
        for (method, row) in METHODS.iter().zip(&self.responses) {
            for (slot, counter) in row.iter().enumerate() {
                let count = load(counter);
                if count > 0 {
                    let status = STATUSES.get(slot).copied().unwrap_or(0);
                    responses.push((*method, status, count));
                }
            }
        }
        ProtocolMetrics {
            sessions_created: load(&self.sessions_created),
            sessions_deleted: load(&self.sessions_deleted),
            conflicts: load(&self.conflicts),
            rate_limited: load(&self.rate_limited),
            retries: load(&self.retries),
            responses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_method_and_status() {
        let metrics = Metrics::default();
        metrics.response(Protocol::Msc4108, &Method::GET, StatusCode::NOT_MODIFIED);
        metrics.response(Protocol::Msc4108, &Method::GET, StatusCode::NOT_MODIFIED);
        metrics.response(Protocol::Msc4108, &Method::PATCH, StatusCode::IM_A_TEAPOT);
        metrics.response(Protocol::Msc4388, &Method::GET, StatusCode::NOT_MODIFIED);
        metrics.response(Protocol::Msc4388, &Method::PUT, StatusCode::CONFLICT);
        metrics.session_created(Protocol::Msc4388);
        let snapshot = metrics.snapshot();
        assert_eq!(
            snapshot.responses,
            vec![("GET", 304, 3), ("PUT", 409, 1), ("OTHER", 0, 1)]
        );
        assert_eq!(
            snapshot.protocol(Protocol::Msc4108).responses,
            vec![("GET", 304, 2), ("OTHER", 0, 1)]
        );
        assert_eq!(
            snapshot.protocol(Protocol::Msc4388).responses,
            vec![("GET", 304, 1), ("PUT", 409, 1)]
        );
        assert_eq!(snapshot.sessions_created, 1);
        assert_eq!(snapshot.protocol(Protocol::Msc4108).sessions_created, 0);
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let metrics = Metrics::default();
        metrics.store_call(Duration::from_micros(300), None);
        metrics.store_call(Duration::from_secs(3), Some(&StoreError::Timeout));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.latency_buckets[2], 0);
        assert_eq!(snapshot.latency_buckets[3], 1);
        assert_eq!(snapshot.latency_buckets[13], 1);
        assert_eq!(snapshot.latency_count, 2);
        assert_eq!(snapshot.store_errors, [0, 1, 0, 0]);
    }
}

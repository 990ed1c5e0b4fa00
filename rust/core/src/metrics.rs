//! Counters of what the API did, kept in atomics so that counting costs nothing measurable
//! on the request path; the binding exports them to Prometheus at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::store::StoreError;

/// Methods counted separately; anything else is counted as `OTHER`.
pub const METHODS: [&str; 7] = ["POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "OTHER"];
/// Statuses counted separately; anything else is counted as status 0.
pub const STATUSES: [u16; 14] = [
    200, 201, 202, 204, 304, 307, 400, 404, 405, 412, 413, 429, 500, 503,
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
    sessions_created: AtomicU64,
    sessions_deleted: AtomicU64,
    sessions_expired: AtomicU64,
    conflicts: AtomicU64,
    rate_limited: AtomicU64,
    responses: [[AtomicU64; STATUS_SLOTS]; METHODS.len()],
    store_errors: [AtomicU64; STORE_ERROR_KINDS.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

/// A copy of every counter at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// Sessions created.
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_created: AtomicU64::new(0),
            sessions_deleted: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            store_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub(crate) fn session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_deleted(&self) {
        self.sessions_deleted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn expired(&self, count: usize) {
        if count > 0 {
            self.sessions_expired
                .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    pub(crate) fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, method: &Method, status: StatusCode) {
        let method = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let status = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUS_SLOTS - 1);
        self.responses[method][status].fetch_add(1, Ordering::Relaxed);
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
        #[allow(clippy::cast_precision_loss)] // nanoseconds summed stay far below 2^53 for years
        let latency_sum_seconds = load(&self.latency_sum_nanos) as f64 / 1e9;
        MetricsSnapshot {
            sessions_created: load(&self.sessions_created),
            sessions_deleted: load(&self.sessions_deleted),
            sessions_expired: load(&self.sessions_expired),
            conflicts: load(&self.conflicts),
            rate_limited: load(&self.rate_limited),
            responses,
            store_errors: std::array::from_fn(|i| load(&self.store_errors[i])),
            latency_buckets: std::array::from_fn(|i| load(&self.latency_buckets[i])),
            latency_count: load(&self.latency_count),
            latency_sum_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_method_and_status() {
        let metrics = Metrics::default();
        metrics.response(&Method::GET, StatusCode::NOT_MODIFIED);
        metrics.response(&Method::GET, StatusCode::NOT_MODIFIED);
        metrics.response(&Method::PATCH, StatusCode::IM_A_TEAPOT);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.responses, vec![("GET", 304, 2), ("OTHER", 0, 1)]);
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

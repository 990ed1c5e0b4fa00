//! `Metrics`: one reading of a handler's counters, typed for the Prometheus collector.

use pyo3::prelude::*;
use synapse_rendezvous_core::metrics::{
    MetricsSnapshot, ProtocolMetrics, LATENCY_BUCKETS, STORE_ERROR_KINDS,
};
use synapse_rendezvous_core::Protocol;

/// Every counter of a handler at one instant.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct Metrics {
    pub(crate) snapshot: MetricsSnapshot,
    pub(crate) live_sessions: Option<usize>,
}

#[pymethods]
impl Metrics {
    /// Sessions created.
    #[getter]
    fn sessions_created(&self) -> u64 {
        self.snapshot.sessions_created
    }

    /// Sessions ended by DELETE.
    #[getter]
    fn sessions_deleted(&self) -> u64 {
        self.snapshot.sessions_deleted
    }

    /// Ended sessions the store removed.
    #[getter]
    fn sessions_expired(&self) -> u64 {
        self.snapshot.sessions_expired
    }

    /// Writes refused with 412 because `If-Match` was stale.
    #[getter]
    fn conflicts(&self) -> u64 {
        self.snapshot.conflicts
    }

    /// Requests refused with 429 by a rate limit or the per-client session cap.
    #[getter]
    fn rate_limited(&self) -> u64 {
        self.snapshot.rate_limited
    }

    /// `(method, status, count)` for every pair seen; status 0 for the uncounted ones.
    #[getter]
    fn responses(&self) -> Vec<(&'static str, u16, u64)> {
        self.snapshot.responses.clone()
    }

    /// `(kind, count)` of failed store calls.
    #[getter]
    fn store_errors(&self) -> Vec<(&'static str, u64)> {
        STORE_ERROR_KINDS
            .iter()
            .copied()
            .zip(self.snapshot.store_errors)
            .collect()
    }

    /// `(upper bound in seconds, cumulative count)` of store call durations.
    #[getter]
    fn store_latency_buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(self.snapshot.latency_buckets)
            .collect()
    }

    /// Store calls measured.
    #[getter]
    fn store_latency_count(&self) -> u64 {
        self.snapshot.latency_count
    }

    /// Their total duration, in seconds.
    #[getter]
    fn store_latency_sum(&self) -> f64 {
        self.snapshot.latency_sum_seconds
    }

    /// Live sessions: counted now for the memory store, at the last maintenance run for
    /// Redis; `None` before the first count.
    #[getter]
    fn live_sessions(&self) -> Option<usize> {
        self.live_sessions
    }

    /// The counters of each protocol (MSC4108, MSC4388), for the `protocol` label.
    #[getter]
    fn by_protocol(&self) -> Vec<ProtocolCounters> {
        Protocol::ALL
            .iter()
            .map(|&protocol| ProtocolCounters {
                protocol,
                counters: self.snapshot.protocol(protocol).clone(),
            })
            .collect()
    }
}

/// One protocol's share of a [`Metrics`] reading.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct ProtocolCounters {
    protocol: Protocol,
    counters: ProtocolMetrics,
}

#[pymethods]
impl ProtocolCounters {
    /// `"msc4108"` or `"msc4388"`.
    #[getter]
    fn protocol(&self) -> &'static str {
        self.protocol.name()
    }

    /// Sessions created.
    #[getter]
    fn sessions_created(&self) -> u64 {
        self.counters.sessions_created
    }

    /// Sessions ended by DELETE.
    #[getter]
    fn sessions_deleted(&self) -> u64 {
        self.counters.sessions_deleted
    }

    /// Writes refused as concurrent (412 for MSC4108, 409 for MSC4388).
    #[getter]
    fn conflicts(&self) -> u64 {
        self.counters.conflicts
    }

    /// Requests refused with 429 by a rate limit or the per-client session cap.
    #[getter]
    fn rate_limited(&self) -> u64 {
        self.counters.rate_limited
    }

    /// MSC4388 writes answered as idempotent retries; 0 for MSC4108.
    #[getter]
    fn retries(&self) -> u64 {
        self.counters.retries
    }

    /// `(method, status, count)`; status 0 for statuses not counted one by one.
    #[getter]
    fn responses(&self) -> Vec<(&'static str, u16, u64)> {
        self.counters.responses.clone()
    }
}

//! `RendezvousHandler`: the object Synapse calls for every rendezvous request.
//!
//! `handle` answers a Twisted request in one call, for stores that never block. For a store
//! on the network the Python side splits the work: `read_request` and `write_response` on
//! the reactor thread, `process` (which releases the GIL) on a worker thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use synapse_rendezvous_core::metrics::{LATENCY_BUCKETS, STORE_ERROR_KINDS};
use synapse_rendezvous_core::{
    Clock, MemoryStore, Problem, Rendezvous, Routes, SystemClock, SystemEntropy,
};

use crate::config::Config;
use crate::errors::config_error;
use crate::store::{self, Notice};
use crate::twisted::{read_request, write_response, HeaderNames};

/// Every header the core writes, so that Twisted's spelling of each is learned up front.
const RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    header::PRAGMA,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::RETRY_AFTER,
];

/// Serves the rendezvous API for one Synapse process.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct RendezvousHandler {
    core: Rendezvous,
    header_names: HeaderNames,
    blocking: bool,
    snapshot: Option<(Arc<MemoryStore>, PathBuf)>,
    logger: Py<PyAny>,
}

/// A request read off a Twisted request, ready for [`RendezvousHandler::process`].
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct PendingRequest {
    request: Request<Bytes>,
}

/// A response computed by [`RendezvousHandler::process`], ready to be written back.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct PendingResponse {
    response: Response<Bytes>,
}

#[pymethods]
impl PendingResponse {
    /// The HTTP status code.
    #[getter]
    fn status(&self) -> u16 {
        self.response.status().as_u16()
    }
}

#[pymethods]
impl RendezvousHandler {
    #[new]
    #[pyo3(signature = (config, public_baseurl, /, *, mode, default_redis_url=None))]
    fn new(
        py: Python<'_>,
        config: &Config,
        public_baseurl: &str,
        mode: &str,
        default_redis_url: Option<&str>,
    ) -> PyResult<Self> {
        let routes = match mode {
            "takeover" => Routes::takeover(),
            "delegation" => Routes::delegation(),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"takeover\" or \"delegation\", not {mode:?}"
                )))
            }
        };
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("synapse_rendezvous",))?
            .unbind();
        let clock = Arc::new(SystemClock);
        let opened = py
            .detach(|| store::open(&config.inner, default_redis_url, clock.now()))
            .map_err(|error| config_error(py, &error))?;
        for notice in &opened.notices {
            let (level, message) = match notice {
                Notice::Info(message) => ("info", message),
                Notice::Warning(message) => ("warning", message),
            };
            logger.bind(py).call_method1(level, ("%s", message))?;
        }
        let mut core = Rendezvous::new(
            config.inner.clone(),
            opened.store,
            clock,
            Arc::new(SystemEntropy),
            routes,
            public_baseurl,
        );
        if let Some((limiter, quota)) = opened.shared_limits {
            core = core.with_limits(limiter, quota);
        }
        Ok(Self {
            core,
            header_names: HeaderNames::learn(py, RESPONSE_HEADERS)?,
            blocking: opened.blocking,
            snapshot: opened.snapshot,
            logger,
        })
    }

    /// Whether the store can block on the network, so that `process` must run in a thread.
    #[getter]
    fn blocking(&self) -> bool {
        self.blocking
    }

    /// Answers a Twisted request completely: reads it, writes the response, finishes it.
    #[pyo3(signature = (request, /))]
    fn handle(&self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = read_request(request, self.core.config().rate_limit.enabled)?;
        let response = self.respond(request.py(), &parsed);
        write_response(request, &response, &self.header_names)
    }

    /// Reads a Twisted request (on the reactor thread).
    // A method rather than a function, so that Python drives all three steps on one object.
    #[allow(clippy::unused_self)]
    #[pyo3(signature = (request, /))]
    fn read_request(&self, request: &Bound<'_, PyAny>) -> PyResult<PendingRequest> {
        Ok(PendingRequest {
            request: read_request(request, self.core.config().rate_limit.enabled)?,
        })
    }

    /// Computes the response without the GIL; safe to call from any thread.
    #[pyo3(signature = (pending, /))]
    fn process(&self, py: Python<'_>, pending: &PendingRequest) -> PendingResponse {
        PendingResponse {
            response: self.respond(py, &pending.request),
        }
    }

    /// Writes a computed response to the Twisted request and finishes it (on the reactor
    /// thread).
    #[allow(clippy::unused_self)]
    #[pyo3(signature = (request, response, /))]
    fn write_response(
        &self,
        request: &Bound<'_, PyAny>,
        response: &PendingResponse,
    ) -> PyResult<()> {
        write_response(request, &response.response, &self.header_names)
    }

    /// Frees the memory of expired sessions; returns how many. Run periodically.
    fn reclaim_expired(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.core.reclaim_expired())
            .map_err(|error| PyOSError::new_err(error.to_string()))
    }

    /// The number of live sessions.
    fn live_sessions(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.core.live_count())
            .map_err(|error| PyOSError::new_err(error.to_string()))
    }

    /// Every counter of this handler, for the Prometheus collector: a dict with the keys
    /// `sessions_created`, `sessions_deleted`, `sessions_expired`, `conflicts`,
    /// `rate_limited` (ints), `responses` (list of `(method, status, count)`),
    /// `store_errors` (dict kind -> count), `store_latency_buckets` (list of
    /// `(upper bound in seconds, cumulative count)`), `store_latency_count`,
    /// `store_latency_sum` (seconds).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.core.metrics();
        let metrics = PyDict::new(py);
        metrics.set_item("sessions_created", snapshot.sessions_created)?;
        metrics.set_item("sessions_deleted", snapshot.sessions_deleted)?;
        metrics.set_item("sessions_expired", snapshot.sessions_expired)?;
        metrics.set_item("conflicts", snapshot.conflicts)?;
        metrics.set_item("rate_limited", snapshot.rate_limited)?;
        metrics.set_item("responses", snapshot.responses)?;
        let errors = PyDict::new(py);
        for (kind, count) in STORE_ERROR_KINDS.iter().zip(snapshot.store_errors) {
            errors.set_item(kind, count)?;
        }
        metrics.set_item("store_errors", errors)?;
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(snapshot.latency_buckets)
            .collect();
        metrics.set_item("store_latency_buckets", buckets)?;
        metrics.set_item("store_latency_count", snapshot.latency_count)?;
        metrics.set_item("store_latency_sum", snapshot.latency_sum_seconds)?;
        Ok(metrics)
    }

    /// Saves the live sessions to the configured snapshot; returns how many, or None when no
    /// snapshot is configured. Call at a clean shutdown.
    fn save_snapshot(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        let Some((store, path)) = &self.snapshot else {
            return Ok(None);
        };
        let now = SystemClock.now();
        py.detach(|| store::save(store, path, now))
            .map(Some)
            .map_err(PyOSError::new_err)
    }
}

impl RendezvousHandler {
    /// Runs the core (without the GIL when the store can block); a panic becomes a logged
    /// 500, never a crash.
    fn respond(&self, py: Python<'_>, request: &Request<Bytes>) -> Response<Bytes> {
        let answer = || guarded(|| self.core.handle(request));
        // The memory store answers in microseconds: releasing and retaking the GIL would
        // cost more than holding it.
        let outcome = if self.blocking {
            py.detach(answer)
        } else {
            answer()
        };
        match outcome {
            Ok(response) => {
                if let Some(Problem(why)) = response.extensions().get::<Problem>() {
                    self.log_error(
                        py,
                        &format!("{} {}: {why}", request.method(), request.uri()),
                    );
                }
                response
            }
            Err(why) => {
                self.log_error(
                    py,
                    &format!(
                        "panic while handling {} {}: {why}",
                        request.method(),
                        request.uri()
                    ),
                );
                self.core.internal_error()
            }
        }
    }

    fn log_error(&self, py: Python<'_>, message: &str) {
        // Logging must never turn an answer into an exception.
        let _ = self.logger.bind(py).call_method1("error", ("%s", message));
    }
}

/// Runs `handle`, turning a panic into its message: a bug in the core must cost one request
/// a 500, not unwind into Python (where PyO3 would raise into Synapse's request handling).
fn guarded(handle: impl FnOnce() -> Response<Bytes>) -> Result<Response<Bytes>, String> {
    catch_unwind(AssertUnwindSafe(handle)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        let outcome = guarded(|| panic!("the core broke"));
        assert_eq!(outcome.err().as_deref(), Some("the core broke"));
        let id = 7;
        let formatted = guarded(|| panic!("session {id} broke"));
        assert_eq!(formatted.err().as_deref(), Some("session 7 broke"));
    }

    #[test]
    fn an_answer_passes_through() {
        let outcome = guarded(|| Response::new(Bytes::from_static(b"ok")));
        assert_eq!(
            outcome.map(Response::into_body),
            Ok(Bytes::from_static(b"ok"))
        );
    }
}

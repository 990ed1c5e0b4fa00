//! `RendezvousHandler`: the object Synapse's glue calls for every rendezvous request.
//!
//! With the memory store a request is answered in the call. With Redis it becomes one
//! script call written to a connection the glue keeps open on the reactor; the reply, read
//! by the glue and handed over with [`RendezvousHandler::redis_received`], completes it. No
//! thread is involved, and nothing here ever waits.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use synapse_rendezvous_core::rate_limit::RateLimitConfig;
use synapse_rendezvous_core::{
    discarded, loggable_path, Authenticated, Backend, Msc4388Mode, Notice, Problem, Rendezvous,
    Routes, Service, SystemClock, SystemEntropy, Warning,
};

use crate::config::Config;
use crate::errors::config_error;
use crate::metrics::Metrics;
use crate::redis::{RedisAddress, RedisServing};
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

/// What the handler needs of Python, shared by both stores.
pub(crate) struct Glue {
    pub(crate) header_names: HeaderNames,
    /// A callable answering the homeserver's time in seconds (`Clock.time`).
    clock: Py<PyAny>,
    logger: Py<PyAny>,
    /// The rate limits when they are on, so that the client's address is worth reading.
    limits: Option<RateLimitConfig>,
    max_body: usize,
}

impl Glue {
    /// The homeserver's time: its reactor's, which Synapse's test harness drives.
    pub(crate) fn now(&self, py: Python<'_>) -> SystemTime {
        let seconds = self
            .clock
            .call0(py)
            .and_then(|seconds| seconds.extract::<f64>(py))
            .ok()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0);
        match seconds {
            Some(seconds) => UNIX_EPOCH + Duration::from_secs_f64(seconds),
            // The clock is Synapse's own; if it ever fails, the system's is the next best.
            None => SystemTime::now(),
        }
    }

    pub(crate) fn read(&self, request: &Bound<'_, PyAny>) -> PyResult<Request<Bytes>> {
        read_request(request, self.limits.as_ref(), self.max_body)
    }

    pub(crate) fn log(&self, py: Python<'_>, level: &str, message: &str) {
        // Logging must never turn an answer into an exception.
        let _ = self.logger.bind(py).call_method1(level, ("%s", message));
    }

    /// Logs the warning a response carries, if any.
    pub(crate) fn log_warning_of(&self, py: Python<'_>, response: &Response<Bytes>) {
        if let Some(Warning(why)) = response.extensions().get::<Warning>() {
            self.log(py, "warning", why);
        }
    }

    /// Logs the problem or the warning a response carries, if any.
    pub(crate) fn log_problem(
        &self,
        py: Python<'_>,
        request: &Request<Bytes>,
        response: &Response<Bytes>,
    ) {
        self.log_warning_of(py, response);
        if let Some(Problem(why)) = response.extensions().get::<Problem>() {
            let message = format!(
                "{} {}: {why}",
                request.method(),
                loggable_path(request.uri().path())
            );
            self.log(py, "error", &message);
        }
    }
}

enum Serving {
    Memory { service: Service, backend: Backend },
    Redis(RedisServing),
}

/// Serves the rendezvous API for one Synapse process.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct RendezvousHandler {
    glue: Glue,
    serving: Serving,
}

#[pymethods]
impl RendezvousHandler {
    #[new]
    #[pyo3(signature = (
        config, public_baseurl, /, *, mode, clock, default_redis_url=None, msc4388="off"
    ))]
    fn new(
        py: Python<'_>,
        config: &Config,
        public_baseurl: &str,
        mode: &str,
        clock: Py<PyAny>,
        default_redis_url: Option<&str>,
        msc4388: &str,
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
        let msc4388 = match msc4388 {
            "off" => Msc4388Mode::Off,
            "open" => Msc4388Mode::Open,
            "authenticated" => Msc4388Mode::Authenticated,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "msc4388 must be \"off\", \"open\" or \"authenticated\", not {msc4388:?}"
                )))
            }
        };
        // Synapse's experimental_features.msc4388_mode, applied to the module's block.
        let config = &config
            .inner
            .clone()
            .with_msc4388(msc4388)
            .map_err(|error| config_error(py, &error))?;
        let glue = Glue {
            header_names: HeaderNames::learn(py, RESPONSE_HEADERS)?,
            clock,
            logger: py
                .import("logging")?
                .call_method1("getLogger", ("synapse_rendezvous",))?
                .unbind(),
            limits: config.rate_limit.enabled.then(|| config.rate_limit.clone()),
            max_body: config.max_body_bytes(),
        };
        let now = glue.now(py);
        let (backend, notices) = py
            .detach(|| Backend::open(config, default_redis_url, now))
            .map_err(|error| config_error(py, &error))?;
        for notice in notices {
            match notice {
                Notice::Info(message) => glue.log(py, "info", &message),
                Notice::Warning(message) => glue.log(py, "warning", &message),
            }
        }
        let rendezvous = Rendezvous::new(
            config.clone(),
            Arc::new(SystemEntropy),
            routes,
            public_baseurl,
        );
        let serving = match backend {
            Backend::Memory { ref store, .. } => Serving::Memory {
                service: Service::new(rendezvous, store.clone(), Arc::new(SystemClock)),
                backend,
            },
            Backend::Redis {
                store,
                target,
                link,
            } => Serving::Redis(RedisServing::new(rendezvous, store, &target, link)),
        };
        Ok(Self { glue, serving })
    }

    /// Answers a Twisted request, now (memory store) or once Redis has answered. Returns
    /// the delay in seconds after which [`RendezvousHandler::tick`] must run, when a timer
    /// is to be started.
    /// `authenticated`: the glue has checked the request's access token (MSC4388's
    /// `authenticated` mode lets only such callers create).
    #[pyo3(signature = (request, /, *, authenticated=false))]
    fn handle(&self, request: &Bound<'_, PyAny>, authenticated: bool) -> PyResult<Option<f64>> {
        let py = request.py();
        let mut parsed = self.glue.read(request)?;
        if authenticated {
            parsed.extensions_mut().insert(Authenticated);
        }
        match &self.serving {
            Serving::Memory { service, .. } => {
                let now = self.glue.now(py);
                let response = guarded(|| service.handle_at(&parsed, now)).unwrap_or_else(|why| {
                    self.glue.log(
                        py,
                        "error",
                        &format!(
                            "panic while handling {}: {why}",
                            loggable_path(parsed.uri().path())
                        ),
                    );
                    service.rendezvous().internal_error(now)
                });
                self.glue.log_problem(py, &parsed, &response);
                write_response(request, &response, &self.glue.header_names)?;
                Ok(None)
            }
            Serving::Redis(redis) => redis.handle(py, &self.glue, request, &parsed),
        }
    }

    /// Answers 404 `M_UNRECOGNIZED`, as for a path this API does not serve: for a request
    /// on a listener that does not serve the client API.
    #[pyo3(signature = (request, /))]
    fn answer_unrecognized(&self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let response = self.rendezvous().not_served(self.glue.now(request.py()));
        write_response(request, &response, &self.glue.header_names)
    }

    /// Frees ended sessions and counts the live ones, for the gauge; run periodically. With
    /// Redis this sends one call and returns like [`RendezvousHandler::handle`].
    fn maintain(&self, py: Python<'_>) -> Option<f64> {
        match &self.serving {
            Serving::Memory { service, .. } => {
                match service.maintain_at(self.glue.now(py)) {
                    Ok(found) if found.discarded > 0 => {
                        self.glue.log(py, "warning", &discarded(found.discarded).0);
                    }
                    Ok(_) => {}
                    Err(error) => self.glue.log(py, "warning", &error.to_string()),
                }
                None
            }
            Serving::Redis(redis) => redis.maintain(py, &self.glue),
        }
    }

    /// Where the Redis store's server is; `None` for the memory store.
    #[getter]
    fn redis_address(&self) -> Option<RedisAddress> {
        match &self.serving {
            Serving::Redis(redis) => Some(redis.address()),
            Serving::Memory { .. } => None,
        }
    }

    /// A connection to Redis, number `index`, is open.
    #[pyo3(signature = (index, transport, /))]
    fn redis_connected(
        &self,
        py: Python<'_>,
        index: usize,
        transport: Py<PyAny>,
    ) -> PyResult<Option<f64>> {
        Ok(self.redis()?.connected(py, &self.glue, index, transport))
    }

    /// Bytes arrived on connection `index`.
    #[pyo3(signature = (index, data, /))]
    fn redis_received(&self, py: Python<'_>, index: usize, data: &[u8]) -> PyResult<Option<f64>> {
        Ok(self.redis()?.received(py, &self.glue, index, data))
    }

    /// Connection `index` is gone.
    #[pyo3(signature = (index, /))]
    fn redis_lost(&self, py: Python<'_>, index: usize) -> PyResult<Option<f64>> {
        Ok(self.redis()?.lost(py, &self.glue, index))
    }

    /// Answers the requests whose time is up; returns when to run again, if anything waits.
    fn tick(&self, py: Python<'_>) -> Option<f64> {
        match &self.serving {
            Serving::Redis(redis) => redis.tick(py, &self.glue),
            Serving::Memory { .. } => None,
        }
    }

    /// At shutdown: answers every waiting request 503, closes the connections, and refuses
    /// whatever comes later.
    fn close(&self, py: Python<'_>) {
        if let Serving::Redis(redis) = &self.serving {
            redis.close(py, &self.glue);
        }
    }

    /// Every counter of this handler, for the Prometheus collector. The memory store
    /// counts its live sessions now (which also frees the ended ones: microseconds); Redis
    /// reports the last maintenance run's count, so that a scrape never waits on it.
    fn metrics(&self, py: Python<'_>) -> Metrics {
        match &self.serving {
            Serving::Memory { service, .. } => {
                let live_sessions = service
                    .maintain_at(self.glue.now(py))
                    .ok()
                    .map(|found| found.live);
                Metrics {
                    snapshot: service.metrics(),
                    live_sessions,
                }
            }
            Serving::Redis(redis) => redis.metrics(),
        }
    }

    /// Saves the live sessions to the configured snapshot; returns how many, or None when no
    /// snapshot is configured. Call at a clean shutdown.
    fn save_snapshot(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        let Serving::Memory { backend, .. } = &self.serving else {
            return Ok(None);
        };
        let now = self.glue.now(py);
        py.detach(|| backend.save_snapshot(now))
            .map_err(|error| PyOSError::new_err(error.to_string()))
    }
}

impl RendezvousHandler {
    fn rendezvous(&self) -> &Rendezvous {
        match &self.serving {
            Serving::Memory { service, .. } => service.rendezvous(),
            Serving::Redis(redis) => redis.rendezvous(),
        }
    }

    fn redis(&self) -> PyResult<&RedisServing> {
        match &self.serving {
            Serving::Redis(redis) => Ok(redis),
            Serving::Memory { .. } => Err(PyRuntimeError::new_err(
                "this handler serves the memory store, not Redis",
            )),
        }
    }
}

/// Runs `work`, turning a panic into its message: a bug in the core must cost one request a
/// 500, not unwind into Python (where PyO3 would raise into Synapse's request handling).
pub(crate) fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
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
        let outcome: Result<(), String> = guarded(|| panic!("the core broke"));
        assert_eq!(outcome.err().as_deref(), Some("the core broke"));
        let id = 7;
        let formatted: Result<(), String> = guarded(|| panic!("session {id} broke"));
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

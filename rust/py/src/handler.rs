//! `RendezvousHandler`: the object Synapse calls for every rendezvous request.
//!
//! It offers the four methods Synapse's own servlets call on its built-in handler
//! (`handle_post`, `handle_get`, `handle_put`, `handle_delete`), so that the module can
//! install it in the built-in's place, and a `handle` method for the module's own resource.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use synapse_rendezvous_core::{
    MemoryStore, Problem, Rendezvous, Routes, SystemClock, SystemEntropy,
};

use crate::config::Config;
use crate::twisted::{read_request, write_response};

/// Serves the rendezvous API for one Synapse process.
#[pyclass(module = "synapse_rendezvous._core", frozen)]
pub struct RendezvousHandler {
    core: Rendezvous,
    logger: Py<PyAny>,
}

#[pymethods]
impl RendezvousHandler {
    #[new]
    #[pyo3(signature = (config, public_baseurl, /, *, mode))]
    fn new(py: Python<'_>, config: &Config, public_baseurl: &str, mode: &str) -> PyResult<Self> {
        let routes = match mode {
            "takeover" => Routes::takeover(),
            "delegation" => Routes::delegation(),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"takeover\" or \"delegation\", not {mode:?}"
                )))
            }
        };
        let store = Arc::new(MemoryStore::new(config.inner.capacity));
        let core = Rendezvous::new(
            config.inner.clone(),
            store,
            Arc::new(SystemClock),
            Arc::new(SystemEntropy),
            routes,
            public_baseurl,
        );
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("synapse_rendezvous",))?
            .unbind();
        Ok(Self { core, logger })
    }

    /// Answers a Twisted request completely: reads it, writes the response, finishes it.
    #[pyo3(signature = (request, /))]
    fn handle(&self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = read_request(request)?;
        let response = self.process(request.py(), &parsed);
        write_response(request, &response)
    }

    /// Synapse's create servlet calls this on its rendezvous handler.
    #[pyo3(signature = (request, /))]
    fn handle_post(&self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        self.handle(request)
    }

    /// Synapse's session resource calls this; the id is read from the request itself.
    #[pyo3(signature = (request, _session_id, /))]
    fn handle_get(
        &self,
        request: &Bound<'_, PyAny>,
        _session_id: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.handle(request)
    }

    /// Synapse's session resource calls this; the id is read from the request itself.
    #[pyo3(signature = (request, _session_id, /))]
    fn handle_put(
        &self,
        request: &Bound<'_, PyAny>,
        _session_id: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.handle(request)
    }

    /// Synapse's session resource calls this; the id is read from the request itself.
    #[pyo3(signature = (request, _session_id, /))]
    fn handle_delete(
        &self,
        request: &Bound<'_, PyAny>,
        _session_id: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.handle(request)
    }

    /// Frees the memory of expired sessions; returns how many. Run periodically.
    fn reclaim_expired(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.core.reclaim_expired())
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }

    /// The number of live sessions.
    fn live_sessions(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.core.live_count())
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }
}

impl RendezvousHandler {
    /// Runs the core without the GIL; a panic becomes a logged 500, never a crash.
    fn process(&self, py: Python<'_>, request: &Request<Bytes>) -> Response<Bytes> {
        let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| self.core.handle(request))));
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
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
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

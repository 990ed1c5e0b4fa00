//! Python exception types raised by the extension.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    synapse_rendezvous._core,
    ConfigError,
    PyValueError,
    "The module's configuration is invalid; `key` names the offending option."
);

/// Converts a core configuration error, once, into the Python exception.
pub(crate) fn config_error(py: Python<'_>, error: &synapse_rendezvous_core::ConfigError) -> PyErr {
    let err = ConfigError::new_err(error.to_string());
    // Best effort: the message already names the key.
    let _ = err.value(py).setattr("key", error.key.as_str());
    err
}

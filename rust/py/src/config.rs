//! The module's `config:` block, from Python values to the core's validated `Config`.

use pyo3::prelude::*;
use serde_json::Value;
use synapse_rendezvous_core as core;

use crate::errors::config_error;

/// Validated configuration, as returned by [`parse_config`]. Immutable, so a copy is the
/// object itself (Synapse's test harness deep-copies the homeserver config).
#[pyclass(module = "synapse_rendezvous._core", frozen)]
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) inner: core::Config,
}

#[pymethods]
impl Config {
    /// `"memory"` or `"redis"`.
    #[getter]
    fn store_kind(&self) -> &'static str {
        match self.inner.store {
            core::StoreConfig::Memory { .. } => "memory",
            core::StoreConfig::Redis(_) => "redis",
        }
    }

    /// Whether the Redis store uses the homeserver's own `redis:` section (no `redis.url`),
    /// whose TLS files then apply too.
    #[getter]
    fn uses_homeserver_redis(&self) -> bool {
        matches!(&self.inner.store, core::StoreConfig::Redis(redis) if redis.url.is_none())
    }

    /// What the operator should hear at startup about how clients are told apart, given
    /// whether a listener serving the client API has `x_forwarded: true`.
    #[pyo3(signature = (*, x_forwarded_client_listener))]
    fn startup_warnings(&self, x_forwarded_client_listener: bool) -> Vec<String> {
        self.inner
            .rate_limit
            .startup_warnings(x_forwarded_client_listener)
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!("<Config {}>", self.inner)
    }

    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_memo, /))]
    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }
}

/// Validates the module's `config:` block (a mapping, or None for all defaults).
#[pyfunction]
#[pyo3(signature = (config, /))]
pub fn parse_config(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Config> {
    let value: Value = pythonize::depythonize(config).map_err(|error| {
        config_error(
            py,
            &core::ConfigError {
                key: "config".to_owned(),
                reason: format!("cannot be read: {error}"),
            },
        )
    })?;
    // Inside Synapse, MSC4388 follows Synapse's own switch (applied when the handler is
    // built); the core's `msc4388` key is the standalone server's.
    if value.get("msc4388").is_some() {
        return Err(config_error(
            py,
            &core::ConfigError {
                key: "msc4388".to_owned(),
                reason: "is not a module option: set experimental_features.msc4388_mode \
                         (off, open or authenticated) in homeserver.yaml instead"
                    .to_owned(),
            },
        ));
    }
    core::Config::from_json(&value)
        .map(|inner| Config { inner })
        .map_err(|error| config_error(py, &error))
}

//! The module's `config:` block, from Python values to the core's validated `Config`.

use pyo3::prelude::*;
use serde_json::Value;
use synapse_rendezvous_core as core;

use crate::errors::config_error;

/// Validated configuration, as returned by [`parse_config`].
#[pyclass(module = "synapse_rendezvous._core", frozen)]
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) inner: core::Config,
}

#[pymethods]
impl Config {
    /// Session lifetime in milliseconds.
    #[getter]
    fn ttl_ms(&self) -> u128 {
        self.inner.ttl.as_millis()
    }

    /// Largest accepted body, in bytes.
    #[getter]
    fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes
    }

    /// Most live sessions at once.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Connections each process keeps to Redis; `None` for the memory store.
    #[getter]
    fn redis_pool_size(&self) -> Option<u32> {
        match &self.inner.store {
            core::StoreConfig::Memory { .. } => None,
            core::StoreConfig::Redis(redis) => Some(redis.pool_size),
        }
    }

    /// `"memory"` or `"redis"`.
    #[getter]
    fn store_kind(&self) -> &'static str {
        match self.inner.store {
            core::StoreConfig::Memory { .. } => "memory",
            core::StoreConfig::Redis(_) => "redis",
        }
    }

    /// The store and its settings, for the startup log line (never the Redis URL, which may
    /// hold a password).
    #[getter]
    fn store_description(&self) -> String {
        match &self.inner.store {
            core::StoreConfig::Memory {
                snapshot_path: None,
            } => "store=memory".to_owned(),
            core::StoreConfig::Memory {
                snapshot_path: Some(path),
            } => format!("store=memory (snapshot_path={})", path.display()),
            core::StoreConfig::Redis(redis) => format!(
                "store=redis (key_prefix={}, timeout={}ms, pool_size={})",
                redis.key_prefix,
                redis.timeout.as_millis(),
                redis.pool_size
            ),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Config(ttl_ms={}, max_payload_bytes={}, capacity={})",
            self.ttl_ms(),
            self.inner.max_payload_bytes,
            self.inner.capacity
        )
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
    core::Config::from_json(&value)
        .map(|inner| Config { inner })
        .map_err(|error| config_error(py, &error))
}

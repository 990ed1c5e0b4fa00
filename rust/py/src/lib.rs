//! The Python extension `synapse_rendezvous._core`: the only place that touches PyO3.
//!
//! It turns Synapse's Twisted requests into `http` requests for the core, writes the core's
//! responses back, and moves the Redis store's bytes between the core and the connections
//! the Python glue opens; everything about sessions, stores and HTTP semantics lives in
//! `synapse-rendezvous-core`.

mod config;
mod errors;
mod handler;
mod metrics;
mod redis;
mod twisted;

/// The extension module.
#[pyo3::pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::config::{parse_config, Config};
    #[pymodule_export]
    use crate::errors::ConfigError;
    #[pymodule_export]
    use crate::handler::RendezvousHandler;
    #[pymodule_export]
    use crate::metrics::{Metrics, ProtocolCounters};
    #[pymodule_export]
    use crate::redis::RedisAddress;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}

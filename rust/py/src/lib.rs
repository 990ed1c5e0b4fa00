//! The Python extension `synapse_rendezvous._core`: the only place that touches PyO3.
//!
//! It turns Synapse's Twisted requests into `http` requests for the core and writes the
//! core's responses back; everything about sessions and HTTP semantics lives in
//! `synapse-rendezvous-core`.

mod config;
mod errors;
mod handler;
mod store;
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
    use crate::handler::{PendingRequest, PendingResponse, RendezvousHandler};

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}

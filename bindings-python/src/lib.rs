//! The Python binding of exoservice: the native module `exoservice._native`.
//!
//! This crate is a thin layer over the core's pull-model [`exoservice::Engine`]:
//! the Python package (`python/exoservice/`) holds the user-facing API and
//! calls into the classes defined here. The rules it follows:
//!
//! - Python code never runs on a tokio worker of the core's runtime, and the
//!   core never waits for Python: every wait on the core happens with the GIL
//!   released (`py.detach`), in slices of [`wait::SLICE`] between which the
//!   thread checks for signals, so Ctrl-C and `signal` handlers run.
//! - asyncio code is woken through a pipe ([`events::EventQueue`]): tokio
//!   tasks queue events and write a byte, the event loop reads them with the
//!   GIL held. No tokio thread ever takes the GIL.
//! - Log events of the core (`tracing`) go to Python's `logging` (logger
//!   `exoservice`) through one forwarding thread ([`logs`]).
//! - No panic crosses into Python: PyO3 turns a panic in any entry point into
//!   a Python `PanicException`, and no entry point here is expected to panic.
//!
//! The crate is tested from Python (`bindings-python/tests/`).

mod errors;
mod events;
mod json;
mod logs;
mod mock;
mod service;
mod wait;

use pyo3::prelude::*;

/// The native module `exoservice._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn exoservice_python(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<service::NativeService>()?;
    m.add_class::<service::NativeDelivery>()?;
    m.add_class::<service::RequestHandle>()?;
    m.add_class::<mock::NativeMockBus>()?;
    m.add_function(wrap_pyfunction!(logs::install_logging, m)?)?;
    m.add_function(wrap_pyfunction!(logs::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(logs::flush_logs, m)?)?;
    m.add_function(wrap_pyfunction!(logs::shutdown_logging, m)?)?;
    m.add_function(wrap_pyfunction!(json::encode_payload, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

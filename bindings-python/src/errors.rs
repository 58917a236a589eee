//! The core's errors as the exceptions of `exoservice.errors`.
//!
//! The exception classes are Python classes (so they carry attributes and
//! subclass the matching built-in exceptions); this module builds instances
//! of them from [`ExoError`] values.

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use exoservice::ExoError;
use exoservice::config::ConfigError;

/// The exception classes, imported once.
struct Classes {
    config: PyOnceLock<Py<PyType>>,
    undeclared: PyOnceLock<Py<PyType>>,
    timeout: PyOnceLock<Py<PyType>>,
    buffer_full: PyOnceLock<Py<PyType>>,
    connection: PyOnceLock<Py<PyType>>,
    usage: PyOnceLock<Py<PyType>>,
    stopped: PyOnceLock<Py<PyType>>,
}

static CLASSES: Classes = Classes {
    config: PyOnceLock::new(),
    undeclared: PyOnceLock::new(),
    timeout: PyOnceLock::new(),
    buffer_full: PyOnceLock::new(),
    connection: PyOnceLock::new(),
    usage: PyOnceLock::new(),
    stopped: PyOnceLock::new(),
};

const MODULE: &str = "exoservice.errors";

/// Builds `cls(text, **attrs)` as a `PyErr`.
fn raise(
    py: Python<'_>,
    cell: &PyOnceLock<Py<PyType>>,
    class: &str,
    text: String,
    attrs: &[(&str, Bound<'_, PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = cell.import(py, MODULE, class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(k, v)?;
        }
        let exc = cls.call((text.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    // The package is not importable (the native module used on its own):
    // the text still gets through.
    build().unwrap_or_else(|_| PyRuntimeError::new_err(text.clone()))
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Bound<'py, PyAny> {
    v.into_bound_py_any(py)
        .unwrap_or_else(|_| py.None().into_bound(py))
}

/// A configuration error as `exoservice.ConfigError`.
pub(crate) fn config_error(py: Python<'_>, e: &ConfigError) -> PyErr {
    raise(
        py,
        &CLASSES.config,
        "ConfigError",
        e.to_string(),
        &[
            ("file", obj(py, e.file.display().to_string())),
            ("line", obj(py, e.line)),
            ("column", obj(py, e.column)),
            ("message", obj(py, e.message.as_str())),
        ],
    )
}

/// An `exoservice.UsageError` with this text.
pub(crate) fn usage(py: Python<'_>, text: impl Into<String>) -> PyErr {
    raise(py, &CLASSES.usage, "UsageError", text.into(), &[])
}

/// The exception for a core error.
pub(crate) fn to_py(py: Python<'_>, e: ExoError) -> PyErr {
    let text = e.to_string();
    match e {
        ExoError::Config(c) => config_error(py, &c),
        ExoError::Undeclared { name, role, file } => raise(
            py,
            &CLASSES.undeclared,
            "UndeclaredMessageError",
            text,
            &[
                ("name", obj(py, name)),
                ("role", obj(py, role)),
                ("file", obj(py, file)),
                ("direction", obj(py, "sends")),
            ],
        ),
        ExoError::NotReceived { name, role, file } => raise(
            py,
            &CLASSES.undeclared,
            "UndeclaredMessageError",
            text,
            &[
                ("name", obj(py, name)),
                ("role", obj(py, role)),
                ("file", obj(py, file)),
                ("direction", obj(py, "receives")),
            ],
        ),
        ExoError::DuplicateHandler(name) => raise(
            py,
            &CLASSES.usage,
            "UsageError",
            text,
            &[("name", obj(py, name))],
        ),
        ExoError::Timeout { name, timeout } => raise(
            py,
            &CLASSES.timeout,
            "RequestTimeout",
            text,
            &[
                ("name", obj(py, name)),
                ("timeout", obj(py, timeout.as_secs_f64())),
            ],
        ),
        ExoError::BufferFull { name, capacity } => raise(
            py,
            &CLASSES.buffer_full,
            "BufferFullError",
            text,
            &[("name", obj(py, name)), ("capacity", obj(py, capacity))],
        ),
        ExoError::Connection(_) => raise(py, &CLASSES.connection, "ConnectionError", text, &[]),
        ExoError::Payload { .. } => PyTypeError::new_err(text),
        ExoError::Usage(_) => raise(py, &CLASSES.usage, "UsageError", text, &[]),
        ExoError::Stopped => raise(py, &CLASSES.stopped, "ServiceStopped", text, &[]),
    }
}

/// `Result<T, ExoError>` → `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    /// Converts the error into its Python exception.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, ExoError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

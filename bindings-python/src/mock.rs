//! The core's mock bus for Python tests (`exoservice.testing.MockBus`).

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use exoservice::Message;
use exoservice::testing::MockBus;

use crate::errors::{self, IntoPy};
use crate::json;
use crate::service::message_tuple;
use crate::wait::{self, block_on};

/// A running mock bus on 127.0.0.1.
#[pyclass(name = "NativeMockBus", module = "exoservice._native", frozen)]
pub(crate) struct NativeMockBus {
    bus: Mutex<Option<Arc<MockBus>>>,
    port: u16,
}

impl NativeMockBus {
    fn bus(&self, py: Python<'_>) -> PyResult<Arc<MockBus>> {
        self.bus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| errors::usage(py, "the mock bus was shut down"))
    }
}

fn serde_value(
    py: Python<'_>,
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<serde_json::Value> {
    let raw = value.map(|v| json::to_raw(v, what)).transpose()?.flatten();
    match raw {
        None => Ok(serde_json::Value::Null),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| errors::usage(py, format!("cannot read the payload of '{what}': {e}"))),
    }
}

#[pymethods]
impl NativeMockBus {
    /// Starts a mock bus on this port of 127.0.0.1 (0: a free one).
    #[new]
    #[pyo3(signature = (port=0))]
    fn new(py: Python<'_>, port: u16) -> PyResult<Self> {
        let bus = block_on(py, MockBus::start_on(port), None)?
            .ok_or_else(|| errors::usage(py, "the mock bus did not start"))?
            .py_err(py)?;
        Ok(NativeMockBus {
            port: bus.port(),
            bus: Mutex::new(Some(Arc::new(bus))),
        })
    }

    /// The port it listens on.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The roles registered and connected, sorted.
    fn roles(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.bus(py)?.roles())
    }

    /// How many connections are registered as `role`.
    fn instances(&self, py: Python<'_>, role: &str) -> PyResult<usize> {
        Ok(self.bus(py)?.instances(role))
    }

    /// Waits until a service registered as `role` is connected.
    fn wait_for_registration(&self, py: Python<'_>, role: &str, timeout: f64) -> PyResult<()> {
        let timeout = wait::seconds(timeout, "timeout")?;
        let bus = self.bus(py)?;
        let role = role.to_owned();
        block_on(
            py,
            async move { bus.wait_for_registration(&role, timeout).await },
            None,
        )?
        .ok_or_else(|| errors::usage(py, "the wait ended early"))?
        .py_err(py)
    }

    /// Sends a message to the service registered as `role`; returns it as
    /// sent (a message tuple).
    #[pyo3(signature = (role, name, payload=None, auth=None, is_security=false, activity_id=None, sender=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_message<'py>(
        &self,
        py: Python<'py>,
        role: &str,
        name: &str,
        payload: Option<&Bound<'py, PyAny>>,
        auth: Option<&Bound<'py, PyAny>>,
        is_security: bool,
        activity_id: Option<String>,
        sender: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if name.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "a message name cannot be empty",
            ));
        }
        let msg = Message {
            payload: payload
                .map(|p| json::to_raw(p, name))
                .transpose()?
                .flatten(),
            auth: auth.map(|a| json::to_raw(a, name)).transpose()?.flatten(),
            is_security,
            activity_id: activity_id.or_else(|| Message::new(name).activity_id),
            sender,
            ..Message::new(name)
        };
        let bus = self.bus(py)?;
        let role = role.to_owned();
        let sent = block_on(py, async move { bus.send_message(&role, msg).await }, None)?
            .ok_or_else(|| errors::usage(py, "the send ended early"))?
            .py_err(py)?;
        message_tuple(py, &sent)
    }

    /// The first message named `name` not yet returned by `wait_for`,
    /// waiting for one at most `timeout` seconds (a message tuple).
    fn wait_for<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let timeout = wait::seconds(timeout, "timeout")?;
        let bus = self.bus(py)?;
        let name = name.to_owned();
        let msg = block_on(py, async move { bus.wait_for(&name, timeout).await }, None)?
            .ok_or_else(|| errors::usage(py, "the wait ended early"))?
            .py_err(py)?;
        message_tuple(py, &msg)
    }

    /// Every message received since the start or the last `reset`.
    fn received<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for msg in self.bus(py)?.received() {
            list.append(message_tuple(py, &msg)?)?;
        }
        Ok(list)
    }

    /// Forgets received messages and automatic replies.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.bus(py)?.reset();
        Ok(())
    }

    /// Answers every `request_name` at once with `reply_name` and `payload`.
    #[pyo3(signature = (request_name, reply_name, payload=None))]
    fn mock_reply(
        &self,
        py: Python<'_>,
        request_name: &str,
        reply_name: &str,
        payload: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let value = serde_value(py, payload, reply_name)?;
        self.bus(py)?.mock_reply(request_name, reply_name, value);
        Ok(())
    }

    /// Stops the bus like a killed one (no close frames); returns once the
    /// port is free. Calling it again does nothing.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let bus = self.bus.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(bus) = bus else { return Ok(()) };
        match Arc::try_unwrap(bus) {
            Ok(bus) => {
                block_on(py, bus.shutdown(), None)?;
            }
            // Another thread still waits on it: dropping it stops it.
            Err(shared) => drop(shared),
        }
        Ok(())
    }
}

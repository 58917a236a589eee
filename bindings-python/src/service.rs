//! The service: an [`Engine`] driven from Python, and the deliveries it
//! hands out.
//!
//! Two ways to take deliveries, one per Python execution model:
//! - blocking: [`NativeService::next`] on the thread that runs the
//!   handlers (GIL released while waiting, signals checked);
//! - asyncio: [`NativeService::start_pump`] lets a tokio task pull
//!   deliveries into the [`EventQueue`], whose pipe wakes the event loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use serde_json::value::RawValue;
use tokio::task::AbortHandle;

use exoservice::config::{Env, ServiceConfig, env};
use exoservice::dispatch::{Delivery, DrainReport, Next};
use exoservice::{Ctx, Engine, Message, PendingRequest};

use crate::errors::{self, IntoPy};
use crate::events::{Event, EventQueue};
use crate::json;
use crate::wait::{self, block_on};

/// A message as the tuple `exoservice.Message` is built from: `(name,
/// payload, activity_id, id, sender, auth, is_security, timestamp,
/// response_time)`, payload and auth read into Python values.
pub(crate) fn message_tuple<'py>(py: Python<'py>, msg: &Message) -> PyResult<Bound<'py, PyTuple>> {
    let payload = json::from_raw(py, msg.payload.as_deref())?;
    let auth = json::from_raw(py, msg.auth.as_deref())?;
    (
        msg.name.as_str(),
        payload,
        msg.activity_id.as_deref(),
        msg.id.as_deref(),
        msg.sender.as_deref(),
        auth,
        msg.is_security,
        msg.timestamp.as_deref(),
        msg.response_time,
    )
        .into_pyobject(py)
}

fn report_tuple(report: DrainReport) -> (usize, usize, usize) {
    (
        report.unfinished_handlers,
        report.unsent_messages,
        report.unhandled_messages,
    )
}

/// The variables `ServiceConfig` reads, from this process, with the
/// keyword arguments of `Service(...)` in place of their variables.
fn env_with(role: Option<&str>, host: Option<&str>, port: Option<i64>) -> Env {
    let mut env = Env::process();
    if let Some(role) = role {
        env = env.with(env::ROLE, role);
    }
    if let Some(host) = host {
        env = env.with(env::EXOCOM_HOST, host);
    }
    if let Some(port) = port {
        env = env.with(env::EXOCOM_PORT, port.to_string());
    }
    env
}

/// A service's engine, as `exoservice.Service` drives it.
#[pyclass(name = "NativeService", module = "exoservice._native", frozen)]
pub(crate) struct NativeService {
    engine: Arc<Engine>,
    events: Arc<EventQueue>,
    pumping: AtomicBool,
}

#[pymethods]
impl NativeService {
    /// Reads the config in `dir` (and the environment); the keyword
    /// arguments win over both.
    #[new]
    #[pyo3(signature = (dir, role=None, exocom_host=None, exocom_port=None))]
    fn new(
        py: Python<'_>,
        dir: PathBuf,
        role: Option<String>,
        exocom_host: Option<String>,
        exocom_port: Option<i64>,
    ) -> PyResult<Self> {
        let env = env_with(role.as_deref(), exocom_host.as_deref(), exocom_port);
        let config = ServiceConfig::load_with(&dir, &env, None).map_err(|mut e| {
            // An argument given in code is named as such, not as a variable.
            let is_var = |var: &str| e.file.to_str() == Some(&format!("${var}"));
            if role.is_some() && is_var(env::ROLE) {
                e.file = "Service(role=...)".into();
            } else if exocom_port.is_some() && is_var(env::EXOCOM_PORT) {
                e.file = "Service(exocom_port=...)".into();
            }
            errors::config_error(py, &e)
        })?;
        NativeService::with_config(py, config)
    }

    /// A service built from parts (a config in code: no file, no
    /// environment).
    #[staticmethod]
    #[pyo3(signature = (role, receives, sends, exocom_host="localhost".to_owned(), exocom_port=80))]
    fn from_parts(
        py: Python<'_>,
        role: String,
        receives: Vec<String>,
        sends: Vec<String>,
        exocom_host: String,
        exocom_port: u16,
    ) -> PyResult<Self> {
        let config =
            ServiceConfig::from_parts(role, receives, sends).with_exocom(exocom_host, exocom_port);
        NativeService::with_config(py, config)
    }

    /// The role it registers as.
    #[getter]
    fn role(&self) -> String {
        self.engine.config().role.clone()
    }

    /// The message names it receives.
    #[getter]
    fn receives(&self) -> Vec<String> {
        self.engine.config().receives.clone()
    }

    /// The message names it may send.
    #[getter]
    fn sends(&self) -> Vec<String> {
        self.engine.config().sends.clone()
    }

    /// Where the bus runs.
    #[getter]
    fn exocom_host(&self) -> String {
        self.engine.config().exocom_host.clone()
    }

    /// The bus's port.
    #[getter]
    fn exocom_port(&self) -> u16 {
        self.engine.config().exocom_port
    }

    /// The config file that was read.
    #[getter]
    fn config_file(&self) -> String {
        self.engine.config().file.display().to_string()
    }

    /// The service's directory.
    #[getter]
    fn dir(&self) -> String {
        self.engine.config().dir.display().to_string()
    }

    /// Limit of handlers in flight.
    #[getter]
    fn concurrency(&self) -> usize {
        self.engine.config().concurrency
    }

    /// The drain deadline in seconds.
    #[getter]
    fn drain_timeout(&self) -> f64 {
        self.engine.config().drain_timeout.as_secs_f64()
    }

    /// Whether to print `online at port N` once registered.
    fn announce_online(&self, announce: bool) {
        self.engine.announce_online(announce);
    }

    /// Declares a handler for `name` (must be under `receives`, once).
    fn handle(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.engine.handle(name).py_err(py)
    }

    /// Connects and registers in the background.
    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        let _guard = wait::runtime(py)?.enter();
        self.engine.connect().py_err(py)
    }

    /// Whether the connection to the bus is up.
    #[getter]
    fn connected(&self) -> bool {
        self.engine.is_connected()
    }

    /// Whether `stop` was called.
    #[getter]
    fn stopping(&self) -> bool {
        self.engine.is_stopping()
    }

    /// Waits until registered with the bus, at most `timeout` seconds.
    fn wait_online(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let limit = wait::seconds(timeout, "timeout")?;
        let engine = self.engine.clone();
        let online = block_on(py, async move { engine.wait_online(limit).await }, None)?;
        Ok(online.unwrap_or(false))
    }

    /// The next delivery, waiting at most `timeout` seconds (`None`: until
    /// one comes or the service stops). Returns `None` on timeout and once
    /// the service stopped (see `stopping`).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<NativeDelivery>> {
        let limit = timeout.map(|t| wait::seconds(t, "timeout")).transpose()?;
        if self.pumping.load(Ordering::Acquire) {
            return Err(errors::usage(
                py,
                "this service hands its messages to an event loop (run_async); next() cannot be used",
            ));
        }
        let engine = self.engine.clone();
        // Short waits go through `next_blocking`; longer ones are sliced by
        // `block_on`, which checks for signals between slices.
        let found = match limit {
            Some(l) if l <= wait::SLICE => match py.detach(|| engine.next_blocking(l)) {
                Next::Delivery(d) => Some(d),
                Next::Timeout | Next::Stopped => None,
            },
            _ => block_on(py, async move { engine.next().await }, limit)?.flatten(),
        };
        Ok(found.map(|d| NativeDelivery::new(d, self.events.clone())))
    }

    /// Stops taking messages (callable from any thread and from signal
    /// handlers).
    fn stop(&self) {
        self.engine.stop();
    }

    /// Stops, lets running handlers finish within the drain deadline,
    /// sends what waits, leaves the bus. Blocks (GIL released); returns
    /// `(unfinished_handlers, unsent_messages, unhandled_messages)`.
    fn drain(&self, py: Python<'_>) -> PyResult<(usize, usize, usize)> {
        let engine = self.engine.clone();
        let handle = wait::runtime(py)?.spawn(async move { engine.drain().await });
        let report = block_on(py, handle, None)?
            .ok_or_else(|| errors::usage(py, "the drain did not finish"))?
            .map_err(|e| errors::usage(py, format!("the drain failed: {e}")))?;
        Ok(report_tuple(report))
    }

    /// Like `drain`, without blocking: the `("drained", report)` event
    /// arrives on the event queue.
    fn start_drain(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine.clone();
        let events = self.events.clone();
        wait::runtime(py)?.spawn(async move {
            let report = engine.drain().await;
            events.push(Event::Drained(report));
        });
        Ok(())
    }

    /// Hands deliveries to the event queue from now on (asyncio), as
    /// `("delivery", d)` events, then one `("stopped",)`.
    fn start_pump(&self, py: Python<'_>) -> PyResult<()> {
        if self.pumping.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let engine = self.engine.clone();
        let events = self.events.clone();
        wait::runtime(py)?.spawn(async move {
            while let Some(d) = engine.next().await {
                events.push(Event::Delivery(d));
            }
            events.push(Event::Stopped);
        });
        Ok(())
    }

    /// The file descriptor an event loop watches for events.
    fn events_fd(&self, py: Python<'_>) -> PyResult<i64> {
        self.events
            .fd()
            .ok_or_else(|| errors::usage(py, "asyncio mode needs a Unix event loop"))
    }

    /// The queued events (call after reading the wake byte from
    /// `events_fd`): `("delivery", d)`, `("stopped",)`, `("reply", token,
    /// message_tuple)`, `("error", token, exception)`, `("drained", report)`.
    fn take_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for event in self.events.take() {
            let item = match event {
                Event::Delivery(d) => ("delivery", NativeDelivery::new(d, self.events.clone()))
                    .into_pyobject(py)?
                    .into_any(),
                Event::Stopped => ("stopped",).into_pyobject(py)?.into_any(),
                Event::Reply(token, Ok(msg)) => ("reply", token, message_tuple(py, &msg)?)
                    .into_pyobject(py)?
                    .into_any(),
                Event::Reply(token, Err(e)) => {
                    let exc = errors::to_py(py, e).into_value(py);
                    ("error", token, exc).into_pyobject(py)?.into_any()
                }
                Event::Drained(report) => ("drained", report_tuple(report))
                    .into_pyobject(py)?
                    .into_any(),
            };
            list.append(item)?;
        }
        Ok(list)
    }

    /// Sends a message as the service, with `auth` when given.
    #[pyo3(signature = (name, payload=None, auth=None))]
    fn send(
        &self,
        py: Python<'_>,
        name: &str,
        payload: Option<&Bound<'_, PyAny>>,
        auth: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        let auth = auth_raw(auth, name)?;
        self.engine.client().send_raw(name, raw, auth).py_err(py)
    }

    /// Sends a request (with `auth` when given) and blocks until its
    /// answer (a message tuple).
    #[pyo3(signature = (name, payload, timeout, auth=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: f64,
        auth: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let pending = self.start_request(py, name, payload, timeout, auth)?;
        wait_reply(py, pending)
    }

    /// Sends a request (with `auth` when given); its outcome arrives on
    /// the event queue as a `reply` or `error` event with this token.
    #[pyo3(signature = (name, payload, timeout, token, auth=None))]
    fn request_async(
        &self,
        py: Python<'_>,
        name: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        token: u64,
        auth: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RequestHandle> {
        let pending = self.start_request(py, name, payload, timeout, auth)?;
        spawn_reply(py, pending, token, &self.events)
    }
}

impl NativeService {
    /// Checks a request's arguments and sends it (the Python-facing
    /// `request` and `request_async` differ only in how they wait).
    fn start_request(
        &self,
        py: Python<'_>,
        name: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        auth: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PendingRequest> {
        let timeout = wait::seconds(timeout, "timeout")?;
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        let auth = auth_raw(auth, name)?;
        self.engine
            .client()
            .start_request(name, raw, auth, timeout)
            .py_err(py)
    }

    fn with_config(py: Python<'_>, config: ServiceConfig) -> PyResult<Self> {
        let runtime = wait::runtime(py)?;
        let events = EventQueue::new().map_err(|e| {
            errors::usage(py, format!("cannot create the service's event pipe: {e}"))
        })?;
        Ok(NativeService {
            engine: Arc::new(Engine::with_runtime(config, runtime.handle().clone())),
            events: Arc::new(events),
            pumping: AtomicBool::new(false),
        })
    }
}

/// An optional `auth` value as JSON (`None` and Python `None`: no auth).
fn auth_raw(auth: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Box<RawValue>>> {
    Ok(auth
        .map(|a| json::auth_to_raw(a, name))
        .transpose()?
        .flatten())
}

/// Blocks until a pending request's answer (GIL released, signals checked).
fn wait_reply<'py>(py: Python<'py>, pending: PendingRequest) -> PyResult<Bound<'py, PyTuple>> {
    let outcome = block_on(py, pending.wait(), None)?
        .ok_or_else(|| errors::usage(py, "the request wait ended early"))?;
    let msg = outcome.py_err(py)?;
    message_tuple(py, &msg)
}

/// Awaits a pending request on the runtime; its outcome goes to the queue.
fn spawn_reply(
    py: Python<'_>,
    pending: PendingRequest,
    token: u64,
    events: &Arc<EventQueue>,
) -> PyResult<RequestHandle> {
    let events = events.clone();
    let task = wait::runtime(py)?.spawn(async move {
        let outcome = pending.wait().await;
        events.push(Event::Reply(token, outcome));
    });
    Ok(RequestHandle {
        abort: task.abort_handle(),
    })
}

/// A request awaited on the event loop; `cancel` forgets it.
#[pyclass(name = "RequestHandle", module = "exoservice._native", frozen)]
pub(crate) struct RequestHandle {
    abort: AbortHandle,
}

#[pymethods]
impl RequestHandle {
    /// Stops waiting for the answer (a late answer then goes to the
    /// handlers like any message).
    fn cancel(&self) {
        self.abort.abort();
    }
}

/// One incoming message and the powers to answer it. It holds one of the
/// service's concurrency slots until `finish` (or until it is collected).
#[pyclass(name = "NativeDelivery", module = "exoservice._native", frozen)]
pub(crate) struct NativeDelivery {
    slot: Mutex<Option<Delivery>>,
    ctx: Ctx,
    events: Arc<EventQueue>,
}

impl NativeDelivery {
    fn new(delivery: Delivery, events: Arc<EventQueue>) -> NativeDelivery {
        NativeDelivery {
            ctx: delivery.ctx().clone(),
            slot: Mutex::new(Some(delivery)),
            events,
        }
    }
}

#[pymethods]
impl NativeDelivery {
    /// The message name.
    #[getter]
    fn name(&self) -> &str {
        &self.ctx.message().name
    }

    /// The payload as a Python value (`None` when there is none).
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::from_raw(py, self.ctx.message().payload.as_deref())
    }

    /// The activity id.
    #[getter]
    fn activity_id(&self) -> &str {
        self.ctx.activity_id()
    }

    /// Which attempt at the message this is: 1 for a first delivery, more
    /// when an at-least-once message comes again (NATS).
    #[getter]
    fn delivery_attempt(&self) -> u32 {
        self.ctx.delivery_attempt()
    }

    /// The message's `auth` as a Python value.
    #[getter]
    fn auth<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::from_raw(py, self.ctx.message().auth.as_deref())
    }

    /// The whole message as a message tuple.
    fn message<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        message_tuple(py, self.ctx.message())
    }

    /// Replies: same activity, auth and isSecurity.
    #[pyo3(signature = (name, payload=None))]
    fn reply(
        &self,
        py: Python<'_>,
        name: &str,
        payload: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        self.ctx.reply_raw(name, raw).py_err(py)
    }

    /// Sends a message in a new activity, carrying this message's auth.
    #[pyo3(signature = (name, payload=None))]
    fn send(&self, py: Python<'_>, name: &str, payload: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        self.ctx.send_raw(name, raw).py_err(py)
    }

    /// Sends a request carrying this message's auth and blocks until its
    /// answer (a message tuple).
    #[pyo3(signature = (name, payload, timeout))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let timeout = wait::seconds(timeout, "timeout")?;
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        let pending = self.ctx.start_request(name, raw, timeout).py_err(py)?;
        wait_reply(py, pending)
    }

    /// Sends a request carrying this message's auth; the outcome arrives
    /// on the event queue with this token.
    #[pyo3(signature = (name, payload, timeout, token))]
    fn request_async(
        &self,
        py: Python<'_>,
        name: &str,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        token: u64,
    ) -> PyResult<RequestHandle> {
        let timeout = wait::seconds(timeout, "timeout")?;
        let raw = payload
            .map(|p| json::to_raw(p, name))
            .transpose()?
            .flatten();
        let pending = self.ctx.start_request(name, raw, timeout).py_err(py)?;
        spawn_reply(py, pending, token, &self.events)
    }

    /// Marks the handler as failed (counted in the service's metrics as a
    /// handler error); call before `finish`.
    fn fail(&self) {
        if let Some(d) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            d.fail();
        }
    }

    /// Frees the delivery's concurrency slot (the handler is done). The
    /// powers stay usable.
    fn finish(&self) {
        let delivery = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(delivery);
    }
}

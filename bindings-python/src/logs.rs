//! The core's `tracing` events, forwarded to Python's `logging`.
//!
//! A `tracing` layer formats each enabled event and hands it to one
//! forwarding thread (a plain thread, never a tokio worker), which takes the
//! GIL and calls `logging.getLogger(name).log(level, text)`. Logger names
//! follow the Rust module: `exoservice.relay`, `exoservice.dispatch`, ...
//! (all children of `exoservice`). Which levels are forwarded follows the
//! effective level of the `exoservice` logger, refreshed by
//! [`set_log_level`]. The queue to the thread is bounded: when Python
//! cannot keep up, records are dropped and counted, and the count is logged.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Records waiting for the forwarding thread at most.
const QUEUE: usize = 4096;

/// The lowest Python level forwarded (WARNING until told otherwise).
static MIN_LEVEL: AtomicI32 = AtomicI32::new(30);
/// Records dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENDER: OnceLock<SyncSender<Cmd>> = OnceLock::new();
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

enum Cmd {
    Record {
        level: i32,
        logger: String,
        text: String,
    },
    Flush(std::sync::mpsc::Sender<()>),
    Stop,
}

fn python_level(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The Python logger name for a `tracing` target.
fn logger_name(target: &str) -> String {
    if target == "exoservice_python" || target.starts_with("exoservice_python::") {
        return "exoservice".to_owned();
    }
    let dotted = target.replace("::", ".");
    if dotted == "exoservice" || dotted.starts_with("exoservice.") {
        dotted
    } else {
        format!("exoservice.{dotted}")
    }
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // The level can change at run time: ask `enabled` every time.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        // The NATS client library's own chatter (connected, ...) is left
        // out below warnings; the core says what matters in its own words.
        if metadata.target().starts_with("async_nats") && *metadata.level() > tracing::Level::WARN {
            return false;
        }
        python_level(metadata.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Some(sender) = SENDER.get() else { return };
        let mut text = Text::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let cmd = Cmd::Record {
            level: python_level(event.metadata().level()),
            logger: logger_name(event.metadata().target()),
            text: text.message,
        };
        match sender.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn emit(py: Python<'_>, level: i32, logger: &str, text: &str) -> PyResult<()> {
    static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logger = GET_LOGGER
        .import(py, "logging", "getLogger")?
        .call1((logger,))?;
    logger.call_method1("log", (level, "%s", text))?;
    Ok(())
}

fn forward(rx: Receiver<Cmd>) {
    for cmd in rx {
        match cmd {
            Cmd::Record {
                level,
                logger,
                text,
            } => {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                // Not attachable (the interpreter is shutting down): leave.
                let attached = Python::try_attach(|py| {
                    if dropped > 0 {
                        let _ = emit(
                            py,
                            30,
                            "exoservice",
                            &format!(
                                "{dropped} log records were dropped (Python logging could not keep up)"
                            ),
                        );
                    }
                    if let Err(e) = emit(py, level, &logger, &text) {
                        e.print(py);
                    }
                });
                if attached.is_none() {
                    return;
                }
            }
            Cmd::Flush(ack) => {
                let _ = ack.send(());
            }
            Cmd::Stop => return,
        }
    }
}

/// Starts forwarding the core's log events to `logging` (once per
/// process; later calls only update the level). `level` is the effective
/// level of the `exoservice` logger.
#[pyfunction]
pub(crate) fn install_logging(level: i32) -> PyResult<()> {
    MIN_LEVEL.store(level, Ordering::Relaxed);
    if SENDER.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = sync_channel(QUEUE);
    if SENDER.set(tx).is_err() {
        return Ok(()); // another thread won the race
    }
    let thread = std::thread::Builder::new()
        .name("exoservice-log".into())
        .spawn(move || forward(rx))
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!(
                "cannot start the log forwarding thread: {e}"
            ))
        })?;
    *THREAD.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    let subscriber = tracing_subscriber::registry().with(PythonLogging);
    // A subscriber set by someone else (another extension) stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// Sets the lowest Python level that is forwarded.
#[pyfunction]
pub(crate) fn set_log_level(level: i32) {
    MIN_LEVEL.store(level, Ordering::Relaxed);
}

/// Waits (GIL released) until the records queued so far went to `logging`,
/// at most `timeout` seconds. Returns whether they did.
#[pyfunction]
pub(crate) fn flush_logs(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let Some(sender) = SENDER.get() else {
        return Ok(true);
    };
    let timeout = crate::wait::seconds(timeout, "timeout")?;
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    if sender.try_send(Cmd::Flush(ack_tx)).is_err() {
        return Ok(false);
    }
    Ok(py.detach(move || ack_rx.recv_timeout(timeout).is_ok()))
}

/// Forwards what is queued, then stops the forwarding thread (at exit,
/// before the interpreter shuts down; waits at most two seconds). Records
/// logged later are dropped.
#[pyfunction]
pub(crate) fn shutdown_logging(py: Python<'_>) {
    let Some(sender) = SENDER.get() else { return };
    MIN_LEVEL.store(i32::MAX, Ordering::Relaxed);
    let thread = THREAD.lock().unwrap_or_else(|p| p.into_inner()).take();
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut cmd = Cmd::Stop;
        loop {
            match sender.try_send(cmd) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    cmd = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return,
            }
        }
        if let Some(thread) = thread {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::logger_name;

    #[test]
    fn logger_names_sit_under_exoservice() {
        assert_eq!(logger_name("exoservice::relay"), "exoservice.relay");
        assert_eq!(logger_name("exoservice"), "exoservice");
        assert_eq!(logger_name("exoservice_python::logs"), "exoservice");
        assert_eq!(
            logger_name("tokio_tungstenite::compat"),
            "exoservice.tokio_tungstenite.compat"
        );
    }
}

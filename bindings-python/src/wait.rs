//! Waiting on the core from a Python thread: GIL released, signals checked.

use std::future::Future;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long one wait lasts at most before the thread checks for signals
/// (so Ctrl-C and `signal` handlers run within this time).
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// The core's runtime.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static tokio::runtime::Runtime> {
    exoservice::runtime::shared()
        .map_err(|e| crate::errors::usage(py, format!("cannot start the exoservice runtime: {e}")))
}

/// Runs `fut` to completion on the core's runtime from this (non-runtime)
/// thread, with the GIL released, checking for signals every [`SLICE`]. A
/// signal handler that raises (Ctrl-C's `KeyboardInterrupt`) ends the wait
/// with its exception and drops the future. With a `limit`, gives up after
/// that long and returns `None`.
pub(crate) fn block_on<F>(
    py: Python<'_>,
    fut: F,
    limit: Option<Duration>,
) -> PyResult<Option<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = runtime(py)?.handle().clone();
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(crate::errors::usage(
            py,
            "exoservice cannot wait on a thread of its own runtime",
        ));
    }
    let deadline = limit.map(|l| Instant::now() + l);
    let mut fut = std::pin::pin!(fut);
    loop {
        let slice = match deadline {
            Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
            None => SLICE,
        };
        let fut = fut.as_mut();
        // The timer is made inside `block_on`, in the runtime's context.
        let outcome =
            py.detach(|| handle.block_on(async { tokio::time::timeout(slice, fut).await }));
        match outcome {
            Ok(value) => return Ok(Some(value)),
            Err(_) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
        }
    }
}

/// A timeout in seconds from Python as a `Duration` (finite, not negative).
pub(crate) fn seconds(secs: f64, what: &str) -> PyResult<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be a finite number of seconds, not less than 0 (got {secs})"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

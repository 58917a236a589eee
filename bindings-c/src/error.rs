//! Status codes, the thread-local error text, and the guard that keeps
//! panics from crossing into C.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use exoservice::ExoError;

/// What a call of the library achieved. `EXO_OK` is 0, every error is
/// negative; the text of the last error on the calling thread is
/// `exo_last_error()`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum exo_status {
    /// Success.
    EXO_OK = 0,
    /// The configuration cannot be used: `service.yml` missing or wrong, a
    /// bad environment variable or option. The text names file, line and
    /// column where it can.
    EXO_ERR_CONFIG = -1,
    /// A message name that the service does not declare under `sends`.
    EXO_ERR_UNDECLARED = -2,
    /// A handler for a message name that the service does not declare
    /// under `receives`.
    EXO_ERR_NOT_RECEIVED = -3,
    /// A second handler for one message name.
    EXO_ERR_DUPLICATE_HANDLER = -4,
    /// A request got no reply within its timeout (or the service did not
    /// register with the bus in time, for `exo_service_wait_online`).
    EXO_ERR_TIMEOUT = -5,
    /// The outgoing buffer is full: the bus has been away too long.
    EXO_ERR_BUFFER_FULL = -6,
    /// The connection to the bus failed.
    EXO_ERR_CONNECTION = -7,
    /// A payload or auth that is not UTF-8 JSON text.
    EXO_ERR_PAYLOAD = -8,
    /// A bad argument (NULL where a value is needed, text that is not
    /// UTF-8, a number out of range), or a call at the wrong time or place.
    EXO_ERR_USAGE = -9,
    /// The service is stopping or has stopped.
    EXO_ERR_STOPPED = -10,
    /// The before-all hook returned non-zero, so the service did not start.
    EXO_ERR_HOOK = -11,
    /// A fault inside the library (a bug; the text says where).
    EXO_ERR_INTERNAL = -12,
}

use exo_status::*;

/// An error on its way to C: a status and its text.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: exo_status,
    pub(crate) text: String,
}

impl Failure {
    pub(crate) fn new(status: exo_status, text: impl Into<String>) -> Failure {
        Failure {
            status,
            text: text.into(),
        }
    }

    pub(crate) fn usage(text: impl Into<String>) -> Failure {
        Failure::new(EXO_ERR_USAGE, text)
    }

    pub(crate) fn internal(text: impl Into<String>) -> Failure {
        Failure::new(EXO_ERR_INTERNAL, text)
    }
}

impl From<ExoError> for Failure {
    fn from(e: ExoError) -> Failure {
        let status = match &e {
            ExoError::Config(_) => EXO_ERR_CONFIG,
            ExoError::Undeclared { .. } => EXO_ERR_UNDECLARED,
            ExoError::NotReceived { .. } => EXO_ERR_NOT_RECEIVED,
            ExoError::DuplicateHandler(_) => EXO_ERR_DUPLICATE_HANDLER,
            ExoError::Timeout { .. } => EXO_ERR_TIMEOUT,
            ExoError::BufferFull { .. } => EXO_ERR_BUFFER_FULL,
            ExoError::Connection(_) => EXO_ERR_CONNECTION,
            ExoError::Payload { .. } => EXO_ERR_PAYLOAD,
            ExoError::Usage(_) => EXO_ERR_USAGE,
            ExoError::Stopped => EXO_ERR_STOPPED,
        };
        Failure::new(status, e.to_string())
    }
}

impl From<exoservice::config::ConfigError> for Failure {
    fn from(e: exoservice::config::ConfigError) -> Failure {
        Failure::new(EXO_ERR_CONFIG, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `text` as this thread's last error.
pub(crate) fn set_last_error(text: &str) {
    let text = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

/// The text of the last error on the calling thread, or `""` when no call
/// on this thread has failed yet.
///
/// Ownership: the text belongs to the library; it stays valid until the
/// next failing call into the library on the same thread. Copy it to keep
/// it. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn exo_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.try_with(|e| e.borrow().as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// The name of a status code, like `"EXO_ERR_TIMEOUT"`, or
/// `"EXO_UNKNOWN_STATUS"` for a number that is none.
///
/// Ownership: a static string; never free it. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn exo_status_name(status: i32) -> *const c_char {
    let name = match status {
        0 => c"EXO_OK",
        -1 => c"EXO_ERR_CONFIG",
        -2 => c"EXO_ERR_UNDECLARED",
        -3 => c"EXO_ERR_NOT_RECEIVED",
        -4 => c"EXO_ERR_DUPLICATE_HANDLER",
        -5 => c"EXO_ERR_TIMEOUT",
        -6 => c"EXO_ERR_BUFFER_FULL",
        -7 => c"EXO_ERR_CONNECTION",
        -8 => c"EXO_ERR_PAYLOAD",
        -9 => c"EXO_ERR_USAGE",
        -10 => c"EXO_ERR_STOPPED",
        -11 => c"EXO_ERR_HOOK",
        -12 => c"EXO_ERR_INTERNAL",
        _ => c"EXO_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

use exoservice::error::panic_text;

fn internal_error(panic: &(dyn Any + Send)) -> Failure {
    Failure::internal(format!(
        "internal error in libexoservice (please report it): {}",
        panic_text(panic)
    ))
}

/// Runs the body of an entry point that returns a status: errors become
/// their status plus the thread's error text (prefixed with the
/// function's name), a panic becomes `EXO_ERR_INTERNAL`.
pub(crate) fn status_of(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> exo_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => EXO_OK,
        Ok(Err(failure)) => {
            let status = failure.status;
            fail(function, failure);
            status
        }
        Err(panic) => {
            fail(function, internal_error(&*panic));
            EXO_ERR_INTERNAL
        }
    }
}

fn fail(function: &str, failure: Failure) {
    set_last_error(&format!("{function}: {}", failure.text));
}

/// Runs the body of an entry point that returns a count (>= 0) or a
/// negative status.
pub(crate) fn count_of(function: &str, body: impl FnOnce() -> Result<i32, Failure>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(n)) => n,
        Ok(Err(failure)) => {
            let status = failure.status;
            fail(function, failure);
            status as i32
        }
        Err(panic) => {
            fail(function, internal_error(&*panic));
            EXO_ERR_INTERNAL as i32
        }
    }
}

/// Runs the body of an entry point that returns a pointer: NULL on error
/// (with the thread's error text set) or on a panic.
pub(crate) fn pointer_of<T>(
    function: &str,
    body: impl FnOnce() -> Result<*mut T, Failure>,
) -> *mut T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(p)) => p,
        Ok(Err(failure)) => {
            fail(function, failure);
            std::ptr::null_mut()
        }
        Err(panic) => {
            fail(function, internal_error(&*panic));
            std::ptr::null_mut()
        }
    }
}

/// Runs the body of an entry point that returns a value with a fallback
/// (for accessors): the fallback on error or panic.
pub(crate) fn value_of<T>(
    function: &str,
    fallback: T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(failure)) => {
            fail(function, failure);
            fallback
        }
        Err(panic) => {
            fail(function, internal_error(&*panic));
            fallback
        }
    }
}

//! The Node binding of exoservice: a thin N-API layer over the core's
//! [`Engine`](exoservice::Engine), wrapped by the JavaScript package
//! `exoservice-native` (`index.js`), which gives Node users the
//! exoservice-js API.
//!
//! Threading: all I/O runs on the core's runtime. Node's thread pulls
//! deliveries with `nextBatch()`, a promise that the core settles (through
//! a N-API deferred, one per call) when messages are there; handlers run on
//! the event loop and answer through the delivery's methods, which only
//! queue frames. A pending promise keeps the event loop alive, so the loop
//! stays referenced exactly while the service waits for work; once the
//! service is stopped no promise is pending and the process can exit.
//!
//! Errors cross as JavaScript `Error`s whose message starts with a code
//! (`EXO_TIMEOUT: ...`); `index.js` turns them into `ExoError` subclasses.
//! Every entry point catches panics.

mod delivery;
mod engine;
mod settle;
mod testing;

pub use delivery::{NativeDelivery, NativeWatch};
pub use engine::{DrainReport, EngineOptions, NativeEngine};
pub use testing::NativeMockBus;

use exoservice::ExoError;

/// The code `index.js` maps an [`ExoError`] to (the `code` of the JS error).
pub fn error_code(e: &ExoError) -> &'static str {
    match e {
        ExoError::Config(_) => "EXO_CONFIG",
        ExoError::Undeclared { .. } => "EXO_UNDECLARED",
        ExoError::NotReceived { .. } => "EXO_NOT_RECEIVED",
        ExoError::DuplicateHandler(_) => "EXO_DUPLICATE_HANDLER",
        ExoError::Timeout { .. } => "EXO_TIMEOUT",
        ExoError::BufferFull { .. } => "EXO_BUFFER_FULL",
        ExoError::Connection(_) => "EXO_CONNECTION",
        ExoError::Payload { .. } => "EXO_PAYLOAD",
        ExoError::Usage(_) => "EXO_USAGE",
        ExoError::Stopped => "EXO_STOPPED",
    }
}

/// An [`ExoError`] as a JavaScript error (`CODE: text`).
pub(crate) fn js_error(e: ExoError) -> napi::Error {
    coded(error_code(&e), &e.to_string())
}

/// A JavaScript error with a code and a text.
pub(crate) fn coded(code: &str, text: &str) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("{code}: {text}"))
}

/// A usage error (bad argument from JavaScript).
pub(crate) fn usage(text: impl AsRef<str>) -> napi::Error {
    coded("EXO_USAGE", text.as_ref())
}

/// The core's runtime (all I/O of the binding runs on it).
pub(crate) fn runtime() -> napi::Result<&'static tokio::runtime::Runtime> {
    exoservice::runtime::shared()
        .map_err(|e| coded("EXO_USAGE", &format!("cannot start the I/O runtime: {e}")))
}

/// A part (`what`: "payload", "auth") of message `name` from JavaScript
/// (JSON text, or nothing) as raw JSON.
pub(crate) fn raw_part(
    name: &str,
    what: &str,
    json: Option<&str>,
) -> napi::Result<Option<Box<serde_json::value::RawValue>>> {
    json.map_or(Ok(None), |text| {
        exoservice::message::raw_part(name, what, text).map_err(js_error)
    })
}

/// A duration in milliseconds from JavaScript.
pub(crate) fn millis(what: &str, ms: f64) -> napi::Result<std::time::Duration> {
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(usage(format!(
            "{what} must be a number of milliseconds between 0 and 1e12, got {ms}"
        )));
    }
    Ok(std::time::Duration::from_micros((ms * 1000.0) as u64))
}

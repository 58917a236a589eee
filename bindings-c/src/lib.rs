//! The C binding of exoservice: `libexoservice` and `exoservice.h`.
//!
//! Every function here is an `extern "C"` entry point named `exo_*`; the
//! header `include/exoservice.h` is generated from this source by cbindgen
//! (see `build.rs`). The rules every entry point keeps:
//!
//! - No panic crosses into C: each body runs under `catch_unwind`, and a
//!   panic becomes `EXO_ERR_INTERNAL` (or NULL) with its text in
//!   `exo_last_error()`.
//! - Errors are an [`exo_status`] (0 is success, errors are negative) plus
//!   thread-local text; bad input (NULL, text that is not UTF-8, payloads
//!   that are not JSON) is an error code, never a crash.
//! - Handlers run only on the thread that calls `exo_service_run` or
//!   `exo_service_poll`; the core's I/O threads never call into C.
//! - Every object has a `_free`; who owns each returned pointer is written
//!   on each function.
#![warn(missing_docs)]

// The header lists the functions in the order of these modules (kept in
// this order on purpose: errors, strings, options, service, ctx).
mod error;

mod strings;

mod options;

mod service;

mod ctx;

mod stop;

pub use ctx::{
    CtxHandle, exo_ctx_activity_id, exo_ctx_auth, exo_ctx_detach, exo_ctx_free,
    exo_ctx_is_security, exo_ctx_message_id, exo_ctx_name, exo_ctx_payload, exo_ctx_request,
    exo_ctx_send, exo_ctx_sender, exo_reply,
};
pub use error::{exo_last_error, exo_status, exo_status_name};
pub use options::{
    Options, exo_options_free, exo_options_new, exo_options_set_announce_online,
    exo_options_set_dir, exo_options_set_drain_timeout_ms, exo_options_set_exocom_host,
    exo_options_set_exocom_port, exo_options_set_handle_signals, exo_options_set_role,
};
pub use service::{
    Service, exo_handler_fn, exo_hook_fn, exo_request, exo_send, exo_send_with_auth,
    exo_service_before_all, exo_service_free, exo_service_new, exo_service_new_with,
    exo_service_on, exo_service_poll, exo_service_role, exo_service_run, exo_service_start,
    exo_service_stop, exo_service_wait_online,
};
pub use strings::{exo_string_free, exo_version};

#[cfg(test)]
mod tests {
    /// The committed header is the one cbindgen generates from this source.
    #[test]
    fn header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/exoservice.h"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/exoservice.h");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the header generated from the source; run `make -C bindings-c header`"
        );
    }
}

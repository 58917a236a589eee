//! `exo_options`: how `exo_service_new_with` makes a service.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use exoservice::routes::is_valid_role;

use crate::error::{Failure, exo_status, pointer_of, status_of, value_of};
use crate::strings::text;

/// Settings for `exo_service_new_with`. Opaque; made by
/// `exo_options_new`, freed by `exo_options_free`.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) role: Option<String>,
    pub(crate) exocom_host: Option<String>,
    pub(crate) exocom_port: Option<u16>,
    pub(crate) drain_timeout: Option<Duration>,
    pub(crate) handle_signals: bool,
    pub(crate) announce_online: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dir: None,
            role: None,
            exocom_host: None,
            exocom_port: None,
            drain_timeout: None,
            handle_signals: true,
            announce_online: true,
        }
    }
}

/// # Safety
/// `opts` is NULL or a live `exo_options`.
unsafe fn options<'a>(opts: *mut Options) -> Result<&'a mut Options, Failure> {
    // SAFETY: per the caller's contract.
    unsafe { opts.as_mut() }.ok_or_else(|| Failure::usage("opts is NULL"))
}

/// New options with the defaults: the service directory is the current
/// one, role and bus come from `service.yml` and the environment,
/// `exo_service_run` handles SIGINT/SIGTERM, and the service prints
/// `online at port N` once registered.
///
/// Ownership: the caller frees the result with `exo_options_free` (the
/// service made from it does not keep it).
#[unsafe(no_mangle)]
pub extern "C" fn exo_options_new() -> *mut Options {
    pointer_of("exo_options_new", || {
        Ok(Box::into_raw(Box::new(Options::default())))
    })
}

/// Frees options. NULL is ignored.
///
/// # Safety
/// `opts` is NULL or from `exo_options_new`, not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_free(opts: *mut Options) {
    if opts.is_null() {
        return;
    }
    value_of("exo_options_free", (), || {
        // SAFETY: from Box::into_raw in exo_options_new.
        drop(unsafe { Box::from_raw(opts) });
        Ok(())
    })
}

/// The service directory, where `service.yml` (or `config.yml`) is read;
/// NULL means the current directory. The string is copied.
///
/// # Safety
/// `opts` is a live `exo_options`; `dir` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_dir(opts: *mut Options, dir: *const c_char) -> exo_status {
    status_of("exo_options_set_dir", || {
        // SAFETY: per the contract.
        let o = unsafe { options(opts) }?;
        o.dir = if dir.is_null() {
            None
        } else {
            Some(PathBuf::from(unsafe { text(dir, "dir") }?))
        };
        Ok(())
    })
}

/// The role to register as, winning over `ROLE` and the config file; NULL
/// clears it. A role is letters and digits in groups joined by single
/// hyphens (`todo-service`); anything else is `EXO_ERR_USAGE`.
///
/// # Safety
/// `opts` is a live `exo_options`; `role` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_role(
    opts: *mut Options,
    role: *const c_char,
) -> exo_status {
    status_of("exo_options_set_role", || {
        // SAFETY: per the contract.
        let o = unsafe { options(opts) }?;
        if role.is_null() {
            o.role = None;
            return Ok(());
        }
        let role = unsafe { text(role, "role") }?;
        if !is_valid_role(role) {
            return Err(Failure::usage(format!(
                "{role:?} is not a role name (letters and digits in groups joined by single hyphens, like `todo-service`)"
            )));
        }
        o.role = Some(role.to_owned());
        Ok(())
    })
}

/// The bus's host, winning over `EXOCOM_HOST`; NULL clears it.
///
/// # Safety
/// `opts` is a live `exo_options`; `host` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_exocom_host(
    opts: *mut Options,
    host: *const c_char,
) -> exo_status {
    status_of("exo_options_set_exocom_host", || {
        // SAFETY: per the contract.
        let o = unsafe { options(opts) }?;
        if host.is_null() {
            o.exocom_host = None;
            return Ok(());
        }
        let host = unsafe { text(host, "host") }?.trim();
        if host.is_empty() {
            return Err(Failure::usage("the host is empty"));
        }
        o.exocom_host = Some(host.to_owned());
        Ok(())
    })
}

/// The bus's port (1 to 65535), winning over `EXOCOM_PORT`; 0 clears it.
///
/// # Safety
/// `opts` is a live `exo_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_exocom_port(opts: *mut Options, port: i32) -> exo_status {
    status_of("exo_options_set_exocom_port", || {
        // SAFETY: per the contract.
        let o = unsafe { options(opts) }?;
        o.exocom_port = match port {
            0 => None,
            1..=65535 => Some(port as u16),
            _ => {
                return Err(Failure::usage(format!(
                    "the port must be from 1 to 65535 (0 clears it), not {port}"
                )));
            }
        };
        Ok(())
    })
}

/// How long running work (detached ctxs) gets to finish when the service
/// stops, in milliseconds (> 0), winning over `EXOSERVICE_DRAIN_TIMEOUT_MS`
/// and the config; 0 clears it.
///
/// # Safety
/// `opts` is a live `exo_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_drain_timeout_ms(
    opts: *mut Options,
    timeout_ms: i32,
) -> exo_status {
    status_of("exo_options_set_drain_timeout_ms", || {
        // SAFETY: per the contract.
        let o = unsafe { options(opts) }?;
        o.drain_timeout = match u64::try_from(timeout_ms) {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                return Err(Failure::usage(format!(
                    "the drain timeout must be 0 or more ms, not {timeout_ms}"
                )));
            }
        };
        Ok(())
    })
}

/// Whether `exo_service_run` stops the service on SIGINT and SIGTERM
/// (default true). While a service runs, the library's handler replaces
/// the program's for these two signals; the previous handlers come back
/// when the last running service returns. Turn it off to handle the
/// signals yourself (call `exo_service_stop` from your handler).
///
/// # Safety
/// `opts` is a live `exo_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_handle_signals(
    opts: *mut Options,
    on: bool,
) -> exo_status {
    status_of("exo_options_set_handle_signals", || {
        // SAFETY: per the contract.
        unsafe { options(opts) }?.handle_signals = on;
        Ok(())
    })
}

/// Whether the service prints `online at port N` on stdout once it has
/// registered with the bus (default true; `exo run` waits for this text).
///
/// # Safety
/// `opts` is a live `exo_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_options_set_announce_online(
    opts: *mut Options,
    on: bool,
) -> exo_status {
    status_of("exo_options_set_announce_online", || {
        // SAFETY: per the contract.
        unsafe { options(opts) }?.announce_online = on;
        Ok(())
    })
}

//! `exo_ctx`: the message a handler is called for, and its powers (reply,
//! send, request).

use std::cell::OnceCell;
use std::ffi::{CString, c_char};
use std::ptr;
use std::time::Duration;

use exoservice::dispatch::Delivery;
use exoservice::{Ctx, Message, PendingRequest};

use crate::error::{Failure, exo_status, pointer_of, status_of, value_of};
use crate::strings::{self, c_string, give};

/// The message a handler was called for, with the powers to answer it.
/// Opaque.
///
/// The `exo_ctx *` a handler gets is lent for the duration of the call
/// only. To answer later or from another thread, take an owned copy with
/// `exo_ctx_detach` and free it with `exo_ctx_free`.
pub struct CtxHandle {
    ctx: Ctx,
    /// The delivery's concurrency slot; moved along by `exo_ctx_detach`.
    delivery: Option<Delivery>,
    /// Whether the caller owns this handle (from `exo_ctx_detach`).
    owned: bool,
    name: OnceCell<CString>,
    activity: OnceCell<CString>,
    id: OnceCell<Option<CString>>,
    sender: OnceCell<Option<CString>>,
    auth: OnceCell<Option<CString>>,
    payload: OnceCell<CString>,
}

impl CtxHandle {
    /// The handle a handler is lent for `delivery`.
    pub(crate) fn lent(delivery: Delivery) -> CtxHandle {
        CtxHandle::make(delivery.ctx().clone(), Some(delivery), false)
    }

    fn make(ctx: Ctx, delivery: Option<Delivery>, owned: bool) -> CtxHandle {
        CtxHandle {
            ctx,
            delivery,
            owned,
            name: OnceCell::new(),
            activity: OnceCell::new(),
            id: OnceCell::new(),
            sender: OnceCell::new(),
            auth: OnceCell::new(),
            payload: OnceCell::new(),
        }
    }

    fn message(&self) -> &Message {
        self.ctx.message()
    }
}

/// The handle behind a `const exo_ctx *`.
///
/// # Safety
/// `ctx` is NULL or a live handle.
unsafe fn handle<'a>(ctx: *const CtxHandle) -> Result<&'a CtxHandle, Failure> {
    // SAFETY: per the caller's contract.
    unsafe { ctx.as_ref() }.ok_or_else(|| Failure::usage("ctx is NULL"))
}

fn optional(
    value: &OnceCell<Option<CString>>,
    make: impl FnOnce() -> Option<CString>,
) -> *const c_char {
    value
        .get_or_init(make)
        .as_ref()
        .map_or(ptr::null(), |s| s.as_ptr())
}

/// The name of the message being handled (as this service receives it).
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
/// NULL only when `ctx` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_name(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_name", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(h.name.get_or_init(|| c_string(&h.message().name)).as_ptr())
    })
}

/// The activity id of the message being handled (a reply carries it).
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
/// `""` when the message had none; NULL only when `ctx` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_activity_id(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_activity_id", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(h.activity
            .get_or_init(|| c_string(h.message().activity()))
            .as_ptr())
    })
}

/// The id of the message being handled, or NULL when it had none.
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_message_id(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_message_id", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(optional(&h.id, || h.message().id.as_deref().map(c_string)))
    })
}

/// The role that sent the message, or NULL when the bus did not say.
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_sender(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_sender", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(optional(&h.sender, || {
            h.message().sender.as_deref().map(c_string)
        }))
    })
}

/// The message's `auth` (opaque credentials) as JSON text, or NULL when it
/// has none. Replies and sends from this ctx carry it along.
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_auth(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_auth", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(optional(&h.auth, || {
            h.message().auth.as_deref().map(|a| c_string(a.get()))
        }))
    })
}

/// The payload of the message as JSON text (`"null"` when it has none):
/// the same text the handler got as `payload_json`.
///
/// Ownership: the text belongs to `ctx` and lives as long as it does.
/// NULL only when `ctx` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_payload(ctx: *const CtxHandle) -> *const c_char {
    value_of("exo_ctx_payload", ptr::null(), || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        Ok(h.payload
            .get_or_init(|| c_string(h.message().payload_json()))
            .as_ptr())
    })
}

/// Whether the message belongs to the security exchange (`isSecurity`).
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_is_security(ctx: *const CtxHandle) -> bool {
    value_of("exo_ctx_is_security", false, || {
        // SAFETY: per the contract.
        Ok(unsafe { handle(ctx) }?.message().is_security)
    })
}

/// Which attempt at the message being handled this is: 1 for a first
/// delivery, 2 and more when an at-least-once message comes again after a
/// failed handler (`exo_ctx_fail`) or an instance that died (NATS; always
/// 1 on ExoCom). 0 only when `ctx` is NULL (with `exo_last_error`).
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_delivery_attempt(ctx: *const CtxHandle) -> u32 {
    value_of("exo_ctx_delivery_attempt", 0, || {
        // SAFETY: per the contract.
        Ok(unsafe { handle(ctx) }?.ctx.delivery_attempt())
    })
}

/// Replies to the message being handled: a message `name` (declared under
/// `sends`) with the request's `activityId`, `auth` and `isSecurity`.
/// `payload_json` is UTF-8 JSON text, or NULL for no payload.
///
/// Returns `EXO_OK`; `EXO_ERR_UNDECLARED`, `EXO_ERR_PAYLOAD` (not JSON),
/// `EXO_ERR_BUFFER_FULL`, `EXO_ERR_STOPPED`, `EXO_ERR_USAGE`.
///
/// # Safety
/// `ctx` is a live `exo_ctx`; the strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_reply(
    ctx: *const CtxHandle,
    name: *const c_char,
    payload_json: *const c_char,
) -> exo_status {
    status_of("exo_reply", || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        Ok(h.ctx.reply_raw(name, payload)?)
    })
}

/// Sends a message `name` (declared under `sends`) in a new activity,
/// carrying the handled message's `auth`. `payload_json` is UTF-8 JSON
/// text, or NULL for no payload.
///
/// Returns as `exo_reply`.
///
/// # Safety
/// `ctx` is a live `exo_ctx`; the strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_send(
    ctx: *const CtxHandle,
    name: *const c_char,
    payload_json: *const c_char,
) -> exo_status {
    status_of("exo_ctx_send", || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        Ok(h.ctx.send_raw(name, payload)?)
    })
}

/// Sends a request carrying the handled message's `auth` and blocks until
/// the first message of its activity arrives, for at most `timeout_ms`
/// (> 0). See `exo_request` for the out-parameters and their ownership.
///
/// # Safety
/// `ctx` is a live `exo_ctx`; the strings are NULL or NUL-terminated;
/// `reply_name` and `reply_payload` are NULL or point to writable pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_request(
    ctx: *const CtxHandle,
    name: *const c_char,
    payload_json: *const c_char,
    timeout_ms: i32,
    reply_name: *mut *mut c_char,
    reply_payload: *mut *mut c_char,
) -> exo_status {
    status_of("exo_ctx_request", || {
        // SAFETY: per the contract.
        unsafe { clear_out(reply_name, reply_payload) };
        let h = unsafe { handle(ctx) }?;
        let (name, payload) = unsafe { strings::name_and_payload(name, payload_json) }?;
        let timeout = timeout_of(timeout_ms)?;
        let pending = h.ctx.start_request(name, payload, timeout)?;
        // SAFETY: per the contract.
        unsafe { finish_request(pending, reply_name, reply_payload) }
    })
}

/// A request's timeout from milliseconds (> 0).
pub(crate) fn timeout_of(timeout_ms: i32) -> Result<Duration, Failure> {
    match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(Failure::usage(format!(
            "the timeout must be above 0 ms, not {timeout_ms}"
        ))),
    }
}

/// Sets the out-parameters of a request to NULL.
///
/// # Safety
/// Each is NULL or writable.
pub(crate) unsafe fn clear_out(reply_name: *mut *mut c_char, reply_payload: *mut *mut c_char) {
    // SAFETY: per the contract.
    unsafe {
        if !reply_name.is_null() {
            *reply_name = ptr::null_mut();
        }
        if !reply_payload.is_null() {
            *reply_payload = ptr::null_mut();
        }
    }
}

/// Blocks for the answer of a request and hands it out.
///
/// # Safety
/// As for [`clear_out`].
pub(crate) unsafe fn finish_request(
    pending: PendingRequest,
    reply_name: *mut *mut c_char,
    reply_payload: *mut *mut c_char,
) -> Result<(), Failure> {
    // SAFETY: per the contract.
    unsafe { finish_request_with_auth(pending, reply_name, reply_payload, ptr::null_mut()) }
}

/// [`finish_request`], also handing out the answer's `auth` as JSON text
/// (NULL when it has none) through `reply_auth`.
///
/// # Safety
/// As for [`clear_out`]; `reply_auth` too is NULL or writable.
pub(crate) unsafe fn finish_request_with_auth(
    pending: PendingRequest,
    reply_name: *mut *mut c_char,
    reply_payload: *mut *mut c_char,
    reply_auth: *mut *mut c_char,
) -> Result<(), Failure> {
    let reply = pending.wait_blocking()?;
    // SAFETY: per the contract.
    unsafe {
        if !reply_name.is_null() {
            *reply_name = give(&reply.name);
        }
        if !reply_payload.is_null() {
            *reply_payload = give(reply.payload_json());
        }
        if !reply_auth.is_null() {
            *reply_auth = reply
                .auth
                .as_deref()
                .map_or(ptr::null_mut(), |a| give(a.get()));
        }
    }
    Ok(())
}

/// Marks the handling of this message as failed: it counts as a handler
/// error in the service's metrics (`exoservice_handler_errors_total`,
/// served with `EXOSERVICE_METRICS_PORT`). Call it from the handler (or on
/// a detached copy) before the handler returns (or the copy is freed);
/// calling it again changes nothing.
///
/// Returns `EXO_OK`; `EXO_ERR_USAGE` when `ctx` is NULL or its message
/// was already finished (a lent ctx after `exo_ctx_detach`).
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_fail(ctx: *const CtxHandle) -> exo_status {
    status_of("exo_ctx_fail", || {
        // SAFETY: per the contract.
        let h = unsafe { handle(ctx) }?;
        match &h.delivery {
            Some(d) => {
                d.fail();
                Ok(())
            }
            None => Err(Failure::usage(
                "this ctx no longer holds its message (it was detached); call exo_ctx_fail on the detached copy",
            )),
        }
    })
}

/// An owned copy of `ctx`, to reply, send or read the message after the
/// handler has returned, from any thread (one thread at a time per
/// copy; make one copy per thread if several need it). The message keeps its place
/// among the service's handlers in flight (the concurrency limit, and the
/// drain waits for it) until the copy is freed with `exo_ctx_free`.
///
/// Ownership: the caller owns the result and frees it with
/// `exo_ctx_free`. NULL (with `exo_last_error`) when `ctx` is NULL.
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_detach(ctx: *mut CtxHandle) -> *mut CtxHandle {
    pointer_of("exo_ctx_detach", || {
        // SAFETY: per the contract.
        let h = unsafe { ctx.as_mut() }.ok_or_else(|| Failure::usage("ctx is NULL"))?;
        let copy = CtxHandle::make(h.ctx.clone(), h.delivery.take(), true);
        Ok(Box::into_raw(Box::new(copy)))
    })
}

/// Frees a ctx from `exo_ctx_detach`. NULL is ignored. The ctx a handler
/// is lent is not the caller's to free: that is refused (logged).
///
/// # Safety
/// `ctx` is NULL or a live `exo_ctx`, not used again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_ctx_free(ctx: *mut CtxHandle) {
    if ctx.is_null() {
        return;
    }
    value_of("exo_ctx_free", (), || {
        // SAFETY: per the contract.
        let h = unsafe { &*ctx };
        if !h.owned {
            let text = "this ctx is lent to a handler and freed by the library; only a ctx from exo_ctx_detach is freed by the caller";
            tracing::error!("exo_ctx_free: {text}");
            return Err(Failure::usage(text));
        }
        // SAFETY: an owned handle from Box::into_raw in exo_ctx_detach.
        drop(unsafe { Box::from_raw(ctx) });
        Ok(())
    })
}

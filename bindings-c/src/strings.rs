//! Text across the boundary: reading C strings (names, JSON), handing out
//! strings the caller frees.

use std::ffi::{CStr, CString, c_char};

use exoservice::message;
use serde_json::value::RawValue;

use crate::error::{Failure, exo_status};

/// A required C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::usage(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| Failure::usage(format!("{what} is not valid UTF-8 ({e})")))
}

/// A required, non-empty message name.
///
/// # Safety
/// As for [`text`].
pub(crate) unsafe fn name<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: forwarded contract.
    let name = unsafe { text(p, "the message name") }?;
    if name.is_empty() {
        return Err(Failure::usage("the message name is empty"));
    }
    Ok(name)
}

/// An optional JSON argument (a payload or auth): NULL and `null` are
/// "none"; anything else must be UTF-8 JSON text, else `EXO_ERR_PAYLOAD`.
///
/// # Safety
/// As for [`text`].
pub(crate) unsafe fn json(
    p: *const c_char,
    what: &str,
    name: &str,
) -> Result<Option<Box<RawValue>>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    let text = s.to_str().map_err(|e| {
        Failure::new(
            exo_status::EXO_ERR_PAYLOAD,
            format!("the {what} of '{name}' is not valid UTF-8 ({e})"),
        )
    })?;
    Ok(message::raw_part(name, what, text)?)
}

/// A message's name and payload as given to a send, reply or request.
///
/// # Safety
/// As for [`text`], for both pointers.
pub(crate) unsafe fn name_and_payload<'a>(
    name: *const c_char,
    payload_json: *const c_char,
) -> Result<(&'a str, Option<Box<RawValue>>), Failure> {
    // SAFETY: forwarded contract.
    let name = unsafe { self::name(name) }?;
    // SAFETY: forwarded contract.
    let payload = unsafe { json(payload_json, "payload", name) }?;
    Ok((name, payload))
}

/// Text as a C string; a NUL inside (which JSON text and message names
/// cannot hold) is written as `\0`.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new(s.replace('\0', "\\0")).unwrap_or_default())
}

/// Text handed to the caller, who frees it with `exo_string_free`.
pub(crate) fn give(s: &str) -> *mut c_char {
    c_string(s).into_raw()
}

/// Frees a string that the library handed out (the reply of
/// `exo_request`, say). NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string from this library that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn exo_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the string came from CString::into_raw in `give`.
        drop(unsafe { CString::from_raw(s) });
    });
}

/// The version of the library, like `"0.1.0"`.
///
/// Ownership: a static string; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn exo_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

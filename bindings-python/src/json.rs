//! Payloads between Python values and JSON text.
//!
//! Outgoing: a strict walk over plain Python values — `dict` (with `str`
//! keys), `list`, `str`, `int`, `float`, `bool` and `None` (subclasses
//! included) — written straight into JSON text. Anything else is a
//! `TypeError` naming where in the payload it sits. Integers of any size
//! are written exactly; `NaN` and infinities are refused (JSON has none).
//!
//! Incoming: Python's own `json.loads`, which keeps big integers exact.

use std::fmt::Write as _;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use serde_json::value::RawValue;

/// How deep a payload may nest (deeper is most likely a cycle).
const MAX_DEPTH: usize = 200;

/// One step of the path to a bad value, for the error text.
enum Step {
    Key(String),
    Index(usize),
}

/// Why a value cannot be written, and where it is (innermost step first).
struct Bad {
    path: Vec<Step>,
    reason: String,
}

impl Bad {
    fn new(reason: impl Into<String>) -> Bad {
        Bad {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn at(mut self, step: Step) -> Bad {
        self.path.push(step);
        self
    }

    fn place(&self, root: &str) -> String {
        let mut place = String::from(root);
        for step in self.path.iter().rev() {
            match step {
                Step::Key(k) => {
                    let k = k.replace('\\', "\\\\").replace('\'', "\\'");
                    let _ = write!(place, "['{k}']");
                }
                Step::Index(i) => {
                    let _ = write!(place, "[{i}]");
                }
            }
        }
        place
    }
}

const ALLOWED: &str =
    "a payload is made of dict (with str keys), list, str, int, float, bool and None";

/// Writes `value` as JSON; `None` for Python `None` (no payload). `what`
/// names the message for the error text (`"pong"`).
pub(crate) fn to_raw(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Box<RawValue>>> {
    encode(value, "payload")
        .map_err(|why| PyTypeError::new_err(format!("cannot send '{what}': {why}")))
}

/// Writes an `auth` value as JSON, checked like a payload; `None` for
/// Python `None` (no auth). `what` names the message for the error text.
pub(crate) fn auth_to_raw(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Box<RawValue>>> {
    encode(value, "auth")
        .map_err(|why| PyTypeError::new_err(format!("cannot send '{what}': {why}")))
}

/// Writes `value` as JSON text (tests and tools; `None` gives `null`).
#[pyfunction]
pub(crate) fn encode_payload(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let raw = encode(value, "payload").map_err(PyTypeError::new_err)?;
    Ok(raw.map_or_else(|| "null".to_owned(), |r| r.get().to_owned()))
}

/// The JSON of `value`, or why it has none (the place named from `root`).
fn encode(value: &Bound<'_, PyAny>, root: &str) -> Result<Option<Box<RawValue>>, String> {
    if value.is_none() {
        return Ok(None);
    }
    let mut out = String::with_capacity(64);
    if let Err(bad) = write_value(value, &mut out, 0) {
        return Err(format!("{} {}; {ALLOWED}", bad.place(root), bad.reason));
    }
    RawValue::from_string(out)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn write_value(value: &Bound<'_, PyAny>, out: &mut String, depth: usize) -> Result<(), Bad> {
    if depth > MAX_DEPTH {
        return Err(Bad::new(format!(
            "nests deeper than {MAX_DEPTH} levels (does it contain itself?)"
        )));
    }
    if value.is_none() {
        out.push_str("null");
    } else if let Ok(b) = value.cast::<PyBool>() {
        out.push_str(if b.is_true() { "true" } else { "false" });
    } else if value.cast::<PyInt>().is_ok() {
        write_int(value, out)?;
    } else if let Ok(f) = value.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(Bad::new(format!("is {v}, which JSON cannot carry")));
        }
        match serde_json::Number::from_f64(v) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => return Err(Bad::new(format!("is {v}, which JSON cannot carry"))),
        }
    } else if let Ok(s) = value.cast::<PyString>() {
        write_str(s, out)?;
    } else if let Ok(dict) = value.cast::<PyDict>() {
        out.push('{');
        for (i, (k, v)) in dict.iter().enumerate() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(Bad::new(format!(
                    "has a key of type '{}' ({}); keys must be str",
                    type_name(&k),
                    k.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            };
            if i > 0 {
                out.push(',');
            }
            write_str(key, out)?;
            out.push(':');
            write_value(&v, out, depth + 1).map_err(|bad| {
                bad.at(Step::Key(
                    key.to_cow().map(|c| c.into_owned()).unwrap_or_default(),
                ))
            })?;
        }
        out.push('}');
    } else if let Ok(list) = value.cast::<PyList>() {
        out.push('[');
        for (i, item) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_value(&item, out, depth + 1).map_err(|bad| bad.at(Step::Index(i)))?;
        }
        out.push(']');
    } else {
        return Err(Bad::new(format!(
            "is of type '{}', which is not a JSON value",
            type_name(value)
        )));
    }
    Ok(())
}

fn write_int(value: &Bound<'_, PyAny>, out: &mut String) -> Result<(), Bad> {
    if let Ok(n) = value.extract::<i64>() {
        let _ = write!(out, "{n}");
    } else if let Ok(n) = value.extract::<u64>() {
        let _ = write!(out, "{n}");
    } else {
        // Beyond 64 bits: the decimal text of the plain int (a subclass
        // such as an IntEnum may print itself differently).
        let py = value.py();
        let text = py
            .get_type::<PyInt>()
            .call1((value,))
            .and_then(|i| i.str())
            .map_err(|e| Bad::new(format!("is an int that cannot be written: {e}")))?;
        out.push_str(&text.to_cow().map_err(|e| Bad::new(e.to_string()))?);
    }
    Ok(())
}

fn write_str(s: &Bound<'_, PyString>, out: &mut String) -> Result<(), Bad> {
    let text = s
        .to_cow()
        .map_err(|_| Bad::new("is a str that is not valid Unicode (it holds a lone surrogate)"))?;
    escape_into(&text, out);
    Ok(())
}

/// Writes `s` as a JSON string literal.
fn escape_into(s: &str, out: &mut String) {
    exoservice::message::push_json_string(out, s);
}

/// Reads JSON text into Python values (`json.loads`).
pub(crate) fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS.import(py, "json", "loads")?.call1((text,))
}

/// Reads an optional raw JSON value (`None` when absent).
pub(crate) fn from_raw<'py>(
    py: Python<'py>,
    raw: Option<&RawValue>,
) -> PyResult<Bound<'py, PyAny>> {
    match raw {
        Some(raw) => from_json(py, raw.get()),
        None => Ok(py.None().into_bound(py)),
    }
}

#[cfg(test)]
mod tests {
    use super::escape_into;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_into(s, &mut out);
        out
    }

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "lines\nand\ttabs\r",
            "\u{0}\u{1}\u{1f} controls \u{8}\u{c}",
            "unicode: é ü 漢字 🎉",
            "\u{7f} del",
        ] {
            assert_eq!(escaped(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}

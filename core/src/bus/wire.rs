//! How the bus reads and writes frames, and the timestamp it stamps on
//! them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{Message, ProtocolError};

/// The fields of a message that the bus routes, borrowed from wherever the
/// message lives (a frame just read, or a [`Message`] the bus holds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) name: &'a str,
    pub(crate) id: &'a str,
    pub(crate) activity: &'a str,
    pub(crate) sender: Option<&'a str>,
    pub(crate) payload: Option<&'a RawValue>,
    pub(crate) auth: Option<&'a RawValue>,
    pub(crate) is_security: bool,
}

impl<'a> View<'a> {
    /// A view of an owned message (`id` and `activityId` set by the caller).
    pub(crate) fn of(msg: &'a Message) -> View<'a> {
        View {
            name: &msg.name,
            id: msg.id.as_deref().unwrap_or(""),
            activity: msg.activity(),
            sender: msg.sender.as_deref().filter(|s| !s.is_empty()),
            payload: msg.payload.as_deref(),
            auth: msg.auth.as_deref(),
            is_security: msg.is_security,
        }
    }

    /// The message as an owned [`Message`] (without bus stamps).
    pub(crate) fn to_message(self) -> Message {
        Message {
            name: self.name.to_owned(),
            id: Some(self.id.to_owned()).filter(|s| !s.is_empty()),
            activity_id: Some(self.activity.to_owned()).filter(|s| !s.is_empty()),
            sender: self.sender.map(str::to_owned),
            payload: self.payload.map(RawValue::to_owned),
            auth: self.auth.map(RawValue::to_owned),
            is_security: self.is_security,
            timestamp: None,
            response_time: None,
        }
    }
}

/// What the reader takes from a frame: the same fields, types and rules as
/// [`Message::parse`] (so the bus accepts and refuses exactly the same
/// frames; a test checks this against every vector of `frames.json`), but
/// borrowed from the frame instead of copied.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    activity_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sender: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    auth: Option<&'a RawValue>,
    #[serde(default)]
    is_security: Option<bool>,
    #[serde(borrow, default, rename = "timestamp")]
    _timestamp: Option<Cow<'a, str>>,
    #[serde(default, rename = "responseTime")]
    _response_time: Option<serde_json::Number>,
}

/// A message read from a frame by the bus, borrowing from the frame.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) activity_id: Option<Cow<'a, str>>,
    pub(crate) sender: Option<Cow<'a, str>>,
    pub(crate) payload: Option<&'a RawValue>,
    pub(crate) auth: Option<&'a RawValue>,
    pub(crate) is_security: bool,
}

fn protocol_error(reason: String) -> ProtocolError {
    ProtocolError { reason }
}

fn non_empty(s: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    s.filter(|s| !s.is_empty())
}

impl<'a> Incoming<'a> {
    /// Reads one frame (the text of a text frame, or the bytes of a binary
    /// frame checked as UTF-8 first).
    pub(crate) fn parse(frame: &'a str) -> Result<Incoming<'a>, ProtocolError> {
        if !frame.trim_start().starts_with('{') {
            return Err(protocol_error(
                match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
                    Ok(_) => "the frame is JSON but not an object".to_owned(),
                    Err(e) => format!("the frame is not JSON: {e}"),
                },
            ));
        }
        let wire: WireIn<'a> = serde_json::from_str(frame).map_err(|e| {
            protocol_error(if e.is_syntax() || e.is_eof() {
                format!("the frame is not JSON: {e}")
            } else {
                format!("a field has the wrong type: {e}")
            })
        })?;
        let name = match wire.name {
            Some(n) if !n.is_empty() => n,
            Some(_) => return Err(protocol_error("the message name is empty".into())),
            None => return Err(protocol_error("the message has no name".into())),
        };
        let is_null = |r: &&RawValue| r.get() == "null";
        Ok(Incoming {
            name,
            id: non_empty(wire.id),
            activity_id: non_empty(wire.activity_id),
            sender: non_empty(wire.sender),
            payload: wire.payload.filter(|r| !is_null(r)),
            auth: wire.auth.filter(|r| !is_null(r)),
            is_security: wire.is_security.unwrap_or(false),
        })
    }

    /// Reads the bytes of a binary frame.
    pub(crate) fn parse_bytes(frame: &'a [u8]) -> Result<Incoming<'a>, ProtocolError> {
        match std::str::from_utf8(frame) {
            Ok(text) => Incoming::parse(text),
            Err(_) => Err(protocol_error(
                "the frame is not JSON: it is not UTF-8 text".into(),
            )),
        }
    }

    /// The routed view; `id` and `activityId` must be filled in first.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            name: &self.name,
            id: self.id.as_deref().unwrap_or(""),
            activity: self.activity_id.as_deref().unwrap_or(""),
            sender: self.sender.as_deref(),
            payload: self.payload,
            auth: self.auth,
            is_security: self.is_security,
        }
    }
}

/// Writes the copy of `msg` that a receiver gets under `name`. `msg` has
/// its `id` and `activityId` set (the bus fills them in when they come in).
/// Written by hand, exactly as `serde_json` would write it: strings escaped
/// the same way, payload and auth copied as the raw JSON they arrived as.
pub(crate) fn encode(
    msg: &View<'_>,
    name: &str,
    timestamp: &str,
    response_time: Option<u64>,
) -> Utf8Bytes {
    let sender = msg.sender.filter(|s| !s.is_empty());
    let payload = msg.payload.map(RawValue::get);
    let auth = msg.auth.map(RawValue::get);
    let response_time = response_time.filter(|n| *n > 0);
    // The exact length when no string needs escaping (the usual case), so
    // the buffer becomes the frame without another allocation.
    let quoted = |s: &str| (!needs_escape(s)).then_some(s.len() + 2);
    let strings = [
        quoted(name),
        quoted(msg.id),
        quoted(msg.activity),
        sender.map_or(Some(0), |s| quoted(s).map(|n| n + 10)),
        quoted(timestamp),
    ];
    let exact = strings.iter().try_fold(0usize, |sum, n| n.map(|n| sum + n));
    let len = exact.unwrap_or(
        64 + name.len()
            + msg.id.len()
            + msg.activity.len()
            + timestamp.len()
            + sender.map_or(0, str::len),
    ) + 8
        + 6
        + 14
        + 13
        + 1
        + payload.map_or(0, |p| p.len() + 11)
        + auth.map_or(0, |a| a.len() + 8)
        + if msg.is_security { 18 } else { 0 }
        + response_time.map_or(0, |n| 16 + n.checked_ilog10().unwrap_or(0) as usize + 1);
    let mut out = String::with_capacity(len);
    out.push_str("{\"name\":");
    push_json_str(&mut out, name);
    out.push_str(",\"id\":");
    push_json_str(&mut out, msg.id);
    out.push_str(",\"activityId\":");
    push_json_str(&mut out, msg.activity);
    if let Some(sender) = sender {
        out.push_str(",\"sender\":");
        push_json_str(&mut out, sender);
    }
    if let Some(payload) = payload {
        out.push_str(",\"payload\":");
        out.push_str(payload);
    }
    if let Some(auth) = auth {
        out.push_str(",\"auth\":");
        out.push_str(auth);
    }
    if msg.is_security {
        out.push_str(",\"isSecurity\":true");
    }
    out.push_str(",\"timestamp\":");
    push_json_str(&mut out, timestamp);
    if let Some(rt) = response_time {
        let _ = write!(out, ",\"responseTime\":{rt}");
    }
    out.push('}');
    debug_assert!(exact.is_none() || out.len() == len, "{out}: {len}");
    if out.len() != out.capacity() {
        out.shrink_to_fit();
    }
    Utf8Bytes::from(out)
}

/// Whether a string has a byte that JSON escapes (`"`, `\\`, controls);
/// eight bytes at a time.
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        if below_space
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes are escaped, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

thread_local! {
    /// The formatted date and time of the last second seen on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// A time as Go's `time.RFC3339Nano` writes it in UTC:
/// `2026-11-25T01:00:09.187013322Z` (trailing zeros of the fraction left out).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix(since.as_secs(), since.subsec_nanos())
}

/// [`rfc3339_nanos`] of a time given in nanoseconds since 1970.
pub(crate) fn rfc3339_unix_nanos(nanos: u64) -> String {
    format_unix(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
}

fn format_unix(secs: u64, nanos: u32) -> String {
    let mut out = String::with_capacity(32);
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            cache.1.clear();
            write_date_time(&mut cache.1, secs);
            cache.0 = secs;
        }
        out.push_str(&cache.1);
    });
    if nanos > 0 {
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = 9 - digits.iter().rev().take_while(|d| **d == b'0').count();
        out.push('.');
        out.push_str(std::str::from_utf8(&digits[..len]).unwrap_or("0"));
    }
    out.push('Z');
    out
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn write_date_time(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// The proleptic Gregorian date of a day number since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> String {
        rfc3339_nanos(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            at(1_795_568_409, 187_013_322),
            "2026-11-25T01:00:09.187013322Z"
        );
        assert_eq!(at(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(at(1_709_210_096, 1_000), "2024-02-29T12:34:56.000001Z");
        assert_eq!(at(4_102_444_799, 10), "2099-12-31T23:59:59.00000001Z");
    }

    #[test]
    fn encodes_a_copy() {
        let msg = Message::parse(
            br#"{"name":"users create","id":"1","activityId":"a","sender":"web","payload":{"z":1,"big":12345678901234567890},"auth":"t","isSecurity":true}"#,
        )
        .unwrap();
        let frame = encode(&View::of(&msg), "mongo create", "T", Some(5));
        assert_eq!(
            frame.as_str(),
            r#"{"name":"mongo create","id":"1","activityId":"a","sender":"web","payload":{"z":1,"big":12345678901234567890},"auth":"t","isSecurity":true,"timestamp":"T","responseTime":5}"#
        );
        let plain = Message::parse(br#"{"name":"n","id":"1","activityId":"a"}"#).unwrap();
        assert_eq!(
            encode(&View::of(&plain), "n", "T", None).as_str(),
            r#"{"name":"n","id":"1","activityId":"a","timestamp":"T"}"#
        );
    }

    /// The bus's reader accepts and refuses exactly what `Message::parse`
    /// does, and reads the same fields.
    #[test]
    fn reads_frames_like_message_parse() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/conformance/frames.json"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut frames: Vec<String> = doc["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["frame"].as_str().unwrap().to_owned())
            .collect();
        frames.extend(
            [
                r#"{"name":"n","id":5}"#,
                r#"{"name":"n","timestamp":5}"#,
                r#"{"name":"n","responseTime":"x"}"#,
                r#"{"name":"n","isSecurity":null,"auth":null,"payload":null}"#,
                r#"{"name":"n","name":"m"}"#,
                r#"{"name":"a\"b","sender":"w\u00e9b","payload":"x\ny"}"#,
                r#"  {"name":"n"}  "#,
                r#"{"name":"n"} x"#,
                r#"{"name":"n""#,
                "",
                "null",
                "42",
            ]
            .map(str::to_owned),
        );
        for frame in &frames {
            let ours = Incoming::parse(frame);
            let theirs = Message::parse(frame.as_bytes());
            match (ours, theirs) {
                (Ok(a), Ok(b)) => {
                    let mut a = a.view().to_message();
                    a.id = a.id.filter(|_| b.id.is_some());
                    a.activity_id = a.activity_id.filter(|_| b.activity_id.is_some());
                    let b = Message {
                        timestamp: None,
                        response_time: None,
                        ..b
                    };
                    assert_eq!(a, b, "{frame}");
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{frame}: bus reader {a:?}, Message::parse {b:?}"),
            }
        }
    }

    #[test]
    fn frames_need_no_second_allocation() {
        for frame in [
            r#"{"name":"n","id":"1","activityId":"a"}"#,
            r#"{"name":"users create","id":"1","activityId":"a","sender":"web","payload":[1,{"a":"b"}],"auth":{"t":1},"isSecurity":true}"#,
        ] {
            let msg = Message::parse(frame.as_bytes()).unwrap();
            for rt in [None, Some(7), Some(1_000_000_000)] {
                let mut text = encode(
                    &View::of(&msg),
                    "mongo create",
                    "2026-01-01T00:00:00.5Z",
                    rt,
                )
                .as_str()
                .to_owned();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["responseTime"].as_u64(), rt);
                text.shrink_to_fit();
            }
        }
        // With escapes too.
        let msg = Message::parse(br#"{"name":"a\"b","id":"\n","activityId":"x"}"#).unwrap();
        let text = encode(&View::of(&msg), "a\"b", "T", None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "\n");
    }

    #[test]
    fn finds_bytes_to_escape() {
        for (s, want) in [
            ("", false),
            ("abcdefgh", false),
            ("abcdefghijklmnopq", false),
            ("abcdefgh\"", true),
            ("abc\\defgh", true),
            ("abcdefg\u{1f}", true),
            ("\u{7f}grüße ☃ 😀 ~", false),
            ("0123456789abcdef\u{0}", true),
        ] {
            assert_eq!(needs_escape(s), want, "{s:?}");
        }
    }

    #[test]
    fn escapes_strings_as_serde_json_does() {
        for s in [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "ctl \u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f}",
            "grüße ☃ 😀 <x&y>",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}

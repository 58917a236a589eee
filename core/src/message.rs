//! The ExoCom message envelope: a tolerant reader and a strict writer.
//!
//! Reading follows PROTOCOL.md: unknown fields are ignored, every optional
//! field may be absent, `null` or a zero value, and `""` reads as absent. A
//! frame that is not a JSON object, or has no non-empty string `name`, is a
//! [`ProtocolError`]. Payload and auth stay as raw JSON text
//! ([`RawValue`]), so a message passes through a bus or a binding without
//! being re-encoded (big integers and key order survive).
//!
//! Writing omits what is not set and always sets `id` and `activityId`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The name of the frame a service sends right after connecting.
pub const REGISTER: &str = "exocom.register-service";
/// The name of the liveness probe the bus may send to a service.
pub const STATUS: &str = "__status";
/// The name of a service's answer to [`STATUS`].
pub const STATUS_OK: &str = "__status-ok";

/// A frame that does not hold a readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {reason}")]
pub struct ProtocolError {
    /// What is wrong with the frame.
    pub reason: String,
}

impl ProtocolError {
    fn new(reason: impl Into<String>) -> Self {
        ProtocolError {
            reason: reason.into(),
        }
    }
}

/// One ExoCom message.
#[derive(Clone, Default)]
pub struct Message {
    /// The message name; never empty in a message that was read.
    pub name: String,
    /// Unique id of this message.
    pub id: Option<String>,
    /// Groups a request with its replies.
    pub activity_id: Option<String>,
    /// Role of the sending service.
    pub sender: Option<String>,
    /// The payload as raw JSON; `None` when absent or `null`.
    pub payload: Option<Box<RawValue>>,
    /// Opaque credentials as raw JSON; `None` when absent or `null`.
    pub auth: Option<Box<RawValue>>,
    /// Set on messages of the security exchange.
    pub is_security: bool,
    /// When the bus routed it (RFC 3339), as the bus wrote it.
    pub timestamp: Option<String>,
    /// Nanoseconds since the previous message of the same activity passed the bus.
    pub response_time: Option<u64>,
}

impl PartialEq for Message {
    fn eq(&self, o: &Self) -> bool {
        let raw = |r: &Option<Box<RawValue>>| r.as_deref().map(RawValue::get).map(str::to_owned);
        self.name == o.name
            && self.id == o.id
            && self.activity_id == o.activity_id
            && self.sender == o.sender
            && raw(&self.payload) == raw(&o.payload)
            && raw(&self.auth) == raw(&o.auth)
            && self.is_security == o.is_security
            && self.timestamp == o.timestamp
            && self.response_time == o.response_time
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// A fresh random id (UUID v4, hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The JSON text `null`.
fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

fn non_empty(s: Option<Cow<'_, str>>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(Cow::into_owned)
}

/// What a reader takes from a frame, borrowing from it where it can.
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
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    response_time: Option<serde_json::Number>,
}

/// What a writer puts into a frame.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    name: &'a str,
    id: &'a str,
    activity_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_security: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_time: Option<u64>,
}

impl Message {
    /// A new message with a fresh `id` and `activityId` and no payload.
    pub fn new(name: impl Into<String>) -> Self {
        Message {
            name: name.into(),
            id: Some(new_id()),
            activity_id: Some(new_id()),
            ..Message::default()
        }
    }

    /// Reads one frame (text, or the bytes of a binary frame; bytes that
    /// are not UTF-8 are not JSON, even where a reader would skip them).
    pub fn parse(frame: &[u8]) -> Result<Message, ProtocolError> {
        let Ok(frame) = std::str::from_utf8(frame) else {
            return Err(ProtocolError::new(
                "the frame is not JSON: it is not UTF-8 text",
            ));
        };
        let first = frame.bytes().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
                Ok(_) => ProtocolError::new("the frame is JSON but not an object"),
                Err(e) => ProtocolError::new(format!("the frame is not JSON: {e}")),
            });
        }
        let wire: WireIn<'_> = serde_json::from_str(frame).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ProtocolError::new(format!("the frame is not JSON: {e}"))
            } else {
                ProtocolError::new(format!("a field has the wrong type: {e}"))
            }
        })?;
        let name = match wire.name {
            Some(n) if !n.is_empty() => n.into_owned(),
            Some(_) => return Err(ProtocolError::new("the message name is empty")),
            None => return Err(ProtocolError::new("the message has no name")),
        };
        Ok(Message {
            name,
            id: non_empty(wire.id),
            activity_id: non_empty(wire.activity_id),
            sender: non_empty(wire.sender),
            payload: wire.payload.filter(|r| !is_null(r)).map(RawValue::to_owned),
            auth: wire.auth.filter(|r| !is_null(r)).map(RawValue::to_owned),
            is_security: wire.is_security.unwrap_or(false),
            timestamp: non_empty(wire.timestamp),
            response_time: wire
                .response_time
                .and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)))
                .filter(|n| *n > 0),
        })
    }

    /// Writes the message as one JSON object. A missing `id` or
    /// `activityId` is filled with a fresh UUID in the output.
    pub fn to_json(&self) -> String {
        let fresh_id;
        let id = match self.id.as_deref() {
            Some(id) if !id.is_empty() => id,
            _ => {
                fresh_id = new_id();
                &fresh_id
            }
        };
        let fresh_activity;
        let activity_id = match self.activity_id.as_deref() {
            Some(a) if !a.is_empty() => a,
            _ => {
                fresh_activity = new_id();
                &fresh_activity
            }
        };
        let wire = WireOut {
            name: &self.name,
            id,
            activity_id,
            sender: self.sender.as_deref().filter(|s| !s.is_empty()),
            payload: self.payload.as_deref(),
            auth: self.auth.as_deref(),
            is_security: self.is_security,
            timestamp: self.timestamp.as_deref(),
            response_time: self.response_time.filter(|n| *n > 0),
        };
        // Serializing borrowed strings and already-valid raw JSON cannot fail.
        serde_json::to_string(&wire).unwrap_or_else(|e| unreachable!("message serialization: {e}"))
    }

    /// The activity id, or `""` when the message has none.
    pub fn activity(&self) -> &str {
        self.activity_id.as_deref().unwrap_or("")
    }

    /// The payload as raw JSON text (`null` when there is none).
    pub fn payload_json(&self) -> &str {
        self.payload.as_deref().map_or("null", RawValue::get)
    }

    /// The payload as a JSON value (`Value::Null` when there is none).
    pub fn payload_value(&self) -> serde_json::Value {
        self.payload_as().unwrap_or(serde_json::Value::Null)
    }

    /// The payload read as `T`; a missing payload reads as JSON `null`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload_json())
    }

    /// Sets the payload from any serializable value (`null` clears it).
    pub fn with_payload<T: Serialize + ?Sized>(
        mut self,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        self.payload = to_raw(payload)?;
        Ok(self)
    }
}

/// Serializes a value into raw JSON; `null` becomes `None`.
pub fn to_raw<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Option<Box<RawValue>>, serde_json::Error> {
    let raw = serde_json::value::to_raw_value(value)?;
    Ok(if is_null(&raw) { None } else { Some(raw) })
}

/// Checks JSON text and turns it into a raw value; `null` becomes `None`.
/// This is how payloads that arrive as text (from C, say) are validated.
pub fn raw_from_text(text: &str) -> Result<Option<Box<RawValue>>, serde_json::Error> {
    let raw = RawValue::from_string(text.trim().to_owned())?;
    Ok(if is_null(&raw) { None } else { Some(raw) })
}

/// [`raw_from_text`] for a part (`what`: "payload", "auth") of message
/// `name` that arrived as text from a host language; invalid JSON is
/// [`crate::ExoError::Payload`], naming the part.
pub fn raw_part(
    name: &str,
    what: &str,
    text: &str,
) -> Result<Option<Box<RawValue>>, crate::ExoError> {
    raw_from_text(text).map_err(|e| crate::ExoError::Payload {
        name: name.to_owned(),
        reason: format!("the {what} is not valid JSON: {e}"),
    })
}

/// Appends `s` to `out` as a JSON string literal (quotes included),
/// escaped exactly as `serde_json` escapes it.
pub fn push_json_string(out: &mut String, s: &str) {
    crate::bus::wire::push_json_str(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_omits_unset_fields_and_sets_ids() {
        let m = Message {
            name: "ping".into(),
            ..Message::default()
        };
        let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{v}");
        assert_eq!(o["name"], "ping");
        assert_eq!(o["id"].as_str().unwrap().len(), 36);
        assert_eq!(o["activityId"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn writer_keeps_raw_payload_exact() {
        let frame = br#"{"name":"n","id":"1","activityId":"2","payload":{"z":1,"big":12345678901234567890123}}"#;
        let m = Message::parse(frame).unwrap();
        assert!(
            m.to_json()
                .contains(r#""payload":{"z":1,"big":12345678901234567890123}"#)
        );
    }

    #[test]
    fn round_trip_all_fields() {
        let m = Message {
            name: "users create".into(),
            id: Some("i".into()),
            activity_id: Some("a".into()),
            sender: Some("web".into()),
            payload: raw_from_text(r#"{"a":[1,2]}"#).unwrap(),
            auth: raw_from_text(r#""tok""#).unwrap(),
            is_security: true,
            timestamp: Some("2026-11-25T01:00:09.187013322Z".into()),
            response_time: Some(42),
        };
        assert_eq!(Message::parse(m.to_json().as_bytes()).unwrap(), m);
    }

    /// Found by fuzzing: bytes that are not UTF-8 inside a field that is
    /// skipped were accepted here but refused by the bus's reader.
    #[test]
    fn frames_that_are_not_utf8_are_refused_everywhere() {
        let frame = b"{\"name\":\"n\",\"extra\":[{\"\xff\xfe\":1}]}";
        let err = Message::parse(frame).unwrap_err();
        assert!(err.reason.contains("not UTF-8"), "{err}");
        assert!(Message::parse(b"{\"name\":\"n\",\"extra\":\"\xc3\"}").is_err());
        assert!(Message::parse("{\"name\":\"grüße\"}".as_bytes()).is_ok());
    }

    #[test]
    fn bad_payload_text_is_refused() {
        assert!(raw_from_text("{").is_err());
        match raw_part("users.create", "auth", "{") {
            Err(crate::ExoError::Payload { name, reason }) => {
                assert_eq!(name, "users.create");
                assert!(reason.starts_with("the auth is not valid JSON"), "{reason}");
            }
            other => panic!("expected a payload error, got {other:?}"),
        }
        assert!(raw_part("x", "payload", " null ").unwrap().is_none());
        assert!(raw_from_text("null").unwrap().is_none());
    }
}

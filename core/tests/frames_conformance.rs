//! Every vector of `tests/conformance/frames.json` through the message reader,
//! and a check that the repository's copy of the conformance files still
//! equals `../shared/conformance/` when that folder exists.

use std::path::{Path, PathBuf};

use exoservice::message::Message;
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

/// The value a reader produced for one field, as JSON (`null` = absent).
fn field(m: &Message, key: &str) -> Option<Value> {
    let raw = |r: &Option<Box<serde_json::value::RawValue>>| {
        r.as_deref()
            .map(|r| serde_json::from_str::<Value>(r.get()).expect("raw JSON is valid"))
    };
    let s = |o: &Option<String>| o.clone().map(Value::String);
    Some(match key {
        "name" => Value::String(m.name.clone()),
        "id" => s(&m.id).unwrap_or(Value::Null),
        "activityId" => s(&m.activity_id).unwrap_or(Value::Null),
        "sender" => s(&m.sender).unwrap_or(Value::Null),
        "payload" => raw(&m.payload).unwrap_or(Value::Null),
        "auth" => raw(&m.auth).unwrap_or(Value::Null),
        "isSecurity" => Value::Bool(m.is_security),
        "timestamp" => s(&m.timestamp).unwrap_or(Value::Null),
        "responseTime" => Value::from(m.response_time.unwrap_or(0)),
        _ => return None,
    })
}

/// What an expectation means: `null` is absent; a zero value of an
/// optional field reads the same as absent.
fn normalize(key: &str, v: &Value) -> Value {
    match (key, v) {
        ("isSecurity", Value::Null) => Value::Bool(false),
        ("responseTime", Value::Null) => Value::from(0),
        (_, v) => v.clone(),
    }
}

#[test]
fn every_frame_vector() {
    let text = std::fs::read_to_string(conformance_dir().join("frames.json")).expect("frames.json");
    let doc: Value = serde_json::from_str(&text).expect("frames.json is JSON");
    let frames = doc["frames"].as_array().expect("frames is a list");
    assert!(
        frames.len() >= 20,
        "frames.json holds {} vectors",
        frames.len()
    );
    let mut failures = Vec::new();
    for (i, case) in frames.iter().enumerate() {
        let why = case["why"].as_str().unwrap_or("?");
        let frame = case["frame"].as_str().expect("frame is a string");
        let ok = case["ok"].as_bool().expect("ok is a bool");
        // Text and binary frames are read alike: both reach the reader as bytes.
        let result = Message::parse(frame.as_bytes());
        match (ok, result) {
            (true, Err(e)) => failures.push(format!("#{i} {why}: refused: {e}")),
            (false, Ok(m)) => failures.push(format!("#{i} {why}: accepted {m:?}")),
            (false, Err(e)) => assert!(!e.reason.is_empty()),
            (true, Ok(m)) => {
                for (key, want) in case["expect"].as_object().into_iter().flatten() {
                    match field(&m, key) {
                        None => failures.push(format!("#{i} {why}: unknown expect key {key}")),
                        Some(got) if got != normalize(key, want) => {
                            failures.push(format!("#{i} {why}: {key} = {got}, want {want}"))
                        }
                        Some(_) => {}
                    }
                }
                // Whatever was read writes out as a frame that reads back the same.
                let again =
                    Message::parse(m.to_json().as_bytes()).expect("written frame reads back");
                assert_eq!(again.name, m.name, "#{i} {why}");
                assert_eq!(again.payload_json(), m.payload_json(), "#{i} {why}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "frame vectors failing:\n{}",
        failures.join("\n")
    );
}

#[test]
fn conformance_copy_matches_shared() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if !shared.is_dir() {
        eprintln!("{} not present; nothing to compare", shared.display());
        return;
    }
    let mut names: Vec<_> = std::fs::read_dir(&shared)
        .expect("read shared/conformance")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    let mut ours: Vec<_> = std::fs::read_dir(conformance_dir())
        .expect("read tests/conformance")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    ours.sort();
    assert_eq!(
        ours, names,
        "tests/conformance must hold exactly the files of ../shared/conformance"
    );
    for name in names {
        let a = std::fs::read(shared.join(&name)).expect("shared file");
        let b = std::fs::read(conformance_dir().join(&name)).expect("copied file");
        assert!(
            a == b,
            "tests/conformance/{} differs from ../shared/conformance: copy it again",
            name.to_string_lossy()
        );
    }
}

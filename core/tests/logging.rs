//! Log formats and filtering, seen from outside: the `exocom` program (the
//! bus's lines on standard output) and the `rust-ping` example service
//! (`tracing` lines on standard error), run with `EXO_LOG_FORMAT` and
//! `RUST_LOG` set in different ways.
//!
//! Uses the programs of the same build (`target/debug/exocom`,
//! `target/debug/rust-ping`, built by `cargo build --workspace` or
//! `cargo test --workspace`). Every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(10);

/// A program of the workspace, beside this test's build.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the profile directory")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// A child process whose output is collected line by line; killed when
/// dropped.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd`, collecting standard output (`stdout: true`) or
    /// standard error.
    fn spawn(cmd: &mut Command, stdout: bool) -> Proc {
        let (out, err) = if stdout {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the program");
        let reader: Box<dyn Read + Send> = if stdout {
            Box::new(child.stdout.take().expect("stdout"))
        } else {
            Box::new(child.stderr.take().expect("stderr"))
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line contains `text`; returns that line.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(
                start.elapsed() < WAIT,
                "no line with {text:?} within {WAIT:?}; got:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to end, then for
    /// its output to be read.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                start.elapsed() < WAIT,
                "the program did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const ROUTES: &str = r#"{"web":{"sends":["ping"]},"ping":{"receives":["ping"]}}"#;

/// Runs `exocom` with these variables; a client registers as `web`, sends
/// a message it may not send (a warning) and leaves. Returns the lines of
/// standard output once `'web' disconnected` or (filtered) the warning
/// came, after a pause for stragglers.
fn exocom_lines(vars: &[(&str, &str)], last: &str) -> Vec<String> {
    let mut cmd = Command::new(bin("exocom"));
    cmd.env("PORT", "0")
        .env("EXOCOM_BIND", "127.0.0.1")
        .env("SERVICE_DATA", ROUTES)
        .env("EXOCOM_STARTUP_GRACE_MS", "0")
        .env_remove("RUST_LOG")
        .env_remove("EXO_LOG_FORMAT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut bus = Proc::spawn(&mut cmd, true);
    let online = bus.wait_for("ExoCom online at port ");
    let port: u16 = online
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the online line");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/services");
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        for frame in [
            json!({"name": "exocom.register-service", "sender": "web", "id": "1", "activityId": "1"}),
            json!({"name": "users list", "sender": "web", "id": "2", "activityId": "2"}),
        ] {
            ws.send(WsMessage::text(frame.to_string())).await.unwrap();
        }
        // Leave by dropping the TCP connection.
        drop(ws);
    });
    bus.wait_for(last);
    std::thread::sleep(Duration::from_millis(200));
    bus.terminate();
    bus.lines()
}

const ONLINE: &str = "ExoCom online at port ";
const REFUSED: &str = "Warning: Service 'web' is not allowed to broadcast the message 'users list'";

#[test]
fn bus_lines_stay_plain_text_by_default() {
    let lines = exocom_lines(&[], "'web' disconnected");
    let pos = |text: &str| {
        lines
            .iter()
            .position(|l| l == text)
            .unwrap_or_else(|| panic!("no line {text:?} in:\n{}", lines.join("\n")))
    };
    let order = [
        pos("'web' registered"),
        pos(REFUSED),
        pos("'web' disconnected"),
    ];
    assert!(order.is_sorted(), "{lines:?}");
    assert!(lines.iter().all(|l| !l.starts_with('{')), "{lines:?}");
}

#[test]
fn bus_lines_become_json_objects() {
    let lines = exocom_lines(&[("EXO_LOG_FORMAT", "json")], "'web' disconnected");
    let mut messages = Vec::new();
    for line in &lines {
        // The readiness line stays as it is: tools wait for that text.
        if line.starts_with(ONLINE) {
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("not a JSON line ({e}): {line}\nall:\n{}", lines.join("\n"))
        });
        assert_eq!(v["target"], "exocom", "{line}");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        let message = v["message"].as_str().expect("a message").to_owned();
        let level = v["level"].as_str().expect("a level").to_owned();
        messages.push((level, message));
    }
    let has = |level: &str, text: &str| messages.iter().any(|(l, m)| l == level && m == text);
    assert!(has("INFO", "'web' registered"), "{messages:?}");
    assert!(has("WARN", REFUSED), "{messages:?}");
    assert!(has("INFO", "'web' disconnected"), "{messages:?}");
}

#[test]
fn rust_log_filters_bus_lines() {
    let lines = exocom_lines(&[("RUST_LOG", "warn")], REFUSED);
    assert!(lines.iter().any(|l| l == REFUSED), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with(ONLINE)), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("registered") || l.contains("disconnected")),
        "info lines were not filtered: {lines:?}"
    );
    // A directive for the bus's target wins over the default level.
    let lines = exocom_lines(&[("RUST_LOG", "error,exocom=info")], "'web' disconnected");
    assert!(lines.iter().any(|l| l == "'web' registered"), "{lines:?}");
}

fn ping_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust-ping")
}

/// Runs `rust-ping` against a port where no bus listens (it warns that it
/// cannot reach ExoCom), then stops it with SIGTERM (an info line). Returns
/// its standard error.
fn ping_lines(vars: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new(bin("rust-ping"));
    cmd.current_dir(ping_dir())
        .env("EXOCOM_HOST", "127.0.0.1")
        .env("EXOCOM_PORT", closed_port().to_string())
        .env_remove("ROLE")
        .env_remove("RUST_LOG")
        .env_remove("EXO_LOG_FORMAT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut ping = Proc::spawn(&mut cmd, false);
    ping.wait_for("cannot reach ExoCom");
    ping.terminate();
    ping.lines()
}

#[test]
fn service_logs_human_lines_by_default() {
    let lines = ping_lines(&[]);
    let warn = lines
        .iter()
        .find(|l| l.contains("cannot reach ExoCom"))
        .expect("the warning");
    assert!(warn.contains(" WARN "), "{warn}");
    assert!(!warn.starts_with('{'), "{warn}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("stopping")),
        "{lines:?}"
    );
}

#[test]
fn service_logs_json_lines() {
    let lines = ping_lines(&[("EXO_LOG_FORMAT", "json")]);
    assert!(!lines.is_empty());
    let mut seen = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("not a JSON line ({e}): {line}\nall:\n{}", lines.join("\n"))
        });
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("exoservice")),
            "{line}"
        );
        seen.push((
            v["level"].as_str().unwrap_or_default().to_owned(),
            v["message"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert!(
        seen.iter()
            .any(|(l, m)| l == "WARN" && m.contains("cannot reach ExoCom")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(l, m)| l == "INFO" && m.contains("stopping")),
        "{seen:?}"
    );
}

#[test]
fn rust_log_filters_service_lines() {
    let lines = ping_lines(&[("RUST_LOG", "warn")]);
    assert!(
        lines.iter().any(|l| l.contains("cannot reach ExoCom")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "info lines were not filtered: {lines:?}"
    );
}

#[test]
fn a_wrong_format_is_named_and_text_is_used() {
    let lines = ping_lines(&[("EXO_LOG_FORMAT", "yaml")]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("EXO_LOG_FORMAT=\"yaml\" is not a log format")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.starts_with('{')), "{lines:?}");
}

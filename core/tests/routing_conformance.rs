//! Every scenario of `tests/conformance/routing.json` against a real bus
//! (a fresh one per scenario, on a free loopback port), over real
//! WebSockets. One generic runner interprets every step kind; an unknown
//! step kind, or an unknown key in a step, fails the scenario, so a new
//! vector is never skipped silently. All scenarios run, concurrently, and
//! every failure is reported with its scenario and step.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::bus::{Bus, BusConfig, BusHandle, LogSink};
use exoservice::routes::Routes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/conformance/routing.json"
);
/// How long any expected event may take.
const WAIT: Duration = Duration::from_secs(5);
/// "Nothing more within 200 ms."
const QUIET: Duration = Duration::from_millis(200);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Result<T = ()> = std::result::Result<T, String>;

/// One test connection to the bus.
struct Conn {
    role: Option<String>,
    sink: SplitSink<Ws, WsMessage>,
    reader: JoinHandle<()>,
    incoming: mpsc::UnboundedReceiver<Value>,
    /// Frames received and not matched by an expectation yet.
    buffer: VecDeque<Value>,
}

impl Conn {
    async fn open(port: u16, role: Option<String>) -> Result<Conn> {
        let url = format!("ws://127.0.0.1:{port}/services");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sink, stream) = ws.split();
        let (tx, incoming) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(stream, tx));
        if let Some(role) = &role {
            let register = serde_json::json!({
                "name": "exocom.register-service",
                "sender": role,
                "id": format!("register-{role}"),
                "activityId": format!("register-{role}"),
                "payload": {"clientName": role},
            });
            sink.send(WsMessage::text(register.to_string()))
                .await
                .map_err(|e| format!("cannot register: {e}"))?;
        }
        Ok(Conn {
            role,
            sink,
            reader,
            incoming,
            buffer: VecDeque::new(),
        })
    }

    /// Moves what arrived into the buffer.
    fn collect(&mut self) {
        while let Ok(frame) = self.incoming.try_recv() {
            self.buffer.push_back(frame);
        }
    }

    /// Removes and returns the first buffered frame that matches.
    fn take_match(&mut self, expected: &Value) -> Option<Value> {
        self.collect();
        let pos = self.buffer.iter().position(|f| matches(expected, f))?;
        self.buffer.remove(pos)
    }

    async fn send_text(&mut self, text: String) -> Result {
        self.sink
            .send(WsMessage::text(text))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }
}

async fn read_frames(mut stream: SplitStream<Ws>, tx: mpsc::UnboundedSender<Value>) {
    while let Some(Ok(frame)) = stream.next().await {
        let text = match frame {
            WsMessage::Text(t) => t.as_str().to_owned(),
            WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            WsMessage::Close(_) => break,
            _ => continue,
        };
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if tx.send(value).is_err() {
            break;
        }
    }
}

/// A zero value reads the same as an absent field (PROTOCOL.md).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Every listed field matches; an object matches when every key it lists
/// matches, recursively; an absent field matches a zero value.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, ev)| match a.get(k) {
            Some(av) => matches(ev, av),
            None => is_zero(ev),
        }),
        (e, a) => e == a || (is_zero(e) && a.is_null()),
    }
}

/// `GET /config.json` over plain HTTP.
async fn get_config(port: u16) -> Result<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect for /config.json: {e}"))?;
    stream
        .write_all(b"GET /config.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .map_err(|_| "no /config.json response".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("/config.json answered {head}"));
    }
    serde_json::from_str(body).map_err(|e| format!("/config.json is not JSON ({e}): {body}"))
}

/// `clients` as a set (sorted), the rest as is.
fn normalize_config(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(Value::Array(clients)) = config.get_mut("clients") {
        clients.sort_by_key(|c| c.to_string());
    }
    config
}

/// One scenario being run.
struct Run {
    bus: BusHandle,
    port: u16,
    conns: HashMap<String, Conn>,
    /// Connections a step disconnected: they receive nothing any more.
    gone: BTreeSet<String>,
    vars: HashMap<String, String>,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Replaces `$NAME` with the value of variable NAME in every string.
fn substitute(value: &Value, vars: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(substitute_str(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(s: &str, vars: &HashMap<String, String>) -> String {
    if let Some(name) = s.strip_prefix('$')
        && let Some(v) = vars.get(name)
    {
        return v.clone();
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = s.to_owned();
    for name in names {
        out = out.replace(&format!("${name}"), &vars[name]);
    }
    out
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("'{key}' must be a string"))
}

fn check_keys(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown key '{k}' in {what} (the runner knows {allowed:?}); teach the runner first"
        )),
        None => Ok(()),
    }
}

const STEP_KINDS: &[&str] = &[
    "send",
    "raw",
    "expect",
    "expectOne",
    "expectNothing",
    "expectCounts",
    "disconnect",
    "config",
    "log",
    "repeat",
    "sleepMs",
];

impl Run {
    fn resolve(&self, id: &str) -> String {
        substitute_str(id, &self.vars)
    }

    fn conn(&mut self, id: &str) -> Result<&mut Conn> {
        let id = self.resolve(id);
        self.conns
            .get_mut(&id)
            .ok_or_else(|| format!("no open connection '{id}'"))
    }

    /// Waits until the bus lists exactly the registered connections that
    /// are open here.
    async fn wait_clients_settled(&self) -> Result {
        let mut want: BTreeSet<(String, u64)> = BTreeSet::new();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for c in self.conns.values() {
            if let Some(role) = &c.role {
                *counts.entry(role).or_default() += 1;
            }
        }
        for (role, n) in counts {
            want.insert((role.to_owned(), n));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let config = get_config(self.port).await?;
            let have: BTreeSet<(String, u64)> = config["clients"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| {
                            Some((c["role"].as_str()?.to_owned(), c["instances"].as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if have == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("the bus lists clients {have:?}, expected {want:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn steps(&mut self, steps: &[Value], path: &str) -> Result {
        for (i, step) in steps.iter().enumerate() {
            let here = if path.is_empty() {
                format!("{}", i + 1)
            } else {
                format!("{path}.{}", i + 1)
            };
            Box::pin(self.step(step, &here))
                .await
                .map_err(|e| format!("step {here} {step}: {e}"))?;
        }
        Ok(())
    }

    async fn step(&mut self, step: &Value, path: &str) -> Result {
        let o = step.as_object().ok_or("a step must be an object")?;
        let kinds: Vec<&str> = STEP_KINDS
            .iter()
            .copied()
            .filter(|k| o.contains_key(*k))
            .collect();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            [] => {
                return Err(format!(
                    "unknown step kind (keys {:?}); teach the runner first",
                    o.keys().collect::<Vec<_>>()
                ));
            }
            _ => return Err(format!("a step with several kinds: {kinds:?}")),
        };
        match kind {
            "send" => {
                check_keys(o, &["send"], "a send step")?;
                let s = o["send"].as_object().ok_or("'send' must be an object")?;
                check_keys(s, &["from", "frame"], "send")?;
                let from = str_field(s, "from")?.to_owned();
                let mut frame = substitute(&s["frame"], &self.vars);
                let conn = self.conn(&from)?;
                if let (Some(f), Some(role)) = (frame.as_object_mut(), &conn.role)
                    && !f.contains_key("sender")
                {
                    f.insert("sender".into(), Value::String(role.clone()));
                }
                conn.send_text(frame.to_string()).await
            }
            "raw" => {
                check_keys(o, &["raw"], "a raw step")?;
                let r = o["raw"].as_object().ok_or("'raw' must be an object")?;
                check_keys(r, &["from", "text"], "raw")?;
                let from = str_field(r, "from")?.to_owned();
                let text = substitute_str(str_field(r, "text")?, &self.vars);
                self.conn(&from)?.send_text(text).await
            }
            "expect" => {
                check_keys(o, &["expect"], "an expect step")?;
                let e = o["expect"]
                    .as_object()
                    .ok_or("'expect' must be an object")?;
                check_keys(
                    e,
                    &["to", "frame", "has", "responseTimeAtLeastNs", "capture"],
                    "expect",
                )?;
                let to = str_field(e, "to")?.to_owned();
                let expected = substitute(&e["frame"], &self.vars);
                let deadline = Instant::now() + WAIT;
                let frame = loop {
                    if let Some(f) = self.conn(&to)?.take_match(&expected) {
                        break f;
                    }
                    if Instant::now() >= deadline {
                        let seen = self.conn(&to)?.buffer.clone();
                        return Err(format!(
                            "'{}' received no frame matching {expected} within {WAIT:?} (unmatched frames: {seen:?})",
                            self.resolve(&to)
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                };
                self.check_received(e, &frame)
            }
            "expectOne" => {
                check_keys(o, &["expectOne"], "an expectOne step")?;
                let e = o["expectOne"]
                    .as_object()
                    .ok_or("'expectOne' must be an object")?;
                check_keys(
                    e,
                    &[
                        "among",
                        "as",
                        "frame",
                        "has",
                        "responseTimeAtLeastNs",
                        "capture",
                    ],
                    "expectOne",
                )?;
                let among: Vec<String> = e
                    .get("among")
                    .and_then(Value::as_array)
                    .ok_or("'among' must be a list")?
                    .iter()
                    .map(|v| v.as_str().map(|s| self.resolve(s)))
                    .collect::<Option<_>>()
                    .ok_or("'among' must list connection ids")?;
                // A connection that left cannot receive it.
                let among: Vec<String> = among
                    .into_iter()
                    .filter(|id| !self.gone.contains(id))
                    .collect();
                let expected = substitute(&e["frame"], &self.vars);
                let deadline = Instant::now() + WAIT;
                let (winner, frame) = 'found: loop {
                    for id in &among {
                        if let Some(f) = self.conn(id)?.take_match(&expected) {
                            break 'found (id.clone(), f);
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "none of {among:?} received a frame matching {expected} within {WAIT:?}"
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                };
                tokio::time::sleep(QUIET).await;
                for id in among.iter().filter(|id| **id != winner) {
                    if let Some(f) = self.conn(id)?.take_match(&expected) {
                        return Err(format!(
                            "both '{winner}' and '{id}' received a matching frame: {frame} and {f}"
                        ));
                    }
                }
                if let Some(name) = e.get("as") {
                    let name = name.as_str().ok_or("'as' must be a string")?;
                    self.vars.insert(name.to_owned(), winner);
                }
                self.check_received(e, &frame)
            }
            "expectNothing" => {
                check_keys(o, &["expectNothing", "except"], "an expectNothing step")?;
                let except = match o.get("except") {
                    Some(v) => Some(self.resolve(v.as_str().ok_or("'except' must be a string")?)),
                    None => None,
                };
                let ids: Vec<String> = o["expectNothing"]
                    .as_array()
                    .ok_or("'expectNothing' must be a list")?
                    .iter()
                    .map(|v| v.as_str().map(|s| self.resolve(s)))
                    .collect::<Option<_>>()
                    .ok_or("'expectNothing' must list connection ids")?;
                tokio::time::sleep(QUIET).await;
                let listed = ids
                    .iter()
                    .filter(|id| Some(*id) != except.as_ref() && !self.gone.contains(*id));
                for id in listed.cloned().collect::<Vec<_>>() {
                    let id = &id;
                    let conn = self.conn(id)?;
                    conn.collect();
                    if !conn.buffer.is_empty() {
                        return Err(format!(
                            "'{id}' received {:?} but should have received nothing",
                            conn.buffer
                        ));
                    }
                }
                Ok(())
            }
            "expectCounts" => {
                check_keys(o, &["expectCounts"], "an expectCounts step")?;
                let counts = o["expectCounts"]
                    .as_object()
                    .ok_or("'expectCounts' must be an object")?;
                let total = counts
                    .get("total")
                    .map(|t| t.as_u64().ok_or("'total' must be a number"))
                    .transpose()?;
                let mut mins: Vec<(String, u64)> = Vec::new();
                for (id, spec) in counts.iter().filter(|(k, _)| *k != "total") {
                    let spec = spec
                        .as_object()
                        .ok_or("each count must be an object like {\"min\": N}")?;
                    check_keys(spec, &["min"], "a count")?;
                    let min = spec.get("min").and_then(Value::as_u64).unwrap_or(0);
                    mins.push((self.resolve(id), min));
                }
                let sum = |run: &mut Run| -> Result<u64> {
                    let mut n = 0;
                    for (id, _) in &mins {
                        let conn = run.conn(id)?;
                        conn.collect();
                        n += conn.buffer.len() as u64;
                    }
                    Ok(n)
                };
                if let Some(total) = total {
                    let deadline = Instant::now() + WAIT;
                    while sum(self)? < total && Instant::now() < deadline {
                        tokio::time::sleep(POLL).await;
                    }
                }
                tokio::time::sleep(QUIET).await;
                let got = sum(self)?;
                let mut report = Vec::new();
                for (id, min) in &mins {
                    let conn = self.conn(id)?;
                    let n = conn.buffer.len() as u64;
                    conn.buffer.clear();
                    report.push(format!("{id}: {n}"));
                    if n < *min {
                        return Err(format!("'{id}' received {n} frames, fewer than {min}"));
                    }
                }
                match total {
                    Some(total) if got != total => Err(format!(
                        "received {got} frames in all ({}), expected {total}",
                        report.join(", ")
                    )),
                    _ => Ok(()),
                }
            }
            "disconnect" => {
                check_keys(o, &["disconnect", "how"], "a disconnect step")?;
                let id = self.resolve(
                    o["disconnect"]
                        .as_str()
                        .ok_or("'disconnect' must be a connection id")?,
                );
                let how = o.get("how").and_then(Value::as_str).unwrap_or("tcp");
                let mut conn = self
                    .conns
                    .remove(&id)
                    .ok_or_else(|| format!("no open connection '{id}'"))?;
                self.gone.insert(id.clone());
                match how {
                    "tcp" => {
                        // Drop the socket without a close frame.
                        conn.reader.abort();
                        let _ = (&mut conn.reader).await;
                        drop(conn);
                    }
                    "close-frame" => {
                        let close = WsMessage::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "bye".into(),
                        }));
                        conn.sink
                            .send(close)
                            .await
                            .map_err(|e| format!("cannot send a close frame: {e}"))?;
                        let _ = tokio::time::timeout(WAIT, &mut conn.reader).await;
                        drop(conn);
                    }
                    other => return Err(format!("unknown disconnect 'how': {other}")),
                }
                // The instance has left once the bus no longer lists it.
                self.wait_clients_settled().await
            }
            "config" => {
                check_keys(o, &["config"], "a config step")?;
                let expected = normalize_config(&substitute(&o["config"], &self.vars));
                let deadline = Instant::now() + WAIT;
                loop {
                    let have = normalize_config(&get_config(self.port).await?);
                    if have == expected {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("/config.json is {have}, expected {expected}"));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            "log" => {
                check_keys(o, &["log"], "a log step")?;
                let line = substitute_str(
                    o["log"].as_str().ok_or("'log' must be a string")?,
                    &self.vars,
                );
                let deadline = Instant::now() + WAIT;
                loop {
                    if self.logs.lock().map(|l| l.contains(&line)).unwrap_or(false) {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
                        return Err(format!("the bus did not log {line:?}; it logged {logs:#?}"));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            "repeat" => {
                check_keys(o, &["repeat", "steps"], "a repeat step")?;
                let n = o["repeat"].as_u64().ok_or("'repeat' must be a number")?;
                let steps = o
                    .get("steps")
                    .and_then(Value::as_array)
                    .ok_or("'steps' must be a list")?;
                let outer = self.vars.get("n").cloned();
                for i in 1..=n {
                    self.vars.insert("n".into(), i.to_string());
                    self.steps(steps, &format!("{path}[n={i}]")).await?;
                }
                match outer {
                    Some(v) => self.vars.insert("n".into(), v),
                    None => self.vars.remove("n"),
                };
                Ok(())
            }
            "sleepMs" => {
                check_keys(o, &["sleepMs"], "a sleepMs step")?;
                let ms = o["sleepMs"].as_u64().ok_or("'sleepMs' must be a number")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            other => Err(format!("step kind '{other}' is listed but not run")),
        }
    }

    /// The extra checks of expect/expectOne on the received frame.
    fn check_received(&mut self, e: &Map<String, Value>, frame: &Value) -> Result {
        if let Some(has) = e.get("has") {
            for field in has.as_array().ok_or("'has' must be a list")? {
                let field = field.as_str().ok_or("'has' must list field names")?;
                if frame.get(field).is_none_or(Value::is_null) {
                    return Err(format!("the frame {frame} has no '{field}'"));
                }
            }
        }
        if let Some(min) = e.get("responseTimeAtLeastNs") {
            let min = min
                .as_u64()
                .ok_or("'responseTimeAtLeastNs' must be a number")?;
            let got = frame
                .get("responseTime")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if got < min {
                return Err(format!(
                    "responseTime {got} ns is less than {min} ns in {frame}"
                ));
            }
        }
        if let Some(capture) = e.get("capture") {
            let capture = capture.as_object().ok_or("'capture' must be an object")?;
            for (field, name) in capture {
                let name = name.as_str().ok_or("'capture' maps a field to a name")?;
                let value = match frame.get(field) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => return Err(format!("cannot capture '{field}' of {frame}")),
                };
                self.vars.insert(name.to_owned(), value);
            }
        }
        Ok(())
    }
}

/// Every connection id a step list mentions (not variables).
fn mentioned_ids(steps: &[Value], out: &mut BTreeSet<String>) {
    let mut add = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str)
            && !s.starts_with('$')
        {
            out.insert(s.to_owned());
        }
    };
    let mut nested = Vec::new();
    for step in steps {
        let Some(o) = step.as_object() else { continue };
        for kind in ["send", "raw"] {
            add(o.get(kind).and_then(|s| s.get("from")));
        }
        add(o.get("expect").and_then(|s| s.get("to")));
        add(o.get("disconnect"));
        add(o.get("except"));
        for list in [
            o.get("expectOne").and_then(|s| s.get("among")),
            o.get("expectNothing"),
        ]
        .into_iter()
        .flatten()
        {
            for v in list.as_array().into_iter().flatten() {
                add(Some(v));
            }
        }
        if let Some(counts) = o.get("expectCounts").and_then(Value::as_object) {
            for id in counts.keys().filter(|k| *k != "total") {
                add(Some(&Value::String(id.clone())));
            }
        }
        if let Some(steps) = o.get("steps").and_then(Value::as_array) {
            nested.push(steps.clone());
        }
    }
    for steps in nested {
        mentioned_ids(&steps, out);
    }
}

async fn run_scenario(scenario: Value) -> Result {
    let o = scenario.as_object().ok_or("a scenario must be an object")?;
    check_keys(
        o,
        &[
            "name",
            "about",
            "routes",
            "instances",
            "unregistered",
            "steps",
        ],
        "a scenario",
    )?;
    let routes = Routes::from_json(&o.get("routes").cloned().unwrap_or(Value::Null).to_string())
        .map_err(|e| format!("routes: {e}"))?;
    let bus = Bus::start(BusConfig::new(routes).with_log(LogSink::Discard))
        .await
        .map_err(|e| format!("cannot start the bus: {e}"))?;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut log_rx = bus.subscribe_logs();
    let sink = logs.clone();
    tokio::spawn(async move {
        loop {
            match log_rx.recv().await {
                Ok(line) => {
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    let port = bus.port();
    let mut run = Run {
        bus,
        port,
        conns: HashMap::new(),
        gone: BTreeSet::new(),
        vars: HashMap::new(),
        logs,
    };
    let instances = o
        .get("instances")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (id, role) in &instances {
        let role = role.as_str().ok_or("instances map ids to role names")?;
        let conn = Conn::open(port, Some(role.to_owned()))
            .await
            .map_err(|e| format!("instance '{id}': {e}"))?;
        run.conns.insert(id.clone(), conn);
    }
    let steps = o
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .ok_or("a scenario needs 'steps'")?;
    let mut others = BTreeSet::new();
    mentioned_ids(&steps, &mut others);
    for v in o
        .get("unregistered")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        others.insert(v.as_str().ok_or("'unregistered' lists ids")?.to_owned());
    }
    for id in others.into_iter().filter(|id| !instances.contains_key(id)) {
        let conn = Conn::open(port, None)
            .await
            .map_err(|e| format!("connection '{id}': {e}"))?;
        run.conns.insert(id, conn);
    }
    run.wait_clients_settled()
        .await
        .map_err(|e| format!("registering the instances: {e}"))?;
    let result = run.steps(&steps, "").await;
    let Run { bus, conns, .. } = run;
    drop(conns);
    bus.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routing_scenario() {
    let text = std::fs::read_to_string(VECTORS).expect("routing.json is readable");
    let doc: Value = serde_json::from_str(&text).expect("routing.json is JSON");
    let scenarios = doc["scenarios"]
        .as_array()
        .expect("routing.json has a list of scenarios")
        .clone();
    assert!(
        scenarios.len() >= 16,
        "routing.json holds only {} scenarios",
        scenarios.len()
    );
    let mut runs = Vec::new();
    for (i, scenario) in scenarios.into_iter().enumerate() {
        let name = scenario["name"]
            .as_str()
            .map_or_else(|| format!("#{}", i + 1), str::to_owned);
        runs.push((name, tokio::spawn(run_scenario(scenario))));
    }
    let total = runs.len();
    let mut failures = Vec::new();
    for (name, run) in runs {
        match run.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("scenario '{name}': {e}")),
            Err(e) => failures.push(format!("scenario '{name}' panicked: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} routing scenarios failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

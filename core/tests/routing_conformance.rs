//! Every scenario of `tests/conformance/routing.json` against a real bus
//! (a fresh one per scenario, on a free loopback port), over real
//! WebSockets. One generic runner (`support/scenario.rs`) interprets every
//! step kind; an unknown step kind, or an unknown key in a step, fails the
//! scenario, so a new vector is never skipped silently. All scenarios run,
//! concurrently, and every failure is reported with its scenario and step.

#[path = "support/scenario.rs"]
mod scenario;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use exoservice::bus::{Bus, BusConfig, BusHandle, LogSink};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use scenario::{
    Inbox, POLL, Peer, Result, Run, Transport, WAIT, check_keys, load_scenarios, parse_frame,
    scenario_instances, scenario_routes, scenario_steps, str_field, substitute, substitute_str,
};
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

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One test connection to the bus.
struct Conn {
    role: Option<String>,
    sink: SplitSink<Ws, WsMessage>,
    reader: JoinHandle<()>,
    inbox: Inbox,
}

impl Peer for Conn {
    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }
}

impl Conn {
    async fn open(port: u16, role: Option<String>) -> Result<Conn> {
        let url = format!("ws://127.0.0.1:{port}/services");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sink, stream) = ws.split();
        let (tx, inbox) = Inbox::new();
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
            inbox,
        })
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
        if tx.send(parse_frame(text)).is_err() {
            break;
        }
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

/// The ExoCom bus of one scenario.
struct BusRun {
    bus: BusHandle,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Transport for BusRun {
    type Peer = Conn;
    const PEER: &'static str = "connection";
    const RECEIVED: &'static str = "frame";

    async fn step(run: &mut Run<Self>, kind: &str, o: &Map<String, Value>, _path: &str) -> Result {
        match kind {
            "send" => {
                let (from, mut frame) = run.send_step(o)?;
                let conn = run.peer(&from)?;
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
                let text = substitute_str(str_field(r, "text")?, &run.vars);
                run.peer(&from)?.send_text(text).await
            }
            "disconnect" => {
                let (_, mut conn, how) = run.disconnect_step(o)?;
                if how == "close-frame" {
                    let close = WsMessage::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "bye".into(),
                    }));
                    conn.sink
                        .send(close)
                        .await
                        .map_err(|e| format!("cannot send a close frame: {e}"))?;
                    let _ = tokio::time::timeout(WAIT, &mut conn.reader).await;
                } else {
                    // Drop the socket without a close frame.
                    conn.reader.abort();
                    let _ = (&mut conn.reader).await;
                }
                drop(conn);
                // The instance has left once the bus no longer lists it.
                wait_clients_settled(run).await
            }
            "config" => {
                check_keys(o, &["config"], "a config step")?;
                let expected = normalize_config(&substitute(&o["config"], &run.vars));
                let deadline = Instant::now() + WAIT;
                loop {
                    let have = normalize_config(&get_config(run.transport.port).await?);
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
                let line = run.log_line(o)?;
                let logs = &run.transport.logs;
                let deadline = Instant::now() + WAIT;
                loop {
                    if logs.lock().map(|l| l.contains(&line)).unwrap_or(false) {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
                        return Err(format!("the bus did not log {line:?}; it logged {logs:#?}"));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            other => Err(format!("step kind '{other}' is listed but not run")),
        }
    }
}

/// Waits until the bus lists exactly the registered connections that are
/// open in the run.
async fn wait_clients_settled(run: &Run<BusRun>) -> Result {
    let mut want: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for c in run.peers.values() {
        if let Some(role) = &c.role {
            *counts.entry(role).or_default() += 1;
        }
    }
    for (role, n) in counts {
        want.insert((role.to_owned(), n));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let config = get_config(run.transport.port).await?;
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
    let routes = scenario_routes(o)?;
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
    let mut run = Run::new(BusRun { bus, port, logs });
    let result = open_and_run(&mut run, o).await;
    let Run {
        transport, peers, ..
    } = run;
    drop(peers);
    transport.bus.shutdown().await;
    result
}

/// Opens the scenario's connections, waits until the bus lists them, and
/// runs the steps.
async fn open_and_run(run: &mut Run<BusRun>, o: &Map<String, Value>) -> Result {
    let port = run.transport.port;
    let instances = scenario_instances(o)?;
    for (id, role) in &instances {
        let conn = Conn::open(port, Some(role.clone()))
            .await
            .map_err(|e| format!("instance '{id}': {e}"))?;
        run.peers.insert(id.clone(), conn);
    }
    let steps = scenario_steps(o)?;
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
    for id in others
        .into_iter()
        .filter(|id| !instances.iter().any(|(i, _)| i == id))
    {
        let conn = Conn::open(port, None)
            .await
            .map_err(|e| format!("connection '{id}': {e}"))?;
        run.peers.insert(id, conn);
    }
    wait_clients_settled(run)
        .await
        .map_err(|e| format!("registering the instances: {e}"))?;
    run.steps(&steps, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routing_scenario() {
    let scenarios = load_scenarios();
    assert!(
        scenarios.len() >= 16,
        "routing.json holds only {} scenarios",
        scenarios.len()
    );
    let mut runs = Vec::new();
    for (name, scenario) in scenarios {
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

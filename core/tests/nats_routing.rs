//! The scenarios of `tests/conformance/routing.json` that apply to the
//! `nats` transport, run over a real nats-server (one for the test, on a
//! free loopback port; a fresh app name per scenario, so scenarios do not
//! see each other's subjects).
//!
//! There is no bus process over NATS: the sender's core routes by the
//! application's routes. So each "instance" of a scenario (connection id →
//! role) is an [`Engine`] of that role configured with the scenario's
//! routes, handling every name its role receives; a task pulls its
//! deliveries and forwards each message, as the JSON of its frame, to the
//! instance's inbox, where the steps compare fields as they compare frames
//! on ExoCom.
//!
//! How each step kind maps:
//! - `send`: `Client::send_message` with the frame as a [`Message`] (it keeps
//!   the frame's id, activityId, auth and isSecurity; the sender is always
//!   the engine's own role).
//! - `expect`, `expectOne`, `expectNothing`, `expectCounts`, `repeat`,
//!   `sleepMs`: as on ExoCom, on what the engines received.
//! - `disconnect` (`tcp` or `close-frame`): the instance's engine drains and
//!   leaves NATS; once `drain` returned, the instance is gone (a sticky copy
//!   sent to it comes back as no-responders and goes to another instance of
//!   its role). A process that dies is seen by NATS the same way once its
//!   socket closes; nothing of a WebSocket close frame exists here.
//! - `log`: the bus's route trace lines (`web  --[ a ]-[ b ]->  users`) have
//!   no equivalent (no process sees every message; the core does not trace
//!   each routed copy), so they are not checked: the `expect` steps next to
//!   them check the same routing. Every other line (`Warning: TEXT`) is
//!   looked for, without the `Warning: ` prefix, in the log output of the
//!   cores of the scenario (captured with a `tracing` subscriber for this
//!   test; scenarios run one after the other, and the captured lines are
//!   cleared between them).
//! - `raw` and `config` need a bus process: a scenario using them must be
//!   listed as not applicable.
//!
//! Scenarios are named in [`RUN_OVER_NATS`] or in [`NOT_APPLICABLE`] (with
//! the reason); a scenario named in neither fails the test, so a new
//! vector is never skipped silently. Changes to a step for NATS are listed,
//! by scenario and step, in [`ADAPTATIONS`]; one that no step used fails too.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::config::{NatsSettings, ServiceConfig};
use exoservice::routes::{DeliveryMode, Routes};
use exoservice::testing::nats::NatsServer;
use exoservice::{Engine, ExoError, Message};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// The scenarios that run over NATS.
const RUN_OVER_NATS: &[&str] = &[
    "broadcast to every subscribed role, translated per receiver",
    "a reply is translated back to the public name",
    "names with spaces route untranslated",
    "a message the sender does not declare is refused",
    "a declared message nobody receives is reported",
    "a subscribed role with no instance does not cut delivery to the others",
    "one instance per role; an activity sticks to its instance",
    "new activities spread over instances",
    "a sticky instance that leaves hands its activity to another",
    "auth and isSecurity pass through to the receiver",
    "the bus stamps timestamp and responseTime",
];

/// The scenarios that need a bus process, with the reason.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    (
        "a polite close frame and garbage do not hurt the bus",
        "it sends unreadable text frames and a WebSocket close frame to the bus; over NATS \
         the core only publishes frames it built itself, and there is no WebSocket",
    ),
    (
        "a connection cannot speak for another role, nor send before it registers",
        "it sends raw frames claiming another role and frames before registering; over NATS a \
         core always sends as its own role and there is no registration",
    ),
    (
        "config.json lists connected clients and the routes",
        "/config.json is served by the bus process; NATS has no equivalent",
    ),
    (
        "security adapter: authorized message goes through",
        "the security adapter is not supported over NATS (routes with a role 'security' are \
         refused at start-up)",
    ),
    (
        "security adapter: unauthorized message is returned to its sender and not delivered",
        "the security adapter is not supported over NATS (routes with a role 'security' are \
         refused at start-up)",
    ),
];

/// How a step is changed for NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapt {
    /// The `send` is refused at the call site with [`ExoError::Undeclared`]
    /// (on ExoCom the bus drops the frame and logs a warning).
    RefusedAtCallSite,
    /// This `log` step (the bus's warning about the refused frame) checks
    /// that the last `send` was refused at the call site.
    LogIsTheRefusal,
}

/// Steps changed for NATS: (scenario, step path, how).
const ADAPTATIONS: &[(&str, &str, Adapt)] = &[
    (
        "a message the sender does not declare is refused",
        "1",
        Adapt::RefusedAtCallSite,
    ),
    (
        "a message the sender does not declare is refused",
        "2",
        Adapt::LogIsTheRefusal,
    ),
];

type Result<T = ()> = std::result::Result<T, String>;

/// Log lines written by `tracing` in this test process.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn clear(&self) {
        if let Ok(mut b) = self.0.lock() {
            b.clear();
        }
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every `tracing` event of this process (INFO and up) to a buffer.
fn capture_logs() -> LogBuffer {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other tracing subscriber is installed in this test");
    logs
}

/// One instance of a role: an engine and what it received.
struct Instance {
    role: String,
    engine: Arc<Engine>,
    pump: JoinHandle<()>,
    incoming: mpsc::UnboundedReceiver<Value>,
    /// Frames received and not matched by an expectation yet.
    buffer: VecDeque<Value>,
}

impl Instance {
    /// Starts an engine of `role` on the NATS server at `url`, handling
    /// every name the role receives, and waits until it is online.
    async fn start(url: &str, app: &str, routes: &Routes, role: &str) -> Result<Instance> {
        let own = routes
            .role(role)
            .ok_or_else(|| format!("role '{role}' is not in the scenario's routes"))?;
        let mut config = ServiceConfig::from_parts(role, own.receives.clone(), own.sends.clone())
            .with_nats(NatsSettings::new(url, app, routes.clone()));
        for name in &own.at_least_once {
            config = config.with_delivery(name.clone(), DeliveryMode::AtLeastOnce);
        }
        let engine = Arc::new(Engine::new(config));
        engine.announce_online(false);
        for name in &own.receives {
            engine
                .handle(name)
                .map_err(|e| format!("cannot handle '{name}': {e}"))?;
        }
        engine
            .connect()
            .map_err(|e| format!("cannot connect: {e}"))?;
        if !engine.wait_online(WAIT).await {
            return Err(format!(
                "the engine of role '{role}' was not online within {WAIT:?}"
            ));
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        let pulling = engine.clone();
        let pump = tokio::spawn(async move {
            while let Some(delivery) = pulling.next().await {
                let frame = delivery.message().to_json();
                let value = serde_json::from_str(&frame).unwrap_or(Value::String(frame));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Ok(Instance {
            role: role.to_owned(),
            engine,
            pump,
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

    /// Drains the engine (it leaves NATS) and ends its pump.
    async fn leave(self) -> Result {
        let report = self.engine.drain().await;
        match tokio::time::timeout(WAIT, self.pump).await {
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "the '{}' engine kept delivering after its drain",
                    self.role
                ));
            }
        }
        if report.unsent_messages > 0 {
            return Err(format!(
                "the '{}' engine left {} messages unsent",
                self.role, report.unsent_messages
            ));
        }
        Ok(())
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

/// Whether a log line is the bus's trace of one routed message.
fn is_route_trace(line: &str) -> bool {
    line.contains("  --[ ") && line.contains(" ]->  ")
}

/// One scenario being run.
struct Run {
    name: String,
    instances: HashMap<String, Instance>,
    /// Instances a step disconnected: they receive nothing any more.
    gone: BTreeSet<String>,
    vars: HashMap<String, String>,
    logs: LogBuffer,
    /// The refusal of the last `send` adapted as refused at the call site.
    refused: Option<ExoError>,
    /// The adaptations the steps used, by step path.
    used: BTreeSet<String>,
}

impl Run {
    fn resolve(&self, id: &str) -> String {
        substitute_str(id, &self.vars)
    }

    fn instance(&mut self, id: &str) -> Result<&mut Instance> {
        let id = self.resolve(id);
        self.instances
            .get_mut(&id)
            .ok_or_else(|| format!("no running instance '{id}'"))
    }

    fn adaptation(&mut self, path: &str) -> Option<Adapt> {
        let adapt = ADAPTATIONS
            .iter()
            .find(|(s, p, _)| *s == self.name && *p == path)
            .map(|(_, _, a)| *a)?;
        self.used.insert(path.to_owned());
        Some(adapt)
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
        let adapt = self.adaptation(path);
        match kind {
            "send" => {
                check_keys(o, &["send"], "a send step")?;
                let s = o["send"].as_object().ok_or("'send' must be an object")?;
                check_keys(s, &["from", "frame"], "send")?;
                let from = str_field(s, "from")?.to_owned();
                let frame = substitute(&s["frame"], &self.vars);
                let msg = Message::parse(frame.to_string().as_bytes())
                    .map_err(|e| format!("the frame is not a message: {e}"))?;
                let name = msg.name.clone();
                let instance = self.instance(&from)?;
                let role = instance.role.clone();
                let sent = instance.engine.client().send_message(msg);
                match (adapt, sent) {
                    (None, Ok(())) => Ok(()),
                    (None, Err(e)) => Err(format!("'{from}' ({role}) could not send: {e}")),
                    (Some(Adapt::RefusedAtCallSite), Err(e)) => match &e {
                        ExoError::Undeclared {
                            name: n, role: r, ..
                        } if *n == name && *r == role => {
                            self.refused = Some(e);
                            Ok(())
                        }
                        _ => Err(format!(
                            "expected ExoError::Undeclared for '{name}' of role '{role}', got: {e}"
                        )),
                    },
                    (Some(Adapt::RefusedAtCallSite), Ok(())) => Err(format!(
                        "'{from}' ({role}) sent '{name}', which its role does not declare; \
                         expected a refusal at the call site"
                    )),
                    (Some(other), _) => {
                        Err(format!("adaptation {other:?} does not apply to a send"))
                    }
                }
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
                    if let Some(f) = self.instance(&to)?.take_match(&expected) {
                        break f;
                    }
                    if Instant::now() >= deadline {
                        let seen = self.instance(&to)?.buffer.clone();
                        return Err(format!(
                            "'{}' received no message matching {expected} within {WAIT:?} (unmatched: {seen:?})",
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
                    .ok_or("'among' must list instance ids")?;
                // An instance that left cannot receive it.
                let among: Vec<String> = among
                    .into_iter()
                    .filter(|id| !self.gone.contains(id))
                    .collect();
                let expected = substitute(&e["frame"], &self.vars);
                let deadline = Instant::now() + WAIT;
                let (winner, frame) = 'found: loop {
                    for id in &among {
                        if let Some(f) = self.instance(id)?.take_match(&expected) {
                            break 'found (id.clone(), f);
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "none of {among:?} received a message matching {expected} within {WAIT:?}"
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                };
                tokio::time::sleep(QUIET).await;
                for id in among.iter().filter(|id| **id != winner) {
                    if let Some(f) = self.instance(id)?.take_match(&expected) {
                        return Err(format!(
                            "both '{winner}' and '{id}' received a matching message: {frame} and {f}"
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
                    .ok_or("'expectNothing' must list instance ids")?;
                tokio::time::sleep(QUIET).await;
                let listed: Vec<String> = ids
                    .into_iter()
                    .filter(|id| Some(id) != except.as_ref() && !self.gone.contains(id))
                    .collect();
                for id in &listed {
                    let instance = self.instance(id)?;
                    instance.collect();
                    if !instance.buffer.is_empty() {
                        return Err(format!(
                            "'{id}' received {:?} but should have received nothing",
                            instance.buffer
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
                        let instance = run.instance(id)?;
                        instance.collect();
                        n += instance.buffer.len() as u64;
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
                    let instance = self.instance(id)?;
                    let n = instance.buffer.len() as u64;
                    instance.buffer.clear();
                    report.push(format!("{id}: {n}"));
                    if n < *min {
                        return Err(format!(
                            "'{id}' received {n} messages, fewer than {min} ({})",
                            report.join(", ")
                        ));
                    }
                }
                match total {
                    Some(total) if got != total => Err(format!(
                        "received {got} messages in all ({}), expected {total}",
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
                        .ok_or("'disconnect' must be an instance id")?,
                );
                match o.get("how").and_then(Value::as_str).unwrap_or("tcp") {
                    "tcp" | "close-frame" => {}
                    other => return Err(format!("unknown disconnect 'how': {other}")),
                }
                let instance = self
                    .instances
                    .remove(&id)
                    .ok_or_else(|| format!("no running instance '{id}'"))?;
                self.gone.insert(id.clone());
                instance.leave().await.map_err(|e| format!("'{id}': {e}"))
            }
            "log" => {
                check_keys(o, &["log"], "a log step")?;
                let line = substitute_str(
                    o["log"].as_str().ok_or("'log' must be a string")?,
                    &self.vars,
                );
                if adapt == Some(Adapt::LogIsTheRefusal) {
                    return match &self.refused {
                        Some(e) => {
                            // The refusal names what the bus's warning names.
                            let text = e.to_string();
                            if line.contains(&format!("'{}'", refused_name(e)))
                                && line.contains(&format!("'{}'", refused_role(e)))
                            {
                                Ok(())
                            } else {
                                Err(format!(
                                    "the refusal ({text}) does not name what {line:?} names"
                                ))
                            }
                        }
                        None => Err("no send was refused at the call site before".into()),
                    };
                }
                if let Some(other) = adapt {
                    return Err(format!("adaptation {other:?} does not apply to a log step"));
                }
                if is_route_trace(&line) {
                    // No process traces each routed copy over NATS; the
                    // expect steps check the routing itself.
                    return Ok(());
                }
                let text = line.strip_prefix("Warning: ").unwrap_or(&line);
                let deadline = Instant::now() + WAIT;
                loop {
                    if self.logs.text().contains(text) {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "no core logged {text:?} within {WAIT:?}; the log was:\n{}",
                            self.logs.text()
                        ));
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
            "raw" | "config" => Err(format!(
                "step kind '{kind}' needs a bus process: list the scenario in NOT_APPLICABLE \
                 or teach the NATS runner"
            )),
            other => Err(format!("step kind '{other}' is listed but not run")),
        }
    }

    /// The extra checks of expect/expectOne on the received frame.
    fn check_received(&mut self, e: &Map<String, Value>, frame: &Value) -> Result {
        if let Some(has) = e.get("has") {
            for field in has.as_array().ok_or("'has' must be a list")? {
                let field = field.as_str().ok_or("'has' must list field names")?;
                if frame.get(field).is_none_or(Value::is_null) {
                    return Err(format!("the message {frame} has no '{field}'"));
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

fn refused_name(e: &ExoError) -> &str {
    match e {
        ExoError::Undeclared { name, .. } => name,
        _ => "",
    }
}

fn refused_role(e: &ExoError) -> &str {
    match e {
        ExoError::Undeclared { role, .. } => role,
        _ => "",
    }
}

async fn run_scenario(scenario: &Value, url: &str, app: &str, logs: &LogBuffer) -> Result {
    let o = scenario.as_object().ok_or("a scenario must be an object")?;
    check_keys(
        o,
        &["name", "about", "routes", "instances", "steps"],
        "a scenario run over NATS",
    )?;
    let name = str_field(o, "name")?.to_owned();
    let routes = Routes::from_json(&o.get("routes").cloned().unwrap_or(Value::Null).to_string())
        .map_err(|e| format!("routes: {e}"))?;
    logs.clear();
    let mut run = Run {
        name,
        instances: HashMap::new(),
        gone: BTreeSet::new(),
        vars: HashMap::new(),
        logs: logs.clone(),
        refused: None,
        used: BTreeSet::new(),
    };
    let instances = o
        .get("instances")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut result = Ok(());
    for (id, role) in &instances {
        let Some(role) = role.as_str() else {
            result = Err("instances map ids to role names".to_owned());
            break;
        };
        match Instance::start(url, app, &routes, role).await {
            Ok(instance) => {
                run.instances.insert(id.clone(), instance);
            }
            Err(e) => {
                result = Err(format!("instance '{id}': {e}"));
                break;
            }
        }
    }
    if result.is_ok() {
        let steps = o
            .get("steps")
            .and_then(Value::as_array)
            .cloned()
            .ok_or("a scenario needs 'steps'")?;
        result = run.steps(&steps, "").await;
    }
    if result.is_ok() {
        let unused: Vec<&str> = ADAPTATIONS
            .iter()
            .filter(|(s, p, _)| *s == run.name && !run.used.contains(*p))
            .map(|(_, p, _)| *p)
            .collect();
        if !unused.is_empty() {
            result = Err(format!(
                "ADAPTATIONS lists steps {unused:?}, which the scenario does not reach"
            ));
        }
    }
    for (id, instance) in std::mem::take(&mut run.instances) {
        if let Err(e) = instance.leave().await {
            result = result.and(Err(format!("leaving, '{id}': {e}")));
        }
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_scenarios_over_nats() {
    let logs = capture_logs();
    let text = std::fs::read_to_string(VECTORS).expect("routing.json is readable");
    let doc: Value = serde_json::from_str(&text).expect("routing.json is JSON");
    let scenarios = doc["scenarios"]
        .as_array()
        .expect("routing.json has a list of scenarios")
        .clone();
    let names: Vec<String> = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s["name"]
                .as_str()
                .map_or_else(|| format!("#{}", i + 1), str::to_owned)
        })
        .collect();

    let mut failures = Vec::new();
    for listed in RUN_OVER_NATS
        .iter()
        .chain(NOT_APPLICABLE.iter().map(|(n, _)| n))
    {
        if !names.iter().any(|n| n == listed) {
            failures.push(format!(
                "scenario '{listed}' is listed in this test but not in routing.json"
            ));
        }
    }
    for (s, p, _) in ADAPTATIONS {
        if !RUN_OVER_NATS.contains(s) {
            failures.push(format!(
                "ADAPTATIONS changes step {p} of '{s}', which does not run over NATS"
            ));
        }
    }

    let server = NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
    let url = server.url();
    let tag = std::process::id();
    let mut ran = 0;
    for (i, (scenario, name)) in scenarios.iter().zip(&names).enumerate() {
        if NOT_APPLICABLE.iter().any(|(n, _)| n == name) {
            continue;
        }
        if !RUN_OVER_NATS.contains(&name.as_str()) {
            failures.push(format!(
                "scenario '{name}' is new: decide whether it applies over NATS and list it in \
                 RUN_OVER_NATS or NOT_APPLICABLE (with the reason)"
            ));
            continue;
        }
        let app = format!("routing-{tag}-{i}");
        ran += 1;
        let run = tokio::time::timeout(
            Duration::from_secs(60),
            run_scenario(scenario, &url, &app, &logs),
        )
        .await
        .unwrap_or_else(|_| Err("did not finish within 60 s".into()));
        if let Err(e) = run {
            failures.push(format!("scenario '{name}': {e}"));
        }
    }
    drop(server);
    assert!(
        failures.is_empty(),
        "{} of {ran} routing scenarios over NATS failed (or the lists are stale):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        ran,
        RUN_OVER_NATS.len(),
        "every scenario listed to run over NATS ran"
    );
}

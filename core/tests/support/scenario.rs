//! The interpreter of `tests/conformance/routing.json`, shared by the runner
//! over ExoCom (`routing_conformance.rs`) and the runner over NATS
//! (`nats_routing.rs`).
//!
//! Shared here: reading the scenarios, frame matching, `$NAME`
//! substitution, and every step kind that only looks at what the peers
//! (connections or instances) received: `expect`, `expectOne`,
//! `expectNothing`, `expectCounts`, plus `repeat` (with `$n`) and
//! `sleepMs`. A runner is a [`Transport`]: it opens its peers, fills their
//! [`Inbox`]es, and runs the step kinds that act on the transport (`send`,
//! `raw`, `disconnect`, `config`, `log`). A step with no known kind, several
//! kinds, or an unknown key fails, so a new vector is never skipped
//! silently.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use exoservice::routes::Routes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The routing scenarios.
pub const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/conformance/routing.json"
);
/// How long any expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// "Nothing more within 200 ms."
pub const QUIET: Duration = Duration::from_millis(200);
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(5);

/// A failure, saying what was expected.
pub type Result<T = ()> = std::result::Result<T, String>;

/// Every step kind of routing.json.
pub const STEP_KINDS: &[&str] = &[
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

/// The scenarios of routing.json with their names (`#N` when unnamed).
pub fn load_scenarios() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(VECTORS).expect("routing.json is readable");
    let doc: Value = serde_json::from_str(&text).expect("routing.json is JSON");
    let scenarios = doc["scenarios"]
        .as_array()
        .expect("routing.json has a list of scenarios");
    scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s["name"]
                .as_str()
                .map_or_else(|| format!("#{}", i + 1), str::to_owned);
            (name, s.clone())
        })
        .collect()
}

/// The scenario's `routes`.
pub fn scenario_routes(o: &Map<String, Value>) -> Result<Routes> {
    Routes::from_json(&o.get("routes").cloned().unwrap_or(Value::Null).to_string())
        .map_err(|e| format!("routes: {e}"))
}

/// The scenario's `instances`: (id, role), in the order listed.
pub fn scenario_instances(o: &Map<String, Value>) -> Result<Vec<(String, String)>> {
    let Some(instances) = o.get("instances") else {
        return Ok(Vec::new());
    };
    instances
        .as_object()
        .ok_or("'instances' must map ids to role names")?
        .iter()
        .map(|(id, role)| match role.as_str() {
            Some(role) => Ok((id.clone(), role.to_owned())),
            None => Err("instances map ids to role names".to_owned()),
        })
        .collect()
}

/// The scenario's `steps`.
pub fn scenario_steps(o: &Map<String, Value>) -> Result<Vec<Value>> {
    o.get("steps")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| "a scenario needs 'steps'".to_owned())
}

/// A received frame as JSON (a string when it is not JSON).
pub fn parse_frame(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// What a peer received and no expectation matched yet.
pub struct Inbox {
    incoming: mpsc::UnboundedReceiver<Value>,
    /// Frames received and not matched by an expectation yet.
    pub buffer: VecDeque<Value>,
}

impl Inbox {
    /// An empty inbox and the sender that fills it.
    pub fn new() -> (mpsc::UnboundedSender<Value>, Inbox) {
        let (tx, incoming) = mpsc::unbounded_channel();
        let inbox = Inbox {
            incoming,
            buffer: VecDeque::new(),
        };
        (tx, inbox)
    }

    /// Moves what arrived into the buffer.
    pub fn collect(&mut self) {
        while let Ok(frame) = self.incoming.try_recv() {
            self.buffer.push_back(frame);
        }
    }

    /// Removes and returns the first buffered frame that matches.
    pub fn take_match(&mut self, expected: &Value) -> Option<Value> {
        self.collect();
        let pos = self.buffer.iter().position(|f| matches(expected, f))?;
        self.buffer.remove(pos)
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
pub fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, ev)| match a.get(k) {
            Some(av) => matches(ev, av),
            None => is_zero(ev),
        }),
        (e, a) => e == a || (is_zero(e) && a.is_null()),
    }
}

/// Replaces `$NAME` with the value of variable NAME in every string.
pub fn substitute(value: &Value, vars: &HashMap<String, String>) -> Value {
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

/// Replaces `$NAME` with the value of variable NAME in a string.
pub fn substitute_str(s: &str, vars: &HashMap<String, String>) -> String {
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

/// The string at `key`.
pub fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("'{key}' must be a string"))
}

/// Fails on a key not in `allowed`.
pub fn check_keys(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown key '{k}' in {what} (the runner knows {allowed:?}); teach the runner first"
        )),
        None => Ok(()),
    }
}

/// One end of the transport a scenario names by id.
pub trait Peer {
    /// What it received.
    fn inbox(&mut self) -> &mut Inbox;
}

/// How the scenarios run over one transport.
pub trait Transport: Sized + Send {
    /// A connection id of the scenarios names one of these.
    type Peer: Peer + Send;
    /// What a peer is called in failures ("connection", "instance").
    const PEER: &'static str;
    /// What a peer receives, in failures ("frame", "message").
    const RECEIVED: &'static str;
    /// Runs a step of a kind that acts on the transport (`send`, `raw`,
    /// `disconnect`, `config`, `log`); fails on a kind it does not run.
    fn step(
        run: &mut Run<Self>,
        kind: &str,
        o: &Map<String, Value>,
        path: &str,
    ) -> impl Future<Output = Result> + Send;
}

/// One scenario being run.
pub struct Run<T: Transport> {
    /// What the transport keeps for the scenario.
    pub transport: T,
    /// The open peers, by id.
    pub peers: HashMap<String, T::Peer>,
    /// Peers a step disconnected: they receive nothing any more.
    pub gone: BTreeSet<String>,
    /// Captured variables (`$NAME`).
    pub vars: HashMap<String, String>,
}

impl<T: Transport> Run<T> {
    /// A run with no peer yet.
    pub fn new(transport: T) -> Self {
        Run {
            transport,
            peers: HashMap::new(),
            gone: BTreeSet::new(),
            vars: HashMap::new(),
        }
    }

    /// The id with its variables substituted.
    pub fn resolve(&self, id: &str) -> String {
        substitute_str(id, &self.vars)
    }

    /// The open peer `id`.
    pub fn peer(&mut self, id: &str) -> Result<&mut T::Peer> {
        let id = self.resolve(id);
        self.peers
            .get_mut(&id)
            .ok_or_else(|| format!("no open {} '{id}'", T::PEER))
    }

    /// The text of a `log` step, with its variables substituted.
    pub fn log_line(&self, o: &Map<String, Value>) -> Result<String> {
        check_keys(o, &["log"], "a log step")?;
        let line = o["log"].as_str().ok_or("'log' must be a string")?;
        Ok(substitute_str(line, &self.vars))
    }

    /// A `send` step: the sending peer's id and the frame, with its
    /// variables substituted.
    pub fn send_step(&self, o: &Map<String, Value>) -> Result<(String, Value)> {
        check_keys(o, &["send"], "a send step")?;
        let s = o["send"].as_object().ok_or("'send' must be an object")?;
        check_keys(s, &["from", "frame"], "send")?;
        let from = str_field(s, "from")?.to_owned();
        Ok((from, substitute(&s["frame"], &self.vars)))
    }

    /// A `disconnect` step: removes the peer (it counts as gone from now
    /// on) and returns its id, the peer and how it leaves (`tcp`, the
    /// default, or `close-frame`).
    pub fn disconnect_step(
        &mut self,
        o: &Map<String, Value>,
    ) -> Result<(String, T::Peer, &'static str)> {
        check_keys(o, &["disconnect", "how"], "a disconnect step")?;
        let id = o["disconnect"]
            .as_str()
            .ok_or_else(|| format!("'disconnect' must be a {} id", T::PEER))?;
        let id = self.resolve(id);
        let how = match o.get("how").and_then(Value::as_str).unwrap_or("tcp") {
            "tcp" => "tcp",
            "close-frame" => "close-frame",
            other => return Err(format!("unknown disconnect 'how': {other}")),
        };
        let peer = self
            .peers
            .remove(&id)
            .ok_or_else(|| format!("no open {} '{id}'", T::PEER))?;
        self.gone.insert(id.clone());
        Ok((id, peer, how))
    }

    /// Runs the steps in order; `path` numbers them in failures.
    pub async fn steps(&mut self, steps: &[Value], path: &str) -> Result {
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
            "expect" => self.expect(o).await,
            "expectOne" => self.expect_one(o).await,
            "expectNothing" => self.expect_nothing(o).await,
            "expectCounts" => self.expect_counts(o).await,
            "repeat" => self.repeat(o, path).await,
            "sleepMs" => {
                check_keys(o, &["sleepMs"], "a sleepMs step")?;
                let ms = o["sleepMs"].as_u64().ok_or("'sleepMs' must be a number")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            _ => T::step(self, kind, o, path).await,
        }
    }

    /// A list of peer ids, resolved.
    fn ids(&self, list: Option<&Value>, what: &str) -> Result<Vec<String>> {
        list.and_then(Value::as_array)
            .ok_or_else(|| format!("'{what}' must be a list"))?
            .iter()
            .map(|v| v.as_str().map(|s| self.resolve(s)))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("'{what}' must list {} ids", T::PEER))
    }

    async fn expect(&mut self, o: &Map<String, Value>) -> Result {
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
            if let Some(f) = self.peer(&to)?.inbox().take_match(&expected) {
                break f;
            }
            if Instant::now() >= deadline {
                let seen = self.peer(&to)?.inbox().buffer.clone();
                return Err(format!(
                    "'{}' received no {} matching {expected} within {WAIT:?} (unmatched: {seen:?})",
                    self.resolve(&to),
                    T::RECEIVED
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        self.check_received(e, &frame)
    }

    async fn expect_one(&mut self, o: &Map<String, Value>) -> Result {
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
        // A peer that left cannot receive it.
        let among: Vec<String> = self
            .ids(e.get("among"), "among")?
            .into_iter()
            .filter(|id| !self.gone.contains(id))
            .collect();
        let expected = substitute(&e["frame"], &self.vars);
        let deadline = Instant::now() + WAIT;
        let (winner, frame) = 'found: loop {
            for id in &among {
                if let Some(f) = self.peer(id)?.inbox().take_match(&expected) {
                    break 'found (id.clone(), f);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "none of {among:?} received a {} matching {expected} within {WAIT:?}",
                    T::RECEIVED
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        tokio::time::sleep(QUIET).await;
        for id in among.iter().filter(|id| **id != winner) {
            if let Some(f) = self.peer(id)?.inbox().take_match(&expected) {
                return Err(format!(
                    "both '{winner}' and '{id}' received a matching {}: {frame} and {f}",
                    T::RECEIVED
                ));
            }
        }
        if let Some(name) = e.get("as") {
            let name = name.as_str().ok_or("'as' must be a string")?;
            self.vars.insert(name.to_owned(), winner);
        }
        self.check_received(e, &frame)
    }

    async fn expect_nothing(&mut self, o: &Map<String, Value>) -> Result {
        check_keys(o, &["expectNothing", "except"], "an expectNothing step")?;
        let except = match o.get("except") {
            Some(v) => Some(self.resolve(v.as_str().ok_or("'except' must be a string")?)),
            None => None,
        };
        let ids = self.ids(o.get("expectNothing"), "expectNothing")?;
        tokio::time::sleep(QUIET).await;
        let listed: Vec<String> = ids
            .into_iter()
            .filter(|id| Some(id) != except.as_ref() && !self.gone.contains(id))
            .collect();
        for id in &listed {
            let inbox = self.peer(id)?.inbox();
            inbox.collect();
            if !inbox.buffer.is_empty() {
                return Err(format!(
                    "'{id}' received {:?} but should have received nothing",
                    inbox.buffer
                ));
            }
        }
        Ok(())
    }

    async fn expect_counts(&mut self, o: &Map<String, Value>) -> Result {
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
        let sum = |run: &mut Self| -> Result<u64> {
            let mut n = 0;
            for (id, _) in &mins {
                let inbox = run.peer(id)?.inbox();
                inbox.collect();
                n += inbox.buffer.len() as u64;
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
            let inbox = self.peer(id)?.inbox();
            let n = inbox.buffer.len() as u64;
            inbox.buffer.clear();
            report.push(format!("{id}: {n}"));
            if n < *min {
                return Err(format!(
                    "'{id}' received {n} {}s, fewer than {min} ({})",
                    T::RECEIVED,
                    report.join(", ")
                ));
            }
        }
        match total {
            Some(total) if got != total => Err(format!(
                "received {got} {}s in all ({}), expected {total}",
                T::RECEIVED,
                report.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// Runs `steps` N times with `$n` = 1..=N.
    async fn repeat(&mut self, o: &Map<String, Value>, path: &str) -> Result {
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

    /// The extra checks of expect/expectOne on the received frame.
    fn check_received(&mut self, e: &Map<String, Value>, frame: &Value) -> Result {
        if let Some(has) = e.get("has") {
            for field in has.as_array().ok_or("'has' must be a list")? {
                let field = field.as_str().ok_or("'has' must list field names")?;
                if frame.get(field).is_none_or(Value::is_null) {
                    return Err(format!("the {} {frame} has no '{field}'", T::RECEIVED));
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

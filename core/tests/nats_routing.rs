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

#[path = "support/scenario.rs"]
mod scenario;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::config::{NatsSettings, ServiceConfig};
use exoservice::routes::{DeliveryMode, Routes};
use exoservice::testing::nats::NatsServer;
use exoservice::{Engine, ExoError, Message};
use scenario::{
    Inbox, POLL, Peer, Result, Run, Transport, WAIT, check_keys, load_scenarios, parse_frame,
    scenario_instances, scenario_routes, scenario_steps, str_field,
};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    inbox: Inbox,
}

impl Peer for Instance {
    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }
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
        let (tx, inbox) = Inbox::new();
        let pulling = engine.clone();
        let pump = tokio::spawn(async move {
            while let Some(delivery) = pulling.next().await {
                if tx.send(parse_frame(delivery.message().to_json())).is_err() {
                    break;
                }
            }
        });
        Ok(Instance {
            role: role.to_owned(),
            engine,
            pump,
            inbox,
        })
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

/// Whether a log line is the bus's trace of one routed message.
fn is_route_trace(line: &str) -> bool {
    line.contains("  --[ ") && line.contains(" ]->  ")
}

/// The NATS side of one scenario.
struct NatsRun {
    name: String,
    logs: LogBuffer,
    /// The refusal of the last `send` adapted as refused at the call site.
    refused: Option<ExoError>,
    /// The adaptations the steps used, by step path.
    used: BTreeSet<String>,
}

impl NatsRun {
    fn adaptation(&mut self, path: &str) -> Option<Adapt> {
        let adapt = ADAPTATIONS
            .iter()
            .find(|(s, p, _)| *s == self.name && *p == path)
            .map(|(_, _, a)| *a)?;
        self.used.insert(path.to_owned());
        Some(adapt)
    }
}

impl Transport for NatsRun {
    type Peer = Instance;
    const PEER: &'static str = "instance";
    const RECEIVED: &'static str = "message";

    async fn step(run: &mut Run<Self>, kind: &str, o: &Map<String, Value>, path: &str) -> Result {
        let adapt = run.transport.adaptation(path);
        match kind {
            "send" => {
                let (from, frame) = run.send_step(o)?;
                let msg = Message::parse(frame.to_string().as_bytes())
                    .map_err(|e| format!("the frame is not a message: {e}"))?;
                let name = msg.name.clone();
                let instance = run.peer(&from)?;
                let role = instance.role.clone();
                let sent = instance.engine.client().send_message(msg);
                match (adapt, sent) {
                    (None, Ok(())) => Ok(()),
                    (None, Err(e)) => Err(format!("'{from}' ({role}) could not send: {e}")),
                    (Some(Adapt::RefusedAtCallSite), Err(e)) => match &e {
                        ExoError::Undeclared {
                            name: n, role: r, ..
                        } if *n == name && *r == role => {
                            run.transport.refused = Some(e);
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
            "disconnect" => {
                if let Some(other) = adapt {
                    return Err(format!(
                        "adaptation {other:?} does not apply to a disconnect"
                    ));
                }
                let (id, instance, _how) = run.disconnect_step(o)?;
                instance.leave().await.map_err(|e| format!("'{id}': {e}"))
            }
            "log" => {
                let line = run.log_line(o)?;
                if adapt == Some(Adapt::LogIsTheRefusal) {
                    return match &run.transport.refused {
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
                    if run.transport.logs.text().contains(text) {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "no core logged {text:?} within {WAIT:?}; the log was:\n{}",
                            run.transport.logs.text()
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            "raw" | "config" => Err(format!(
                "step kind '{kind}' needs a bus process: list the scenario in NOT_APPLICABLE \
                 or teach the NATS runner"
            )),
            other => Err(format!("step kind '{other}' is listed but not run")),
        }
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
    let routes = scenario_routes(o)?;
    logs.clear();
    let mut run = Run::new(NatsRun {
        name,
        logs: logs.clone(),
        refused: None,
        used: BTreeSet::new(),
    });
    let mut result = start_and_run(&mut run, o, url, app, &routes).await;
    if result.is_ok() {
        let unused: Vec<&str> = ADAPTATIONS
            .iter()
            .filter(|(s, p, _)| *s == run.transport.name && !run.transport.used.contains(*p))
            .map(|(_, p, _)| *p)
            .collect();
        if !unused.is_empty() {
            result = Err(format!(
                "ADAPTATIONS lists steps {unused:?}, which the scenario does not reach (or \
                 which are not send or log steps)"
            ));
        }
    }
    for (id, instance) in std::mem::take(&mut run.peers) {
        if let Err(e) = instance.leave().await {
            result = result.and(Err(format!("leaving, '{id}': {e}")));
        }
    }
    result
}

/// Starts the scenario's instances and runs the steps.
async fn start_and_run(
    run: &mut Run<NatsRun>,
    o: &Map<String, Value>,
    url: &str,
    app: &str,
    routes: &Routes,
) -> Result {
    for (id, role) in scenario_instances(o)? {
        let instance = Instance::start(url, app, routes, &role)
            .await
            .map_err(|e| format!("instance '{id}': {e}"))?;
        run.peers.insert(id, instance);
    }
    run.steps(&scenario_steps(o)?, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_scenarios_over_nats() {
    let logs = capture_logs();
    let scenarios = load_scenarios();

    let mut failures = Vec::new();
    for listed in RUN_OVER_NATS
        .iter()
        .chain(NOT_APPLICABLE.iter().map(|(n, _)| n))
    {
        if !scenarios.iter().any(|(n, _)| n == listed) {
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
    for (i, (name, scenario)) in scenarios.iter().enumerate() {
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

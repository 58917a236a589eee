//! `NativeEngine`: one service's connection and dispatch, pulled by Node.

use std::path::PathBuf;
use std::sync::Arc;

use exoservice::config::{Env as ConfigEnv, ServiceConfig};
use exoservice::dispatch::Engine;
use exoservice::message::{self, Message};
use exoservice::{Client, ExoError};
use futures_util::FutureExt;
use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;
use tokio::sync::watch;

use crate::delivery::{NativeDelivery, NativeWatch, request_message};
use crate::{js_error, millis, raw_part, settle, usage};

/// How a service is configured. Explicit options win over the environment
/// (`ROLE`, `EXOCOM_HOST`, `EXOCOM_PORT`, ...), which wins over the file.
#[napi(object)]
#[derive(Default)]
pub struct EngineOptions {
    /// The directory holding `service.yml` (or `config.yml`); default `.`.
    pub config_dir: Option<String>,
    /// The role to register as.
    pub role: Option<String>,
    /// Where ExoCom runs.
    pub exocom_host: Option<String>,
    /// ExoCom's port.
    pub exocom_port: Option<u32>,
    /// Message names received: with `sends`, builds the config in code
    /// (no file is read; `role` is then required).
    pub receives: Option<Vec<String>>,
    /// Message names sent (see `receives`).
    pub sends: Option<Vec<String>>,
    /// Limit of handlers in flight.
    pub concurrency: Option<u32>,
    /// Time running handlers get to finish when the service stops.
    pub drain_timeout_ms: Option<f64>,
}

/// What the drain achieved.
#[napi(object)]
pub struct DrainReport {
    /// Handlers still running when the deadline passed.
    pub unfinished_handlers: u32,
    /// Outgoing messages that could not be written before leaving.
    pub unsent_messages: u32,
    /// Queued messages that no handler took because the service stopped.
    pub unhandled_messages: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Builds the config from the options, the environment and the file.
fn build_config(opts: EngineOptions) -> napi::Result<ServiceConfig> {
    let mut env = ConfigEnv::process();
    if let Some(role) = &opts.role {
        if !exoservice::routes::is_valid_role(role) {
            return Err(js_error(ExoError::Config(
                exoservice::config::ConfigError::new(
                    "(options)",
                    format!(
                        "role {role:?} is not a role name (letters and digits in groups joined by single hyphens)"
                    ),
                ),
            )));
        }
        // The role decides the routes' entry on NATS: read the config as it.
        env = env.with("ROLE", role.as_str());
    }
    let mut config = if opts.receives.is_some() || opts.sends.is_some() {
        let role = opts
            .role
            .clone()
            .or_else(|| env.get("ROLE").map(str::to_owned))
            .ok_or_else(|| usage("a config built from receives/sends needs a role"))?;
        let mut config = ServiceConfig::from_parts(
            role,
            opts.receives.clone().unwrap_or_default(),
            opts.sends.clone().unwrap_or_default(),
        );
        if let Some(host) = env.get("EXOCOM_HOST") {
            config.exocom_host = host.to_owned();
        }
        if let Some(port) = env.port().map_err(|e| js_error(e.into()))? {
            config.exocom_port = port;
        }
        config
            .with_transport_from(&env)
            .map_err(|e| js_error(e.into()))?
    } else {
        let dir = PathBuf::from(opts.config_dir.as_deref().unwrap_or("."));
        ServiceConfig::load_with(&dir, &env, None).map_err(|e| js_error(e.into()))?
    };
    if let Some(role) = opts.role {
        config.role = role;
    }
    if let Some(host) = opts.exocom_host {
        if host.is_empty() {
            return Err(usage("exocomHost must not be empty"));
        }
        config.exocom_host = host;
    }
    if let Some(port) = opts.exocom_port {
        config.exocom_port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| usage(format!("exocomPort must be a port (1-65535), got {port}")))?;
    }
    if let Some(n) = opts.concurrency {
        if n == 0 {
            return Err(usage("concurrency must be at least 1"));
        }
        config.concurrency = n as usize;
    }
    if let Some(ms) = opts.drain_timeout_ms {
        config.drain_timeout = millis("drainTimeoutMs", ms)?;
    }
    Ok(config)
}

/// Set once the service is drained: what still waits (requests, reply
/// handlers, online waits) gives up then.
#[derive(Clone)]
pub(crate) struct Closed(pub(crate) watch::Receiver<bool>);

impl Closed {
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|c| *c).await;
    }
}

/// A service's connection and dispatch (the core's `Engine`).
#[napi]
pub struct NativeEngine {
    engine: Arc<Engine>,
    closed_tx: Arc<watch::Sender<bool>>,
}

impl NativeEngine {
    fn closed(&self) -> Closed {
        Closed(self.closed_tx.subscribe())
    }
}

/// Sends as `client`, carrying `auth`; returns the new activity id.
pub(crate) fn send_new(
    client: &Client,
    name: &str,
    payload: Option<&str>,
    auth: Option<Box<serde_json::value::RawValue>>,
) -> napi::Result<String> {
    let activity = message::new_id();
    let msg = Message {
        payload: raw_part(name, "payload", payload)?,
        auth,
        activity_id: Some(activity.clone()),
        ..Message::new(name)
    };
    client.send_message(msg).map_err(js_error)?;
    Ok(activity)
}

#[napi]
impl NativeEngine {
    /// Reads the config (see [`EngineOptions`]) and makes the engine; it
    /// connects on `connect()`.
    #[napi(constructor, catch_unwind)]
    pub fn new(options: Option<EngineOptions>) -> napi::Result<Self> {
        exoservice::logging::init();
        let config = build_config(options.unwrap_or_default())?;
        let runtime = crate::runtime()?;
        let engine = Engine::with_runtime(config, runtime.handle().clone());
        Ok(NativeEngine {
            engine: Arc::new(engine),
            closed_tx: Arc::new(watch::channel(false).0),
        })
    }

    /// The role the service registers as.
    #[napi(getter, catch_unwind)]
    pub fn role(&self) -> String {
        self.engine.config().role.clone()
    }

    /// Where ExoCom runs.
    #[napi(getter, catch_unwind)]
    pub fn exocom_host(&self) -> String {
        self.engine.config().exocom_host.clone()
    }

    /// ExoCom's port.
    #[napi(getter, catch_unwind)]
    pub fn exocom_port(&self) -> u32 {
        u32::from(self.engine.config().exocom_port)
    }

    /// Message names received.
    #[napi(getter, catch_unwind)]
    pub fn receives(&self) -> Vec<String> {
        self.engine.config().receives.clone()
    }

    /// Message names sent.
    #[napi(getter, catch_unwind)]
    pub fn sends(&self) -> Vec<String> {
        self.engine.config().sends.clone()
    }

    /// The config file that was read (or where the config came from).
    #[napi(getter, catch_unwind)]
    pub fn config_file(&self) -> String {
        self.engine.config().file.display().to_string()
    }

    /// The service's directory.
    #[napi(getter, catch_unwind)]
    pub fn service_dir(&self) -> String {
        self.engine.config().dir.display().to_string()
    }

    /// Limit of handlers in flight.
    #[napi(getter, catch_unwind)]
    pub fn concurrency(&self) -> u32 {
        count(self.engine.config().concurrency)
    }

    /// Declares a handler for `name` (must be under `receives`, once).
    #[napi(catch_unwind)]
    pub fn handle(&self, name: String) -> napi::Result<()> {
        self.engine.handle(&name).map_err(js_error)
    }

    /// Whether to print `online at port N` once registered (default yes).
    #[napi(catch_unwind)]
    pub fn announce_online(&self, announce: bool) {
        self.engine.announce_online(announce);
    }

    /// Connects and registers in the background (reconnecting forever).
    #[napi(catch_unwind)]
    pub fn connect(&self) -> napi::Result<()> {
        if *self.closed_tx.borrow() {
            return Err(js_error(ExoError::Stopped));
        }
        self.engine.connect().map_err(js_error)
    }

    /// Whether the connection to the bus is up.
    #[napi(catch_unwind)]
    pub fn is_connected(&self) -> bool {
        self.engine.is_connected()
    }

    /// Whether `stop()` was called.
    #[napi(catch_unwind)]
    pub fn is_stopping(&self) -> bool {
        self.engine.is_stopping()
    }

    /// Resolves `true` once registered, `false` after `timeoutMs` or when
    /// the service is closed first.
    #[napi(catch_unwind)]
    pub fn wait_online<'env>(&self, env: &'env Env, timeout_ms: f64) -> napi::Result<Object<'env>> {
        let timeout = millis("timeoutMs", timeout_ms)?;
        let engine = self.engine.clone();
        let closed = self.closed();
        settle::promise(env, async move {
            tokio::select! {
                online = engine.wait_online(timeout) => Ok(online),
                () = closed.wait() => Ok(false),
            }
        })
    }

    /// The next deliveries: waits for one, then takes up to `max` that are
    /// already queued. Resolves with an empty array once stopping.
    #[napi(catch_unwind)]
    pub fn next_batch<'env>(&self, env: &'env Env, max: u32) -> napi::Result<Object<'env>> {
        let engine = self.engine.clone();
        let closed = self.closed();
        let max = max.clamp(1, 4096) as usize;
        settle::promise(env, async move {
            let mut batch = Vec::new();
            let first = tokio::select! {
                d = engine.next() => d,
                () = closed.clone().wait() => None,
            };
            let Some(first) = first else {
                return Ok(batch);
            };
            batch.push(NativeDelivery::new(first, closed.clone()));
            while batch.len() < max {
                // `next` is cancel-safe: an unfinished poll takes nothing.
                match engine.next().now_or_never() {
                    Some(Some(d)) => batch.push(NativeDelivery::new(d, closed.clone())),
                    _ => break,
                }
            }
            Ok(batch)
        })
    }

    /// Sends `name` (declared under `sends`) in a new activity; returns
    /// the activity id.
    #[napi(catch_unwind)]
    pub fn send(&self, name: String, payload: Option<String>) -> napi::Result<String> {
        send_new(&self.engine.client(), &name, payload.as_deref(), None)
    }

    /// Sends `name` (carrying `auth`, JSON text, when given) and resolves
    /// with the first message of its activity (as JSON text), or rejects
    /// with `EXO_TIMEOUT`.
    #[napi(catch_unwind)]
    pub fn request<'env>(
        &self,
        env: &'env Env,
        name: String,
        payload: Option<String>,
        timeout_ms: f64,
        auth: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let timeout = millis("timeout", timeout_ms)?;
        let payload = raw_part(&name, "payload", payload.as_deref())?;
        let auth = raw_part(&name, "auth", auth.as_deref())?;
        let pending = self
            .engine
            .client()
            .start_request(&name, payload, auth, timeout)
            .map_err(js_error)?;
        request_message(env, pending, self.closed())
    }

    /// Sends `name` in a new activity and watches it: every message of the
    /// activity goes to the returned watch (not to the handlers).
    #[napi(catch_unwind)]
    pub fn send_watched(
        &self,
        name: String,
        payload: Option<String>,
        capacity: u32,
    ) -> napi::Result<NativeWatch> {
        let payload = raw_part(&name, "payload", payload.as_deref())?;
        let watch = self
            .engine
            .client()
            .send_watched(&name, payload, None, capacity as usize)
            .map_err(js_error)?;
        Ok(NativeWatch::new(watch, self.closed()))
    }

    /// Stops taking new messages (`nextBatch` resolves empty from now on).
    #[napi(catch_unwind)]
    pub fn stop(&self) {
        self.engine.stop();
    }

    /// Stops, lets running handlers finish (within the drain deadline),
    /// sends what waits and leaves the bus. Then everything still waiting
    /// (requests, reply handlers) gives up.
    #[napi(catch_unwind)]
    pub fn drain<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let engine = self.engine.clone();
        let closed = self.closed_tx.clone();
        settle::promise(env, async move {
            let report = engine.drain().await;
            closed.send_replace(true);
            Ok(DrainReport {
                unfinished_handlers: count(report.unfinished_handlers),
                unsent_messages: count(report.unsent_messages),
                unhandled_messages: count(report.unhandled_messages),
            })
        })
    }
}

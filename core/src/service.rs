//! The Rust-native API: a [`Service`] is a config plus async handler
//! functions, one per incoming message name.
//!
//! ```no_run
//! use exoservice::{Ctx, Service};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Add { owner: String, text: String }
//!
//! # async fn f() -> Result<(), exoservice::ExoError> {
//! Service::from_env()?
//!     .before_all(|_client| async { Ok::<_, exoservice::ExoError>(()) })
//!     .on("ping", |payload: serde_json::Value, ctx: Ctx| async move { ctx.reply("pong", &payload) })
//!     .on("todo.add", |add: Add, ctx: Ctx| async move {
//!         ctx.reply("todo.added", &serde_json::json!({ "owner": add.owner, "text": add.text }))
//!     })
//!     .run()
//!     .await
//! # }
//! ```
//!
//! Handlers run as tokio tasks, at most `concurrency` at once. A handler
//! that returns an error or panics is logged and the service goes on.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use crate::config::ServiceConfig;
use crate::dispatch::{Client, Ctx, DrainReport, Engine};
use crate::error::{ExoError, Result};

/// The error type handlers and hooks may return.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type HandlerFn = Arc<dyn Fn(Ctx) -> BoxFuture<std::result::Result<(), HandlerError>> + Send + Sync>;
type HookFn = Box<dyn FnOnce(Client) -> BoxFuture<std::result::Result<(), HandlerError>> + Send>;

/// A service under construction: its config, handlers and before-all hook.
pub struct Service {
    config: ServiceConfig,
    handlers: HashMap<String, HandlerFn>,
    before_all: Option<HookFn>,
    errors: Vec<ExoError>,
}

impl Service {
    /// A service configured by `./service.yml` (or `./config.yml`) and the
    /// environment (`ROLE`, `EXOCOM_HOST`, `EXOCOM_PORT`, ...).
    pub fn from_env() -> Result<Service> {
        Service::from_dir(Path::new("."))
    }

    /// A service configured by the config file in `dir` and the environment.
    pub fn from_dir(dir: &Path) -> Result<Service> {
        Ok(Service::new(ServiceConfig::load(dir)?))
    }

    /// A service with a config built or loaded by the caller.
    pub fn new(config: ServiceConfig) -> Service {
        Service {
            config,
            handlers: HashMap::new(),
            before_all: None,
            errors: Vec::new(),
        }
    }

    /// The service's configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Runs `hook` once before the service registers with the bus; it may
    /// send (the messages go out right after registering). An error stops
    /// the start.
    pub fn before_all<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        self.before_all = Some(Box::new(move |client| {
            Box::pin(hook(client).map(|r| r.map_err(Into::into)))
        }));
        self
    }

    /// Handles messages named `name`: the payload is read as `P` (any
    /// `serde` type; `serde_json::Value` takes anything), and `ctx` replies,
    /// sends and requests. A name not under `receives` in the config is an
    /// error when the service starts. A payload that does not read as `P`
    /// is logged as a handler error.
    pub fn on<P, F, Fut, E>(mut self, name: &str, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let handler = Arc::new(handler);
        let message_name = name.to_owned();
        let erased: HandlerFn = Arc::new(move |ctx: Ctx| {
            let handler = handler.clone();
            let name = message_name.clone();
            Box::pin(async move {
                let payload: P = ctx.message().payload_as().map_err(|e| -> HandlerError {
                    format!("the payload of '{name}' does not have the expected shape: {e}").into()
                })?;
                handler(payload, ctx).await.map_err(Into::into)
            })
        });
        if self.handlers.insert(name.to_owned(), erased).is_some() {
            self.errors
                .push(ExoError::DuplicateHandler(name.to_owned()));
        }
        self
    }

    /// Starts the service and runs it until SIGINT or SIGTERM, then drains
    /// (stops taking messages, lets running handlers finish within the
    /// drain deadline, sends what waits) and returns.
    pub async fn run(self) -> Result<()> {
        crate::logging::init();
        // Listen before connecting, so that a signal right after
        // `online at port N` still drains instead of killing the process.
        let stop = crate::signals::stop_signal();
        let running = self.start().await?;
        let stopper = running.stopper();
        tokio::select! {
            _ = stop => {
                tracing::info!("stopping: finishing running handlers");
                stopper.stop();
            }
            _ = running.stopped() => {}
        }
        running.wait().await;
        Ok(())
    }

    /// Starts the service in the background: runs the before-all hook,
    /// connects and registers, and dispatches messages to the handlers.
    /// Returns once the hook has run; registration goes on in the background
    /// (see [`RunningService::wait_online`]).
    pub async fn start(mut self) -> Result<RunningService> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        let engine = Arc::new(Engine::new(self.config));
        let mut names: Vec<_> = self.handlers.keys().cloned().collect();
        names.sort();
        for name in &names {
            engine.handle(name)?;
        }
        if let Some(hook) = self.before_all.take() {
            hook(engine.client())
                .await
                .map_err(|e| ExoError::Usage(format!("the before-all hook failed: {e}")))?;
        }
        engine.connect()?;
        let handlers = Arc::new(self.handlers);
        let dispatcher = tokio::spawn(dispatch_loop(engine.clone(), handlers));
        Ok(RunningService { engine, dispatcher })
    }
}

async fn dispatch_loop(engine: Arc<Engine>, handlers: Arc<HashMap<String, HandlerFn>>) {
    while let Some(delivery) = engine.next().await {
        let Some(handler) = handlers.get(&delivery.message().name).cloned() else {
            continue; // the engine only delivers handled names
        };
        tokio::spawn(async move {
            let ctx = delivery.ctx().clone();
            let name = &delivery.message().name;
            match AssertUnwindSafe(handler(ctx)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    delivery.fail();
                    tracing::error!(
                        "handler for '{name}' (activity {}) failed: {e}",
                        delivery.message().activity()
                    );
                }
                Err(panic) => {
                    delivery.fail();
                    tracing::error!(
                        "handler for '{name}' (activity {}) panicked: {}",
                        delivery.message().activity(),
                        panic_text(&*panic)
                    );
                }
            }
            drop(delivery);
        });
    }
}

pub(crate) use crate::error::panic_text;

/// A started service.
pub struct RunningService {
    engine: Arc<Engine>,
    dispatcher: tokio::task::JoinHandle<()>,
}

/// Stops a running service from anywhere (cheap to clone).
#[derive(Clone)]
pub struct Stopper {
    engine: Arc<Engine>,
}

impl Stopper {
    /// Stops taking new messages; the service then drains and leaves.
    pub fn stop(&self) {
        self.engine.stop();
    }
}

impl RunningService {
    /// Sends and requests as this service.
    pub fn client(&self) -> Client {
        self.engine.client()
    }

    /// A handle that stops the service.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            engine: self.engine.clone(),
        }
    }

    /// Waits until the service has registered with the bus.
    pub async fn wait_online(&self, timeout: Duration) -> bool {
        self.engine.wait_online(timeout).await
    }

    /// Whether the connection to the bus is up.
    pub fn is_connected(&self) -> bool {
        self.engine.is_connected()
    }

    /// Where the service serves `/metrics` and `/healthz`
    /// (`EXOSERVICE_METRICS_PORT`), if it does.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.engine.metrics_addr()
    }

    /// Resolves once the service was told to stop.
    pub async fn stopped(&self) {
        self.engine.stopped().await;
    }

    /// Stops taking new messages, lets running handlers finish (within the
    /// drain deadline), sends what waits, and leaves the bus.
    pub async fn shutdown(self) -> DrainReport {
        self.engine.stop();
        self.wait().await
    }

    /// Waits until the service is stopped (by [`Stopper::stop`]) and drained.
    pub async fn wait(self) -> DrainReport {
        let _ = self.dispatcher.await;
        self.engine.drain().await
    }
}

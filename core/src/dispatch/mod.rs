//! Dispatch: the handler table, the pull model every binding uses, the
//! concurrency limit, requests by activity, and the drain.
//!
//! An [`Engine`] owns a service's connection. Incoming messages that a
//! handler must see are queued; the host (a Rust task, Python's main thread
//! or asyncio loop, Node's event loop, the C thread in `exo_service_run`)
//! pulls them with [`Engine::next`] or [`Engine::next_blocking`], runs its
//! handler and answers through the [`Ctx`] it got. At most `concurrency`
//! deliveries are out at once; a delivery counts until it is dropped.
//!
//! Settled without any host code: answers to requests (the first message
//! of a request's activity goes to its waiter, not to a handler; the
//! messages of a watched activity go to its [`ActivityWatch`]), the bus's
//! `__status` probe (answered with `__status-ok`), messages with no handler
//! (logged and dropped).

mod client;
mod metrics;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use client::Shared;
pub use client::{ActivityWatch, Client, Ctx, PendingRequest};
use metrics::{MetricsServer, Probe, ServiceMetrics};

use crate::config::ServiceConfig;
use crate::error::{ExoError, Result};
use crate::message::{self, Message};
use crate::relay::{Inbound, Outbox, Take};
use crate::transport::Link;

/// How a handler's work on a delivery ended, told to the transport that
/// delivered it (at-least-once transports acknowledge or redeliver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned normally.
    Done,
    /// The handler failed ([`Delivery::fail`]).
    Failed,
    /// No handler took it: the service stopped first.
    NotHandled,
}

/// What a transport does when a delivery it handed out is settled. Called
/// once, from the thread that drops the delivery (any thread; it must not
/// block).
pub trait Settle: Send + 'static {
    /// The delivery ended this way.
    fn settle(self: Box<Self>, outcome: Outcome);
}

/// A message queued for a handler, with what settles it.
pub struct Queued {
    /// The message.
    pub msg: Message,
    /// Told how the handler's work ended (at-least-once transports).
    pub settle: Option<Box<dyn Settle>>,
    /// Which attempt this is (1 for the first delivery).
    pub attempt: u32,
}

impl Queued {
    /// A message that needs no settling (ExoCom, at-most-once).
    pub fn plain(msg: Message) -> Queued {
        Queued {
            msg,
            settle: None,
            attempt: 1,
        }
    }
}

/// One incoming message for a handler, with the powers to answer it. It
/// holds one of the service's concurrency slots until it is dropped; then
/// it counts as handled in the service's metrics (with the time since it
/// was handed out as the handler's latency).
pub struct Delivery {
    ctx: Ctx,
    _slot: OwnedSemaphorePermit,
    metrics: Arc<ServiceMetrics>,
    metric_slot: usize,
    start: Instant,
    failed: AtomicBool,
    settle: Option<Box<dyn Settle>>,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let failed = *self.failed.get_mut();
        self.metrics.finished(self.metric_slot, self.start, failed);
        if let Some(settle) = self.settle.take() {
            settle.settle(if failed {
                Outcome::Failed
            } else {
                Outcome::Done
            });
        }
    }
}

impl Delivery {
    /// Marks the handler as failed: the delivery counts as a handler error
    /// in the service's metrics (`exoservice_handler_errors_total`) when it
    /// is dropped. Hosts call it when a handler throws, rejects or returns
    /// an error; calling it again changes nothing.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// The message to handle.
    pub fn message(&self) -> &Message {
        self.ctx.message()
    }

    /// The handler's powers (reply, send, request).
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Which attempt at this message this is: 1 for the first delivery, more
    /// when an at-least-once message comes again (after a failed handler or
    /// an instance that died). Always 1 on ExoCom.
    pub fn attempt(&self) -> u32 {
        self.ctx.delivery_attempt()
    }
}

/// What [`Engine::next_blocking`] found.
pub enum Next {
    /// A message to handle.
    Delivery(Delivery),
    /// Nothing arrived within the timeout (check signals, then call again).
    Timeout,
    /// The service is stopping: no more deliveries.
    Stopped,
}

/// What the drain achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Handlers still running when the deadline passed.
    pub unfinished_handlers: usize,
    /// Outgoing messages that could not be written before leaving.
    pub unsent_messages: usize,
    /// Queued messages that no handler took because the service stopped.
    pub unhandled_messages: usize,
}

/// The incoming side: what the relay hands messages to.
struct Incoming {
    shared: Arc<Shared>,
    metrics: Arc<ServiceMetrics>,
    handled: RwLock<HashSet<String>>,
    stopping: AtomicBool,
    announce: AtomicBool,
}

impl Incoming {
    fn answer_status(&self) {
        if let Err(e) = self.shared.push(Message::new(message::STATUS_OK)) {
            tracing::warn!("cannot answer the bus's status probe: {e}");
        }
    }
}

impl Inbound for Incoming {
    fn take(&self, msg: Message) -> Take {
        if msg.name == message::STATUS {
            self.answer_status();
            return Take::Settled;
        }
        let msg = match msg
            .activity_id
            .as_deref()
            .and_then(|a| self.shared.waiters().remove(a))
        {
            // A waiter that gave up in the same instant hands the message back.
            Some(waiter) => match waiter.send(msg) {
                Ok(()) => return Take::Settled,
                Err(msg) => msg,
            },
            None => msg,
        };
        let Some(msg) = self.shared.offer_to_watcher(msg) else {
            return Take::Settled;
        };
        let handled = self
            .handled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&msg.name);
        if !handled {
            self.metrics.unhandled();
            tracing::warn!(
                "received '{}' (activity {}) but no handler is registered for it; dropped",
                msg.name,
                msg.activity()
            );
            return Take::Dropped;
        }
        if self.stopping.load(Ordering::Acquire) {
            self.metrics.unhandled();
            tracing::warn!(
                "not handled: '{}' (activity {}) arrived while the service is stopping",
                msg.name,
                msg.activity()
            );
            return Take::Stopping;
        }
        Take::Handle(msg)
    }

    fn registered(&self, first: bool) {
        let config = &self.shared.config;
        if first && self.announce.load(Ordering::Acquire) {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "online at port {}", crate::transport::port_of(config));
            let _ = out.flush();
        } else if !first {
            tracing::info!(
                "registered again with {} as '{}'",
                crate::transport::name_of(config),
                config.role
            );
        }
    }

    fn dead_lettered(&self, name: &str) {
        self.metrics.dead_lettered(self.metrics.slot(name));
    }
}

/// A service's connection and dispatch, driven by a host that pulls
/// deliveries. See the module docs.
pub struct Engine {
    incoming: Arc<Incoming>,
    client: Client,
    slots: Arc<Semaphore>,
    queue_tx: Mutex<Option<mpsc::Sender<Queued>>>,
    queue_rx: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    relay: Arc<Mutex<Option<Link>>>,
    stop_tx: watch::Sender<bool>,
    metrics: Arc<ServiceMetrics>,
    metrics_server: Mutex<Option<MetricsServer>>,
}

impl Engine {
    /// An engine on the current tokio runtime (panics outside of one, like
    /// `tokio::spawn`; use [`Engine::with_runtime`] from other threads).
    pub fn new(config: ServiceConfig) -> Engine {
        Engine::with_runtime(config, tokio::runtime::Handle::current())
    }

    /// An engine whose I/O runs on the given runtime.
    pub fn with_runtime(config: ServiceConfig, runtime: tokio::runtime::Handle) -> Engine {
        let concurrency = config.concurrency.max(1);
        let metrics = Arc::new(ServiceMetrics::new(&config.receives));
        let outbox = Arc::new(Outbox::new(config.outgoing_buffer));
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            outbox,
            waiters: Mutex::default(),
            watchers: Mutex::default(),
            runtime,
        });
        let (queue_tx, queue_rx) = mpsc::channel((concurrency * 4).max(1024));
        Engine {
            incoming: Arc::new(Incoming {
                shared: shared.clone(),
                metrics: metrics.clone(),
                handled: RwLock::default(),
                stopping: AtomicBool::new(false),
                announce: AtomicBool::new(true),
            }),
            client: Client { shared },
            slots: Arc::new(Semaphore::new(concurrency)),
            queue_tx: Mutex::new(Some(queue_tx)),
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            relay: Arc::new(Mutex::new(None)),
            stop_tx: watch::channel(false).0,
            metrics,
            metrics_server: Mutex::new(None),
        }
    }

    /// The service's configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.client.shared.config
    }

    /// Sends and requests as this service.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Whether to print `online at port N` on stdout once registered (the
    /// default, which tools like `exo run` wait for). Tools that speak on
    /// stdout themselves turn it off.
    pub fn announce_online(&self, announce: bool) {
        self.incoming.announce.store(announce, Ordering::Release);
    }

    /// Declares that the host handles `name`. A name that is not under
    /// `receives` in the config, or one declared twice, is an error.
    pub fn handle(&self, name: &str) -> Result<()> {
        let config = self.config();
        if !config.receives.iter().any(|r| r == name) {
            return Err(ExoError::NotReceived {
                name: name.to_owned(),
                role: config.role.clone(),
                file: config.file.display().to_string(),
            });
        }
        let mut handled = self
            .incoming
            .handled
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !handled.insert(name.to_owned()) {
            return Err(ExoError::DuplicateHandler(name.to_owned()));
        }
        Ok(())
    }

    /// Connects to ExoCom and registers (in the background; reconnects
    /// forever). Run the before-all hook before this. Calling it again does
    /// nothing.
    pub fn connect(&self) -> Result<()> {
        let Some(queue_tx) = self
            .queue_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        let config = self.config();
        if let Some(port) = config.metrics_port {
            let incoming = self.incoming.clone();
            let probe = Probe {
                outbox: self.client.shared.outbox.clone(),
                relay: self.relay.clone(),
                stopping: Arc::new(move || incoming.stopping.load(Ordering::Acquire)),
            };
            let server = MetricsServer::start(
                SocketAddr::new(config.metrics_bind, port),
                self.metrics.clone(),
                probe,
                &self.client.shared.runtime,
            )?;
            *self
                .metrics_server
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(server);
        }
        let shared = &self.client.shared;
        let _guard = shared.runtime.enter();
        let link = Link::start(
            config,
            shared.outbox.clone(),
            self.incoming.clone(),
            queue_tx,
            self.stop_tx.subscribe(),
        )?;
        *self.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
        Ok(())
    }

    /// Where `/metrics` and `/healthz` are served (when the config sets
    /// `metrics_port`, once [`Engine::connect`] ran, until the drain ends).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(MetricsServer::addr)
    }

    /// Whether the connection to the bus is up.
    pub fn is_connected(&self) -> bool {
        self.relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(Link::is_connected)
    }

    /// Waits until the service has registered with the bus (at least once).
    pub async fn wait_online(&self, timeout: Duration) -> bool {
        let mut rx = {
            let relay = self.relay.lock().unwrap_or_else(|p| p.into_inner());
            let Some(relay) = relay.as_ref() else {
                return false;
            };
            if relay.registrations() > 0 {
                return true;
            }
            relay.registered_rx()
        };
        tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The next message to handle; `None` once the service is stopping.
    /// Waits while all concurrency slots are taken.
    pub async fn next(&self) -> Option<Delivery> {
        let mut stop = self.stop_tx.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let slot = tokio::select! {
            biased;
            _ = &mut stopped => return None,
            slot = self.slots.clone().acquire_owned() => slot.ok()?,
        };
        let mut queue = tokio::select! {
            biased;
            _ = &mut stopped => return None,
            q = self.queue_rx.lock() => q,
        };
        let queued = tokio::select! {
            biased;
            _ = &mut stopped => return None,
            queued = queue.recv() => queued?,
        };
        self.metrics.started();
        let metric_slot = self.metrics.slot(&queued.msg.name);
        if queued.attempt > 1 {
            self.metrics.redelivered(metric_slot);
        }
        Some(Delivery {
            metric_slot,
            ctx: Ctx::new(self.client.clone(), queued.msg, queued.attempt),
            _slot: slot,
            metrics: self.metrics.clone(),
            start: Instant::now(),
            failed: AtomicBool::new(false),
            settle: queued.settle,
        })
    }

    /// [`Engine::next`] for a host thread outside the runtime, waiting at
    /// most `timeout` (so the host can check for signals between calls).
    pub fn next_blocking(&self, timeout: Duration) -> Next {
        if tokio::runtime::Handle::try_current().is_ok() {
            tracing::error!(
                "next_blocking was called on a tokio runtime thread; use next().await there"
            );
            return Next::Stopped;
        }
        let runtime = self.client.shared.runtime.clone();
        // The timer must be created inside the runtime's context.
        match runtime.block_on(async { tokio::time::timeout(timeout, self.next()).await }) {
            Ok(Some(d)) => Next::Delivery(d),
            Ok(None) => Next::Stopped,
            Err(_) => Next::Timeout,
        }
    }

    /// Whether [`Engine::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }

    /// Resolves once [`Engine::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.stop_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Stops taking new messages: [`Engine::next`] returns `None` from now
    /// on. Running handlers go on; [`Engine::drain`] waits for them.
    /// Callable from any thread.
    pub fn stop(&self) {
        self.incoming.stopping.store(true, Ordering::Release);
        self.stop_tx.send_replace(true);
    }

    /// Stops (if not yet), lets running handlers finish within the drain
    /// deadline, writes what waits to be sent, and leaves the bus.
    pub async fn drain(&self) -> DrainReport {
        self.stop();
        let config = self.config();
        let deadline = tokio::time::Instant::now() + config.drain_timeout;
        let mut report = DrainReport::default();
        {
            let mut queue = self.queue_rx.lock().await;
            while let Ok(queued) = queue.try_recv() {
                tracing::warn!(
                    "not handled: '{}' (activity {}) was waiting when the service stopped",
                    queued.msg.name,
                    queued.msg.activity()
                );
                if let Some(settle) = queued.settle {
                    settle.settle(Outcome::NotHandled);
                }
                report.unhandled_messages += 1;
            }
        }
        let all = u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout_at(deadline, self.slots.acquire_many(all))
            .await
            .is_err()
        {
            report.unfinished_handlers = config.concurrency.max(1) - self.slots.available_permits();
            tracing::warn!(
                "{} handlers still running after the drain deadline of {:?}; leaving without them",
                report.unfinished_handlers,
                config.drain_timeout
            );
        }
        let relay = self.relay.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(relay) = relay {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            report.unsent_messages = relay.close(left.max(Duration::from_millis(100))).await;
            if report.unsent_messages > 0 {
                tracing::warn!(
                    "{} messages could not be sent to {} before leaving",
                    report.unsent_messages,
                    crate::transport::name_of(config)
                );
            }
        } else {
            self.client.shared.outbox.close();
        }
        let metrics_server = self
            .metrics_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        report
    }
}

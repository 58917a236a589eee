//! An ExoCom-compatible message bus, embeddable in tests and tools and run
//! as the `exocom` binary.
//!
//! ```no_run
//! use exoservice::bus::{Bus, BusConfig};
//! use exoservice::routes::Routes;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let routes = Routes::from_json(r#"{"web":{"sends":["ping"]},"ping":{"receives":["ping"]}}"#)?;
//! let bus = Bus::start(BusConfig::new(routes).with_port(3100)).await?;
//! println!("ExoCom online at port {}", bus.port());
//! // ... services connect to ws://127.0.0.1:3100/services ...
//! bus.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! It speaks the wire protocol of `PROTOCOL.md` exactly: services connect to
//! `/services`, register with `exocom.register-service`, and the bus routes
//! every message by the routes (`SERVICE_DATA`): the sender's `sends`
//! whitelist, translation of the sender's internal name to the public one,
//! one copy per receiving role under that role's internal name, one instance
//! per role, activity stickiness for 60 s, `timestamp` and `responseTime`
//! stamps, the security adapter, the log line per routed copy. `GET
//! /config.json` lists the connected clients and the routes; `GET /metrics`
//! gives the bus's counters in the Prometheus text format and `GET
//! /healthz` answers `ok` (503 once stopping), see `docs/metrics.md`; any
//! other request gets HTTP 400.
//!
//! # Where it differs from the deployed Go ExoCom (0.27), on purpose
//!
//! - It routes by the role a connection registered as. Frames from a
//!   connection that has not registered, and frames whose `sender` names
//!   another role, are refused with a logged warning.
//! - It survives close frames, TCP drops and garbage; it never sends a close
//!   frame first (it only answers a client's close frame).
//! - Every connected subscriber gets its copy, even when another subscribed
//!   role has no instance. Registering a connection again under another role
//!   moves it (no ghost instance).
//! - It passes `sender`, `auth` and `isSecurity` through.
//! - `clients` in `/config.json` is `[]` when nobody is connected.
//! - Its memory is bounded: the activity table has an expiry (60 s) and a
//!   hard cap ([`BusConfig::activity_cap`], the oldest activities go first),
//!   messages held for authorization and for late roles are capped, and each
//!   connection's outgoing queue is bounded (a copy for a full queue is
//!   dropped with a warning instead of slowing everyone else down).
//! - **Startup grace.** During [`BusConfig::startup_grace`] after the bus
//!   starts (default 5 s; 0 disables it), a copy for a role that is in the
//!   routes and receives the message but has no instance connected is held
//!   (at most [`BusConfig::held_per_role`] per role, the oldest dropped with a
//!   warning) and delivered, in order, as soon as the first instance of that
//!   role registers. Copies still held when the grace period ends are dropped
//!   with a warning that says how many. So a bus restart loses nothing while
//!   the services reconnect one by one.
//!
//! # Who may connect, TLS, limits
//!
//! - **Tokens.** With [`BusConfig::tokens`] set (a [`Tokens`] table, role →
//!   token), an upgrade must show a role's token (`Authorization: Bearer`,
//!   `X-Exocom-Token` or `?token=`), else it gets HTTP 401, logged with the
//!   peer's address; the connection may then register only as the role(s)
//!   whose token it showed (registering as another closes it). Without
//!   tokens the bus is open, as the deployed ExoCom, and says so in one
//!   warning line at the start. Tokens are compared in constant time.
//! - **TLS.** With [`BusConfig::tls`] (PEM certificate chain and key) the
//!   bus serves `wss://` and `https://` only (rustls, `ring`).
//! - **Limits.** A frame larger than [`BusConfig::max_message_size`]
//!   (default 4 MiB) closes its connection with a log line naming it; the
//!   others go on. Past [`BusConfig::max_connections`] (default 10,000)
//!   open WebSockets, an upgrade gets HTTP 503. Each refusal is logged once
//!   and counted in [`LimitCounters`] ([`BusHandle::limits`]).
//!
//! # How it is built
//!
//! One task per connection reads frames, routes each one at once, and writes
//! what other connections queued for it (feeding frames and flushing once
//! when its queue is momentarily empty, so frames are batched under load).
//! The routing state (instances, activities, held messages) sits behind one
//! mutex held only for table look-ups; parsing, serializing each copy (once)
//! and logging happen outside it. Payloads are never re-encoded.
//!
//! Modules: `http` (the request head, the WebSocket handshake, plain
//! responses) and `server` (listener, TLS handshake, the door: tokens and
//! the connection limit, connection tracking, shutdown), both shared with
//! the mock bus of [`crate::testing`]; [`tokens`] (the token table and
//! what an upgrade shows); [`tls`] (rustls settings of the bus and of a
//! service); `limits` (the door's counters); `connection` (the loop of
//! one connection and its outgoing queue); `peer` (what the bus does with a
//! service's frames: registration, refusals); `shared` (routing one
//! message, `/config.json`, housekeeping); `router` (the state behind the
//! mutex: instances, stickiness, grace holds); `table` (the compiled
//! routes); `activity` (the activity table); `security` (the security
//! adapter); `wire` (reading and writing frames, timestamps); `log` (log
//! lines and sinks).

pub(crate) mod activity;
mod config;
pub(crate) mod connection;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod http;
mod limits;
mod log;
pub(crate) mod metrics;
mod peer;
mod router;
mod security;
pub(crate) mod server;
mod shared;
mod table;
pub mod tls;
pub mod tokens;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::broadcast;

pub use config::BusConfig;
pub use config::QueuePolicy;
pub use config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME};
pub use limits::{LimitCounters, LimitSnapshot};
pub use log::LogSink;
pub use tls::{TlsError, TlsFiles};
pub use tokens::Tokens;
pub use wire::rfc3339_nanos;

use server::{Door, Server};
use shared::Shared;

/// Why a bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Another process (or bus) listens on the port already.
    #[error("port {port} is already in use")]
    PortInUse {
        /// The port that is taken.
        port: u16,
    },
    /// Listening failed for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address the bus tried.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] TlsError),
}

/// The ExoCom-compatible bus. Start one with [`Bus::start`].
#[derive(Debug)]
pub struct Bus;

impl Bus {
    /// Binds `config.bind` and starts serving on the current tokio runtime.
    /// The bus runs until [`BusHandle::shutdown`] or until the handle is
    /// dropped.
    pub async fn start(config: BusConfig) -> Result<BusHandle, BusError> {
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = server::bind(config.bind).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                BusError::PortInUse {
                    port: config.bind.port(),
                }
            } else {
                BusError::Listen {
                    addr: config.bind,
                    source: e,
                }
            }
        })?;
        let local_addr = listener.local_addr().map_err(|e| BusError::Listen {
            addr: config.bind,
            source: e,
        })?;
        let limits = LimitCounters::new();
        let door = Door {
            tls,
            tokens: config.tokens.clone(),
            max_connections: config.max_connections,
            counters: limits.clone(),
        };
        let open = config.tokens.is_empty();
        let shared = Shared::new(config);
        shared.attach_limits(limits.clone());
        if open {
            shared.warn(
                "Warning: No tokens configured: any client may connect and register as any role (see EXOCOM_TOKENS)".to_owned(),
            );
        }
        let server = Server::spawn_with(listener, shared.clone(), door);
        shared::spawn_housekeeping(shared.clone(), server.stop_signal(), server.tracker());
        Ok(BusHandle {
            shared,
            server,
            local_addr,
            limits,
        })
    }
}

/// A running bus. Dropping it stops the bus (like [`BusHandle::shutdown`],
/// without waiting).
pub struct BusHandle {
    shared: Arc<Shared>,
    server: Server,
    local_addr: SocketAddr,
    limits: Arc<LimitCounters>,
}

impl std::fmt::Debug for BusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl BusHandle {
    /// The port the bus listens on (the real one when the config said 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The address the bus listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of the door: open connections, refused upgrades and
    /// registrations, connections closed for oversized frames, failed TLS
    /// handshakes.
    pub fn limits(&self) -> &Arc<LimitCounters> {
        &self.limits
    }

    /// Every log line the bus writes from now on (warnings, route lines,
    /// registrations), whatever its [`LogSink`]. A receiver that falls more
    /// than 4,096 lines behind loses the oldest ones (`RecvError::Lagged`).
    pub fn subscribe_logs(&self) -> broadcast::Receiver<String> {
        self.shared.log.subscribe()
    }

    /// What `GET /metrics` answers right now (Prometheus text format
    /// 0.0.4; see `docs/metrics.md`).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }

    /// Makes `GET /healthz` answer 503 from now on (the bus goes on
    /// serving), so that probes take it out of rotation before
    /// [`BusHandle::shutdown`]; the shutdown does this too.
    pub fn mark_stopping(&self) {
        self.shared.mark_stopping();
    }

    /// What `GET /config.json` answers right now.
    pub fn config_json(&self) -> String {
        self.shared.config_json()
    }

    /// The connected roles and their instance counts, sorted by role.
    pub fn clients(&self) -> Vec<(String, usize)> {
        self.shared.clients()
    }

    /// How many activities the bus remembers right now (for stickiness and
    /// `responseTime`); never more than [`BusConfig::activity_cap`].
    pub fn activity_count(&self) -> usize {
        self.shared.activity_count()
    }

    /// Stops the bus like a killed process: the listener closes, every
    /// connection is dropped without a WebSocket close frame, held messages
    /// are forgotten. Returns once the port is free again (so a new bus can
    /// start on it) and the log is written out.
    pub async fn shutdown(self) {
        self.shared.mark_stopping();
        self.server.shutdown().await;
        self.shared.log.flush().await;
    }
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        self.server.signal_stop();
    }
}

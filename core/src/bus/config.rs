//! The settings of a bus.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::log::LogSink;
use super::tls::TlsFiles;
use super::tokens::Tokens;
use crate::routes::Routes;

/// The default of [`BusConfig::max_message_size`]: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;
/// The default of [`BusConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How a bus runs. [`BusConfig::new`] gives the defaults; the `with_*`
/// methods change one setting each.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Where to listen. Default `127.0.0.1:0` (a free loopback port; the
    /// `exocom` binary uses `0.0.0.0:$PORT`).
    pub bind: SocketAddr,
    /// The routes (`SERVICE_DATA`).
    pub routes: Routes,
    /// Where log lines go. Default: standard output.
    pub log: LogSink,
    /// Whether to log one line per routed copy
    /// (`web  --[ users create ]-[ mongo create ]->  users`). Default on;
    /// turn it off for benchmarks. Warnings are always logged.
    pub log_routes: bool,
    /// How long after the start copies for roles without an instance are
    /// held for them (see the [module docs](super)). Default 5 s; zero
    /// disables holding.
    pub startup_grace: Duration,
    /// At most this many copies are held per role during the startup grace
    /// period; the oldest go first. Default 10,000.
    pub held_per_role: usize,
    /// How long an activity sticks to its instances after its last message.
    /// Default 60 s.
    pub activity_ttl: Duration,
    /// At most this many activities are remembered; the oldest are
    /// forgotten first. Default 100,000.
    pub activity_cap: usize,
    /// At most this many messages wait for the security role's verdict (and
    /// as many `security request`s for their answer); the oldest go first.
    /// Default 10,000.
    pub security_held_cap: usize,
    /// Frames queued for one connection at most. What happens to a copy
    /// for a full queue is [`BusConfig::queue_policy`]. Default 8,192.
    pub queue_capacity: usize,
    /// What to do when a connection's outgoing queue is full: drop the
    /// copy (the default) or disconnect the slow connection.
    pub queue_policy: QueuePolicy,
    /// The largest frame (WebSocket message) the bus reads. A connection
    /// that sends a larger one is closed, with a log line naming it; the
    /// others go on. Default 4 MiB ([`DEFAULT_MAX_FRAME`]).
    pub max_message_size: usize,
    /// The most WebSocket connections open at once; the next upgrade gets
    /// HTTP 503 (logged and counted). Default 10,000
    /// ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Who may connect: a token per role (see [`Tokens`]). Empty (the
    /// default): anyone, with one warning line at the start.
    pub tokens: Tokens,
    /// Serve TLS (`wss://`, `https://`) with this certificate and key.
    /// Default: plain.
    pub tls: Option<TlsFiles>,
    /// Roles of tools that come and go (like `exo send`'s `exo`): while
    /// none of their instances is connected, copies for them are skipped
    /// quietly, neither held during the startup grace nor warned about.
    pub optional_roles: Vec<String>,
}

impl BusConfig {
    /// The defaults, with these routes.
    pub fn new(routes: Routes) -> Self {
        BusConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            routes,
            log: LogSink::Stdout,
            log_routes: true,
            startup_grace: Duration::from_secs(5),
            held_per_role: 10_000,
            activity_ttl: Duration::from_secs(60),
            activity_cap: 100_000,
            security_held_cap: 10_000,
            queue_capacity: 8_192,
            queue_policy: QueuePolicy::Drop,
            max_message_size: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tokens: Tokens::new(),
            tls: None,
            optional_roles: Vec::new(),
        }
    }

    /// Marks roles as optional (see [`BusConfig::optional_roles`]).
    pub fn with_optional_roles<S: Into<String>>(
        mut self,
        roles: impl IntoIterator<Item = S>,
    ) -> Self {
        self.optional_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Listens on this address.
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Listens on this port (same IP address as before).
    pub fn with_port(mut self, port: u16) -> Self {
        self.bind.set_port(port);
        self
    }

    /// Sends log lines here.
    pub fn with_log(mut self, log: LogSink) -> Self {
        self.log = log;
        self
    }

    /// Turns the per-copy route lines on or off.
    pub fn with_route_logging(mut self, on: bool) -> Self {
        self.log_routes = on;
        self
    }

    /// Sets the startup grace period (zero disables it).
    pub fn with_startup_grace(mut self, grace: Duration) -> Self {
        self.startup_grace = grace;
        self
    }

    /// Sets how many copies are held per role during the grace period.
    pub fn with_held_per_role(mut self, n: usize) -> Self {
        self.held_per_role = n;
        self
    }

    /// Sets how long an activity is remembered after its last message.
    pub fn with_activity_ttl(mut self, ttl: Duration) -> Self {
        self.activity_ttl = ttl;
        self
    }

    /// Sets the most activities remembered.
    pub fn with_activity_cap(mut self, cap: usize) -> Self {
        self.activity_cap = cap;
        self
    }

    /// Sets the most messages waiting for the security role.
    pub fn with_security_held_cap(mut self, cap: usize) -> Self {
        self.security_held_cap = cap;
        self
    }

    /// Sets the most frames queued per connection.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets what happens to a copy for a full queue.
    pub fn with_queue_policy(mut self, policy: QueuePolicy) -> Self {
        self.queue_policy = policy;
        self
    }

    /// Sets the largest frame (WebSocket message) the bus reads.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the most WebSocket connections open at once.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Requires a token per role (an empty table leaves the bus open).
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Serves TLS with this certificate chain and key (PEM files).
    pub fn with_tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }
}

/// What the bus does with a copy for a connection whose outgoing queue
/// ([`BusConfig::queue_capacity`]) is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Drop the copy (counted in `/metrics`, one warning per connection);
    /// the slow connection stays and gets later copies once it catches up.
    #[default]
    Drop,
    /// Close the slow connection (logged and counted); its service
    /// reconnects and registers again.
    Disconnect,
}

impl std::str::FromStr for QueuePolicy {
    type Err = String;

    /// `drop` or `disconnect` (case-insensitive).
    fn from_str(s: &str) -> Result<QueuePolicy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop" => Ok(QueuePolicy::Drop),
            "disconnect" => Ok(QueuePolicy::Disconnect),
            _ => Err(format!(
                "the queue policy must be 'drop' or 'disconnect', not '{s}'"
            )),
        }
    }
}

impl std::fmt::Display for QueuePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueuePolicy::Drop => "drop",
            QueuePolicy::Disconnect => "disconnect",
        })
    }
}

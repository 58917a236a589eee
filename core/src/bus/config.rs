//! The settings of a bus.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::log::LogSink;
use crate::routes::Routes;

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
    /// Frames queued for one connection at most; a copy for a full queue is
    /// dropped with a warning. Default 8,192.
    pub queue_capacity: usize,
    /// The largest WebSocket message the bus reads. Default 16 MiB.
    pub max_message_size: usize,
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
            max_message_size: 16 << 20,
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

    /// Sets the largest WebSocket message the bus reads.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}

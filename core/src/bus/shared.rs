//! What the connections of one bus share: the compiled routes, the
//! routing state behind its mutex, the log; routing one message (plan
//! under the lock, then serialize, queue and log outside it); the
//! whitelist; `/config.json`; and the periodic housekeeping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::activity::{ActivityKeys, ConnId};
use super::config::{BusConfig, QueuePolicy};
use super::connection::{Outbox, PushError};
use super::http;
use super::limits::LimitCounters;
use super::log::Logger;
use super::metrics::{BusMetrics, Refusal};
use super::peer::BusConn;
use super::router::{HoldResult, Outcome, Plan, Router};
use super::server::{Admitted, App, TaskGuard};
use super::table::{Receiver, RoleId, Table};
use super::wire::{self, View};

/// The name the bus logs as the sender of messages it makes itself.
pub(super) const BUS: &str = "exocom";

/// A duration in nanoseconds (saturating).
pub(super) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The wall-clock time in ns since 1970.
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ns)
}

/// Everything the connections of one bus share.
pub(crate) struct Shared {
    pub(super) table: Table,
    router: Mutex<Router>,
    pub(crate) log: Logger,
    pub(super) keys: ActivityKeys,
    epoch: Instant,
    /// The wall-clock time at `epoch`, in ns since 1970 (re-read every
    /// second by the housekeeping, so clock adjustments show up).
    wall_at_epoch: AtomicU64,
    grace: Duration,
    activity_ttl: u64,
    pub(super) security_held_cap: usize,
    queue_capacity: usize,
    queue_policy: QueuePolicy,
    max_message_size: usize,
    /// The counters of `/metrics`.
    pub(super) metrics: BusMetrics,
    /// Set once the bus is stopping (`/healthz` answers 503).
    stopping: AtomicBool,
    /// The door's counters, exported in `/metrics`.
    limits: std::sync::OnceLock<Arc<LimitCounters>>,
}

#[derive(Serialize)]
struct Client<'a> {
    role: &'a str,
    instances: usize,
}

impl Shared {
    pub(crate) fn new(config: BusConfig) -> Arc<Shared> {
        let table = Table::new(config.routes.clone());
        let router = Router::new(&table, &config);
        let metrics = BusMetrics::new(&table);
        Arc::new(Shared {
            metrics,
            stopping: AtomicBool::new(false),
            limits: std::sync::OnceLock::new(),
            queue_policy: config.queue_policy,
            router: Mutex::new(router),
            table,
            log: Logger::new(config.log.clone(), config.log_routes),
            keys: ActivityKeys::default(),
            epoch: Instant::now(),
            wall_at_epoch: AtomicU64::new(unix_nanos()),
            grace: config.startup_grace,
            activity_ttl: duration_ns(config.activity_ttl),
            security_held_cap: config.security_held_cap,
            queue_capacity: config.queue_capacity,
            max_message_size: config.max_message_size,
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the bus started (monotonic).
    pub(super) fn now(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    pub(super) fn warn(&self, line: String) {
        self.log.line(line);
    }

    pub(crate) fn clients(&self) -> Vec<(String, usize)> {
        self.lock().clients()
    }

    pub(crate) fn activity_count(&self) -> usize {
        self.lock().activities.len()
    }

    /// The text of `GET /metrics`.
    pub(crate) fn metrics_text(&self) -> String {
        let gauges = self.lock().gauges(&self.table);
        let limits = self.limits.get().map(|l| l.snapshot());
        self.metrics.render(&gauges, self.queue_capacity, |e| {
            if let Some(l) = limits {
                super::metrics::render_limits(e, &l);
            }
        })
    }

    /// Exports the door's counters in `/metrics`.
    pub(crate) fn attach_limits(&self, limits: Arc<LimitCounters>) {
        let _ = self.limits.set(limits);
    }

    /// Whether `/healthz` answers 200 (not stopping).
    pub(crate) fn healthy(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
    }

    /// Makes `/healthz` answer 503 from now on.
    pub(crate) fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn config_json(&self) -> String {
        let clients = self.clients();
        let list: Vec<Client<'_>> = clients
            .iter()
            .map(|(role, instances)| Client {
                role,
                instances: *instances,
            })
            .collect();
        let clients_json = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
        format!(
            r#"{{"clients":{clients_json},"routes":{}}}"#,
            self.table.routes_json
        )
    }

    pub(super) fn role_name(&self, role: RoleId) -> Arc<str> {
        match self.table.role(role) {
            Some(r) => r.name.clone(),
            None => self.lock().role_name(role),
        }
    }

    /// Routes `msg` (sent as `msg.name` by `sender`) to these receivers.
    pub(super) fn route(
        &self,
        from: Option<ConnId>,
        sender: &str,
        msg: &View<'_>,
        receivers: &[Receiver],
        plan: &mut Vec<Plan>,
    ) -> Outcome {
        plan.clear();
        let key = self.keys.key(msg.activity);
        let now = self.now();
        let since = self.lock().plan(key, now, from, receivers, plan);
        let mut outcome = Outcome::default();
        if plan.is_empty() {
            return outcome;
        }
        let wall = self.wall_at_epoch.load(Ordering::Relaxed);
        let stamp = wire::rfc3339_unix_nanos(wall.saturating_add(now));
        let log_routes = self.log.routes_enabled();
        for step in plan.drain(..) {
            match step {
                Plan::Send(outbox, i) => {
                    let receiver = &receivers[i];
                    let frame = wire::encode(msg, &receiver.internal, &stamp, since);
                    match outbox.push(frame) {
                        Ok(()) => {
                            outcome.delivered += 1;
                            self.metrics.routed(receiver.slot);
                            if log_routes {
                                self.log_route(sender, msg.name, receiver, false);
                            }
                        }
                        Err(PushError::Full) => self.queue_full(&outbox, receiver),
                        Err(PushError::Closed) => self.metrics.refused(Refusal::Closed),
                    }
                }
                Plan::Hold(i) => {
                    let receiver = &receivers[i];
                    let frame = wire::encode(msg, &receiver.internal, &stamp, since);
                    let result = self.lock().hold(receiver.role, key, frame, receiver.slot);
                    let mut held = false;
                    match result {
                        HoldResult::Delivered => {
                            outcome.delivered += 1;
                            self.metrics.routed(receiver.slot);
                        }
                        HoldResult::Held {
                            dropped_one,
                            first_drop,
                        } => {
                            outcome.held += 1;
                            held = true;
                            if dropped_one {
                                self.metrics.refused(Refusal::HeldDropped);
                            }
                            if first_drop {
                                self.warn(format!(
                                    "Warning: Too many messages held for '{}' (it has not registered yet): dropping the oldest",
                                    self.role_name(receiver.role)
                                ));
                            }
                        }
                        HoldResult::Dropped => {
                            self.metrics.refused(Refusal::NoInstance);
                            continue;
                        }
                    }
                    if log_routes {
                        self.log_route(sender, msg.name, receiver, held);
                    }
                }
                Plan::Missing(i) => {
                    self.metrics.refused(Refusal::NoInstance);
                    if log_routes {
                        self.warn(format!(
                            "Warning: No instance of '{}' is connected to receive '{}'",
                            self.role_name(receivers[i].role),
                            msg.name
                        ));
                    }
                }
            }
        }
        outcome
    }

    /// A copy for a full queue: dropped (one warning per connection), and
    /// by the queue policy the connection closed.
    fn queue_full(&self, outbox: &Outbox, receiver: &Receiver) {
        self.metrics.refused(Refusal::QueueFull);
        match self.queue_policy {
            QueuePolicy::Drop => {
                if outbox.dropped() == 1 {
                    self.warn(format!(
                        "Warning: Dropped '{}' for '{}': the instance's queue is full ({} messages wait); further copies are dropped while it stays full (counted in /metrics)",
                        receiver.internal,
                        self.role_name(receiver.role),
                        outbox.capacity()
                    ));
                }
            }
            QueuePolicy::Disconnect => {
                outbox.close();
                self.metrics.slow_closed();
                self.warn(format!(
                    "Warning: Disconnected an instance of '{}': its queue is full ({} messages wait; queue policy 'disconnect'), dropped '{}'",
                    self.role_name(receiver.role),
                    outbox.capacity(),
                    receiver.internal,
                ));
            }
        }
    }

    /// `web  --[ users create ]-[ mongo create ]->  users`, and for a copy
    /// held during the startup grace period `  (held until 'users' registers)`.
    fn log_route(&self, sender: &str, name: &str, receiver: &Receiver, held: bool) {
        let role = self.role_name(receiver.role);
        let mut line = if *receiver.internal == *name {
            format!("{sender}  --[ {name} ]->  {role}")
        } else {
            format!("{sender}  --[ {name} ]-[ {} ]->  {role}", receiver.internal)
        };
        if held {
            line.push_str(&format!("  (held until '{role}' registers)"));
        }
        self.log.line(line);
    }

    /// Routes a message by the routes: `msg.name` as `role` sends it.
    pub(super) fn route_by_routes(
        &self,
        from: Option<ConnId>,
        role: Option<RoleId>,
        sender: &str,
        msg: &View<'_>,
        plan: &mut Vec<Plan>,
    ) -> Outcome {
        let public = self.table.to_public(role, msg.name);
        let receivers = self.table.receivers(public);
        if receivers.is_empty() {
            self.metrics.refused(Refusal::NoReceivers);
            self.warn(format!(
                "Warning: No receivers for message '{}' registered",
                msg.name
            ));
            return Outcome::default();
        }
        self.route(from, sender, msg, receivers, plan)
    }

    /// A message from a registered service (sender, id and activityId set).
    pub(super) fn service_message(
        &self,
        conn: ConnId,
        role: RoleId,
        role_name: &str,
        msg: &View<'_>,
        plan: &mut Vec<Plan>,
    ) {
        if !self.table.may_send(role, msg.name) {
            self.metrics.refused(Refusal::NotAllowed);
            self.warn(format!(
                "Warning: Service '{role_name}' is not allowed to broadcast the message '{}'",
                msg.name
            ));
            return;
        }
        let Some(security) = self.table.security else {
            self.route_by_routes(Some(conn), Some(role), role_name, msg, plan);
            return;
        };
        if role == security {
            self.security_verb(conn, role_name, msg, plan);
            return;
        }
        let request = self.lock().security.requests.take(msg.activity);
        match request {
            Some(request_activity) => self.security_response(msg, request_activity, plan),
            None => self.authorize(conn, role, role_name, msg, plan),
        }
    }

    /// Ends the startup grace period.
    fn close_grace(&self) {
        let report = self.lock().close_grace();
        for (role, held, dropped_before) in report {
            self.metrics.refused_n(Refusal::HeldDropped, held as u64);
            let mut line = format!(
                "Warning: Dropped {held} messages held for '{role}': no instance registered within the startup grace period of {:?}",
                self.grace
            );
            if dropped_before > 0 {
                line.push_str(&format!(
                    " ({dropped_before} more were dropped earlier: too many held)"
                ));
            }
            self.warn(line);
        }
    }

    /// Periodic clean-up: old activities, unanswered authorizations.
    fn housekeep(&self) {
        let now = self.now();
        self.wall_at_epoch
            .store(unix_nanos().saturating_sub(now), Ordering::Relaxed);
        let (held, requests) = {
            let mut router = self.lock();
            router.activities.rotate_if_due(now);
            let held = router.security.held.expire(now, self.activity_ttl);
            let requests = router.security.requests.expire(now, self.activity_ttl);
            (held, requests)
        };
        for h in held {
            self.metrics.refused(Refusal::SecurityDropped);
            self.warn(format!(
                "Warning: Dropped '{}' from '{}' with activityId '{}': the security role did not answer in time",
                h.msg.name,
                self.role_name(h.role),
                h.msg.activity()
            ));
        }
        for request in requests {
            self.warn(format!(
                "Warning: The security request with activityId '{request}' got no answer in time"
            ));
        }
    }
}

/// Runs the end of the grace period and the periodic clean-up.
pub(crate) fn spawn_housekeeping(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    guard: Option<TaskGuard>,
) {
    let grace_end = (!shared.grace.is_zero()).then(|| tokio::time::Instant::now() + shared.grace);
    tokio::spawn(async move {
        let _guard = guard;
        let mut grace_end = grace_end;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let grace = async {
                match grace_end {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = grace => {
                    grace_end = None;
                    shared.close_grace();
                }
                _ = tick.tick() => shared.housekeep(),
            }
        }
    });
}

impl App for Shared {
    type Conn = BusConn;

    fn open(self: &Arc<Self>, outbox: Arc<Outbox>) -> BusConn {
        self.metrics.opened();
        let id = self.lock().add_conn(outbox);
        BusConn::new(self.clone(), id)
    }

    fn open_admitted(self: &Arc<Self>, outbox: Arc<Outbox>, admitted: Admitted) -> BusConn {
        self.open(outbox.clone()).with_door(admitted, outbox)
    }

    fn config_json(&self) -> String {
        Shared::config_json(self)
    }

    fn metrics(&self) -> Option<String> {
        Some(self.metrics_text())
    }

    fn healthy(&self) -> bool {
        Shared::healthy(self)
    }

    fn warn(&self, line: String) {
        self.log.line(line);
    }

    fn websocket_config(&self) -> WebSocketConfig {
        http::websocket_config(self.max_message_size)
    }

    fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::connection::{Frame, FrameHandler};
    use crate::bus::log::LogSink;
    use crate::routes::Routes;
    use std::collections::VecDeque;

    fn bus() -> Arc<Shared> {
        let routes = Routes::from_json(
            r#"{"bench":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]}}"#,
        )
        .unwrap();
        Shared::new(
            BusConfig::new(routes)
                .with_log(LogSink::Discard)
                .with_route_logging(false),
        )
    }

    /// Parsing, routing and writing one request-reply, without the network.
    /// `cargo test --release -p exoservice routing_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn routing_cost() {
        let shared = bus();
        let (client_out, service_out) = (
            Arc::new(Outbox::new(1 << 20)),
            Arc::new(Outbox::new(1 << 20)),
        );
        let mut client = shared.open(client_out.clone());
        let mut service = shared.open(service_out.clone());
        client.frame(Frame::Text(
            r#"{"name":"exocom.register-service","sender":"bench","id":"1","activityId":"1"}"#,
        ));
        service.frame(Frame::Text(
            r#"{"name":"exocom.register-service","sender":"ping","id":"2","activityId":"2"}"#,
        ));
        let n = 300_000;
        let frames: Vec<(String, String)> = (0..n)
            .map(|i| {
                let activity = format!("7d0f8d0c-2a53-4a4e-8f0e-{i:012}");
                (
                    format!(
                        r#"{{"name":"ping","id":"5b6e2c1e-8a51-4f7a-9c55-{i:012}","activityId":"{activity}","sender":"bench","payload":{{"n":1,"text":"ping"}}}}"#
                    ),
                    format!(
                        r#"{{"name":"pong","id":"0b6e2c1e-8a51-4f7a-9c55-{i:012}","activityId":"{activity}","sender":"ping","payload":{{"n":1,"text":"ping"}}}}"#
                    ),
                )
            })
            .collect();
        let mut q = VecDeque::new();
        let t0 = Instant::now();
        for (ping, pong) in &frames {
            client.frame(Frame::Text(ping));
            let _ = futures_util::FutureExt::now_or_never(service_out.take(&mut q));
            assert_eq!(q.len(), 1);
            q.clear();
            service.frame(Frame::Text(pong));
            let _ = futures_util::FutureExt::now_or_never(client_out.take(&mut q));
            assert_eq!(q.len(), 1);
            q.clear();
        }
        let per = t0.elapsed() / n as u32;
        println!("one request-reply through the router: {per:?}");
    }
}

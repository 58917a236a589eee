//! Routing: the bus's shared state, what a connection does with each frame,
//! instance choice with activity stickiness, startup-grace holds, the
//! security adapter's message flow, and the periodic housekeeping.
//!
//! The routing state sits behind one mutex that is held for table look-ups
//! only; parsing, serializing each copy and logging happen outside it.
//! Frames of one connection are routed one after the other by that
//! connection's task, so messages from one sender to one receiver keep
//! their order.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::activity::{ActivityKeys, ActivityTable, ConnId, IdMap};
use super::config::BusConfig;
use super::connection::{Frame, FrameHandler, Outbox, PushError};
use super::http;
use super::log::Logger;
use super::security::{HeldMessage, SecurityState};
use super::server::{App, TaskGuard};
use super::table::{self, Receiver, RoleId, Table};
use super::wire::{self, Incoming, View};
use crate::message::{self, Message, new_id};

/// The name the bus logs as the sender of messages it makes itself.
const BUS: &str = "exocom";

/// A copy held for a role during the startup grace period.
struct HeldCopy {
    key: u64,
    frame: Utf8Bytes,
}

/// The instances of one role, and copies held for it.
struct RoleState {
    name: Arc<str>,
    instances: Vec<ConnId>,
    held: VecDeque<HeldCopy>,
    held_dropped: u64,
}

impl RoleState {
    fn new(name: Arc<str>) -> RoleState {
        RoleState {
            name,
            instances: Vec::new(),
            held: VecDeque::new(),
            held_dropped: 0,
        }
    }
}

/// One WebSocket connection, registered or not.
struct ConnEntry {
    role: Option<RoleId>,
    outbox: Arc<Outbox>,
}

/// What happens to one copy, decided under the lock.
pub(crate) enum Plan {
    /// Write it to this connection (receiver number).
    Send(Arc<Outbox>, usize),
    /// Hold it for the role (grace period).
    Hold(usize),
    /// The role has no instance.
    Missing(usize),
}

/// What became of the copies of one message.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    delivered: usize,
    held: usize,
}

/// What a held copy became.
enum HoldResult {
    Delivered,
    Held { first_drop: bool },
    Dropped,
}

/// Registration, as the router saw it.
struct Registered {
    role: RoleId,
    previous: Option<Arc<str>>,
    flushed: usize,
    again: bool,
}

/// The mutable routing state.
pub(crate) struct Router {
    conns: IdMap<ConnId, ConnEntry>,
    roles: Vec<RoleState>,
    /// Roles that registered without being in the routes.
    extra: HashMap<Arc<str>, RoleId>,
    free: Vec<RoleId>,
    activities: ActivityTable,
    grace_open: bool,
    held_per_role: usize,
    security: SecurityState,
    next_conn: ConnId,
}

impl Router {
    fn new(table: &Table, config: &BusConfig) -> Router {
        let roles = (0..table.len() as RoleId)
            .filter_map(|id| table.role(id))
            .map(|r| RoleState::new(r.name.clone()))
            .collect();
        Router {
            conns: IdMap::default(),
            roles,
            extra: HashMap::new(),
            free: Vec::new(),
            activities: ActivityTable::new(duration_ns(config.activity_ttl), config.activity_cap),
            grace_open: !config.startup_grace.is_zero(),
            held_per_role: config.held_per_role.max(1),
            security: SecurityState::new(config.security_held_cap),
            next_conn: 1,
        }
    }

    fn add_conn(&mut self, outbox: Arc<Outbox>) -> ConnId {
        // Numbers are reused only after 2^32 connections, and never while
        // one is in use.
        let id = loop {
            let id = self.next_conn;
            self.next_conn = self.next_conn.wrapping_add(1);
            if id != 0 && !self.conns.contains_key(&id) {
                break id;
            }
        };
        self.conns.insert(id, ConnEntry { role: None, outbox });
        id
    }

    /// Takes a connection out of its role; frees the slot of a role that is
    /// not in the routes once its last instance left.
    fn leave_role(&mut self, conn: ConnId, role: RoleId, table: &Table) {
        let Some(state) = self.roles.get_mut(role as usize) else {
            return;
        };
        state.instances.retain(|c| *c != conn);
        if state.instances.is_empty() && role as usize >= table.len() {
            self.extra.remove(&state.name);
            state.held.clear();
            self.free.push(role);
        }
    }

    /// Forgets a connection; returns the name of its role.
    fn remove_conn(&mut self, conn: ConnId, table: &Table) -> Option<Arc<str>> {
        let entry = self.conns.remove(&conn)?;
        let role = entry.role?;
        let name = self.roles.get(role as usize).map(|r| r.name.clone());
        self.leave_role(conn, role, table);
        name
    }

    /// The role with this name, made up if the routes do not have it.
    fn role_id(&mut self, name: &str, table: &Table) -> RoleId {
        if let Some(id) = table.id(name).or_else(|| self.extra.get(name).copied()) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.roles[id as usize] = RoleState::new(name.clone());
                id
            }
            None => {
                self.roles.push(RoleState::new(name.clone()));
                (self.roles.len() - 1) as RoleId
            }
        };
        self.extra.insert(name, id);
        id
    }

    fn register(&mut self, conn: ConnId, name: &str, table: &Table) -> Option<Registered> {
        let role = self.role_id(name, table);
        let current = self.conns.get(&conn)?.role;
        if current == Some(role) {
            return Some(Registered {
                role,
                previous: None,
                flushed: 0,
                again: true,
            });
        }
        let previous = match current {
            Some(old) => {
                let old_name = self.roles.get(old as usize).map(|r| r.name.clone());
                self.leave_role(conn, old, table);
                old_name
            }
            None => None,
        };
        let entry = self.conns.get_mut(&conn)?;
        entry.role = Some(role);
        let outbox = entry.outbox.clone();
        let state = self.roles.get_mut(role as usize)?;
        state.instances.push(conn);
        let held = std::mem::take(&mut state.held);
        let flushed = held.len();
        if flushed > 0 {
            for copy in &held {
                self.activities.add_member(copy.key, conn);
            }
            outbox.push_all(held.into_iter().map(|c| c.frame));
        }
        Some(Registered {
            role,
            previous,
            flushed,
            again: false,
        })
    }

    /// Decides, for each receiver, which instance gets its copy; records
    /// the activity. Returns the nanoseconds since the activity's previous
    /// message.
    fn plan(
        &mut self,
        key: u64,
        now: u64,
        from: Option<ConnId>,
        receivers: &[Receiver],
        out: &mut Vec<Plan>,
    ) -> Option<u64> {
        let Router {
            conns,
            roles,
            activities,
            grace_open,
            ..
        } = self;
        let (since, activity) = activities.touch(key, now);
        if let Some(from) = from {
            activity.members.add(from);
        }
        for (i, receiver) in receivers.iter().enumerate() {
            let Some(state) = roles.get(receiver.role as usize) else {
                out.push(Plan::Missing(i));
                continue;
            };
            if state.instances.is_empty() {
                out.push(if *grace_open {
                    Plan::Hold(i)
                } else {
                    Plan::Missing(i)
                });
                continue;
            }
            let sticky = activity
                .members
                .newest_first()
                .find(|c| conns.get(c).is_some_and(|e| e.role == Some(receiver.role)));
            let chosen =
                sticky.unwrap_or_else(|| state.instances[fastrand::usize(..state.instances.len())]);
            activity.members.add(chosen);
            match conns.get(&chosen) {
                Some(entry) => out.push(Plan::Send(entry.outbox.clone(), i)),
                None => out.push(Plan::Missing(i)),
            }
        }
        since
    }

    /// Holds a copy for a role without instance, or delivers it if one
    /// registered in the meantime.
    fn hold(&mut self, role: RoleId, key: u64, frame: Utf8Bytes) -> HoldResult {
        let Router {
            conns,
            roles,
            activities,
            grace_open,
            held_per_role,
            ..
        } = self;
        let Some(state) = roles.get_mut(role as usize) else {
            return HoldResult::Dropped;
        };
        if let Some(&conn) = state.instances.first() {
            if let Some(entry) = conns.get(&conn) {
                activities.add_member(key, conn);
                entry.outbox.push_all([frame]);
                return HoldResult::Delivered;
            }
            return HoldResult::Dropped;
        }
        if !*grace_open {
            return HoldResult::Dropped;
        }
        let mut first_drop = false;
        if state.held.len() >= *held_per_role {
            state.held.pop_front();
            state.held_dropped += 1;
            first_drop = state.held_dropped == 1;
        }
        state.held.push_back(HeldCopy { key, frame });
        HoldResult::Held { first_drop }
    }

    /// Ends the grace period; returns (role, copies still held, copies
    /// dropped earlier) for each role that had any.
    fn close_grace(&mut self) -> Vec<(Arc<str>, usize, u64)> {
        self.grace_open = false;
        let mut report = Vec::new();
        for state in &mut self.roles {
            if !state.held.is_empty() || state.held_dropped > 0 {
                report.push((state.name.clone(), state.held.len(), state.held_dropped));
                state.held = VecDeque::new();
                state.held_dropped = 0;
            }
        }
        report
    }

    /// Adds a connection to an activity (it sent a message of it).
    fn join(&mut self, key: u64, conn: ConnId, now: u64) {
        let (_, activity) = self.activities.touch(key, now);
        activity.members.add(conn);
    }

    fn clients(&self) -> Vec<(String, usize)> {
        let mut clients: Vec<(String, usize)> = self
            .roles
            .iter()
            .filter(|r| !r.instances.is_empty())
            .map(|r| (r.name.to_string(), r.instances.len()))
            .collect();
        clients.sort();
        clients
    }

    fn role_name(&self, role: RoleId) -> Arc<str> {
        self.roles
            .get(role as usize)
            .map_or_else(|| Arc::from("?"), |r| r.name.clone())
    }
}

fn duration_ns(d: Duration) -> u64 {
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
    table: Table,
    router: Mutex<Router>,
    pub(crate) log: Logger,
    keys: ActivityKeys,
    epoch: Instant,
    /// The wall-clock time at `epoch`, in ns since 1970 (re-read every
    /// second by the housekeeping, so clock adjustments show up).
    wall_at_epoch: AtomicU64,
    grace: Duration,
    activity_ttl: u64,
    security_held_cap: usize,
    queue_capacity: usize,
    max_message_size: usize,
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
        Arc::new(Shared {
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

    fn lock(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the bus started (monotonic).
    fn now(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    fn warn(&self, line: String) {
        self.log.line(line);
    }

    pub(crate) fn clients(&self) -> Vec<(String, usize)> {
        self.lock().clients()
    }

    pub(crate) fn activity_count(&self) -> usize {
        self.lock().activities.len()
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

    fn role_name(&self, role: RoleId) -> Arc<str> {
        match self.table.role(role) {
            Some(r) => r.name.clone(),
            None => self.lock().role_name(role),
        }
    }

    /// Routes `msg` (sent as `msg.name` by `sender`) to these receivers.
    fn route(
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
                            if log_routes {
                                self.log_route(sender, msg.name, receiver, false);
                            }
                        }
                        Err(PushError::Full) => {
                            let dropped = outbox.dropped();
                            if dropped == 1 || dropped.is_multiple_of(1000) {
                                self.warn(format!(
                                    "Warning: Dropped '{}' for '{}': the instance's queue is full ({} messages wait; {dropped} dropped so far)",
                                    receiver.internal,
                                    self.role_name(receiver.role),
                                    outbox.capacity()
                                ));
                            }
                        }
                        Err(PushError::Closed) => {}
                    }
                }
                Plan::Hold(i) => {
                    let receiver = &receivers[i];
                    let frame = wire::encode(msg, &receiver.internal, &stamp, since);
                    let result = self.lock().hold(receiver.role, key, frame);
                    let mut held = false;
                    match result {
                        HoldResult::Delivered => outcome.delivered += 1,
                        HoldResult::Held { first_drop } => {
                            outcome.held += 1;
                            held = true;
                            if first_drop {
                                self.warn(format!(
                                    "Warning: Too many messages held for '{}' (it has not registered yet): dropping the oldest",
                                    self.role_name(receiver.role)
                                ));
                            }
                        }
                        HoldResult::Dropped => continue,
                    }
                    if log_routes {
                        self.log_route(sender, msg.name, receiver, held);
                    }
                }
                Plan::Missing(i) => {
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
    fn route_by_routes(
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
            self.warn(format!(
                "Warning: No receivers for message '{}' registered",
                msg.name
            ));
            return Outcome::default();
        }
        self.route(from, sender, msg, receivers, plan)
    }

    /// A message from a registered service (sender, id and activityId set).
    fn service_message(
        &self,
        conn: ConnId,
        role: RoleId,
        role_name: &str,
        msg: &View<'_>,
        plan: &mut Vec<Plan>,
    ) {
        if !self.table.may_send(role, msg.name) {
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

    /// Holds a message and asks the security role about it.
    fn authorize(
        &self,
        conn: ConnId,
        role: RoleId,
        role_name: &str,
        msg: &View<'_>,
        plan: &mut Vec<Plan>,
    ) {
        let verdict_activity = new_id();
        let msg = msg.to_message();
        let original = msg.to_json();
        let (name, activity) = (msg.name.clone(), msg.activity().to_owned());
        let now = self.now();
        let key = self.keys.key(&activity);
        let evicted = {
            let mut router = self.lock();
            router.join(key, conn, now);
            router.security.held.insert(
                verdict_activity.clone(),
                now,
                HeldMessage { msg, conn, role },
            )
        };
        if let Some(old) = evicted {
            self.warn(format!(
                "Warning: Dropped '{}' from '{}' with activityId '{}': more than {} messages wait for authorization",
                old.msg.name,
                self.role_name(old.role),
                old.msg.activity(),
                self.security_held_cap
            ));
        }
        let ask = Message {
            name: table::AUTHORIZE.into(),
            id: Some(new_id()),
            activity_id: Some(verdict_activity.clone()),
            payload: RawValue::from_string(original).ok(),
            ..Message::default()
        };
        let outcome = self.route(None, BUS, &View::of(&ask), &self.table.authorize, plan);
        if outcome.delivered + outcome.held == 0 {
            let dropped = self.lock().security.held.take(&verdict_activity);
            if dropped.is_some() {
                self.warn(format!(
                    "Warning: Dropped '{name}' from '{role_name}' with activityId '{activity}': no instance of '{}' is connected to authorize it",
                    table::SECURITY
                ));
            }
        }
    }

    /// `message authorized`, `message unauthorized` or `security request`
    /// from the security role.
    fn security_verb(&self, conn: ConnId, security: &str, msg: &View<'_>, plan: &mut Vec<Plan>) {
        match msg.name {
            table::AUTHORIZED => {
                let held = self.lock().security.held.take(msg.activity);
                match held {
                    Some(h) => {
                        let sender = self.role_name(h.role);
                        let original = View::of(&h.msg);
                        self.route_by_routes(Some(h.conn), Some(h.role), &sender, &original, plan);
                    }
                    None => self.unknown_verdict(msg),
                }
            }
            table::UNAUTHORIZED => {
                let held = self.lock().security.held.take(msg.activity);
                let Some(h) = held else {
                    self.unknown_verdict(msg);
                    return;
                };
                let sender = self.role_name(h.role);
                self.warn(format!(
                    "Warning: Unauthorized message '{}' from '{sender}' with activityId '{}'",
                    h.msg.name,
                    h.msg.activity()
                ));
                let notice = Message {
                    name: table::UNAUTHORIZED.into(),
                    id: Some(new_id()),
                    activity_id: h.msg.activity_id.clone(),
                    sender: Some(security.to_owned()),
                    payload: RawValue::from_string(h.msg.to_json()).ok(),
                    ..Message::default()
                };
                let role = self.table.security;
                self.route_by_routes(None, role, security, &View::of(&notice), plan);
            }
            table::SECURITY_REQUEST => self.security_request(conn, security, msg, plan),
            // The fixed route lets the security role send nothing else.
            _ => {}
        }
    }

    fn unknown_verdict(&self, msg: &View<'_>) {
        self.warn(format!(
            "Warning: '{}' for an unknown activityId '{}' (no message waits for it)",
            msg.name, msg.activity
        ));
    }

    /// Routes the message inside a `security request`, and remembers to
    /// hand its first answer back.
    fn security_request(&self, conn: ConnId, security: &str, msg: &View<'_>, plan: &mut Vec<Plan>) {
        let inner = msg
            .payload
            .ok_or_else(|| "it has no payload".to_owned())
            .and_then(|p| Incoming::parse(p.get()).map_err(|e| e.to_string()));
        let mut inner = match inner {
            Ok(inner) => inner,
            Err(e) => {
                self.warn(format!(
                    "Warning: Ignored '{}' with activityId '{}': its payload is not a message ({e})",
                    msg.name, msg.activity
                ));
                return;
            }
        };
        inner.id.get_or_insert_with(|| Cow::Owned(new_id()));
        let inner_activity = inner
            .activity_id
            .get_or_insert_with(|| Cow::Owned(new_id()))
            .to_string();
        let now = self.now();
        let key = self.keys.key(msg.activity);
        let evicted = {
            let mut router = self.lock();
            router.join(key, conn, now);
            router
                .security
                .requests
                .insert(inner_activity.clone(), now, msg.activity.to_owned())
        };
        if let Some(old) = evicted {
            self.warn(format!(
                "Warning: Forgot the security request with activityId '{old}': more than {} wait for an answer",
                self.security_held_cap
            ));
        }
        let role = inner.sender.as_deref().and_then(|s| self.table.id(s));
        let sender = inner.sender.as_deref().unwrap_or(security);
        let outcome = self.route_by_routes(None, role, sender, &inner.view(), plan);
        if outcome.delivered + outcome.held == 0 {
            self.lock().security.requests.take(&inner_activity);
        }
    }

    /// The first answer in the activity of a security request goes back to
    /// the security role, wrapped.
    fn security_response(&self, answer: &View<'_>, request_activity: String, plan: &mut Vec<Plan>) {
        let wrapped = Message {
            name: table::SECURITY_RESPONSE.into(),
            id: Some(new_id()),
            activity_id: Some(request_activity),
            is_security: true,
            payload: RawValue::from_string(answer.to_message().to_json()).ok(),
            ..Message::default()
        };
        let wrapped = View::of(&wrapped);
        self.route(None, BUS, &wrapped, &self.table.security_response, plan);
    }

    /// Ends the startup grace period.
    fn close_grace(&self) {
        let report = self.lock().close_grace();
        for (role, held, dropped_before) in report {
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

/// One connection of the bus.
pub(crate) struct BusConn {
    shared: Arc<Shared>,
    id: ConnId,
    role: Option<(RoleId, Arc<str>)>,
    plan: Vec<Plan>,
}

impl BusConn {
    fn describe(&self) -> String {
        match &self.role {
            Some((_, name)) => format!("'{name}'"),
            None => "an unregistered connection".to_owned(),
        }
    }

    fn register(&mut self, sender: Option<String>) {
        let shared = &self.shared;
        let Some(name) = sender else {
            shared.warn(format!(
                "Warning: Refused '{}' without a sender: it must name the role to register as",
                message::REGISTER
            ));
            return;
        };
        let registered = shared.lock().register(self.id, &name, &shared.table);
        let Some(r) = registered else {
            return;
        };
        let role_name = shared.role_name(r.role);
        self.role = Some((r.role, role_name));
        if r.again {
            return;
        }
        match r.previous {
            Some(previous) => shared.log.line(format!(
                "'{name}' registered (the connection was '{previous}' before)"
            )),
            None => shared.log.line(format!("'{name}' registered")),
        }
        if shared.table.id(&name).is_none() {
            shared.warn(format!(
                "Warning: Service '{name}' registered but the routes do not list it: it can neither send nor receive"
            ));
        }
        if r.flushed > 0 {
            shared.log.line(format!(
                "Delivered {} messages held for '{name}' since the bus started",
                r.flushed
            ));
        }
    }
}

impl FrameHandler for BusConn {
    fn frame(&mut self, frame: Frame<'_>) {
        let role = self.role.clone();
        let parsed = match frame {
            Frame::Text(text) => Incoming::parse(text),
            Frame::Binary(bytes) => Incoming::parse_bytes(bytes),
        };
        let mut msg = match parsed {
            Ok(msg) => msg,
            Err(e) => {
                self.shared.log.line(format!(
                    "Error: {} sent an unreadable frame; dropped it ({e})",
                    self.describe()
                ));
                return;
            }
        };
        match &*msg.name {
            message::REGISTER => return self.register(msg.sender.map(Cow::into_owned)),
            message::STATUS_OK => return,
            _ => {}
        }
        let Some((role, role_name)) = &role else {
            self.shared.warn(format!(
                "Warning: Refused '{}' from a connection that has not registered",
                msg.name
            ));
            return;
        };
        match msg.sender.as_deref() {
            Some(sender) if sender != &**role_name => {
                self.shared.warn(format!(
                    "Warning: Refused '{}' from '{role_name}': it claims to come from '{sender}'",
                    msg.name
                ));
                return;
            }
            Some(_) => {}
            None => msg.sender = Some(Cow::Borrowed(role_name)),
        }
        msg.id.get_or_insert_with(|| Cow::Owned(new_id()));
        msg.activity_id.get_or_insert_with(|| Cow::Owned(new_id()));
        self.shared
            .service_message(self.id, *role, role_name, &msg.view(), &mut self.plan);
    }
}

impl Drop for BusConn {
    fn drop(&mut self) {
        let left = self.shared.lock().remove_conn(self.id, &self.shared.table);
        if let Some(role) = left {
            self.shared.log.line(format!("'{role}' disconnected"));
        }
    }
}

impl App for Shared {
    type Conn = BusConn;

    fn open(self: &Arc<Self>, outbox: Arc<Outbox>) -> BusConn {
        let id = self.lock().add_conn(outbox);
        BusConn {
            shared: self.clone(),
            id,
            role: None,
            plan: Vec::new(),
        }
    }

    fn config_json(&self) -> String {
        Shared::config_json(self)
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
    use crate::bus::log::LogSink;
    use crate::routes::Routes;

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

//! The routing state behind the bus's mutex: connections, the instances
//! of each role, the choice of an instance (activity stickiness, else
//! random), copies held during the startup grace period, and the activity
//! and security tables. Its methods only look things up and record them;
//! the callers parse, serialize and log outside the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::activity::{ActivityTable, ConnId, IdMap};
use super::config::BusConfig;
use super::connection::Outbox;
use super::metrics::{BusMetrics, Gauges};
use super::security::SecurityState;
use super::shared::duration_ns;
use super::table::{Receiver, RoleId, Table};

/// A copy held for a role during the startup grace period.
struct HeldCopy {
    key: u64,
    frame: Utf8Bytes,
    /// The receiver's metrics slot.
    slot: usize,
}

/// The instances of one role, and copies held for it.
struct RoleState {
    name: Arc<str>,
    /// A tool role (see [`BusConfig::optional_roles`]): copies for it are
    /// neither held nor warned about while it has no instance.
    optional: bool,
    instances: Vec<ConnId>,
    held: VecDeque<HeldCopy>,
    held_dropped: u64,
}

impl RoleState {
    fn new(name: Arc<str>) -> RoleState {
        RoleState {
            name,
            optional: false,
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
pub(super) struct Outcome {
    /// Copies queued for an instance.
    pub(super) delivered: usize,
    /// Copies held for a role during the startup grace period.
    pub(super) held: usize,
}

/// What a copy for a role without instance became.
pub(super) enum HoldResult {
    /// An instance registered meanwhile and got it.
    Delivered,
    /// Held; `dropped_one` when holding it pushed out an older copy,
    /// `first_drop` when that was the role's first.
    Held { dropped_one: bool, first_drop: bool },
    /// The grace period is over.
    Dropped,
}

/// Registration, as the router saw it.
pub(super) struct Registered {
    /// The role registered as.
    pub(super) role: RoleId,
    /// The role the connection had before, if another.
    pub(super) previous: Option<Arc<str>>,
    /// Copies held for the role that went out to this connection.
    pub(super) flushed: usize,
    /// The connection had registered as this role already.
    pub(super) again: bool,
}

/// The mutable routing state.
pub(crate) struct Router {
    conns: IdMap<ConnId, ConnEntry>,
    roles: Vec<RoleState>,
    /// Roles that registered without being in the routes.
    extra: HashMap<Arc<str>, RoleId>,
    free: Vec<RoleId>,
    pub(super) activities: ActivityTable,
    grace_open: bool,
    held_per_role: usize,
    pub(super) security: SecurityState,
    next_conn: ConnId,
}

impl Router {
    pub(super) fn new(table: &Table, config: &BusConfig) -> Router {
        let roles = (0..table.len() as RoleId)
            .filter_map(|id| table.role(id))
            .map(|r| {
                let mut state = RoleState::new(r.name.clone());
                state.optional = config.optional_roles.iter().any(|o| **o == *r.name);
                state
            })
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

    pub(super) fn add_conn(&mut self, outbox: Arc<Outbox>) -> ConnId {
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
    pub(super) fn remove_conn(&mut self, conn: ConnId, table: &Table) -> Option<Arc<str>> {
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

    pub(super) fn register(
        &mut self,
        conn: ConnId,
        name: &str,
        table: &Table,
        metrics: &BusMetrics,
    ) -> Option<Registered> {
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
                metrics.routed(copy.slot);
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
    pub(super) fn plan(
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
                if state.optional {
                    continue;
                }
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
    pub(super) fn hold(
        &mut self,
        role: RoleId,
        key: u64,
        frame: Utf8Bytes,
        slot: usize,
    ) -> HoldResult {
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
        let (mut dropped_one, mut first_drop) = (false, false);
        if state.held.len() >= *held_per_role {
            state.held.pop_front();
            state.held_dropped += 1;
            dropped_one = true;
            first_drop = state.held_dropped == 1;
        }
        state.held.push_back(HeldCopy { key, frame, slot });
        HoldResult::Held {
            dropped_one,
            first_drop,
        }
    }

    /// Ends the grace period; returns (role, copies still held, copies
    /// dropped earlier) for each role that had any.
    pub(super) fn close_grace(&mut self) -> Vec<(Arc<str>, usize, u64)> {
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
    pub(super) fn join(&mut self, key: u64, conn: ConnId, now: u64) {
        let (_, activity) = self.activities.touch(key, now);
        activity.members.add(conn);
    }

    pub(super) fn clients(&self) -> Vec<(String, usize)> {
        let mut clients: Vec<(String, usize)> = self
            .roles
            .iter()
            .filter(|r| !r.instances.is_empty())
            .map(|r| (r.name.to_string(), r.instances.len()))
            .collect();
        clients.sort();
        clients
    }

    /// Instances, queue depths and unregistered connections, for
    /// `/metrics`: every role of the routes (also without instances) and
    /// every other role with instances, sorted by name.
    pub(super) fn gauges(&self, table: &Table) -> Gauges {
        let mut gauges = Gauges::default();
        let mut depth = vec![(0usize, 0usize); self.roles.len()];
        for entry in self.conns.values() {
            match entry.role {
                Some(role) => {
                    let n = entry.outbox.len();
                    if let Some(d) = depth.get_mut(role as usize) {
                        d.0 += n;
                        d.1 = d.1.max(n);
                    }
                }
                None => gauges.unregistered += 1,
            }
        }
        for (id, state) in self.roles.iter().enumerate() {
            if state.instances.is_empty() && id >= table.len() {
                continue;
            }
            let (sum, max) = depth[id];
            gauges
                .roles
                .push((state.name.clone(), state.instances.len(), sum, max));
            gauges.held += state.held.len();
        }
        gauges.roles.sort_by(|a, b| a.0.cmp(&b.0));
        gauges.activities = self.activities.len();
        gauges
    }

    pub(super) fn role_name(&self, role: RoleId) -> Arc<str> {
        self.roles
            .get(role as usize)
            .map_or_else(|| Arc::from("?"), |r| r.name.clone())
    }
}

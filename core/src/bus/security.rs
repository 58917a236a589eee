//! The security adapter (PROTOCOL.md, "The security adapter"): when the
//! routes have a role named `security`, every other allowed message is
//! held and the security role is asked about it (`authorize message`);
//! `message authorized` releases it, `message unauthorized` drops it and
//! tells the receivers of `message unauthorized`; `security request` makes
//! the bus send a message for the security role and hand the first answer
//! in its activity back as `security response`.
//!
//! Held messages and pending requests are bounded (oldest out first) and
//! expire after the activity TTL; a verdict for an unknown activity is
//! logged, nothing more.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use serde_json::value::RawValue;

use super::activity::ConnId;
use super::metrics::Refusal;
use super::router::Plan;
use super::shared::{BUS, Shared};
use super::table::{self, RoleId};
use super::wire::{Incoming, View};
use crate::message::{Message, new_id};

/// A map that remembers insertion order, holds at most `cap` entries and
/// can drop entries older than a TTL.
pub(crate) struct Fifo<V> {
    map: HashMap<String, (u64, u64, V)>,
    order: VecDeque<(u64, String)>,
    next: u64,
    cap: usize,
}

impl<V> Fifo<V> {
    pub(crate) fn new(cap: usize) -> Fifo<V> {
        Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    /// Adds an entry made at `at`; returns the oldest one when the map was
    /// full.
    pub(crate) fn insert(&mut self, key: String, at: u64, value: V) -> Option<V> {
        let seq = self.next;
        self.next += 1;
        self.order.push_back((seq, key.clone()));
        self.map.insert(key, (seq, at, value));
        let evicted = if self.map.len() > self.cap {
            self.pop_oldest().map(|(_, v)| v)
        } else {
            None
        };
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(seq, key)| map.get(key).is_some_and(|(s, _, _)| s == seq));
        }
        evicted
    }

    /// Removes and returns an entry.
    pub(crate) fn take(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|(_, _, v)| v)
    }

    /// Removes the oldest entry.
    fn pop_oldest(&mut self) -> Option<(u64, V)> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(s, _, _)| *s == seq) {
                return self.map.remove(&key).map(|(_, at, v)| (at, v));
            }
        }
        None
    }

    /// Removes the entries made `ttl` or longer before `now`.
    pub(crate) fn expire(&mut self, now: u64, ttl: u64) -> Vec<V> {
        let mut expired = Vec::new();
        while let Some((seq, key)) = self.order.front() {
            match self.map.get(key) {
                Some((s, at, _)) if s == seq => {
                    if now.saturating_sub(*at) < ttl {
                        break;
                    }
                    if let Some((_, _, v)) = self.map.remove(key) {
                        expired.push(v);
                    }
                }
                _ => {}
            }
            self.order.pop_front();
        }
        expired
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A message waiting for the security role's verdict.
pub(crate) struct HeldMessage {
    /// The original message (sender, id and activityId filled in).
    pub(crate) msg: Message,
    /// The connection that sent it.
    pub(crate) conn: ConnId,
    /// Its role.
    pub(crate) role: RoleId,
}

/// The security adapter's state.
pub(crate) struct SecurityState {
    /// Held messages, by the activityId of their `authorize message`.
    pub(crate) held: Fifo<HeldMessage>,
    /// Activity of a security request's inner message → the request's activity.
    pub(crate) requests: Fifo<String>,
}

impl SecurityState {
    pub(crate) fn new(cap: usize) -> SecurityState {
        SecurityState {
            held: Fifo::new(cap),
            requests: Fifo::new(cap),
        }
    }
}

impl Shared {
    /// Holds a message and asks the security role about it.
    pub(super) fn authorize(
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
            self.metrics.refused(Refusal::SecurityDropped);
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
                self.metrics.refused(Refusal::SecurityDropped);
                self.warn(format!(
                    "Warning: Dropped '{name}' from '{role_name}' with activityId '{activity}': no instance of '{}' is connected to authorize it",
                    table::SECURITY
                ));
            }
        }
    }

    /// `message authorized`, `message unauthorized` or `security request`
    /// from the security role.
    pub(super) fn security_verb(
        &self,
        conn: ConnId,
        security: &str,
        msg: &View<'_>,
        plan: &mut Vec<Plan>,
    ) {
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
                self.metrics.refused(Refusal::Unauthorized);
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
    pub(super) fn security_response(
        &self,
        answer: &View<'_>,
        request_activity: String,
        plan: &mut Vec<Plan>,
    ) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_is_bounded_and_expires() {
        let mut f = Fifo::new(3);
        for i in 0..3 {
            assert!(f.insert(i.to_string(), i, i).is_none());
        }
        assert_eq!(f.insert("3".into(), 3, 3), Some(0));
        assert_eq!(f.take("2"), Some(2));
        assert_eq!(f.take("2"), None);
        assert_eq!(f.expire(11, 10), vec![1]);
        assert_eq!(f.len(), 1);
        for i in 0..1000 {
            f.insert(format!("k{i}"), 20, i);
            f.take(&format!("k{i}"));
        }
        assert!(f.order.len() < 200);
    }
}

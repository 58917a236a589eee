//! The state of the security adapter: messages held until the security
//! role authorizes them, and security requests waiting for their answer.
//! Both are bounded (oldest out first) and expire.

use std::collections::{HashMap, VecDeque};

use super::activity::ConnId;
use super::table::RoleId;
use crate::message::Message;

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

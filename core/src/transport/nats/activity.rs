//! Which instance of each role took part in an activity, as this instance
//! knows it (from the `Exo-Members` header of what it sent and received),
//! and when the activity's last message passed here (for `responseTime`).
//!
//! Bounded like the bus's table: two generations keyed by a keyed hash of
//! the activity id; an activity is forgotten one TTL after its last message
//! at the earliest, two at the latest, or sooner when a generation holds
//! `cap / 2` activities. Role and instance names are shared (`Arc<str>`),
//! so remembering and copying members costs no string copies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::activity::{ActivityKeys, IdMap};

/// At most this many roles are remembered per activity.
const MAX_MEMBERS: usize = 6;
/// At most this many distinct role and instance names are shared; when
/// more come (instances restart with new names), the list starts over.
const MAX_NAMES: usize = 4096;

/// The members of one activity: (role, instance), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Members(Vec<(Arc<str>, Arc<str>)>);

impl Members {
    /// Writes the header value: `role=instance,…`.
    pub(crate) fn header(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 32);
        for (i, (role, inst)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(role);
            out.push('=');
            out.push_str(inst);
        }
        out
    }

    /// Sets the instance of a role (newest last).
    fn add(&mut self, role: Arc<str>, instance: Arc<str>) {
        if let Some(i) = self.0.iter().position(|(r, _)| *r == role) {
            if self.0[i].1 == instance {
                return;
            }
            self.0.remove(i);
        }
        if self.0.len() >= MAX_MEMBERS {
            self.0.remove(0);
        }
        self.0.push((role, instance));
    }

    /// The instance of `role`, if known.
    pub(crate) fn of(&self, role: &str) -> Option<&Arc<str>> {
        self.0.iter().find(|(r, _)| &**r == role).map(|(_, i)| i)
    }

    fn forget(&mut self, instance: &str) {
        self.0.retain(|(_, i)| &**i != instance);
    }
}

/// The `(role, instance)` pairs of an `Exo-Members` header; bad parts are
/// skipped.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(',').filter_map(|part| {
        let (role, inst) = part.split_once('=')?;
        let (role, inst) = (role.trim(), inst.trim());
        (!role.is_empty() && !inst.is_empty()).then_some((role, inst))
    })
}

/// The instance of `role` that an `Exo-Members` header names.
pub(crate) fn member_in_header<'a>(header: &'a str, role: &str) -> Option<&'a str> {
    pairs(header)
        .filter(|(r, _)| *r == role)
        .map(|(_, i)| i)
        .last()
}

#[derive(Debug)]
struct Entry {
    members: Members,
    last: Instant,
}

/// The activities this instance took part in recently.
pub(crate) struct Activities {
    current: IdMap<u64, Entry>,
    previous: IdMap<u64, Entry>,
    started: Instant,
    ttl: Duration,
    half_cap: usize,
    keys: ActivityKeys,
    names: HashMap<Box<str>, Arc<str>>,
}

impl Activities {
    /// An empty table.
    pub(crate) fn new(ttl: Duration, cap: usize) -> Activities {
        Activities {
            current: IdMap::default(),
            previous: IdMap::default(),
            started: Instant::now(),
            ttl,
            half_cap: (cap / 2).max(1),
            keys: ActivityKeys::default(),
            names: HashMap::new(),
        }
    }

    /// The table's key of an activity id.
    pub(crate) fn key(&self, activity: &str) -> u64 {
        self.keys.key(activity)
    }

    /// A shared copy of a name.
    fn name(&mut self, text: &str) -> Arc<str> {
        if let Some(n) = self.names.get(text) {
            return n.clone();
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let n: Arc<str> = Arc::from(text);
        self.names.insert(Box::from(text), n.clone());
        n
    }

    fn rotate_if_due(&mut self, now: Instant) {
        if self.current.len() >= self.half_cap || now.duration_since(self.started) >= self.ttl {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.started = now;
        }
    }

    /// A message of the activity passes here (sent or received): takes in
    /// the members its header names, then this instance as its role's
    /// member; returns the members now known and the time since the
    /// activity's previous message here (if it had one within the TTL).
    pub(crate) fn touch(
        &mut self,
        key: u64,
        header: Option<&str>,
        me: (&str, &str),
        now: Instant,
    ) -> (Members, Option<Duration>) {
        self.rotate_if_due(now);
        let mut entry = self
            .current
            .remove(&key)
            .or_else(|| self.previous.remove(&key))
            .unwrap_or(Entry {
                members: Members::default(),
                last: now,
            });
        let since = now.saturating_duration_since(entry.last);
        let known = since > Duration::ZERO && since < self.ttl;
        if since >= self.ttl {
            entry.members = Members::default();
        }
        entry.last = now;
        if let Some(header) = header {
            for (role, inst) in pairs(header) {
                let (role, inst) = (self.name(role), self.name(inst));
                entry.members.add(role, inst);
            }
        }
        let (role, inst) = (self.name(me.0), self.name(me.1));
        entry.members.add(role, inst);
        let members = entry.members.clone();
        self.current.insert(key, entry);
        (members, known.then_some(since))
    }

    /// An instance of the activity is gone: later copies go to its role.
    pub(crate) fn forget(&mut self, key: u64, instance: &str) {
        for map in [&mut self.current, &mut self.previous] {
            if let Some(e) = map.get_mut(&key) {
                e.members.forget(instance);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_newest_wins() {
        let mut t = Activities::new(Duration::from_secs(10), 100);
        let k = t.key("a");
        let now = Instant::now();
        let (m, _) = t.touch(
            k,
            Some("web=web-1,ping=ping-2,bad,=x"),
            ("users", "u-1"),
            now,
        );
        assert_eq!(m.header(), "web=web-1,ping=ping-2,users=u-1");
        let (m, _) = t.touch(k, Some("web=web-9"), ("users", "u-1"), now);
        assert_eq!(m.of("web").map(|i| &**i), Some("web-9"));
        assert_eq!(m.header(), "ping=ping-2,users=u-1,web=web-9");
        t.forget(k, "ping-2");
        let (m, _) = t.touch(k, None, ("users", "u-1"), now);
        assert_eq!(m.of("ping"), None);
        assert_eq!(member_in_header("web=w1,ping=p1", "ping"), Some("p1"));
        assert_eq!(member_in_header("web=w1", "ping"), None);
    }

    #[test]
    fn remembers_members_and_time_and_forgets_after_the_ttl() {
        let mut t = Activities::new(Duration::from_secs(10), 100);
        let k = t.key("a");
        let t0 = Instant::now();
        let (m, since) = t.touch(k, Some("web=w1"), ("users", "u1"), t0);
        assert_eq!(since, None);
        assert_eq!(m.of("web").map(|i| &**i), Some("w1"));
        let t1 = t0 + Duration::from_millis(5);
        let (m, since) = t.touch(k, Some("ping=p1"), ("users", "u1"), t1);
        assert_eq!(since, Some(Duration::from_millis(5)));
        assert_eq!(m.header(), "web=w1,users=u1,ping=p1");
        let late = t1 + Duration::from_secs(25);
        let (m, since) = t.touch(k, None, ("users", "u1"), late);
        assert_eq!((m.header(), since), ("users=u1".to_owned(), None));
    }

    #[test]
    fn stays_bounded() {
        let mut t = Activities::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        for i in 0..1000 {
            let k = t.key(&i.to_string());
            t.touch(k, Some(&format!("web=w{i}")), ("users", "u1"), now);
        }
        assert!(t.current.len() + t.previous.len() <= 10);
        assert!(t.names.len() <= MAX_NAMES);
    }
}

//! Which instance of each role took part in an activity, as this instance
//! knows it (from the `Exo-Members` header of what it sent and received),
//! and when the activity's last message passed here (for `responseTime`).
//!
//! Bounded like the bus's table: two generations; an activity is forgotten
//! one TTL after its last message at the earliest, two at the latest, or
//! sooner when a generation holds `cap / 2` activities.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most this many roles are remembered per activity.
const MAX_MEMBERS: usize = 6;

/// The members of one activity: (role, instance), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Members(Vec<(String, String)>);

impl Members {
    /// Reads an `Exo-Members` header (`role=instance,…`); bad parts are skipped.
    pub(crate) fn parse(text: &str) -> Members {
        let mut m = Members::default();
        for part in text.split(',') {
            if let Some((role, inst)) = part.split_once('=')
                && !role.is_empty()
                && !inst.is_empty()
            {
                m.add(role.trim(), inst.trim());
            }
        }
        m
    }

    /// Writes the header value.
    pub(crate) fn header(&self) -> String {
        let mut out = String::new();
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
    pub(crate) fn add(&mut self, role: &str, instance: &str) {
        if let Some(i) = self.0.iter().position(|(r, _)| r == role) {
            if self.0[i].1 == instance {
                return;
            }
            self.0.remove(i);
        }
        if self.0.len() >= MAX_MEMBERS {
            self.0.remove(0);
        }
        self.0.push((role.to_owned(), instance.to_owned()));
    }

    /// Takes in what another view of the activity knows (its entries win).
    pub(crate) fn merge(&mut self, other: &Members) {
        for (role, inst) in &other.0 {
            self.add(role, inst);
        }
    }

    /// The instance of `role`, if known.
    pub(crate) fn of(&self, role: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, i)| i.as_str())
    }

    /// Forgets `instance` (it left).
    pub(crate) fn forget(&mut self, instance: &str) {
        self.0.retain(|(_, i)| i != instance);
    }
}

#[derive(Debug)]
struct Entry {
    members: Members,
    last: Instant,
}

/// The activities this instance took part in recently.
pub(crate) struct Activities {
    current: HashMap<String, Entry>,
    previous: HashMap<String, Entry>,
    started: Instant,
    ttl: Duration,
    cap: usize,
}

impl Activities {
    /// An empty table.
    pub(crate) fn new(ttl: Duration, cap: usize) -> Activities {
        Activities {
            current: HashMap::new(),
            previous: HashMap::new(),
            started: Instant::now(),
            ttl,
            cap: cap.max(2),
        }
    }

    fn rotate_if_due(&mut self, now: Instant) {
        if self.current.len() >= self.cap / 2 || now.duration_since(self.started) >= self.ttl {
            self.previous = std::mem::take(&mut self.current);
            self.started = now;
        }
    }

    fn entry(&mut self, activity: &str, now: Instant) -> (&mut Entry, Option<Duration>) {
        self.rotate_if_due(now);
        if !self.current.contains_key(activity)
            && let Some(old) = self.previous.remove(activity)
        {
            self.current.insert(activity.to_owned(), old);
        }
        let ttl = self.ttl;
        let entry = self
            .current
            .entry(activity.to_owned())
            .or_insert_with(|| Entry {
                members: Members::default(),
                last: now,
            });
        let since = now.duration_since(entry.last);
        let known = entry.last != now && since < ttl;
        if since >= ttl {
            entry.members = Members::default();
        }
        entry.last = now;
        (entry, known.then_some(since))
    }

    /// A message of the activity passes here (sent or received) with what
    /// it says about the members; returns the members now known and the
    /// time since the activity's previous message here (if it had one).
    pub(crate) fn touch(
        &mut self,
        activity: &str,
        seen: &Members,
        now: Instant,
    ) -> (Members, Option<Duration>) {
        let (entry, since) = self.entry(activity, now);
        entry.members.merge(seen);
        (entry.members.clone(), since)
    }

    /// An instance of the activity is gone: later copies go to its role.
    pub(crate) fn forget(&mut self, activity: &str, instance: &str) {
        for map in [&mut self.current, &mut self.previous] {
            if let Some(e) = map.get_mut(activity) {
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
        let mut m = Members::parse("web=web-1,ping=ping-2,bad,=x");
        assert_eq!(m.header(), "web=web-1,ping=ping-2");
        m.add("web", "web-9");
        assert_eq!(m.of("web"), Some("web-9"));
        assert_eq!(m.header(), "ping=ping-2,web=web-9");
        m.forget("ping-2");
        assert_eq!(m.of("ping"), None);
    }

    #[test]
    fn remembers_members_and_time_and_forgets_after_the_ttl() {
        let mut t = Activities::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let (m, since) = t.touch("a", &Members::parse("web=w1"), t0);
        assert_eq!(since, None);
        assert_eq!(m.of("web"), Some("w1"));
        let t1 = t0 + Duration::from_millis(5);
        let (m, since) = t.touch("a", &Members::parse("ping=p1"), t1);
        assert_eq!(since, Some(Duration::from_millis(5)));
        assert_eq!(m.header(), "web=w1,ping=p1");
        let late = t1 + Duration::from_secs(25);
        let (m, since) = t.touch("a", &Members::default(), late);
        assert_eq!((m.header(), since), (String::new(), None));
    }

    #[test]
    fn stays_bounded() {
        let mut t = Activities::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        for i in 0..1000 {
            t.touch(&i.to_string(), &Members::default(), now);
        }
        assert!(t.current.len() + t.previous.len() <= 10);
    }
}

//! The activity table: which connections took part in an activity (for
//! stickiness), and when its last message passed the bus (for
//! `responseTime`).
//!
//! Memory stays bounded by two generations of at most `cap / 2` entries
//! each. New and touched activities live in the current generation; when it
//! is full, or one TTL after it started, the previous generation is
//! forgotten and the current one becomes the previous. An activity is thus
//! forgotten at the earliest one TTL after its last message (exactly then,
//! for look-ups, which check its age) and at the latest two TTLs after it,
//! unless the cap forces the oldest generation out sooner.
//!
//! Keys are 64-bit keyed hashes of the activity ids (SipHash with random
//! keys), which keeps an entry at 32 bytes. Two different ids colliding is
//! astronomically unlikely; it would only cost stickiness and a wrong
//! `responseTime`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// A connection, by number (never 0).
pub(crate) type ConnId = u32;

/// Connections that took part in an activity, oldest first (0 = free slot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Members([ConnId; 4]);

impl Members {
    /// Adds a connection (forgetting the oldest when all slots are taken).
    pub(crate) fn add(&mut self, conn: ConnId) {
        if conn == 0 || self.0.contains(&conn) {
            return;
        }
        if let Some(free) = self.0.iter_mut().find(|c| **c == 0) {
            *free = conn;
        } else {
            self.0.rotate_left(1);
            self.0[3] = conn;
        }
    }

    /// The members, newest first.
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.0.iter().rev().copied().filter(|c| *c != 0)
    }
}

/// One activity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Activity {
    /// When its last message passed the bus (ns on the bus's clock).
    pub(crate) last: u64,
    /// Who took part.
    pub(crate) members: Members,
}

/// A hasher for keys that are hashes or small numbers already.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A `HashMap` keyed by ids or hashes.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Turns activity ids into table keys (SipHash with keys random per bus).
#[derive(Default)]
pub(crate) struct ActivityKeys(RandomState);

impl ActivityKeys {
    /// The key of an activity id.
    pub(crate) fn key(&self, activity_id: &str) -> u64 {
        self.0.hash_one(activity_id)
    }
}

/// The table.
pub(crate) struct ActivityTable {
    current: IdMap<u64, Activity>,
    previous: IdMap<u64, Activity>,
    current_since: u64,
    ttl: u64,
    half_cap: usize,
}

impl ActivityTable {
    /// A table that remembers activities for `ttl_ns` after their last
    /// message, and at most `cap` of them.
    pub(crate) fn new(ttl_ns: u64, cap: usize) -> ActivityTable {
        ActivityTable {
            current: IdMap::default(),
            previous: IdMap::default(),
            current_since: 0,
            ttl: ttl_ns.max(1),
            half_cap: (cap / 2).max(1),
        }
    }

    /// How many activities are remembered.
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Forgets the previous generation when the current one is full or one
    /// TTL old.
    pub(crate) fn rotate_if_due(&mut self, now: u64) {
        if self.current.len() >= self.half_cap || now.saturating_sub(self.current_since) >= self.ttl
        {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            // Give memory back once traffic calmed down.
            let wanted = self.previous.len().max(1024);
            if self.current.capacity() > 4 * wanted {
                self.current.shrink_to(wanted);
            }
            self.current_since = now;
        }
    }

    /// Adds a member to a remembered activity without touching its time.
    pub(crate) fn add_member(&mut self, key: u64, conn: ConnId) {
        if let Some(a) = self.current.get_mut(&key) {
            a.members.add(conn);
        } else if let Some(a) = self.previous.get_mut(&key) {
            a.members.add(conn);
        }
    }

    /// The activity with this key, as a message of it passes the bus at
    /// `now`: returns the nanoseconds since its previous message (`None`
    /// for a new or expired activity) and its entry, with `last` set to
    /// `now`. An expired activity starts over without members.
    pub(crate) fn touch(&mut self, key: u64, now: u64) -> (Option<u64>, &mut Activity) {
        // Rotating first is safe: an activity of the current generation
        // then sits in the previous one, where it is found below.
        self.rotate_if_due(now);
        let ttl = self.ttl;
        let alive = |a: &Activity| now.saturating_sub(a.last) < ttl;
        match self.current.entry(key) {
            Entry::Occupied(entry) => {
                let activity = entry.into_mut();
                let since = if alive(activity) {
                    Some(now.saturating_sub(activity.last))
                } else {
                    activity.members = Members::default();
                    None
                };
                activity.last = now;
                (since, activity)
            }
            Entry::Vacant(entry) => {
                let (since, members) = match self.previous.remove(&key) {
                    Some(old) if alive(&old) => (Some(now.saturating_sub(old.last)), old.members),
                    _ => (None, Members::default()),
                };
                (since, entry.insert(Activity { last: now, members }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_members_and_times() {
        let keys = ActivityKeys::default();
        let mut t = ActivityTable::new(1_000, 100);
        let k = keys.key("a1");
        let (since, a) = t.touch(k, 10);
        assert_eq!(since, None);
        a.members.add(7);
        let (since, a) = t.touch(k, 25);
        assert_eq!(since, Some(15));
        assert_eq!(a.members.newest_first().collect::<Vec<_>>(), [7]);
        // Expired: starts over.
        let (since, a) = t.touch(k, 2_000);
        assert_eq!(since, None);
        assert_eq!(a.members.newest_first().count(), 0);
    }

    #[test]
    fn stays_bounded() {
        let keys = ActivityKeys::default();
        let mut t = ActivityTable::new(u64::MAX / 4, 1000);
        for i in 0..100_000u64 {
            let k = keys.key(&i.to_string());
            t.touch(k, i);
            assert!(t.len() <= 1000);
        }
        // The newest are still there.
        let k = keys.key("99999");
        assert!(t.touch(k, 100_000).0.is_some());
    }

    #[test]
    fn members_keep_the_newest() {
        let mut m = Members::default();
        for c in 1..=6 {
            m.add(c);
        }
        m.add(6);
        assert_eq!(m.newest_first().collect::<Vec<_>>(), [6, 5, 4, 3]);
    }
}

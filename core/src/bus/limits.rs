//! Counters of who was let in and who was not: open connections, upgrades
//! refused (no or wrong token, too many connections), registrations
//! refused (a token of another role), connections closed for an oversized
//! frame, failed TLS handshakes. Plain atomics, bumped only when something
//! happens at the door (never per message), read by anyone holding the
//! [`LimitCounters`] (see [`BusHandle::limits`](super::BusHandle::limits)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one bus. All are totals since the start, except
/// [`LimitCounters::connections`], the WebSocket connections open now.
#[derive(Debug, Default)]
pub struct LimitCounters {
    connections: AtomicU64,
    accepted: AtomicU64,
    refused_unauthorized: AtomicU64,
    refused_too_many: AtomicU64,
    refused_wrong_role: AtomicU64,
    closed_oversized: AtomicU64,
    tls_failures: AtomicU64,
}

/// The counters at one moment (see [`LimitCounters::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSnapshot {
    /// WebSocket connections open now.
    pub connections: u64,
    /// WebSocket connections accepted since the start.
    pub accepted: u64,
    /// Upgrades refused with HTTP 401 (no token or a wrong one).
    pub refused_unauthorized: u64,
    /// Upgrades refused with HTTP 503 (the most connections were open).
    pub refused_too_many: u64,
    /// Registrations refused: the connection's token is another role's
    /// (the connection is closed).
    pub refused_wrong_role: u64,
    /// Connections closed because they sent a frame larger than the limit.
    pub closed_oversized: u64,
    /// TLS handshakes that failed (or took too long).
    pub tls_failures: u64,
}

impl LimitCounters {
    /// Fresh counters, all zero.
    pub fn new() -> Arc<LimitCounters> {
        Arc::new(LimitCounters::default())
    }

    /// WebSocket connections open now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn snapshot(&self) -> LimitSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LimitSnapshot {
            connections: get(&self.connections),
            accepted: get(&self.accepted),
            refused_unauthorized: get(&self.refused_unauthorized),
            refused_too_many: get(&self.refused_too_many),
            refused_wrong_role: get(&self.refused_wrong_role),
            closed_oversized: get(&self.closed_oversized),
            tls_failures: get(&self.tls_failures),
        }
    }

    /// Takes a connection slot unless `max` are taken; counts a refusal
    /// otherwise. The slot is given back when the returned guard drops.
    pub(crate) fn take_slot(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Some(Slot(self.clone()))
            }
            Err(_) => {
                self.refused_too_many.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub(crate) fn unauthorized(&self) -> u64 {
        self.refused_unauthorized.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn wrong_role(&self) -> u64 {
        self.refused_wrong_role.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn oversized(&self) -> u64 {
        self.closed_oversized.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn tls_failure(&self) -> u64 {
        self.tls_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn refused_too_many(&self) -> u64 {
        self.refused_too_many.load(Ordering::Relaxed)
    }
}

/// One taken connection slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot(Arc<LimitCounters>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let c = LimitCounters::new();
        let a = c.take_slot(2).unwrap();
        let _b = c.take_slot(2).unwrap();
        assert!(c.take_slot(2).is_none());
        assert_eq!(c.snapshot().refused_too_many, 1);
        drop(a);
        assert_eq!(c.connections(), 1);
        let _c = c.take_slot(2).unwrap();
        let s = c.snapshot();
        assert_eq!((s.connections, s.accepted, s.refused_too_many), (2, 3, 1));
        assert!(c.take_slot(0).is_none());
    }
}

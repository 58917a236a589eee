//! The bus's counters and their Prometheus text (`GET /metrics`), plus the
//! pieces the service side reuses: a histogram of atomics and a writer of
//! the text exposition format 0.0.4.
//!
//! The hot path only adds to atomics: each (public message name, receiving
//! role) pair of the routes got a fixed slot when the routes were compiled
//! ([`super::table::Receiver::slot`]), so counting a routed copy is one
//! indexed `fetch_add`, without look-up, lock or allocation. Gauges
//! (connections, queue depths, activities) are read from the routing state
//! when `/metrics` is asked for.

use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::table::{RoleId, Table};

/// Routing latency buckets (upper bounds, nanoseconds): 2 µs to 100 ms.
pub(crate) const ROUTING_BUCKETS_NS: &[u64] = &[
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    25_000_000,
    100_000_000,
];

/// A histogram with fixed buckets, safe to update from any thread.
pub(crate) struct Histogram {
    bounds: &'static [u64],
    /// One count per bucket (not cumulative) and one past the last bound.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds in nanoseconds (ascending).
    pub(crate) fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    #[inline]
    pub(crate) fn observe_ns(&self, ns: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    #[inline]
    pub(crate) fn observe_since(&self, start: Instant) {
        self.observe_ns(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Builds a text exposition (format 0.0.4).
pub(crate) struct Exposition {
    out: String,
}

/// The content type of [`Exposition`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub(crate) fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(4096),
        }
    }

    /// `# HELP` and `# TYPE` of a metric family.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = write!(self.out, "\n# TYPE {name} {kind}\n");
    }

    /// One sample line.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (key, value)) in all.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(key);
            self.out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram (its
    /// family line written before).
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match h.bounds.get(i) {
                Some(ns) => seconds(*ns),
                None => "+Inf".to_owned(),
            };
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let sum = h.sum_ns.load(Ordering::Relaxed);
        self.sample(&format!("{name}_sum"), labels, seconds(sum));
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Nanoseconds as seconds, exactly (`0.000025`, `1`, `2.5`).
pub(crate) fn seconds(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Why the bus did not deliver a message or a copy of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a message (bad JSON, no name), or a registration without sender.
    BadFrame,
    /// Sent by a connection that has not registered.
    Unregistered,
    /// `sender` names another role than the connection registered as.
    WrongSender,
    /// The sender's `sends` does not list it.
    NotAllowed,
    /// No role of the routes receives it.
    NoReceivers,
    /// A copy for a role without instance (after the startup grace period).
    NoInstance,
    /// A copy for an instance whose outgoing queue was full.
    QueueFull,
    /// A copy for an instance that was being disconnected.
    Closed,
    /// The security role refused it.
    Unauthorized,
    /// Held for the security role and dropped: no answer in time, too
    /// many waiting, or no security instance.
    SecurityDropped,
    /// Held for a role during the startup grace period and dropped.
    HeldDropped,
}

impl Refusal {
    const ALL: [Refusal; 11] = [
        Refusal::BadFrame,
        Refusal::Unregistered,
        Refusal::WrongSender,
        Refusal::NotAllowed,
        Refusal::NoReceivers,
        Refusal::NoInstance,
        Refusal::QueueFull,
        Refusal::Closed,
        Refusal::Unauthorized,
        Refusal::SecurityDropped,
        Refusal::HeldDropped,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::BadFrame => "bad_frame",
            Refusal::Unregistered => "unregistered",
            Refusal::WrongSender => "wrong_sender",
            Refusal::NotAllowed => "not_allowed",
            Refusal::NoReceivers => "no_receivers",
            Refusal::NoInstance => "no_instance",
            Refusal::QueueFull => "queue_full",
            Refusal::Closed => "closed",
            Refusal::Unauthorized => "unauthorized",
            Refusal::SecurityDropped => "security_dropped",
            Refusal::HeldDropped => "held_dropped",
        }
    }
}

/// The name and role labels of the bucket for copies without a slot.
const OTHER: &str = "(other)";

/// The bus's counters.
pub(crate) struct BusMetrics {
    /// Copies queued for an instance, per [`super::table::Receiver::slot`];
    /// the last entry counts copies without a slot.
    routed: Box<[AtomicU64]>,
    /// (message, role) of each slot.
    slot_labels: Box<[(Arc<str>, Arc<str>)]>,
    refused: [AtomicU64; Refusal::ALL.len()],
    pub(crate) routing: Histogram,
    frames_in: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    slow_closed: AtomicU64,
    started: Instant,
}

/// Gauges read from the routing state at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// (role, instances, frames queued for all its instances, the most
    /// queued for one instance), sorted by role.
    pub(crate) roles: Vec<(Arc<str>, usize, usize, usize)>,
    /// Connections that have not registered.
    pub(crate) unregistered: usize,
    /// Activities remembered.
    pub(crate) activities: usize,
    /// Copies held for roles during the startup grace period.
    pub(crate) held: usize,
}

impl BusMetrics {
    pub(crate) fn new(table: &Table) -> BusMetrics {
        let role_name = |id: RoleId| -> Arc<str> {
            table
                .role(id)
                .map_or_else(|| Arc::from(OTHER), |r| r.name.clone())
        };
        let slot_labels: Box<[(Arc<str>, Arc<str>)]> = table
            .slots
            .iter()
            .map(|(name, role)| (name.clone(), role_name(*role)))
            .chain([(Arc::from(OTHER), Arc::from(OTHER))])
            .collect();
        BusMetrics {
            routed: slot_labels.iter().map(|_| AtomicU64::new(0)).collect(),
            slot_labels,
            refused: Default::default(),
            routing: Histogram::new(ROUTING_BUCKETS_NS),
            frames_in: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            slow_closed: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A copy for this receiver slot was queued for an instance (every
    /// frame the bus queues is counted here, so their sum is the frames
    /// sent).
    #[inline]
    pub(crate) fn routed(&self, slot: usize) {
        let counter = self
            .routed
            .get(slot)
            .unwrap_or_else(|| &self.routed[self.routed.len() - 1]);
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A message or copy was refused.
    #[inline]
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused_n(why, 1);
    }

    /// `n` messages or copies were refused.
    pub(crate) fn refused_n(&self, why: Refusal, n: u64) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(n, Ordering::Relaxed);
    }

    /// A frame was read from a connection.
    #[inline]
    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket connection opened.
    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket connection closed.
    pub(crate) fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A slow connection was disconnected (queue policy `disconnect`).
    pub(crate) fn slow_closed(&self) {
        self.slow_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The text of `GET /metrics`.
    pub(crate) fn render(
        &self,
        gauges: &Gauges,
        queue_capacity: usize,
        extra: impl FnOnce(&mut Exposition),
    ) -> String {
        let mut e = Exposition::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        e.family(
            "exocom_messages_routed_total",
            "counter",
            "Copies of messages queued for an instance, by public message name and receiving role.",
        );
        for (i, (message, role)) in self.slot_labels.iter().enumerate() {
            e.sample(
                "exocom_messages_routed_total",
                &[("message", message), ("role", role)],
                load(&self.routed[i]),
            );
        }
        e.family(
            "exocom_messages_refused_total",
            "counter",
            "Messages (or copies of messages) the bus did not deliver, by reason.",
        );
        for (i, why) in Refusal::ALL.iter().enumerate() {
            e.sample(
                "exocom_messages_refused_total",
                &[("reason", why.label())],
                load(&self.refused[i]),
            );
        }
        e.family(
            "exocom_connections",
            "gauge",
            "Registered connections (instances) per role.",
        );
        for (role, instances, _, _) in &gauges.roles {
            e.sample("exocom_connections", &[("role", role)], instances);
        }
        e.single(
            "exocom_unregistered_connections",
            "gauge",
            "WebSocket connections that have not registered.",
            gauges.unregistered,
        );
        e.family(
            "exocom_queue_depth",
            "gauge",
            "Frames waiting to be written, summed over the instances of a role.",
        );
        for (role, _, sum, _) in &gauges.roles {
            e.sample("exocom_queue_depth", &[("role", role)], sum);
        }
        e.family(
            "exocom_queue_depth_max",
            "gauge",
            "Frames waiting to be written to the fullest instance of a role.",
        );
        for (role, _, _, max) in &gauges.roles {
            e.sample("exocom_queue_depth_max", &[("role", role)], max);
        }
        e.single(
            "exocom_queue_capacity",
            "gauge",
            "Frames at most queued per connection.",
            queue_capacity,
        );
        e.family(
            "exocom_routing_seconds",
            "histogram",
            "Time from reading a message to queueing its copies for the receivers.",
        );
        e.histogram("exocom_routing_seconds", &[], &self.routing);
        e.single(
            "exocom_frames_received_total",
            "counter",
            "Frames read from connections.",
            load(&self.frames_in),
        );
        e.single(
            "exocom_frames_sent_total",
            "counter",
            "Frames queued to be written to connections.",
            self.routed.iter().map(load).sum::<u64>(),
        );
        e.single(
            "exocom_connections_opened_total",
            "counter",
            "WebSocket connections accepted.",
            load(&self.opened),
        );
        e.single(
            "exocom_connections_closed_total",
            "counter",
            "WebSocket connections that ended.",
            load(&self.closed),
        );
        e.single(
            "exocom_slow_connections_closed_total",
            "counter",
            "Connections closed because their outgoing queue was full (queue policy disconnect).",
            load(&self.slow_closed),
        );
        e.single(
            "exocom_activities",
            "gauge",
            "Activities remembered (for stickiness and responseTime).",
            gauges.activities,
        );
        e.single(
            "exocom_held_messages",
            "gauge",
            "Copies held for roles that have not registered yet (startup grace period).",
            gauges.held,
        );
        extra(&mut e);
        e.single(
            "exocom_uptime_seconds",
            "gauge",
            "Seconds since the bus started.",
            seconds(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
        );
        e.finish()
    }
}

/// The door's counters (connection limit, tokens, frame size, TLS).
pub(crate) fn render_limits(e: &mut Exposition, l: &super::limits::LimitSnapshot) {
    e.single(
        "exocom_open_connections",
        "gauge",
        "WebSocket connections open now (registered or not).",
        l.connections,
    );
    e.single(
        "exocom_connections_accepted_total",
        "counter",
        "WebSocket upgrades let in by the connection limit.",
        l.accepted,
    );
    e.family(
        "exocom_connections_refused_total",
        "counter",
        "Connections refused or closed at the door, by reason.",
    );
    for (reason, n) in [
        ("unauthorized", l.refused_unauthorized),
        ("too_many_connections", l.refused_too_many),
        ("wrong_role", l.refused_wrong_role),
        ("frame_too_large", l.closed_oversized),
        ("tls_handshake", l.tls_failures),
    ] {
        e.sample("exocom_connections_refused_total", &[("reason", reason)], n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(2_000), "0.000002");
        assert_eq!(seconds(25_000_000), "0.025");
        assert_eq!(seconds(2_500_000_000), "2.5");
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family("m", "counter", "a \\ b\nc \"d\"");
        e.sample("m", &[("k", "x\"y\\z\nw")], 3);
        assert_eq!(
            e.finish(),
            "# HELP m a \\\\ b\\nc \"d\"\n# TYPE m counter\nm{k=\"x\\\"y\\\\z\\nw\"} 3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        static B: &[u64] = &[10, 100];
        let h = Histogram::new(B);
        for ns in [5, 10, 50, 1000] {
            h.observe_ns(ns);
        }
        let mut e = Exposition::new();
        e.histogram("h", &[("a", "b")], &h);
        assert_eq!(
            e.finish(),
            "h_bucket{a=\"b\",le=\"0.00000001\"} 2\nh_bucket{a=\"b\",le=\"0.0000001\"} 3\nh_bucket{a=\"b\",le=\"+Inf\"} 4\nh_sum{a=\"b\"} 0.000001065\nh_count{a=\"b\"} 4\n"
        );
    }
}

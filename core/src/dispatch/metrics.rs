//! A service's own metrics: handled messages, handler errors and latency
//! per message name, deliveries in flight, messages no handler saw, the
//! outgoing buffer and the connection; and the small HTTP endpoint that
//! serves them (`/metrics`, Prometheus text format 0.0.4) with `/healthz`
//! (200 while registered with the bus, else 503) when
//! `EXOSERVICE_METRICS_PORT` is set.
//!
//! Counting happens in core, on every [`super::Delivery`], so every
//! binding gets it: a delivery counts as handled when it is dropped (its
//! handler finished), and as an error too when the host called
//! [`super::Delivery::fail`] on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::bus::http::{self, HeadError};
use crate::bus::metrics::{CONTENT_TYPE, Exposition, Histogram};
use crate::error::{ExoError, Result};
use crate::relay::Outbox;
use crate::transport::Link;

/// Handler latency buckets (upper bounds, nanoseconds): 100 µs to 10 s.
const HANDLER_BUCKETS_NS: &[u64] = &[
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `message` label of names the config does not list.
const OTHER: &str = "(other)";

/// The counters of one service, one slot per name under `receives`.
pub(crate) struct ServiceMetrics {
    names: Box<[String]>,
    index: HashMap<String, usize>,
    handled: Box<[AtomicU64]>,
    errors: Box<[AtomicU64]>,
    redelivered: Box<[AtomicU64]>,
    dead_letters: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
    in_flight: AtomicU64,
    unhandled: AtomicU64,
}

impl ServiceMetrics {
    /// Slots for these names (sorted, without duplicates) and one for
    /// any other name.
    pub(crate) fn new(receives: &[String]) -> ServiceMetrics {
        let mut names: Vec<String> = receives.to_vec();
        names.sort();
        names.dedup();
        names.push(OTHER.to_owned());
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = names.len();
        ServiceMetrics {
            names: names.into_boxed_slice(),
            index,
            handled: (0..n).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..n).map(|_| AtomicU64::new(0)).collect(),
            redelivered: (0..n).map(|_| AtomicU64::new(0)).collect(),
            dead_letters: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..n).map(|_| Histogram::new(HANDLER_BUCKETS_NS)).collect(),
            in_flight: AtomicU64::new(0),
            unhandled: AtomicU64::new(0),
        }
    }

    /// The slot of a message name.
    pub(crate) fn slot(&self, name: &str) -> usize {
        self.index
            .get(name)
            .copied()
            .unwrap_or(self.names.len() - 1)
    }

    /// A delivery went to the host.
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery was dropped: its handler is done.
    pub(crate) fn finished(&self, slot: usize, start: Instant, failed: bool) {
        let slot = slot.min(self.names.len() - 1);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.handled[slot].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.latency[slot].observe_since(start);
    }

    /// A delivery of a message that came again (attempt 2 or later).
    pub(crate) fn redelivered(&self, slot: usize) {
        let slot = slot.min(self.names.len() - 1);
        self.redelivered[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// An at-least-once message was given up and stored as a dead letter by
    /// this service: its handler failed on the last attempt, or the
    /// instances handling it stopped before they finished it.
    pub(crate) fn dead_lettered(&self, slot: usize) {
        let slot = slot.min(self.names.len() - 1);
        self.dead_letters[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A message no handler saw (no handler for its name, or it arrived
    /// while the service was stopping).
    pub(crate) fn unhandled(&self) {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
    }

    /// The text of `GET /metrics`.
    pub(crate) fn render(&self, probe: &Probe) -> String {
        let mut e = Exposition::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_name =
            |e: &mut Exposition, metric: &str, kind: &str, help: &str, v: &[AtomicU64]| {
                e.family(metric, kind, help);
                for (name, value) in self.names.iter().zip(v) {
                    e.sample(metric, &[("message", name)], load(value));
                }
            };
        per_name(
            &mut e,
            "exoservice_messages_handled_total",
            "counter",
            "Messages whose handler finished (with or without error), by message name.",
            &self.handled,
        );
        per_name(
            &mut e,
            "exoservice_handler_errors_total",
            "counter",
            "Messages whose handler failed, by message name.",
            &self.errors,
        );
        per_name(
            &mut e,
            "exoservice_redeliveries_total",
            "counter",
            "Deliveries of at-least-once messages that came again (after a failed handler or a stopped instance), by message name.",
            &self.redelivered,
        );
        per_name(
            &mut e,
            "exoservice_dead_letters_total",
            "counter",
            "At-least-once messages given up because their handler failed on the last attempt (sent to the dead-letter subject), by message name.",
            &self.dead_letters,
        );
        e.family(
            "exoservice_handler_seconds",
            "histogram",
            "Time from handing a message to its handler until the handler finished, by message name.",
        );
        for (name, h) in self.names.iter().zip(self.latency.iter()) {
            e.histogram("exoservice_handler_seconds", &[("message", name)], h);
        }
        e.single(
            "exoservice_in_flight",
            "gauge",
            "Messages handed to handlers that have not finished.",
            load(&self.in_flight),
        );
        e.single(
            "exoservice_messages_unhandled_total",
            "counter",
            "Messages dropped without a handler: none registered for the name, or the service was stopping.",
            load(&self.unhandled),
        );
        e.single(
            "exoservice_outgoing_buffer",
            "gauge",
            "Messages waiting in the outgoing buffer for the bus.",
            probe.outbox.len(),
        );
        e.single(
            "exoservice_outgoing_buffer_capacity",
            "gauge",
            "The most messages the outgoing buffer holds.",
            probe.outbox.capacity(),
        );
        e.single(
            "exoservice_connected",
            "gauge",
            "1 while the service is connected and registered with the bus, else 0.",
            u8::from(probe.connected()),
        );
        e.single(
            "exoservice_registrations_total",
            "counter",
            "Times the service registered with the bus (once per connection).",
            probe.registrations(),
        );
        e.finish()
    }
}

/// What the endpoint reads besides the counters.
pub(crate) struct Probe {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) relay: Arc<Mutex<Option<Link>>>,
    pub(crate) stopping: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Probe {
    fn with_relay<T>(&self, f: impl FnOnce(&Link) -> T) -> Option<T> {
        let relay = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        relay.as_ref().map(f)
    }

    fn connected(&self) -> bool {
        self.with_relay(|r| r.is_connected() && r.registrations() > 0)
            .unwrap_or(false)
    }

    fn registrations(&self) -> u64 {
        self.with_relay(Link::registrations).unwrap_or(0)
    }

    /// Registered and not stopping.
    fn healthy(&self) -> bool {
        self.connected() && !(self.stopping)()
    }
}

/// A running metrics endpoint; dropping it stops it.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (on the caller's thread, so a taken port is an error
    /// at once) and serves on `runtime`.
    pub(crate) fn start(
        addr: SocketAddr,
        metrics: Arc<ServiceMetrics>,
        probe: Probe,
        runtime: &tokio::runtime::Handle,
    ) -> Result<MetricsServer> {
        let cannot = |e: std::io::Error| {
            ExoError::Usage(format!(
                "cannot serve metrics on {addr} (EXOSERVICE_METRICS_PORT): {e}"
            ))
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(cannot)?;
        std_listener.set_nonblocking(true).map_err(cannot)?;
        let addr = std_listener.local_addr().map_err(cannot)?;
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(std_listener).map_err(cannot)?;
        let probe = Arc::new(probe);
        let task = runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let (metrics, probe) = (metrics.clone(), probe.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(http::HEAD_TIMEOUT, answer(stream, &metrics, &probe))
                            .await;
                });
            }
        });
        tracing::info!("metrics at http://{addr}/metrics");
        Ok(MetricsServer { addr, task })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl MetricsServer {
    /// Stops serving and waits until the port is closed (aborting a task
    /// only asks the runtime to stop it; its listener closes when it has).
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one request.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    metrics: &ServiceMetrics,
    probe: &Probe,
) {
    let request = match http::read_request(&mut stream).await {
        Ok(r) => r,
        Err(HeadError::TooLarge) => {
            let _ = http::too_large(&mut stream).await;
            return;
        }
        Err(HeadError::Malformed(_)) => {
            let _ = http::bad_request(&mut stream).await;
            return;
        }
        Err(_) => return,
    };
    let text = "text/plain; charset=utf-8";
    let _ = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => {
            let body = metrics.render(probe);
            http::respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes()).await
        }
        ("GET", "/healthz") if probe.healthy() => {
            http::respond(&mut stream, "200 OK", text, b"ok\n").await
        }
        ("GET", "/healthz") => {
            let body: &[u8] = if (probe.stopping)() {
                b"stopping\n"
            } else {
                b"not registered with the bus\n"
            };
            http::respond(&mut stream, "503 Service Unavailable", text, body).await
        }
        _ => {
            http::respond(
                &mut stream,
                "404 Not Found",
                text,
                b"Not Found: try /metrics or /healthz\n",
            )
            .await
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_name_with_an_other_slot() {
        let m = ServiceMetrics::new(&["b".into(), "a".into(), "a".into()]);
        assert_eq!(m.slot("a"), 0);
        assert_eq!(m.slot("b"), 1);
        assert_eq!(m.slot("zzz"), 2);
        m.started();
        m.finished(m.slot("b"), Instant::now(), true);
        assert_eq!(m.handled[1].load(Ordering::Relaxed), 1);
        assert_eq!(m.errors[1].load(Ordering::Relaxed), 1);
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
    }
}

//! The `exocom` process with a receiver that never reads while a sender
//! floods it: the bus's memory (VmRSS of the process) stays within its
//! per-connection queue cap, the fast receiver gets everything, and with
//! `EXOCOM_QUEUE_POLICY=disconnect` the slow receiver is disconnected.
//! Bounded: a fixed number of messages, every wait has a deadline, the bus
//! is killed at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use exo_harness::{Proc, bin, port_in, request};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(20);
/// Messages sent by the flood, 64 KiB each: 96 MiB in all.
const N: usize = 1500;
const PAYLOAD: usize = 64 * 1024;
/// The queue cap per connection: 32 × 64 KiB = 2 MiB.
const CAP: usize = 32;
const ROUTES: &str =
    r#"{"tester":{"sends":["ping"]},"ping":{"receives":["ping"]},"log":{"receives":["ping"]}}"#;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client {
    sink: SplitSink<Ws, WsMessage>,
    stream: SplitStream<Ws>,
}

impl Client {
    async fn register(port: u16, role: &str) -> Client {
        let url = format!("ws://127.0.0.1:{port}/services");
        let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let (mut sink, stream) = ws.split();
        let reg = json!({"name": "exocom.register-service", "sender": role, "id": "r", "activityId": "r"});
        sink.send(WsMessage::text(reg.to_string())).await.unwrap();
        Client { sink, stream }
    }

    /// The next text frame; `None` once the connection ended or nothing
    /// came within `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<()> {
        loop {
            match timeout(wait, self.stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(_)))) => return Some(()),
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn start_bus(policy: &str) -> (Proc, u16) {
    let mut bus = Proc::spawn(
        Command::new(bin("exocom"))
            .arg("--quiet-routes")
            .env("PORT", "0")
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("SERVICE_DATA", ROUTES)
            .env("EXOCOM_QUEUE_CAPACITY", CAP.to_string())
            .env("EXOCOM_QUEUE_POLICY", policy)
            .env("EXOCOM_STARTUP_GRACE_MS", "0"),
    );
    let line = bus.wait_for("ExoCom online at port", WAIT);
    (bus, port_in(&line))
}

/// The value of one sample line of the bus's `/metrics`.
fn metric(port: u16, series: &str) -> f64 {
    let body = request(port, "GET", "/metrics", None)
        .expect("GET /metrics")
        .body;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

/// Floods 'ping' (never reads) and 'log' (reads); returns (copies 'log'
/// got, the largest RSS growth seen in KiB).
async fn flood(bus_pid: u32, port: u16) -> (usize, u64) {
    let mut tester = Client::register(port, "tester").await;
    let ping = Client::register(port, "ping").await;
    let mut log = Client::register(port, "log").await;
    let deadline = Instant::now() + WAIT;
    while metric(port, "exocom_connections{role=\"log\"}") < 1.0
        || metric(port, "exocom_connections{role=\"ping\"}") < 1.0
    {
        assert!(Instant::now() < deadline, "the clients did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = rss_kib(bus_pid);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < N && log.recv_within(WAIT).await.is_some() {
            got += 1;
        }
        got
    });
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..2000 {
            peak = peak.max(rss_kib(bus_pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    let payload = json!("x".repeat(PAYLOAD));
    let started = Instant::now();
    for i in 0..N {
        let frame = json!({"name": "ping", "id": format!("m{i}"), "activityId": format!("a{i}"), "sender": "tester", "payload": payload});
        timeout(WAIT, tester.sink.send(WsMessage::text(frame.to_string())))
            .await
            .expect("the bus keeps reading the sender")
            .expect("send");
    }
    let got = timeout(WAIT * 2, reader)
        .await
        .expect("'log' reads in time")
        .unwrap();
    let after = rss_kib(bus_pid);
    sampler.abort();
    let peak = after.max(rss_kib(bus_pid));
    println!(
        "flooded {N} × {PAYLOAD} B in {:?}: bus RSS {base} KiB before, {after} KiB after",
        started.elapsed()
    );
    drop(ping);
    (got, peak.saturating_sub(base))
}

/// What the queues may hold (two connections receive) plus room for the
/// bus's own buffers and allocator slack; far below the 96 MiB sent.
const RSS_BOUND_KIB: u64 = (2 * CAP * PAYLOAD / 1024) as u64 + 24 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_reads_does_not_grow_the_bus() {
    let (mut bus, port) = start_bus("drop");
    let pid = bus.child.id();
    let (got, growth) = flood(pid, port).await;
    assert_eq!(got, N, "'log' gets every copy");
    assert!(
        growth < RSS_BOUND_KIB,
        "the bus grew by {growth} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    let dropped = metric(port, "exocom_messages_refused_total{reason=\"queue_full\"}");
    assert!(dropped > 0.0, "copies for 'ping' were dropped");
    bus.wait_for(
        "Warning: Dropped 'ping' for 'ping': the instance's queue is full",
        WAIT,
    );
    bus.signal("TERM");
    assert_eq!(bus.wait_exit(WAIT), Some(0));
    let warnings = bus
        .seen
        .iter()
        .filter(|l| l.contains("the instance's queue is full"))
        .count();
    assert_eq!(warnings, 1, "one warning per connection:\n{}", bus.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disconnect_policy_drops_the_slow_receiver_only() {
    let (mut bus, port) = start_bus("disconnect");
    let pid = bus.child.id();
    let (got, growth) = flood(pid, port).await;
    assert_eq!(got, N, "'log' gets every copy");
    assert!(
        growth < RSS_BOUND_KIB,
        "the bus grew by {growth} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    bus.wait_for("Warning: Disconnected an instance of 'ping'", WAIT);
    let deadline = Instant::now() + WAIT;
    while metric(port, "exocom_connections{role=\"ping\"}") != 0.0 {
        assert!(Instant::now() < deadline, "'ping' is still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(port, "exocom_slow_connections_closed_total"), 1.0);
    // 'log' is still served: a new message reaches a new 'log' instance.
    let mut tester = Client::register(port, "tester").await;
    let mut log = Client::register(port, "log").await;
    let deadline = Instant::now() + WAIT;
    while metric(port, "exocom_connections{role=\"log\"}") < 1.0 {
        assert!(Instant::now() < deadline, "'log' did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frame = json!({"name": "ping", "id": "late", "activityId": "late", "sender": "tester"});
    tester
        .sink
        .send(WsMessage::text(frame.to_string()))
        .await
        .unwrap();
    assert!(log.recv_within(WAIT).await.is_some());
    bus.signal("TERM");
    assert_eq!(bus.wait_exit(WAIT), Some(0));
}

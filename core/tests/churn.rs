//! Churn: 10,000 connections come, register and leave (half with a
//! WebSocket close frame, half by dropping the TCP connection, some before
//! the bus answered them) against the `exocom` program, while a producer
//! streams numbered messages to a consumer through it. Nothing sent to the
//! connected consumer may be lost, duplicated or reordered, every churning
//! connection must be registered and removed again, and the bus's resident
//! memory must come back to within 10% of what it was after a warm-up.
//!
//! Runs `exocom` from the same build (`target/debug/exocom`, built by
//! `cargo build --workspace` or `cargo test --workspace`; `EXOCOM_BIN`
//! names another). Bounded: it fails rather than run past about a minute
//! (the churn must be done within 50 s; it takes about 15 s on 2 cores).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Churning connections measured (after the warm-up).
const CYCLES: usize = 10_000;
/// Churning connections before the first memory sample.
const WARMUP: usize = 1_000;
/// Churning clients at once.
const WORKERS: usize = 8;
/// Messages per second from the producer to the consumer.
const RATE: u64 = 2_000;
/// The whole test fails rather than run longer.
const BUDGET: Duration = Duration::from_secs(50);
/// One step (connect, an echo, a close) fails after this.
const STEP: Duration = Duration::from_secs(10);

const ROUTES: &str = r#"{
  "producer": {"sends": ["tick"]},
  "consumer": {"receives": ["tick"]},
  "churn": {"sends": ["echo"], "receives": ["echo", "tick"]}
}"#;

/// The `exocom` program: `EXOCOM_BIN`, else the one beside this test's
/// build.
fn exocom_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EXOCOM_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test's path");
    // target/debug/deps/churn-… → target/debug/exocom
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the profile directory")
        .join("exocom");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// What the bus printed, counted as it arrives.
#[derive(Default)]
struct BusLog {
    registered: AtomicUsize,
    disconnected: AtomicUsize,
    /// `Warning: ...` and `Error: ...` lines after the steady pair
    /// registered.
    problems: Mutex<Vec<String>>,
}

/// The running bus; killed when dropped.
struct BusProcess {
    child: Child,
    port: u16,
    log: Arc<BusLog>,
}

impl BusProcess {
    fn start() -> BusProcess {
        let mut child = Command::new(exocom_bin())
            .arg("--quiet-routes")
            .env("PORT", "0")
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("SERVICE_DATA", ROUTES)
            .env("EXOCOM_STARTUP_GRACE_MS", "0")
            .env_remove("RUST_LOG")
            .env_remove("EXO_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start exocom");
        let stdout = child.stdout.take().expect("exocom's stdout");
        let log = Arc::new(BusLog::default());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let counts = log.clone();
        std::thread::spawn(move || {
            // Warnings count once the steady pair registered (start-up
            // warnings, say that no tokens are configured, come before).
            let mut pair = 0;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "'consumer' registered" || line == "'producer' registered" {
                    pair += 1;
                } else if let Some(port) = line.strip_prefix("ExoCom online at port ") {
                    let _ = port_tx.send(port.trim().parse::<u16>().ok());
                } else if line == "'churn' registered" {
                    counts.registered.fetch_add(1, Ordering::Relaxed);
                } else if line == "'churn' disconnected" {
                    counts.disconnected.fetch_add(1, Ordering::Relaxed);
                } else if pair >= 2 && (line.starts_with("Warning:") || line.starts_with("Error:"))
                {
                    counts.problems.lock().unwrap().push(line);
                }
            }
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        let Some(port) = port else {
            let _ = child.kill();
            panic!("exocom did not print `ExoCom online at port N` within 10 s");
        };
        BusProcess { child, port, log }
    }

    /// The bus's resident memory in KiB (`VmRSS`).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status of exocom");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for BusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(port: u16) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/services");
    let (ws, _) = timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect within 10 s")
        .expect("connect to the bus");
    ws
}

fn frame(name: &str, sender: &str, id: &str, activity: &str, payload: Value) -> WsMessage {
    WsMessage::text(
        json!({
            "name": name,
            "sender": sender,
            "id": id,
            "activityId": activity,
            "payload": payload,
        })
        .to_string(),
    )
}

async fn register(ws: &mut Ws, role: &str) {
    ws.send(frame(
        "exocom.register-service",
        role,
        "r",
        "r",
        Value::Null,
    ))
    .await
    .expect("send the registration");
}

/// Reads frames until `name` with `activityId` `activity` arrives.
async fn wait_for(ws: &mut Ws, name: &str, activity: &str) {
    let wait = async {
        while let Some(item) = ws.next().await {
            let Ok(WsMessage::Text(text)) = item else {
                continue;
            };
            let msg: Value = serde_json::from_str(&text).expect("the bus sends JSON");
            if msg["name"] == name && msg["activityId"] == activity {
                return;
            }
        }
        panic!("the bus closed the connection before '{name}' came back");
    };
    timeout(STEP, wait)
        .await
        .unwrap_or_else(|_| panic!("'{name}' ({activity}) did not come back within 10 s"));
}

/// One churning connection, in one of four ways of leaving.
async fn churn_once(port: u16, worker: usize, i: usize) {
    let mut ws = connect(port).await;
    register(&mut ws, "churn").await;
    // The activity sticks to its newest member, the sender: the echo comes
    // back to this connection, which proves it is registered. One activity
    // per worker keeps the bus's activity table small.
    let activity = format!("churn-{worker}");
    let echo = frame("echo", "churn", &format!("e{i}"), &activity, json!(i));
    match i % 4 {
        // Echo, then a polite close frame, waiting for the answer.
        0 => {
            ws.send(echo).await.expect("send the echo");
            wait_for(&mut ws, "echo", &activity).await;
            let close = async {
                ws.close(None).await.expect("send a close frame");
                while let Some(Ok(_)) = ws.next().await {}
            };
            timeout(STEP, close).await.expect("the close answered");
        }
        // Echo, then drop the TCP connection.
        1 => {
            ws.send(echo).await.expect("send the echo");
            wait_for(&mut ws, "echo", &activity).await;
            drop(ws);
        }
        // Send the echo and drop the connection at once.
        2 => {
            ws.send(echo).await.expect("send the echo");
            drop(ws);
        }
        // Register and leave with a close frame at once.
        _ => {
            let _ = timeout(STEP, ws.close(None)).await;
            drop(ws);
        }
    }
}

/// Runs `count` churn cycles over `WORKERS` clients, numbered from `first`.
async fn churn(port: u16, first: usize, count: usize, deadline: Instant) {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "churn too slow: cycle {i} of {end} at the deadline"
                );
                churn_once(port, worker, i).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("a churn worker failed");
    }
}

/// Counts of the steady stream.
#[derive(Default)]
struct Stream {
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages that came in out of order or twice.
    disorder: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_loses_nothing_and_gives_memory_back() {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let bus = BusProcess::start();
    let port = bus.port;

    // The steady pair.
    let mut consumer = connect(port).await;
    register(&mut consumer, "consumer").await;
    let mut producer = connect(port).await;
    register(&mut producer, "producer").await;
    // Registration is not acknowledged: wait until the bus logged both.
    let registered = Instant::now();
    while !bus_has_roles(port, &["consumer", "producer"]).await {
        assert!(
            registered.elapsed() < STEP,
            "the steady pair did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stream = Arc::new(Stream::default());
    let stop = Arc::new(AtomicBool::new(false));

    let counts = stream.clone();
    let consuming = tokio::spawn(async move {
        let mut expected = 0u64;
        while let Some(item) = consumer.next().await {
            let Ok(WsMessage::Text(text)) = item else {
                continue;
            };
            let msg: Value = serde_json::from_str(&text).expect("the bus sends JSON");
            assert_eq!(msg["name"], "tick", "{msg}");
            let seq = msg["payload"]["seq"].as_u64().expect("a numbered tick");
            if seq != expected {
                counts.disorder.fetch_add(1, Ordering::Relaxed);
            }
            expected = seq + 1;
            counts.received.fetch_add(1, Ordering::Relaxed);
        }
    });

    let counts = stream.clone();
    let stopping = stop.clone();
    let producing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = RATE / 100;
        let mut seq = 0u64;
        while !stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..per_tick {
                // A handful of activities, so the bus's activity table
                // does not grow with the test's length.
                let activity = format!("steady-{}", seq % 16);
                let msg = frame(
                    "tick",
                    "producer",
                    &format!("t{seq}"),
                    &activity,
                    json!({ "seq": seq }),
                );
                producer.feed(msg).await.expect("send a tick");
                seq += 1;
            }
            producer.flush().await.expect("send ticks");
            counts.sent.store(seq, Ordering::Relaxed);
        }
        producer
    });

    // Warm-up, then the first memory sample.
    churn(port, 0, WARMUP, deadline).await;
    settle(&bus, WARMUP, deadline).await;
    let rss_start = bus.rss_kib();
    let churn_started = Instant::now();

    // Peak memory, sampled while churning.
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampling = {
        let peak = peak.clone();
        let pid = bus.child.id();
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let task = tokio::spawn(async move {
            while !finished.load(Ordering::Relaxed) {
                if let Some(kib) = rss_of(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        (task, done)
    };

    churn(port, WARMUP, CYCLES, deadline).await;
    let churn_time = churn_started.elapsed();
    settle(&bus, WARMUP + CYCLES, deadline).await;
    sampling.1.store(true, Ordering::Relaxed);
    sampling.0.await.expect("the sampler");
    let rss_end = bus.rss_kib();

    // Stop the stream; everything sent must arrive.
    stop.store(true, Ordering::Relaxed);
    let producer = timeout(STEP, producing)
        .await
        .expect("the producer stops")
        .expect("the producer ran");
    let sent = stream.sent.load(Ordering::Relaxed);
    let drained = Instant::now();
    while stream.received.load(Ordering::Relaxed) < sent && drained.elapsed() < STEP {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = stream.received.load(Ordering::Relaxed);
    let disorder = stream.disorder.load(Ordering::Relaxed);
    drop(producer);
    consuming.abort();

    let peak = peak.load(Ordering::Relaxed).max(rss_end);
    println!(
        "churn: {CYCLES} connections (+{WARMUP} warm-up) in {churn_time:.1?} ({:.0}/s), {WORKERS} at once; \
         stream: {sent} sent, {received} received, {disorder} out of order; \
         exocom RSS: start {rss_start} KiB, peak {peak} KiB, end {rss_end} KiB ({:+.1}%); total {:.1?}",
        CYCLES as f64 / churn_time.as_secs_f64(),
        (rss_end as f64 - rss_start as f64) * 100.0 / rss_start as f64,
        started.elapsed()
    );
    let problems = bus.log.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "the bus warned:\n{}",
        problems.join("\n")
    );
    assert_eq!(received, sent, "messages to the consumer were lost");
    assert_eq!(disorder, 0, "messages arrived out of order or twice");
    assert!(sent >= RATE, "the stream barely ran: {sent} messages");
    let registered = bus.log.registered.load(Ordering::Relaxed);
    let disconnected = bus.log.disconnected.load(Ordering::Relaxed);
    assert_eq!(registered, WARMUP + CYCLES, "registrations the bus logged");
    assert_eq!(disconnected, WARMUP + CYCLES, "departures the bus logged");
    assert!(
        rss_end * 10 <= rss_start * 11,
        "the bus's memory did not come back: {rss_start} KiB after the warm-up, {rss_end} KiB after {CYCLES} more connections (peak {peak} KiB)"
    );
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits until the bus logged `count` churn departures and only the
/// steady pair is connected, then a little more for its housekeeping.
async fn settle(bus: &BusProcess, count: usize, deadline: Instant) {
    loop {
        let left = bus.log.disconnected.load(Ordering::Relaxed);
        if left >= count && bus_has_roles(bus.port, &["consumer", "producer"]).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {left} of {count} churning connections left in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Whether `/config.json` lists exactly these roles, one instance each.
async fn bus_has_roles(port: u16, roles: &[&str]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        serde_json::from_str::<Value>(&body).ok()
    };
    let Ok(Some(config)) = timeout(STEP, get).await else {
        return false;
    };
    let Some(clients) = config["clients"].as_array() else {
        return false;
    };
    clients.len() == roles.len()
        && roles.iter().all(|role| {
            clients
                .iter()
                .any(|c| c["role"] == *role && c["instances"] == 1)
        })
}

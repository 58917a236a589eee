//! `exo bench`: request-reply throughput and latency through a real bus,
//! and the bus's memory with many idle connections.
//!
//! The bus runs as its own process (the `exocom` binary next to `exo`), so
//! its memory is measured alone. The ping services and the driver run in
//! this process, over real WebSockets on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use exoservice::config::ServiceConfig;
use exoservice::{Ctx, Engine, RunningService, Service};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// How many ping services share the load.
    pub services: usize,
    /// Seconds measured per concurrency level (after a short warm-up).
    pub seconds: f64,
    /// The numbers of requests in flight to measure at.
    pub concurrency: Vec<usize>,
    /// How many idle registered connections to hold for the memory figure.
    pub idle: usize,
    /// The `exocom` binary (default: next to this program).
    pub exocom: Option<PathBuf>,
    /// Languages whose ping example (`examples/<lang>-ping`, one process)
    /// is measured too; empty: none.
    pub langs: Vec<String>,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Requests in flight.
    pub concurrency: usize,
    /// Request-replies completed in the measured window.
    pub completed: u64,
    /// Request-replies that failed (timeouts).
    pub failed: u64,
    /// Completed per second.
    pub per_second: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: f64,
}

/// A bus process started for measuring.
pub struct BusProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl BusProcess {
    /// Starts `exocom` on a free loopback port with the given routes JSON,
    /// without per-message log lines, and waits until it is online.
    pub async fn start(exocom: &std::path::Path, routes_json: &str) -> Result<BusProcess, String> {
        let port = free_port()?;
        let mut child = Command::new(exocom)
            .arg("--quiet-routes")
            .env("PORT", port.to_string())
            .env("SERVICE_DATA", routes_json)
            .env("EXOCOM_BIND", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exocom.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout of exocom")?;
        let mut lines = BufReader::new(stdout).lines();
        let online = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ExoCom online at port") {
                    return true;
                }
            }
            false
        })
        .await;
        if online != Ok(true) {
            return Err("exocom did not come online within 10 s".into());
        }
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(BusProcess { child, port })
    }

    /// The resident memory of the bus process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        rss_kib(pid)
    }
}

/// VmRSS of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The routes the bench uses: `bench` asks `ping`, `idle` only connects.
pub const ROUTES: &str = r#"{"bench":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]},"idle":{}}"#;

fn exocom_path(args: &BenchArgs) -> Result<PathBuf, String> {
    if let Some(p) = &args.exocom {
        return Ok(p.clone());
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let p = exe.with_file_name("exocom");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release -p exoservice-cli) or pass --exocom",
            p.display()
        ))
    }
}

/// Starts `n` Rust ping services against the bus on `port`.
pub async fn start_ping_services(n: usize, port: u16) -> Result<Vec<RunningService>, String> {
    let mut services = Vec::new();
    for _ in 0..n {
        let config =
            ServiceConfig::from_parts("ping", ["ping"], ["pong"]).with_exocom("127.0.0.1", port);
        let service = Service::new(config)
            .on("ping", |payload: serde_json::Value, ctx: Ctx| async move {
                ctx.reply("pong", &payload)
            })
            .start()
            .await
            .map_err(|e| e.to_string())?;
        services.push(service);
    }
    for s in &services {
        if !s.wait_online(Duration::from_secs(10)).await {
            return Err("a ping service did not register within 10 s".into());
        }
    }
    Ok(services)
}

/// Drives request-reply at `concurrency` for `window`, after `warmup`.
pub async fn measure(
    engine: &Engine,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> Figures {
    let payload = exoservice::message::raw_from_text(r#"{"n":1,"text":"ping"}"#).unwrap_or(None);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let client = engine.client();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid histogram bounds");
            let (mut ok, mut failed) = (0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = match client.start_request(
                    "ping",
                    payload.clone(),
                    None,
                    Duration::from_secs(5),
                ) {
                    Ok(pending) => pending.wait().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if t0 < start {
                    continue;
                }
                match result {
                    Ok(()) => {
                        ok += 1;
                        let _ = hist.record(t0.elapsed().as_nanos() as u64);
                    }
                    Err(_) => failed += 1,
                }
            }
            (hist, ok, failed)
        }));
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let (mut completed, mut failed) = (0, 0);
    for t in tasks {
        if let Ok((h, ok, f)) = t.await {
            let _ = hist.add(h);
            completed += ok;
            failed += f;
        }
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Figures {
        concurrency,
        completed,
        failed,
        per_second: completed as f64 / window.as_secs_f64(),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
    }
}

/// How many instances of `role` the bus on `port` counts (its `/config.json`).
pub async fn instances(port: u16, role: &str) -> Result<u64, String> {
    let bus = crate::status::BusAddr {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    };
    let (_, body) = crate::status::get(&bus, "/config.json", None).await?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(json["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["role"] == role)
        .filter_map(|c| c["instances"].as_u64())
        .sum())
}

/// Waits (at most `limit`) until the bus counts no instance of `role`.
async fn wait_for_no_instances(port: u16, role: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if instances(port, role).await == Ok(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Measures the ping example of each language, one process each, and
/// prints each one's throughput next to the Rust example's.
async fn bench_languages(args: &BenchArgs, engine: &Engine, port: u16, window: Duration) {
    use crate::bench_langs::{PingProcess, examples_dir};
    let Some(examples) = examples_dir() else {
        println!("\nlanguages: not measured (no examples directory found)");
        return;
    };
    println!();
    println!(
        "request-reply to the ping example of each language (one process each), {:.1} s per level:",
        args.seconds
    );
    println!(
        "{:>8} {:>11} {:>12} {:>8} {:>12} {:>10} {:>10} {:>12}",
        "language", "in flight", "completed", "failed", "per second", "p50 µs", "p99 µs", "vs rust"
    );
    let mut rust: Vec<(usize, f64)> = Vec::new();
    for lang in &args.langs {
        let process = match PingProcess::start(&examples, lang, port).await {
            Ok(p) => p,
            Err(e) => {
                println!("{lang:>8} not measured: {e}");
                continue;
            }
        };
        for &c in &args.concurrency {
            let f = measure(engine, c, Duration::from_millis(500), window).await;
            if lang == "rust" {
                rust.push((c, f.per_second));
            }
            let ratio = rust
                .iter()
                .find(|(rc, _)| *rc == c)
                .filter(|(_, r)| *r > 0.0)
                .map_or("n/a".to_owned(), |(_, r)| {
                    format!("{:.0}%", 100.0 * f.per_second / r)
                });
            println!(
                "{:>8} {:>11} {:>12} {:>8} {:>12.0} {:>10.1} {:>10.1} {:>12}",
                lang, f.concurrency, f.completed, f.failed, f.per_second, f.p50_us, f.p99_us, ratio
            );
        }
        process.stop().await;
        wait_for_no_instances(port, "ping", Duration::from_secs(5)).await;
    }
}

/// Opens `n` connections that register as `idle` and then stay silent.
async fn open_idle(port: u16, n: usize) -> Result<Vec<impl Sized>, String> {
    let url = format!("ws://127.0.0.1:{port}/services");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("idle connection {i}: {e}"))?;
        let register = exoservice::Message {
            sender: Some("idle".into()),
            ..exoservice::Message::new(exoservice::message::REGISTER)
        };
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            register.to_json(),
        ))
        .await
        .map_err(|e| format!("idle connection {i}: {e}"))?;
        conns.push(ws);
    }
    Ok(conns)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Runs the whole benchmark and prints the figures; returns the exit code.
pub async fn bench(args: BenchArgs) -> i32 {
    match bench_inner(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("exo bench: {e}");
            1
        }
    }
}

async fn bench_inner(args: &BenchArgs) -> Result<(), String> {
    let exocom = exocom_path(args)?;
    let bus = BusProcess::start(&exocom, ROUTES).await?;
    let rss_start = bus.rss_kib();
    println!(
        "exo bench: bus `{}` on port {} (pid {:?}), {} Rust ping service(s) in this process",
        exocom.display(),
        bus.port,
        bus.child.id(),
        args.services
    );
    println!("bus RSS at start: {}", mib(rss_start));

    let services = start_ping_services(args.services, bus.port).await?;
    let config =
        ServiceConfig::from_parts("bench", ["pong"], ["ping"]).with_exocom("127.0.0.1", bus.port);
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !engine.wait_online(Duration::from_secs(10)).await {
        return Err("the bench client did not register within 10 s".into());
    }

    println!();
    println!(
        "request-reply through the bus (Rust handler), {:.1} s per level:",
        args.seconds
    );
    println!(
        "{:>11} {:>12} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "in flight", "completed", "failed", "per second", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let window = Duration::from_secs_f64(args.seconds);
    for &c in &args.concurrency {
        let f = measure(&engine, c, Duration::from_millis(500), window).await;
        println!(
            "{:>11} {:>12} {:>8} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
            f.concurrency, f.completed, f.failed, f.per_second, f.p50_us, f.p99_us, f.p999_us
        );
    }
    println!("bus RSS after the load: {}", mib(bus.rss_kib()));

    for s in services {
        s.shutdown().await;
    }
    // Copies must not go to a leaving instance: wait until the bus has
    // seen the in-process services go.
    wait_for_no_instances(bus.port, "ping", Duration::from_secs(5)).await;
    if !args.langs.is_empty() {
        bench_languages(args, &engine, bus.port, window).await;
    }
    engine.drain().await;

    if args.idle > 0 {
        // Once on the loaded bus, once on a fresh one: the allocator keeps
        // some of what the load used, so the fresh bus shows what idle
        // connections alone cost.
        let fresh = BusProcess::start(&exocom, ROUTES).await?;
        for (label, bus) in [("after the load", &bus), ("fresh bus", &fresh)] {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = bus.rss_kib();
            let conns = open_idle(bus.port, args.idle).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = bus.rss_kib();
            if label == "after the load" {
                println!();
            }
            println!(
                "bus RSS with {} idle registered connections ({label}): {} (before them: {}; {} per connection)",
                conns.len(),
                mib(after),
                mib(before),
                match (before, after) {
                    (Some(b), Some(a)) => format!(
                        "{:.1} KiB",
                        a.saturating_sub(b) as f64 / conns.len().max(1) as f64
                    ),
                    _ => "n/a".into(),
                }
            );
            drop(conns);
        }
    }
    Ok(())
}

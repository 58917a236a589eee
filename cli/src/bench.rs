//! `exo bench`: request-reply throughput and latency through a real bus,
//! and the bus's memory with many idle connections; the same request-reply
//! figures over NATS (`--transport nats`, or `both` for the two side by
//! side).
//!
//! The bus runs as its own process (the `exocom` binary next to `exo`), so
//! its memory is measured alone. The ping services and the driver run in
//! this process, over real WebSockets on loopback. Over NATS they connect
//! to the server at `--nats-url`, or to a `nats-server` the bench starts on
//! a free loopback port for the run; the idle-connection memory figure is
//! ExoCom's only.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use exoservice::config::{Env, NatsSettings, ServiceConfig, env};
use exoservice::routes::Routes;
use exoservice::testing::nats::NatsServer;
use exoservice::{Ctx, Engine, RunningService, Service};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::bench_langs::PingTarget;

/// Which transport the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchTransport {
    /// Through an ExoCom bus process (the default).
    #[default]
    Exocom,
    /// Over a NATS server.
    Nats,
    /// ExoCom, then NATS, then the two side by side.
    Both,
}

impl BenchTransport {
    /// Reads `exocom`, `nats` or `both` (any case).
    pub fn parse(text: &str) -> Result<BenchTransport, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "exocom" => Ok(BenchTransport::Exocom),
            "nats" => Ok(BenchTransport::Nats),
            "both" => Ok(BenchTransport::Both),
            other => Err(format!(
                "unknown transport '{other}'; expected exocom, nats or both"
            )),
        }
    }

    fn exocom(self) -> bool {
        matches!(self, BenchTransport::Exocom | BenchTransport::Both)
    }

    fn nats(self) -> bool {
        matches!(self, BenchTransport::Nats | BenchTransport::Both)
    }
}

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
    /// Which transport to measure.
    pub transport: BenchTransport,
    /// The NATS server to use (`nats://host:port`, or a comma-separated
    /// list); `None`: start a `nats-server` for the run.
    pub nats_url: Option<String>,
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

/// The routes of the bench over NATS: `bench` asks `ping`.
pub const NATS_ROUTES: &str = r#"{"bench":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]}}"#;

/// Where the services of a NATS run connect: the server, the app name
/// (a fresh one per run) and the routes.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// The server URL (or comma-separated cluster seeds).
    pub url: String,
    /// The application name (subjects `exo.<app>.…`).
    pub app: String,
    /// The routes JSON ([`NATS_ROUTES`]).
    pub routes_json: String,
    /// The TLS and key files of the environment for a server given by
    /// `--nats-url` (`NATS_CA_FILE`, `NATS_CERT_FILE`, `NATS_KEY_FILE`,
    /// `NATS_NKEY_FILE`, `NATS_CREDS_FILE`, absolute); none for a server the run started.
    pub files: Vec<(&'static str, std::path::PathBuf)>,
}

impl NatsTarget {
    /// The NATS settings of a service of this run.
    pub fn settings(&self) -> Result<NatsSettings, String> {
        let routes = Routes::from_json(&self.routes_json).map_err(|e| e.to_string())?;
        let mut settings = NatsSettings::new(&self.url, &self.app, routes);
        let files = Env::from_pairs(
            self.files
                .iter()
                .map(|(var, path)| (*var, path.display().to_string())),
        );
        settings.ca_file = files.nats_ca_file().map_err(|e| e.to_string())?;
        settings.client_cert = files.nats_client_cert().map_err(|e| e.to_string())?;
        settings.nkey = files.nats_nkey().map_err(|e| e.to_string())?;
        settings.creds = files.nats_creds().map_err(|e| e.to_string())?;
        Ok(settings)
    }

    /// The server URL(s) fit to show (passwords and tokens as `***`).
    pub fn display_url(&self) -> String {
        env::nats_display_url(&self.url)
    }
}

/// A fresh application name for one NATS run (`bench-<pid>-<nanos>`).
fn fresh_app() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench-{}-{nanos}", std::process::id())
}

/// One measured handler at one concurrency, for the side-by-side table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What answered the pings (`Rust, 2 services in-process`, `python example`).
    pub handler: String,
    /// The figures.
    pub figures: Figures,
}

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
    let config =
        ServiceConfig::from_parts("ping", ["ping"], ["pong"]).with_exocom("127.0.0.1", port);
    start_ping_services_with(n, &config).await
}

/// Starts `n` Rust ping services with this config (role `ping`).
pub async fn start_ping_services_with(
    n: usize,
    config: &ServiceConfig,
) -> Result<Vec<RunningService>, String> {
    let mut services = Vec::new();
    for _ in 0..n {
        let config = config.clone();
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
/// prints each one's throughput next to the Rust example's; returns the
/// figures.
async fn bench_languages(
    args: &BenchArgs,
    engine: &Engine,
    target: &PingTarget,
    window: Duration,
) -> Vec<Row> {
    use crate::bench_langs::{PingProcess, examples_dir};
    let mut rows = Vec::new();
    let Some(examples) = examples_dir() else {
        println!("\nlanguages: not measured (no examples directory found)");
        return rows;
    };
    println!();
    let through = match target {
        PingTarget::Exocom { .. } => "",
        PingTarget::Nats(_) => " over NATS",
    };
    println!(
        "request-reply{through} to the ping example of each language (one process each), {:.1} s per level:",
        args.seconds
    );
    println!(
        "{:>8} {:>11} {:>12} {:>8} {:>12} {:>10} {:>10} {:>12}",
        "language", "in flight", "completed", "failed", "per second", "p50 µs", "p99 µs", "vs rust"
    );
    let mut rust: Vec<(usize, f64)> = Vec::new();
    for lang in &args.langs {
        let process = match PingProcess::start(&examples, lang, target).await {
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
            rows.push(Row {
                handler: format!("{lang} example"),
                figures: f,
            });
        }
        process.stop().await;
        if let PingTarget::Exocom { port } = target {
            wait_for_no_instances(*port, "ping", Duration::from_secs(5)).await;
        }
    }
    rows
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
    if args.nats_url.is_some() && !args.transport.nats() {
        return Err("--nats-url is used with --transport nats or --transport both".into());
    }
    let exocom_rows = if args.transport.exocom() {
        Some(bench_exocom(args).await?)
    } else {
        None
    };
    let nats_rows = if args.transport.nats() {
        if exocom_rows.is_some() {
            println!();
        }
        Some(bench_nats(args).await?)
    } else {
        None
    };
    if let (Some(exocom), Some(nats)) = (&exocom_rows, &nats_rows) {
        print_side_by_side(exocom, nats);
    }
    Ok(())
}

/// Prints the title and the column names of a request-reply table.
fn print_figures_header(title: &str, seconds: f64) {
    println!();
    println!("{title}, {seconds:.1} s per level:");
    println!(
        "{:>11} {:>12} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "in flight", "completed", "failed", "per second", "p50 µs", "p99 µs", "p99.9 µs"
    );
}

/// Prints one line of a request-reply table.
fn print_figures(f: &Figures) {
    println!(
        "{:>11} {:>12} {:>8} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
        f.concurrency, f.completed, f.failed, f.per_second, f.p50_us, f.p99_us, f.p999_us
    );
}

/// ExoCom's and NATS's figures of the same handler and concurrency on one
/// line each.
fn print_side_by_side(exocom: &[Row], nats: &[Row]) {
    println!();
    println!("ExoCom and NATS side by side (request-reply; per second, p50 and p99 in µs):");
    println!(
        "{:<32} {:>9} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9}",
        "handler", "in flight", "ExoCom /s", "p50", "p99", "NATS /s", "p50", "p99"
    );
    let cell = |r: Option<&Row>| match r {
        Some(r) => format!(
            "{:>12.0} {:>9.1} {:>9.1}",
            r.figures.per_second, r.figures.p50_us, r.figures.p99_us
        ),
        None => format!("{:>12} {:>9} {:>9}", "n/a", "", ""),
    };
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for r in exocom.iter().chain(nats) {
        let key = (r.handler.as_str(), r.figures.concurrency);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (handler, c) in keys {
        let e = exocom
            .iter()
            .find(|r| r.handler == handler && r.figures.concurrency == c);
        let n = nats
            .iter()
            .find(|r| r.handler == handler && r.figures.concurrency == c);
        println!("{handler:<32} {c:>9} | {} | {}", cell(e), cell(n));
    }
}

/// Request-reply over NATS: the in-process Rust services, then the
/// language examples; returns the figures.
async fn bench_nats(args: &BenchArgs) -> Result<Vec<Row>, String> {
    let started;
    let (url, files) = match &args.nats_url {
        Some(url) => {
            started = None;
            let url = env::nats_url(url).map_err(|e| format!("--nats-url {e}"))?;
            let files = crate::run::nats_files(&Env::process())?;
            println!(
                "exo bench over NATS: server {}",
                env::nats_display_url(&url)
            );
            (url, files)
        }
        None => {
            let server = NatsServer::start().await.map_err(|e| {
                format!("no --nats-url was given and a nats-server could not be started: {e}")
            })?;
            let url = server.url();
            println!(
                "exo bench over NATS: no --nats-url given, so this run started nats-server at {url} (JetStream on, temporary store; stopped at the end)"
            );
            started = Some(server);
            (url, Vec::new())
        }
    };
    let target = NatsTarget {
        url,
        app: fresh_app(),
        routes_json: NATS_ROUTES.to_owned(),
        files,
    };
    println!(
        "app '{}', {} Rust ping service(s) in this process",
        target.app, args.services
    );
    let settings = target.settings()?;
    let ping_config =
        ServiceConfig::from_parts("ping", ["ping"], ["pong"]).with_nats(settings.clone());
    let services = start_ping_services_with(args.services, &ping_config).await?;
    let config = ServiceConfig::from_parts("bench", ["pong"], ["ping"]).with_nats(settings);
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !engine.wait_online(Duration::from_secs(10)).await {
        return Err(format!(
            "the bench client was not online on NATS at {} within 10 s",
            target.display_url()
        ));
    }
    let window = Duration::from_secs_f64(args.seconds);
    let mut rows =
        measure_in_process(args, &engine, "request-reply over NATS (Rust handler)").await;
    for s in services {
        // A drained service has left its queue group: no copy goes to it.
        s.shutdown().await;
    }
    if !args.langs.is_empty() {
        rows.extend(bench_languages(args, &engine, &PingTarget::Nats(target), window).await);
    }
    engine.drain().await;
    if args.idle > 0 {
        println!();
        println!(
            "idle connections: the memory figure is the ExoCom bus's (no bus process over NATS); not measured here"
        );
    }
    drop(started);
    Ok(rows)
}

/// Measures request-reply to the in-process Rust ping services at each
/// concurrency level, printing each level's figures under `title`.
async fn measure_in_process(args: &BenchArgs, engine: &Engine, title: &str) -> Vec<Row> {
    let handler = format!("Rust, {} services in-process", args.services);
    let window = Duration::from_secs_f64(args.seconds);
    print_figures_header(title, args.seconds);
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        let figures = measure(engine, c, Duration::from_millis(500), window).await;
        print_figures(&figures);
        rows.push(Row {
            handler: handler.clone(),
            figures,
        });
    }
    rows
}

/// Request-reply through an ExoCom bus process, and the bus's memory;
/// returns the request-reply figures.
async fn bench_exocom(args: &BenchArgs) -> Result<Vec<Row>, String> {
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

    let window = Duration::from_secs_f64(args.seconds);
    let mut rows = measure_in_process(
        args,
        &engine,
        "request-reply through the bus (Rust handler)",
    )
    .await;
    println!("bus RSS after the load: {}", mib(bus.rss_kib()));

    for s in services {
        s.shutdown().await;
    }
    // Copies must not go to a leaving instance: wait until the bus has
    // seen the in-process services go.
    wait_for_no_instances(bus.port, "ping", Duration::from_secs(5)).await;
    if !args.langs.is_empty() {
        let target = PingTarget::Exocom { port: bus.port };
        rows.extend(bench_languages(args, &engine, &target, window).await);
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
    Ok(rows)
}

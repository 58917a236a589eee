//! `exocom`: the ExoCom-compatible bus as a program.
//!
//! ```sh
//! PORT=3100 SERVICE_DATA='{"web":{"sends":["ping"]},"ping":{"receives":["ping"]}}' exocom
//! ```
//!
//! `--app DIR` takes the routes from an application's `application.yml`
//! and its services' files instead of `SERVICE_DATA`.
//!
//! Environment: `PORT` (default 80; `--port` overrides it), `SERVICE_DATA`
//! (the routes as JSON; missing: no routes, with a warning; invalid: exit
//! 1), `EXOCOM_BIND` (the IP address to listen on, default `0.0.0.0`),
//! `EXOCOM_STARTUP_GRACE_MS` (how long copies for roles that have not
//! connected yet are held after the start, default 5000, 0 disables it),
//! `EXOCOM_THREADS` (threads that route, default 1: one thread does all
//! the work, which measured faster than several on small machines, since
//! the bus spends its time in system calls and batches writes best when
//! alone; raise it on big machines with very many connections),
//! `EXOCOM_QUEUE_CAPACITY` (frames queued per connection at most, default
//! 8192; `--queue-capacity` overrides it), `EXOCOM_QUEUE_POLICY` (`drop`,
//! the default, or `disconnect`: what happens to a copy for a full queue;
//! `--queue-policy` overrides it), `EXOCOM_TOKENS` (who may connect: a
//! YAML or JSON file mapping each role to its token, or that mapping
//! inline; `--tokens FILE` overrides it; with `--app`, a `tokens:` section
//! of `application.yml` is used when neither is given; none: anyone may
//! connect, with a warning), `EXOCOM_TLS_CERT` and `EXOCOM_TLS_KEY` (serve
//! `wss://` and `https://` with this PEM certificate chain and key;
//! `--tls-cert`, `--tls-key`), `EXOCOM_MAX_FRAME` (the largest frame read,
//! in bytes or with a `KiB`/`MiB` suffix, default 4 MiB; a larger one
//! closes its connection; `--max-frame`), `EXOCOM_MAX_CONNECTIONS` (the
//! most WebSocket connections at once, default 10000; the next upgrade
//! gets HTTP 503; `--max-connections`). See docs/security.md. It serves `GET /metrics` (Prometheus
//! text) and `GET /healthz` beside `/config.json`. It prints
//! `ExoCom online at port N` once it listens, its log lines on standard
//! output, errors on standard error; a taken port is an error (exit 1);
//! SIGINT or SIGTERM stop it (exit 0).
//!
//! The routes come from [`routes_from_env`]; another source of routes (an
//! application's files, say) only has to build a [`Routes`] and call
//! [`serve`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use exoservice::bus::{
    Bus, BusConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME, LogSink, QueuePolicy, TlsFiles,
    Tokens,
};
use exoservice::routes::Routes;

/// The command line of `exocom`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "exocom", version, about = "An ExoCom-compatible message bus")]
pub struct Args {
    /// The port to listen on [default: $PORT, else 80].
    #[arg(long)]
    pub port: Option<u16>,
    /// Do not log a line per routed message (warnings are still logged).
    #[arg(long)]
    pub quiet_routes: bool,
    /// Take the routes from an application (its directory or its
    /// application.yml and the services' files) instead of SERVICE_DATA.
    #[arg(long, value_name = "DIR")]
    pub app: Option<std::path::PathBuf>,
    /// Frames queued per connection at most [default: $EXOCOM_QUEUE_CAPACITY, else 8192].
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// What happens to a copy for a full queue: drop or disconnect
    /// [default: $EXOCOM_QUEUE_POLICY, else drop].
    #[arg(long, value_name = "POLICY")]
    pub queue_policy: Option<QueuePolicy>,
    /// Who may connect: a YAML or JSON file mapping each role to its
    /// token [default: $EXOCOM_TOKENS; none: anyone].
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<std::path::PathBuf>,
    /// Serve wss:// and https:// with this PEM certificate chain
    /// [default: $EXOCOM_TLS_CERT]; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert [default: $EXOCOM_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The largest frame read, in bytes (or with KiB/MiB); a larger one
    /// closes its connection [default: $EXOCOM_MAX_FRAME, else 4MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_frame: Option<String>,
    /// The most WebSocket connections at once; the next gets HTTP 503
    /// [default: $EXOCOM_MAX_CONNECTIONS, else 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

/// How the bus runs, from the command line and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Whether to log a line per routed copy.
    pub log_routes: bool,
    /// The startup grace period.
    pub startup_grace: Duration,
    /// Frames queued per connection at most.
    pub queue_capacity: usize,
    /// What happens to a copy for a full queue.
    pub queue_policy: QueuePolicy,
    /// The tokens per role (empty: anyone may connect).
    pub tokens: Tokens,
    /// Whether the tokens were given (`--tokens` or `EXOCOM_TOKENS`), so
    /// an application's `tokens:` section is not used.
    pub tokens_given: bool,
    /// Serve TLS with these files.
    pub tls: Option<TlsFiles>,
    /// The largest frame read.
    pub max_frame: usize,
    /// The most WebSocket connections at once.
    pub max_connections: usize,
}

/// A size in bytes: `4194304`, `4MiB`, `512KiB` (also `K`, `KB`, `M`,
/// `MB`, all as powers of 1024).
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(factor).filter(|n| *n > 0)
}

/// A variable of the environment, `None` when unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads `PORT`, `EXOCOM_BIND` and `EXOCOM_STARTUP_GRACE_MS`; the
    /// command line wins over the environment.
    pub fn from_env(args: &Args) -> Result<Settings, String> {
        Settings::from_lookup(args, var)
    }

    /// Like [`Settings::from_env`], with variables from `lookup`.
    pub fn from_lookup(
        args: &Args,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        let port = match args.port {
            Some(p) => p,
            None => match lookup("PORT") {
                Some(p) => p
                    .trim()
                    .parse()
                    .map_err(|_| format!("PORT must be a port number (0-65535), not '{p}'"))?,
                None => 80,
            },
        };
        let ip = match lookup("EXOCOM_BIND") {
            Some(ip) => ip
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("EXOCOM_BIND must be an IP address, not '{ip}'"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let startup_grace = match lookup("EXOCOM_STARTUP_GRACE_MS") {
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| {
                format!("EXOCOM_STARTUP_GRACE_MS must be a number of milliseconds, not '{ms}'")
            })?),
            None => Duration::from_secs(5),
        };
        let queue_capacity = match (args.queue_capacity, lookup("EXOCOM_QUEUE_CAPACITY")) {
            (Some(n), _) => n,
            (None, Some(n)) => n.trim().parse().map_err(|_| {
                format!("EXOCOM_QUEUE_CAPACITY must be a number of frames, not '{n}'")
            })?,
            (None, None) => BusConfig::new(Routes::default()).queue_capacity,
        };
        if queue_capacity == 0 {
            return Err("the queue capacity must be at least 1".to_owned());
        }
        let queue_policy = match (args.queue_policy, lookup("EXOCOM_QUEUE_POLICY")) {
            (Some(p), _) => p,
            (None, Some(p)) => p.parse().map_err(|e| format!("EXOCOM_QUEUE_POLICY: {e}"))?,
            (None, None) => QueuePolicy::Drop,
        };
        let (tokens, tokens_given) = match (&args.tokens, lookup("EXOCOM_TOKENS")) {
            (Some(file), _) => (Tokens::load(file).map_err(|e| e.to_string())?, true),
            (None, Some(value)) => (
                Tokens::from_env_value(&value).map_err(|e| e.to_string())?,
                true,
            ),
            (None, None) => (Tokens::new(), false),
        };
        let cert = args
            .tls_cert
            .clone()
            .or_else(|| lookup("EXOCOM_TLS_CERT").map(Into::into));
        let key = args
            .tls_key
            .clone()
            .or_else(|| lookup("EXOCOM_TLS_KEY").map(Into::into));
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles::new(cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err("a TLS certificate needs its key (--tls-key or EXOCOM_TLS_KEY)".into());
            }
            (None, Some(_)) => {
                return Err(
                    "a TLS key needs its certificate (--tls-cert or EXOCOM_TLS_CERT)".into(),
                );
            }
        };
        let max_frame = match args
            .max_frame
            .clone()
            .or_else(|| lookup("EXOCOM_MAX_FRAME"))
        {
            Some(text) => parse_size(&text).ok_or_else(|| {
                format!(
                    "the largest frame must be a size like 4194304, 512KiB or 4MiB, not '{text}'"
                )
            })?,
            None => DEFAULT_MAX_FRAME,
        };
        let max_connections = match (args.max_connections, lookup("EXOCOM_MAX_CONNECTIONS")) {
            (Some(n), _) => n,
            (None, Some(n)) => n.trim().parse().map_err(|_| {
                format!("EXOCOM_MAX_CONNECTIONS must be a number of connections, not '{n}'")
            })?,
            (None, None) => DEFAULT_MAX_CONNECTIONS,
        };
        if max_connections == 0 {
            return Err("the most connections must be at least 1".to_owned());
        }
        Ok(Settings {
            bind: SocketAddr::new(ip, port),
            log_routes: !args.quiet_routes,
            startup_grace,
            queue_capacity,
            queue_policy,
            tokens,
            tokens_given,
            tls,
            max_frame,
            max_connections,
        })
    }
}

/// The routes from `SERVICE_DATA`: `Ok(None)` when it is not set.
pub fn routes_from_env() -> Result<Option<Routes>, String> {
    match var("SERVICE_DATA") {
        Some(text) => Routes::from_json(&text)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// Runs a bus with these routes until SIGINT or SIGTERM; returns the exit
/// code (0 after a signal, 1 when it cannot listen).
pub async fn serve(routes: Routes, settings: &Settings) -> i32 {
    let stop = exoservice::signals::stop_signal();
    let config = BusConfig::new(routes)
        .with_bind(settings.bind)
        .with_log(LogSink::Stdout)
        .with_route_logging(settings.log_routes)
        .with_startup_grace(settings.startup_grace)
        .with_queue_capacity(settings.queue_capacity)
        .with_queue_policy(settings.queue_policy)
        .with_tokens(settings.tokens.clone())
        .with_max_message_size(settings.max_frame)
        .with_max_connections(settings.max_connections);
    let config = match &settings.tls {
        Some(files) => config.with_tls(files.clone()),
        None => config,
    };
    let bus = match Bus::start(config).await {
        Ok(bus) => bus,
        Err(e) => {
            eprintln!("exocom: cannot start: {e}");
            return 1;
        }
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if !settings.tokens.is_empty() {
            let _ = writeln!(
                out,
                "Tokens required: {} roles have one ({})",
                settings.tokens.roles().len(),
                settings.tokens.roles().join(", ")
            );
        }
        if let Some(files) = &settings.tls {
            let _ = writeln!(
                out,
                "Serving TLS (wss://, https://) with {}",
                files.cert.display()
            );
        }
        let _ = writeln!(out, "ExoCom online at port {}", bus.port());
        let _ = out.flush();
    }
    stop.await;
    bus.shutdown().await;
    0
}

/// Everything `exocom` does after its runtime started: settings, routes,
/// then [`serve`].
pub async fn run(args: Args) -> i32 {
    let mut settings = match Settings::from_env(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exocom: {e}");
            return 1;
        }
    };
    if let Some(app) = &args.app {
        if !settings.tokens_given {
            match Tokens::from_app(app) {
                Ok(Some(tokens)) => settings.tokens = tokens,
                Ok(None) => {}
                Err(e) => {
                    eprintln!("exocom: {e}");
                    return 1;
                }
            }
        }
        return match exoservice::config::AppConfig::load(app) {
            Ok(app) => serve(app.routes(), &settings).await,
            Err(errors) => {
                for e in errors {
                    eprintln!("exocom: {e}");
                }
                1
            }
        };
    }
    let routes = match routes_from_env() {
        Ok(Some(routes)) => routes,
        Ok(None) => {
            println!("Warning: SERVICE_DATA is not set: starting without routes");
            Routes::default()
        }
        Err(e) => {
            eprintln!("exocom: {e}");
            return 1;
        }
    };
    serve(routes, &settings).await
}

/// The `exocom` program: parses the command line, builds the runtime
/// (`EXOCOM_THREADS` threads, default 1) and runs.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let threads = var("EXOCOM_THREADS")
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(1);
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().thread_name("exocom");
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exocom: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(args));
    // Connections are gone already; do not wait for idle blocking threads.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: Args, vars: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_lookup(&args, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[tokio::test]
    async fn a_taken_port_exits_with_1() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = Settings {
            bind: taken.local_addr().unwrap(),
            log_routes: true,
            startup_grace: Duration::ZERO,
            queue_capacity: 16,
            queue_policy: QueuePolicy::Drop,
            tokens: Tokens::new(),
            tokens_given: false,
            tls: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        assert_eq!(serve(Routes::default(), &settings).await, 1);
    }

    #[test]
    fn reads_port_bind_and_grace() {
        let s = settings(Args::default(), &[]).unwrap();
        assert_eq!(s.bind, "0.0.0.0:80".parse().unwrap());
        assert_eq!(s.startup_grace, Duration::from_secs(5));
        assert!(s.log_routes);
        let s = settings(
            Args {
                port: Some(4000),
                quiet_routes: true,
                ..Args::default()
            },
            &[
                ("PORT", "3100"),
                ("EXOCOM_BIND", "127.0.0.1"),
                ("EXOCOM_STARTUP_GRACE_MS", "0"),
                ("EXOCOM_QUEUE_CAPACITY", "64"),
                ("EXOCOM_QUEUE_POLICY", "Disconnect"),
            ],
        )
        .unwrap();
        assert_eq!(s.queue_capacity, 64);
        assert_eq!(s.queue_policy, QueuePolicy::Disconnect);
        assert!(settings(Args::default(), &[("EXOCOM_QUEUE_POLICY", "block")]).is_err());
        assert!(settings(Args::default(), &[("EXOCOM_QUEUE_CAPACITY", "0")]).is_err());
        assert_eq!(s.max_frame, DEFAULT_MAX_FRAME);
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(s.tokens.is_empty() && s.tls.is_none());
        assert_eq!(s.bind, "127.0.0.1:4000".parse().unwrap());
        assert!(s.startup_grace.is_zero());
        assert!(!s.log_routes);
        assert!(settings(Args::default(), &[("PORT", "http")]).is_err());
        assert!(settings(Args::default(), &[("EXOCOM_BIND", "nowhere")]).is_err());
    }

    #[test]
    fn reads_tokens_tls_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yml");
        std::fs::write(&file, "web: w1\nusers: [u1, u2]\n").unwrap();
        let s = settings(
            Args {
                tokens: Some(file.clone()),
                tls_cert: Some("c.pem".into()),
                tls_key: Some("k.pem".into()),
                max_frame: Some("512KiB".into()),
                ..Args::default()
            },
            &[("EXOCOM_MAX_CONNECTIONS", "3")],
        )
        .unwrap();
        assert_eq!(s.tokens.roles(), ["users", "web"]);
        assert!(s.tokens_given);
        assert_eq!(s.tls, Some(TlsFiles::new("c.pem", "k.pem")));
        assert_eq!((s.max_frame, s.max_connections), (512 << 10, 3));
        let s = settings(Args::default(), &[("EXOCOM_TOKENS", r#"{"web": "w"}"#)]).unwrap();
        assert_eq!(s.tokens.roles(), ["web"]);
        let e = settings(
            Args::default(),
            &[
                ("EXOCOM_TOKENS", file.to_str().unwrap()),
                ("EXOCOM_TLS_CERT", "c"),
            ],
        )
        .unwrap_err();
        assert!(e.contains("needs its key"), "{e}");
        std::fs::write(&file, "web: [1, {a: b}]\n").unwrap();
        let e = settings(
            Args::default(),
            &[("EXOCOM_TOKENS", file.to_str().unwrap())],
        )
        .unwrap_err();
        assert!(e.contains("tokens.yml:1:"), "{e}");
        assert!(settings(Args::default(), &[("EXOCOM_MAX_FRAME", "4 GB")]).is_err());
        assert!(settings(Args::default(), &[("EXOCOM_MAX_CONNECTIONS", "0")]).is_err());
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("0"), None);
    }
}

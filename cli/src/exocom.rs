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
//! alone; raise it on big machines with very many connections). It prints
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
use exoservice::bus::{Bus, BusConfig, LogSink};
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
        Ok(Settings {
            bind: SocketAddr::new(ip, port),
            log_routes: !args.quiet_routes,
            startup_grace,
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
        .with_startup_grace(settings.startup_grace);
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
    let settings = match Settings::from_env(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exocom: {e}");
            return 1;
        }
    };
    if let Some(app) = &args.app {
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
                app: None,
            },
            &[
                ("PORT", "3100"),
                ("EXOCOM_BIND", "127.0.0.1"),
                ("EXOCOM_STARTUP_GRACE_MS", "0"),
            ],
        )
        .unwrap();
        assert_eq!(s.bind, "127.0.0.1:4000".parse().unwrap());
        assert!(s.startup_grace.is_zero());
        assert!(!s.log_routes);
        assert!(settings(Args::default(), &[("PORT", "http")]).is_err());
        assert!(settings(Args::default(), &[("EXOCOM_BIND", "nowhere")]).is_err());
    }
}

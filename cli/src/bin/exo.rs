//! `exo`: run an application, send a message, check a config, measure,
//! handle dead letters.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use exo_cli::{bench, check, dead_letters, run, send, status, status_nats};

#[derive(Parser)]
#[command(
    name = "exo",
    version,
    about = "Run, probe and check exoservice applications"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an application: an embedded bus and every service, until Ctrl-C.
    Run {
        /// The application directory (holding application.yml).
        #[arg(default_value = ".")]
        app: PathBuf,
        /// The bus's port [default: $EXOCOM_PORT, else 3100; 0 picks a free one].
        #[arg(long)]
        port: Option<u16>,
        /// The address the bus listens on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Run each service's `setup:` command before starting it.
        #[arg(long)]
        setup: bool,
        /// Seconds every service gets to print its online text.
        #[arg(long, default_value_t = 120.0)]
        online_timeout: f64,
        /// Seconds services get to stop after SIGTERM before they are killed.
        #[arg(long, default_value_t = 15.0)]
        stop_timeout: f64,
        /// Do not log a line per routed message.
        #[arg(long)]
        quiet_routes: bool,
        /// Start a service again when it exits after it was online.
        #[arg(long)]
        restart: bool,
    },
    /// Check an application's or a service's config and print a summary.
    Check {
        /// An application or service directory, or the file itself.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Print the routes as the bus's SERVICE_DATA JSON instead.
        #[arg(long)]
        routes: bool,
    },
    /// Send one message to a bus as a role; with --await print the reply.
    Send {
        /// The message name.
        name: String,
        /// The payload, as JSON.
        payload: Option<String>,
        /// Wait for the first message of the activity and print it.
        #[arg(long = "await")]
        wait: bool,
        /// Seconds to wait for the bus and the reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// The role to send as [default: $ROLE, else `exo`].
        #[arg(long)]
        role: Option<String>,
        /// The bus's host [default: $EXOCOM_HOST, else localhost].
        #[arg(long)]
        host: Option<String>,
        /// The bus's port [default: $EXOCOM_PORT, else 3100, as `exo run`].
        #[arg(long)]
        port: Option<u16>,
        /// Print the whole reply frame as JSON.
        #[arg(long)]
        json: bool,
        /// The token of the role [default: $EXOCOM_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// The bus's URL, ws:// or wss:// (wins over --host and --port)
        /// [default: $EXOCOM_URL].
        #[arg(long)]
        url: Option<String>,
        /// PEM certificates to trust for wss:// [default: $EXOCOM_CA_FILE].
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Send over NATS at this URL (sets EXOSERVICE_TRANSPORT=nats and
        /// NATS_URL) [default: $NATS_URL when EXOSERVICE_TRANSPORT=nats].
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// The application (its directory or application.yml) whose routes,
        /// name, transport and nats-url to use over NATS
        /// [default: $EXOSERVICE_APPLICATION].
        #[arg(long, value_name = "DIR")]
        app: Option<PathBuf>,
    },
    /// Print a bus's live topology: roles, instances, what each sends and
    /// receives, and the message rates (from /config.json and /metrics);
    /// with --nats or --app (or EXOSERVICE_TRANSPORT=nats), an application
    /// on NATS: the instances that answer, and what waits in its stream.
    Status {
        /// The bus: host:port, http://host:port, ws://…, https://… or wss://…
        /// [default: $EXOCOM_HOST:$EXOCOM_PORT, else localhost:3100].
        #[arg(long)]
        bus: Option<String>,
        /// Seconds between the two reads of /metrics the rates come from.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds each request to the bus may take.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// PEM certificates to trust for https:// [default: $EXOCOM_CA_FILE].
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Show an application on NATS at these server(s) [default: $NATS_URL,
        /// else the application's nats-url:, else nats://127.0.0.1:4222].
        #[arg(long, value_name = "URL", conflicts_with = "bus")]
        nats: Option<String>,
        /// Show this application on NATS (its directory or application.yml:
        /// its name, routes and nats-url) [default: $EXOSERVICE_APPLICATION].
        #[arg(long, value_name = "DIR", conflicts_with = "bus")]
        app: Option<PathBuf>,
    },
    /// List, replay or purge the dead letters of an application on NATS:
    /// at-least-once messages whose handler failed on every attempt.
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// The NATS server(s) [default: $NATS_URL, else the application's
        /// nats-url:, else nats://127.0.0.1:4222].
        #[arg(long, value_name = "URL", global = true)]
        nats: Option<String>,
        /// The application (its directory or application.yml) whose name and
        /// nats-url to use [default: $EXOSERVICE_APPLICATION]; $EXOSERVICE_APP
        /// names the application without one.
        #[arg(long, value_name = "DIR", global = true)]
        app: Option<PathBuf>,
        /// Seconds to wait for the server and for each request to it.
        #[arg(long, default_value_t = 5.0, global = true)]
        timeout: f64,
    },
    /// Measure request-reply through a bus (or over NATS), and the bus's memory.
    Bench {
        /// Ping services sharing the load.
        #[arg(long, default_value_t = 2)]
        services: usize,
        /// Seconds measured per concurrency level.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Requests in flight, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,256")]
        concurrency: Vec<usize>,
        /// Idle registered connections for the memory figure (0: skip).
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        /// The exocom binary [default: next to exo].
        #[arg(long)]
        exocom: Option<PathBuf>,
        /// Languages whose ping example (examples/LANG-ping, one process)
        /// is measured too, comma-separated; `none` for none.
        #[arg(long, value_delimiter = ',', default_value = "rust,python,node,c")]
        langs: Vec<String>,
        /// Transport to measure: exocom, nats, or both (side by side).
        #[arg(long, default_value = "exocom", value_parser = bench::BenchTransport::parse)]
        transport: bench::BenchTransport,
        /// The NATS server for --transport nats/both [default: start a
        /// nats-server on a free loopback port for the run].
        #[arg(long)]
        nats_url: Option<String>,
    },
}

/// The actions of `exo dead-letters`.
#[derive(Subcommand)]
enum DeadLetterAction {
    /// Print the dead letters, oldest first: stream sequence, time stored,
    /// role, message name, id, attempts, error, start of the payload.
    List {
        /// Only the dead letters of this role.
        #[arg(long)]
        role: Option<String>,
        /// One JSON object per line, with the whole original frame.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again to their role's at-least-once subject
    /// (a new delivery: attempts count from 1), then delete them.
    Replay(Chosen),
    /// Delete dead letters for good.
    Purge(Chosen),
}

/// Which dead letters `replay` and `purge` take.
#[derive(clap::Args)]
#[command(group(ArgGroup::new("which").required(true)))]
struct Chosen {
    /// Only the dead letters of this role.
    #[arg(long)]
    role: Option<String>,
    /// The stream sequence numbers of the dead letters (from `list`).
    #[arg(long, num_args = 1.., group = "which")]
    seq: Vec<u64>,
    /// Every dead letter (of --role, when given).
    #[arg(long, group = "which")]
    all: bool,
}

impl Chosen {
    /// The role and the selection.
    fn split(self) -> (Option<String>, dead_letters::Selection) {
        let selection = if self.all {
            dead_letters::Selection::All
        } else {
            dead_letters::Selection::Seqs(self.seq)
        };
        (self.role, selection)
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `--port`, else `$EXOCOM_PORT`, else the `exo run` default.
fn port_or_env(port: Option<u16>) -> Result<u16, String> {
    match port {
        Some(p) => Ok(p),
        None => {
            let text = env_or("EXOCOM_PORT", &run::DEFAULT_PORT.to_string());
            text.trim()
                .parse()
                .map_err(|_| format!("EXOCOM_PORT must be a port number, not {text:?}"))
        }
    }
}

fn seconds(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a number of seconds"))
}

#[tokio::main]
async fn main() -> ExitCode {
    exoservice::logging::init();
    let code = match Cli::parse().command {
        Command::Run {
            app,
            port,
            bind,
            setup,
            online_timeout,
            stop_timeout,
            quiet_routes,
            restart,
        } => {
            let port = match port_or_env(port) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("exo run: {e}");
                    return ExitCode::from(2);
                }
            };
            let (online_timeout, stop_timeout) =
                match (seconds(online_timeout), seconds(stop_timeout)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("exo run: {e}");
                        return ExitCode::from(2);
                    }
                };
            let mut args = run::RunArgs::new(app);
            args.port = port;
            args.bind = bind;
            args.setup = setup;
            args.online_timeout = online_timeout;
            args.stop_timeout = stop_timeout;
            args.quiet_routes = quiet_routes;
            args.restart = restart;
            run::run(args).await
        }
        Command::Check { path, routes } => check::check(&check::CheckArgs { path, routes }),
        Command::Send {
            name,
            payload,
            wait,
            timeout,
            role,
            host,
            port,
            json,
            token,
            url,
            ca_file,
            nats,
            app,
        } => {
            let port = match port_or_env(port) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("exo send: {e}");
                    return ExitCode::from(2);
                }
            };
            let timeout = match seconds(timeout) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("exo send: --timeout: {e}");
                    return ExitCode::from(2);
                }
            };
            send::send_with(
                send::SendArgs {
                    name,
                    payload,
                    role: role.unwrap_or_else(|| env_or("ROLE", "exo")),
                    host: host.unwrap_or_else(|| env_or("EXOCOM_HOST", "localhost")),
                    port,
                    wait,
                    timeout,
                    json,
                    token,
                    url,
                    ca_file,
                },
                &send::NatsFlags {
                    url: nats,
                    application: app,
                },
            )
            .await
        }
        Command::Status {
            bus,
            interval,
            timeout,
            ca_file,
            nats,
            app,
        } => {
            let (interval, timeout) = match (seconds(interval), seconds(timeout)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("exo status: {e}");
                    return ExitCode::from(2);
                }
            };
            let on_nats = nats.is_some()
                || app.is_some()
                || (bus.is_none()
                    && std::env::var("EXOSERVICE_TRANSPORT").is_ok_and(|t| t.trim() == "nats"));
            if on_nats {
                let flags = send::NatsFlags {
                    url: nats,
                    application: app,
                };
                let code = status_nats::status(&flags, interval, timeout).await;
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
            }
            status::status(status::StatusArgs {
                bus: bus.unwrap_or_else(|| status::default_bus(|n| std::env::var(n).ok())),
                interval,
                timeout,
                ca_file: ca_file.or_else(|| {
                    std::env::var_os("EXOCOM_CA_FILE")
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                }),
            })
            .await
        }
        Command::DeadLetters {
            action,
            nats,
            app,
            timeout,
        } => {
            let timeout = match seconds(timeout) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("exo dead-letters: --timeout: {e}");
                    return ExitCode::from(2);
                }
            };
            let (role, action) = match action {
                DeadLetterAction::List { role, json } => {
                    (role, dead_letters::Action::List { json })
                }
                DeadLetterAction::Replay(chosen) => {
                    let (role, selection) = chosen.split();
                    (role, dead_letters::Action::Replay(selection))
                }
                DeadLetterAction::Purge(chosen) => {
                    let (role, selection) = chosen.split();
                    (role, dead_letters::Action::Purge(selection))
                }
            };
            dead_letters::dead_letters(dead_letters::DeadLettersArgs {
                nats: send::NatsFlags {
                    url: nats,
                    application: app,
                },
                role,
                timeout,
                action,
            })
            .await
        }
        Command::Bench {
            services,
            seconds,
            concurrency,
            idle,
            exocom,
            langs,
            transport,
            nats_url,
        } => {
            let langs = langs.into_iter().filter(|l| l != "none").collect();
            bench::bench(bench::BenchArgs {
                services,
                seconds,
                concurrency,
                idle,
                exocom,
                langs,
                transport,
                nats_url,
            })
            .await
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

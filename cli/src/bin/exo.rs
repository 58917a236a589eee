//! `exo`: run an application, send a message, check a config, measure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use exo_cli::{bench, send};

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
        /// The bus's port [default: $EXOCOM_PORT, else 80].
        #[arg(long)]
        port: Option<u16>,
        /// Print the whole reply frame as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure request-reply through a bus, and the bus's memory.
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
    },
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn seconds(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a number of seconds"))
}

#[tokio::main]
async fn main() -> ExitCode {
    exoservice::logging::init();
    let code = match Cli::parse().command {
        Command::Send {
            name,
            payload,
            wait,
            timeout,
            role,
            host,
            port,
            json,
        } => {
            let port = match port
                .map(Ok)
                .unwrap_or_else(|| env_or("EXOCOM_PORT", "80").parse())
            {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("exo send: EXOCOM_PORT must be a port number");
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
            send::send(send::SendArgs {
                name,
                payload,
                role: role.unwrap_or_else(|| env_or("ROLE", "exo")),
                host: host.unwrap_or_else(|| env_or("EXOCOM_HOST", "localhost")),
                port,
                wait,
                timeout,
                json,
            })
            .await
        }
        Command::Bench {
            services,
            seconds,
            concurrency,
            idle,
            exocom,
        } => {
            bench::bench(bench::BenchArgs {
                services,
                seconds,
                concurrency,
                idle,
                exocom,
            })
            .await
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

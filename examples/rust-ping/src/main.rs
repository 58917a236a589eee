//! The ping service in Rust: answers `ping` with `pong`, echoing the payload.
//!
//! Run it inside an app with `exo run examples/ping-app`, or on its own
//! against a running bus: `EXOCOM_PORT=3100 cargo run -p rust-ping`.

use std::process::ExitCode;

use exoservice::{Ctx, Service};
use serde_json::Value;

#[tokio::main]
async fn main() -> ExitCode {
    let service = match Service::from_env() {
        Ok(service) => service,
        Err(e) => {
            eprintln!("rust-ping: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = service
        .on("ping", |payload: Value, ctx: Ctx| async move {
            ctx.reply("pong", &payload)
        })
        .run()
        .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rust-ping: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `exo send NAME [JSON]`: send one message to a bus as a role, and with
//! `--await` print the first message that comes back in its activity.

use std::time::Duration;

use exoservice::config::ServiceConfig;
use exoservice::{Engine, message};

/// What to send, where, and as whom.
#[derive(Debug, Clone)]
pub struct SendArgs {
    /// The message name.
    pub name: String,
    /// The payload as JSON text (`None`: no payload).
    pub payload: Option<String>,
    /// The role to send as (it must declare the message under `sends` in the bus's routes).
    pub role: String,
    /// The bus's host.
    pub host: String,
    /// The bus's port.
    pub port: u16,
    /// Wait for the reply and print it.
    pub wait: bool,
    /// How long to wait for the bus and for the reply.
    pub timeout: Duration,
    /// Print the whole reply frame as JSON instead of `NAME PAYLOAD`.
    pub json: bool,
}

/// Runs the command; returns the process exit code. Output goes to stdout,
/// errors to stderr.
pub async fn send(args: SendArgs) -> i32 {
    match send_inner(&args).await {
        Ok(Some(reply)) => {
            if args.json {
                println!("{}", reply.to_json());
            } else {
                println!("{} {}", reply.name, reply.payload_json());
            }
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("exo send: {e}");
            1
        }
    }
}

async fn send_inner(args: &SendArgs) -> Result<Option<message::Message>, String> {
    let payload = match &args.payload {
        Some(text) => message::raw_from_text(text)
            .map_err(|e| format!("the payload is not valid JSON: {e}"))?,
        None => None,
    };
    let config = ServiceConfig::from_parts(
        args.role.clone(),
        Vec::<String>::new(),
        vec![args.name.clone()],
    )
    .with_exocom(args.host.clone(), args.port);
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !engine.wait_online(args.timeout).await {
        return Err(format!(
            "cannot reach ExoCom at ws://{}:{}/services within {:?}",
            args.host, args.port, args.timeout
        ));
    }
    let client = engine.client();
    let result = if args.wait {
        match client.start_request(&args.name, payload, None, args.timeout) {
            Ok(pending) => pending.wait().await.map(Some).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else {
        client
            .send_raw(&args.name, payload, None)
            .map(|()| None)
            .map_err(|e| e.to_string())
    };
    let report = engine.drain().await;
    if report.unsent_messages > 0 {
        return Err(format!("'{}' could not be written to the bus", args.name));
    }
    result
}

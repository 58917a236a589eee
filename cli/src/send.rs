//! `exo send NAME [JSON]`: send one message to a bus as a role, and with
//! `--await` print the first message that comes back in its activity.

use std::time::Duration;

use exoservice::config::{Env, ServiceConfig, env};
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
    /// The role's token (`None`: `$EXOCOM_TOKEN`, if set).
    pub token: Option<String>,
    /// The bus's URL, `ws://` or `wss://`, winning over host and port
    /// (`None`: `$EXOCOM_URL`, if set).
    pub url: Option<String>,
    /// Certificates to trust for `wss://` (`None`: `$EXOCOM_CA_FILE`, if set).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The service config `exo send` connects with: the args, else the
/// `EXOCOM_URL`, `EXOCOM_TOKEN` and `EXOCOM_CA_FILE` of `env`.
pub fn send_config(args: &SendArgs, env: &Env) -> Result<ServiceConfig, String> {
    let mut config = ServiceConfig::from_parts(
        args.role.clone(),
        Vec::<String>::new(),
        vec![args.name.clone()],
    )
    .with_exocom(args.host.clone(), args.port);
    match &args.url {
        Some(url) => {
            config = config
                .with_exocom_url(url)
                .map_err(|e| format!("--url: {}", e.message))?;
        }
        None => {
            if let Some(url) = env.exocom_url().map_err(|e| e.to_string())? {
                config = config
                    .with_exocom_url(&url.to_url())
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    match &args.token {
        Some(token) if env::valid_token(token) => config = config.with_token(token.clone()),
        Some(_) => return Err("--token must be printable ASCII without spaces".into()),
        None => config.exocom_token = env.exocom_token().map_err(|e| e.to_string())?,
    }
    match &args.ca_file {
        Some(file) => config = config.with_ca_file(file.clone()),
        None => config.exocom_ca_file = env.exocom_ca_file().map_err(|e| e.to_string())?,
    }
    Ok(config)
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
    let config = send_config(args, &Env::process())?;
    let url = config
        .exocom_url
        .clone()
        .unwrap_or_else(|| format!("ws://{}:{}/services", args.host, args.port));
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !engine.wait_online(args.timeout).await {
        return Err(format!(
            "cannot reach ExoCom at {url} within {:?} (see the warnings above for why)",
            args.timeout
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

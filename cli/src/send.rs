//! `exo send NAME [JSON]`: send one message to a bus as a role, and with
//! `--await` print the first message that comes back in its activity.
//!
//! Over NATS when the environment says so (`EXOSERVICE_TRANSPORT=nats`, or
//! an `EXOSERVICE_APPLICATION` whose `application.yml` has `transport:
//! nats`), or when [`NatsFlags`] are given: it then sends as its role with
//! the application's routes (`EXOSERVICE_ROUTES`, else those of
//! `EXOSERVICE_APPLICATION`), the role `exo` added to them as `exo run`
//! does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exoservice::config::{Env, NatsSettings, ServiceConfig, Transport, env};
use exoservice::{Engine, message};

use crate::run::{TOOL_ROLE, add_tool_role};

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

/// Command-line settings that put `exo send` on NATS; each stands in for
/// its variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsFlags {
    /// The NATS server(s) (`--nats URL`): sets `EXOSERVICE_TRANSPORT=nats`
    /// and `NATS_URL`.
    pub url: Option<String>,
    /// The application (`--app DIR`, its directory or `application.yml`):
    /// its routes, name, transport and `nats-url:` (`EXOSERVICE_APPLICATION`).
    pub application: Option<PathBuf>,
}

/// The flag that stands in for `NATS_URL` (and `EXOSERVICE_TRANSPORT=nats`).
pub const NATS_FLAG: &str = "--nats";
/// The flag that stands in for `EXOSERVICE_APPLICATION`.
pub const APP_FLAG: &str = "--app";

impl NatsFlags {
    /// `env` with these settings in place of their variables; errors about
    /// a value given by a flag name the flag (`--nats: …`), not the
    /// variable.
    pub fn apply(&self, env: &Env) -> Env {
        let mut env = env.clone();
        if let Some(url) = &self.url {
            env = env
                .with_source(env::TRANSPORT, Transport::Nats.as_str(), NATS_FLAG)
                .with_source(env::NATS_URL, url.clone(), NATS_FLAG);
        }
        if let Some(app) = &self.application {
            env = env.with_source(env::APPLICATION, app.display().to_string(), APP_FLAG);
        }
        env
    }

    /// The NATS settings of a tool that reads an application on NATS
    /// (`exo status --nats`, `exo dead-letters`): those of `env` with these
    /// flags in place of their variables, on NATS whatever
    /// `EXOSERVICE_TRANSPORT` says. Without `EXOSERVICE_ROUTES` or an
    /// application the routes are empty: the application's name is enough.
    pub fn tool_settings(&self, env: &Env) -> Result<NatsSettings, String> {
        let mut env = self
            .apply(env)
            .with(env::TRANSPORT, Transport::Nats.as_str());
        if env.get(env::ROUTES).is_none() && env.get(env::APPLICATION).is_none() {
            env = env.with(env::ROUTES, "{}");
        }
        NatsSettings::from_env(&env)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the settings do not select the nats transport".to_owned())
    }
}

/// The service config `exo send` connects with: the args, else the
/// `EXOCOM_URL`, `EXOCOM_TOKEN` and `EXOCOM_CA_FILE` of `env`; on NATS
/// (see [`NatsSettings::from_env`]) the NATS settings of `env`, with the
/// role `exo` added to the routes.
pub fn send_config(args: &SendArgs, env: &Env) -> Result<ServiceConfig, String> {
    let base = ServiceConfig::from_parts(
        args.role.clone(),
        Vec::<String>::new(),
        vec![args.name.clone()],
    );
    if let Some(mut settings) = NatsSettings::from_env(env).map_err(|e| e.to_string())? {
        if args.role == TOOL_ROLE {
            let routes = (*settings.routes).clone();
            settings.routes = Arc::new(add_tool_role(routes));
        }
        if settings.routes.role(&args.role).is_none() {
            let roles: Vec<&str> = settings.routes.roles.keys().map(String::as_str).collect();
            return Err(format!(
                "role '{}' is not in the application's routes (they have: {}); send as one of them with --role",
                args.role,
                roles.join(", ")
            ));
        }
        return Ok(base.with_nats(settings));
    }
    let mut config = base.with_exocom(args.host.clone(), args.port);
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
    send_with(args, &NatsFlags::default()).await
}

/// [`send`] with NATS settings from the command line.
pub async fn send_with(args: SendArgs, nats: &NatsFlags) -> i32 {
    match send_inner(&args, nats).await {
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

async fn send_inner(args: &SendArgs, nats: &NatsFlags) -> Result<Option<message::Message>, String> {
    let payload = match &args.payload {
        Some(text) => message::raw_from_text(text)
            .map_err(|e| format!("the payload is not valid JSON: {e}"))?,
        None => None,
    };
    let config = send_config(args, &nats.apply(&Env::process()))?;
    let carrier = if config.nats.is_some() {
        "NATS"
    } else {
        "the bus"
    };
    let target = match &config.nats {
        Some(n) => format!(
            "NATS at {} (application '{}')",
            env::nats_display_url(&n.url),
            n.app
        ),
        None => format!(
            "ExoCom at {}",
            config
                .exocom_url
                .clone()
                .unwrap_or_else(|| format!("ws://{}:{}/services", args.host, args.port))
        ),
    };
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !engine.wait_online(args.timeout).await {
        return Err(format!(
            "cannot reach {target} within {:?} (see the warnings above for why)",
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
        return Err(format!("'{}' could not be written to {carrier}", args.name));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_take_the_application_and_server_from_flags_or_env() {
        let env = Env::from_pairs([(env::APP, "shop"), (env::NATS_URL, "127.0.0.1:4333")]);
        let s = NatsFlags::default().tool_settings(&env).expect("settings");
        assert_eq!(s.app, "shop");
        assert_eq!(s.url, "nats://127.0.0.1:4333");
        let flags = NatsFlags {
            url: Some("nats://10.0.0.1:4222".into()),
            application: None,
        };
        let s = flags
            .tool_settings(&env.with(env::TRANSPORT, "exocom"))
            .expect("settings");
        assert_eq!(s.url, "nats://10.0.0.1:4222");
        assert!(
            NatsFlags::default()
                .tool_settings(&env.with(env::APP, "a.b"))
                .is_err()
        );
    }

    #[test]
    fn errors_about_a_flag_value_name_the_flag() {
        let two_users = "nats://ann:s3cret@h1,nats://bob:x@h2";
        let flags = NatsFlags {
            url: Some(two_users.into()),
            application: None,
        };
        // exo status --nats, exo dead-letters.
        let e = flags.tool_settings(&Env::empty()).unwrap_err();
        assert!(
            e.starts_with("--nats: carries different credentials"),
            "{e}"
        );
        assert!(!e.contains("NATS_URL") && !e.contains("s3cret"), "{e}");
        // exo send --nats.
        let args = SendArgs {
            name: "ping".into(),
            payload: None,
            role: TOOL_ROLE.into(),
            host: "localhost".into(),
            port: 3100,
            wait: false,
            timeout: Duration::from_secs(1),
            json: false,
            token: None,
            url: None,
            ca_file: None,
        };
        let routes = Env::from_pairs([(env::ROUTES, "{}")]);
        let e = send_config(&args, &flags.apply(&routes)).unwrap_err();
        assert!(
            e.starts_with("--nats: carries different credentials"),
            "{e}"
        );
        // A ',' in a password given with --nats.
        let comma = NatsFlags {
            url: Some("nats://ann:pa,ss@127.0.0.1:14567".into()),
            application: None,
        };
        let e = comma.tool_settings(&Env::empty()).unwrap_err();
        assert!(
            e.starts_with(
                "--nats: has a bad port in entry 1 of \"nats://ann:***,***@127.0.0.1:14567\""
            ) && e.contains("%2C"),
            "{e}"
        );
        // The same value from the variable names the variable.
        let e = NatsFlags::default()
            .tool_settings(&Env::from_pairs([(env::NATS_URL, two_users)]))
            .unwrap_err();
        assert!(
            e.starts_with("$NATS_URL: carries different credentials"),
            "{e}"
        );
        // Two ways to log in: the flag and the variable are named.
        let dir = tempfile::tempdir().unwrap();
        let nkey = dir.path().join("user.nk");
        std::fs::write(
            &nkey,
            "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU\n",
        )
        .unwrap();
        let login = NatsFlags {
            url: Some("nats://ann:s3cret@h1".into()),
            application: None,
        };
        let with_nkey = Env::from_pairs([(env::NATS_NKEY_FILE, nkey.display().to_string())]);
        let e = login.tool_settings(&with_nkey).unwrap_err();
        assert!(
            e.starts_with(
                "$NATS_NKEY_FILE: cannot be used together with the user and password in --nats: "
            ),
            "{e}"
        );
        let e = send_config(&args, &login.apply(&with_nkey.with(env::ROUTES, "{}"))).unwrap_err();
        assert!(e.contains("the user and password in --nats"), "{e}");
        // --app names itself too.
        let app = NatsFlags {
            url: None,
            application: Some(dir.path().join("missing")),
        };
        let e = app.tool_settings(&Env::empty()).unwrap_err();
        assert!(e.starts_with("--app: no such file or directory"), "{e}");
    }
}

//! Service and application configuration: `service.yml` (and legacy
//! `config.yml`) in all three shapes, `application.yml`, the environment
//! overrides (`ROLE`, `EXOCOM_HOST`, `EXOCOM_PORT`, ...), and the transport
//! (`EXOSERVICE_TRANSPORT`, the NATS settings, `delivery:`).

use std::path::{Path, PathBuf};
use std::time::Duration;

mod app;
pub mod env;
pub mod service_file;
pub mod yaml;

pub use crate::routes::DeliveryMode;
pub use app::{AppConfig, AppService, Visibility};
pub use env::{BusUrl, ClientCert, Env, Secret};

use crate::routes::{Translation, is_valid_role};
use service_file::ServiceFile;

/// Default limit of handlers in flight per service.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default capacity of the outgoing buffer (messages waiting for the bus).
pub const DEFAULT_OUTGOING_BUFFER: usize = 10_000;
/// Default time running handlers get to finish when the service stops.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default NATS server of the `nats` transport.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default application name on NATS (the subject prefix `exo.<app>.`).
pub const DEFAULT_APP: &str = "exo";
/// Default number of attempts of an at-least-once message before it is
/// dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default time an at-least-once message may stay unacknowledged (the
/// handler runs, the instance may have died) before NATS hands it out again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default delay before the second attempt of a failed at-least-once
/// message; it doubles for each further attempt (capped at 60 s).
pub const DEFAULT_REDELIVERY_DELAY: Duration = Duration::from_secs(1);

/// What carries a service's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// ExoCom, the bus process (the default).
    #[default]
    Exocom,
    /// A NATS server or cluster; routing happens in each service.
    Nats,
}

impl Transport {
    /// Reads `exocom` or `nats` (any case).
    pub fn parse(text: &str) -> Option<Transport> {
        match text.trim().to_ascii_lowercase().as_str() {
            "exocom" => Some(Transport::Exocom),
            "nats" => Some(Transport::Nats),
            _ => None,
        }
    }

    /// The name used in config files and `EXOSERVICE_TRANSPORT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Exocom => "exocom",
            Transport::Nats => "nats",
        }
    }
}

/// The settings of the `nats` transport. `Debug` shows no password,
/// token or seed.
#[derive(Clone, PartialEq)]
pub struct NatsSettings {
    /// The server(s): one URL or a comma-separated list of cluster seeds
    /// (`NATS_URL`, default `nats://127.0.0.1:4222`), maybe with
    /// `user:password@` or `token@` (the same on every server that has
    /// any). Show it with [`NatsSettings::display_url`].
    pub url: String,
    /// The application's name: subjects start with `exo.<app>.`, the
    /// JetStream stream is `EXO_<app>` (`EXOSERVICE_APP`, else the
    /// application's `name:`, default `exo`).
    pub app: String,
    /// The routes of the whole application (`EXOSERVICE_ROUTES` as JSON, or
    /// built from `EXOSERVICE_APPLICATION`): the sender routes by them.
    pub routes: std::sync::Arc<crate::routes::Routes>,
    /// Attempts of an at-least-once message before it goes to the
    /// dead-letter subject (`EXOSERVICE_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// How long an at-least-once message may stay unacknowledged
    /// (`EXOSERVICE_ACK_WAIT_MS`, default 30 s). A running handler keeps
    /// extending it; an instance that died loses its messages to another
    /// instance after this long.
    pub ack_wait: Duration,
    /// The delay before a failed message's second attempt; doubled for
    /// each further one, capped at 60 s (`EXOSERVICE_REDELIVERY_DELAY_MS`,
    /// default 1 s).
    pub redelivery_delay: Duration,
    /// Copies of each JetStream message kept by the cluster (1 for one
    /// server; `EXOSERVICE_NATS_REPLICAS`, at most 5).
    pub replicas: usize,
    /// The certificates (PEM) trusted for the servers' TLS instead of the
    /// system's roots; TLS is required when set (`NATS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// This service's client certificate and key, for servers that verify
    /// clients (`NATS_CERT_FILE`, `NATS_KEY_FILE`); TLS is required when
    /// set.
    pub client_cert: Option<ClientCert>,
    /// The user NKey seed this service authenticates with (read from
    /// `NATS_NKEY_FILE`).
    pub nkey: Option<Secret>,
    /// The text of a `.creds` file, a user JWT and its seed, for servers
    /// in operator mode (read from `NATS_CREDS_FILE`).
    pub creds: Option<Secret>,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.display_url())
            .field("app", &self.app)
            .field("routes", &self.routes)
            .field("max_attempts", &self.max_attempts)
            .field("ack_wait", &self.ack_wait)
            .field("redelivery_delay", &self.redelivery_delay)
            .field("replicas", &self.replicas)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .finish()
    }
}

/// Where the routes of the `nats` transport came from (named in errors).
#[derive(Debug, Clone, Copy)]
enum RoutesSource {
    /// `EXOSERVICE_ROUTES`.
    Json,
    /// `EXOSERVICE_APPLICATION`.
    Application,
}

impl RoutesSource {
    fn var(self) -> &'static str {
        match self {
            RoutesSource::Json => env::ROUTES,
            RoutesSource::Application => env::APPLICATION,
        }
    }
}

impl NatsSettings {
    /// The settings the environment asks for, or `None` when the transport
    /// is ExoCom: `EXOSERVICE_TRANSPORT`, else the `transport:` of the
    /// application named by `EXOSERVICE_APPLICATION`, says which. The
    /// routes are `EXOSERVICE_ROUTES`, else the application's; the URL is
    /// `NATS_URL`, else the application's `nats-url:`, else
    /// [`DEFAULT_NATS_URL`]; the name is `EXOSERVICE_APP`, else the
    /// application's `name:` (characters other than letters, digits, `_`
    /// and `-` made `-`), else [`DEFAULT_APP`]; `EXOSERVICE_MAX_ATTEMPTS`,
    /// `EXOSERVICE_ACK_WAIT_MS`, `EXOSERVICE_REDELIVERY_DELAY_MS` and
    /// `EXOSERVICE_NATS_REPLICAS` override the defaults; `NATS_CA_FILE`,
    /// `NATS_CERT_FILE` with `NATS_KEY_FILE`, `NATS_NKEY_FILE` and
    /// `NATS_CREDS_FILE` add TLS and authentication.
    pub fn from_env(env: &Env) -> Result<Option<NatsSettings>, ConfigError> {
        Ok(NatsSettings::from_env_with_source(env)?.map(|(s, _)| s))
    }

    fn from_env_with_source(
        env: &Env,
    ) -> Result<Option<(NatsSettings, RoutesSource)>, ConfigError> {
        let asked = env.transport()?;
        if asked == Some(Transport::Exocom) {
            return Ok(None);
        }
        let application = match env.application()? {
            Some(path) => Some(load_application(&path, env)?),
            None => None,
        };
        let transport = asked
            .or(application.as_ref().and_then(|a| a.transport))
            .unwrap_or_default();
        if transport != Transport::Nats {
            return Ok(None);
        }
        let (routes, source) = match (env.routes()?, &application) {
            (Some(routes), _) => (routes, RoutesSource::Json),
            (None, Some(app)) => (app.routes(), RoutesSource::Application),
            (None, None) => {
                return Err(env.error(
                    env::TRANSPORT,
                    "the nats transport needs the application's routes: set EXOSERVICE_ROUTES (routes JSON) or EXOSERVICE_APPLICATION (its application.yml)",
                ));
            }
        };
        // The URL, and how to name it in an error about its credentials.
        let (url, url_source) = match env.nats_url()? {
            Some(url) => (url, env.label(env::NATS_URL)),
            None => (
                application
                    .as_ref()
                    .and_then(|a| a.nats_url.clone())
                    .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
                format!(
                    "the nats-url: of the application ({})",
                    env.label(env::APPLICATION)
                ),
            ),
        };
        let app = match env.app()? {
            Some(app) => app,
            None => application
                .as_ref()
                .map(AppConfig::nats_app)
                .unwrap_or_else(|| DEFAULT_APP.to_owned()),
        };
        let mut settings = NatsSettings::new(url, app, routes);
        if let Some(n) = env.max_attempts()? {
            settings.max_attempts = n;
        }
        if let Some(d) = env.ack_wait()? {
            settings.ack_wait = d;
        }
        if let Some(d) = env.redelivery_delay()? {
            settings.redelivery_delay = d;
        }
        if let Some(n) = env.nats_replicas()? {
            settings.replicas = n;
        }
        settings.ca_file = env.nats_ca_file()?;
        settings.client_cert = env.nats_client_cert()?;
        settings.nkey = env.nats_nkey()?;
        settings.creds = env.nats_creds()?;
        env::check_nats_login(
            &settings.url,
            &url_source,
            settings.nkey.is_some(),
            settings.creds.is_some(),
        )
        .map_err(|(var, message)| env.error(var, message))?;
        Ok(Some((settings, source)))
    }

    /// Settings for these routes with every default.
    pub fn new(
        url: impl Into<String>,
        app: impl Into<String>,
        routes: crate::routes::Routes,
    ) -> Self {
        NatsSettings {
            url: url.into(),
            app: app.into(),
            routes: std::sync::Arc::new(routes),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            ack_wait: DEFAULT_ACK_WAIT,
            redelivery_delay: DEFAULT_REDELIVERY_DELAY,
            replicas: 1,
            ca_file: None,
            client_cert: None,
            nkey: None,
            creds: None,
        }
    }

    /// The server URL(s) fit to show: passwords and tokens as `***` (see
    /// [`env::nats_display_url`]).
    pub fn display_url(&self) -> String {
        env::nats_display_url(&self.url)
    }

    /// What a NATS client of these settings connects with: the servers,
    /// without credentials, and options carrying the URL's user and
    /// password or token (async-nats does not read them from a URL), the
    /// NKey seed, the `.creds` file's JWT and seed, the CA file and the
    /// client certificate (both make TLS required). Errors name `NATS_URL` and never show a secret;
    /// settings that log in more than one way (see [`NatsSettings::check_login`]) are refused.
    #[cfg(feature = "nats")]
    pub fn connect_options(
        &self,
    ) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions), String> {
        let (list, auth) =
            env::nats_servers_and_auth(&self.url).map_err(|e| format!("NATS_URL {e}"))?;
        self.check_login()?;
        let addrs = list
            .iter()
            .map(|s| {
                s.to_plain_url()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| {
                        format!(
                            "NATS_URL: {} is not a NATS server URL ({e})",
                            s.to_display_url()
                        )
                    })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut options = async_nats::ConnectOptions::new();
        match auth {
            Some(env::NatsUrlAuth::UserPassword { user, password }) => {
                options = options.user_and_password(user, password.expose().to_owned());
            }
            Some(env::NatsUrlAuth::Token(token)) => {
                options = options.token(token.expose().to_owned());
            }
            None => {}
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(creds) = &self.creds {
            options = options
                .credentials(creds.expose())
                .map_err(|e| format!("NATS_CREDS_FILE: {e}"))?;
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some(cert) = &self.client_cert {
            options = options
                .add_client_certificate(cert.cert_file.clone(), cert.key_file.clone())
                .require_tls(true);
        }
        Ok((addrs, options))
    }

    /// Whether the server list carries a user and password or a token.
    pub fn url_has_credentials(&self) -> bool {
        env::nats_servers(&self.url).is_ok_and(|list| list.iter().any(|s| s.credentials.is_some()))
    }

    /// Checks that these settings log in one way at most: credentials in
    /// the URL, an NKey seed or a `.creds` file (see
    /// [`env::check_nats_login`]); the error names the two variables.
    pub fn check_login(&self) -> Result<(), String> {
        env::check_nats_login(
            &self.url,
            env::NATS_URL,
            self.nkey.is_some(),
            self.creds.is_some(),
        )
        .map_err(|(var, message)| format!("{var}: {message}"))
    }
}

/// A configuration error, naming the file and, where known, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file the error is in (as the user named it or as found).
    pub file: PathBuf,
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// 1-based column, when the error has a place in the file.
    pub column: Option<usize>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error with no place in a file (a missing file, a bad variable).
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error at a line and column.
    pub fn at(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.into(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        let file = self.file.display();
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}: {}", self.message),
            (Some(l), None) => format!("{file}:{l}: {}", self.message),
            _ => format!("{file}: {}", self.message),
        }
    }
}

/// How a service is started by `exo run`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Startup {
    /// The shell command that starts the service, run in its directory.
    pub command: String,
    /// The text the service prints once it is connected.
    pub online_text: Option<String>,
}

/// Everything a service needs to know about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The role this service registers as.
    pub role: String,
    /// The service's directory.
    pub dir: PathBuf,
    /// The config file that was read (`service.yml` or `config.yml`), or a
    /// description of where the config came from when built in code.
    pub file: PathBuf,
    /// Message names (internal) the service receives.
    pub receives: Vec<String>,
    /// Message names (internal) the service may send.
    pub sends: Vec<String>,
    /// Free description.
    pub description: Option<String>,
    /// Free author text.
    pub author: Option<String>,
    /// How to start it (`startup:`).
    pub startup: Option<Startup>,
    /// The shell command that installs its dependencies (2016 `setup:`).
    pub setup: Option<String>,
    /// Where ExoCom runs (`EXOCOM_HOST`, default `localhost`).
    pub exocom_host: String,
    /// ExoCom's port (`EXOCOM_PORT`, default 80).
    pub exocom_port: u16,
    /// ExoCom's URL when given as one (`EXOCOM_URL`, `ws://` or `wss://`,
    /// written out in full); it wins over `exocom_host` and `exocom_port`
    /// (which are set from it).
    pub exocom_url: Option<String>,
    /// The token shown to the bus on connecting (`EXOCOM_TOKEN`).
    pub exocom_token: Option<Secret>,
    /// The certificates trusted for `wss://` instead of the system's roots
    /// (`EXOCOM_CA_FILE`, PEM).
    pub exocom_ca_file: Option<PathBuf>,
    /// Limit of handlers in flight.
    pub concurrency: usize,
    /// Capacity of the outgoing buffer.
    pub outgoing_buffer: usize,
    /// Time running handlers get to finish when the service stops.
    pub drain_timeout: Duration,
    /// Serve `/metrics` and `/healthz` on this port
    /// (`EXOSERVICE_METRICS_PORT`; 0: any free port; `None`, the default:
    /// no metrics endpoint).
    pub metrics_port: Option<u16>,
    /// The IP address of the metrics endpoint (`EXOSERVICE_METRICS_BIND`,
    /// default `127.0.0.1`).
    pub metrics_bind: std::net::IpAddr,
    /// The NATS settings: set, the service runs over NATS
    /// (`EXOSERVICE_TRANSPORT=nats`); unset, over ExoCom (the default). See
    /// [`ServiceConfig::transport`].
    pub nats: Option<NatsSettings>,
    /// How each received name (internal) is delivered (`delivery:` in the
    /// service file); a name not listed is at-most-once. Only the `nats`
    /// transport offers at-least-once.
    pub delivery: std::collections::BTreeMap<String, crate::routes::DeliveryMode>,
}

impl ServiceConfig {
    /// A config built in code: a role and its message names, the defaults
    /// for everything else (ExoCom at `localhost:80`).
    pub fn from_parts<S: Into<String>>(
        role: impl Into<String>,
        receives: impl IntoIterator<Item = S>,
        sends: impl IntoIterator<Item = S>,
    ) -> ServiceConfig {
        ServiceConfig {
            role: role.into(),
            dir: PathBuf::from("."),
            file: PathBuf::from("(config built in code)"),
            receives: receives.into_iter().map(Into::into).collect(),
            sends: sends.into_iter().map(Into::into).collect(),
            description: None,
            author: None,
            startup: None,
            setup: None,
            exocom_host: "localhost".into(),
            exocom_port: 80,
            exocom_url: None,
            exocom_token: None,
            exocom_ca_file: None,
            concurrency: DEFAULT_CONCURRENCY,
            outgoing_buffer: DEFAULT_OUTGOING_BUFFER,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics_port: None,
            metrics_bind: std::net::IpAddr::from([127, 0, 0, 1]),
            nats: None,
            delivery: std::collections::BTreeMap::new(),
        }
    }

    /// Reads the service in `dir`: its `service.yml` (or `config.yml`) and
    /// the environment of this process (`ROLE`, `EXOCOM_HOST`, `EXOCOM_PORT`,
    /// `EXOSERVICE_CONCURRENCY`, `EXOSERVICE_OUTGOING_BUFFER`,
    /// `EXOSERVICE_DRAIN_TIMEOUT_MS`, `EXOSERVICE_METRICS_PORT`,
    /// `EXOSERVICE_METRICS_BIND`, `EXOCOM_URL`, `EXOCOM_TOKEN`,
    /// `EXOCOM_CA_FILE`), which win over the file, and the transport
    /// (`EXOSERVICE_TRANSPORT` and the NATS settings, see
    /// [`NatsSettings::from_env`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::load_with(dir.as_ref(), &Env::process(), None)
    }

    /// [`ServiceConfig::load`] for the current directory.
    pub fn from_env() -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::load(".")
    }

    /// Reads the service in `dir` with the given environment. `app_key` is
    /// the service's key in `application.yml`, when known: it names the role
    /// unless `ROLE` is set.
    pub fn load_with(
        dir: &Path,
        env: &Env,
        app_key: Option<&str>,
    ) -> Result<ServiceConfig, ConfigError> {
        let file = service_file::find(dir)?;
        let parsed = service_file::read(&file)?;
        let config = ServiceConfig::from_file(parsed, dir, env, app_key)?.0;
        config.with_transport_from(env)
    }

    /// The same config on the transport the environment asks for (see
    /// [`NatsSettings::from_env`]); unchanged on ExoCom. On NATS the role
    /// must be in the routes, and the delivery modes of its received names
    /// are the ones the routes list (the senders route by them): a mode the
    /// service file declares otherwise is an error.
    pub fn with_transport_from(self, env: &Env) -> Result<ServiceConfig, ConfigError> {
        let Some((settings, source)) = NatsSettings::from_env_with_source(env)? else {
            return Ok(self);
        };
        let var = source.var();
        let Some(own) = settings.routes.role(&self.role) else {
            let roles: Vec<&str> = settings.routes.roles.keys().map(String::as_str).collect();
            return Err(env::var_error(
                var,
                format!(
                    "role '{}' is not in the application's routes (they have: {}); set ROLE to one of them, or add the service to the application",
                    self.role,
                    if roles.is_empty() {
                        "no roles".to_owned()
                    } else {
                        roles.join(", ")
                    }
                ),
            ));
        };
        for (name, mode) in &self.delivery {
            let listed = own.at_least_once.contains(name);
            if listed != (*mode == DeliveryMode::AtLeastOnce) {
                return Err(ConfigError::new(
                    &self.file,
                    format!(
                        "delivery: {name:?} is {} here, but the routes from ${var} {}; the senders route by the routes, so both must agree",
                        mode.as_str(),
                        if listed {
                            "list it under atLeastOnce"
                        } else {
                            "do not list it under atLeastOnce"
                        }
                    ),
                ));
            }
        }
        let mut delivery: std::collections::BTreeMap<String, DeliveryMode> = own
            .at_least_once
            .iter()
            .map(|n| (n.clone(), DeliveryMode::AtLeastOnce))
            .collect();
        for (name, mode) in &self.delivery {
            delivery.entry(name.clone()).or_insert(*mode);
        }
        let mut config = self.with_nats(settings);
        config.delivery = delivery;
        Ok(config)
    }

    /// Applies role resolution and the environment to a parsed file; also
    /// returns the translations the file declares.
    fn from_file(
        parsed: ServiceFile,
        dir: &Path,
        env: &Env,
        app_key: Option<&str>,
    ) -> Result<(ServiceConfig, Vec<Translation>), ConfigError> {
        let role = resolve_role(&parsed, env, app_key)?;
        let mut config = ServiceConfig::from_parts(role, parsed.receives, parsed.sends);
        config.dir = dir.to_owned();
        config.file = parsed.file;
        config.description = parsed.description;
        config.author = parsed.author;
        config.startup = parsed.startup;
        config.setup = parsed.setup;
        config.delivery = parsed.delivery.into_iter().collect();
        if let Some(host) = env.get(env::EXOCOM_HOST) {
            config.exocom_host = host.to_owned();
        }
        if let Some(port) = env.port()? {
            config.exocom_port = port;
        }
        if let Some(url) = env.exocom_url()? {
            config = config.with_bus_url(&url);
        }
        config.exocom_token = env.exocom_token()?;
        config.exocom_ca_file = env.exocom_ca_file()?;
        let count = |file: Option<u64>, var: &str| -> Result<Option<usize>, ConfigError> {
            Ok(env.count(var)?.or(file).map(|n| n as usize))
        };
        if let Some(n) = count(parsed.concurrency, env::CONCURRENCY)? {
            config.concurrency = n;
        }
        if let Some(n) = count(parsed.outgoing_buffer, env::OUTGOING_BUFFER)? {
            config.outgoing_buffer = n;
        }
        if let Some(port) = env.metrics_port()? {
            config.metrics_port = Some(port);
        }
        if let Some(ip) = env.metrics_bind()? {
            config.metrics_bind = ip;
        }
        if let Some(d) = env.drain_timeout()? {
            config.drain_timeout = d;
        } else if let Some(ms) = parsed.drain_timeout_ms {
            config.drain_timeout = Duration::from_millis(ms);
        }
        Ok((config, parsed.translations))
    }

    /// The same config serving `/metrics` and `/healthz` on this port of
    /// `metrics_bind` (0: any free port).
    pub fn with_metrics_port(mut self, port: u16) -> Self {
        self.metrics_port = Some(port);
        self
    }

    /// The same config pointed at another bus.
    pub fn with_exocom(mut self, host: impl Into<String>, port: u16) -> Self {
        self.exocom_host = host.into();
        self.exocom_port = port;
        self.exocom_url = None;
        self
    }

    /// The same config pointed at the bus at this URL (`ws://HOST:PORT` or
    /// `wss://HOST:PORT`, see [`env::bus_url`]).
    pub fn with_exocom_url(self, url: &str) -> Result<Self, ConfigError> {
        let url = env::bus_url(url).map_err(|e| ConfigError::new("(bus URL)", e))?;
        Ok(self.with_bus_url(&url))
    }

    fn with_bus_url(mut self, url: &BusUrl) -> Self {
        self.exocom_host.clone_from(&url.host);
        self.exocom_port = url.port;
        self.exocom_url = Some(url.to_url());
        self
    }

    /// What carries the service's messages: NATS when it has NATS
    /// settings, else ExoCom.
    pub fn transport(&self) -> Transport {
        if self.nats.is_some() {
            Transport::Nats
        } else {
            Transport::Exocom
        }
    }

    /// The same config on the `nats` transport with these settings.
    pub fn with_nats(mut self, settings: NatsSettings) -> Self {
        self.nats = Some(settings);
        self
    }

    /// The same config receiving `name` with this delivery mode.
    pub fn with_delivery(
        mut self,
        name: impl Into<String>,
        mode: crate::routes::DeliveryMode,
    ) -> Self {
        self.delivery.insert(name.into(), mode);
        self
    }

    /// How `name` (internal, received) is delivered.
    pub fn delivery_of(&self, name: &str) -> crate::routes::DeliveryMode {
        self.delivery.get(name).copied().unwrap_or_default()
    }

    /// The same config showing this token to the bus.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.exocom_token = Some(Secret::new(token));
        self
    }

    /// The same config trusting the certificates in this PEM file for
    /// `wss://` (instead of the system's roots).
    pub fn with_ca_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.exocom_ca_file = Some(file.into());
        self
    }
}

/// The application named by `EXOSERVICE_APPLICATION`, read with an empty
/// environment (only its files matter here); every error in one, named
/// as `env` names the variable.
fn load_application(path: &Path, env: &Env) -> Result<AppConfig, ConfigError> {
    AppConfig::load_with(path, &Env::empty()).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        env.error(
            env::APPLICATION,
            format!("cannot read the application: {}", text.join("; ")),
        )
    })
}

/// Reads a service file from its text alone (no file system, no process
/// environment): what [`ServiceConfig::load`] does with the file's
/// contents, with an empty environment. `file` names the text in errors.
/// For fuzzing and tools that hold the text already.
#[doc(hidden)]
pub fn parse_service_text(file: &Path, text: &str) -> Result<ServiceConfig, ConfigError> {
    let doc = yaml::Document::parse(file, text)?;
    let parsed = service_file::parse(&doc)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    Ok(ServiceConfig::from_file(parsed, dir, &Env::empty(), None)?.0)
}

/// The role, first found: `ROLE`; the key in `application.yml`; `type:`
/// unless it is public/private/worker; `name:`.
fn resolve_role(
    parsed: &ServiceFile,
    env: &Env,
    app_key: Option<&str>,
) -> Result<String, ConfigError> {
    const RULE: &str = "letters and digits in groups joined by single hyphens, like `todo-service`";
    if let Some(role) = env.get(env::ROLE) {
        if !is_valid_role(role) {
            return Err(env::var_error(
                env::ROLE,
                format!("{role:?} is not a role name ({RULE})"),
            ));
        }
        return Ok(role.to_owned());
    }
    if let Some(key) = app_key {
        return Ok(key.to_owned());
    }
    if let Some((role, line, column)) = &parsed.type_role {
        if !is_valid_role(role) {
            return Err(ConfigError::at(
                &parsed.file,
                *line,
                *column,
                format!(
                    "type must be the service's role ({RULE}) or one of public, private, worker; found {role:?}"
                ),
            ));
        }
        return Ok(role.clone());
    }
    if let Some((name, line, column)) = &parsed.name {
        if !is_valid_role(name) {
            return Err(ConfigError::at(
                &parsed.file,
                *line,
                *column,
                format!(
                    "name {name:?} cannot be used as the role ({RULE}); set `type:` to the role, or the ROLE variable"
                ),
            ));
        }
        return Ok(name.clone());
    }
    let hint = match &parsed.kind {
        Some(kind) => format!(
            "no role: `type: {kind}` says what kind of service this is, not its role; set the ROLE variable or run it from an application.yml"
        ),
        None => "no role: set `type:` to the service's role, or the ROLE variable".to_owned(),
    };
    Err(ConfigError::new(&parsed.file, hint))
}

//! `exo run`: runs an application on one machine. Starts an embedded bus
//! with the application's routes, starts every service with its `startup`
//! command (in its directory, with `ROLE`, `EXOCOM_HOST` and `EXOCOM_PORT`
//! set), prefixes every line of output with the role, waits until each
//! service printed its online text, and on Ctrl-C or SIGTERM stops the
//! services (SIGTERM to each one's process group, SIGKILL after a
//! deadline) and then the bus.
//!
//! The bus also admits the role `exo` (the default role of `exo send`):
//! it may send every message some service receives and receives every
//! message some service sends, so `exo send NAME --await` can talk to the
//! running application.
//!
//! On the `nats` transport (`transport: nats` in `application.yml`, or
//! `EXOSERVICE_TRANSPORT=nats` in the environment of `exo run`) no bus is
//! started: each service gets `EXOSERVICE_TRANSPORT=nats`, `NATS_URL`,
//! `EXOSERVICE_APP` and `EXOSERVICE_ROUTES` (the routes, with the role
//! `exo`) instead of the ExoCom variables, and the TLS and key files of
//! `exo run`'s environment (`NATS_CA_FILE`, `NATS_CERT_FILE`,
//! `NATS_KEY_FILE`, `NATS_NKEY_FILE`, `NATS_CREDS_FILE`), checked and made absolute (each
//! service runs in its own directory). `NATS_URL` is never printed with
//! its password or token.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use exoservice::bus::tokens::PlainTokens;
use exoservice::bus::{Bus, BusConfig, BusHandle, LogSink, Tokens};
use exoservice::config::{AppConfig, AppService, DEFAULT_NATS_URL, Env, Transport, env};
use exoservice::routes::{RoleRoutes, Routes};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The online text a service prints when its file names none.
pub const DEFAULT_ONLINE_TEXT: &str = "online at port";
/// The role `exo send` uses by default; `exo run` adds it to the routes.
pub const TOOL_ROLE: &str = "exo";
/// The port `exo run` and `exo send` use when neither `--port` nor
/// `EXOCOM_PORT` say otherwise.
pub const DEFAULT_PORT: u16 = 3100;

/// What `exo run` was asked.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The application directory (or its application.yml).
    pub app: PathBuf,
    /// The bus port (0: any free port).
    pub port: u16,
    /// The address the bus listens on.
    pub bind: IpAddr,
    /// Run each service's `setup` command first.
    pub setup: bool,
    /// How long every service gets to print its online text.
    pub online_timeout: Duration,
    /// How long services get to stop after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Do not log a line per routed message.
    pub quiet_routes: bool,
    /// Start a service again when it exits after it was online (after a
    /// pause that doubles from 1 s up to 30 s while it keeps failing fast).
    pub restart: bool,
}

impl RunArgs {
    /// Defaults for an application directory.
    pub fn new(app: impl Into<PathBuf>) -> RunArgs {
        RunArgs {
            app: app.into(),
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            setup: false,
            online_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(15),
            quiet_routes: false,
            restart: false,
        }
    }
}

/// The routes of the application plus the `exo` tool role (unless the
/// application has a service of that name).
pub fn routes_with_tool(app: &AppConfig) -> Routes {
    add_tool_role(app.routes())
}

/// The routes plus the `exo` tool role (unless they have a role of that
/// name already): it may send every message some role receives and
/// receives every message some role sends (public names).
pub fn add_tool_role(mut routes: Routes) -> Routes {
    if routes.roles.contains_key(TOOL_ROLE) {
        return routes;
    }
    let mut sends = BTreeSet::new();
    let mut receives = BTreeSet::new();
    for r in routes.roles.values() {
        sends.extend(r.receives.iter().map(|n| r.to_public(n).to_owned()));
        receives.extend(r.sends.iter().map(|n| r.to_public(n).to_owned()));
    }
    routes.roles.insert(
        TOOL_ROLE.to_owned(),
        RoleRoutes {
            receives: receives.into_iter().collect(),
            sends: sends.into_iter().collect(),
            translations: Vec::new(),
            at_least_once: Vec::new(),
        },
    );
    routes
}

/// Where `exo run` has the services' messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunTransport {
    /// The embedded ExoCom bus.
    Exocom,
    /// A NATS server that runs already.
    Nats(NatsTarget),
}

/// The NATS settings `exo run` gives every service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// `NATS_URL`: the server(s), written out in full.
    pub url: String,
    /// `EXOSERVICE_APP`: the application's name on NATS.
    pub app: String,
    /// `EXOSERVICE_ROUTES`: the routes JSON, with the role `exo`.
    pub routes_json: String,
    /// The TLS and key files of `exo run`'s environment, by variable
    /// (`NATS_CA_FILE`, `NATS_CERT_FILE`, `NATS_KEY_FILE`,
    /// `NATS_NKEY_FILE`, `NATS_CREDS_FILE`), as absolute paths.
    pub files: Vec<(&'static str, PathBuf)>,
}

/// The TLS and key files `env` names for NATS, checked (each exists; a
/// certificate has its key; the NKey file holds a user seed; the `.creds`
/// file a user JWT and seed) and made
/// absolute, by variable.
pub fn nats_files(env: &Env) -> Result<Vec<(&'static str, PathBuf)>, String> {
    let absolute = |var: &'static str, path: PathBuf| {
        std::path::absolute(&path)
            .map(|p| (var, p))
            .map_err(|e| format!("${var}: cannot make {} absolute: {e}", path.display()))
    };
    let mut files = Vec::new();
    if let Some(ca) = env.nats_ca_file().map_err(|e| e.to_string())? {
        files.push(absolute(env::NATS_CA_FILE, ca)?);
    }
    if let Some(pair) = env.nats_client_cert().map_err(|e| e.to_string())? {
        files.push(absolute(env::NATS_CERT_FILE, pair.cert_file)?);
        files.push(absolute(env::NATS_KEY_FILE, pair.key_file)?);
    }
    // Checked (a seed, a JWT and a seed), then passed on by path.
    env.nats_nkey().map_err(|e| e.to_string())?;
    env.nats_creds().map_err(|e| e.to_string())?;
    for var in [env::NATS_NKEY_FILE, env::NATS_CREDS_FILE] {
        if let Some(path) = env.get(var) {
            files.push(absolute(var, PathBuf::from(path))?);
        }
    }
    Ok(files)
}

/// The transport of `app` when `exo run` starts it with the environment
/// `env`: `EXOSERVICE_TRANSPORT`, else the application's `transport:`. For
/// NATS, the URL is `NATS_URL`, else `nats-url:`, else
/// `nats://127.0.0.1:4222`; the name is `EXOSERVICE_APP`, else the
/// application's name made usable on NATS; the TLS and key files are
/// those of `env` (see [`nats_files`]).
pub fn run_transport(app: &AppConfig, env: &Env) -> Result<RunTransport, String> {
    let transport = env
        .transport()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| app.transport_or_default());
    if transport == Transport::Exocom {
        return Ok(RunTransport::Exocom);
    }
    let url = match env.nats_url().map_err(|e| e.to_string())? {
        Some(url) => url,
        None => app
            .nats_url
            .clone()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
    };
    let name = match env.app().map_err(|e| e.to_string())? {
        Some(name) => name,
        None => app.nats_app(),
    };
    // One way to log in, checked before any service starts.
    let source = if env.get(env::NATS_URL).is_some() {
        env.label(env::NATS_URL)
    } else {
        "the application's nats-url:".to_owned()
    };
    env::check_nats_login(
        &url,
        &source,
        env.get(env::NATS_NKEY_FILE).is_some(),
        env.get(env::NATS_CREDS_FILE).is_some(),
    )
    .map_err(|(var, message)| env.error(var, message).to_string())?;
    Ok(RunTransport::Nats(NatsTarget {
        url,
        app: name,
        routes_json: routes_with_tool(app).to_json(),
        files: nats_files(env)?,
    }))
}

/// Prints lines with a role prefix, aligned.
#[derive(Clone)]
struct Printer {
    width: usize,
}

impl Printer {
    fn line(&self, who: &str, text: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{who:>w$} | {text}", w = self.width);
        let _ = out.flush();
    }
}

/// An event from a running service.
enum Event {
    /// Service `index`, start number `generation`, printed its online text.
    Online(usize, u32),
    /// Service `index`, start number `generation`, ended.
    Exited(usize, u32, String),
    /// Time to start service `index` again.
    Restart(usize),
}

struct Running {
    role: String,
    /// How many times it has been started (1 for the first).
    generation: u32,
    /// When the current process started.
    started: Instant,
    /// The pause before the next restart.
    backoff: Duration,
    pgid: Option<i32>,
    /// `Some(status)` once the process has ended.
    status: tokio::sync::watch::Receiver<Option<String>>,
    online: bool,
    exited: bool,
}

/// Runs the application until SIGINT/SIGTERM; returns the exit code.
pub async fn run(args: RunArgs) -> i32 {
    let app = match AppConfig::load_with(&args.app, &Env::process()) {
        Ok(app) => app,
        Err(errors) => {
            for e in &errors {
                eprintln!("exo run: {e}");
            }
            return 1;
        }
    };
    let missing: Vec<&str> = app
        .services
        .iter()
        .filter(|s| s.config.startup.is_none())
        .map(|s| s.role.as_str())
        .collect();
    if !missing.is_empty() {
        for role in missing {
            let s = app.service(role).expect("listed");
            eprintln!(
                "exo run: {}: no `startup: command:`, so {role} cannot be started",
                s.config.file.display()
            );
        }
        return 1;
    }
    let width = app
        .services
        .iter()
        .map(|s| s.role.len())
        .chain([TOOL_ROLE.len(), "exocom".len()])
        .max()
        .unwrap_or(6);
    let printer = Printer { width };
    for name in &app.skipped {
        printer.line(
            TOOL_ROLE,
            &format!("warning: service {name:?} has no `location:`; it is not started here"),
        );
    }

    // Listen for Ctrl-C/SIGTERM from here on, so a signal during start-up
    // still stops the services that already run.
    let stop = exoservice::signals::stop_signal();
    tokio::pin!(stop);

    let transport = match run_transport(&app, &Env::process()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("exo run: {e}");
            return 1;
        }
    };

    // Tokens: a `tokens:` section of application.yml closes the bus; each
    // service gets its own token as EXOCOM_TOKEN.
    let plain_tokens = match Tokens::plain_from_app(&args.app) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            eprintln!("exo run: {e}");
            return 1;
        }
    };
    if matches!(transport, RunTransport::Nats(_)) && !plain_tokens.is_empty() {
        eprintln!(
            "exo run: {}: `tokens:` closes the ExoCom bus, but this application runs over NATS, where they would not be checked; remove `tokens:` (secure the NATS server with its own users and permissions) or use `transport: exocom`",
            app.file.display()
        );
        return 1;
    }
    let tokens = match Tokens::from_plain(&plain_tokens) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("exo run: tokens: {e}");
            return 1;
        }
    };
    if !tokens.is_empty() {
        for s in &app.services {
            if !plain_tokens.contains_key(&s.role) {
                eprintln!(
                    "exo run: {} has no token under `tokens:` in {}: the bus would refuse it",
                    s.role,
                    app.file.display()
                );
                return 1;
            }
        }
        if !plain_tokens.contains_key(TOOL_ROLE) {
            printer.line(
                TOOL_ROLE,
                "note: `tokens:` has no token for the role `exo`, so `exo send` cannot connect",
            );
        }
    }

    // The bus, unless the messages go over NATS.
    let (bus, link) = match &transport {
        RunTransport::Exocom => {
            let log_printer = printer.clone();
            let config = BusConfig::new(routes_with_tool(&app))
                .with_tokens(tokens)
                .with_bind(SocketAddr::new(args.bind, args.port))
                .with_log(LogSink::Callback(Arc::new(move |line: &str| {
                    log_printer.line("exocom", line)
                })))
                .with_route_logging(!args.quiet_routes)
                .with_optional_roles([TOOL_ROLE]);
            let bus = match Bus::start(config).await {
                Ok(bus) => bus,
                Err(e) => {
                    eprintln!("exo run: cannot start the bus: {e}");
                    return 1;
                }
            };
            let port = bus.port();
            printer.line("exocom", &format!("ExoCom online at port {port}"));
            (Some(bus), Link::Exocom(port))
        }
        RunTransport::Nats(target) => {
            printer.line(
                TOOL_ROLE,
                &format!(
                    "messages go over NATS at {} (application '{}')",
                    env::nats_display_url(&target.url),
                    target.app
                ),
            );
            (None, Link::Nats(target.clone()))
        }
    };
    let shutdown = |bus: Option<BusHandle>| async move {
        if let Some(bus) = bus {
            bus.shutdown().await;
        }
    };

    if args.setup {
        for s in &app.services {
            if let Some(setup) = &s.config.setup
                && !run_setup(&printer, s, setup).await
            {
                shutdown(bus).await;
                return 1;
            }
        }
    }

    // The services.
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut running: Vec<Running> = Vec::new();
    for (index, s) in app.services.iter().enumerate() {
        let token = service_token(&plain_tokens, &s.role);
        match start_service(&printer, s, &link, token, index, 1, events_tx.clone()) {
            Ok(r) => running.push(r),
            Err(e) => {
                eprintln!("exo run: cannot start {}: {e}", s.role);
                stop_all(&printer, &mut running, args.stop_timeout).await;
                shutdown(bus).await;
                return 1;
            }
        }
    }

    let deadline = Instant::now() + args.online_timeout;
    let mut announced = false;
    let mut code = 0;
    loop {
        let all_online = running.iter().all(|r| r.online || r.exited);
        if all_online && !announced {
            announced = true;
            let carrier = match &link {
                Link::Exocom(port) => format!("bus at port {port}"),
                Link::Nats(target) => {
                    format!(
                        "messages over NATS at {}",
                        env::nats_display_url(&target.url)
                    )
                }
            };
            printer.line(
                TOOL_ROLE,
                &format!(
                    "application {} is online: {} service{}, {carrier} (Ctrl-C stops it)",
                    app.name.as_deref().unwrap_or("(unnamed)"),
                    running.len(),
                    if running.len() == 1 { "" } else { "s" }
                ),
            );
        }
        let timeout = async {
            if announced {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(deadline).await
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = timeout => {
                let late: Vec<&str> = running.iter().filter(|r| !r.online && !r.exited).map(|r| r.role.as_str()).collect();
                eprintln!(
                    "exo run: not online after {:?}: {} (no line containing its online text)",
                    args.online_timeout,
                    late.join(", ")
                );
                code = 1;
                break;
            }
            event = events.recv() => match event {
                Some(Event::Online(i, g)) if g == running[i].generation => {
                    running[i].online = true;
                }
                Some(Event::Exited(i, g, status)) if g == running[i].generation => {
                    let r = &mut running[i];
                    r.exited = true;
                    if !r.online && !announced {
                        eprintln!("exo run: {} exited ({status}) before it was online", r.role);
                        code = 1;
                        break;
                    }
                    if args.restart {
                        // Quick deaths back off; a service that ran a while starts over at 1 s.
                        if r.started.elapsed() > Duration::from_secs(60) {
                            r.backoff = Duration::from_secs(1);
                        }
                        let pause = r.backoff;
                        r.backoff = (r.backoff * 2).min(Duration::from_secs(30));
                        printer.line(
                            TOOL_ROLE,
                            &format!("{} exited ({status}); starting it again in {pause:?}", r.role),
                        );
                        let tx = events_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(pause).await;
                            let _ = tx.send(Event::Restart(i));
                        });
                    } else {
                        printer.line(TOOL_ROLE, &format!("{} exited ({status})", r.role));
                    }
                }
                Some(Event::Restart(i)) => {
                    let s = &app.services[i];
                    let generation = running[i].generation + 1;
                    let token = service_token(&plain_tokens, &s.role);
                    match start_service(&printer, s, &link, token, i, generation, events_tx.clone()) {
                        Ok(mut r) => {
                            r.backoff = running[i].backoff;
                            running[i] = r;
                        }
                        Err(e) => {
                            eprintln!("exo run: cannot start {} again: {e}", s.role);
                            code = 1;
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        if !args.restart && running.iter().all(|r| r.exited) {
            printer.line(TOOL_ROLE, "every service has exited");
            code = 1;
            break;
        }
    }
    printer.line(TOOL_ROLE, "stopping the services");
    stop_all(&printer, &mut running, args.stop_timeout).await;
    shutdown(bus).await;
    printer.line(TOOL_ROLE, "stopped");
    code
}

/// What a started service is told about the transport.
enum Link {
    /// The embedded bus, at this port.
    Exocom(u16),
    /// NATS.
    Nats(NatsTarget),
}

/// The token `exo run` gives a service: the first of its role's tokens.
fn service_token<'a>(tokens: &'a PlainTokens, role: &str) -> Option<&'a str> {
    tokens.get(role).and_then(|t| t.first()).map(String::as_str)
}

/// Starts one service's startup command in its own process group.
fn start_service(
    printer: &Printer,
    s: &AppService,
    link: &Link,
    token: Option<&str>,
    index: usize,
    generation: u32,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<Running> {
    let startup = s.config.startup.clone().expect("checked before");
    let online_text = startup
        .online_text
        .clone()
        .unwrap_or_else(|| DEFAULT_ONLINE_TEXT.to_owned());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&startup.command)
        .current_dir(&s.dir)
        .env(env::ROLE, &s.role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    match link {
        Link::Exocom(port) => {
            cmd.env(env::TRANSPORT, Transport::Exocom.as_str())
                .env(env::EXOCOM_HOST, "localhost")
                .env(env::EXOCOM_PORT, port.to_string())
                .env_remove(env::EXOCOM_URL);
            match token {
                Some(t) => cmd.env(env::EXOCOM_TOKEN, t),
                None => cmd.env_remove(env::EXOCOM_TOKEN),
            };
        }
        Link::Nats(target) => {
            cmd.env(env::TRANSPORT, Transport::Nats.as_str())
                .env(env::NATS_URL, &target.url)
                .env(env::APP, &target.app)
                .env(env::ROUTES, &target.routes_json)
                .envs(target.files.iter().map(|(var, path)| (*var, path)))
                .env_remove(env::APPLICATION)
                .env_remove(env::EXOCOM_HOST)
                .env_remove(env::EXOCOM_PORT)
                .env_remove(env::EXOCOM_URL)
                .env_remove(env::EXOCOM_TOKEN);
        }
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|id| id as i32);
    printer.line(
        &s.role,
        &format!(
            "started (pid {}): {}",
            pgid.map_or("?".to_owned(), |p| p.to_string()),
            startup.command
        ),
    );
    let streams: [Option<Box<dyn AsyncRead + Unpin + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as _),
        child.stderr.take().map(|s| Box::new(s) as _),
    ];
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for stream in streams.into_iter().flatten() {
        let printer = printer.clone();
        let role = s.role.clone();
        let online_text = online_text.clone();
        let events = events.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                printer.line(&role, &line);
                if line.contains(&online_text)
                    && !seen.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let _ = events.send(Event::Online(index, generation));
                }
            }
        });
    }
    let (status_tx, status) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let text = match child.wait().await {
            Ok(st) => st.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        };
        let _ = events.send(Event::Exited(index, generation, text.clone()));
        let _ = status_tx.send(Some(text));
    });
    Ok(Running {
        role: s.role.clone(),
        generation,
        started: Instant::now(),
        backoff: Duration::from_secs(1),
        pgid,
        status,
        online: false,
        exited: false,
    })
}

/// Sends a signal to a process group.
fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; it has
    // no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Stops every running service: SIGTERM to each group, then waits; groups
/// still alive at the deadline get SIGKILL.
async fn stop_all(printer: &Printer, running: &mut [Running], timeout: Duration) {
    for r in running.iter() {
        if let (Some(pgid), false) = (r.pgid, r.exited) {
            signal_group(pgid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    for r in running.iter_mut() {
        let ended = tokio::time::timeout_at(deadline, r.status.wait_for(|s| s.is_some()))
            .await
            .ok()
            .and_then(|res| res.ok().map(|status| status.clone().unwrap_or_default()));
        match ended {
            Some(text) => {
                if !r.exited {
                    printer.line(&r.role, &format!("stopped ({text})"));
                }
            }
            None => {
                printer.line(
                    &r.role,
                    &format!("did not stop within {timeout:?}: killing it"),
                );
                if let Some(pgid) = r.pgid {
                    signal_group(pgid, libc::SIGKILL);
                }
                let _ = r.status.wait_for(|s| s.is_some()).await;
            }
        }
        // Whatever the shell left behind in the group goes too.
        if let Some(pgid) = r.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

/// Runs one setup command to its end; false when it failed.
async fn run_setup(printer: &Printer, s: &AppService, setup: &str) -> bool {
    printer.line(&s.role, &format!("setup: {setup}"));
    let output = Command::new("sh")
        .arg("-c")
        .arg(setup)
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                printer.line(&s.role, line);
            }
            if out.status.success() {
                true
            } else {
                eprintln!("exo run: setup of {} failed ({})", s.role, out.status);
                false
            }
        }
        Err(e) => {
            eprintln!("exo run: cannot run the setup of {}: {e}", s.role);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats_app() -> AppConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("application.yml"),
            "name: t\ntransport: nats\nservices: {}\n",
        )
        .unwrap();
        AppConfig::load_with(dir.path(), &Env::empty()).unwrap()
    }

    #[test]
    fn nats_files_are_checked_and_passed_on_as_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
        let nkey = dir.path().join("user.nk");
        std::fs::write(&nkey, seed).unwrap();
        // Relative to the directory `exo run` was started in.
        let env = Env::from_pairs([
            (env::NATS_URL, "nats://h:4222".to_owned()),
            (env::NATS_CA_FILE, "Cargo.toml".to_owned()),
            (env::NATS_CERT_FILE, "Cargo.toml".to_owned()),
            (env::NATS_KEY_FILE, "src/run.rs".to_owned()),
            (env::NATS_NKEY_FILE, nkey.display().to_string()),
        ]);
        let RunTransport::Nats(target) = run_transport(&nats_app(), &env).unwrap() else {
            panic!("nats");
        };
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            target.files,
            vec![
                (env::NATS_CA_FILE, cwd.join("Cargo.toml")),
                (env::NATS_CERT_FILE, cwd.join("Cargo.toml")),
                (env::NATS_KEY_FILE, cwd.join("src/run.rs")),
                (env::NATS_NKEY_FILE, nkey.clone()),
            ]
        );
        assert_eq!(target.url, "nats://h:4222");
        // One way to log in: a password in the URL and an NKey are refused
        // before any service starts.
        let e = run_transport(
            &nats_app(),
            &env.with(env::NATS_URL, "nats://ann:s3cret@h:4222"),
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "$NATS_NKEY_FILE: cannot be used together with the user and password in NATS_URL"
            ),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = run_transport(&nats_app(), &env.without(env::NATS_KEY_FILE)).unwrap_err();
        assert!(e.starts_with("$NATS_KEY_FILE: is not set"), "{e}");
        let e =
            run_transport(&nats_app(), &env.with(env::NATS_NKEY_FILE, "Cargo.toml")).unwrap_err();
        assert!(e.starts_with("$NATS_NKEY_FILE: "), "{e}");
        let e = run_transport(
            &nats_app(),
            &env.without(env::NATS_NKEY_FILE)
                .with(env::NATS_CREDS_FILE, "/no/x.creds"),
        )
        .unwrap_err();
        assert_eq!(e, "$NATS_CREDS_FILE: no such file: /no/x.creds");
    }
}

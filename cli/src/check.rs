//! `exo check`: reads an application's or a service's config the way the
//! bus and the services will, and reports every error (file:line:col) and
//! warning, or prints a summary.

use std::path::{Path, PathBuf};

use exoservice::config::{AppConfig, DeliveryMode, Env, ServiceConfig, env, service_file};

use crate::run::{RunTransport, run_transport};

/// What `exo check` was asked.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// An application directory, a service directory, or a file.
    pub path: PathBuf,
    /// Print the routes as `SERVICE_DATA` JSON instead of the summary.
    pub routes: bool,
}

/// What a path names.
enum Target {
    App(PathBuf),
    Service(PathBuf),
}

fn target(path: &Path) -> Result<Target, String> {
    if path.is_dir() {
        if path.join("application.yml").is_file() {
            return Ok(Target::App(path.to_owned()));
        }
        if service_file::SERVICE_FILES
            .iter()
            .any(|f| path.join(f).is_file())
        {
            return Ok(Target::Service(path.to_owned()));
        }
        return Err(format!(
            "{}: holds neither application.yml nor service.yml (or config.yml)",
            path.display()
        ));
    }
    if !path.exists() {
        return Err(format!("{}: no such file or directory", path.display()));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    match name {
        "application.yml" => Ok(Target::App(path.to_owned())),
        "service.yml" | "config.yml" => Ok(Target::Service(dir)),
        _ => Err(format!(
            "{}: expected application.yml, service.yml or config.yml",
            path.display()
        )),
    }
}

/// Runs the check; returns the exit code (0 ok, 1 errors found, 2 bad usage).
pub fn check(args: &CheckArgs) -> i32 {
    let target = match target(&args.path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("exo check: {e}");
            return 2;
        }
    };
    match target {
        Target::App(path) => check_app(&path, args.routes),
        Target::Service(dir) => check_service(&dir, args.routes),
    }
}

fn check_app(path: &Path, routes_only: bool) -> i32 {
    let app = match AppConfig::load_with(path, &Env::process()) {
        Ok(app) => app,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{} error{} found",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return 1;
        }
    };
    if routes_only {
        println!("{}", app.routes().to_json());
        return 0;
    }
    let transport = match run_transport(&app, &Env::process()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("1 error found");
            return 1;
        }
    };
    println!(
        "{}: application {}, {} service{}",
        app.file.display(),
        app.name.as_deref().unwrap_or("(unnamed)"),
        app.services.len(),
        if app.services.len() == 1 { "" } else { "s" }
    );
    let nats = matches!(transport, RunTransport::Nats(_));
    match &transport {
        RunTransport::Exocom => println!("  transport: exocom"),
        RunTransport::Nats(t) => {
            println!(
                "  transport: nats at {} (application '{}')",
                env::nats_display_url(&t.url),
                t.app
            );
            for (var, path) in &t.files {
                println!("  {var}: {}", path.display());
            }
        }
    }
    let width = app.services.iter().map(|s| s.role.len()).max().unwrap_or(0);
    for s in &app.services {
        println!(
            "  {:width$}  {}  ({})",
            s.role,
            s.location,
            s.config
                .file
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("")
        );
        print_messages(&s.config, width + 4);
        if nats {
            print_at_least_once(&s.config, width + 4);
        }
        for t in &s.translations {
            println!(
                "  {:width$}    translates {:?} (public) to {:?} (internal)",
                "", t.public, t.internal
            );
        }
        if s.config.startup.is_none() {
            println!(
                "  {:width$}    no startup command: `exo run` cannot start it",
                ""
            );
        }
    }
    for w in app.warnings() {
        println!("note: {w}");
    }
    println!("ok");
    0
}

fn check_service(dir: &Path, routes_only: bool) -> i32 {
    match ServiceConfig::load(dir) {
        Ok(c) => {
            if routes_only {
                let mut routes = exoservice::routes::Routes::default();
                routes.roles.insert(
                    c.role.clone(),
                    exoservice::routes::RoleRoutes {
                        receives: c.receives.clone(),
                        sends: c.sends.clone(),
                        translations: Vec::new(),
                        at_least_once: at_least_once(&c),
                    },
                );
                println!("{}", routes.to_json());
                return 0;
            }
            println!("{}: service {}", c.file.display(), c.role);
            print_messages(&c, 2);
            if c.nats.is_some() || !at_least_once(&c).is_empty() {
                print_at_least_once(&c, 2);
            }
            match &c.startup {
                Some(s) => println!("  starts with: {}", s.command),
                None => println!("  no startup command: `exo run` cannot start it"),
            }
            match &c.nats {
                Some(n) => {
                    println!(
                        "  transport: nats at {} (application '{}')",
                        n.display_url(),
                        n.app
                    );
                    if let Some(ca) = &n.ca_file {
                        println!("  {}: {}", env::NATS_CA_FILE, ca.display());
                    }
                    if let Some(pair) = &n.client_cert {
                        println!("  {}: {}", env::NATS_CERT_FILE, pair.cert_file.display());
                        println!("  {}: {}", env::NATS_KEY_FILE, pair.key_file.display());
                    }
                    if n.nkey.is_some() {
                        println!("  {}: a user NKey seed", env::NATS_NKEY_FILE);
                    }
                    if n.creds.is_some() {
                        println!("  {}: a user JWT and seed", env::NATS_CREDS_FILE);
                    }
                }
                None => {
                    println!("  transport: exocom");
                    println!("  bus: {}:{}", c.exocom_host, c.exocom_port);
                }
            }
            println!("ok");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn print_messages(c: &ServiceConfig, indent: usize) {
    let list = |names: &[String]| {
        if names.is_empty() {
            "(nothing)".to_owned()
        } else {
            names.join(", ")
        }
    };
    println!("{:indent$}receives: {}", "", list(&c.receives));
    println!("{:indent$}sends:    {}", "", list(&c.sends));
}

/// The received names the service takes at-least-once.
fn at_least_once(c: &ServiceConfig) -> Vec<String> {
    c.delivery
        .iter()
        .filter(|(_, m)| **m == DeliveryMode::AtLeastOnce)
        .map(|(n, _)| n.clone())
        .collect()
}

fn print_at_least_once(c: &ServiceConfig, indent: usize) {
    let names = at_least_once(c);
    let list = if names.is_empty() {
        "(nothing)".to_owned()
    } else {
        names.join(", ")
    };
    println!("{:indent$}at-least-once: {list}", "");
}

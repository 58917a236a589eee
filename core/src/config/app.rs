//! `application.yml`: the services of an application, where they live, the
//! translations between their internal message names and public ones, and
//! the transport (`transport:`, `nats-url:`). Builds the routes.

use std::path::{Path, PathBuf};

use super::env::{self, Env};
use super::service_file::{self, read_translations};
use super::yaml::{Document, Node, Value};
use super::{ConfigError, DEFAULT_APP, ServiceConfig, Transport};
use crate::routes::{DeliveryMode, RoleRoutes, Routes, Translation, is_valid_role};

/// Where a service sits in a 2017 grouped `application.yml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Under `services.public`.
    Public,
    /// Under `services.private`.
    Private,
    /// Under `services.worker`.
    Worker,
}

/// One service of an application.
#[derive(Debug, Clone)]
pub struct AppService {
    /// Its role: the key in `application.yml`.
    pub role: String,
    /// `location:` as written.
    pub location: String,
    /// The service directory (location resolved against the application's).
    pub dir: PathBuf,
    /// Its group in the grouped form, if any.
    pub visibility: Option<Visibility>,
    /// Public ⇄ internal name pairs, from `application.yml` and the service file.
    pub translations: Vec<Translation>,
    /// The service's own config (the process's `ROLE` is ignored: the key
    /// names the role).
    pub config: ServiceConfig,
}

/// A whole application.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `name:`, if given.
    pub name: Option<String>,
    /// The `application.yml` read.
    pub file: PathBuf,
    /// The application's directory.
    pub dir: PathBuf,
    /// Its services, in file order.
    pub services: Vec<AppService>,
    /// Entries that are not run here (no `location:`, e.g. a `docker-image:`).
    pub skipped: Vec<String>,
    /// `transport:` (`exocom` or `nats`), if given; ExoCom when not.
    pub transport: Option<Transport>,
    /// `nats-url:`, if given: the NATS server(s) of the `nats` transport,
    /// checked and written out in full (see [`env::nats_url`]).
    pub nats_url: Option<String>,
}

impl AppConfig {
    /// Reads `application.yml` (give the file or its directory) and every
    /// service it lists. Reports every error found, not only the first.
    pub fn load(path: impl AsRef<Path>) -> Result<AppConfig, Vec<ConfigError>> {
        AppConfig::load_with(path.as_ref(), &Env::process())
    }

    /// [`AppConfig::load`] with a given environment (its `ROLE` is ignored).
    pub fn load_with(path: &Path, env: &Env) -> Result<AppConfig, Vec<ConfigError>> {
        let file = if path.is_dir() {
            path.join("application.yml")
        } else {
            path.to_owned()
        };
        let dir = file
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_owned();
        if !file.is_file() {
            return Err(vec![ConfigError::new(
                &file,
                "file not found (an application directory holds application.yml)",
            )]);
        }
        let doc = Document::read(&file).map_err(|e| vec![e])?;
        AppConfig::from_document(&doc, file, dir, env)
    }

    /// Reads `application.yml` from its text (`file` names it in errors
    /// and locates the services' directories, which are read from the
    /// file system as by [`AppConfig::load`]). For fuzzing and tools that
    /// hold the text already.
    #[doc(hidden)]
    pub fn parse_text(file: &Path, text: &str, env: &Env) -> Result<AppConfig, Vec<ConfigError>> {
        let doc = Document::parse(file, text).map_err(|e| vec![e])?;
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        AppConfig::from_document(&doc, file.to_owned(), dir, env)
    }

    /// The application in a parsed `application.yml`.
    fn from_document(
        doc: &Document,
        file: PathBuf,
        dir: PathBuf,
        env: &Env,
    ) -> Result<AppConfig, Vec<ConfigError>> {
        let env = env.without(env::ROLE);
        let mut errors = Vec::new();
        let mut app = AppConfig {
            name: None,
            file,
            dir: dir.clone(),
            services: Vec::new(),
            skipped: Vec::new(),
            transport: None,
            nats_url: None,
        };
        let root = &doc.root;
        if let Err(e) = doc.mapping(root, "the top level") {
            return Err(vec![e]);
        }
        match doc.opt_string(root.get("name"), "name") {
            Ok(name) => app.name = name,
            Err(e) => errors.push(e),
        }
        match read_transport(doc) {
            Ok(t) => app.transport = t,
            Err(e) => errors.push(e),
        }
        match read_nats_url(doc) {
            Ok(url) => app.nats_url = url,
            Err(e) => errors.push(e),
        }
        let entries = match collect_entries(doc) {
            Ok(entries) => entries,
            Err(e) => return Err(vec![e]),
        };
        for (key, node, visibility) in entries {
            match read_service(doc, &dir, &key, node, visibility, &env) {
                Ok(Some(service)) => {
                    if app.services.iter().any(|s| s.role == service.role) {
                        errors.push(
                            doc.error_at(
                                &key,
                                format!("service {:?} is listed twice", service.role),
                            ),
                        );
                    } else {
                        app.services.push(service);
                    }
                }
                Ok(None) => app.skipped.push(key.as_scalar_text().unwrap_or_default()),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(app)
        } else {
            Err(errors)
        }
    }

    /// The transport the application asks for (`transport:`; ExoCom when
    /// not given).
    pub fn transport_or_default(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// The application's name on NATS: `name:` with every character other
    /// than letters, digits, `_` and `-` made `-`, or `exo` when unnamed.
    pub fn nats_app(&self) -> String {
        self.name
            .as_deref()
            .and_then(env::sanitize_app_name)
            .unwrap_or_else(|| DEFAULT_APP.to_owned())
    }

    /// The service with this role.
    pub fn service(&self, role: &str) -> Option<&AppService> {
        self.services.iter().find(|s| s.role == role)
    }

    /// The routes a bus needs for this application.
    pub fn routes(&self) -> Routes {
        let mut routes = Routes::default();
        for s in &self.services {
            routes.roles.insert(
                s.role.clone(),
                RoleRoutes {
                    receives: s.config.receives.clone(),
                    sends: s.config.sends.clone(),
                    translations: s.translations.clone(),
                    at_least_once: s
                        .config
                        .delivery
                        .iter()
                        .filter(|(_, m)| **m == DeliveryMode::AtLeastOnce)
                        .map(|(n, _)| n.clone())
                        .collect(),
                },
            );
        }
        routes
    }

    /// Things that are allowed but probably wrong: messages sent that no
    /// service receives, messages received that no service sends,
    /// translations of names the service does not use, entries skipped.
    pub fn warnings(&self) -> Vec<String> {
        let routes = self.routes();
        let mut out = Vec::new();
        let publics = |role: &RoleRoutes, names: &[String]| -> Vec<String> {
            names.iter().map(|n| role.to_public(n).to_owned()).collect()
        };
        let mut sent = Vec::new();
        let mut received = Vec::new();
        for r in routes.roles.values() {
            sent.extend(publics(r, &r.sends));
            received.extend(publics(r, &r.receives));
        }
        for (role, r) in &routes.roles {
            for name in &r.sends {
                let public = r.to_public(name);
                if !received.iter().any(|n| n == public) {
                    out.push(format!(
                        "{role} sends {public:?}, which no service receives"
                    ));
                }
            }
            for name in &r.receives {
                let public = r.to_public(name);
                if !sent.iter().any(|n| n == public) {
                    out.push(format!(
                        "{role} receives {public:?}, which no service sends (only tools like `exo send` can)"
                    ));
                }
            }
            for t in &r.translations {
                if !r.sends.contains(&t.internal) && !r.receives.contains(&t.internal) {
                    out.push(format!(
                        "{role} translates {:?} to {:?}, but neither sends nor receives {:?}",
                        t.public, t.internal, t.internal
                    ));
                }
            }
        }
        if self.transport_or_default() != Transport::Nats {
            for (role, r) in &routes.roles {
                if !r.at_least_once.is_empty() {
                    out.push(format!(
                        "{role} takes {} at-least-once, but the application's transport is exocom, which delivers every message at most once (set `transport: nats`)",
                        r.at_least_once
                            .iter()
                            .map(|n| format!("{n:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        for name in &self.skipped {
            out.push(format!(
                "service {name:?} has no `location:`; it is not started here and its messages are unknown"
            ));
        }
        out
    }
}

/// `transport:`: `exocom` or `nats`.
fn read_transport(doc: &Document) -> Result<Option<Transport>, ConfigError> {
    let Some(node) = doc.root.get("transport").filter(|n| !n.is_null()) else {
        return Ok(None);
    };
    let parsed = match &node.value {
        Value::Str(s) => Transport::parse(s),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        let found = match &node.value {
            Value::Str(s) => format!("{s:?}"),
            _ => node.kind().to_owned(),
        };
        doc.error_at(
            node,
            format!("transport must be exocom or nats, found {found}"),
        )
    })
}

/// `nats-url:`: one NATS URL or a comma-separated list of them.
fn read_nats_url(doc: &Document) -> Result<Option<String>, ConfigError> {
    let node = doc.root.get("nats-url");
    let Some(text) = doc.opt_string(node, "nats-url")? else {
        return Ok(None);
    };
    match env::nats_url(&text) {
        Ok(url) => Ok(Some(url)),
        Err(e) => Err(doc.error_at(node.unwrap_or(&doc.root), format!("nats-url {e}"))),
    }
}

/// One service entry: its key, its value, its group.
type Entry<'a> = (Node, &'a Node, Option<Visibility>);

/// The service entries, from the flat form or the grouped one.
fn collect_entries(doc: &Document) -> Result<Vec<Entry<'_>>, ConfigError> {
    let Some(services) = doc.root.get("services").filter(|n| !n.is_null()) else {
        return Err(ConfigError::new(
            &doc.file,
            "no `services:` (expected a mapping of role: {location: ./dir})",
        ));
    };
    let entries = doc.mapping(services, "services")?;
    let group = |key: &Node| match key.as_scalar_text().as_deref() {
        Some("public") => Some(Visibility::Public),
        Some("private") => Some(Visibility::Private),
        Some("worker") => Some(Visibility::Worker),
        _ => None,
    };
    // Grouped when every key is a group and no value has `location:` itself.
    let grouped = entries
        .iter()
        .all(|(k, v)| group(k).is_some() && v.get("location").is_none());
    let mut out = Vec::new();
    if grouped {
        for (key, value) in entries {
            if value.is_null() {
                continue;
            }
            let what = format!("services.{}", key.as_scalar_text().unwrap_or_default());
            for (k, v) in doc.mapping(value, &what)? {
                out.push((k.clone(), v, group(key)));
            }
        }
    } else {
        for (k, v) in entries {
            out.push((k.clone(), v, None));
        }
    }
    Ok(out)
}

fn read_service(
    doc: &Document,
    app_dir: &Path,
    key: &Node,
    node: &Node,
    visibility: Option<Visibility>,
    env: &Env,
) -> Result<Option<AppService>, Vec<ConfigError>> {
    let role = match &key.value {
        Value::Str(s) if is_valid_role(s) => s.clone(),
        _ => {
            return Err(vec![doc.error_at(
                key,
                format!(
                    "{:?} is not a role name (letters and digits in groups joined by single hyphens)",
                    key.as_scalar_text().unwrap_or_default()
                ),
            )]);
        }
    };
    let what = format!("services.{role}");
    doc.mapping(node, &what).map_err(|e| vec![e])?;
    let location = doc
        .opt_string(node.get("location"), &format!("{what}.location"))
        .map_err(|e| vec![e])?;
    let Some(location) = location else {
        if node
            .get_any(&["docker-image", "docker_image", "image"])
            .is_some()
        {
            return Ok(None);
        }
        return Err(vec![doc.error_at(
            node,
            format!(
                "{what} needs `location:` (the service's directory, relative to application.yml)"
            ),
        )]);
    };
    let mut errors = Vec::new();
    let mut translations = Vec::new();
    for (k, what_k) in [
        ("message-translation", format!("{what}.message-translation")),
        (
            "dependency-data",
            format!("{what}.dependency-data.exocom.translations"),
        ),
    ] {
        let list = if k == "dependency-data" {
            node.get(k)
                .and_then(|d| d.get("exocom"))
                .and_then(|e| e.get("translations"))
        } else {
            node.get(k)
        };
        match read_translations(doc, list, &what_k) {
            Ok(mut t) => translations.append(&mut t),
            Err(e) => errors.push(e),
        }
    }
    let dir = app_dir.join(&location);
    let config = service_file::find(&dir)
        .and_then(|file| service_file::read(&file))
        .and_then(|parsed| ServiceConfig::from_file(parsed, &dir, env, Some(&role)));
    match config {
        Ok((config, mut own)) => {
            translations.append(&mut own);
            if errors.is_empty() {
                Ok(Some(AppService {
                    role,
                    location,
                    dir,
                    visibility,
                    translations,
                    config,
                }))
            } else {
                Err(errors)
            }
        }
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

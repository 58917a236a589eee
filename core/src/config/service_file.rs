//! Reading one service's `service.yml` (or legacy `config.yml`) in the
//! 2016, 2017 and 2018 shapes into a neutral form; role resolution and the
//! environment are applied by the caller. The top-level `delivery:` mapping
//! (received name → `at-least-once` | `at-most-once`) is read in every
//! shape.

use std::path::{Path, PathBuf};

use super::yaml::{Document, Node, Value};
use super::{ConfigError, Startup};
use crate::routes::{DeliveryMode, Translation};

/// File names a service directory may hold, in order of preference.
pub const SERVICE_FILES: [&str; 2] = ["service.yml", "config.yml"];

/// `type:` values of the 2018 shape that are not roles.
pub const NON_ROLE_TYPES: [&str; 3] = ["public", "private", "worker"];

/// What one service file says, before role resolution and the environment.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    /// The file read.
    pub file: PathBuf,
    /// `type:` when it names a role, with its position.
    pub type_role: Option<(String, usize, usize)>,
    /// `type:` as written, when it is public/private/worker.
    pub kind: Option<String>,
    /// `name:` (2016), with its position.
    pub name: Option<(String, usize, usize)>,
    /// Received message names.
    pub receives: Vec<String>,
    /// Sent message names.
    pub sends: Vec<String>,
    /// Translations under `dependency-data.exocom.translations`.
    pub translations: Vec<Translation>,
    /// `description:`.
    pub description: Option<String>,
    /// `author:`.
    pub author: Option<String>,
    /// `startup:` (or `development.scripts.run`).
    pub startup: Option<Startup>,
    /// `setup:` (2016).
    pub setup: Option<String>,
    /// `exoservice.concurrency`.
    pub concurrency: Option<u64>,
    /// `exoservice.outgoing-buffer`.
    pub outgoing_buffer: Option<u64>,
    /// `exoservice.drain-timeout-ms`.
    pub drain_timeout_ms: Option<u64>,
    /// `delivery:`: received names (internal) and how each is delivered,
    /// in file order.
    pub delivery: Vec<(String, DeliveryMode)>,
}

/// Finds the config file in a service directory.
pub fn find(dir: &Path) -> Result<PathBuf, ConfigError> {
    for name in SERVICE_FILES {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    if !dir.is_dir() {
        return Err(ConfigError::new(
            dir,
            "no such directory (expected a service directory holding service.yml)",
        ));
    }
    Err(ConfigError::new(
        dir.join("service.yml"),
        "file not found (a service directory holds service.yml, or config.yml in the 2016 layout)",
    ))
}

/// Reads and checks one service file.
pub fn read(file: &Path) -> Result<ServiceFile, ConfigError> {
    let doc = Document::read(file)?;
    parse(&doc)
}

/// Reads a parsed document.
pub fn parse(doc: &Document) -> Result<ServiceFile, ConfigError> {
    let root = &doc.root;
    if root.is_null() {
        return Err(ConfigError::new(
            &doc.file,
            "the file is empty (expected at least `type:` and `messages:`)",
        ));
    }
    doc.mapping(root, "the top level")?;

    let mut type_role = None;
    let mut kind = None;
    if let Some(node) = root.get("type")
        && let Some(t) = doc.opt_string(Some(node), "type")?
    {
        if NON_ROLE_TYPES.contains(&t.as_str()) {
            kind = Some(t);
        } else {
            type_role = Some((t, node.line, node.column));
        }
    }
    let name = match root.get("name") {
        Some(node) => doc
            .opt_string(Some(node), "name")?
            .map(|n| (n, node.line, node.column)),
        None => None,
    };

    // Messages: `messages:` (2016/2017) and `dependency-data.exocom` (2018).
    let mut receives = Vec::new();
    let mut sends = Vec::new();
    let mut translations = Vec::new();
    if let Some(messages) = root.get("messages").filter(|n| !n.is_null()) {
        doc.mapping(messages, "messages")?;
        receives = doc.name_list(messages.get("receives"), "messages.receives")?;
        sends = doc.name_list(messages.get("sends"), "messages.sends")?;
    }
    if let Some(exocom) = exocom_section(doc)? {
        let what = "dependency-data.exocom";
        for name in doc.name_list(exocom.get("receives"), &format!("{what}.receives"))? {
            push_unique(&mut receives, name);
        }
        for name in doc.name_list(exocom.get("sends"), &format!("{what}.sends"))? {
            push_unique(&mut sends, name);
        }
        translations = read_translations(
            doc,
            exocom.get("translations"),
            &format!("{what}.translations"),
        )?;
    }

    let delivery = read_delivery(doc, root, &receives)?;
    let startup = read_startup(doc, root)?;
    let setup = doc.opt_string(root.get("setup"), "setup")?;

    let (mut concurrency, mut outgoing_buffer, mut drain_timeout_ms) = (None, None, None);
    if let Some(section) = root.get("exoservice").filter(|n| !n.is_null()) {
        doc.mapping(section, "exoservice")?;
        concurrency = doc.opt_count(section.get("concurrency"), "exoservice.concurrency")?;
        outgoing_buffer =
            doc.opt_count(section.get("outgoing-buffer"), "exoservice.outgoing-buffer")?;
        drain_timeout_ms = doc.opt_count(
            section.get("drain-timeout-ms"),
            "exoservice.drain-timeout-ms",
        )?;
    }

    Ok(ServiceFile {
        file: doc.file.clone(),
        type_role,
        kind,
        name,
        receives,
        sends,
        translations,
        description: doc.opt_string(root.get("description"), "description")?,
        author: doc.opt_string(root.get("author"), "author")?,
        startup,
        setup,
        concurrency,
        outgoing_buffer,
        drain_timeout_ms,
        delivery,
    })
}

/// `delivery:`, a mapping of received message names (internal) to
/// `at-least-once` or `at-most-once`; the receiving service declares it.
fn read_delivery(
    doc: &Document,
    root: &Node,
    receives: &[String],
) -> Result<Vec<(String, DeliveryMode)>, ConfigError> {
    let Some(node) = root.get("delivery").filter(|n| !n.is_null()) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, DeliveryMode)> = Vec::new();
    for (key, value) in doc.mapping(node, "delivery")? {
        let name = match &key.value {
            Value::Str(s) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(doc.error_at(
                    key,
                    format!(
                        "delivery: each key must be the name of a message this service receives, found {}",
                        key.kind()
                    ),
                ));
            }
        };
        if !receives.contains(&name) {
            let received = if receives.is_empty() {
                "it receives nothing".to_owned()
            } else {
                format!("it receives: {}", receives.join(", "))
            };
            return Err(doc.error_at(
                key,
                format!(
                    "delivery: {name:?} is not a message this service receives ({received}); the receiving service declares how it takes a message"
                ),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(doc.error_at(key, format!("delivery: {name:?} is listed twice")));
        }
        let mode = match &value.value {
            Value::Str(s) => DeliveryMode::parse(s.trim()),
            _ => None,
        };
        let Some(mode) = mode else {
            let found = match &value.value {
                Value::Str(s) => format!("{s:?}"),
                _ => value.kind().to_owned(),
            };
            return Err(doc.error_at(
                value,
                format!(
                    "delivery of {name:?} must be at-least-once or at-most-once, found {found}"
                ),
            ));
        };
        out.push((name, mode));
    }
    Ok(out)
}

fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.contains(&name) {
        list.push(name);
    }
}

/// `dependency-data.exocom` when present.
fn exocom_section(doc: &Document) -> Result<Option<&Node>, ConfigError> {
    let Some(data) = doc.root.get("dependency-data").filter(|n| !n.is_null()) else {
        return Ok(None);
    };
    doc.mapping(data, "dependency-data")?;
    match data.get("exocom").filter(|n| !n.is_null()) {
        Some(exocom) => {
            doc.mapping(exocom, "dependency-data.exocom")?;
            Ok(Some(exocom))
        }
        None => Ok(None),
    }
}

fn read_startup(doc: &Document, root: &Node) -> Result<Option<Startup>, ConfigError> {
    if let Some(node) = root.get("startup").filter(|n| !n.is_null()) {
        return match &node.value {
            Value::Str(command) => Ok(Some(Startup {
                command: command.clone(),
                online_text: None,
            })),
            Value::Map(_) => {
                let command = doc.opt_string(node.get("command"), "startup.command")?;
                let Some(command) = command else {
                    return Err(doc.error_at(
                        node,
                        "startup must have a `command:` (the shell command that starts the service)",
                    ));
                };
                let online_text = doc.opt_string(node.get("online-text"), "startup.online-text")?;
                Ok(Some(Startup {
                    command,
                    online_text,
                }))
            }
            _ => Err(doc.error_at(
                node,
                format!(
                    "startup must be a mapping with `command:` and `online-text:`, found {}",
                    node.kind()
                ),
            )),
        };
    }
    // 2018: development.scripts.run
    let run = root
        .get("development")
        .and_then(|d| d.get("scripts"))
        .and_then(|s| s.get("run"));
    Ok(doc
        .opt_string(run, "development.scripts.run")?
        .map(|command| Startup {
            command,
            online_text: None,
        }))
}

/// A list of `{public, internal}` pairs.
pub fn read_translations(
    doc: &Document,
    node: Option<&Node>,
    what: &str,
) -> Result<Vec<Translation>, ConfigError> {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Ok(Vec::new());
    };
    let Value::Seq(items) = &node.value else {
        return Err(doc.error_at(
            node,
            format!(
                "{what} must be a list of {{public: NAME, internal: NAME}} entries, found {}",
                node.kind()
            ),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        doc.mapping(item, &format!("each entry of {what}"))?;
        let public = doc.opt_string(item.get("public"), &format!("{what}: public"))?;
        let internal = doc.opt_string(item.get("internal"), &format!("{what}: internal"))?;
        match (public, internal) {
            (Some(public), Some(internal)) if !public.is_empty() && !internal.is_empty() => {
                out.push(Translation { public, internal })
            }
            _ => {
                return Err(doc.error_at(
                    item,
                    format!(
                        "each entry of {what} needs both `public:` and `internal:` message names"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

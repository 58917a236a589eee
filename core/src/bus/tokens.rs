//! Who may connect: a shared secret per role.
//!
//! The bus holds a [`Tokens`] table (role → one or more tokens). A service
//! shows its token on the WebSocket upgrade request, in one of:
//!
//! - `Authorization: Bearer TOKEN` (what this project's relay sends),
//! - `X-Exocom-Token: TOKEN`,
//! - `?token=TOKEN` in the URL (percent-encoded; for clients that cannot
//!   set headers, like a browser's `WebSocket`).
//!
//! An optional `X-Exocom-Role: ROLE` header or `?role=ROLE` says which role
//! the token is for (the relay sends the header with its token), so a
//! token of another role is refused at the door already. The bus
//! admits the upgrade when the token is one of a role's tokens (of that
//! role, when `role=` is given), and the connection may then register only
//! as the role(s) whose token it showed. A missing or wrong token gets
//! HTTP 401 on the upgrade; no table (or an empty one) leaves the bus open.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time (the
//! time taken does not depend on how much of a token matched, nor on its
//! length).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::ConfigError;
use crate::config::yaml::{Document, Node, Value};
use crate::routes::is_valid_role;

/// Role → tokens as written, for tools that hand each service its token
/// (`exo run`). The bus itself keeps only digests ([`Tokens`]).
pub type PlainTokens = BTreeMap<String, Vec<String>>;

/// One token, as the bus keeps it.
#[derive(Clone)]
struct Entry {
    role: Arc<str>,
    digest: [u8; 32],
}

/// The tokens of a bus: each role has its own (one or more, so a token can
/// be rotated without downtime). `Debug` shows the roles, never a token.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("roles", &self.roles())
            .finish_non_exhaustive()
    }
}

impl Eq for Tokens {}

impl PartialEq for Tokens {
    fn eq(&self, other: &Tokens) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.role == b.role && a.digest == b.digest)
    }
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The role is not a role name.
    #[error("{0:?} is not a role name (letters and digits in groups joined by single hyphens)")]
    BadRole(String),
    /// The token is empty, or holds a character that cannot travel in an
    /// HTTP header (whitespace, controls, non-ASCII).
    #[error(
        "the token of '{0}' must be printable ASCII without spaces (it travels in an HTTP header), and not empty"
    )]
    BadToken(String),
}

/// What a connection showed on its upgrade request, and so what it may
/// register as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Admission {
    /// The bus has no tokens: any role.
    #[default]
    Open,
    /// Only these roles (those whose token the connection showed).
    Roles(Arc<[Arc<str>]>),
}

impl Admission {
    /// Whether the connection may register as `role`.
    pub fn allows(&self, role: &str) -> bool {
        match self {
            Admission::Open => true,
            Admission::Roles(roles) => roles.iter().any(|r| &**r == role),
        }
    }

    /// The roles allowed, for log lines (`None` when open).
    pub fn roles(&self) -> Option<&[Arc<str>]> {
        match self {
            Admission::Open => None,
            Admission::Roles(roles) => Some(roles),
        }
    }
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token on the request.
    Missing,
    /// A token that is no role's (or not the one of the role named by
    /// `?role=`).
    Wrong {
        /// The role named by `?role=`, if any.
        role: Option<String>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("no token"),
            Refusal::Wrong { role: None } => f.write_str("a wrong token"),
            Refusal::Wrong { role: Some(r) } => write!(f, "a wrong token for '{r}'"),
        }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two byte strings: the time depends only on
/// the lengths of the inputs' digests (always 32 bytes), never on where
/// they differ or on the secret's length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(digest(a).ct_eq(&digest(b)))
}

/// Whether a token can travel in an HTTP header.
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

impl Tokens {
    /// No tokens (the bus is open).
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Adds a token for `role` (a role may have several).
    pub fn insert(&mut self, role: &str, token: &str) -> Result<(), TokenError> {
        if !is_valid_role(role) {
            return Err(TokenError::BadRole(role.to_owned()));
        }
        if !valid_token(token) {
            return Err(TokenError::BadToken(role.to_owned()));
        }
        let role: Arc<str> = self
            .entries
            .iter()
            .find(|e| &*e.role == role)
            .map_or_else(|| Arc::from(role), |e| e.role.clone());
        self.entries.push(Entry {
            role,
            digest: digest(token.as_bytes()),
        });
        Ok(())
    }

    /// The same with one more token.
    pub fn with(mut self, role: &str, token: &str) -> Result<Tokens, TokenError> {
        self.insert(role, token)?;
        Ok(self)
    }

    /// Whether no token is configured (the bus is open).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The roles that have a token, sorted, each once.
    pub fn roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self.entries.iter().map(|e| e.role.to_string()).collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Decides on a token shown on an upgrade (`role`: the `?role=` of the
    /// request). Every configured token is compared, in constant time, so
    /// the time taken says nothing about which one (if any) matched.
    pub fn admit(&self, token: Option<&[u8]>, role: Option<&str>) -> Result<Admission, Refusal> {
        if self.entries.is_empty() {
            return Ok(Admission::Open);
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::Missing);
        };
        let shown = digest(token);
        let mut roles: Vec<Arc<str>> = Vec::new();
        for entry in &self.entries {
            let matched = bool::from(entry.digest.ct_eq(&shown));
            let wanted = role.is_none_or(|r| r == &*entry.role);
            if matched && wanted && !roles.contains(&entry.role) {
                roles.push(entry.role.clone());
            }
        }
        if roles.is_empty() {
            return Err(Refusal::Wrong {
                role: role.map(str::to_owned),
            });
        }
        Ok(Admission::Roles(roles.into()))
    }

    /// Reads a tokens file: a YAML or JSON mapping of role to token (or to
    /// a list of tokens). An empty file is an empty table.
    pub fn load(path: &Path) -> Result<Tokens, ConfigError> {
        let doc = Document::read(path)?;
        Tokens::from_node(&doc, &doc.root, "the tokens file")
    }

    /// Parses the text of a tokens file; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Tokens, ConfigError> {
        let doc = Document::parse(file, text)?;
        Tokens::from_node(&doc, &doc.root, "the tokens file")
    }

    /// `EXOCOM_TOKENS`: a file name, or (when it starts with `{`) the
    /// mapping itself, inline.
    pub fn from_env_value(value: &str) -> Result<Tokens, ConfigError> {
        let value = value.trim();
        if value.starts_with('{') {
            Tokens::parse(Path::new("$EXOCOM_TOKENS"), value)
        } else {
            Tokens::load(Path::new(value))
        }
    }

    /// The `tokens:` section of an `application.yml` (give the file or its
    /// directory): a mapping of role to token, or the name of a tokens file
    /// (relative to the application's directory). `Ok(None)` when there is
    /// no such section.
    pub fn from_app(path: &Path) -> Result<Option<Tokens>, ConfigError> {
        Ok(match Tokens::plain_from_app(path)? {
            Some(plain) => Some(
                Tokens::from_plain(&plain)
                    .map_err(|e| ConfigError::new(path, format!("tokens: {e}")))?,
            ),
            None => None,
        })
    }

    /// [`Tokens::from_app`] with the tokens as written (checked the same way).
    pub fn plain_from_app(path: &Path) -> Result<Option<PlainTokens>, ConfigError> {
        let file = if path.is_dir() {
            path.join("application.yml")
        } else {
            path.to_owned()
        };
        let doc = Document::read(&file)?;
        let Some(node) = doc.root.get("tokens") else {
            return Ok(None);
        };
        match &node.value {
            Value::Null => Ok(None),
            Value::Str(name) => {
                let dir = file.parent().unwrap_or(Path::new("."));
                let tokens_file = Document::read(&dir.join(name))?;
                plain_from_node(&tokens_file, &tokens_file.root, "the tokens file").map(Some)
            }
            _ => plain_from_node(&doc, node, "tokens").map(Some),
        }
    }

    /// The table for tokens as written.
    pub fn from_plain(plain: &PlainTokens) -> Result<Tokens, TokenError> {
        let mut tokens = Tokens::new();
        for (role, list) in plain {
            for token in list {
                tokens.insert(role, token)?;
            }
        }
        Ok(tokens)
    }

    fn from_node(doc: &Document, node: &Node, what: &str) -> Result<Tokens, ConfigError> {
        let plain = plain_from_node(doc, node, what)?;
        Tokens::from_plain(&plain).map_err(|e| ConfigError::new(&doc.file, format!("{what}: {e}")))
    }
}

/// Reads a mapping of role → token (or list of tokens), checking each
/// role and token where it stands in the file.
fn plain_from_node(doc: &Document, node: &Node, what: &str) -> Result<PlainTokens, ConfigError> {
    let mut plain = PlainTokens::new();
    let mut check = Tokens::new();
    {
        let tokens = &mut check;
        if node.is_null() {
            return Ok(plain);
        }
        for (key, value) in doc.mapping(node, what)? {
            let Some(role) = key.as_scalar_text() else {
                return Err(doc.error_at(key, format!("{what}: a key must be a role name")));
            };
            let items: Vec<&Node> = match &value.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![value],
            };
            if items.is_empty() {
                return Err(doc.error_at(value, format!("{what}: '{role}' has no token")));
            }
            for item in items {
                let text = match &item.value {
                    Value::Str(s) => s.clone(),
                    Value::Number(n) => n.clone(),
                    _ => {
                        return Err(doc.error_at(
                            item,
                            format!(
                                "{what}: the token of '{role}' must be a string (or a list of strings), found {}",
                                item.kind()
                            ),
                        ));
                    }
                };
                tokens.insert(&role, &text).map_err(|e| match e {
                    TokenError::BadRole(_) => doc.error_at(key, format!("{what}: {e}")),
                    TokenError::BadToken(_) => doc.error_at(item, format!("{what}: {e}")),
                })?;
                plain.entry(role.clone()).or_default().push(text);
            }
        }
    }
    Ok(plain)
}

/// The token and role shown on an upgrade request: the
/// `Authorization: Bearer` header, else `X-Exocom-Token`, else `?token=`;
/// the `X-Exocom-Role` header, else `?role=`.
pub(crate) fn shown(
    headers: &[httparse::Header<'_>],
    query: &str,
) -> (Option<Vec<u8>>, Option<String>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    let bearer = header("authorization").and_then(|v| {
        let (scheme, rest) = v.split_at_checked(6)?;
        (scheme.eq_ignore_ascii_case(b"bearer")
            && rest.first().is_some_and(u8::is_ascii_whitespace))
        .then(|| rest.trim_ascii().to_vec())
    });
    let mut token = bearer.or_else(|| header("x-exocom-token").map(<[u8]>::to_vec));
    let mut role = header("x-exocom-role").map(|r| String::from_utf8_lossy(r).into_owned());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "token" if token.is_none() => token = Some(percent_decode(value)),
            "role" if role.is_none() => {
                role = Some(String::from_utf8_lossy(&percent_decode(value)).into_owned());
            }
            _ => {}
        }
    }
    (
        token.filter(|t| !t.is_empty()),
        role.filter(|r| !r.is_empty()),
    )
}

/// Decodes `%XX` escapes and `+` (as a space) of a query value.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn admits_by_token_and_binds_roles() {
        let tokens = Tokens::new()
            .with("web", "w-token")
            .unwrap()
            .with("users", "u-token")
            .unwrap()
            .with("users", "u-next")
            .unwrap();
        assert_eq!(tokens.roles(), ["users", "web"]);
        let a = tokens.admit(Some(b"w-token"), None).unwrap();
        assert!(a.allows("web"));
        assert!(!a.allows("users"));
        let a = tokens.admit(Some(b"u-next"), None).unwrap();
        assert!(a.allows("users") && !a.allows("web"));
        assert_eq!(tokens.admit(None, None), Err(Refusal::Missing));
        assert_eq!(tokens.admit(Some(b""), None), Err(Refusal::Missing));
        assert_eq!(
            tokens.admit(Some(b"nope"), None),
            Err(Refusal::Wrong { role: None })
        );
        assert_eq!(
            tokens.admit(Some(b"w-token"), Some("users")),
            Err(Refusal::Wrong {
                role: Some("users".into())
            })
        );
        assert!(
            tokens
                .admit(Some(b"u-token"), Some("users"))
                .unwrap()
                .allows("users")
        );
        assert_eq!(Tokens::new().admit(None, None), Ok(Admission::Open));
        assert!(!format!("{tokens:?}").contains("token\""));
        assert!(!format!("{tokens:?}").contains("w-token"));
    }

    #[test]
    fn refuses_bad_roles_and_tokens() {
        assert!(matches!(
            Tokens::new().with("not a role", "t"),
            Err(TokenError::BadRole(_))
        ));
        assert!(matches!(
            Tokens::new().with("web", "has space"),
            Err(TokenError::BadToken(_))
        ));
        assert!(matches!(
            Tokens::new().with("web", ""),
            Err(TokenError::BadToken(_))
        ));
    }

    #[test]
    fn reads_yaml_json_and_lists() {
        let t = Tokens::parse(
            Path::new("t.yml"),
            "web: abc\nusers:\n  - one\n  - two\nworker: 12345\n",
        )
        .unwrap();
        assert_eq!(t.roles(), ["users", "web", "worker"]);
        assert!(t.admit(Some(b"two"), None).unwrap().allows("users"));
        assert!(t.admit(Some(b"12345"), None).unwrap().allows("worker"));
        let j = Tokens::parse(Path::new("t.json"), r#"{"web": "abc"}"#).unwrap();
        assert!(j.admit(Some(b"abc"), None).unwrap().allows("web"));
        assert!(Tokens::parse(Path::new("t"), "").unwrap().is_empty());
        let e = Tokens::parse(Path::new("t.yml"), "web: abc\nusers: {a: 1}\n").unwrap_err();
        assert_eq!(e.to_string().split(": ").next(), Some("t.yml:2:8"));
        let e = Tokens::parse(Path::new("t.yml"), "- web\n").unwrap_err();
        assert!(e.to_string().contains("must be a mapping"), "{e}");
        let e = Tokens::parse(Path::new("t.yml"), "web: \"a b\"\n").unwrap_err();
        assert!(e.to_string().starts_with("t.yml:1:6:"), "{e}");
        let e = Tokens::parse(Path::new("t.yml"), "web: []\n").unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");
    }

    #[test]
    fn reads_what_the_upgrade_shows() {
        let h = |name: &'static str, value: &'static [u8]| httparse::Header { name, value };
        let (t, r) = shown(&[h("Authorization", b"Bearer  abc ")], "");
        assert_eq!((t.as_deref(), r), (Some(&b"abc"[..]), None));
        let (t, _) = shown(&[h("authorization", b"bearer abc")], "");
        assert_eq!(t.as_deref(), Some(&b"abc"[..]));
        let (t, _) = shown(&[h("Authorization", b"Basic abc")], "");
        assert_eq!(t, None);
        let (t, _) = shown(&[h("X-Exocom-Token", b"xyz")], "token=q");
        assert_eq!(t.as_deref(), Some(&b"xyz"[..]));
        let (_, r) = shown(&[h("X-Exocom-Role", b" ping ")], "role=web");
        assert_eq!(r.as_deref(), Some("ping"));
        let (t, r) = shown(&[], "a=1&token=a%2Fb%3D&role=web");
        assert_eq!(
            (t.as_deref(), r.as_deref()),
            (Some(&b"a/b="[..]), Some("web"))
        );
        let (t, _) = shown(&[], "token=");
        assert_eq!(t, None);
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(percent_decode("%zz1"), b"%zz1");
        assert_eq!(percent_decode("a+b%20c"), b"a b c");
    }
}

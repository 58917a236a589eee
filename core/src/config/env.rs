//! The environment variables that override a service's config file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Transport};
use crate::routes::{Routes, RoutesError};

/// `ROLE`: the role to register as.
pub const ROLE: &str = "ROLE";
/// `EXOCOM_HOST`: where the bus runs.
pub const EXOCOM_HOST: &str = "EXOCOM_HOST";
/// `EXOCOM_PORT`: the bus's port.
pub const EXOCOM_PORT: &str = "EXOCOM_PORT";
/// `EXOSERVICE_CONCURRENCY`: limit of handlers in flight.
pub const CONCURRENCY: &str = "EXOSERVICE_CONCURRENCY";
/// `EXOSERVICE_OUTGOING_BUFFER`: capacity of the outgoing buffer.
pub const OUTGOING_BUFFER: &str = "EXOSERVICE_OUTGOING_BUFFER";
/// `EXOSERVICE_DRAIN_TIMEOUT_MS`: drain deadline in milliseconds.
pub const DRAIN_TIMEOUT_MS: &str = "EXOSERVICE_DRAIN_TIMEOUT_MS";

/// `EXOSERVICE_METRICS_PORT`: serve `/metrics` and `/healthz` on this port
/// (0: any free port); unset: no metrics endpoint.
pub const METRICS_PORT: &str = "EXOSERVICE_METRICS_PORT";
/// `EXOSERVICE_METRICS_BIND`: the IP address of the metrics endpoint
/// (default `127.0.0.1`).
pub const METRICS_BIND: &str = "EXOSERVICE_METRICS_BIND";

/// `EXOCOM_URL`: the bus's URL, `ws://HOST:PORT` or `wss://HOST:PORT`
/// (optionally with a path; default `/services`); wins over
/// `EXOCOM_HOST`/`EXOCOM_PORT`.
pub const EXOCOM_URL: &str = "EXOCOM_URL";
/// `EXOCOM_TOKEN`: the token this service shows the bus when it connects.
pub const EXOCOM_TOKEN: &str = "EXOCOM_TOKEN";
/// `EXOCOM_CA_FILE`: PEM certificates to trust for `wss://` instead of the
/// system's roots (for self-signed setups).
pub const EXOCOM_CA_FILE: &str = "EXOCOM_CA_FILE";

/// `EXOSERVICE_TRANSPORT`: what carries the messages, `exocom` (the
/// default) or `nats`.
pub const TRANSPORT: &str = "EXOSERVICE_TRANSPORT";
/// `NATS_URL`: the NATS server, or a comma-separated list of cluster seeds
/// (`nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`).
pub const NATS_URL: &str = "NATS_URL";
/// `EXOSERVICE_APP`: the application's name on NATS (subjects
/// `exo.<app>.…`, stream `EXO_<app>`); letters, digits, `_` and `-`.
pub const APP: &str = "EXOSERVICE_APP";
/// `EXOSERVICE_ROUTES`: the routes of the whole application as JSON (the
/// shape of the bus's `SERVICE_DATA`, plus `atLeastOnce`).
pub const ROUTES: &str = "EXOSERVICE_ROUTES";
/// `EXOSERVICE_APPLICATION`: the application's `application.yml` (or its
/// directory); gives the routes, and defaults for the transport, the NATS
/// URL and the application's name.
pub const APPLICATION: &str = "EXOSERVICE_APPLICATION";
/// `EXOSERVICE_MAX_ATTEMPTS`: attempts of an at-least-once message before
/// it is dead-lettered.
pub const MAX_ATTEMPTS: &str = "EXOSERVICE_MAX_ATTEMPTS";
/// `EXOSERVICE_ACK_WAIT_MS`: how long an at-least-once message may stay
/// unacknowledged, in milliseconds.
pub const ACK_WAIT_MS: &str = "EXOSERVICE_ACK_WAIT_MS";
/// `EXOSERVICE_REDELIVERY_DELAY_MS`: the delay before a failed message's
/// second attempt, in milliseconds (doubled for each further attempt).
pub const REDELIVERY_DELAY_MS: &str = "EXOSERVICE_REDELIVERY_DELAY_MS";
/// `EXOSERVICE_NATS_REPLICAS`: copies of each JetStream message the NATS
/// cluster keeps (1 to 5).
pub const NATS_REPLICAS: &str = "EXOSERVICE_NATS_REPLICAS";

/// The variables that choose the NATS transport and its settings. A
/// process started for ExoCom (or for one NATS server of its own) removes
/// them all from the environment it passes on, so that the environment it
/// was started from cannot move it onto another transport.
pub const NATS_VARS: [&str; 14] = [
    TRANSPORT,
    NATS_URL,
    NATS_CA_FILE,
    NATS_CERT_FILE,
    NATS_KEY_FILE,
    NATS_NKEY_FILE,
    NATS_CREDS_FILE,
    APP,
    ROUTES,
    APPLICATION,
    MAX_ATTEMPTS,
    ACK_WAIT_MS,
    REDELIVERY_DELAY_MS,
    NATS_REPLICAS,
];

/// The most attempts `EXOSERVICE_MAX_ATTEMPTS` may ask for.
pub const MAX_MAX_ATTEMPTS: u64 = 1000;
/// The shortest `EXOSERVICE_ACK_WAIT_MS`.
pub const MIN_ACK_WAIT_MS: u64 = 100;
/// `NATS_CA_FILE`: the certificates (PEM) trusted for a NATS server's TLS
/// instead of the system's roots (a private CA); also turns TLS on.
pub const NATS_CA_FILE: &str = "NATS_CA_FILE";
/// `NATS_CERT_FILE`: this service's client certificate (PEM) for a NATS
/// server that verifies clients (mutual TLS); set together with
/// `NATS_KEY_FILE`.
pub const NATS_CERT_FILE: &str = "NATS_CERT_FILE";
/// `NATS_KEY_FILE`: the private key (PEM) of `NATS_CERT_FILE`.
pub const NATS_KEY_FILE: &str = "NATS_KEY_FILE";
/// `NATS_NKEY_FILE`: a file holding a user NKey seed (`SU…`) this service
/// authenticates with.
pub const NATS_NKEY_FILE: &str = "NATS_NKEY_FILE";
/// `NATS_CREDS_FILE`: a `.creds` file (a user JWT and the user's NKey
/// seed, as `nsc` writes it) for servers in operator mode.
pub const NATS_CREDS_FILE: &str = "NATS_CREDS_FILE";

/// The most replicas a JetStream stream may have.
pub const MAX_NATS_REPLICAS: u64 = 5;
/// The port of a NATS URL that names none.
pub const DEFAULT_NATS_PORT: u16 = 4222;

/// A secret (a token): `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A bus URL taken apart (see [`bus_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusUrl {
    /// `wss://` (TLS) rather than `ws://`.
    pub tls: bool,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port (default 80 for `ws://`, 443 for `wss://`).
    pub port: u16,
    /// The path and query (default `/services`).
    pub path: String,
}

impl BusUrl {
    /// The URL written out in full.
    pub fn to_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// Splits `host:port` or `[v6]:port` (the port may be absent); `place`
/// names what is read in errors (quoted already).
fn split_host_port<'a>(
    authority: &'a str,
    place: &str,
) -> Result<(&'a str, Option<&'a str>), String> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("has an unclosed '[' in {place}"))?;
        match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("has a bad host in {place}")),
        }
    } else {
        Ok(match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        })
    }
}

/// Reads a bus URL: `ws://` or `wss://`, a host, an optional port, an
/// optional path (`/` or none means `/services`).
pub fn bus_url(text: &str) -> Result<BusUrl, String> {
    let text = text.trim();
    let (tls, rest) = if let Some(rest) = text.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(format!("must start with ws:// or wss://, found {text:?}"));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("must not hold a user name or password (use EXOCOM_TOKEN)".into());
    }
    let (host, port) = split_host_port(authority, &format!("{authority:?}"))?;
    if host.is_empty() {
        return Err(format!("has no host: {text:?}"));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("has a bad port {p:?} (1 to 65535)")),
        },
    };
    let path = match path {
        "" | "/" => "/services".to_owned(),
        p if p.starts_with('?') => format!("/services{p}"),
        p => p.to_owned(),
    };
    Ok(BusUrl {
        tls,
        host: host.to_owned(),
        port,
        path,
    })
}

/// One NATS server address taken apart (see [`nats_servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServer {
    /// `tls://` (TLS required) rather than `nats://` or no scheme.
    pub tls: bool,
    /// A user and password (`user:password`) or a token before the `@`.
    pub credentials: Option<Secret>,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port (default 4222).
    pub port: u16,
}

impl NatsServer {
    /// The URL written out in full, credentials included.
    pub fn to_url(&self) -> String {
        self.write(self.credentials.as_ref().map(Secret::expose))
    }

    /// The URL without its credentials (they travel apart, see
    /// [`NatsServer::auth`]).
    pub fn to_plain_url(&self) -> String {
        self.write(None)
    }

    /// The URL with the password or token shown as `***` (a user name
    /// stays), for logs and output.
    pub fn to_display_url(&self) -> String {
        let shown = self
            .credentials
            .as_ref()
            .map(|c| redact_userinfo(c.expose()));
        self.write(shown.as_deref())
    }

    /// The credentials before the `@` taken apart: `user:password` is a
    /// user and a password, anything else a token; `%XX` escapes are
    /// decoded.
    pub fn auth(&self) -> Option<NatsUrlAuth> {
        let text = self.credentials.as_ref()?.expose();
        Some(match text.split_once(':') {
            Some((user, password)) => NatsUrlAuth::UserPassword {
                user: percent_decode(user),
                password: Secret::new(percent_decode(password)),
            },
            None => NatsUrlAuth::Token(Secret::new(percent_decode(text))),
        })
    }

    fn write(&self, credentials: Option<&str>) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match credentials {
            Some(c) => format!("{scheme}://{c}@{host}:{}", self.port),
            None => format!("{scheme}://{host}:{}", self.port),
        }
    }
}

/// The credentials a NATS URL carries (see [`NatsServer::auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsUrlAuth {
    /// `nats://user:password@host`: a user and its password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `nats://token@host`: a token.
    Token(Secret),
}

/// The credentials of a server list: those of the servers that carry any,
/// which must all be the same (one connection authenticates one way with
/// every server it reaches); `None` when no server carries credentials.
pub fn nats_list_auth(servers: &[NatsServer]) -> Result<Option<NatsUrlAuth>, String> {
    let shown = servers
        .iter()
        .map(NatsServer::to_display_url)
        .collect::<Vec<_>>()
        .join(",");
    list_auth(servers, &shown)
}

/// [`nats_list_auth`], naming the list as `shown` in its error.
fn list_auth(servers: &[NatsServer], shown: &str) -> Result<Option<NatsUrlAuth>, String> {
    let mut found: Option<NatsUrlAuth> = None;
    for auth in servers.iter().filter_map(NatsServer::auth) {
        match &found {
            Some(first) if *first != auth => {
                return Err(format!(
                    "carries different credentials for different servers ({shown}); a service authenticates the same way with every server of the list, so give them all the same credentials"
                ));
            }
            Some(_) => {}
            None => found = Some(auth),
        }
    }
    Ok(found)
}

/// `user:password` shown as `user:***`, a token as `***`.
fn redact_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    }
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one NATS URL or a comma-separated list of them (cluster seeds):
/// each `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`, the port
/// optional (4222), optionally with `user:password@` or `token@` before the
/// host (a `,` in a password or token is written `%2C`: the list is split
/// at every `,`). An entry with credentials and no scheme may not follow
/// one without credentials (the two could be one URL whose password holds
/// a `,`). Errors show the list as [`nats_display_url`] does.
pub fn nats_servers(text: &str) -> Result<Vec<NatsServer>, String> {
    let shown = shown_pieces(text);
    let list = join_shown(&shown);
    let mut out = Vec::new();
    for (i, (part, piece)) in text.split(',').zip(&shown).enumerate() {
        // A piece that may hold part of a password is named by its place.
        let place = if piece.masked {
            format!("entry {} of {list:?}", i + 1)
        } else {
            format!("{:?}", piece.text.trim())
        };
        let hint = if piece.masked {
            "; the list is split at every ',', so a ',' in a password or token must be written %2C"
        } else {
            ""
        };
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "has an empty entry in {list:?} (expected one URL or a comma-separated list like nats://host1:4222,nats://host2:4222){hint}"
            ));
        }
        // Whatever stands in the text may be part of a credential when
        // any entry carries one: then no piece of it is quoted raw.
        let server =
            nats_server(part, &place, text.contains('@')).map_err(|e| format!("{e}{hint}"))?;
        out.push(server);
    }
    // Every piece parses, yet some may be the pieces of one URL whose
    // password or token holds a ',': refused rather than guessed.
    if let Some(i) = shown.iter().position(|p| p.masked && p.text.contains('@')) {
        return Err(format!(
            "has credentials without a scheme in entry {n} of {list:?}, right after an entry without credentials: the two may be one URL whose password or token holds a ','; the list is split at every ',', so a ',' in a password or token must be written %2C (if they are two servers, write entry {n} with its scheme: nats://USER:PASSWORD@HOST)",
            n = i + 1
        ));
    }
    Ok(out)
}

/// [`nats_servers`] and the one set of credentials the list carries (see
/// [`nats_list_auth`]); errors show the list as [`nats_display_url`]
/// does.
pub fn nats_servers_and_auth(text: &str) -> Result<(Vec<NatsServer>, Option<NatsUrlAuth>), String> {
    let servers = nats_servers(text)?;
    let auth = list_auth(&servers, &nats_display_url(text))?;
    Ok((servers, auth))
}

/// [`nats_servers`], written back out as one comma-separated list of full
/// URLs (a bare `HOST:PORT` becomes `nats://HOST:PORT`); the servers that
/// carry credentials must all carry the same (see [`nats_list_auth`]).
pub fn nats_url(text: &str) -> Result<String, String> {
    let (servers, _) = nats_servers_and_auth(text)?;
    Ok(servers
        .iter()
        .map(NatsServer::to_url)
        .collect::<Vec<_>>()
        .join(","))
}

/// A NATS URL, or a comma-separated list of them, made fit to show (in a
/// log line, an error, a tool's output): a password becomes `***`
/// (`nats://user:***@host:4222`), a token too (`nats://***@host:4222`).
/// The text need not be a valid list: whatever stands before an `@` in an
/// entry is redacted, and so is every piece that may be part of a password
/// or token holding a `,` (a piece without `@` followed by one with an `@`
/// and no scheme: `nats://ann:pa,ss@host` shows as
/// `nats://ann:***,***@host`). Everything else stays as written.
pub fn nats_display_url(text: &str) -> String {
    join_shown(&shown_pieces(text))
}

/// One piece (between two `,`) of a NATS URL list as shown.
struct ShownPiece {
    /// The piece fit to show.
    text: String,
    /// Whether the piece may hold part of a password or token that holds a
    /// `,` (so it is not shown as written).
    masked: bool,
}

fn join_shown(pieces: &[ShownPiece]) -> String {
    pieces
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a piece of a NATS URL list starts with a scheme (`nats://`).
fn has_scheme(piece: &str) -> bool {
    piece.find("://").is_some_and(|i| {
        let scheme = piece[..i].trim_start();
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// The pieces of a NATS URL list, each made fit to show. A `,` in a
/// password or token splits its entry: the pieces before the one holding
/// the `@` carry the user name and the front of the password, that piece
/// the rest of it. So a piece without `@` is masked when a later piece
/// holds an `@`, no piece up to that one has a scheme (a scheme starts a
/// new entry) and none between holds an `@`; the first of such a run
/// keeps its scheme and user name, the others show as `***`, and the
/// piece with the `@` shows `***` for all that stands before its `@`.
fn shown_pieces(text: &str) -> Vec<ShownPiece> {
    let pieces: Vec<&str> = text.split(',').collect();
    // Whether piece `i` (without `@`) may be the front of a later entry's
    // credentials.
    let front = |i: usize| {
        !pieces[i].contains('@')
            && pieces[i + 1..]
                .iter()
                .take_while(|p| !has_scheme(p))
                .find(|p| p.contains('@'))
                .is_some()
    };
    let fronts: Vec<bool> = (0..pieces.len()).map(front).collect();
    let lead = |p: &str| p[..p.len() - p.trim_start().len()].to_owned();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let after_front = i > 0 && fronts[i - 1] && !has_scheme(piece);
            if fronts[i] && after_front {
                ShownPiece {
                    text: format!("{}***", lead(piece)),
                    masked: true,
                }
            } else if fronts[i] {
                // The start of an entry: its scheme and user name show.
                let trimmed = piece.trim_start();
                let (scheme, rest) = match trimmed.find("://") {
                    Some(at) => trimmed.split_at(at + 3),
                    None => ("", trimmed),
                };
                ShownPiece {
                    text: format!("{}{scheme}{}", lead(piece), redact_userinfo(rest)),
                    masked: true,
                }
            } else if after_front {
                // Holds the '@' that ends the credentials the pieces before
                // began: nothing before it is shown.
                let at = piece.rfind('@').unwrap_or(0);
                ShownPiece {
                    text: format!("{}***{}", lead(piece), &piece[at..]),
                    masked: true,
                }
            } else {
                ShownPiece {
                    text: redact_entry(piece),
                    masked: false,
                }
            }
        })
        .collect()
}

/// One entry of [`nats_display_url`].
fn redact_entry(entry: &str) -> String {
    let (scheme, rest) = match entry.find("://") {
        Some(i) => entry.split_at(i + 3),
        None => ("", entry),
    };
    // The authority ends at the path; a password may hold a '/' or '?',
    // so the last '@' before the end counts when there is one.
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let lead = userinfo.len() - userinfo.trim_start().len();
            format!(
                "{scheme}{}{}{}",
                &userinfo[..lead],
                redact_userinfo(userinfo.trim_start()),
                &rest[at..]
            )
        }
        None => entry.to_owned(),
    }
}

/// One entry of a NATS URL list; `place` names it in errors (already
/// quoted, with credentials redacted); with `secret`, the list carries
/// credentials somewhere and no part of the entry is quoted raw.
fn nats_server(raw: &str, place: &str, secret: bool) -> Result<NatsServer, String> {
    const SHAPE: &str = "nats://HOST:PORT, tls://HOST:PORT or HOST:PORT";
    let lower = raw.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("tls://") {
        (true, &raw["tls://".len()..])
    } else if lower.starts_with("nats://") {
        (false, &raw["nats://".len()..])
    } else if raw.contains("://") {
        return Err(format!("must be {SHAPE}, found {place}"));
    } else {
        (false, raw)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!("must be {SHAPE} without a path, found {place}"));
    }
    let (credentials, authority) = match rest.rsplit_once('@') {
        Some(("", _)) => return Err(format!("has nothing before '@' in {place}")),
        Some((c, a)) => (Some(Secret::new(c)), a),
        None => (None, rest),
    };
    let bracketed = authority.starts_with('[');
    let (host, port) = split_host_port(authority, place)?;
    let bad_char = |c: char| c.is_whitespace() || c == '[' || c == ']' || (c == ':' && !bracketed);
    if host.is_empty() || host.contains(bad_char) {
        return Err(format!("has no usable host in {place} (expected {SHAPE})"));
    }
    let port = match port {
        None => DEFAULT_NATS_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ if secret => return Err(format!("has a bad port in {place} (1 to 65535)")),
            _ => return Err(format!("has a bad port {p:?} in {place} (1 to 65535)")),
        },
    };
    Ok(NatsServer {
        tls,
        credentials,
        host: host.to_owned(),
        port,
    })
}

/// Checks that a NATS client logs in one way at most: `url` names the
/// credentials its server URL carries, if any (e.g. `the user and password
/// in NATS_URL`); `nkey` and `creds` say whether `NATS_NKEY_FILE` and
/// `NATS_CREDS_FILE` are set. A client certificate (`NATS_CERT_FILE`,
/// `NATS_KEY_FILE`) is TLS and goes with any of them. The error is the
/// variable at fault and what is wrong with it, naming the other one.
fn check_one_nats_login(
    url: Option<&str>,
    nkey: bool,
    creds: bool,
) -> Result<(), (&'static str, String)> {
    let (var, other) = match (url, nkey, creds) {
        (Some(url), true, _) => (NATS_NKEY_FILE, url.to_owned()),
        (Some(url), false, true) => (NATS_CREDS_FILE, url.to_owned()),
        (None, true, true) => (NATS_CREDS_FILE, NATS_NKEY_FILE.to_owned()),
        _ => return Ok(()),
    };
    Err((
        var,
        format!(
            "cannot be used together with {other}: a NATS user logs in one way only, with a user and password or a token in the server URL, with an NKey seed (NATS_NKEY_FILE) or with a .creds file (NATS_CREDS_FILE, which holds its own seed); keep one and remove the other (a client certificate, NATS_CERT_FILE with NATS_KEY_FILE, may go with any of them)"
        ),
    ))
}

/// Checks that a client of the server list `url` logs in one way at most
/// (see [`check_one_nats_login`]): `source` names where the list came from
/// (`NATS_URL`, `--nats`, the application's `nats-url:`), `nkey` and
/// `creds` say whether `NATS_NKEY_FILE` and `NATS_CREDS_FILE` are set. The
/// error is the variable at fault and what is wrong with it.
pub fn check_nats_login(
    url: &str,
    source: &str,
    nkey: bool,
    creds: bool,
) -> Result<(), (&'static str, String)> {
    let url_auth = nats_servers_and_auth(url)
        .ok()
        .and_then(|(_, auth)| auth)
        .map(|auth| describe_url_auth(&auth, source));
    check_one_nats_login(url_auth.as_deref(), nkey, creds)
}

/// How [`check_one_nats_login`] names the credentials a server URL
/// carries: `the user and password in SOURCE` or `the token in SOURCE`.
fn describe_url_auth(auth: &NatsUrlAuth, source: &str) -> String {
    match auth {
        NatsUrlAuth::UserPassword { .. } => format!("the user and password in {source}"),
        NatsUrlAuth::Token(_) => format!("the token in {source}"),
    }
}

/// A client certificate and its private key, both PEM files
/// (`NATS_CERT_FILE`, `NATS_KEY_FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
}

/// Whether `seed` has the shape of a user NKey seed: `SU` and 56 more
/// characters of the base32 alphabet (A–Z, 2–7).
pub fn valid_user_seed(seed: &str) -> bool {
    seed.len() == 58
        && seed.starts_with("SU")
        && seed
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// Whether `name` can be an application's name on NATS: letters, digits,
/// `_` and `-` (it goes into subjects and the stream name `EXO_<app>`).
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An application's `name:` made usable on NATS: every character other
/// than letters, digits, `_` and `-` becomes `-`; `None` for a name that
/// is empty or blank.
pub fn sanitize_app_name(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
    )
}

/// The text of a routes error, for a variable other than `SERVICE_DATA`.
pub fn routes_error_text(e: &RoutesError) -> String {
    match e {
        RoutesError::Json(detail) => format!(
            "is not valid routes JSON ({detail}); expected {{\"ROLE\": {{\"receives\": [...], \"sends\": [...], \"translations\": [{{\"public\": ..., \"internal\": ...}}], \"atLeastOnce\": [...]}}}}"
        ),
        other => other.to_string(),
    }
}

/// Checks what [`Routes::validate`] leaves out for the `nats` transport:
/// every `atLeastOnce` name of a role is one it receives.
pub fn check_at_least_once(routes: &Routes) -> Result<(), String> {
    for (role, r) in &routes.roles {
        if let Some(name) = r.at_least_once.iter().find(|n| !r.receives.contains(n)) {
            return Err(format!(
                "role '{role}' lists {name:?} under atLeastOnce but not under receives (only received names have a delivery mode)"
            ));
        }
    }
    Ok(())
}

/// Whether a token can travel in an HTTP header (printable ASCII, no
/// spaces, not empty).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A snapshot of the variables that matter, so loading can be tested
/// without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// What errors call a variable whose value came from elsewhere than
    /// the environment (a command-line flag such as `--nats`).
    sources: HashMap<String, String>,
}

impl Env {
    /// The variables of this process (empty values count as unset).
    pub fn process() -> Env {
        let mut vars = HashMap::new();
        for key in [
            ROLE,
            EXOCOM_HOST,
            EXOCOM_PORT,
            CONCURRENCY,
            OUTGOING_BUFFER,
            DRAIN_TIMEOUT_MS,
            METRICS_PORT,
            METRICS_BIND,
            EXOCOM_URL,
            EXOCOM_TOKEN,
            EXOCOM_CA_FILE,
        ]
        .into_iter()
        .chain(NATS_VARS)
        {
            if let Ok(v) = std::env::var(key) {
                vars.insert(key.to_owned(), v);
            }
        }
        Env {
            vars,
            sources: HashMap::new(),
        }
    }

    /// No variables set.
    pub fn empty() -> Env {
        Env::default()
    }

    /// Given variables (for tests and tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            sources: HashMap::new(),
        }
    }

    /// The same with one variable set (a value given in code that wins
    /// over the process's environment).
    pub fn with(&self, key: &str, value: impl Into<String>) -> Env {
        let mut env = self.clone();
        env.vars.insert(key.to_owned(), value.into());
        env.sources.remove(key);
        env
    }

    /// The same with one variable set from a command-line flag: errors
    /// about its value name `source` (e.g. `--nats`) instead of `$KEY`.
    pub fn with_source(&self, key: &str, value: impl Into<String>, source: &str) -> Env {
        let mut env = self.with(key, value);
        env.sources.insert(key.to_owned(), source.to_owned());
        env
    }

    /// The same without one variable.
    pub fn without(&self, key: &str) -> Env {
        let mut env = self.clone();
        env.vars.remove(key);
        env.sources.remove(key);
        env
    }

    /// What a message calls a variable: the flag its value came from (see
    /// [`Env::with_source`]), else its name (`NATS_URL`).
    pub fn label(&self, key: &str) -> String {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_owned())
    }

    /// An error about a variable's value, rendered `$KEY: message`, or
    /// `--flag: message` when the value came from a flag (see
    /// [`Env::with_source`]).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        match self.sources.get(key) {
            Some(source) => ConfigError::new(source, message),
            None => var_error(key, message),
        }
    }

    /// A variable's value; empty or blank counts as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `EXOCOM_PORT` as a port number.
    pub fn port(&self) -> Result<Option<u16>, ConfigError> {
        match self.get(EXOCOM_PORT) {
            None => Ok(None),
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(Some(p)),
                _ => Err(self.error(
                    EXOCOM_PORT,
                    format!("must be a port number from 1 to 65535, found {v:?}"),
                )),
            },
        }
    }

    /// A positive whole number from a variable.
    pub fn count(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.error(key, format!("must be a whole number above 0, found {v:?}"))),
            },
        }
    }

    /// `EXOSERVICE_METRICS_PORT` as a port number (0 allowed: any free
    /// port).
    pub fn metrics_port(&self) -> Result<Option<u16>, ConfigError> {
        match self.get(METRICS_PORT) {
            None => Ok(None),
            Some(v) => v.parse::<u16>().map(Some).map_err(|_| {
                self.error(
                    METRICS_PORT,
                    format!("must be a port number from 0 to 65535, found {v:?}"),
                )
            }),
        }
    }

    /// `EXOSERVICE_METRICS_BIND` as an IP address.
    pub fn metrics_bind(&self) -> Result<Option<std::net::IpAddr>, ConfigError> {
        match self.get(METRICS_BIND) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                self.error(
                    METRICS_BIND,
                    format!("must be an IP address like 127.0.0.1 or 0.0.0.0, found {v:?}"),
                )
            }),
        }
    }

    /// `EXOCOM_URL` taken apart.
    pub fn exocom_url(&self) -> Result<Option<BusUrl>, ConfigError> {
        match self.get(EXOCOM_URL) {
            None => Ok(None),
            Some(v) => bus_url(v).map(Some).map_err(|e| self.error(EXOCOM_URL, e)),
        }
    }

    /// `EXOCOM_TOKEN`, checked to be usable in an HTTP header.
    pub fn exocom_token(&self) -> Result<Option<Secret>, ConfigError> {
        match self.get(EXOCOM_TOKEN) {
            None => Ok(None),
            Some(v) if valid_token(v) => Ok(Some(Secret::new(v))),
            Some(_) => Err(self.error(
                EXOCOM_TOKEN,
                "must be printable ASCII without spaces (it travels in an HTTP header)",
            )),
        }
    }

    /// `EXOCOM_CA_FILE`, checked to name a file.
    pub fn exocom_ca_file(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        self.existing_file(EXOCOM_CA_FILE)
    }

    /// `NATS_CA_FILE`, which must name a file.
    pub fn nats_ca_file(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        self.existing_file(NATS_CA_FILE)
    }

    /// `NATS_CERT_FILE` and `NATS_KEY_FILE`, the client certificate and
    /// its key: both or neither, each naming a file.
    pub fn nats_client_cert(&self) -> Result<Option<ClientCert>, ConfigError> {
        let cert = self.existing_file(NATS_CERT_FILE)?;
        let key = self.existing_file(NATS_KEY_FILE)?;
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(ClientCert {
                cert_file,
                key_file,
            })),
            (Some(_), None) => Err(self.error(
                NATS_KEY_FILE,
                "is not set, but NATS_CERT_FILE is: a client certificate needs its private key (PEM); set both or neither",
            )),
            (None, Some(_)) => Err(self.error(
                NATS_CERT_FILE,
                "is not set, but NATS_KEY_FILE is: a private key needs its client certificate (PEM); set both or neither",
            )),
        }
    }

    /// `NATS_NKEY_FILE`: the user NKey seed the file holds (the first line
    /// that is not blank and not a `#` or `//` comment, which must look
    /// like `SU` and 56 more letters and digits 2 to 7).
    pub fn nats_nkey(&self) -> Result<Option<Secret>, ConfigError> {
        let Some((path, text)) = self.file_text(NATS_NKEY_FILE)? else {
            return Ok(None);
        };
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
            .unwrap_or("");
        if valid_user_seed(seed) {
            Ok(Some(Secret::new(seed)))
        } else {
            let what = if seed.starts_with('U') {
                "a public key (U…), not a seed: give the seed (SU…) the key was made from"
            } else if seed.starts_with('S') && !seed.starts_with("SU") {
                "the seed of another kind of NKey (not a user's): expected a user seed (SU…)"
            } else {
                "no user NKey seed: expected a line like SUAB… (58 characters, as `nk -gen user` or `nsc` write it)"
            };
            Err(self.error(NATS_NKEY_FILE, format!("{} holds {what}", path.display())))
        }
    }

    /// `NATS_CREDS_FILE`: the text of the `.creds` file it names, checked
    /// to hold a user JWT and a user NKey seed, each between the
    /// `-----BEGIN ...-----` and `------END ...------` lines.
    pub fn nats_creds(&self) -> Result<Option<Secret>, ConfigError> {
        let Some((path, text)) = self.file_text(NATS_CREDS_FILE)? else {
            return Ok(None);
        };
        let block = |begin: &str| {
            let mut lines = text.lines().map(str::trim);
            lines.find(|l| l.starts_with("---") && l.contains(begin))?;
            lines.find(|l| !l.is_empty()).map(ToOwned::to_owned)
        };
        let jwt = block("BEGIN NATS USER JWT").filter(|j| j.split('.').count() == 3);
        let seed = block("BEGIN USER NKEY SEED").filter(|s| valid_user_seed(s));
        match (jwt, seed) {
            (Some(_), Some(_)) => Ok(Some(Secret::new(text))),
            (None, _) => Err(self.error(
                NATS_CREDS_FILE,
                format!(
                    "{} holds no user JWT: expected a .creds file as nsc writes it (-----BEGIN NATS USER JWT----- with the JWT on the next line)",
                    path.display()
                ),
            )),
            (Some(_), None) => Err(self.error(
                NATS_CREDS_FILE,
                format!(
                    "{} holds no user NKey seed: expected -----BEGIN USER NKEY SEED----- with the seed (SU…) on the next line",
                    path.display()
                ),
            )),
        }
    }

    /// A variable that names a file that must exist.
    fn existing_file(&self, key: &str) -> Result<Option<std::path::PathBuf>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let path = std::path::PathBuf::from(v);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(self.error(key, format!("no such file: {v}")))
                }
            }
        }
    }

    /// The path and the text of the file a variable names (the file must
    /// exist and be readable as UTF-8).
    fn file_text(&self, key: &str) -> Result<Option<(std::path::PathBuf, String)>, ConfigError> {
        let Some(path) = self.existing_file(key)? else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some((path, text))),
            Err(e) => Err(self.error(key, format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// `EXOSERVICE_DRAIN_TIMEOUT_MS` as a duration.
    pub fn drain_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        Ok(self.count(DRAIN_TIMEOUT_MS)?.map(Duration::from_millis))
    }

    /// A whole number from `min` to `max` from a variable; `what` names
    /// the unit in the error (`"milliseconds"`, or empty).
    pub fn ranged(
        &self,
        key: &str,
        min: u64,
        max: u64,
        what: &str,
    ) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => {
                    let unit = if what.is_empty() {
                        String::new()
                    } else {
                        format!(" of {what}")
                    };
                    let range = if max == u64::MAX {
                        format!("{min} or more")
                    } else {
                        format!("from {min} to {max}")
                    };
                    Err(self.error(
                        key,
                        format!("must be a whole number{unit} {range}, found {v:?}"),
                    ))
                }
            },
        }
    }

    /// `EXOSERVICE_TRANSPORT`: `exocom` or `nats`.
    pub fn transport(&self) -> Result<Option<Transport>, ConfigError> {
        match self.get(TRANSPORT) {
            None => Ok(None),
            Some(v) => Transport::parse(v).map(Some).ok_or_else(|| {
                self.error(TRANSPORT, format!("must be exocom or nats, found {v:?}"))
            }),
        }
    }

    /// `NATS_URL`, checked and written out in full (see [`nats_url`]).
    pub fn nats_url(&self) -> Result<Option<String>, ConfigError> {
        match self.get(NATS_URL) {
            None => Ok(None),
            Some(v) => nats_url(v).map(Some).map_err(|e| self.error(NATS_URL, e)),
        }
    }

    /// `EXOSERVICE_APP`, checked to be usable in NATS subjects.
    pub fn app(&self) -> Result<Option<String>, ConfigError> {
        match self.get(APP) {
            None => Ok(None),
            Some(v) if valid_app_name(v) => Ok(Some(v.to_owned())),
            Some(v) => Err(self.error(
                APP,
                format!(
                    "must be letters, digits, '_' and '-' only (it goes into NATS subjects and the stream name EXO_<app>), found {v:?}"
                ),
            )),
        }
    }

    /// `EXOSERVICE_ROUTES` read as routes JSON and checked.
    pub fn routes(&self) -> Result<Option<Routes>, ConfigError> {
        match self.get(ROUTES) {
            None => Ok(None),
            Some(v) => {
                let routes =
                    Routes::from_json(v).map_err(|e| self.error(ROUTES, routes_error_text(&e)))?;
                check_at_least_once(&routes).map_err(|e| self.error(ROUTES, e))?;
                Ok(Some(routes))
            }
        }
    }

    /// `EXOSERVICE_APPLICATION`, checked to name a file or a directory.
    pub fn application(&self) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(APPLICATION) {
            None => Ok(None),
            Some(v) => {
                let path = PathBuf::from(v);
                if path.exists() {
                    Ok(Some(path))
                } else {
                    Err(self.error(
                        APPLICATION,
                        format!(
                            "no such file or directory: {v} (expected an application.yml or the directory holding it)"
                        ),
                    ))
                }
            }
        }
    }

    /// `EXOSERVICE_MAX_ATTEMPTS` (1 to [`MAX_MAX_ATTEMPTS`]).
    pub fn max_attempts(&self) -> Result<Option<u32>, ConfigError> {
        Ok(self
            .ranged(MAX_ATTEMPTS, 1, MAX_MAX_ATTEMPTS, "")?
            .map(|n| n as u32))
    }

    /// `EXOSERVICE_ACK_WAIT_MS` as a duration (at least
    /// [`MIN_ACK_WAIT_MS`]).
    pub fn ack_wait(&self) -> Result<Option<Duration>, ConfigError> {
        Ok(self
            .ranged(ACK_WAIT_MS, MIN_ACK_WAIT_MS, u64::MAX, "milliseconds")?
            .map(Duration::from_millis))
    }

    /// `EXOSERVICE_REDELIVERY_DELAY_MS` as a duration (above 0).
    pub fn redelivery_delay(&self) -> Result<Option<Duration>, ConfigError> {
        Ok(self
            .ranged(REDELIVERY_DELAY_MS, 1, u64::MAX, "milliseconds")?
            .map(Duration::from_millis))
    }

    /// `EXOSERVICE_NATS_REPLICAS` (1 to [`MAX_NATS_REPLICAS`]).
    pub fn nats_replicas(&self) -> Result<Option<usize>, ConfigError> {
        Ok(self
            .ranged(NATS_REPLICAS, 1, MAX_NATS_REPLICAS, "")?
            .map(|n| n as usize))
    }
}

/// An error about an environment variable (rendered `$NAME: message`).
pub fn var_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("${key}"), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bus_urls() {
        let u = bus_url("wss://bus.example:8443").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "bus.example", 8443, "/services")
        );
        assert_eq!(u.to_url(), "wss://bus.example:8443/services");
        let u = bus_url("ws://localhost/").unwrap();
        assert_eq!((u.tls, u.port), (false, 80));
        assert_eq!(bus_url("wss://h").unwrap().port, 443);
        let u = bus_url("wss://[::1]:9000/exocom/services").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/exocom/services")
        );
        assert_eq!(u.to_url(), "wss://[::1]:9000/exocom/services");
        assert!(bus_url("http://h").is_err());
        assert!(bus_url("ws://:80").is_err());
        assert!(bus_url("ws://h:0").is_err());
        assert!(bus_url("ws://h:x").is_err());
        assert!(bus_url("ws://u:p@h").is_err());
        assert!(bus_url("ws://[::1").is_err());
    }

    #[test]
    fn nats_urls_are_shown_without_passwords_or_tokens() {
        assert_eq!(
            nats_display_url("nats://ann:s3cret@host:4222"),
            "nats://ann:***@host:4222"
        );
        assert_eq!(
            nats_display_url("nats://t0ken@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            nats_display_url("tls://a:p@[::1]:4222, b:q@h2, nats://h3:4222"),
            "tls://a:***@[::1]:4222, b:***@h2, nats://h3:4222"
        );
        assert_eq!(nats_display_url("nats://h:4222"), "nats://h:4222");
        // Not a valid URL at all: still nothing after the user name.
        assert_eq!(nats_display_url("http://u:p@w/x@y:99"), "http://u:***@y:99");
        assert_eq!(nats_display_url("u:p@"), "u:***@");
        let servers = nats_servers("nats://ann:s3cret@h:1,nats://tok@h:2").unwrap();
        assert_eq!(servers[0].to_display_url(), "nats://ann:***@h:1");
        assert_eq!(servers[1].to_display_url(), "nats://***@h:2");
        assert_eq!(servers[0].to_url(), "nats://ann:s3cret@h:1");
    }

    #[test]
    fn nats_url_errors_do_not_quote_passwords() {
        for bad in [
            "nats://ann:s3cret@h:0",
            "nats://ann:s3cret@h:x",
            "http://ann:s3cret@h",
            "nats://ann:s3cret@",
            "nats://ann:s3cret@h:1,nats://bob:s3cret@h:2",
            "nats://ann:s3cret@h:1,,h:2",
        ] {
            let e = Env::from_pairs([(NATS_URL, bad)]).nats_url().unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("$NATS_URL: "), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn a_comma_in_a_password_shows_no_part_of_it() {
        for (text, shown) in [
            (
                "nats://ann:pa,ss@127.0.0.1:14567",
                "nats://ann:***,***@127.0.0.1:14567",
            ),
            ("ann:s3,cr3t@h", "ann:***,***@h"),
            ("nats://ann:s3,x,cr3t:q@h:1", "nats://ann:***,***,***@h:1"),
            ("s3,cr3t@h", "***,***@h"),
            ("  s3, cr3t@h", "  ***, ***@h"),
            // The front of the password could be read as HOST:PORT.
            ("nats://ann:12,cr3t@h", "nats://ann:***,***@h"),
            (
                "nats://a:b@h1, nats://ann:s3,cr3t@h2,nats://h3",
                "nats://a:***@h1, nats://ann:***,***@h2,nats://h3",
            ),
        ] {
            assert_eq!(nats_display_url(text), shown, "{text}");
        }
        // A scheme starts a new entry: those pieces show as written.
        assert_eq!(
            nats_display_url("nats://h1:4222,nats://ann:pw@h2"),
            "nats://h1:4222,nats://ann:***@h2"
        );
        let e = Env::from_pairs([(NATS_URL, "nats://ann:pa,ss@127.0.0.1:14567")])
            .nats_url()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "$NATS_URL: has a bad port in entry 1 of \"nats://ann:***,***@127.0.0.1:14567\" (1 to 65535); the list is split at every ',', so a ',' in a password or token must be written %2C"
        );
        for bad in [
            "nats://ann:s3,cr3t@h",
            "ann:s3,cr3t@h",
            "s3,cr3t@h",
            "nats://ann:s3,,cr3t@h",
            "nats://ann:s3,cr3t/x@h",
            "nats://ann:s3,cr3t@h:x",
            "nats://ann:s3,cr3t@h,nats://bob:x@h2",
            // Each piece parses here: refused, as it may be one URL.
            "nats://ann:12,cr3t@h",
            "s3,cr3t@h",
        ] {
            let e = Env::from_pairs([(NATS_URL, bad)])
                .nats_url()
                .unwrap_err()
                .to_string();
            assert!(!e.contains("s3") && !e.contains("cr3t"), "{e}");
            assert!(e.contains("written %2C"), "{e}");
        }
        // Two servers, the second with credentials: its scheme tells.
        assert!(nats_url("h1:4222,ann:pw@h2").is_err());
        assert_eq!(
            nats_url("h1:4222,nats://ann:pw@h2").unwrap(),
            "nats://h1:4222,nats://ann:pw@h2:4222"
        );
        // Without credentials, a bad port is quoted as written.
        let e = nats_url("nats://h1:4222,h2:x").unwrap_err();
        assert_eq!(e, "has a bad port \"x\" in \"h2:x\" (1 to 65535)");
        // With them, it is not.
        let e = nats_url("nats://ann:pw@h1:4222,h2:x").unwrap_err();
        assert_eq!(e, "has a bad port in \"h2:x\" (1 to 65535)");
        // Written as %2C, the ',' is part of the password.
        let servers = nats_servers("nats://ann:pa%2Css@127.0.0.1:14567").unwrap();
        assert_eq!(
            servers[0].auth(),
            Some(NatsUrlAuth::UserPassword {
                user: "ann".into(),
                password: Secret::new("pa,ss")
            })
        );
    }

    #[test]
    fn values_from_flags_are_named_by_the_flag() {
        let env = Env::empty().with_source(NATS_URL, "nats://h:0", "--nats");
        assert_eq!(env.label(NATS_URL), "--nats");
        assert_eq!(env.label(NATS_NKEY_FILE), NATS_NKEY_FILE);
        let e = env.nats_url().unwrap_err().to_string();
        assert!(e.starts_with("--nats: has a bad port"), "{e}");
        // Set again from the environment's side, it is the variable again.
        let e = env.with(NATS_URL, "nats://h:0").nats_url().unwrap_err();
        assert!(e.to_string().starts_with("$NATS_URL: "), "{e}");
    }

    #[test]
    fn a_nats_user_logs_in_one_way() {
        let url = "the token in NATS_URL";
        assert_eq!(check_one_nats_login(None, false, false), Ok(()));
        assert_eq!(check_one_nats_login(Some(url), false, false), Ok(()));
        assert_eq!(check_one_nats_login(None, true, false), Ok(()));
        assert_eq!(check_one_nats_login(None, false, true), Ok(()));
        for (args, var, other) in [
            ((Some(url), true, false), NATS_NKEY_FILE, url),
            ((Some(url), false, true), NATS_CREDS_FILE, url),
            ((None, true, true), NATS_CREDS_FILE, NATS_NKEY_FILE),
            ((Some(url), true, true), NATS_NKEY_FILE, url),
        ] {
            let (got, message) = check_one_nats_login(args.0, args.1, args.2).unwrap_err();
            assert_eq!(got, var);
            assert!(
                message.starts_with(&format!("cannot be used together with {other}: ")),
                "{message}"
            );
        }
    }

    #[test]
    fn nats_url_credentials_are_taken_apart() {
        let servers = nats_servers("nats://ann:p%40ss%3Aw@h,tok%2Fen@h2").unwrap();
        assert_eq!(
            servers[0].auth(),
            Some(NatsUrlAuth::UserPassword {
                user: "ann".into(),
                password: Secret::new("p@ss:w")
            })
        );
        assert_eq!(
            servers[1].auth(),
            Some(NatsUrlAuth::Token(Secret::new("tok/en")))
        );
        assert_eq!(nats_servers("h").unwrap()[0].auth(), None);
        // One set of credentials for the whole list, given once or on each.
        let list = nats_servers("nats://a:b@h1,nats://h2,nats://a:b@h3").unwrap();
        assert!(matches!(
            nats_list_auth(&list),
            Ok(Some(NatsUrlAuth::UserPassword { .. }))
        ));
        let mixed = nats_servers("nats://a:b@h1,nats://a:c@h2").unwrap();
        let e = nats_list_auth(&mixed).unwrap_err();
        assert!(
            e.contains("different credentials") && !e.contains(":c@"),
            "{e}"
        );
        assert_eq!(nats_list_auth(&nats_servers("h1,h2").unwrap()), Ok(None));
    }

    #[test]
    fn reads_client_certificates_and_nkey_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let cert = file("cert.pem", "c");
        let key = file("key.pem", "k");
        let both = Env::from_pairs([(NATS_CERT_FILE, &cert), (NATS_KEY_FILE, &key)]);
        let pair = both.nats_client_cert().unwrap().unwrap();
        assert_eq!(pair.cert_file.display().to_string(), cert);
        assert_eq!(pair.key_file.display().to_string(), key);
        assert_eq!(Env::empty().nats_client_cert(), Ok(None));
        let e = both.without(NATS_KEY_FILE).nats_client_cert().unwrap_err();
        assert!(
            e.to_string().starts_with("$NATS_KEY_FILE: is not set"),
            "{e}"
        );
        let e = both.without(NATS_CERT_FILE).nats_client_cert().unwrap_err();
        assert!(
            e.to_string().starts_with("$NATS_CERT_FILE: is not set"),
            "{e}"
        );
        let e = both
            .with(NATS_KEY_FILE, "/no/such/key.pem")
            .nats_client_cert()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "$NATS_KEY_FILE: no such file: /no/such/key.pem"
        );

        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
        let nkey = file("user.nk", &format!("# a user\n{seed}\n"));
        let got = Env::from_pairs([(NATS_NKEY_FILE, &nkey)])
            .nats_nkey()
            .unwrap();
        assert_eq!(got.as_ref().map(Secret::expose), Some(seed));
        assert!(!format!("{got:?}").contains(seed));
        let public = file(
            "user.pub",
            "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4",
        );
        let e = Env::from_pairs([(NATS_NKEY_FILE, &public)])
            .nats_nkey()
            .unwrap_err();
        assert!(e.to_string().contains("a public key"), "{e}");
        let junk = file("junk", "hello");
        let e = Env::from_pairs([(NATS_NKEY_FILE, &junk)])
            .nats_nkey()
            .unwrap_err();
        assert!(e.to_string().starts_with("$NATS_NKEY_FILE: "), "{e}");
        assert!(!e.to_string().contains("hello"), "{e}");
    }

    #[test]
    fn reads_token_and_hides_it() {
        let env = Env::from_pairs([(EXOCOM_TOKEN, "s3cret")]);
        let t = env.exocom_token().unwrap().unwrap();
        assert_eq!(t.expose(), "s3cret");
        assert!(!format!("{t:?} {t}").contains("s3cret"));
        let bad = Env::from_pairs([(EXOCOM_TOKEN, "a b")]);
        assert!(
            bad.exocom_token()
                .unwrap_err()
                .to_string()
                .starts_with("$EXOCOM_TOKEN: ")
        );
        let missing = Env::from_pairs([(EXOCOM_CA_FILE, "/no/such/ca.pem")]);
        assert!(missing.exocom_ca_file().is_err());
        let url = Env::from_pairs([(EXOCOM_URL, "tcp://x")]);
        assert!(
            url.exocom_url()
                .unwrap_err()
                .to_string()
                .starts_with("$EXOCOM_URL: ")
        );
    }
}

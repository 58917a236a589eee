//! The environment variables that override a service's config file.

use std::collections::HashMap;
use std::time::Duration;

use super::ConfigError;

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
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("has an unclosed '[' in {authority:?}"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("has a bad host {authority:?}")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
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
        ] {
            if let Ok(v) = std::env::var(key) {
                vars.insert(key.to_owned(), v);
            }
        }
        Env { vars }
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
        }
    }

    /// The same with one variable set (a value given in code that wins
    /// over the process's environment).
    pub fn with(&self, key: &str, value: impl Into<String>) -> Env {
        let mut vars = self.vars.clone();
        vars.insert(key.to_owned(), value.into());
        Env { vars }
    }

    /// The same without one variable.
    pub fn without(&self, key: &str) -> Env {
        let mut vars = self.vars.clone();
        vars.remove(key);
        Env { vars }
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
                _ => Err(var_error(
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
                _ => Err(var_error(
                    key,
                    format!("must be a whole number above 0, found {v:?}"),
                )),
            },
        }
    }

    /// `EXOSERVICE_METRICS_PORT` as a port number (0 allowed: any free
    /// port).
    pub fn metrics_port(&self) -> Result<Option<u16>, ConfigError> {
        match self.get(METRICS_PORT) {
            None => Ok(None),
            Some(v) => v.parse::<u16>().map(Some).map_err(|_| {
                var_error(
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
                var_error(
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
            Some(v) => bus_url(v).map(Some).map_err(|e| var_error(EXOCOM_URL, e)),
        }
    }

    /// `EXOCOM_TOKEN`, checked to be usable in an HTTP header.
    pub fn exocom_token(&self) -> Result<Option<Secret>, ConfigError> {
        match self.get(EXOCOM_TOKEN) {
            None => Ok(None),
            Some(v) if valid_token(v) => Ok(Some(Secret::new(v))),
            Some(_) => Err(var_error(
                EXOCOM_TOKEN,
                "must be printable ASCII without spaces (it travels in an HTTP header)",
            )),
        }
    }

    /// `EXOCOM_CA_FILE`, checked to name a file.
    pub fn exocom_ca_file(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        match self.get(EXOCOM_CA_FILE) {
            None => Ok(None),
            Some(v) => {
                let path = std::path::PathBuf::from(v);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(var_error(EXOCOM_CA_FILE, format!("no such file: {v}")))
                }
            }
        }
    }

    /// `EXOSERVICE_DRAIN_TIMEOUT_MS` as a duration.
    pub fn drain_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        Ok(self.count(DRAIN_TIMEOUT_MS)?.map(Duration::from_millis))
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

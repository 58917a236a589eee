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

    /// `EXOSERVICE_DRAIN_TIMEOUT_MS` as a duration.
    pub fn drain_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        Ok(self.count(DRAIN_TIMEOUT_MS)?.map(Duration::from_millis))
    }
}

/// An error about an environment variable (rendered `$NAME: message`).
pub fn var_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("${key}"), message)
}

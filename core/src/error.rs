//! The errors a service meets at its call sites.

use std::time::Duration;

use crate::config::ConfigError;

/// Everything that can go wrong for a service, at the call site where it happens.
#[derive(Debug, thiserror::Error)]
pub enum ExoError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A message name the service's config does not declare under `sends`.
    #[error("cannot send '{name}': it is not declared under 'sends' of role '{role}' in {file}")]
    Undeclared {
        /// The message name.
        name: String,
        /// The sending role.
        role: String,
        /// The config file that declares the role's messages.
        file: String,
    },
    /// A handler for a name the config does not declare under `receives`.
    #[error(
        "cannot handle '{name}': it is not declared under 'receives' of role '{role}' in {file}"
    )]
    NotReceived {
        /// The message name.
        name: String,
        /// The receiving role.
        role: String,
        /// The config file that declares the role's messages.
        file: String,
    },
    /// Two handlers for one message name.
    #[error("a handler for '{0}' is already registered")]
    DuplicateHandler(String),
    /// A request got no answer in time.
    #[error("request '{name}' got no reply within {timeout:?}")]
    Timeout {
        /// The name of the request message.
        name: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// The outgoing buffer is full (the bus is down or too slow).
    #[error(
        "cannot send '{name}': the outgoing buffer is full ({capacity} messages wait for the bus)"
    )]
    BufferFull {
        /// The message that was refused.
        name: String,
        /// The buffer's capacity.
        capacity: usize,
    },
    /// The bus cannot be reached, or the connection failed.
    #[error("connection to ExoCom failed: {0}")]
    Connection(String),
    /// A payload that is not valid JSON, or a type that does not serialize.
    #[error("invalid payload for '{name}': {reason}")]
    Payload {
        /// The message name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An API used in a way it cannot work (named in the text).
    #[error("{0}")]
    Usage(String),
    /// The service is stopping or stopped and takes no more work.
    #[error("the service is stopped")]
    Stopped,
}

/// A `Result` with [`ExoError`].
pub type Result<T, E = ExoError> = std::result::Result<T, E>;

/// The text of a panic payload (what `catch_unwind` returns), for logs and
/// error messages at language boundaries.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

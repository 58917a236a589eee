//! # exoservice
//!
//! Micro-services made of a config file and plain handler functions, one per
//! incoming message, talking over ExoCom, the message bus of the Exosphere
//! system. This crate is the core that the Python, Node and C bindings wrap;
//! it is also the Rust API.
//!
//! ```no_run
//! use exoservice::{Ctx, Service};
//! use serde_json::Value;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), exoservice::ExoError> {
//!     Service::from_env()?
//!         .on("ping", |payload: Value, ctx: Ctx| async move { ctx.reply("pong", &payload) })
//!         .run()
//!         .await
//! }
//! ```
//!
//! Modules: [`config`] reads service and application files, [`message`] is
//! the envelope, [`relay`] the connection to the bus, [`dispatch`] the
//! handler side every binding uses, [`service`] the Rust API, [`bus`] an
//! ExoCom-compatible bus, [`testing`] a mock bus for tests.
#![warn(missing_docs)]

pub mod bus;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod logging;
pub mod message;
pub mod relay;
pub mod routes;
pub mod runtime;
pub mod service;
pub mod signals;
pub mod testing;
pub mod transport;

pub use config::ServiceConfig;
pub use dispatch::{ActivityWatch, Client, Ctx, Delivery, Engine, PendingRequest};
pub use error::{ExoError, Result};
pub use message::Message;
pub use service::{HandlerError, RunningService, Service, Stopper};

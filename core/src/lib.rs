//! # exoservice
//!
//! Micro-services made of a config file and plain handler functions, one per
//! incoming message, talking over ExoCom, the message bus of the Exosphere
//! system. This crate is the core that the Python, Node and C bindings wrap;
//! it is also the Rust API.
//!
//! ```no_run
//! use exoservice::{Service, Ctx};
//! use serde_json::Value;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), exoservice::ExoError> {
//!     Service::from_env()?
//!         .on("ping", |payload: Value, ctx: Ctx| async move { ctx.reply("pong", &payload) })?
//!         .run()
//!         .await
//! }
//! ```
#![warn(missing_docs)]

pub mod bus;
pub mod config;
pub mod error;
pub mod message;
pub mod routes;
pub mod testing;

//! The harness of the project's process-level tests: run the binaries and
//! the examples as a user would, read their output, talk HTTP to them.

#![warn(missing_docs)]

pub mod app;
pub mod browser;
pub mod http;
pub mod paths;
pub mod process;

pub use app::TodoApp;
pub use browser::{Browser, Page};
pub use http::{Response, request};
pub use paths::{bin, ensure_setup, repo_root};
pub use process::{Proc, dir_with, free_port, pid_in, port_in};

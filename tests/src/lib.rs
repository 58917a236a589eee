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
pub use nats::LocalNats;
pub use paths::{bin, ensure_setup, repo_root};
pub use process::{Proc, dir_with, free_port, pid_in, port_in};

/// A NATS server for the process-level tests, started from their plain
/// (not async) test functions.
pub mod nats {
    use exoservice::testing::nats::NatsServer;

    /// A real `nats-server` with JetStream on a free loopback port (see
    /// [`NatsServer`]), with the runtime that started it and reads its
    /// output. Dropping it kills the server and removes its store.
    pub struct LocalNats {
        // Dropped before the runtime: the server's process belongs to it.
        server: NatsServer,
        _runtime: tokio::runtime::Runtime,
    }

    impl LocalNats {
        /// Starts a server and waits until JetStream answers on it; panics
        /// with the reason (no `nats-server` program, or the server's last
        /// lines) when it does not.
        pub fn start() -> LocalNats {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime for nats-server");
            let server = runtime
                .block_on(NatsServer::start())
                .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
            LocalNats {
                server,
                _runtime: runtime,
            }
        }

        /// The server's URL, `nats://127.0.0.1:PORT` (for `NATS_URL`).
        pub fn url(&self) -> String {
            self.server.url()
        }

        /// The server's client port (what a service on it prints as its
        /// `online at port`).
        pub fn port(&self) -> u16 {
            self.server.port()
        }

        /// The last lines the server printed, one string.
        pub fn output(&self) -> String {
            self.server.output().join("\n")
        }
    }
}

//! The todo app of the tutorial (`examples/todo-app`), started as a user
//! starts it: `exo run examples/todo-app`, on the embedded bus or over a
//! NATS server of its own, its HTTP front on a port picked free, its SQLite
//! file in a temporary directory.

use std::process::Command;
use std::time::{Duration, Instant};

use exoservice::config::env::NATS_VARS;

use crate::http::{Response, request};
use crate::nats::LocalNats;
use crate::paths::{bin, bin_dir, ensure_setup, repo_root};
use crate::process::{Proc, free_port, port_in};

/// How long the whole application gets to come online.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `exo run` gets to stop its services when the app is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running todo app. Dropping it stops `exo run` with SIGTERM (so that it
/// stops its services too), and kills it when it has not exited in time;
/// then its NATS server, if it has one.
pub struct TodoApp {
    /// The `exo run` process, its output collected.
    pub proc: Proc,
    /// The port of the embedded bus; `None` over NATS (there is no bus).
    pub bus: Option<u16>,
    /// The port of the HTTP front (service `web`) on 127.0.0.1.
    pub web: u16,
    /// The NATS server the app runs over, if it runs over NATS.
    pub nats: Option<LocalNats>,
    _data: tempfile::TempDir,
}

impl TodoApp {
    /// Starts the app (`exo run --restart`) on the embedded bus and waits
    /// until every service is online. Panics with the output when it does
    /// not come online.
    pub fn start() -> TodoApp {
        TodoApp::launch(None)
    }

    /// Starts a NATS server, then the app (`exo run --restart` with
    /// `EXOSERVICE_TRANSPORT=nats` and `NATS_URL` of that server: no bus),
    /// and waits until every service is online. Panics with the output
    /// when it does not come online.
    pub fn start_over_nats() -> TodoApp {
        TodoApp::launch(Some(LocalNats::start()))
    }

    fn launch(nats: Option<LocalNats>) -> TodoApp {
        ensure_setup();
        let data = tempfile::tempdir().expect("a temporary directory");
        let web = free_port();
        let mut cmd = Command::new(bin("exo"));
        cmd.arg("run")
            .arg(repo_root().join("examples/todo-app"))
            .args(["--port", "0", "--restart", "--stop-timeout", "10"])
            .env("EXO_BIN_DIR", bin_dir())
            .env("WEB_PORT", web.to_string())
            .env("TODO_DB", data.path().join("todos.sqlite3"))
            .env_remove("EXOCOM_PORT")
            .env_remove("ROLE");
        for var in NATS_VARS {
            cmd.env_remove(var);
        }
        if let Some(nats) = &nats {
            cmd.env("EXOSERVICE_TRANSPORT", "nats")
                .env("NATS_URL", nats.url());
        }
        let mut proc = Proc::spawn(&mut cmd);
        let bus = match &nats {
            None => Some(port_in(
                &proc.wait_for("ExoCom online at port", Duration::from_secs(30)),
            )),
            Some(nats) => {
                let line = proc.wait_for("messages go over NATS at", Duration::from_secs(30));
                assert!(
                    line.contains(&format!(":{}", nats.port())),
                    "exo run does not use the test's NATS server ({}): {line}",
                    nats.url()
                );
                None
            }
        };
        proc.wait_for("application todo-app is online", ONLINE_TIMEOUT);
        TodoApp {
            proc,
            bus,
            web,
            nats,
            _data: data,
        }
    }

    /// The address of a path on the HTTP front, e.g. `http://127.0.0.1:N/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web)
    }

    /// One HTTP request to the front; panics when it cannot be made.
    pub fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Response {
        let body = body.map(|b| b.to_string());
        request(self.web, method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

impl Drop for TodoApp {
    fn drop(&mut self) {
        if matches!(self.proc.child.try_wait(), Ok(None)) {
            // SIGTERM: `exo run` stops each service's process group; a
            // SIGKILL (Proc's own drop) would leave the services running.
            let _ = Command::new("kill")
                .args(["-TERM", &self.proc.child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.proc.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Proc's drop kills what is left and reaps it.
    }
}

//! [`NatsServer`] is one node with JetStream, [`NatsCluster`] several nodes
//! routed to each other.
//!
//! Services on the `nats` transport are tested against a real
//! `nats-server` process: these helpers start one on a free loopback port
//! with a fresh JetStream store directory, wait until JetStream answers, and
//! kill the process and remove the directory when dropped. They need the
//! `nats-server` program (Debian and Ubuntu: `apt-get install nats-server`;
//! elsewhere: <https://github.com/nats-io/nats-server/releases>) on `PATH`,
//! in `/usr/sbin` or in `/usr/local/bin`.
//!
//! ```no_run
//! use std::time::Duration;
//! use exoservice::config::{NatsSettings, ServiceConfig};
//! use exoservice::routes::Routes;
//! use exoservice::testing::nats::NatsServer;
//! use exoservice::Engine;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = NatsServer::start().await?;
//! let routes = Routes::from_json(
//!     r#"{"web": {"sends": ["ping"], "receives": ["pong"]},
//!         "ping": {"receives": ["ping"], "sends": ["pong"]}}"#,
//! )?;
//! // The service under test, in this process (or as a process started
//! // with EXOSERVICE_TRANSPORT=nats and NATS_URL = server.url()).
//! let ping = Engine::new(
//!     ServiceConfig::from_parts("ping", ["ping"], ["pong"])
//!         .with_nats(NatsSettings::new(server.url(), "my-app", routes)),
//! );
//! ping.handle("ping")?;
//! ping.connect()?;
//! assert!(ping.wait_online(Duration::from_secs(5)).await);
//! # Ok(())
//! # }
//! ```
//!
//! All waits are bounded: [`NatsServer::start`] gives up after 15 s and
//! [`NatsCluster::start`] after 30 s, with an error that ends with the last
//! lines the servers printed.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long [`NatsServer::start`] waits for JetStream.
const SERVER_READY: Duration = Duration::from_secs(15);
/// How long [`NatsCluster::start`] waits for every node and a replicated
/// stream.
const CLUSTER_READY: Duration = Duration::from_secs(30);
/// Time between two readiness checks.
const POLL: Duration = Duration::from_millis(100);
/// Bound of one connection attempt or JetStream request while polling.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Output lines kept per server for error messages.
const KEPT_LINES: usize = 40;
/// Times a start is tried again with new ports when the server exits
/// before it is ready (another process took a port in between).
const START_ATTEMPTS: usize = 3;
/// Where `nats-server` is looked for after `PATH`.
const FALLBACK_DIRS: [&str; 2] = ["/usr/sbin", "/usr/local/bin"];

/// The last lines a server printed (standard output and error together).
type Output = Arc<Mutex<VecDeque<String>>>;

/// One `nats-server` process with JetStream on `127.0.0.1`, its store in a
/// fresh directory under the system's temporary directory. Dropping it
/// kills the process and removes the directory.
pub struct NatsServer {
    binary: PathBuf,
    args: Vec<String>,
    port: u16,
    store: PathBuf,
    child: Option<Child>,
    output: Output,
    /// Whether dropping it removes `store` (a cluster removes its own).
    owns_store: bool,
    /// When the server counts as ready.
    ready: Ready,
}

/// When a started server counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// JetStream answers a client that brings no credentials.
    JetStream,
    /// The server greets a connection with its `INFO` line (it may want
    /// credentials or TLS from clients, which the probe does not have).
    Greeting,
}

impl NatsServer {
    /// Starts a server on a free port and waits (at most 15 s) until
    /// JetStream answers on it.
    pub async fn start() -> Result<NatsServer, String> {
        NatsServer::start_inner(&[], None, Ready::JetStream).await
    }

    /// Starts a server with settings of its own, for tests of users,
    /// tokens, NKeys and TLS: `extra_args` go on its command line (such as
    /// `["--user", "ann", "--pass", "s3cret"]` or `["--auth", "TOKEN"]`),
    /// and `config`, when given, is the text of a configuration file the
    /// server reads (`authorization { ... }`, `tls { ... }`). The server
    /// listens on 127.0.0.1 on a free port with JetStream in a fresh store
    /// (the command line wins over the file for these). Since a client may
    /// need credentials or a certificate, this waits (at most 15 s) only
    /// until the server greets a connection on its port, not for
    /// JetStream; so does [`NatsServer::restart`] of such a server.
    pub async fn start_with(
        extra_args: &[&str],
        config: Option<&str>,
    ) -> Result<NatsServer, String> {
        NatsServer::start_inner(extra_args, config, Ready::Greeting).await
    }

    async fn start_inner(
        extra_args: &[&str],
        config: Option<&str>,
        ready: Ready,
    ) -> Result<NatsServer, String> {
        let binary = find_binary()?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let store = StoreDir::create()?;
            let port = free_ports(1)?[0];
            let mut args = Vec::new();
            if let Some(text) = config {
                let file = store.path.join("nats-server.conf");
                std::fs::write(&file, text).map_err(|e| {
                    format!(
                        "cannot write the nats-server configuration {}: {e}",
                        file.display()
                    )
                })?;
                args.extend(["-c".to_owned(), file.display().to_string()]);
            }
            args.extend([
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
                "-js".to_owned(),
                "-sd".to_owned(),
                store.path.display().to_string(),
            ]);
            args.extend(extra_args.iter().map(|a| (*a).to_owned()));
            let mut server = NatsServer {
                binary: binary.clone(),
                args,
                port,
                store: store.keep(),
                child: None,
                output: Output::default(),
                owns_store: true,
                ready,
            };
            server.spawn()?;
            match server.wait_ready(SERVER_READY).await {
                Ok(()) => return Ok(server),
                Err(Failure::Exited(e)) => last_error = e,
                Err(Failure::TimedOut(e)) => return Err(e),
            }
        }
        Err(last_error)
    }

    /// The server's URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// The last lines the server printed (its log), oldest first.
    pub fn output(&self) -> Vec<String> {
        lock(&self.output).iter().cloned().collect()
    }

    /// Whether the process is running (it was started and neither killed
    /// nor exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process with SIGKILL, as a crash or a lost machine would,
    /// and waits until it is gone. The store directory stays, so
    /// [`NatsServer::restart`] brings the same server back. Killing a
    /// server that is not running does nothing.
    pub async fn kill(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child
            .kill()
            .await
            .map_err(|e| format!("cannot kill nats-server on port {}: {e}", self.port))
    }

    /// Starts the server again on the same port with the same store (after
    /// [`NatsServer::kill`]; a running one is killed first) and waits (at
    /// most 15 s) until JetStream answers. Messages JetStream had stored
    /// are there again; for a node of a cluster this waits for the node's
    /// JetStream to answer, not for the cluster to elect leaders.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill().await?;
        self.spawn()?;
        self.wait_ready(SERVER_READY).await.map_err(Failure::text)
    }

    /// Starts the process; its output goes to `self.output`.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        if let Some(out) = child.stdout.take() {
            collect(out, self.output.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, self.output.clone());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server is ready (see [`Ready`]), the process exits
    /// (an error), or `bound` passes (an error).
    async fn wait_ready(&mut self, bound: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + bound;
        let url = self.url();
        loop {
            self.check_alive().map_err(Failure::Exited)?;
            let probe = match self.ready {
                Ready::JetStream => query_account(&url).await,
                Ready::Greeting => greeting(self.port).await,
            };
            let last = match probe {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let what = match self.ready {
                    Ready::JetStream => "JetStream did not answer",
                    Ready::Greeting => "the server did not greet a connection",
                };
                return Err(Failure::TimedOut(
                    self.failure(&format!("{what} within {bound:?} (last: {last})")),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An error when the process is not running, with its last output.
    fn check_alive(&mut self) -> Result<(), String> {
        let status = match self.child.as_mut() {
            None => return Err(self.failure("is not running")),
            Some(child) => child.try_wait(),
        };
        match status {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                // Give the output readers a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(20));
                Err(self.failure(&format!("exited ({status})")))
            }
            Err(e) => Err(self.failure(&format!("cannot be checked: {e}"))),
        }
    }

    /// `nats-server on port P <what>; its last output: ...`.
    fn failure(&self, what: &str) -> String {
        let lines = self.output();
        let output = if lines.is_empty() {
            "(nothing)".to_owned()
        } else {
            lines.join("\n")
        };
        format!(
            "nats-server {} on port {} {what}; its last output:\n{output}",
            self.args.join(" "),
            self.port
        )
    }

    /// Kills the process (if running) and waits briefly for it to be gone,
    /// without a runtime.
    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill_now();
        if self.owns_store {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}

/// A cluster of `nats-server` processes on `127.0.0.1`, each with
/// JetStream and routes to all the others, their stores under one fresh
/// temporary directory. Dropping it kills every node and removes the
/// directory.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `n` nodes (1 to 5) on free ports and waits (at most 30 s)
    /// until JetStream answers on every node and a stream replicated on all
    /// `n` can be created.
    pub async fn start(n: usize) -> Result<NatsCluster, String> {
        if !(1..=5).contains(&n) {
            return Err(format!(
                "a NATS cluster of {n} nodes was asked for; expected 1 to 5 (JetStream keeps at most 5 replicas)"
            ));
        }
        let binary = find_binary()?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start(&binary, n).await {
                Ok(cluster) => return Ok(cluster),
                Err(Failure::Exited(e)) => last_error = e,
                Err(Failure::TimedOut(e)) => return Err(e),
            }
        }
        Err(last_error)
    }

    async fn try_start(binary: &Path, n: usize) -> Result<NatsCluster, Failure> {
        let dir = StoreDir::create().map_err(Failure::TimedOut)?;
        let all = free_ports(2 * n).map_err(Failure::TimedOut)?;
        let (ports, cluster_ports) = all.split_at(n);
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let name = format!("exo-{}", fastrand::u32(..));
        let mut cluster = NatsCluster {
            nodes: Vec::with_capacity(n),
            dir: dir.keep(),
        };
        for i in 0..n {
            let store = cluster.dir.join(format!("n{}", i + 1));
            let args = vec![
                "-n".to_owned(),
                format!("n{}", i + 1),
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                ports[i].to_string(),
                "-js".to_owned(),
                "-sd".to_owned(),
                store.display().to_string(),
                "--cluster_name".to_owned(),
                name.clone(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]),
                "--routes".to_owned(),
                routes.clone(),
            ];
            let mut node = NatsServer {
                binary: binary.to_owned(),
                args,
                port: ports[i],
                store,
                child: None,
                output: Output::default(),
                owns_store: false,
                ready: Ready::JetStream,
            };
            node.spawn().map_err(Failure::TimedOut)?;
            cluster.nodes.push(node);
        }
        let deadline = Instant::now() + CLUSTER_READY;
        for node in &mut cluster.nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            node.wait_ready(left).await?;
        }
        cluster.wait_replicated_stream(deadline).await?;
        Ok(cluster)
    }

    /// Waits until a stream with one replica per node can be created (the
    /// meta leader is elected and every node is a peer), then deletes it.
    async fn wait_replicated_stream(&mut self, deadline: Instant) -> Result<(), Failure> {
        let n = self.nodes.len();
        let name = format!("EXO_READY_{}", fastrand::u32(..));
        loop {
            for node in &mut self.nodes {
                node.check_alive().map_err(Failure::Exited)?;
            }
            let last = match create_and_delete_stream(&self.nodes[0].url(), &name, n).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let logs = self
                    .nodes
                    .iter()
                    .map(|node| node.failure("is running"))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(Failure::TimedOut(format!(
                    "the NATS cluster of {n} could not create a stream with {n} replicas within {CLUSTER_READY:?} (last: {last})\n{logs}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The client URL of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i` (0-based, in the order of [`NatsCluster::urls`]), to kill
    /// and restart it; `None` when the cluster has no node `i`.
    pub fn node(&mut self, i: usize) -> Option<&mut NatsServer> {
        self.nodes.get_mut(i)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_now();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a start failed: the process exited (maybe a port was taken; worth
/// another try) or the wait timed out.
enum Failure {
    Exited(String),
    TimedOut(String),
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Exited(e) | Failure::TimedOut(e) => e,
        }
    }
}

/// A fresh directory under the system's temporary directory, removed when
/// dropped unless kept.
struct StoreDir {
    path: PathBuf,
    kept: bool,
}

impl StoreDir {
    fn create() -> Result<StoreDir, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..10 {
            let path = base.join(format!(
                "exo-nats-{}-{}-{:08x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                fastrand::u32(..)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(StoreDir { path, kept: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot create a JetStream store directory {}: {e}",
                        path.display()
                    ));
                }
            }
        }
        Err(format!(
            "cannot create a fresh JetStream store directory in {}",
            base.display()
        ))
    }

    /// Hands the directory over (it is no longer removed here).
    fn keep(mut self) -> PathBuf {
        self.kept = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where `nats-server` is: on `PATH`, else in `/usr/sbin` or
/// `/usr/local/bin`; an error says how to install it. For tests that run a
/// server with settings of their own (TLS, users).
pub fn nats_server_binary() -> Result<PathBuf, String> {
    find_binary()
}

/// `nats-server` on `PATH`, else in `/usr/sbin` or `/usr/local/bin`.
fn find_binary() -> Result<PathBuf, String> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "nats-server was not found on PATH, in {} or in {}: install it (Debian and Ubuntu: `apt-get install nats-server`; elsewhere: https://github.com/nats-io/nats-server/releases)",
                FALLBACK_DIRS[0], FALLBACK_DIRS[1]
            )
        })
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let error = |e: std::io::Error| format!("cannot find a free port on 127.0.0.1: {e}");
    // All listeners stay open until every port is known, so none repeats.
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(error))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(error))
        .collect()
}

/// Keeps the last lines of a server's output stream.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, output: Output) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = lock(&output);
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
}

fn lock(output: &Output) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    output.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects to the port and reads the server's first line, which must be
/// its `INFO`.
async fn greeting(port: u16) -> Result<(), String> {
    let read = async {
        let stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read the greeting: {e}"))?;
        if line.starts_with("INFO ") {
            Ok(())
        } else {
            Err(format!("expected an INFO line, got {line:?}"))
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err(format!("no greeting within {PROBE_TIMEOUT:?}")),
    }
}

/// A client of exactly this server (not the ones it tells about).
async fn connect(url: &str) -> Result<async_nats::Client, String> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(PROBE_TIMEOUT)
        .ignore_discovered_servers();
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect: no answer within {PROBE_TIMEOUT:?}")),
    }
}

fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(PROBE_TIMEOUT);
    js
}

/// Asks the server for the JetStream account information. The answer is
/// read as plain JSON (its type and whether it is an error): the account
/// structure differs between server versions.
async fn query_account(url: &str) -> Result<(), String> {
    let client = connect(url).await?;
    let reply = match tokio::time::timeout(
        PROBE_TIMEOUT,
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return Err(format!("JetStream account info: {e}")),
        Err(_) => {
            return Err(format!(
                "JetStream account info: no answer within {PROBE_TIMEOUT:?}"
            ));
        }
    };
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| format!("JetStream account info: the answer is not JSON ({e})"))?;
    if let Some(error) = answer.get("error") {
        return Err(format!("JetStream account info: {error}"));
    }
    match answer.get("type").and_then(serde_json::Value::as_str) {
        Some("io.nats.jetstream.api.v1.account_info_response") => Ok(()),
        other => Err(format!(
            "JetStream account info: expected an account_info_response, got type {other:?}"
        )),
    }
}

/// Creates a stream with `replicas` replicas and deletes it again.
async fn create_and_delete_stream(url: &str, name: &str, replicas: usize) -> Result<(), String> {
    let js = jetstream(connect(url).await?);
    let config = async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("exo-ready.{name}")],
        num_replicas: replicas,
        ..Default::default()
    };
    let create = tokio::time::timeout(PROBE_TIMEOUT, js.create_stream(config)).await;
    match create {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("create a stream with {replicas} replicas: {e}")),
        Err(_) => {
            return Err(format!(
                "create a stream with {replicas} replicas: no answer within {PROBE_TIMEOUT:?}"
            ));
        }
    }
    match tokio::time::timeout(PROBE_TIMEOUT, js.delete_stream(name)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("delete the readiness stream {name}: {e}")),
        Err(_) => Err(format!(
            "delete the readiness stream {name}: no answer within {PROBE_TIMEOUT:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_answers_jetstream_and_is_gone_after_drop() {
        let server = NatsServer::start().await.expect("nats-server starts");
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        let store = server.store_dir().to_owned();
        assert!(store.is_dir());
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut sub = client.subscribe("t.echo").await.expect("subscribe");
        client
            .publish("t.echo", "hi".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut sub),
        )
        .await
        .expect("message in time")
        .expect("message");
        assert_eq!(&got.payload[..], b"hi");
        drop(client);
        query_account(&server.url())
            .await
            .expect("JetStream answers");
        let port = server.port();
        drop(server);
        assert!(!store.exists(), "store {} removed", store.display());
        assert!(
            connect(&format!("nats://127.0.0.1:{port}")).await.is_err(),
            "nothing listens on port {port} after drop"
        );
    }

    #[tokio::test]
    async fn a_killed_server_restarts_on_its_port_with_its_messages() {
        let mut server = NatsServer::start().await.expect("nats-server starts");
        let url = server.url();
        let js = jetstream(connect(&url).await.expect("connect"));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        js.publish("keep.one", "kept".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        server.kill().await.expect("kill");
        assert!(!server.is_running());
        assert!(connect(&url).await.is_err(), "down after kill");
        server.restart().await.expect("restart");
        assert!(server.is_running());
        assert_eq!(server.url(), url);
        let js = jetstream(connect(&url).await.expect("connect again"));
        let stream = js.get_stream("KEEP").await.expect("stream kept");
        let msg = stream
            .get_last_raw_message_by_subject("keep.one")
            .await
            .expect("message kept");
        assert_eq!(&msg.payload[..], b"kept");
    }

    #[tokio::test]
    async fn a_cluster_of_three_replicates_and_routes_between_nodes() {
        let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
        let urls = cluster.urls();
        assert_eq!(urls.len(), 3);
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.node(2).expect("node 3").url(), urls[2]);
        assert!(cluster.node(3).is_none(), "no 4th node");
        let first = connect(&urls[0]).await.expect("connect node 1");
        let third = connect(&urls[2]).await.expect("connect node 3");
        let mut sub = third.subscribe("t.across").await.expect("subscribe");
        third.flush().await.expect("flush");
        // The subscription reaches node 1 over the route shortly after.
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                first
                    .publish("t.across", "x".into())
                    .await
                    .expect("publish");
                first.flush().await.expect("flush");
                if let Ok(Some(m)) =
                    tokio::time::timeout(POLL, futures_util::StreamExt::next(&mut sub)).await
                {
                    return m;
                }
            }
        })
        .await
        .expect("a message crosses from node 1 to node 3");
        assert_eq!(&got.payload[..], b"x");
        let js = jetstream(first);
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "R3".into(),
                subjects: vec!["r3.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .expect("a stream with 3 replicas");
        let mut stream = stream;
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3);
    }

    #[tokio::test]
    async fn a_cluster_outside_one_to_five_is_refused() {
        let err = NatsCluster::start(0).await.err().expect("refused");
        assert!(err.contains("expected 1 to 5"), "{err}");
    }
}

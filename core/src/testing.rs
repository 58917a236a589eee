//! A mock ExoCom for testing services: [`MockBus`].
//!
//! The mock listens on a free loopback port and speaks the same transport
//! as the real bus (it shares its HTTP, handshake and connection code), but
//! it has no routes: it records every message a service sends it and sends
//! a service whatever a test asks it to.
//!
//! ```no_run
//! use std::time::Duration;
//! use exoservice::testing::MockBus;
//!
//! # async fn demo() -> exoservice::Result<()> {
//! let bus = MockBus::start().await?;
//! // Start the service under test with EXOCOM_HOST=127.0.0.1 and
//! // EXOCOM_PORT = bus.port(), then:
//! bus.wait_for_registration("ping", Duration::from_secs(5)).await?;
//! let sent = bus.send_to_service("ping", "ping", serde_json::json!({"n": 1})).await?;
//! let pong = bus.wait_for("pong", Duration::from_secs(5)).await?;
//! assert_eq!(pong.activity_id, sent.activity_id);
//! # Ok(())
//! # }
//! ```
//!
//! # What it records
//!
//! - Registrations: a connection that sends `exocom.register-service` counts
//!   as an instance of the role named by its `sender` until it disconnects
//!   ([`MockBus::roles`], [`MockBus::wait_for_registration`]). Registration
//!   frames are not recorded as messages.
//! - Every other readable message any connection sends, in arrival order
//!   ([`MockBus::received`], [`MockBus::wait_for`]), registered or not,
//!   `__status-ok` included. Unreadable frames are logged and dropped.
//!
//! Nothing is routed between services, and nothing is checked against any
//! routes: the mock is a recorder and a remote control.

/// Real `nats-server` processes (one node or a cluster) for testing
/// services on the `nats` transport.
#[cfg(feature = "nats")]
pub mod nats;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::bus::connection::{Frame, FrameHandler, Outbox};
use crate::bus::server::{self, App, Server};
use crate::bus::{http, rfc3339_nanos};
use crate::error::{ExoError, Result};
use crate::message::{self, Message, new_id};

/// Frames queued per connection at most (sending more fails).
const QUEUE: usize = 65_536;
/// The largest message the mock reads.
const MAX_MESSAGE: usize = 64 << 20;

/// A message the mock received, and whether [`MockBus::wait_for`] took it.
struct Received {
    msg: Message,
    taken: bool,
}

/// One connection to the mock.
struct ConnEntry {
    role: Option<String>,
    outbox: Arc<Outbox>,
    /// Order of registration (the newest instance of a role is used).
    registered: u64,
}

/// An automatic answer set by [`MockBus::mock_reply`].
struct Reply {
    name: String,
    payload: Option<Box<RawValue>>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, ConnEntry>,
    next_conn: u64,
    next_registration: u64,
    received: Vec<Received>,
    replies: HashMap<String, Reply>,
}

struct MockState {
    inner: Mutex<Inner>,
    /// Bumped on every registration, disconnection and received message.
    changed: watch::Sender<u64>,
}

impl MockState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One connection's handler.
struct MockConn {
    state: Arc<MockState>,
    id: u64,
}

impl FrameHandler for MockConn {
    fn frame(&mut self, frame: Frame<'_>) {
        let msg = match Message::parse(frame.bytes()) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!("mock bus: dropped an unreadable frame ({e})");
                return;
            }
        };
        {
            let mut inner = self.state.lock();
            let inner = &mut *inner;
            if msg.name == message::REGISTER {
                let Some(role) = msg.sender.clone() else {
                    tracing::warn!("mock bus: a registration without a sender role");
                    return;
                };
                inner.next_registration += 1;
                let order = inner.next_registration;
                if let Some(conn) = inner.conns.get_mut(&self.id) {
                    conn.role = Some(role);
                    conn.registered = order;
                }
            } else {
                if let (Some(reply), Some(conn)) =
                    (inner.replies.get(&msg.name), inner.conns.get(&self.id))
                {
                    let answer = Message {
                        name: reply.name.clone(),
                        id: Some(new_id()),
                        activity_id: Some(msg.activity_id.clone().unwrap_or_else(new_id)),
                        payload: reply.payload.clone(),
                        auth: msg.auth.clone(),
                        is_security: msg.is_security,
                        timestamp: Some(rfc3339_nanos(std::time::SystemTime::now())),
                        ..Message::default()
                    };
                    conn.outbox.push_all([Utf8Bytes::from(answer.to_json())]);
                }
                inner.received.push(Received { msg, taken: false });
            }
        }
        self.state.bump();
    }
}

impl Drop for MockConn {
    fn drop(&mut self) {
        self.state.lock().conns.remove(&self.id);
        self.state.bump();
    }
}

#[derive(Serialize)]
struct Client<'a> {
    role: &'a str,
    instances: usize,
}

impl App for MockState {
    type Conn = MockConn;

    fn open(self: &Arc<Self>, outbox: Arc<Outbox>) -> MockConn {
        let mut inner = self.lock();
        inner.next_conn += 1;
        let id = inner.next_conn;
        inner.conns.insert(
            id,
            ConnEntry {
                role: None,
                outbox,
                registered: 0,
            },
        );
        MockConn {
            state: self.clone(),
            id,
        }
    }

    fn config_json(&self) -> String {
        let counts = role_counts(&self.lock());
        let clients: Vec<Client<'_>> = counts
            .iter()
            .map(|(role, n)| Client {
                role,
                instances: *n,
            })
            .collect();
        let clients = serde_json::to_string(&clients).unwrap_or_else(|_| "[]".into());
        format!(r#"{{"clients":{clients},"routes":{{}}}}"#)
    }

    fn warn(&self, line: String) {
        tracing::warn!("mock bus: {line}");
    }

    fn websocket_config(&self) -> WebSocketConfig {
        http::websocket_config(MAX_MESSAGE)
    }

    fn queue_capacity(&self) -> usize {
        QUEUE
    }
}

/// Registered roles and their connection counts, sorted by role.
fn role_counts(inner: &Inner) -> Vec<(String, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for conn in inner.conns.values() {
        if let Some(role) = &conn.role {
            *counts.entry(role).or_default() += 1;
        }
    }
    let mut counts: Vec<(String, usize)> =
        counts.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
    counts.sort();
    counts
}

/// A mock ExoCom for tests (see the [module docs](self)).
///
/// All methods take `&self`; the mock can be shared between tasks (put it
/// in an `Arc`). Dropping it stops it like [`MockBus::shutdown`], without
/// waiting.
pub struct MockBus {
    state: Arc<MockState>,
    server: Server,
    addr: SocketAddr,
}

impl std::fmt::Debug for MockBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBus")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockBus {
    /// Starts a mock bus on a free port of 127.0.0.1.
    pub async fn start() -> Result<MockBus> {
        MockBus::start_on(0).await
    }

    /// Starts a mock bus on this port of 127.0.0.1 (0: a free one), for
    /// example to bring one back on the port of one that was shut down.
    pub async fn start_on(port: u16) -> Result<MockBus> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = server::bind(addr).await.map_err(|e| {
            ExoError::Connection(format!("the mock bus cannot listen on {addr}: {e}"))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ExoError::Connection(format!("the mock bus has no address: {e}")))?;
        let (changed, _) = watch::channel(0);
        let state = Arc::new(MockState {
            inner: Mutex::new(Inner::default()),
            changed,
        });
        let server = Server::spawn(listener, state.clone());
        Ok(MockBus {
            state,
            server,
            addr,
        })
    }

    /// The port it listens on (give it to the service as `EXOCOM_PORT`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://127.0.0.1:PORT/services`.
    pub fn url(&self) -> String {
        format!("ws://{}/services", self.addr)
    }

    /// The roles registered and still connected, sorted, each once.
    pub fn roles(&self) -> Vec<String> {
        role_counts(&self.state.lock())
            .into_iter()
            .map(|(role, _)| role)
            .collect()
    }

    /// How many connections are registered as `role` right now.
    pub fn instances(&self, role: &str) -> usize {
        let inner = self.state.lock();
        inner
            .conns
            .values()
            .filter(|c| c.role.as_deref() == Some(role))
            .count()
    }

    /// Waits until a connection registered as `role` is connected (at once
    /// if one is already). Fails with [`ExoError::Timeout`] after `timeout`.
    pub async fn wait_for_registration(&self, role: &str, timeout: Duration) -> Result<()> {
        let mut changes = self.state.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.instances(role) > 0 {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ExoError::Timeout {
                        name: format!("{} as '{role}'", message::REGISTER),
                        timeout,
                    });
                }
            }
        }
    }

    /// Sends a new message (fresh `id` and `activityId`, this payload) to
    /// the service registered as `role`, and returns it as sent, so a test
    /// can match the answer by its `activityId`.
    ///
    /// When several connections are registered as `role`, the one that
    /// registered last gets it. When none is registered yet, it waits for
    /// one up to [`MockBus::REGISTRATION_WAIT`] (a service that just
    /// started may not have registered yet), then fails with
    /// [`ExoError::Connection`].
    pub async fn send_to_service(
        &self,
        role: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<Message> {
        let msg = Message::new(name)
            .with_payload(&payload)
            .map_err(|e| ExoError::Payload {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        self.send_message(role, msg).await
    }

    /// How long [`MockBus::send_to_service`] and [`MockBus::send_message`]
    /// wait for a service to register as the role they send to.
    pub const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

    /// Sends this message to the service registered as `role` (as
    /// [`MockBus::send_to_service`] does, waiting for the registration the
    /// same way), with every field as given: use it for `auth`,
    /// `isSecurity`, `sender` or a chosen `activityId`. A missing `id` or
    /// `activityId` is filled in, and `timestamp` is set.
    pub async fn send_message(&self, role: &str, mut msg: Message) -> Result<Message> {
        msg.id.get_or_insert_with(new_id);
        msg.activity_id.get_or_insert_with(new_id);
        msg.timestamp = Some(rfc3339_nanos(std::time::SystemTime::now()));
        if self.instances(role) == 0 {
            self.wait_for_registration(role, MockBus::REGISTRATION_WAIT)
                .await
                .map_err(|_| {
                    ExoError::Connection(format!(
                        "no service is registered as '{role}' with the mock bus (waited {:?})",
                        MockBus::REGISTRATION_WAIT
                    ))
                })?;
        }
        let inner = self.state.lock();
        let conn = inner
            .conns
            .values()
            .filter(|c| c.role.as_deref() == Some(role))
            .max_by_key(|c| c.registered)
            .ok_or_else(|| {
                ExoError::Connection(format!(
                    "no service is registered as '{role}' with the mock bus"
                ))
            })?;
        conn.outbox
            .push(Utf8Bytes::from(msg.to_json()))
            .map_err(|e| {
                ExoError::Connection(format!("cannot send '{}' to '{role}': {e:?}", msg.name))
            })?;
        Ok(msg)
    }

    /// The first message named `name` that the mock received and that no
    /// earlier `wait_for` returned; waits for one if there is none yet.
    ///
    /// Each received message is returned by `wait_for` at most once, so
    /// calling `wait_for("pong", ..)` twice returns two different pongs, in
    /// the order they arrived, whether they arrived before or after the
    /// call. [`MockBus::reset`] forgets them all. Fails with
    /// [`ExoError::Timeout`] after `timeout`.
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Result<Message> {
        let mut changes = self.state.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let mut inner = self.state.lock();
                let found = inner
                    .received
                    .iter_mut()
                    .find(|r| !r.taken && r.msg.name == name);
                if let Some(r) = found {
                    r.taken = true;
                    return Ok(r.msg.clone());
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ExoError::Timeout {
                        name: name.to_owned(),
                        timeout,
                    });
                }
            }
        }
    }

    /// Every message received since the start or the last
    /// [`MockBus::reset`], in arrival order (whether `wait_for` took it or
    /// not; registrations are not messages).
    pub fn received(&self) -> Vec<Message> {
        let inner = self.state.lock();
        inner.received.iter().map(|r| r.msg.clone()).collect()
    }

    /// Forgets the received messages and the automatic replies. Connections
    /// and registrations stay.
    pub fn reset(&self) {
        let mut inner = self.state.lock();
        inner.received.clear();
        inner.replies.clear();
    }

    /// From now on, whenever a service sends `request_name`, the mock
    /// answers that connection at once with `reply_name` and this payload,
    /// in the request's activity (same `activityId`, `auth` and
    /// `isSecurity`, fresh `id`). The request is recorded as usual. Setting
    /// a reply for the same `request_name` again replaces it.
    pub fn mock_reply(&self, request_name: &str, reply_name: &str, payload: serde_json::Value) {
        let payload = message::to_raw(&payload).unwrap_or(None);
        self.state.lock().replies.insert(
            request_name.to_owned(),
            Reply {
                name: reply_name.to_owned(),
                payload,
            },
        );
    }

    /// Stops the mock like a killed bus: connections are dropped without a
    /// close frame. Returns once the port is free again.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl Drop for MockBus {
    fn drop(&mut self) {
        self.server.signal_stop();
    }
}

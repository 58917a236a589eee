//! The connection to ExoCom: connect to `ws://HOST:PORT/services` (or the
//! `ws://`/`wss://` URL of `EXOCOM_URL`, showing the `EXOCOM_TOKEN` as
//! `Authorization: Bearer`), register, reconnect forever with backoff,
//! re-register after each reconnect, and keep outgoing messages in a
//! bounded buffer while the bus is away.
//!
//! The relay leaves by closing the TCP connection without a WebSocket close
//! frame (the deployed Go ExoCom crashes on close frames).

mod backoff;
mod outbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use backoff::Backoff;
pub use outbox::{Outbox, PushError};

use crate::config::{ConfigError, Secret, ServiceConfig, env};
use crate::dispatch::Queued;
use crate::message::{self, Message};

/// Frames written per flush at most.
const BATCH: usize = 256;

/// Where and as whom the relay connects.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// ExoCom's host.
    pub host: String,
    /// ExoCom's port.
    pub port: u16,
    /// The role this service registers as.
    pub role: String,
    /// The first reconnect delay (doubles per failure).
    pub backoff_start: Duration,
    /// The longest reconnect delay.
    pub backoff_cap: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The bus's URL (`ws://` or `wss://`); `None`: `ws://HOST:PORT/services`.
    pub url: Option<String>,
    /// The token shown on the upgrade request (`Authorization: Bearer`).
    pub token: Option<Secret>,
    /// The TLS settings for a `wss://` URL (see [`RelayConfig::for_service`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl RelayConfig {
    /// The defaults: backoff from 100 ms to 5 s, 5 s per attempt.
    pub fn new(host: impl Into<String>, port: u16, role: impl Into<String>) -> Self {
        RelayConfig {
            host: host.into(),
            port,
            role: role.into(),
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            url: None,
            token: None,
            tls: None,
        }
    }

    /// The relay settings of a service: its bus (host and port, or its
    /// URL), its role, its token; for a `wss://` URL the TLS settings
    /// (trusting the CA file when one is given, else the system's roots).
    pub fn for_service(config: &ServiceConfig) -> Result<RelayConfig, ConfigError> {
        let mut relay = RelayConfig::new(
            config.exocom_host.clone(),
            config.exocom_port,
            config.role.clone(),
        );
        relay.token.clone_from(&config.exocom_token);
        if let Some(url) = &config.exocom_url {
            let parsed = env::bus_url(url).map_err(|e| env::var_error(env::EXOCOM_URL, e))?;
            if parsed.tls {
                let connector = crate::bus::tls::client_config(config.exocom_ca_file.as_deref())
                    .map_err(|e| env::var_error(env::EXOCOM_CA_FILE, e.to_string()))?;
                relay.tls = Some(connector);
            }
            relay.url = Some(parsed.to_url());
        }
        Ok(relay)
    }

    /// The bus's WebSocket URL.
    pub fn url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!("ws://{}:{}/services", self.host, self.port),
        }
    }
}

/// What [`Inbound::take`] did with a message.
#[derive(Debug)]
pub enum Take {
    /// A handler must see it.
    Handle(Message),
    /// Taken at once: the answer to a waiting request, a watched activity's
    /// message, the bus's status probe.
    Settled,
    /// Dropped (logged): no handler is registered for its name.
    Dropped,
    /// Not taken (logged): the service is stopping.
    Stopping,
}

/// What a connection hands incoming messages to.
pub trait Inbound: Send + Sync + 'static {
    /// Takes what can be settled at once (answers to waiting requests, the
    /// bus's status probe) and says whether a handler must see the message.
    fn take(&self, msg: Message) -> Take;
    /// The relay registered (`first`: for the first time in this process).
    fn registered(&self, first: bool);
    /// An at-least-once message was given up and stored as a dead letter
    /// by this service (`name`: the service's own name for it).
    fn dead_lettered(&self, name: &str);
}

/// Shared state between the relay's task and its owner.
struct Status {
    connected: AtomicBool,
    registrations: AtomicU64,
    registered_tx: watch::Sender<u64>,
}

/// A running connection to ExoCom.
pub struct Relay {
    outbox: Arc<Outbox>,
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    url: String,
}

impl Relay {
    /// Starts connecting in the background, on the current tokio runtime.
    /// Messages that a handler must see go into `deliveries`; when it is
    /// full, the relay stops reading from the bus (backpressure).
    pub fn start(
        config: RelayConfig,
        outbox: Arc<Outbox>,
        inbound: Arc<dyn Inbound>,
        deliveries: mpsc::Sender<Queued>,
    ) -> Relay {
        let (registered_tx, _) = watch::channel(0);
        let status = Arc::new(Status {
            connected: AtomicBool::new(false),
            registrations: AtomicU64::new(0),
            registered_tx,
        });
        let (stop, stop_rx) = watch::channel(false);
        let url = config.url();
        let task = tokio::spawn(connection_loop(
            config,
            outbox.clone(),
            inbound,
            deliveries,
            stop_rx,
            status.clone(),
        ));
        Relay {
            outbox,
            status,
            stop,
            task: Some(task),
            url,
        }
    }

    /// The buffer of outgoing frames.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The bus's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a connection to the bus is up right now.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// How many times the relay has registered (once per connection).
    pub fn registrations(&self) -> u64 {
        self.status.registrations.load(Ordering::Acquire)
    }

    /// A watch of the registration count.
    pub fn registered_rx(&self) -> watch::Receiver<u64> {
        self.status.registered_tx.subscribe()
    }

    /// Waits until the relay has registered at least `count` times.
    pub async fn wait_registered(&self, count: u64, timeout: Duration) -> bool {
        let mut rx = self.status.registered_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops taking frames, writes what waits (for at most `timeout`), then
    /// drops the connection. Returns how many frames could not be written.
    pub async fn close(mut self, timeout: Duration) -> usize {
        self.outbox.close();
        let left = self.outbox.wait_empty(timeout).await;
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        left
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(64 * 1024)
}

async fn connection_loop(
    config: RelayConfig,
    outbox: Arc<Outbox>,
    inbound: Arc<dyn Inbound>,
    deliveries: mpsc::Sender<Queued>,
    mut stop: watch::Receiver<bool>,
    status: Arc<Status>,
) {
    let url = config.url();
    let mut backoff = Backoff::new(config.backoff_start, config.backoff_cap);
    loop {
        if *stop.borrow() {
            return;
        }
        let connect = tokio::time::timeout(config.connect_timeout, open(&config, &url));
        let attempt = tokio::select! {
            r = connect => r,
            _ = stop.changed() => return,
        };
        let error = match attempt {
            Ok(Ok(ws)) => {
                if backoff.failures() > 0 {
                    tracing::info!(
                        "reached ExoCom at {url} after {} failed attempts",
                        backoff.failures()
                    );
                }
                backoff.reset();
                status.connected.store(true, Ordering::Release);
                let parts = SessionParts {
                    config: &config,
                    outbox: &outbox,
                    inbound: &*inbound,
                    deliveries: &deliveries,
                    status: &status,
                };
                let reason = match ws {
                    Connected::Plain(ws) => session(ws, &parts, &mut stop).await,
                    Connected::Tls(ws) => session(*ws, &parts, &mut stop).await,
                };
                status.connected.store(false, Ordering::Release);
                if *stop.borrow() {
                    return;
                }
                tracing::warn!("lost the connection to ExoCom at {url}: {reason}; reconnecting");
                continue;
            }
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {:?}", config.connect_timeout),
        };
        let delay = backoff.next_delay();
        if backoff.should_log() {
            tracing::warn!(
                "cannot reach ExoCom at {url}: {error} (attempt {}; {} messages wait; retrying, next log after {} more attempts)",
                backoff.failures(),
                outbox.len(),
                backoff.failures()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Frames taken from the outbox; put back unless they were written.
struct Batch<'a> {
    outbox: &'a Outbox,
    frames: Vec<String>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.frames.is_empty() {
            self.outbox.put_back(std::mem::take(&mut self.frames));
        }
    }
}

/// A connected WebSocket, plain or over TLS (short-lived: it is moved into
/// the session at once).
#[allow(clippy::large_enum_variant)]
enum Connected {
    Plain(WebSocketStream<TcpStream>),
    Tls(Box<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// One connection attempt: TCP, TLS for `wss://`, the upgrade with the
/// token. Errors say what the bus answered.
async fn open(config: &RelayConfig, url: &str) -> Result<Connected, String> {
    let parsed = env::bus_url(url)?;
    let tcp = TcpStream::connect((parsed.host.as_str(), parsed.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = &config.token {
        let value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| "EXOCOM_TOKEN cannot be sent in an HTTP header".to_owned())?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
        // Says which role the token is for, so a mix-up gets HTTP 401.
        if let Ok(role) = HeaderValue::try_from(config.role.as_str()) {
            request.headers_mut().insert("x-exocom-role", role);
        }
    }
    let refused = |e: tungstenite::Error| match &e {
        tungstenite::Error::Http(response) => match response.status() {
            StatusCode::UNAUTHORIZED if config.token.is_some() => format!(
                "the bus refused the token of '{}' (HTTP 401): check EXOCOM_TOKEN",
                config.role
            ),
            StatusCode::UNAUTHORIZED => format!(
                "the bus wants a token (HTTP 401): set EXOCOM_TOKEN to the token of '{}'",
                config.role
            ),
            StatusCode::SERVICE_UNAVAILABLE => {
                "the bus has too many connections (HTTP 503)".to_owned()
            }
            status => format!("the bus answered HTTP {status}"),
        },
        _ => e.to_string(),
    };
    if !parsed.tls {
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
            .await
            .map_err(refused)?;
        return Ok(Connected::Plain(ws));
    }
    let Some(tls) = &config.tls else {
        return Err("a wss:// URL needs TLS settings (RelayConfig::for_service makes them)".into());
    };
    let name = rustls::pki_types::ServerName::try_from(parsed.host.clone())
        .map_err(|_| format!("{:?} is not a host name TLS can check", parsed.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(refused)?;
    Ok(Connected::Tls(Box::new(ws)))
}

/// What a session works with besides its WebSocket.
#[derive(Clone, Copy)]
struct SessionParts<'a> {
    config: &'a RelayConfig,
    outbox: &'a Outbox,
    inbound: &'a dyn Inbound,
    deliveries: &'a mpsc::Sender<Queued>,
    status: &'a Status,
}

/// One connection: register, then write and read until it breaks or the
/// relay stops. Returns why it ended.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    parts: &SessionParts<'_>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    let SessionParts {
        config,
        outbox,
        inbound,
        deliveries,
        status,
    } = *parts;
    let (mut sink, mut stream) = ws.split();
    let register = Message {
        name: message::REGISTER.into(),
        sender: Some(config.role.clone()),
        payload: message::to_raw(&serde_json::json!({ "clientName": config.role })).unwrap_or(None),
        ..Message::new(message::REGISTER)
    };
    if let Err(e) = sink
        .send(tungstenite::Message::text(register.to_json()))
        .await
    {
        return format!("cannot register: {e}");
    }
    let n = status.registrations.fetch_add(1, Ordering::AcqRel) + 1;
    status.registered_tx.send_replace(n);
    inbound.registered(n == 1);

    let writer = async {
        let mut batch = Batch {
            outbox,
            frames: Vec::with_capacity(BATCH),
        };
        loop {
            outbox.take_batch(BATCH, &mut batch.frames).await;
            for frame in &batch.frames {
                if let Err(e) = sink.feed(tungstenite::Message::text(frame.as_str())).await {
                    return format!("cannot send: {e}");
                }
            }
            if let Err(e) = sink.flush().await {
                return format!("cannot send: {e}");
            }
            let n = batch.frames.len();
            batch.frames.clear();
            outbox.written(n);
        }
    };
    let reader = async {
        loop {
            // Reserve room for a delivery before reading, so a message that
            // was read is never lost when this future is dropped.
            let Ok(permit) = deliveries.reserve().await else {
                // Nobody takes deliveries any more: read and settle the rest.
                match stream.next().await {
                    Some(Ok(frame)) => {
                        if let Some(msg) = read_frame(&frame, inbound) {
                            tracing::warn!(
                                "dropped '{}': the service no longer takes messages",
                                msg.name
                            );
                        }
                        continue;
                    }
                    Some(Err(e)) => return e.to_string(),
                    None => return "the bus closed the connection".to_string(),
                }
            };
            match stream.next().await {
                Some(Ok(tungstenite::Message::Close(_))) => {
                    return "the bus closed the connection".to_string();
                }
                Some(Ok(frame)) => {
                    if let Some(msg) = read_frame(&frame, inbound) {
                        permit.send(Queued::plain(msg));
                    }
                }
                Some(Err(e)) => return e.to_string(),
                None => return "the bus closed the connection".to_string(),
            }
        }
    };
    tokio::select! {
        reason = writer => reason,
        reason = reader => reason,
        _ = stop.changed() => "stopping".to_string(),
    }
}

/// Reads one frame; protocol errors are logged and dropped.
fn read_frame(frame: &tungstenite::Message, inbound: &dyn Inbound) -> Option<Message> {
    let bytes: &[u8] = match frame {
        tungstenite::Message::Text(t) => t.as_bytes(),
        tungstenite::Message::Binary(b) => b,
        _ => return None,
    };
    match Message::parse(bytes) {
        Ok(msg) => match inbound.take(msg) {
            Take::Handle(msg) => Some(msg),
            Take::Settled | Take::Dropped | Take::Stopping => None,
        },
        Err(e) => {
            tracing::warn!("dropped a frame from ExoCom: {e}");
            None
        }
    }
}

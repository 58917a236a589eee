//! The listener: accepts TCP connections, runs the TLS handshake (when
//! configured) and the HTTP step of each, checks the door (the token, the
//! connection limit), hands WebSockets to the application (the bus or the
//! mock bus), and stops everything at once on shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection::{self, End, FrameHandler, Outbox};
use super::http::{self, HeadError, Target};
use super::limits::LimitCounters;
use super::tokens::{Admission, Tokens};

/// What the server serves: the bus, or the mock bus.
pub(crate) trait App: Send + Sync + 'static {
    /// The per-connection state.
    type Conn: FrameHandler;
    /// A new WebSocket connection; it writes into `outbox`. Dropping the
    /// returned value is how the application learns that it left.
    fn open(self: &Arc<Self>, outbox: Arc<Outbox>) -> Self::Conn;
    /// A new WebSocket connection that passed the door: `admitted` says
    /// what it may register as. By default the same as [`App::open`].
    fn open_admitted(self: &Arc<Self>, outbox: Arc<Outbox>, admitted: Admitted) -> Self::Conn {
        let _ = admitted;
        self.open(outbox)
    }
    /// The body of `GET /config.json`.
    fn config_json(&self) -> String;
    /// The body of `GET /metrics` (Prometheus text); `None`: HTTP 400.
    fn metrics(&self) -> Option<String> {
        None
    }
    /// Whether `GET /healthz` answers 200 (else 503).
    fn healthy(&self) -> bool {
        true
    }
    /// Logs a problem of the transport.
    fn warn(&self, line: String);
    /// The settings of each WebSocket.
    fn websocket_config(&self) -> WebSocketConfig;
    /// The capacity of each connection's outgoing queue.
    fn queue_capacity(&self) -> usize;
}

/// What the door of a server checks: TLS, tokens, the connection limit.
pub(crate) struct Door {
    /// Serve TLS with this acceptor (`None`: plain TCP).
    pub(crate) tls: Option<TlsAcceptor>,
    /// The tokens an upgrade must show (empty: open).
    pub(crate) tokens: Tokens,
    /// The most WebSocket connections open at once.
    pub(crate) max_connections: usize,
    /// What the door counts.
    pub(crate) counters: Arc<LimitCounters>,
}

impl Door {
    /// No TLS, no tokens, no limit (the mock bus).
    pub(crate) fn open() -> Door {
        Door {
            tls: None,
            tokens: Tokens::new(),
            max_connections: usize::MAX,
            counters: LimitCounters::new(),
        }
    }
}

/// A WebSocket connection that passed the door.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    /// What it may register as.
    pub(crate) roles: Admission,
    /// Where it comes from.
    pub(crate) peer: SocketAddr,
    /// The server's counters (for refusals the application decides on).
    pub(crate) counters: Arc<LimitCounters>,
}

/// Binds a listener (`SO_REUSEADDR` on Unix, so a new server can bind the
/// port of one that just stopped).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// A running listener and its connections.
pub(crate) struct Server {
    stop: watch::Sender<bool>,
    /// The original of the guards; dropped at shutdown.
    tracker: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    /// Ends (`None`) once every guard is dropped.
    done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// Held by every task of a server; the server has stopped when all are gone.
#[derive(Clone)]
pub(crate) struct TaskGuard(#[allow(dead_code)] mpsc::Sender<()>);

impl Server {
    /// Starts accepting on `listener` for `app`, with an open door.
    pub(crate) fn spawn<A: App>(listener: TcpListener, app: Arc<A>) -> Server {
        Server::spawn_with(listener, app, Door::open())
    }

    /// Starts accepting on `listener` for `app`, behind `door`.
    pub(crate) fn spawn_with<A: App>(listener: TcpListener, app: Arc<A>, door: Door) -> Server {
        let (stop, stop_rx) = watch::channel(false);
        let (tracker, done) = mpsc::channel(1);
        let guard = TaskGuard(tracker.clone());
        tokio::spawn(accept_loop(listener, app, Arc::new(door), stop_rx, guard));
        Server {
            stop,
            tracker: std::sync::Mutex::new(Some(tracker)),
            done: tokio::sync::Mutex::new(done),
        }
    }

    /// A receiver that turns true when the server stops.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A guard for another task that shutdown must wait for (`None` once
    /// the server is stopping).
    pub(crate) fn tracker(&self) -> Option<TaskGuard> {
        let tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        tracker.as_ref().map(|t| TaskGuard(t.clone()))
    }

    /// Tells every task to stop, without waiting.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops accepting, drops every connection, and waits (at most 10 s)
    /// until all tasks have ended and the listener is closed.
    pub(crate) async fn shutdown(&self) {
        self.signal_stop();
        drop(
            self.tracker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let mut done = self.done.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), done.recv()).await;
    }
}

async fn accept_loop<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    door: Arc<Door>,
    mut stop: watch::Receiver<bool>,
    guard: TaskGuard,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little.
                app.warn(format!("Error: cannot accept a connection: {e}"));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let door = door.clone();
        let guard = guard.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                () = serve_tcp(app, door, stream, peer) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    drop(listener);
    drop(guard);
}

/// The TLS handshake when the door has TLS, then [`serve`].
async fn serve_tcp<A: App>(app: Arc<A>, door: Arc<Door>, stream: TcpStream, peer: SocketAddr) {
    if door.tls.is_none() {
        return serve(app, &door, stream, peer).await;
    }
    // Boxed: the TLS state is large, and the task of a plain connection
    // must not carry room for it.
    Box::pin(serve_tls(app, door, stream, peer)).await;
}

async fn serve_tls<A: App>(app: Arc<A>, door: Arc<Door>, stream: TcpStream, peer: SocketAddr) {
    let Some(acceptor) = &door.tls else {
        return;
    };
    match tokio::time::timeout(http::HEAD_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve(app, &door, tls, peer).await,
        Ok(Err(e)) => {
            let n = door.counters.tls_failure();
            app.warn(format!(
                "Warning: TLS handshake with {peer} failed: {e} ({n} failed so far)"
            ));
        }
        Err(_) => {
            let n = door.counters.tls_failure();
            app.warn(format!(
                "Warning: TLS handshake with {peer} did not finish within {:?} ({n} failed so far)",
                http::HEAD_TIMEOUT
            ));
        }
    }
}

/// The HTTP step, then the WebSocket or a plain answer.
async fn serve<A: App, S: AsyncRead + AsyncWrite + Unpin>(
    app: Arc<A>,
    door: &Door,
    mut stream: S,
    peer: SocketAddr,
) {
    let head = tokio::time::timeout(http::HEAD_TIMEOUT, http::read_request(&mut stream)).await;
    let request = match head {
        Ok(Ok(request)) => request,
        Ok(Err(HeadError::TooLarge)) => {
            let _ = http::too_large(&mut stream).await;
            return;
        }
        Ok(Err(HeadError::Malformed(_))) => {
            let _ = http::bad_request(&mut stream).await;
            return;
        }
        Ok(Err(HeadError::Closed | HeadError::Io(_))) | Err(_) => return,
    };
    match request.target() {
        Target::Services => {
            let roles = match door
                .tokens
                .admit(request.token.as_deref(), request.role.as_deref())
            {
                Ok(roles) => roles,
                Err(refusal) => {
                    let n = door.counters.unauthorized();
                    app.warn(format!(
                        "Warning: Refused a connection from {peer}: {refusal} (HTTP 401; {n} refused so far)"
                    ));
                    let _ = http::unauthorized(&mut stream).await;
                    return;
                }
            };
            let Some(_slot) = door.counters.take_slot(door.max_connections) else {
                app.warn(format!(
                    "Warning: Refused a connection from {peer}: {} connections are open, the most allowed (HTTP 503; {} refused so far)",
                    door.max_connections,
                    door.counters.refused_too_many()
                ));
                let _ = http::unavailable(&mut stream).await;
                return;
            };
            let ws = match http::accept_websocket(stream, request, app.websocket_config()).await {
                Ok(ws) => ws,
                Err(e) => {
                    app.warn(format!("Error: WebSocket handshake failed: {e}"));
                    return;
                }
            };
            let outbox = Arc::new(Outbox::new(app.queue_capacity()));
            let admitted = Admitted {
                roles,
                peer,
                counters: door.counters.clone(),
            };
            let mut conn = app.open_admitted(outbox.clone(), admitted);
            let end = connection::run(ws, &outbox, &mut conn).await;
            outbox.close();
            if let End::TooLarge { size, max } = end {
                let n = door.counters.oversized();
                app.warn(format!(
                    "Error: Closed the connection of {} from {peer}: it sent a frame of {size} bytes, more than the limit of {max} bytes ({n} closed for this so far)",
                    conn.label()
                ));
            }
        }
        Target::ConfigJson => {
            let body = app.config_json();
            let _ = http::respond(&mut stream, "200 OK", "application/json", body.as_bytes()).await;
        }
        Target::Metrics => match app.metrics() {
            Some(body) => {
                let _ = http::respond(
                    &mut stream,
                    "200 OK",
                    super::metrics::CONTENT_TYPE,
                    body.as_bytes(),
                )
                .await;
            }
            None => {
                let _ = http::bad_request(&mut stream).await;
            }
        },
        Target::Healthz => {
            let (status, body) = if app.healthy() {
                ("200 OK", "ok\n")
            } else {
                ("503 Service Unavailable", "stopping\n")
            };
            let _ = http::respond(
                &mut stream,
                status,
                "text/plain; charset=utf-8",
                body.as_bytes(),
            )
            .await;
        }
        Target::Other => {
            let _ = http::bad_request(&mut stream).await;
        }
    }
}

//! The listener: accepts TCP connections, runs the HTTP step of each, hands
//! WebSockets to the application (the bus or the mock bus), and stops
//! everything at once on shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection::{self, FrameHandler, Outbox};
use super::http::{self, HeadError, Target};

/// What the server serves: the bus, or the mock bus.
pub(crate) trait App: Send + Sync + 'static {
    /// The per-connection state.
    type Conn: FrameHandler;
    /// A new WebSocket connection; it writes into `outbox`. Dropping the
    /// returned value is how the application learns that it left.
    fn open(self: &Arc<Self>, outbox: Arc<Outbox>) -> Self::Conn;
    /// The body of `GET /config.json`.
    fn config_json(&self) -> String;
    /// Logs a problem of the transport.
    fn warn(&self, line: String);
    /// The settings of each WebSocket.
    fn websocket_config(&self) -> WebSocketConfig;
    /// The capacity of each connection's outgoing queue.
    fn queue_capacity(&self) -> usize;
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
    /// Starts accepting on `listener` for `app`.
    pub(crate) fn spawn<A: App>(listener: TcpListener, app: Arc<A>) -> Server {
        let (stop, stop_rx) = watch::channel(false);
        let (tracker, done) = mpsc::channel(1);
        let guard = TaskGuard(tracker.clone());
        tokio::spawn(accept_loop(listener, app, stop_rx, guard));
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
    mut stop: watch::Receiver<bool>,
    guard: TaskGuard,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
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
        let guard = guard.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                () = serve(app, stream) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    drop(listener);
    drop(guard);
}

/// The HTTP step, then the WebSocket or a plain answer.
async fn serve<A: App>(app: Arc<A>, mut stream: TcpStream) {
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
            let ws = match http::accept_websocket(stream, request, app.websocket_config()).await {
                Ok(ws) => ws,
                Err(e) => {
                    app.warn(format!("Error: WebSocket handshake failed: {e}"));
                    return;
                }
            };
            let outbox = Arc::new(Outbox::new(app.queue_capacity()));
            let mut conn = app.open(outbox.clone());
            connection::run(ws, &outbox, &mut conn).await;
            outbox.close();
        }
        Target::ConfigJson => {
            let body = app.config_json();
            let _ = http::respond(&mut stream, "200 OK", "application/json", body.as_bytes()).await;
        }
        Target::Other => {
            let _ = http::bad_request(&mut stream).await;
        }
    }
}

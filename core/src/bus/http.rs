//! The HTTP step of a connection: read the request head, then either
//! upgrade to a WebSocket (the handshake is done here, by hand) or answer
//! with a plain response. The bus and the mock bus both use it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The largest request head accepted.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// The most header lines accepted.
const MAX_HEADERS: usize = 48;
/// How long a client may take to send its request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of a request head the bus looks at.
#[derive(Debug)]
pub(crate) struct Request {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The path without the query string.
    pub(crate) path: String,
    /// `Sec-WebSocket-Key`, when the request is a valid WebSocket upgrade.
    pub(crate) websocket_key: Option<String>,
    /// The token shown (`Authorization: Bearer`, `X-Exocom-Token` or
    /// `?token=`), see [`super::tokens`].
    pub(crate) token: Option<Vec<u8>>,
    /// The role named by `?role=`, if any.
    pub(crate) role: Option<String>,
    /// Bytes read past the head (the client may send frames right away).
    pub(crate) rest: Vec<u8>,
}

/// What the request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A WebSocket upgrade on `/services`.
    Services,
    /// `/config.json`.
    ConfigJson,
    /// `GET /metrics` (Prometheus text).
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// Anything else (HTTP 400).
    Other,
}

impl Request {
    /// What the request asks for.
    pub(crate) fn target(&self) -> Target {
        match self.path.as_str() {
            "/services" if self.method == "GET" && self.websocket_key.is_some() => Target::Services,
            "/config.json" => Target::ConfigJson,
            "/metrics" if self.method == "GET" => Target::Metrics,
            "/healthz" if self.method == "GET" => Target::Healthz,
            _ => Target::Other,
        }
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The client closed the connection first.
    Closed,
    /// The head is larger than [`MAX_HEAD`] or has too many headers.
    TooLarge,
    /// Not HTTP.
    Malformed(String),
    /// The socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => f.write_str("the client closed the connection"),
            HeadError::TooLarge => write!(f, "the request head is larger than {MAX_HEAD} bytes"),
            HeadError::Malformed(e) => write!(f, "not an HTTP request ({e})"),
            HeadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one request head.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Request, HeadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(1024.min(MAX_HEAD - buf.len()));
        }
        let n = stream.read_buf(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path.unwrap_or("");
                let target = target.split('#').next().unwrap_or("");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let (token, role) = super::tokens::shown(req.headers, query);
                let request = Request {
                    method: req.method.unwrap_or("").to_owned(),
                    path: path.to_owned(),
                    websocket_key: websocket_key(req.headers),
                    token,
                    role,
                    rest: buf[len..].to_vec(),
                };
                return Ok(request);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Sec-WebSocket-Key` of a valid upgrade request, else `None`.
fn websocket_key(headers: &[httparse::Header<'_>]) -> Option<String> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = find("upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| has_token(h.value, "upgrade"));
    let version = find("sec-websocket-version").is_some_and(|v| v.trim_ascii() == b"13");
    let key = find("sec-websocket-key")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match key {
        Some(k) if upgrade && connection && version => Some(k.to_owned()),
        _ => None,
    }
}

/// Completes the WebSocket handshake and wraps the stream.
pub(crate) async fn accept_websocket<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: Request,
    config: WebSocketConfig,
) -> std::io::Result<WebSocketStream<S>> {
    let key = request.websocket_key.unwrap_or_default();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(
        WebSocketStream::from_partially_read(stream, request.rest, Role::Server, Some(config))
            .await,
    )
}

/// Writes a complete response and closes the connection.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_with(stream, status, "", content_type, body).await
}

/// [`respond`] with extra header lines (each ending in `\r\n`).
pub(crate) async fn respond_with<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// Answers HTTP 400, as the Go ExoCom does.
pub(crate) async fn bad_request<S: AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    respond(
        stream,
        "400 Bad Request",
        "text/plain; charset=utf-8",
        b"Bad Request\n",
    )
    .await
}

/// Answers HTTP 431 for an oversized head.
pub(crate) async fn too_large<S: AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    respond(
        stream,
        "431 Request Header Fields Too Large",
        "text/plain; charset=utf-8",
        b"Request Header Fields Too Large\n",
    )
    .await
}

/// Answers HTTP 401 to an upgrade without a valid token.
pub(crate) async fn unauthorized<S: AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    respond_with(
        stream,
        "401 Unauthorized",
        "WWW-Authenticate: Bearer realm=\"exocom\"\r\n",
        "text/plain; charset=utf-8",
        b"Unauthorized: this bus needs the token of a role (Authorization: Bearer TOKEN, X-Exocom-Token: TOKEN, or ?token=TOKEN)\n",
    )
    .await
}

/// Answers HTTP 503 to an upgrade over the connection limit.
pub(crate) async fn unavailable<S: AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    respond_with(
        stream,
        "503 Service Unavailable",
        "Retry-After: 1\r\n",
        "text/plain; charset=utf-8",
        b"Service Unavailable: too many connections\n",
    )
    .await
}

/// The WebSocket settings for many mostly idle connections: a small read
/// buffer (it is allocated eagerly per connection), writes gathered up to
/// 16 KiB before they hit the socket (a flush always writes everything).
pub(crate) fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

//! One HTTP/1.1 GET against a local server (a service's `/metrics`), each
//! step bounded in time.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The bound of connecting and of reading the whole answer.
const HTTP_WAIT: Duration = Duration::from_secs(10);

/// An HTTP answer.
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body, as text.
    pub body: String,
}

/// `GET path` on `addr` (the server closes the connection after it).
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut stream = timeout(HTTP_WAIT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} within {HTTP_WAIT:?}"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send the request");
    let mut out = Vec::new();
    timeout(HTTP_WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("an answer from {addr}{path} within {HTTP_WAIT:?}"))
        .expect("read the answer");
    let text = String::from_utf8(out).expect("an answer in UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    Answer {
        code,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Scrapes `addr`'s `/metrics` until each of `lines` is one of its lines
/// (at most `wait`); the last scrape either way.
pub async fn metrics_with(addr: SocketAddr, lines: &[&str], wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let answer = get(addr, "/metrics").await;
        assert_eq!(answer.code, 200, "GET /metrics: {}", answer.body);
        let body = answer.body;
        if lines.iter().all(|l| has_line(&body, l)) || tokio::time::Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `text` has `line` as one of its lines.
pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

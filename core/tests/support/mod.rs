//! Helpers shared by the bus's integration tests: a raw WebSocket client
//! that speaks the protocol frame by frame.

#![allow(dead_code)]

pub mod http;

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test service connection.
pub struct Client {
    pub sink: SplitSink<Ws, WsMessage>,
    pub stream: SplitStream<Ws>,
    pub role: String,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let url = format!("ws://127.0.0.1:{port}/services");
        let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let (sink, stream) = ws.split();
        Client {
            sink,
            stream,
            role: String::new(),
        }
    }

    /// Connects and registers as `role`.
    pub async fn register(port: u16, role: &str) -> Client {
        let mut c = Client::connect(port).await;
        c.register_as(role).await;
        c
    }

    pub async fn register_as(&mut self, role: &str) {
        self.role = role.to_owned();
        self.send_raw(
            json!({"name": "exocom.register-service", "sender": role, "id": "r", "activityId": "r"})
                .to_string(),
        )
        .await;
    }

    pub async fn send_raw(&mut self, text: String) {
        self.sink
            .send(WsMessage::text(text))
            .await
            .expect("send a frame");
    }

    /// Sends a message as this client's role.
    pub async fn send(&mut self, name: &str, activity: &str, payload: Value) {
        let frame = json!({
            "name": name,
            "id": format!("{name}-{activity}"),
            "activityId": activity,
            "sender": self.role,
            "payload": payload,
        });
        self.send_raw(frame.to_string()).await;
    }

    /// The next frame, within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match timeout(wait, self.stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    return Some(serde_json::from_str(&t).expect("the bus writes JSON"));
                }
                Ok(Some(Ok(WsMessage::Binary(_) | WsMessage::Close(_)))) | Ok(None) => return None,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Err(_) => return None,
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT).await.expect("a frame in time")
    }

    pub async fn expect_nothing(&mut self) {
        if let Some(f) = self.recv_within(Duration::from_millis(200)).await {
            panic!("'{}' received {f} but expected nothing", self.role);
        }
    }
}

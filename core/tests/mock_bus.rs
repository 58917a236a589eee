//! Every method of `exoservice::testing::MockBus`, with a raw
//! tokio-tungstenite client playing the service.

use std::time::Duration;

use exoservice::ExoError;
use exoservice::message::{Message, raw_from_text};
use exoservice::testing::MockBus;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw service connection.
struct Service {
    sink: SplitSink<Ws, WsMessage>,
    stream: SplitStream<Ws>,
}

impl Service {
    async fn connect(bus: &MockBus) -> Service {
        let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(bus.url()))
            .await
            .expect("connect in time")
            .expect("connect");
        let (sink, stream) = ws.split();
        Service { sink, stream }
    }

    async fn register(bus: &MockBus, role: &str) -> Service {
        let mut s = Service::connect(bus).await;
        s.send(json!({"name": "exocom.register-service", "sender": role, "id": "r1", "activityId": "r2", "payload": {"clientName": role}}))
            .await;
        bus.wait_for_registration(role, WAIT)
            .await
            .expect("registered");
        s
    }

    async fn send(&mut self, frame: Value) {
        self.sink
            .send(WsMessage::text(frame.to_string()))
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> Value {
        loop {
            match timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time")
            {
                Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }

    async fn expect_nothing(&mut self) {
        if let Ok(Some(Ok(f))) = timeout(Duration::from_millis(200), self.stream.next()).await {
            panic!("received {f:?} but expected nothing");
        }
    }
}

#[tokio::test]
async fn records_registrations() {
    let bus = MockBus::start().await.unwrap();
    assert_ne!(bus.port(), 0);
    assert_eq!(bus.url(), format!("ws://127.0.0.1:{}/services", bus.port()));
    assert!(bus.roles().is_empty());
    let _a = Service::register(&bus, "ping").await;
    let _b = Service::register(&bus, "ping").await;
    let c = Service::register(&bus, "web").await;
    let deadline = Instant::now() + WAIT;
    while bus.instances("ping") < 2 {
        assert!(
            Instant::now() < deadline,
            "the second instance did not register"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.roles(), ["ping", "web"]);
    assert_eq!(bus.instances("ping"), 2);
    assert_eq!(bus.instances("nobody"), 0);
    // Registrations are not messages.
    assert!(bus.received().is_empty());
    // A registration that happened before the call counts at once.
    bus.wait_for_registration("web", Duration::from_millis(1))
        .await
        .unwrap();
    // Leaving removes the instance.
    drop(c);
    let deadline = Instant::now() + WAIT;
    while bus.instances("web") > 0 {
        assert!(Instant::now() < deadline, "'web' did not leave");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.roles(), ["ping"]);
}

#[tokio::test]
async fn waiting_for_a_registration_times_out() {
    let bus = MockBus::start().await.unwrap();
    let t0 = Instant::now();
    let err = bus
        .wait_for_registration("ghost", Duration::from_millis(100))
        .await
        .expect_err("nobody registers");
    assert!(matches!(err, ExoError::Timeout { .. }), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(100));
    // A registration while waiting ends the wait.
    let waiter = {
        let port = bus.port();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let url = format!("ws://127.0.0.1:{port}/services");
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(WsMessage::text(
                r#"{"name":"exocom.register-service","sender":"late","id":"1","activityId":"2"}"#,
            ))
            .await
            .unwrap();
            ws
        })
    };
    bus.wait_for_registration("late", WAIT).await.unwrap();
    drop(waiter.await.unwrap());
}

#[tokio::test]
async fn sends_to_a_service() {
    let bus = MockBus::start().await.unwrap();
    let mut ping = Service::register(&bus, "ping").await;
    let sent = bus
        .send_to_service("ping", "ping", json!({"n": 1, "text": "grüße"}))
        .await
        .unwrap();
    let got = ping.recv().await;
    assert_eq!(got["name"], "ping");
    assert_eq!(got["payload"], json!({"n": 1, "text": "grüße"}));
    assert_eq!(got["id"].as_str(), sent.id.as_deref());
    assert_eq!(got["activityId"].as_str(), sent.activity_id.as_deref());
    assert!(got["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(sent.payload_value(), json!({"n": 1, "text": "grüße"}));
    // Fresh ids every time.
    let again = bus
        .send_to_service("ping", "ping", Value::Null)
        .await
        .unwrap();
    assert_ne!(again.activity_id, sent.activity_id);
    let got = ping.recv().await;
    assert!(got.get("payload").is_none(), "{got}");
    // A message with chosen fields.
    let msg = Message {
        auth: raw_from_text(r#"{"user":"u1"}"#).unwrap(),
        is_security: true,
        activity_id: Some("chosen".into()),
        ..Message::new("ping")
    };
    let sent = bus.send_message("ping", msg).await.unwrap();
    assert_eq!(sent.activity(), "chosen");
    let got = ping.recv().await;
    assert_eq!(got["auth"], json!({"user": "u1"}));
    assert_eq!(got["isSecurity"], true);
    assert_eq!(got["activityId"], "chosen");
}

#[tokio::test]
async fn sending_to_a_role_nobody_registered_fails() {
    let bus = MockBus::start().await.unwrap();
    let _unregistered = Service::connect(&bus).await;
    let t0 = Instant::now();
    let err = bus
        .send_to_service("ping", "ping", json!(1))
        .await
        .expect_err("no service");
    assert!(t0.elapsed() >= MockBus::REGISTRATION_WAIT);
    assert!(
        err.to_string()
            .contains("no service is registered as 'ping'"),
        "{err}"
    );
}

#[tokio::test]
async fn sending_waits_for_a_service_that_is_registering() {
    let bus = MockBus::start().await.unwrap();
    // Register without waiting for the mock to have seen it.
    let mut svc = Service::connect(&bus).await;
    svc.send(
        json!({"name": "exocom.register-service", "sender": "ping", "id": "1", "activityId": "2"}),
    )
    .await;
    bus.send_to_service("ping", "ping", json!(1)).await.unwrap();
    assert_eq!(svc.recv().await["payload"], 1);
}

#[tokio::test]
async fn the_newest_instance_of_a_role_gets_the_message() {
    let bus = MockBus::start().await.unwrap();
    let mut old = Service::register(&bus, "ping").await;
    let mut new = Service::register(&bus, "ping").await;
    let deadline = Instant::now() + WAIT;
    while bus.instances("ping") < 2 {
        assert!(
            Instant::now() < deadline,
            "the second instance did not register"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bus.send_to_service("ping", "ping", json!(1)).await.unwrap();
    assert_eq!(new.recv().await["payload"], 1);
    old.expect_nothing().await;
}

#[tokio::test]
async fn waits_for_messages_received_before_and_after_the_call() {
    let bus = MockBus::start().await.unwrap();
    let mut svc = Service::register(&bus, "ping").await;
    svc.send(
        json!({"name": "pong", "id": "1", "activityId": "a1", "sender": "ping", "payload": 1}),
    )
    .await;
    svc.send(json!({"name": "other", "id": "2", "activityId": "a2"}))
        .await;
    svc.send(json!({"name": "pong", "id": "3", "activityId": "a3", "payload": 3}))
        .await;
    // Both pongs, in arrival order, each once.
    let first = bus.wait_for("pong", WAIT).await.unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(first.sender.as_deref(), Some("ping"));
    assert_eq!(first.payload_value(), json!(1));
    let second = bus.wait_for("pong", WAIT).await.unwrap();
    assert_eq!(second.id.as_deref(), Some("3"));
    let err = bus
        .wait_for("pong", Duration::from_millis(100))
        .await
        .expect_err("no third pong");
    assert!(matches!(err, ExoError::Timeout { .. }), "{err}");
    // One that arrives while waiting.
    let waiter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        svc.send(json!({"name": "pong", "id": "4", "activityId": "a4"}))
            .await;
        svc
    });
    let fourth = bus.wait_for("pong", WAIT).await.unwrap();
    assert_eq!(fourth.id.as_deref(), Some("4"));
    let _svc = waiter.await.unwrap();
    // received() keeps everything, taken or not, in order.
    let names: Vec<String> = bus.received().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["pong", "other", "pong", "pong"]);
    assert_eq!(
        bus.wait_for("other", WAIT).await.unwrap().id.as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn reset_forgets_messages_and_replies() {
    let bus = MockBus::start().await.unwrap();
    let mut svc = Service::register(&bus, "ping").await;
    bus.mock_reply("ping", "pong", json!(null));
    svc.send(json!({"name": "x", "id": "1", "activityId": "1"}))
        .await;
    bus.wait_for("x", WAIT).await.unwrap();
    svc.send(json!({"name": "y", "id": "2", "activityId": "2"}))
        .await;
    let deadline = Instant::now() + WAIT;
    while bus.received().len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bus.reset();
    assert!(bus.received().is_empty());
    assert!(bus.wait_for("y", Duration::from_millis(50)).await.is_err());
    // The reply is gone too; the registration stays.
    svc.send(json!({"name": "ping", "id": "3", "activityId": "3"}))
        .await;
    bus.wait_for("ping", WAIT).await.unwrap();
    svc.expect_nothing().await;
    assert_eq!(bus.roles(), ["ping"]);
}

#[tokio::test]
async fn answers_requests_with_a_mock_reply() {
    let bus = MockBus::start().await.unwrap();
    let mut svc = Service::register(&bus, "web").await;
    bus.mock_reply("users.create", "users.created", json!({"id": 7}));
    svc.send(json!({
        "name": "users.create", "id": "r1", "activityId": "act-9", "sender": "web",
        "payload": {"name": "Jean"}, "auth": "token", "isSecurity": true
    }))
    .await;
    let reply = svc.recv().await;
    assert_eq!(reply["name"], "users.created");
    assert_eq!(reply["activityId"], "act-9");
    assert_eq!(reply["payload"], json!({"id": 7}));
    assert_eq!(reply["auth"], "token");
    assert_eq!(reply["isSecurity"], true);
    assert_ne!(reply["id"], "r1");
    // The request is recorded as usual.
    let request = bus.wait_for("users.create", WAIT).await.unwrap();
    assert_eq!(request.payload_value(), json!({"name": "Jean"}));
    // Replacing the reply.
    bus.mock_reply(
        "users.create",
        "users.not-created",
        json!({"error": "taken"}),
    );
    svc.send(json!({"name": "users.create", "id": "r2", "activityId": "act-10"}))
        .await;
    let reply = svc.recv().await;
    assert_eq!(reply["name"], "users.not-created");
    assert_eq!(reply["activityId"], "act-10");
}

#[tokio::test]
async fn garbage_and_binary_frames() {
    let bus = MockBus::start().await.unwrap();
    let mut svc = Service::register(&bus, "ping").await;
    svc.sink
        .send(WsMessage::text("this is not json"))
        .await
        .unwrap();
    svc.sink
        .send(WsMessage::binary(
            br#"{"name":"bin","id":"1","activityId":"1"}"#.to_vec(),
        ))
        .await
        .unwrap();
    bus.wait_for("bin", WAIT).await.unwrap();
    assert_eq!(bus.received().len(), 1);
    // Still connected.
    bus.send_to_service("ping", "ping", json!(1)).await.unwrap();
    assert_eq!(svc.recv().await["name"], "ping");
}

#[tokio::test]
async fn answers_config_json() {
    let bus = MockBus::start().await.unwrap();
    let _svc = Service::register(&bus, "ping").await;
    let mut stream = TcpStream::connect(("127.0.0.1", bus.port())).await.unwrap();
    stream
        .write_all(b"GET /config.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"clients": [{"role": "ping", "instances": 1}], "routes": {}})
    );
}

#[tokio::test]
async fn shuts_down_and_comes_back_on_the_same_port() {
    let bus = MockBus::start().await.unwrap();
    let port = bus.port();
    let mut svc = Service::register(&bus, "ping").await;
    bus.shutdown().await;
    let ended = timeout(WAIT, async {
        loop {
            match svc.stream.next().await {
                Some(Ok(WsMessage::Close(_))) => return "close frame",
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return "dropped",
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, "dropped");
    let bus = MockBus::start_on(port).await.unwrap();
    assert_eq!(bus.port(), port);
    let _svc = Service::register(&bus, "ping").await;
    bus.shutdown().await;
}

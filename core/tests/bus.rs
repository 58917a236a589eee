//! Behaviour of the bus beyond the routing vectors: HTTP, ports, restarts,
//! registration edge cases, the startup grace period, bounded memory, the
//! security adapter's corners. Real WebSockets on 127.0.0.1, free ports,
//! every wait bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::bus::{Bus, BusConfig, BusError, BusHandle, LogSink};
use exoservice::routes::Routes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;

mod support;

use support::{Client, WAIT};

/// Collects every log line of a bus.
fn collect_logs(bus: &BusHandle) -> Arc<Mutex<Vec<String>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut rx = bus.subscribe_logs();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(line) = rx.recv().await {
            sink.lock().unwrap().push(line);
        }
    });
    logs
}

async fn wait_log(logs: &Arc<Mutex<Vec<String>>>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = logs.lock().unwrap().iter().find(|l| pred(l)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such log line; got {:#?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the bus lists exactly these clients.
async fn wait_clients(bus: &BusHandle, want: &[(&str, usize)]) {
    let want: Vec<(String, usize)> = want.iter().map(|(r, n)| (r.to_string(), *n)).collect();
    let deadline = Instant::now() + WAIT;
    while bus.clients() != want {
        assert!(
            Instant::now() < deadline,
            "clients {:?}, expected {want:?}",
            bus.clients()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn routes(json: &str) -> Routes {
    Routes::from_json(json).expect("valid routes")
}

const PING: &str = r#"{"tester":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]}}"#;

async fn start(config: BusConfig) -> BusHandle {
    Bus::start(config.with_log(LogSink::Discard))
        .await
        .expect("the bus starts")
}

/// One plain HTTP request; returns the status line and the body.
async fn http(port: u16, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn config_json_lists_no_clients_as_an_empty_list() {
    let bus = start(BusConfig::new(routes(
        r#"{"users":{"sends":["a"]},"web":{}}"#,
    )))
    .await;
    let (status, body) = http(
        bus.port(),
        b"GET /config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        config,
        json!({
            "clients": [],
            "routes": {
                "users": {"receives": [], "sends": ["a"], "translations": []},
                "web": {"receives": [], "sends": [], "translations": []},
            }
        })
    );
    assert_eq!(
        serde_json::from_str::<Value>(&bus.config_json()).unwrap(),
        config
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn other_requests_get_http_400() {
    let bus = start(BusConfig::new(Routes::default())).await;
    let port = bus.port();
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /services HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /services HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /services HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"this is not http\r\n\r\n",
    ] {
        let (status, _) = http(port, request).await;
        assert_eq!(
            status,
            "HTTP/1.1 400 Bad Request",
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    // An oversized head is refused, and the bus stays up.
    let mut big = b"GET /config.json HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let (status, _) = http(port, &big).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let (status, _) = http(port, b"GET /config.json?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    bus.shutdown().await;
}

#[tokio::test]
async fn a_taken_port_is_an_error_that_says_so() {
    let first = start(BusConfig::new(Routes::default())).await;
    let port = first.port();
    let err = Bus::start(
        BusConfig::new(Routes::default())
            .with_port(port)
            .with_log(LogSink::Discard),
    )
    .await
    .expect_err("the port is taken");
    assert!(
        matches!(err, BusError::PortInUse { port: p } if p == port),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("port {port} is already in use"));
    first.shutdown().await;
}

#[tokio::test]
async fn registering_again_under_another_role_leaves_no_ghost() {
    let bus = start(BusConfig::new(routes(PING)).with_startup_grace(Duration::ZERO)).await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut conn = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    conn.register_as("tester").await;
    wait_clients(&bus, &[("tester", 2)]).await;
    // No 'ping' instance is left to swallow the message.
    tester.send("ping", "a1", json!(1)).await;
    conn.expect_nothing().await;
    // A real ping instance gets it.
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 2)]).await;
    tester.send("ping", "a2", json!(2)).await;
    assert_eq!(ping.recv().await["activityId"], "a2");
    bus.shutdown().await;
}

#[tokio::test]
async fn unknown_roles_may_register_with_a_warning() {
    let bus = start(BusConfig::new(routes(PING))).await;
    let logs = collect_logs(&bus);
    let mut stranger = Client::register(bus.port(), "stranger").await;
    wait_clients(&bus, &[("stranger", 1)]).await;
    wait_log(&logs, |l| {
        l.contains("'stranger' registered but the routes do not list it")
    })
    .await;
    stranger.send("ping", "a1", json!(null)).await;
    wait_log(&logs, |l| {
        l == "Warning: Service 'stranger' is not allowed to broadcast the message 'ping'"
    })
    .await;
    drop(stranger);
    wait_clients(&bus, &[]).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn frames_are_completed_and_status_ok_is_consumed() {
    let bus = start(BusConfig::new(routes(PING))).await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    // No sender, no id, no activityId: the bus fills them in.
    tester.send_raw(r#"{"name":"ping"}"#.into()).await;
    let got = ping.recv().await;
    assert_eq!(got["sender"], "tester");
    assert_eq!(got["id"].as_str().map(str::len), Some(36), "{got}");
    assert_eq!(got["activityId"].as_str().map(str::len), Some(36), "{got}");
    let stamp = got["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() >= 20, "{stamp}");
    // __status-ok goes nowhere and is not a warning.
    ping.send_raw(r#"{"name":"__status-ok","id":"s","activityId":"s"}"#.into())
        .await;
    tester.expect_nothing().await;
    assert!(
        !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("__status-ok")),
        "{:?}",
        logs.lock().unwrap()
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn a_binary_frame_holding_json_is_routed() {
    let bus = start(BusConfig::new(routes(PING))).await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    let frame = json!({"name": "ping", "id": "b1", "activityId": "ab", "payload": {"bin": true}});
    tester
        .sink
        .send(WsMessage::binary(frame.to_string().into_bytes()))
        .await
        .unwrap();
    let got = ping.recv().await;
    assert_eq!(got["id"], "b1");
    assert_eq!(got["payload"], json!({"bin": true}));
    bus.shutdown().await;
}

#[tokio::test]
async fn payloads_pass_through_unchanged_and_in_order() {
    let bus = start(BusConfig::new(routes(PING))).await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    let raw = r#"{"z":1,"a":[1,2,{"big":12345678901234567890123}],"s":"caf\u00e9 \"q\""}"#;
    tester
        .send_raw(format!(
            r#"{{"name":"ping","id":"p","activityId":"p","payload":{raw}}}"#
        ))
        .await;
    let got = loop {
        if let Some(Ok(WsMessage::Text(t))) = timeout(WAIT, ping.stream.next()).await.unwrap() {
            break t.as_str().to_owned();
        }
    };
    assert!(got.contains(&format!(r#""payload":{raw}"#)), "{got}");
    for i in 0..2000 {
        tester.send("ping", &format!("o{i}"), json!(i)).await;
    }
    for i in 0..2000 {
        assert_eq!(ping.recv().await["payload"], json!(i));
    }
    bus.shutdown().await;
}

#[tokio::test]
async fn the_startup_grace_holds_copies_for_late_roles() {
    let grace = Duration::from_millis(1500);
    let bus = start(BusConfig::new(routes(PING)).with_startup_grace(grace)).await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    wait_clients(&bus, &[("tester", 1)]).await;
    for i in 0..5 {
        tester.send("ping", &format!("g{i}"), json!(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ping = Client::register(port, "ping").await;
    for i in 0..5 {
        let got = ping.recv().await;
        assert_eq!(got["activityId"], format!("g{i}"));
    }
    wait_log(&logs, |l| {
        l == "Delivered 5 messages held for 'ping' since the bus started"
    })
    .await;
    // The activity sticks to the instance that got the held copy.
    ping.send("pong", "g0", json!(null)).await;
    assert_eq!(tester.recv().await["name"], "pong");
    bus.shutdown().await;
}

#[tokio::test]
async fn held_copies_are_dropped_when_the_grace_ends() {
    let grace = Duration::from_millis(300);
    let bus = start(BusConfig::new(routes(PING)).with_startup_grace(grace)).await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    wait_clients(&bus, &[("tester", 1)]).await;
    for i in 0..3 {
        tester.send("ping", &format!("d{i}"), json!(i)).await;
    }
    wait_log(&logs, |l| {
        l.starts_with("Warning: Dropped 3 messages held for 'ping': no instance registered within the startup grace period")
    })
    .await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    ping.expect_nothing().await;
    // After the grace, a role without instance simply misses the copy.
    drop(ping);
    wait_clients(&bus, &[("tester", 1)]).await;
    tester.send("ping", "late", json!(null)).await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    ping.expect_nothing().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn held_copies_are_bounded_per_role() {
    let bus = start(
        BusConfig::new(routes(PING))
            .with_startup_grace(Duration::from_secs(30))
            .with_held_per_role(10),
    )
    .await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    wait_clients(&bus, &[("tester", 1)]).await;
    for i in 0..25 {
        tester.send("ping", &format!("h{i}"), json!(i)).await;
    }
    wait_log(&logs, |l| l.contains("Too many messages held for 'ping'")).await;
    let mut ping = Client::register(port, "ping").await;
    for i in 15..25 {
        assert_eq!(ping.recv().await["payload"], json!(i));
    }
    ping.expect_nothing().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn the_activity_table_stays_bounded() {
    let bus = start(
        BusConfig::new(routes(PING))
            .with_activity_cap(100)
            .with_startup_grace(Duration::ZERO),
    )
    .await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    for i in 0..1000 {
        tester.send("ping", &format!("cap{i}"), json!(i)).await;
    }
    for _ in 0..1000 {
        ping.recv().await;
        assert!(bus.activity_count() <= 100, "{}", bus.activity_count());
    }
    assert!(bus.activity_count() > 0);
    // The newest activity still sticks.
    ping.send("pong", "cap999", json!(null)).await;
    assert_eq!(tester.recv().await["activityId"], "cap999");
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_copies_without_slowing_others_down() {
    const N: usize = 800;
    let bus = start(
        BusConfig::new(routes(
            r#"{"tester":{"sends":["ping"]},"ping":{"receives":["ping"]},"log":{"receives":["ping"]}}"#,
        ))
        .with_queue_capacity(256),
    )
    .await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    // 'ping' never reads: its socket buffers fill up, then its queue.
    let _ping = Client::register(port, "ping").await;
    let mut log = Client::register(port, "log").await;
    wait_clients(&bus, &[("log", 1), ("ping", 1), ("tester", 1)]).await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            match log.recv_within(WAIT).await {
                Some(_) => n += 1,
                None => break,
            }
        }
        n
    });
    // 800 messages of 64 KiB: more than the socket buffers of 'ping' hold.
    let payload = json!("x".repeat(64 * 1024));
    for i in 0..N {
        tester.send("ping", &format!("q{i}"), payload.clone()).await;
    }
    assert_eq!(reader.await.unwrap(), N, "'log' must get every copy");
    wait_log(&logs, |l| {
        l.starts_with("Warning: Dropped 'ping' for 'ping': the instance's queue is full")
    })
    .await;
    bus.shutdown().await;
}

#[tokio::test]
async fn unauthorized_for_an_unknown_activity_is_only_logged() {
    let bus = start(BusConfig::new(routes(
        r#"{"web":{"sends":["create user"],"receives":["message unauthorized"]},"users":{"receives":["create user"]},"security":{}}"#,
    )))
    .await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut sec = Client::register(port, "security").await;
    let mut web = Client::register(port, "web").await;
    let mut users = Client::register(port, "users").await;
    wait_clients(&bus, &[("security", 1), ("users", 1), ("web", 1)]).await;
    sec.send("message unauthorized", "nobody-waits", json!(null))
        .await;
    sec.send("message authorized", "nobody-waits-either", json!(null))
        .await;
    wait_log(&logs, |l| {
        l.contains("'message unauthorized' for an unknown activityId 'nobody-waits'")
    })
    .await;
    wait_log(&logs, |l| {
        l.contains("'message authorized' for an unknown activityId 'nobody-waits-either'")
    })
    .await;
    // Still routing: authorize and deliver.
    web.send("create user", "u1", json!({"name": "x"})).await;
    let ask = sec.recv().await;
    assert_eq!(ask["name"], "authorize message");
    assert_eq!(ask["payload"]["sender"], "web");
    let verdict = ask["activityId"].as_str().unwrap().to_owned();
    sec.send("message authorized", &verdict, json!(null)).await;
    let got = users.recv().await;
    assert_eq!(got["name"], "create user");
    assert_eq!(got["activityId"], "u1");
    web.expect_nothing().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_security_request_gets_its_answer_wrapped() {
    let bus = start(BusConfig::new(routes(
        r#"{"users":{"receives":["users get"],"sends":["users details"]},"security":{}}"#,
    )))
    .await;
    let port = bus.port();
    let mut sec = Client::register(port, "security").await;
    let mut users = Client::register(port, "users").await;
    wait_clients(&bus, &[("security", 1), ("users", 1)]).await;
    let inner =
        json!({"name": "users get", "id": "i1", "activityId": "inner-1", "payload": {"id": 7}});
    sec.send("security request", "req-1", inner).await;
    let got = users.recv().await;
    assert_eq!(got["name"], "users get");
    assert_eq!(got["activityId"], "inner-1");
    assert_eq!(got["payload"], json!({"id": 7}));
    users
        .send("users details", "inner-1", json!({"role": "admin"}))
        .await;
    let response = sec.recv().await;
    assert_eq!(response["name"], "security response");
    assert_eq!(response["activityId"], "req-1");
    assert_eq!(response["isSecurity"], true);
    assert_eq!(response["payload"]["name"], "users details");
    assert_eq!(response["payload"]["payload"], json!({"role": "admin"}));
    assert_eq!(response["payload"]["sender"], "users");
    bus.shutdown().await;
}

#[tokio::test]
async fn shutdown_frees_the_port_for_a_new_bus() {
    let bus = start(BusConfig::new(routes(PING))).await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    // Someone keeps sending while the bus goes away.
    let sender = tokio::spawn(async move {
        for i in 0.. {
            let frame = json!({"name": "ping", "id": "k", "activityId": format!("k{i}")});
            if tester
                .sink
                .send(WsMessage::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.shutdown().await;
    // The connection ends without a close frame.
    let end = timeout(WAIT, async {
        loop {
            match ping.stream.next().await {
                Some(Ok(WsMessage::Close(_))) => return "close frame",
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return "dropped",
            }
        }
    })
    .await
    .expect("the connection ends");
    assert_eq!(end, "dropped");
    timeout(WAIT, sender).await.unwrap().unwrap();
    // A new bus takes the same port at once.
    let bus = Bus::start(
        BusConfig::new(routes(PING))
            .with_port(port)
            .with_log(LogSink::Discard),
    )
    .await
    .expect("the port is free again");
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    tester.send("ping", "again", json!(null)).await;
    assert_eq!(ping.recv().await["activityId"], "again");
    bus.shutdown().await;
    // And once more, while nobody is connected.
    let bus = Bus::start(
        BusConfig::new(routes(PING))
            .with_port(port)
            .with_log(LogSink::Discard),
    )
    .await
    .expect("the port is free again");
    bus.shutdown().await;
}

#[tokio::test]
async fn route_lines_can_be_turned_off() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let bus = Bus::start(
        BusConfig::new(routes(PING))
            .with_route_logging(false)
            .with_log(LogSink::Callback(Arc::new(move |l: &str| {
                sink.lock().unwrap().push(l.to_owned())
            }))),
    )
    .await
    .unwrap();
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    tester.send("ping", "quiet", json!(null)).await;
    ping.recv().await;
    tester.send("undeclared", "quiet", json!(null)).await;
    let deadline = Instant::now() + WAIT;
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("undeclared"))
    {
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l == "'tester' registered"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("--[")), "{lines:?}");
    bus.shutdown().await;
}

#[tokio::test]
async fn optional_roles_are_neither_held_for_nor_warned_about() {
    let routes = r#"{"tester":{"sends":["ping"]},"ping":{"receives":["ping"]},"tool":{"receives":["ping"]}}"#;
    let bus = start(
        BusConfig::new(Routes::from_json(routes).unwrap())
            .with_startup_grace(Duration::from_secs(5))
            .with_optional_roles(["tool"]),
    )
    .await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1)]).await;
    tester.send("ping", "o1", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "o1");
    // The tool connects later, within the grace period: nothing was held for it.
    let mut tool = Client::register(port, "tool").await;
    wait_clients(&bus, &[("ping", 1), ("tester", 1), ("tool", 1)]).await;
    tool.expect_nothing().await;
    // Once connected it gets its copies like any role.
    tester.send("ping", "o2", json!(2)).await;
    assert_eq!(tool.recv().await["activityId"], "o2");
    assert_eq!(ping.recv().await["activityId"], "o2");
    let logs = logs.lock().unwrap().clone();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("'tool'") && l.contains("No instance")),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l == "tester  --[ ping ]->  tool"),
        "{logs:#?}"
    );
    bus.shutdown().await;
}

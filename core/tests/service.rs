//! The service side from the outside: real buses on loopback, real
//! WebSockets, a real child process for the signal test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exoservice::bus::{Bus, BusConfig, BusHandle};
use exoservice::config::ServiceConfig;
use exoservice::routes::Routes;
use exoservice::testing::MockBus;
use exoservice::{Ctx, Engine, ExoError, Message, Service};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const PING_ROUTES: &str = r#"{
  "tester": {"sends": ["ping", "slow"], "receives": ["pong", "slowed"]},
  "ping": {"receives": ["ping", "slow"], "sends": ["pong", "slowed"]}
}"#;

async fn start_bus(routes: &str, port: u16) -> BusHandle {
    let routes = Routes::from_json(routes).expect("routes");
    let mut config = BusConfig::new(routes);
    config.bind = ([127, 0, 0, 1], port).into();
    Bus::start(config).await.expect("bus starts")
}

fn ping_config(port: u16) -> ServiceConfig {
    ServiceConfig::from_parts("ping", ["ping", "slow"], ["pong", "slowed"])
        .with_exocom("127.0.0.1", port)
}

fn tester(port: u16) -> Engine {
    let engine = Engine::new(
        ServiceConfig::from_parts("tester", ["pong", "slowed"], ["ping", "slow"])
            .with_exocom("127.0.0.1", port),
    );
    engine.announce_online(false);
    engine.connect().expect("connect");
    engine
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket client registered as `role`, to see frames as they are.
async fn raw_client(port: u16, role: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/services"))
        .await
        .expect("connect");
    let reg =
        json!({"name": "exocom.register-service", "sender": role, "id": "r1", "activityId": "r2"});
    ws.send(tungstenite::Message::text(reg.to_string()))
        .await
        .expect("register");
    ws
}

async fn next_json(ws: &mut Ws, timeout: Duration) -> Value {
    loop {
        let frame = tokio::time::timeout(timeout, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let tungstenite::Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).expect("json frame");
        }
    }
}

async fn online(service: &exoservice::RunningService) {
    assert!(
        service.wait_online(Duration::from_secs(5)).await,
        "service registers"
    );
}

#[tokio::test]
async fn reply_carries_activity_auth_and_is_security() {
    let bus = start_bus(PING_ROUTES, 0).await;
    let svc = Service::new(ping_config(bus.port()))
        .on("ping", |p: Value, ctx: Ctx| async move {
            ctx.reply("pong", &json!({"echo": p}))
        })
        .start()
        .await
        .expect("start");
    online(&svc).await;
    let mut t = raw_client(bus.port(), "tester").await;
    let ping = json!({"name": "ping", "sender": "tester", "id": "m1", "activityId": "act-9",
        "payload": {"x": [1, "ü"]}, "auth": {"user": "u1"}, "isSecurity": true});
    t.send(tungstenite::Message::text(ping.to_string()))
        .await
        .expect("send");
    let pong = next_json(&mut t, Duration::from_secs(5)).await;
    assert_eq!(pong["name"], "pong");
    assert_eq!(pong["activityId"], "act-9");
    assert_eq!(pong["auth"], json!({"user": "u1"}));
    assert_eq!(pong["isSecurity"], true);
    assert_eq!(pong["sender"], "ping");
    assert_eq!(pong["payload"], json!({"echo": {"x": [1, "ü"]}}));
    assert_ne!(pong["id"], "m1", "a reply has its own id");
    svc.shutdown().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn request_resolves_with_the_reply_and_times_out_without_one() {
    let bus = start_bus(PING_ROUTES, 0).await;
    let svc = Service::new(ping_config(bus.port()))
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .on("slow", |_: Value, _ctx: Ctx| async move {
            Ok::<_, ExoError>(())
        }) // never answers
        .start()
        .await
        .expect("start");
    online(&svc).await;
    let t = tester(bus.port());
    assert!(t.wait_online(Duration::from_secs(5)).await);
    let reply = t
        .client()
        .request("ping", &json!({"n": 1}), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(reply.name, "pong");
    assert_eq!(reply.payload_value(), json!({"n": 1}));

    let started = Instant::now();
    let err = t
        .client()
        .request("slow", &json!(null), Duration::from_millis(300))
        .await
        .expect_err("times out");
    assert!(
        matches!(err, ExoError::Timeout { ref name, .. } if name == "slow"),
        "{err}"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    t.drain().await;
    svc.shutdown().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_request_reply_goes_to_the_waiter_not_to_a_handler() {
    // The tester also handles `pong`: the reply to its own request must not reach that handler.
    let bus = start_bus(PING_ROUTES, 0).await;
    let svc = Service::new(ping_config(bus.port()))
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .start()
        .await
        .expect("start");
    online(&svc).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let tester_svc = Service::new(
        ServiceConfig::from_parts("tester", ["pong"], ["ping"])
            .with_exocom("127.0.0.1", bus.port()),
    )
    .on("pong", move |_: Value, _ctx: Ctx| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ExoError>(())
        }
    })
    .start()
    .await
    .expect("start");
    online(&tester_svc).await;
    let reply = tester_svc
        .client()
        .request("ping", &1, Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(reply.name, "pong");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        0,
        "the reply was also dispatched to the pong handler"
    );
    // A pong in a new activity does reach the handler (so the zero above
    // is not a handler that never runs).
    svc.client().send("pong", &2).expect("send pong");
    let deadline = Instant::now() + Duration::from_secs(5);
    while handled.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "a new pong reaches the handler");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    tester_svc.shutdown().await;
    svc.shutdown().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn undeclared_messages_are_refused_at_the_call_site() {
    let mock = MockBus::start().await.expect("mock bus");
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let s = seen.clone();
    let svc = Service::new(ping_config(mock.port()))
        .on("ping", move |_: Value, ctx: Ctx| {
            let s = s.clone();
            async move {
                let err = ctx.reply("not-declared", &1).expect_err("undeclared reply");
                *s.lock().unwrap() = Some(err.to_string());
                ctx.reply("pong", &1)
            }
        })
        .start()
        .await
        .expect("start");
    online(&svc).await;
    let err = svc
        .client()
        .send("users.delete", &json!({}))
        .expect_err("undeclared send");
    assert!(matches!(err, ExoError::Undeclared { .. }), "{err}");
    assert!(
        err.to_string().contains("'users.delete'") && err.to_string().contains("'sends'"),
        "{err}"
    );
    mock.send_to_service("ping", "ping", json!(null))
        .await
        .expect("send");
    mock.wait_for("pong", Duration::from_secs(5))
        .await
        .expect("pong");
    let text = seen.lock().unwrap().clone().expect("handler ran");
    assert!(text.contains("not-declared"), "{text}");
    assert!(mock.received().iter().all(|m| m.name != "not-declared"));
    svc.shutdown().await;
}

#[tokio::test]
async fn a_handler_for_a_name_not_received_is_an_error_at_start() {
    let err = Service::new(ping_config(1))
        .on("pong", |_: Value, _ctx: Ctx| async move {
            Ok::<_, ExoError>(())
        })
        .start()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, ExoError::NotReceived { ref name, .. } if name == "pong"),
        "{err}"
    );
}

#[tokio::test]
async fn a_panicking_or_failing_handler_does_not_stop_the_service() {
    let mock = MockBus::start().await.expect("mock bus");
    let svc = Service::new(ping_config(mock.port()))
        .on("ping", |p: Value, ctx: Ctx| async move {
            match p["do"].as_str() {
                Some("panic") => panic!("handler panics on purpose"),
                Some("fail") => Err(ExoError::Usage("handler fails on purpose".into())),
                _ => ctx.reply("pong", &p),
            }
        })
        .on(
            "slow",
            |n: i64, ctx: Ctx| async move { ctx.reply("slowed", &n) },
        )
        .start()
        .await
        .expect("start");
    online(&svc).await;
    mock.send_to_service("ping", "ping", json!({"do": "panic"}))
        .await
        .expect("send");
    mock.send_to_service("ping", "ping", json!({"do": "fail"}))
        .await
        .expect("send");
    mock.send_to_service("ping", "ping", json!({"do": "answer"}))
        .await
        .expect("send");
    let pong = mock
        .wait_for("pong", Duration::from_secs(5))
        .await
        .expect("still alive");
    assert_eq!(pong.payload_value(), json!({"do": "answer"}));
    // And a payload of the wrong shape for a typed handler is a logged error too.
    mock.send_to_service("ping", "slow", json!("not a number"))
        .await
        .expect("send");
    mock.send_to_service("ping", "slow", json!(3))
        .await
        .expect("send");
    let slowed = mock
        .wait_for("slowed", Duration::from_secs(5))
        .await
        .expect("still alive after a bad payload");
    assert_eq!(slowed.payload_value(), json!(3));
    let names: Vec<String> = mock.received().into_iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        ["pong", "slowed"],
        "only the good messages were answered"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn status_probe_is_answered_and_unknown_names_are_dropped() {
    let mock = MockBus::start().await.expect("mock bus");
    let svc = Service::new(ping_config(mock.port()))
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .start()
        .await
        .expect("start");
    online(&svc).await;
    mock.send_to_service("ping", "__status", json!(null))
        .await
        .expect("send");
    let ok = mock
        .wait_for("__status-ok", Duration::from_secs(5))
        .await
        .expect("status answered");
    assert!(ok.payload.is_none());
    mock.send_to_service("ping", "no-such-message", json!(1))
        .await
        .expect("send");
    mock.send_to_service("ping", "ping", json!(2))
        .await
        .expect("send");
    assert_eq!(
        mock.wait_for("pong", Duration::from_secs(5))
            .await
            .expect("pong")
            .payload_value(),
        json!(2)
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn concurrency_limit_holds_and_every_message_is_handled() {
    let mock = MockBus::start().await.expect("mock bus");
    let mut config = ping_config(mock.port());
    config.concurrency = 3;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, pk) = (running.clone(), peak.clone());
    let svc = Service::new(config)
        .on("ping", move |p: Value, ctx: Ctx| {
            let (r, pk) = (r.clone(), pk.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                pk.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                ctx.reply("pong", &p)
            }
        })
        .start()
        .await
        .expect("start");
    online(&svc).await;
    for i in 0..12 {
        mock.send_to_service("ping", "ping", json!(i))
            .await
            .expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.received().iter().filter(|m| m.name == "pong").count() < 12 {
        assert!(Instant::now() < deadline, "not every ping was answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "handlers in flight must reach but not pass the limit"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn before_all_runs_before_registering_and_its_sends_go_out_after() {
    let mock = Arc::new(MockBus::start().await.expect("mock bus"));
    let registered_during_hook = Arc::new(Mutex::new(None));
    let r = registered_during_hook.clone();
    let m = mock.clone();
    let port = mock.port();
    let svc = Service::new(ping_config(port))
        .before_all(move |client| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The service has not registered yet while its hook runs.
            *r.lock().unwrap() = Some((client.role().to_owned(), m.instances("ping")));
            client.send("pong", &json!({"from": "before_all"}))
        })
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .start()
        .await
        .expect("start");
    assert_eq!(
        registered_during_hook.lock().unwrap().clone(),
        Some(("ping".to_owned(), 0)),
        "the hook ran before the service registered"
    );
    online(&svc).await;
    let first = mock
        .wait_for("pong", Duration::from_secs(5))
        .await
        .expect("hook's message");
    assert_eq!(first.payload_value(), json!({"from": "before_all"}));
    svc.shutdown().await;

    // A failing hook stops the start with its error.
    let err = Service::new(ping_config(port))
        .before_all(|_client| async { Err::<(), _>("no database") })
        .start()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no database"), "{err}");
}

#[tokio::test]
async fn a_full_outgoing_buffer_is_an_error_at_the_call_site() {
    // Nothing listens on this port: every message waits in the buffer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config =
        ServiceConfig::from_parts("tester", Vec::<String>::new(), vec!["ping".to_string()])
            .with_exocom("127.0.0.1", port);
    config.outgoing_buffer = 5;
    config.drain_timeout = Duration::from_millis(300);
    let engine = Engine::new(config);
    engine.connect().expect("connect");
    for i in 0..5 {
        engine
            .client()
            .send("ping", &i)
            .expect("fits in the buffer");
    }
    let err = engine.client().send("ping", &5).expect_err("buffer full");
    assert!(
        matches!(err, ExoError::BufferFull { capacity: 5, .. }),
        "{err}"
    );
    let report = tokio::time::timeout(Duration::from_secs(15), engine.drain())
        .await
        .expect("drain ends");
    assert_eq!(report.unsent_messages, 5);
}

#[tokio::test]
async fn messages_sent_while_the_bus_restarts_arrive_once_in_order() {
    let routes = r#"{"sender": {"sends": ["n"]}, "receiver": {"receives": ["n"]}}"#;
    let bus = start_bus(routes, 0).await;
    let port = bus.port();
    let got: Arc<Mutex<Vec<i64>>> = Arc::default();
    let g = got.clone();
    let receiver = Service::new(
        ServiceConfig::from_parts("receiver", ["n"], Vec::<&str>::new())
            .with_exocom("127.0.0.1", port),
    )
    .on("n", move |n: i64, _ctx: Ctx| {
        let g = g.clone();
        async move {
            g.lock().unwrap().push(n);
            Ok::<_, ExoError>(())
        }
    })
    .start()
    .await
    .expect("start receiver");
    online(&receiver).await;
    let sender = Engine::new(
        ServiceConfig::from_parts("sender", Vec::<&str>::new(), ["n"])
            .with_exocom("127.0.0.1", port),
    );
    sender.announce_online(false);
    sender.connect().expect("connect");
    assert!(sender.wait_online(Duration::from_secs(5)).await);

    let mut bus = Some(bus);
    for i in 0..100i64 {
        if i == 30
            && let Some(b) = bus.take()
        {
            b.shutdown().await;
        }
        if i == 60 {
            bus = Some(start_bus(routes, port).await);
        }
        sender.client().send("n", &i).expect("buffered or sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // duplicates would show up here
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "every message once, in order"
    );
    sender.drain().await;
    receiver.shutdown().await;
    if let Some(b) = bus {
        b.shutdown().await;
    }
}

#[tokio::test]
async fn a_request_from_inside_a_handler_carries_the_handlers_auth() {
    let mock = MockBus::start().await.expect("mock bus");
    mock.mock_reply("users.get", "users.details", json!({"name": "Jean-Luc"}));
    let config = ServiceConfig::from_parts("todo", ["todo.add"], ["todo.added", "users.get"])
        .with_exocom("127.0.0.1", mock.port());
    let svc = Service::new(config)
        .on("todo.add", |p: Value, ctx: Ctx| async move {
            let user = ctx
                .request(
                    "users.get",
                    &json!({"id": p["owner"]}),
                    Duration::from_secs(5),
                )
                .await?;
            ctx.reply(
                "todo.added",
                &json!({"text": p["text"], "owner": user.payload_value()["name"]}),
            )
        })
        .start()
        .await
        .expect("start");
    online(&svc).await;
    let auth = json!({"user": "u1", "token": "t-42"});
    let todo_add = Message {
        auth: exoservice::message::to_raw(&auth).unwrap(),
        ..Message::new("todo.add")
            .with_payload(&json!({"owner": "u1", "text": "tea"}))
            .unwrap()
    };
    let sent = mock.send_message("todo", todo_add).await.expect("send");
    let added = mock
        .wait_for("todo.added", Duration::from_secs(5))
        .await
        .expect("added");
    assert_eq!(added.activity_id, sent.activity_id);
    assert_eq!(
        added.auth.as_deref().map(|a| a.get()),
        Some(auth.to_string().as_str()),
        "the reply carries the request's auth"
    );
    assert_eq!(
        added.payload_value(),
        json!({"text": "tea", "owner": "Jean-Luc"})
    );
    let get: Message = mock
        .received()
        .into_iter()
        .find(|m| m.name == "users.get")
        .expect("request seen");
    assert_ne!(
        get.activity_id, sent.activity_id,
        "a request starts its own activity"
    );
    assert_eq!(
        get.auth.as_deref().map(|a| a.get()),
        Some(auth.to_string().as_str()),
        "a request from a handler carries the handler's auth"
    );
    svc.shutdown().await;
}

/// The child side of the signal test: a service whose `slow` handler takes
/// 600 ms. Runs only when the parent test starts this binary with the env set.
#[tokio::test]
#[ignore = "the child process of sigterm_drains_a_running_handler_and_its_reply_arrives, which runs it"]
async fn child_service_for_signal_test() {
    let Ok(port) = std::env::var("EXO_TEST_CHILD_PORT") else {
        return;
    };
    let port: u16 = port.parse().expect("port");
    let result = Service::new(ping_config(port))
        .on("slow", |p: Value, ctx: Ctx| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            ctx.reply("slowed", &p)
        })
        .run()
        .await;
    result.expect("service ran");
    std::process::exit(0);
}

#[tokio::test]
async fn sigterm_drains_a_running_handler_and_its_reply_arrives() {
    let bus = start_bus(PING_ROUTES, 0).await;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        // `--quiet`: the default (pretty) libtest output writes `test NAME ... `
        // without a line end before running a test, which would prefix the
        // service's own `online at port N` line; the terse format writes
        // nothing before a test runs.
        .args([
            "--ignored",
            "--exact",
            "child_service_for_signal_test",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env("EXO_TEST_CHILD_PORT", bus.port().to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("child starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let online_line = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncBufReadExt;
        loop {
            line.clear();
            if out.read_line(&mut line).await.expect("read") == 0 {
                return None;
            }
            if line.contains("online at port") {
                return Some(line.clone());
            }
        }
    })
    .await
    .expect("online in time")
    .expect("child printed its online text");
    assert_eq!(online_line.trim(), format!("online at port {}", bus.port()));

    let t = tester(bus.port());
    assert!(t.wait_online(Duration::from_secs(5)).await);
    let pending = t
        .client()
        .start_request(
            "slow",
            exoservice::message::raw_from_text("7").unwrap(),
            None,
            Duration::from_secs(5),
        )
        .expect("request");
    tokio::time::sleep(Duration::from_millis(200)).await; // the handler is running now
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let reply = pending
        .wait()
        .await
        .expect("the running handler's reply arrives");
    assert_eq!(reply.name, "slowed");
    assert_eq!(reply.payload_value(), json!(7));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("child exits in time")
        .expect("wait");
    assert!(status.success(), "child exit status {status}");
    t.drain().await;
    bus.shutdown().await;
}

//! Who may connect, TLS, and the door's limits, from the outside: real
//! buses and WebSockets on 127.0.0.1, free ports, every wait bounded.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::bus::{Bus, BusConfig, BusHandle, LimitSnapshot, LogSink, TlsFiles, Tokens};
use exoservice::config::{Env, ServiceConfig, env};
use exoservice::routes::Routes;
use exoservice::{Ctx, Engine, Service};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

const WAIT: Duration = Duration::from_secs(5);

const ROUTES: &str = r#"{
  "web": {"sends": ["ping"], "receives": ["pong"]},
  "ping": {"receives": ["ping"], "sends": ["pong"]}
}"#;

const WEB_TOKEN: &str = "w-3cret/with=odd+chars";
const PING_TOKEN: &str = "p-3cret";

fn tokens() -> Tokens {
    Tokens::new()
        .with("web", WEB_TOKEN)
        .unwrap()
        .with("ping", PING_TOKEN)
        .unwrap()
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A bus whose every log line (from the very start) lands in the returned list.
async fn start(config: BusConfig) -> (BusHandle, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let config = config
        .with_log(LogSink::Callback(Arc::new(move |l: &str| {
            sink.lock().unwrap().push(l.to_owned())
        })))
        .with_startup_grace(Duration::ZERO);
    let bus = timeout(WAIT, Bus::start(config))
        .await
        .expect("in time")
        .expect("bus starts");
    (bus, lines)
}

fn config() -> BusConfig {
    BusConfig::new(Routes::from_json(ROUTES).unwrap())
}

async fn wait_line(lines: &Lines, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| pred(l)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such log line in {:#?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_counters(bus: &BusHandle, pred: impl Fn(&LimitSnapshot) -> bool) -> LimitSnapshot {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = bus.limits().snapshot();
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "counters stayed at {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_clients(bus: &BusHandle, want: &[(&str, usize)]) {
    let deadline = Instant::now() + WAIT;
    let want: Vec<(String, usize)> = want.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
    while bus.clients() != want {
        assert!(
            Instant::now() < deadline,
            "clients stayed {:?}, wanted {want:?}",
            bus.clients()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw WebSocket client, over TCP or TLS.
struct Client<S> {
    ws: WebSocketStream<S>,
    role: String,
}

/// What the bus answered to an upgrade.
type Upgrade<S> = Result<Client<S>, StatusCode>;

async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    header: Option<(&str, &str)>,
) -> Upgrade<S> {
    let mut request = url.into_client_request().unwrap();
    if let Some((name, value)) = header {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let result = timeout(
        WAIT,
        tokio_tungstenite::client_async_with_config(request, stream, None),
    )
    .await
    .expect("the upgrade is answered in time");
    match result {
        Ok((ws, _)) => Ok(Client {
            ws,
            role: String::new(),
        }),
        Err(tungstenite::Error::Http(response)) => Err(response.status()),
        Err(e) => panic!("the upgrade failed otherwise: {e}"),
    }
}

/// Connects over plain TCP to `path` (with query) and upgrades.
async fn connect(port: u16, path: &str, header: Option<(&str, &str)>) -> Upgrade<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    upgrade(tcp, &format!("ws://127.0.0.1:{port}{path}"), header).await
}

/// Connects with `Authorization: Bearer TOKEN` and registers as `role`.
async fn register(port: u16, role: &str, token: &str) -> Client<TcpStream> {
    let bearer = format!("Bearer {token}");
    let mut c = connect(port, "/services", Some(("authorization", &bearer)))
        .await
        .expect("admitted");
    c.register(role).await;
    c
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn register(&mut self, role: &str) {
        self.role = role.to_owned();
        self.send_raw(
            json!({"name": "exocom.register-service", "sender": role, "id": "r", "activityId": "r"})
                .to_string(),
        )
        .await;
    }

    async fn send_raw(&mut self, text: String) {
        timeout(WAIT, self.ws.send(WsMessage::text(text)))
            .await
            .expect("sent in time")
            .expect("send a frame");
    }

    async fn send(&mut self, name: &str, activity: &str, payload: Value) {
        let frame = json!({"name": name, "id": activity, "activityId": activity, "sender": self.role, "payload": payload});
        self.send_raw(frame.to_string()).await;
    }

    /// The next text frame; `None` when the connection ends first.
    async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match timeout(wait, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                Ok(_) => return None,
                Err(_) => panic!(
                    "'{}': neither a frame nor the end within {wait:?}",
                    self.role
                ),
            }
        }
    }

    async fn recv(&mut self) -> Value {
        self.recv_within(WAIT).await.expect("a frame, not the end")
    }

    /// Waits until the bus drops the connection.
    async fn expect_closed(&mut self) {
        if let Some(f) = self.recv_within(WAIT).await {
            panic!("'{}' got {f}, expected the connection to close", self.role);
        }
    }
}

#[tokio::test]
async fn a_wrong_or_missing_token_gets_401_and_the_bus_serves_the_others() {
    let (bus, lines) = start(config().with_tokens(tokens())).await;
    let port = bus.port();
    let mut ping = register(port, "ping", PING_TOKEN).await;
    let mut web = register(port, "web", WEB_TOKEN).await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;

    let wrong = connect(port, "/services", Some(("authorization", "Bearer nope"))).await;
    assert_eq!(wrong.err(), Some(StatusCode::UNAUTHORIZED));
    let missing = connect(port, "/services", None).await;
    assert_eq!(missing.err(), Some(StatusCode::UNAUTHORIZED));
    let other_header = connect(port, "/services", Some(("x-exocom-token", "p-3crex"))).await;
    assert_eq!(other_header.err(), Some(StatusCode::UNAUTHORIZED));
    let line = wait_line(&lines, |l| l.contains("a wrong token")).await;
    assert!(
        line.starts_with("Warning: Refused a connection from 127.0.0.1:")
            && line.contains("HTTP 401"),
        "{line}"
    );
    wait_line(&lines, |l| {
        l.contains("Refused a connection from 127.0.0.1:") && l.contains(": no token (HTTP 401")
    })
    .await;
    assert_eq!(bus.limits().snapshot().refused_unauthorized, 3);
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("No tokens configured")),
        "a bus with tokens does not warn that it is open"
    );

    // The admitted services go on as if nothing happened.
    web.send("ping", "a1", json!({"n": 1})).await;
    let got = ping.recv().await;
    assert_eq!(
        (got["name"].as_str(), got["activityId"].as_str()),
        (Some("ping"), Some("a1"))
    );
    // X-Exocom-Token works as well as Authorization.
    let mut second = connect(port, "/services", Some(("X-Exocom-Token", PING_TOKEN)))
        .await
        .expect("admitted");
    second.register("ping").await;
    wait_clients(&bus, &[("ping", 2), ("web", 1)]).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_token_in_the_query_works_and_role_narrows_it() {
    let (bus, _lines) = start(config().with_tokens(tokens())).await;
    let port = bus.port();
    // `/`, `=` and `+` percent-encoded, as a browser's encodeURIComponent does.
    let encoded = "w-3cret%2Fwith%3Dodd%2Bchars";
    let mut web = connect(port, &format!("/services?token={encoded}"), None)
        .await
        .expect("the query token is accepted");
    web.register("web").await;
    let mut ping = connect(
        port,
        &format!("/services?role=ping&token={PING_TOKEN}"),
        None,
    )
    .await
    .expect("the query token with its role is accepted");
    ping.register("ping").await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    web.send("ping", "q1", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "q1");

    // A right token named for another role is refused at the door.
    let narrowed = connect(
        port,
        &format!("/services?role=web&token={PING_TOKEN}"),
        None,
    )
    .await;
    assert_eq!(narrowed.err(), Some(StatusCode::UNAUTHORIZED));
    // Unencoded `+` reads as a space, which no token holds.
    let raw_plus = connect(port, "/services?token=w-3cret/with=odd+chars", None).await;
    assert_eq!(raw_plus.err(), Some(StatusCode::UNAUTHORIZED));
    bus.shutdown().await;
}

#[tokio::test]
async fn a_connection_with_the_token_of_one_role_cannot_register_as_another() {
    let (bus, lines) = start(config().with_tokens(tokens())).await;
    let port = bus.port();
    let mut ping = register(port, "ping", PING_TOKEN).await;
    let mut web = register(port, "web", WEB_TOKEN).await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;

    // web's token, registering as ping: refused, logged, counted, closed.
    let mut impostor = register(port, "ping", WEB_TOKEN).await;
    impostor.expect_closed().await;
    let line = wait_line(&lines, |l| l.contains("Refused to register")).await;
    assert!(
        line.contains("from 127.0.0.1:") && line.contains("as 'ping': its token is for 'web'"),
        "{line}"
    );
    wait_counters(&bus, |s| s.refused_wrong_role == 1).await;
    assert_eq!(
        bus.clients(),
        [("ping".to_owned(), 1), ("web".to_owned(), 1)]
    );

    // Nothing reaches the impostor's would-be role twice; the real ping gets it.
    web.send("ping", "i1", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "i1");
    // A registered connection cannot move to a role its token is not for.
    web.register("ping").await;
    web.expect_closed().await;
    wait_clients(&bus, &[("ping", 1)]).await;
    wait_counters(&bus, |s| s.refused_wrong_role == 2).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn no_tokens_means_open_with_one_warning_at_start() {
    let (bus, lines) = start(config()).await;
    let port = bus.port();
    let mut ping = connect(port, "/services", None).await.expect("open");
    ping.register("ping").await;
    // A token shown to an open bus is ignored.
    let mut web = register(port, "web", "whatever").await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    web.send("ping", "o1", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "o1");
    let warnings: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("No tokens configured"))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("Warning: "), "{warnings:?}");
    assert_eq!(
        lines.lock().unwrap().first().map(String::as_str),
        Some(warnings[0].as_str()),
        "the warning comes first"
    );
    bus.shutdown().await;
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to
/// `dir` as cert.pem and key.pem.
fn self_signed(dir: &Path) -> TlsFiles {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate");
    let files = TlsFiles::new(dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    files
}

fn service_dir(root: &Path, role: &str, receives: &[&str], sends: &[&str]) -> std::path::PathBuf {
    let dir = root.join(role);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("service.yml"),
        format!(
            "type: {role}\nmessages:\n  receives: {}\n  sends: {}\n",
            serde_json::to_string(receives).unwrap(),
            serde_json::to_string(sends).unwrap()
        ),
    )
    .unwrap();
    dir
}

/// A TLS client that trusts the certificate in `ca`.
async fn tls_stream(port: u16, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = exoservice::bus::tls::client_config(Some(ca)).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("in time")
    .expect("the TLS handshake")
}

#[tokio::test]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let files = self_signed(tmp.path());
    let (bus, lines) = start(config().with_tokens(tokens()).with_tls(files.clone())).await;
    let port = bus.port();
    let url = format!("wss://localhost:{port}");
    let ca = files.cert.to_str().unwrap().to_owned();

    // The ping service, configured only through its file and environment.
    let ping_env = Env::from_pairs([
        (env::EXOCOM_URL, url.as_str()),
        (env::EXOCOM_CA_FILE, ca.as_str()),
        (env::EXOCOM_TOKEN, PING_TOKEN),
    ]);
    let dir = service_dir(tmp.path(), "ping", &["ping"], &["pong"]);
    let ping_config = ServiceConfig::load_with(&dir, &ping_env, None).expect("config");
    assert_eq!(
        (ping_config.exocom_host.as_str(), ping_config.exocom_port),
        ("localhost", port)
    );
    assert!(
        !format!("{ping_config:?}").contains(PING_TOKEN),
        "Debug hides the token"
    );
    let ping = Service::new(ping_config)
        .on("ping", |p: Value, ctx: Ctx| async move {
            ctx.reply("pong", &json!({"echo": p}))
        })
        .start()
        .await
        .expect("ping starts");
    assert!(ping.wait_online(WAIT).await, "ping connects over TLS");

    let web_env = Env::from_pairs([
        (env::EXOCOM_URL, url.as_str()),
        (env::EXOCOM_CA_FILE, ca.as_str()),
        (env::EXOCOM_TOKEN, WEB_TOKEN),
    ]);
    let dir = service_dir(tmp.path(), "web", &["pong"], &["ping"]);
    let web = Engine::new(ServiceConfig::load_with(&dir, &web_env, None).expect("config"));
    web.announce_online(false);
    web.connect().expect("connect");
    assert!(web.wait_online(WAIT).await, "web connects over TLS");
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    let payload = exoservice::message::raw_from_text(r#"{"over":"tls"}"#).unwrap();
    let reply = web
        .client()
        .start_request("ping", payload, None, WAIT)
        .expect("request")
        .wait()
        .await
        .expect("a reply through the TLS bus");
    assert_eq!(reply.name, "pong");
    assert_eq!(reply.payload_json(), r#"{"echo":{"over":"tls"}}"#);

    // /config.json over https.
    let mut https = tls_stream(port, &files.cert).await;
    https
        .write_all(b"GET /config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(WAIT, https.read_to_string(&mut body))
        .await
        .expect("in time")
        .ok();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains(r#""role":"ping""#), "{body}");

    // A raw wss client with a token, and without one.
    let stream = tls_stream(port, &files.cert).await;
    let bearer = format!("Bearer {WEB_TOKEN}");
    let mut raw = upgrade(
        stream,
        &format!("wss://localhost:{port}/services"),
        Some(("authorization", &bearer)),
    )
    .await
    .expect("admitted over TLS");
    raw.register("web").await;
    wait_clients(&bus, &[("ping", 1), ("web", 2)]).await;
    let stream = tls_stream(port, &files.cert).await;
    let refused = upgrade(stream, &format!("wss://localhost:{port}/services"), None).await;
    assert_eq!(refused.err(), Some(StatusCode::UNAUTHORIZED));

    // Plain WebSocket to the TLS port, and a client that does not trust the
    // certificate: both fail the TLS handshake, which the bus counts.
    let plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let plain = timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/services"), plain),
    )
    .await
    .expect("answered in time");
    assert!(plain.is_err(), "plain WebSocket on a TLS port");
    let untrusting = exoservice::bus::tls::client_config(None).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(untrusting).connect(name, tcp),
    )
    .await
    .expect("in time");
    assert!(
        handshake.is_err(),
        "the self-signed certificate is not in the system roots"
    );
    wait_counters(&bus, |s| s.tls_failures >= 2).await;
    wait_line(&lines, |l| {
        l.starts_with("Warning: TLS handshake with 127.0.0.1:")
    })
    .await;

    ping.shutdown().await;
    web.stop();
    bus.shutdown().await;
}

#[tokio::test]
async fn a_service_with_a_wrong_token_stays_out_and_the_right_one_gets_in() {
    let (bus, lines) = start(config().with_tokens(tokens())).await;
    let port = bus.port();
    let engine = Engine::new(
        ServiceConfig::from_parts("web", ["pong"], ["ping"])
            .with_exocom("127.0.0.1", port)
            .with_token("not-the-token"),
    );
    engine.announce_online(false);
    engine.connect().expect("connect");
    assert!(!engine.wait_online(Duration::from_millis(500)).await);
    wait_line(&lines, |l| {
        l.contains("Refused a connection from 127.0.0.1:")
    })
    .await;
    assert!(bus.clients().is_empty());
    engine.stop();
    // The right token gets in.
    let engine = Engine::new(
        ServiceConfig::from_parts("web", ["pong"], ["ping"])
            .with_exocom("127.0.0.1", port)
            .with_token(WEB_TOKEN),
    );
    engine.announce_online(false);
    engine.connect().expect("connect");
    assert!(engine.wait_online(WAIT).await);
    wait_clients(&bus, &[("web", 1)]).await;
    engine.stop();
    bus.shutdown().await;
}

#[tokio::test]
async fn a_5_mib_frame_closes_only_that_connection() {
    let (bus, lines) = start(config()).await;
    let port = bus.port();
    let mut ping = register(port, "ping", "").await;
    let mut big = register(port, "web", "").await;
    let mut small = register(port, "web", "").await;
    wait_clients(&bus, &[("ping", 1), ("web", 2)]).await;

    // Just under the 4 MiB default passes.
    let three_mib = "x".repeat(3 << 20);
    small.send("ping", "under", json!(three_mib)).await;
    let got = ping.recv().await;
    assert_eq!(got["payload"].as_str().map(str::len), Some(3 << 20));

    let five_mib = "y".repeat(5 << 20);
    let frame = json!({"name": "ping", "id": "big", "activityId": "big", "payload": five_mib});
    // The bus may close the connection while the frame is still being
    // written (a reset for the writer): either way it ends.
    let sent = timeout(WAIT, big.ws.send(WsMessage::text(frame.to_string())))
        .await
        .expect("written or refused in time");
    if sent.is_ok() {
        big.expect_closed().await;
    }
    let line = wait_line(&lines, |l| l.contains("more than the limit")).await;
    assert!(
        line.starts_with("Error: Closed the connection of 'web' from 127.0.0.1:")
            && line.contains(&format!(
                "it sent a frame of {} bytes",
                frame.to_string().len()
            ))
            && line.contains("more than the limit of 4194304 bytes"),
        "{line}"
    );
    let lines_about_it = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("more than the limit"))
        .count();
    assert_eq!(lines_about_it, 1, "one line per connection");
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    assert_eq!(bus.limits().snapshot().closed_oversized, 1);

    // The others go on; the big frame went nowhere.
    small.send("ping", "after", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "after");
    bus.shutdown().await;
}

#[tokio::test]
async fn a_lower_frame_limit_is_configurable() {
    let (bus, lines) = start(config().with_max_message_size(1024)).await;
    let port = bus.port();
    let mut web = register(port, "web", "").await;
    let frame = json!({"name": "ping", "id": "b", "activityId": "b", "payload": "z".repeat(2000)});
    if timeout(WAIT, web.ws.send(WsMessage::text(frame.to_string())))
        .await
        .expect("in time")
        .is_ok()
    {
        web.expect_closed().await;
    }
    wait_line(&lines, |l| l.contains("more than the limit of 1024 bytes")).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn the_connection_after_the_most_gets_503() {
    let (bus, lines) = start(config().with_max_connections(2)).await;
    let port = bus.port();
    let mut ping = register(port, "ping", "").await;
    let web = register(port, "web", "").await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    let third = connect(port, "/services", None).await;
    assert_eq!(third.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let line = wait_line(&lines, |l| l.contains("HTTP 503")).await;
    assert!(
        line.starts_with("Warning: Refused a connection from 127.0.0.1:")
            && line.contains("2 connections are open, the most allowed"),
        "{line}"
    );
    let s = bus.limits().snapshot();
    assert_eq!((s.connections, s.refused_too_many, s.accepted), (2, 1, 2));
    // HTTP requests other than upgrades are still answered.
    let mut http = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    http.write_all(b"GET /config.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(WAIT, http.read_to_string(&mut body))
        .await
        .expect("in time")
        .ok();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");

    // A connection that leaves frees its slot.
    drop(web);
    wait_counters(&bus, |s| s.connections == 1).await;
    let mut web = connect(port, "/services", None)
        .await
        .expect("a free slot again");
    web.register("web").await;
    wait_clients(&bus, &[("ping", 1), ("web", 1)]).await;
    web.send("ping", "m1", json!(1)).await;
    assert_eq!(ping.recv().await["activityId"], "m1");
    bus.shutdown().await;
}

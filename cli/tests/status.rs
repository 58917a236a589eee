//! `exo status` against a running `exocom` process with live traffic: it
//! prints the roles, their instances, what they send and receive, and the
//! message rates; an unreachable bus is a clear error (exit 1). And `exo
//! status --nats` against a real `nats-server` with services on it: the
//! instances that answer and what the stream holds for each role.

use std::process::Command;
use std::time::Duration;

use exo_harness::{Proc, bin, free_port, port_in};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(20);
const ROUTES: &str = r#"{"tester":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]},"audit":{"receives":["ping"]}}"#;

/// Runs `exo status` with these arguments and environment; (exit code,
/// stdout, stderr).
async fn exo_status(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(bin("exo"));
    cmd.arg("status")
        .args(args)
        .env_remove("EXOCOM_HOST")
        .env_remove("EXOCOM_PORT")
        .kill_on_drop(true);
    for var in exoservice::config::env::NATS_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = timeout(WAIT, cmd.output())
        .await
        .expect("exo status ends in time")
        .expect("exo status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The words of the first line starting with these words.
fn row<'a>(text: &'a str, start: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() >= start.len() && w[..start.len()] == *start)
        .unwrap_or_else(|| panic!("no row starting with {start:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_roles_and_rates_of_a_running_bus() {
    let mut bus = Proc::spawn(
        Command::new(bin("exocom"))
            .arg("--quiet-routes")
            .env("PORT", "0")
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("EXOCOM_STARTUP_GRACE_MS", "0")
            .env("SERVICE_DATA", ROUTES),
    );
    let port = port_in(&bus.wait_for("ExoCom online at port", WAIT));
    let url = format!("ws://127.0.0.1:{port}/services");
    let connect = |role: &'static str| {
        let url = url.clone();
        async move {
            let (mut ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
                .await
                .unwrap()
                .unwrap();
            let reg = json!({"name": "exocom.register-service", "sender": role, "id": "r", "activityId": "r"});
            ws.send(WsMessage::text(reg.to_string())).await.unwrap();
            ws
        }
    };
    // Two 'ping' instances answer; 'tester' sends a ping every 5 ms for
    // at most 15 s; 'audit' has no instance.
    let mut responders = Vec::new();
    for _ in 0..2 {
        let mut ws = connect("ping").await;
        responders.push(tokio::spawn(async move {
            while let Ok(Some(Ok(WsMessage::Text(t)))) = timeout(WAIT, ws.next()).await {
                let msg: serde_json::Value = serde_json::from_str(&t).unwrap();
                let pong = json!({"name": "pong", "sender": "ping", "id": "p", "activityId": msg["activityId"]});
                if ws.send(WsMessage::text(pong.to_string())).await.is_err() {
                    break;
                }
            }
        }));
    }
    let tester = connect("tester").await;
    let (mut sink, mut stream) = tester.split();
    let sender = tokio::spawn(async move {
        for i in 0..3000 {
            let ping = json!({"name": "ping", "sender": "tester", "id": format!("i{i}"), "activityId": format!("a{i}")});
            if sink.send(WsMessage::text(ping.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let drain =
        tokio::spawn(
            async move { while let Ok(Some(Ok(_))) = timeout(WAIT, stream.next()).await {} },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The bus from $EXOCOM_HOST/$EXOCOM_PORT.
    let (code, out, err) = exo_status(
        &["--interval", "1"],
        &[
            ("EXOCOM_HOST", "127.0.0.1".to_owned()),
            ("EXOCOM_PORT", port.to_string()),
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    println!("{out}");
    assert!(
        out.starts_with(&format!("ExoCom at http://127.0.0.1:{port}")),
        "{out}"
    );
    assert!(out.contains("3 roles, 3 instances connected"), "{out}");
    assert_eq!(row(&out, &["ping", "2"]), ["ping", "2", "pong", "ping"]);
    assert_eq!(row(&out, &["tester", "1"]), ["tester", "1", "ping", "pong"]);
    assert_eq!(row(&out, &["audit", "0"]), ["audit", "0", "-", "ping"]);
    for (message, role) in [("ping", "ping"), ("pong", "tester")] {
        let r = row(&out, &[message, role]);
        let per_second: f64 = r[2].parse().unwrap();
        let total: f64 = r[3].parse().unwrap();
        assert!(
            (20.0..=400.0).contains(&per_second),
            "{message} → {role}: {per_second}/s\n{out}"
        );
        assert!(total >= per_second * 0.5, "{out}");
    }
    let audit = row(&out, &["ping", "audit"]);
    assert_eq!(&audit[2..], ["0.0", "0"], "'audit' has no instance: {out}");
    assert!(out.contains("refused by reason: no_instance"), "{out}");

    // --bus in URL form gives the same topology.
    let (code, out, err) = exo_status(
        &[
            "--bus",
            &format!("ws://127.0.0.1:{port}/services"),
            "--interval",
            "0.2",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, &["ping", "2"]), ["ping", "2", "pong", "ping"]);

    sender.abort();
    drain.abort();
    for r in responders {
        r.abort();
    }
    bus.signal("TERM");
    assert_eq!(bus.wait_exit(WAIT), Some(0));
}

#[tokio::test]
async fn an_unreachable_bus_is_a_clear_error() {
    let port = free_port();
    let (code, out, err) = exo_status(&["--bus", &format!("127.0.0.1:{port}")], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!(
            "exo status: cannot reach the bus at http://127.0.0.1:{port}"
        )) && err.contains("is exocom running there?"),
        "{err}"
    );
    let (code, _, err) = exo_status(&["--bus", "ftp://x"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown scheme 'ftp'"), "{err}");
}

/// A service of `role` on NATS (routes [`NATS_ROUTES`], one attempt per
/// at-least-once message), connected and online; every handler fails.
async fn nats_service(url: &str, app: &str, role: &str) -> std::sync::Arc<exoservice::Engine> {
    use exoservice::config::{DeliveryMode, NatsSettings, ServiceConfig};
    let routes = exoservice::routes::Routes::from_json(NATS_ROUTES).expect("routes");
    let own = routes.roles[role].clone();
    let mut settings = NatsSettings::new(url, app, routes);
    settings.max_attempts = 1;
    let mut config = ServiceConfig::from_parts(role, own.receives.clone(), own.sends.clone())
        .with_nats(settings);
    for name in &own.at_least_once {
        config = config.with_delivery(name.clone(), DeliveryMode::AtLeastOnce);
    }
    let engine = std::sync::Arc::new(exoservice::Engine::new(config));
    engine.announce_online(false);
    for name in &own.receives {
        engine.handle(name).expect("handle");
    }
    engine.connect().expect("connect");
    assert!(engine.wait_online(WAIT).await, "{role} online at {url}");
    let serving = engine.clone();
    tokio::spawn(async move {
        while let Some(delivery) = serving.next().await {
            delivery.fail();
        }
    });
    engine
}

const NATS_ROUTES: &str =
    r#"{"sender":{"sends":["job"]},"worker":{"receives":["job"],"atLeastOnce":["job"]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_the_instances_and_queues_of_an_application_on_nats() {
    let server = exoservice::testing::nats::NatsServer::start()
        .await
        .expect("nats-server");
    let app = format!("st{:08x}", fastrand::u32(..));
    let url = server.url();
    let services = [
        nats_service(&url, &app, "worker").await,
        nats_service(&url, &app, "worker").await,
        nats_service(&url, &app, "sender").await,
    ];
    services[2]
        .client()
        .send("job", &json!({"n": 1}))
        .expect("send");
    let env = [
        ("EXOSERVICE_APP", app.clone()),
        ("EXOSERVICE_ROUTES", NATS_ROUTES.to_owned()),
    ];
    let args = ["--nats", url.as_str(), "--interval", "0.5"];
    // The job fails on its only attempt: one dead letter of `worker`.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let (code, out, err) = exo_status(&args, &env).await;
        assert_eq!(code, 0, "exo status --nats: {out}{err}");
        let dead = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .any(|w| w.len() == 5 && w[0] == "worker" && w[4] == "1");
        if dead || tokio::time::Instant::now() >= deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.starts_with(&format!(
            "NATS at {url}, application {app}: 2 roles, 3 instances online\n"
        )),
        "{text}"
    );
    assert_eq!(row(&text, &["worker", "2"]), ["worker", "2", "-", "job*"]);
    assert_eq!(row(&text, &["sender", "1"]), ["sender", "1", "job", "-"]);
    let instances: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("worker-") || l.starts_with("sender-"))
        .collect();
    assert_eq!(instances.len(), 3, "{text}");
    assert!(instances.iter().all(|l| l.ends_with("running")), "{text}");
    assert!(
        text.contains(&format!("at-least-once, stream EXO_{app}:")),
        "{text}"
    );
    // Stored, in progress, redelivered, dead letters.
    assert_eq!(
        row(&text, &["worker", "0"]),
        ["worker", "0", "0", "0", "1"],
        "{text}"
    );
    assert!(text.contains("exo dead-letters list"), "{text}");

    // Without routes: the roles are those that answer, and those the
    // stream holds something for.
    let (code, out, err) = exo_status(&args, &env[..1]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(no routes given"), "{out}");
    assert_eq!(
        row(&out, &["worker", "2"]),
        ["worker", "2", "-", "-"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["worker", "0"]),
        ["worker", "0", "0", "0", "1"],
        "{out}"
    );

    // One worker stops: it no longer answers.
    services[0].drain().await;
    let (code, out, _) = exo_status(&args, &env).await;
    assert_eq!(code, 0);
    assert_eq!(
        row(&out, &["worker", "1"]),
        ["worker", "1", "-", "job*"],
        "{out}"
    );
    for s in &services[1..] {
        s.drain().await;
    }
}

#[tokio::test]
async fn an_unreachable_nats_is_a_clear_error() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (code, out, err) = exo_status(
        &["--nats", &url, "--timeout", "2"],
        &[("EXOSERVICE_APP", "shop".to_owned())],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("cannot reach NATS at {url}")),
        "{err}"
    );
}

/// Services with only at-most-once messages run on a server without
/// JetStream; `exo status --nats` shows them and says that JetStream is not
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_still_shows_its_instances() {
    let binary = exoservice::testing::nats::nats_server_binary().expect("nats-server");
    let port = free_port();
    let _server = tokio::process::Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = format!("nj{:08x}", fastrand::u32(..));
    let routes = r#"{"web":{"sends":["ping"]},"ping":{"receives":["ping"]}}"#;
    let config =
        exoservice::config::ServiceConfig::from_parts("ping", ["ping"], Vec::<&str>::new())
            .with_nats(exoservice::config::NatsSettings::new(
                &url,
                &app,
                exoservice::routes::Routes::from_json(routes).unwrap(),
            ));
    let ping = exoservice::Engine::new(config);
    ping.announce_online(false);
    ping.handle("ping").unwrap();
    ping.connect().unwrap();
    assert!(
        ping.wait_online(WAIT).await,
        "at-most-once needs no JetStream"
    );

    let env = [
        ("EXOSERVICE_APP", app.clone()),
        ("EXOSERVICE_ROUTES", routes.to_owned()),
    ];
    let (code, out, err) = exo_status(&["--nats", &url, "--interval", "0.5"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, &["ping"]), ["ping", "1", "-", "ping"], "{out}");
    assert!(out.contains("JetStream is not available"), "{out}");
    ping.drain().await;
}

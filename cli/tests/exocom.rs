//! The `exocom` binary as a process: its settings, `--app`, a taken port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use exo_harness::*;

fn exocom() -> std::path::PathBuf {
    bin("exocom")
}

fn get_config_json(port: u16) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /config.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `exocom --app DIR` on a free loopback port, with no routes or tokens
/// from the environment; the process and its port once it is online.
fn exocom_app(dir: &std::path::Path) -> (Proc, u16) {
    let mut p = Proc::spawn(
        Command::new(exocom())
            .arg("--app")
            .arg(dir)
            .args(["--port", "0"])
            .env("EXOCOM_BIND", "127.0.0.1")
            .env_remove("SERVICE_DATA")
            .env_remove("EXOCOM_TOKENS"),
    );
    let port = port_in(&p.wait_for("ExoCom online at port", Duration::from_secs(10)));
    (p, port)
}

#[test]
fn serves_the_routes_of_service_data_and_stops_on_sigterm() {
    let mut p = Proc::spawn(
        Command::new(exocom())
            .env("PORT", "0")
            .env("EXOCOM_BIND", "127.0.0.1")
            .env(
                "SERVICE_DATA",
                r#"{"web":{"sends":["ping"]},"ping":{"receives":["ping"]}}"#,
            ),
    );
    let port = port_in(&p.wait_for("ExoCom online at port", Duration::from_secs(10)));
    let config = get_config_json(port);
    assert_eq!(config["clients"], serde_json::json!([]));
    assert_eq!(config["routes"]["web"]["sends"][0], "ping");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn takes_its_routes_from_an_application_with_app() {
    let d = dir_with(&[
        (
            "application.yml",
            "services:\n  users:\n    location: ./u\n    message-translation:\n      - {public: users.get, internal: mongo get}\n",
        ),
        (
            "u/service.yml",
            "type: users\nmessages:\n  receives: [mongo get]\n",
        ),
    ]);
    let (mut p, port) = exocom_app(d.path());
    let config = get_config_json(port);
    assert_eq!(config["routes"]["users"]["receives"][0], "mongo get");
    assert_eq!(
        config["routes"]["users"]["translations"][0]["public"],
        "users.get"
    );
    p.signal("INT");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_bad_application_or_service_data_exits_1_with_the_reason() {
    let d = dir_with(&[("application.yml", "services: [a]\n")]);
    let mut p = Proc::spawn(
        Command::new(exocom())
            .arg("--app")
            .arg(d.path())
            .args(["--port", "0"]),
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        p.output()
            .contains("application.yml:1:11: services must be a mapping"),
        "{}",
        p.output()
    );

    let mut p = Proc::spawn(
        Command::new(exocom())
            .env("PORT", "0")
            .env("SERVICE_DATA", "{not json"),
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(p.output().starts_with("exocom: "), "{}", p.output());
}

#[test]
fn a_taken_port_is_an_error_that_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut p = Proc::spawn(
        Command::new(exocom())
            .env("PORT", port.to_string())
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("SERVICE_DATA", "{}"),
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(p.output().contains(&port.to_string()), "{}", p.output());
}

/// Runs `exo send` with these arguments (waiting at most `timeout`
/// seconds) and no bus variables of this
/// process; returns (exit code, stdout, stderr).
fn exo_send_with(timeout: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("exo"))
        .arg("send")
        .args(args)
        .args(["--timeout", timeout])
        .env_remove("ROLE")
        .env_remove("EXOCOM_URL")
        .env_remove("EXOCOM_TOKEN")
        .env_remove("EXOCOM_CA_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_wss_with_tokens_to_real_services() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let d = dir_with(&[
        ("cert.pem", &cert.cert.pem()),
        ("key.pem", &cert.signing_key.serialize_pem()),
        (
            "tokens.yml",
            "exo: exo-token\nping: [old-ping-token, ping-token]\n",
        ),
    ]);
    let file = |name: &str| d.path().join(name).to_str().unwrap().to_owned();
    let mut bus = Proc::spawn(
        Command::new(exocom())
            .args(["--port", "0", "--tls-cert", &file("cert.pem")])
            .args(["--tls-key", &file("key.pem"), "--tokens", &file("tokens.yml")])
            .env("EXOCOM_BIND", "127.0.0.1")
            .env(
                "SERVICE_DATA",
                r#"{"exo":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]}}"#,
            ),
    );
    let port = port_in(&bus.wait_for("ExoCom online at port", Duration::from_secs(10)));
    let started = bus.output();
    assert!(
        started.contains("Tokens required: 2 roles have one (exo, ping)"),
        "{started}"
    );
    assert!(
        started.contains("Serving TLS (wss://, https://) with "),
        "{started}"
    );
    assert!(!started.contains("No tokens configured"), "{started}");
    let url = format!("wss://localhost:{port}");

    // The Rust ping example, through EXOCOM_URL, EXOCOM_CA_FILE, EXOCOM_TOKEN.
    let mut ping = Proc::spawn(
        Command::new(bin("rust-ping"))
            .current_dir(repo_root().join("examples/rust-ping"))
            .env("EXOCOM_URL", &url)
            .env("EXOCOM_CA_FILE", file("cert.pem"))
            .env("EXOCOM_TOKEN", "ping-token")
            .env_remove("ROLE"),
    );
    ping.wait_for("online at port", Duration::from_secs(10));
    bus.wait_for("'ping' registered", Duration::from_secs(10));

    // exo send --await through TLS, with the exo role's token.
    let (code, out, err) = exo_send_with(
        "5",
        &[
            "ping",
            r#"{"over":"wss"}"#,
            "--await",
            "--url",
            &url,
            "--ca-file",
            &file("cert.pem"),
            "--token",
            "exo-token",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.trim(), r#"pong {"over":"wss"}"#);

    // A wrong token is refused (HTTP 401), logged with the peer address,
    // and exo send says why.
    let (code, _, err) = exo_send_with(
        "1.5",
        &[
            "ping",
            "--url",
            &url,
            "--ca-file",
            &file("cert.pem"),
            "--token",
            "ping-token",
            "--role",
            "exo",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("the bus refused the token of 'exo' (HTTP 401)"),
        "{err}"
    );
    bus.wait_for(
        "Refused a connection from 127.0.0.1:",
        Duration::from_secs(10),
    );
    // Without the CA file the self-signed certificate is not trusted.
    let (code, _, err) = exo_send_with("1.5", &["ping", "--url", &url, "--token", "exo-token"]);
    assert_eq!(code, 1);
    assert!(err.contains("TLS"), "{err}");
    bus.wait_for(
        "Warning: TLS handshake with 127.0.0.1:",
        Duration::from_secs(10),
    );

    ping.signal("TERM");
    assert_eq!(ping.wait_exit(Duration::from_secs(10)), Some(0));
    bus.signal("TERM");
    assert_eq!(bus.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn takes_tokens_from_the_application_and_warns_when_open() {
    let d = dir_with(&[
        (
            "application.yml",
            "services:\n  ping:\n    location: ./p\ntokens:\n  ping: app-ping-token\n",
        ),
        (
            "p/service.yml",
            "type: ping\nmessages:\n  receives: [ping]\n",
        ),
    ]);
    let (mut p, port) = exocom_app(d.path());
    assert!(
        p.output()
            .contains("Tokens required: 1 roles have one (ping)"),
        "{}",
        p.output()
    );
    let (code, _, err) = exo_send_with(
        "1.5",
        &["ping", "--port", &port.to_string(), "--role", "ping"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    let (code, out, err) = exo_send_with(
        "5",
        &[
            "ping",
            "--port",
            &port.to_string(),
            "--role",
            "ping",
            "--token",
            "app-ping-token",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));

    // No tokens anywhere: open, with one warning before the online line.
    let mut p = Proc::spawn(
        Command::new(exocom())
            .args(["--port", "0"])
            .env("EXOCOM_BIND", "127.0.0.1")
            .env("SERVICE_DATA", "{}")
            .env_remove("EXOCOM_TOKENS"),
    );
    p.wait_for("ExoCom online at port", Duration::from_secs(10));
    p.wait_for("No tokens configured", Duration::from_secs(10));
    p.drain_for(Duration::from_millis(200));
    let out = p.output();
    assert_eq!(out.matches("No tokens configured").count(), 1, "{out}");
    assert!(
        out.contains("Warning: No tokens configured: any client may connect"),
        "{out}"
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

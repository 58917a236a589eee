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
    let mut p = Proc::spawn(
        Command::new(exocom())
            .arg("--app")
            .arg(d.path())
            .args(["--port", "0"])
            .env("EXOCOM_BIND", "127.0.0.1")
            .env_remove("SERVICE_DATA"),
    );
    let port = port_in(&p.wait_for("ExoCom online at port", Duration::from_secs(10)));
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

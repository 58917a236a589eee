//! `exo run` and `exo check` as a user runs them: real processes, a real
//! bus on a free port, the Rust ping example as the service.

use std::process::Command;
use std::time::Duration;

use exo_harness::process::exo_send;
use exo_harness::*;
use exoservice::config::env::NATS_VARS;

fn exo() -> std::path::PathBuf {
    bin("exo")
}

fn rust_ping() -> std::path::PathBuf {
    bin("rust-ping")
}

const APP: &str = "name: ping-test\nservices:\n  ping:\n    location: ./ping\n";
const PING: &str = "type: ping\nstartup:\n  command: exec \"$EXO_TEST_PING\"\n  online-text: online at port\nmessages:\n  receives: [ping]\n  sends: [pong]\n";

/// `exo run DIR --port 0` with no bus or NATS settings inherited from the
/// environment.
fn exo_run_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(exo());
    cmd.arg("run")
        .arg(dir)
        .args(["--port", "0"])
        .env_remove("EXOCOM_PORT")
        .env_remove("EXOCOM_TOKEN")
        .env_remove("EXOCOM_URL");
    for var in NATS_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// `exo run DIR --port 0 EXTRA...` with the Rust ping example as
/// `$EXO_TEST_PING` (see [`exo_run_command`]).
fn exo_run(dir: &std::path::Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        exo_run_command(dir)
            .args(extra)
            .env("EXO_TEST_PING", rust_ping()),
    )
}

/// [`exo_run`], waiting until the app is online; the bus's port.
fn start_app_with(dir: &std::path::Path, extra: &[&str]) -> (Proc, u16) {
    let mut p = exo_run(dir, extra);
    let port = port_in(&p.wait_for("ExoCom online at port", Duration::from_secs(20)));
    p.wait_for("application ping-test is online", Duration::from_secs(30));
    (p, port)
}

fn start_app(dir: &std::path::Path) -> (Proc, u16) {
    start_app_with(dir, &["--stop-timeout", "5", "--online-timeout", "30"])
}

/// Sends `signal` to `exo run` and waits (20 s at most) until it exits
/// with status 0.
fn stop(p: &mut Proc, signal: &str) {
    p.signal(signal);
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        p.output()
    );
}

#[test]
fn runs_an_app_answers_exo_send_and_stops_on_sigterm() {
    let d = dir_with(&[("application.yml", APP), ("ping/service.yml", PING)]);
    let (mut p, port) = start_app(d.path());
    let (code, out, err) = exo_send(port, &["ping", r#"{"n":1,"text":"héllo"}"#, "--await"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.trim(), r#"pong {"n":1,"text":"héllo"}"#);
    // The bus's log lines come out prefixed with `exocom`.
    p.wait_for("--[ ping ]->", Duration::from_secs(5));
    let routed = p.wait_for("--[ pong ]->", Duration::from_secs(5));
    assert!(routed.trim_start().starts_with("exocom |"), "{routed}");
    // The service's own output is prefixed with its role.
    let online = p.wait_for("ping | ", Duration::from_secs(1));
    assert!(online.contains("ping |"), "{online}");

    stop(&mut p, "TERM");
    let out = p.output();
    assert!(out.contains("ping | stopped (exit status: 0)"), "{out}");
    assert!(out.contains("exo | stopped"), "{out}");
}

#[test]
fn sigint_stops_the_app_too() {
    let d = dir_with(&[("application.yml", APP), ("ping/service.yml", PING)]);
    let (mut p, _port) = start_app(d.path());
    stop(&mut p, "INT");
}

#[test]
fn a_bad_config_is_reported_with_file_line_and_column() {
    let d = dir_with(&[
        (
            "application.yml",
            "services:\n  ping:\n    location: ./ping\n",
        ),
        ("ping/service.yml", "type: ping\nmessages:\n  sends: pong\n"),
    ]);
    let mut p = exo_run(d.path(), &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    let out = p.output();
    assert!(
        out.contains(
            "ping/service.yml:3:10: messages.sends must be a list of message names, found a string"
        ),
        "{out}"
    );
}

#[test]
fn a_service_that_dies_before_it_is_online_fails_the_run() {
    let d = dir_with(&[
        ("application.yml", APP),
        (
            "ping/service.yml",
            "type: ping\nstartup:\n  command: echo starting; exit 3\nmessages:\n  receives: [ping]\n",
        ),
    ]);
    let mut p = exo_run(d.path(), &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    let out = p.output();
    assert!(out.contains("ping | started (pid "), "{out}");
    assert!(
        out.contains("exo run: ping exited (exit status: 3) before it was online"),
        "{out}"
    );
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let d = dir_with(&[
        ("application.yml", APP),
        (
            "ping/service.yml",
            "type: ping\nstartup:\n  command: trap '' TERM; echo online at port 1; while true; do sleep 0.1; done\n",
        ),
    ]);
    let mut p = exo_run(d.path(), &["--stop-timeout", "1"]);
    p.wait_for("is online", Duration::from_secs(10));
    p.signal("TERM");
    assert_eq!(
        p.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        p.output()
    );
    assert!(
        p.output()
            .contains("ping | did not stop within 1s: killing it"),
        "{}",
        p.output()
    );
}

/// `exo check DIR [extra]` with none of the NATS variables inherited.
fn exo_check(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(exo());
    cmd.arg("check").arg(dir).args(extra);
    for var in NATS_VARS {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

/// What `exo check DIR` prints; it must succeed.
fn check_ok(dir: &std::path::Path) -> String {
    let out = exo_check(dir, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// The routes `exo check DIR --routes` prints.
fn check_routes(dir: &std::path::Path) -> serde_json::Value {
    let out = exo_check(dir, &["--routes"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "exo check --routes printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn check_summarises_an_app_and_prints_its_routes() {
    let d = dir_with(&[("application.yml", APP), ("ping/service.yml", PING)]);
    let text = check_ok(d.path());
    assert!(text.contains("application ping-test, 1 service"), "{text}");
    assert!(text.contains("receives: ping"), "{text}");
    assert!(text.trim_end().ends_with("ok"), "{text}");
    let routes = check_routes(d.path());
    assert_eq!(routes["ping"]["receives"][0], "ping");
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let d = dir_with(&[
        (
            "application.yml",
            "services:\n  a: { location: ./a }\n  b: { location: ./b }\n",
        ),
        ("a/service.yml", "type: a\nmessages: nope\n"),
        ("b/service.yml", "type: b\nmessages:\n  receives: 3\n"),
    ]);
    let out = exo_check(d.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a/service.yml:2:11: messages must be a mapping"),
        "{err}"
    );
    assert!(
        err.contains(
            "b/service.yml:3:13: messages.receives must be a list of message names, found a number"
        ),
        "{err}"
    );
    assert!(err.contains("2 errors found"), "{err}");
}

#[test]
fn restart_starts_a_killed_service_again() {
    let d = dir_with(&[("application.yml", APP), ("ping/service.yml", PING)]);
    let (mut p, port) = start_app_with(d.path(), &["--stop-timeout", "5", "--restart"]);
    let started = p.wait_for("ping | started (pid ", Duration::from_secs(1));
    let pid: u32 = started
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started:?}"));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    p.wait_for("starting it again in 1s", Duration::from_secs(10));
    // The new process registers again and answers.
    let mut answered = false;
    for _ in 0..40 {
        let (code, out, _) = exo_send(port, &["ping", "{\"again\":true}", "--await"]);
        if code == 0 && out.contains("again") {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answered, "{}", p.output());
    stop(&mut p, "TERM");
}

#[test]
fn tokens_in_the_application_close_the_bus_and_reach_each_service() {
    let app = format!("{APP}tokens:\n  ping: ping-secret-1\n  exo: tool-secret-2\n");
    let d = dir_with(&[("application.yml", &app), ("ping/service.yml", PING)]);
    let (mut p, port) = start_app_with(d.path(), &["--stop-timeout", "5"]);
    // The ping service got its token: it registers.
    p.wait_for("application ping-test is online", Duration::from_secs(30));
    p.wait_for("'ping' registered", Duration::from_secs(5));
    let (code, out, err) = exo_send(
        port,
        &["ping", "{\"n\":1}", "--await", "--token", "tool-secret-2"],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.trim(), r#"pong {"n":1}"#);
    let out = Command::new(exo())
        .args(["send", "ping", "{}", "--await", "--timeout", "2", "--port"])
        .arg(port.to_string())
        .env_remove("EXOCOM_TOKEN")
        .env_remove("ROLE")
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a send without a token must fail"
    );
    stop(&mut p, "TERM");
}

#[test]
fn a_service_without_a_token_is_an_error_before_anything_starts() {
    let app = format!("{APP}tokens:\n  other: x-secret\n");
    let d = dir_with(&[("application.yml", &app), ("ping/service.yml", PING)]);
    let mut p = exo_run(d.path(), &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        p.output().contains("ping has no token under `tokens:`"),
        "{}",
        p.output()
    );
}

/// `exo run DIR --port 0 --stop-timeout 5` (see [`exo_run_command`]) with
/// `env` set.
fn exo_run_nats(dir: &std::path::Path, env: &[(&str, &str)]) -> Proc {
    Proc::spawn(
        exo_run_command(dir)
            .args(["--stop-timeout", "5"])
            .envs(env.iter().copied()),
    )
}

/// A service that prints the variables it got, then says it is online and
/// waits to be stopped.
const ENV_SERVICE: &str = "type: ping\nstartup:\n  command: sh show-env.sh\nmessages:\n  receives: [ping]\n  sends: [pong]\ndelivery:\n  ping: at-least-once\n";
const SHOW_ENV: &str = "\
echo \"transport=$EXOSERVICE_TRANSPORT\"
echo \"url=$NATS_URL\"
echo \"app=$EXOSERVICE_APP\"
echo \"routes=$EXOSERVICE_ROUTES\"
echo \"exocom-port=${EXOCOM_PORT:-unset}\"
echo online at port 1
while true; do sleep 0.1; done
";

/// The value a service printed as `ping | KEY=VALUE`.
fn printed(p: &mut Proc, key: &str) -> String {
    let prefix = format!("ping | {key}=");
    let line = p.wait_for(&prefix, Duration::from_secs(5));
    line.split_once(&prefix)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn a_nats_app_runs_without_exocom_and_its_services_get_the_nats_settings() {
    let d = dir_with(&[
        (
            "application.yml",
            "name: ping test\ntransport: nats\nnats-url: nats-a:4300\nservices:\n  ping:\n    location: ./ping\n",
        ),
        ("ping/service.yml", ENV_SERVICE),
        ("ping/show-env.sh", SHOW_ENV),
    ]);
    let mut p = exo_run_nats(d.path(), &[]);
    let line = p.wait_for("messages go over NATS", Duration::from_secs(10));
    assert!(
        line.ends_with(
            "exo | messages go over NATS at nats://nats-a:4300 (application 'ping-test')"
        ),
        "{line}"
    );
    p.wait_for(
        "application ping test is online: 1 service, messages over NATS at nats://nats-a:4300",
        Duration::from_secs(10),
    );
    assert_eq!(printed(&mut p, "transport"), "nats");
    assert_eq!(printed(&mut p, "url"), "nats://nats-a:4300");
    assert_eq!(printed(&mut p, "app"), "ping-test");
    assert_eq!(printed(&mut p, "exocom-port"), "unset");
    let routes: serde_json::Value = serde_json::from_str(&printed(&mut p, "routes")).unwrap();
    assert_eq!(routes["ping"]["receives"], serde_json::json!(["ping"]));
    assert_eq!(routes["ping"]["atLeastOnce"], serde_json::json!(["ping"]));
    // The role `exo` is in the routes, so `exo send` can talk to the app.
    assert_eq!(routes["exo"]["sends"], serde_json::json!(["ping"]));
    assert_eq!(routes["exo"]["receives"], serde_json::json!(["pong"]));
    stop(&mut p, "TERM");
    assert!(!p.output().contains("ExoCom online"), "{}", p.output());
}

#[test]
fn the_environment_of_exo_run_can_choose_nats_and_its_settings() {
    let d = dir_with(&[
        (
            "application.yml",
            "name: ping-test\nnats-url: nats-a:4300\nservices:\n  ping:\n    location: ./ping\n",
        ),
        ("ping/service.yml", ENV_SERVICE),
        ("ping/show-env.sh", SHOW_ENV),
    ]);
    let mut p = exo_run_nats(
        d.path(),
        &[
            ("EXOSERVICE_TRANSPORT", "nats"),
            ("NATS_URL", "tls://user:secret@nats-b:4443"),
            ("EXOSERVICE_APP", "other_app"),
        ],
    );
    let line = p.wait_for("messages go over NATS", Duration::from_secs(10));
    assert!(
        line.ends_with(
            "messages go over NATS at tls://user:***@nats-b:4443 (application 'other_app')"
        ),
        "{line}"
    );
    assert_eq!(printed(&mut p, "url"), "tls://user:secret@nats-b:4443");
    assert_eq!(printed(&mut p, "app"), "other_app");
    stop(&mut p, "TERM");

    // Without the variable the same app runs on ExoCom, as before.
    let mut p = exo_run_nats(d.path(), &[]);
    p.wait_for("ExoCom online at port", Duration::from_secs(10));
    assert_eq!(printed(&mut p, "transport"), "exocom");
    assert_ne!(printed(&mut p, "exocom-port"), "unset");
    stop(&mut p, "TERM");
}

#[test]
fn tokens_on_a_nats_app_are_an_error_and_bad_settings_are_named() {
    let d = dir_with(&[
        (
            "application.yml",
            "name: ping-test\ntransport: nats\nservices:\n  ping:\n    location: ./ping\ntokens:\n  ping: secret-1\n",
        ),
        ("ping/service.yml", ENV_SERVICE),
        ("ping/show-env.sh", SHOW_ENV),
    ]);
    let mut p = exo_run_nats(d.path(), &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    let out = p.output();
    assert!(
        out.contains("`tokens:` closes the ExoCom bus, but this application runs over NATS, where they would not be checked"),
        "{out}"
    );
    assert!(!out.contains("started (pid"), "{out}");

    let mut p = exo_run_nats(
        d.path(),
        &[("EXOSERVICE_TRANSPORT", "nats"), ("NATS_URL", "http://x")],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        p.output()
            .contains("exo run: $NATS_URL: must be nats://HOST:PORT"),
        "{}",
        p.output()
    );
}

#[test]
fn check_shows_the_transport_and_the_at_least_once_names() {
    let d = dir_with(&[
        (
            "application.yml",
            "name: ping-test\ntransport: nats\nservices:\n  ping:\n    location: ./ping\n",
        ),
        ("ping/service.yml", ENV_SERVICE),
    ]);
    let text = check_ok(d.path());
    assert!(
        text.contains("transport: nats at nats://127.0.0.1:4222 (application 'ping-test')"),
        "{text}"
    );
    assert!(text.contains("at-least-once: ping"), "{text}");
    let routes = check_routes(d.path());
    assert_eq!(routes["ping"]["atLeastOnce"][0], "ping");
}

#[test]
fn exo_send_takes_the_nats_settings_and_adds_its_role_to_the_routes() {
    use exo_cli::send::{NatsFlags, SendArgs, send_config};
    use exoservice::config::{Env, Transport};
    let d = dir_with(&[
        (
            "application.yml",
            "name: ping-test\ntransport: nats\nnats-url: nats-a:4300\nservices:\n  ping:\n    location: ./ping\n",
        ),
        ("ping/service.yml", ENV_SERVICE),
    ]);
    let args = SendArgs {
        name: "ping".into(),
        payload: None,
        role: "exo".into(),
        host: "localhost".into(),
        port: 3100,
        wait: true,
        timeout: Duration::from_secs(1),
        json: false,
        token: None,
        url: None,
        ca_file: None,
    };
    // Nothing says NATS: ExoCom.
    let c = send_config(&args, &Env::empty()).unwrap();
    assert_eq!(c.transport(), Transport::Exocom);
    // The application directory says NATS, and gives routes and URL.
    let flags = NatsFlags {
        url: None,
        application: Some(d.path().to_owned()),
    };
    let c = send_config(&args, &flags.apply(&Env::empty())).unwrap();
    let n = c.nats.as_ref().expect("nats settings");
    assert_eq!(
        (n.url.as_str(), n.app.as_str()),
        ("nats://nats-a:4300", "ping-test")
    );
    assert_eq!(n.routes.role("exo").unwrap().sends, ["ping"]);
    // --nats wins over the application's URL.
    let flags = NatsFlags {
        url: Some("nats-b:4301".into()),
        application: Some(d.path().to_owned()),
    };
    let c = send_config(&args, &flags.apply(&Env::empty())).unwrap();
    assert_eq!(c.nats.unwrap().url, "nats://nats-b:4301");
    // Another role must be in the routes.
    let other = SendArgs {
        role: "stranger".into(),
        ..args.clone()
    };
    let e = send_config(&other, &flags.apply(&Env::empty())).unwrap_err();
    assert!(
        e.starts_with("role 'stranger' is not in the application's routes (they have: ping)"),
        "{e}"
    );
    // NATS without routes says what is missing.
    let e = send_config(&args, &Env::from_pairs([("EXOSERVICE_TRANSPORT", "nats")])).unwrap_err();
    assert!(
        e.contains("set EXOSERVICE_ROUTES (routes JSON) or EXOSERVICE_APPLICATION"),
        "{e}"
    );
}

#[test]
fn exo_send_talks_to_a_nats_app_that_exo_run_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(exoservice::testing::nats::NatsServer::start())
        .unwrap_or_else(|e| panic!("{e}"));
    let app = format!(
        "name: ping-test\ntransport: nats\nnats-url: {}\nservices:\n  ping:\n    location: ./ping\n",
        server.url()
    );
    let ping = format!("{PING}delivery:\n  ping: at-least-once\n");
    let d = dir_with(&[("application.yml", &app), ("ping/service.yml", &ping)]);
    let mut p = exo_run_nats(
        d.path(),
        &[("EXO_TEST_PING", rust_ping().to_str().unwrap())],
    );
    p.wait_for(
        &format!("ping | online at port {}", server.port()),
        Duration::from_secs(20),
    );
    p.wait_for("application ping-test is online", Duration::from_secs(5));
    let mut cmd = Command::new(exo());
    cmd.args(["send", "ping", r#"{"n":7}"#, "--await", "--timeout", "10"])
        .env_remove("ROLE")
        .env("EXOSERVICE_APPLICATION", d.path());
    for var in NATS_VARS.iter().filter(|v| **v != "EXOSERVICE_APPLICATION") {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}\nexo run: {}",
        String::from_utf8_lossy(&out.stderr),
        p.output()
    );
    assert_eq!(stdout.trim(), r#"pong {"n":7}"#);
    stop(&mut p, "TERM");
    drop(server);
}

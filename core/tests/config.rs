//! Config loading from real files: the three service.yml shapes, the
//! environment overrides, application.yml in both forms, and the errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use exoservice::config::{AppConfig, ConfigError, Env, ServiceConfig, Visibility};

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn load(dir: &Path, env: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
    ServiceConfig::load_with(dir, &Env::from_pairs(env.iter().copied()), None)
}

fn err(dir: &Path, env: &[(&str, &str)]) -> String {
    let e = load(dir, env).expect_err("expected a config error");
    // Print the path relative to the temp dir so assertions read naturally.
    e.to_string().replace(&format!("{}/", dir.display()), "")
}

/// The error of a service whose `service.yml` is `text`.
fn service_error(text: &str) -> String {
    let d = dir_with(&[("service.yml", text)]);
    err(d.path(), &[])
}

const SHAPE_2017: &str = "\
type: todo-service
description: stores todo items
author: someone
startup:
  command: python server.py
  online-text: online at port
messages:
  receives: [todo.add, todo.list]
  sends: [todo.added, todo.listing]
";

#[test]
fn reads_the_2017_shape() {
    let d = dir_with(&[("service.yml", SHAPE_2017)]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!(c.role, "todo-service");
    assert_eq!(c.receives, ["todo.add", "todo.list"]);
    assert_eq!(c.sends, ["todo.added", "todo.listing"]);
    assert_eq!(c.description.as_deref(), Some("stores todo items"));
    assert_eq!(c.author.as_deref(), Some("someone"));
    let s = c.startup.unwrap();
    assert_eq!(s.command, "python server.py");
    assert_eq!(s.online_text.as_deref(), Some("online at port"));
    assert_eq!(c.exocom_host, "localhost");
    assert_eq!(c.exocom_port, 80);
    assert_eq!(c.concurrency, 64);
    assert_eq!(c.outgoing_buffer, 10_000);
    assert_eq!(c.file, d.path().join("service.yml"));
}

#[test]
fn reads_the_2016_shape_from_config_yml() {
    let d = dir_with(&[(
        "config.yml",
        "name: users\ndescription: the users\nsetup: npm install\nstartup:\n  command: node server.js\nmessages:\n  receives:\n    - users.list\n  sends:\n    - users.listing\n",
    )]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!(c.role, "users");
    assert_eq!(c.setup.as_deref(), Some("npm install"));
    assert_eq!(c.receives, ["users.list"]);
    assert_eq!(c.file, d.path().join("config.yml"));
}

#[test]
fn a_2016_free_text_name_is_not_a_role_but_role_env_fixes_it() {
    let d = dir_with(&[(
        "config.yml",
        "name: test users server\nmessages:\n  receives: [a]\n",
    )]);
    let e = err(d.path(), &[]);
    assert!(
        e.starts_with("config.yml:1:7: name \"test users server\" cannot be used as the role"),
        "{e}"
    );
    let c = load(d.path(), &[("ROLE", "users")]).unwrap();
    assert_eq!(c.role, "users");
}

#[test]
fn reads_the_2018_shape_with_dependency_data() {
    let d = dir_with(&[(
        "service.yml",
        "type: public\ndescription: web\ndependency-data:\n  exocom:\n    receives: [users.created]\n    sends: [users.create]\ndevelopment:\n  scripts:\n    run: node server.js\ndocker:\n  image: foo\n",
    )]);
    let e = err(d.path(), &[]);
    assert!(
        e.contains("`type: public` says what kind of service"),
        "{e}"
    );
    let c = load(d.path(), &[("ROLE", "web")]).unwrap();
    assert_eq!(c.role, "web");
    assert_eq!(c.receives, ["users.created"]);
    assert_eq!(c.sends, ["users.create"]);
    assert_eq!(c.startup.unwrap().command, "node server.js");
}

#[test]
fn service_yml_wins_over_config_yml() {
    let d = dir_with(&[
        ("service.yml", "type: new-one\n"),
        ("config.yml", "name: old-one\n"),
    ]);
    assert_eq!(load(d.path(), &[]).unwrap().role, "new-one");
}

#[test]
fn environment_overrides_the_file() {
    let d = dir_with(&[(
        "service.yml",
        "type: ping\nmessages:\n  receives: [ping]\n  sends: [pong]\nexoservice:\n  concurrency: 8\n  outgoing-buffer: 50\n  drain-timeout-ms: 1500\n",
    )]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!((c.concurrency, c.outgoing_buffer), (8, 50));
    assert_eq!(c.drain_timeout, Duration::from_millis(1500));
    let c = load(
        d.path(),
        &[
            ("ROLE", "pinger"),
            ("EXOCOM_HOST", "bus.local"),
            ("EXOCOM_PORT", "4100"),
            ("EXOSERVICE_CONCURRENCY", "3"),
            ("EXOSERVICE_OUTGOING_BUFFER", "7"),
            ("EXOSERVICE_DRAIN_TIMEOUT_MS", "250"),
        ],
    )
    .unwrap();
    assert_eq!(c.role, "pinger");
    assert_eq!(c.exocom_host, "bus.local");
    assert_eq!(c.exocom_port, 4100);
    assert_eq!((c.concurrency, c.outgoing_buffer), (3, 7));
    assert_eq!(c.drain_timeout, Duration::from_millis(250));
}

#[test]
fn bad_environment_values_are_named() {
    let d = dir_with(&[("service.yml", "type: ping\n")]);
    assert_eq!(
        err(d.path(), &[("EXOCOM_PORT", "eighty")]),
        "$EXOCOM_PORT: must be a port number from 1 to 65535, found \"eighty\""
    );
    assert_eq!(
        err(d.path(), &[("EXOCOM_PORT", "70000")]),
        "$EXOCOM_PORT: must be a port number from 1 to 65535, found \"70000\""
    );
    assert!(
        err(d.path(), &[("ROLE", "no good")]).starts_with("$ROLE: \"no good\" is not a role name")
    );
    assert_eq!(
        err(d.path(), &[("EXOSERVICE_CONCURRENCY", "0")]),
        "$EXOSERVICE_CONCURRENCY: must be a whole number above 0, found \"0\""
    );
}

#[test]
fn wrong_types_name_file_line_and_column() {
    assert_eq!(
        service_error(
            "type: todo\nmessages:\n  receives:\n    - todo.add\n\n\n  sends: todo.added\n"
        ),
        "service.yml:7:10: messages.sends must be a list of message names, found a string"
    );
    assert_eq!(
        service_error("type: todo\nmessages:\n  receives: [a, {b: 1}]\n"),
        "service.yml:3:17: messages.receives must be a list of message names, found a mapping in it"
    );
    assert_eq!(
        service_error("type: todo\nmessages: [a]\n"),
        "service.yml:2:11: messages must be a mapping (key: value lines), found a list"
    );
    assert_eq!(
        service_error("type: todo\nexoservice:\n  concurrency: many\n"),
        "service.yml:3:16: exoservice.concurrency must be a whole number above 0, found a string"
    );
    let d = dir_with(&[("service.yml", "type: Todo Service\n")]);
    assert!(err(d.path(), &[]).starts_with("service.yml:1:7: type must be the service's role"));
    assert_eq!(
        service_error("type: todo\nstartup:\n  online-text: up\n"),
        "service.yml:3:3: startup must have a `command:` (the shell command that starts the service)"
    );
}

#[test]
fn syntax_errors_have_a_position_and_missing_files_say_so() {
    let d = dir_with(&[("service.yml", "type: todo\nmessages:\n  receives: [a, b\n")]);
    let e = load(d.path(), &[]).unwrap_err();
    assert!(e.line.is_some() && e.column.is_some(), "{e}");
    assert!(e.to_string().contains("invalid YAML"), "{e}");
    let d = dir_with(&[]);
    let e = err(d.path(), &[]);
    assert!(e.starts_with("service.yml: file not found"), "{e}");
    let e = load(&d.path().join("nope"), &[]).unwrap_err().to_string();
    assert!(
        e.ends_with("nope: no such directory (expected a service directory holding service.yml)"),
        "{e}"
    );
    let d = dir_with(&[("service.yml", "")]);
    assert!(err(d.path(), &[]).starts_with("service.yml: the file is empty"));
}

#[test]
fn unknown_keys_are_allowed() {
    let d = dir_with(&[(
        "service.yml",
        "type: ping\nproduction:\n  url: x\nremote: {dependencies: [1, 2]}\ndocker: ~\nmessages:\n  receives: [ping]\n",
    )]);
    assert_eq!(load(d.path(), &[]).unwrap().receives, ["ping"]);
}

fn app_dir(app: &str) -> tempfile::TempDir {
    dir_with(&[
        ("application.yml", app),
        (
            "todo-service/service.yml",
            "type: todo\nmessages:\n  receives: [todo.add]\n  sends: [todo.added, users.get]\n",
        ),
        (
            "web-server/service.yml",
            "type: public\ndependency-data:\n  exocom:\n    receives: [todo.added, users.details]\n    sends: [todo.add]\n",
        ),
        (
            "users-service/service.yml",
            "type: users\nmessages:\n  receives: [mongo get]\n  sends: [mongo details]\n",
        ),
    ])
}

const FLAT_APP: &str = "\
name: todo-app
services:
  todo: { location: ./todo-service }
  web:  { location: ./web-server }
  users:
    location: ./users-service
    message-translation:
      - public: users.get
        internal: mongo get
      - public: users.details
        internal: mongo details
";

#[test]
fn reads_a_flat_application_and_builds_routes() {
    let d = app_dir(FLAT_APP);
    let env = Env::from_pairs([("ROLE", "ignored"), ("EXOCOM_PORT", "4000")]);
    let app = AppConfig::load_with(d.path(), &env).unwrap();
    assert_eq!(app.name.as_deref(), Some("todo-app"));
    let roles: Vec<_> = app.services.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(roles, ["todo", "web", "users"]);
    let web = app.service("web").unwrap();
    assert_eq!(
        web.config.role, "web",
        "the key names the role, not ROLE nor type: public"
    );
    assert_eq!(web.config.exocom_port, 4000);
    assert_eq!(web.dir, d.path().join("./web-server"));
    let routes = app.routes();
    let users = routes.role("users").unwrap();
    assert_eq!(users.receives, ["mongo get"]);
    assert_eq!(users.to_public("mongo details"), "users.details");
    assert_eq!(users.to_internal("users.get"), "mongo get");
    assert!(app.warnings().is_empty(), "{:?}", app.warnings());
}

#[test]
fn reads_the_grouped_form_and_2018_translations() {
    let d = app_dir(
        "name: todo-app\nservices:\n  public:\n    web: { location: ./web-server }\n  private:\n    todo:\n      location: ./todo-service\n    users:\n      location: ./users-service\n      dependency-data:\n        exocom:\n          translations:\n            - {public: users.get, internal: mongo get}\n            - {public: users.details, internal: mongo details}\n",
    );
    let app = AppConfig::load_with(d.path(), &Env::empty()).unwrap();
    assert_eq!(
        app.service("web").unwrap().visibility,
        Some(Visibility::Public)
    );
    assert_eq!(
        app.service("todo").unwrap().visibility,
        Some(Visibility::Private)
    );
    assert_eq!(app.service("users").unwrap().translations.len(), 2);
    let json: serde_json::Value = serde_json::from_str(&app.routes().to_json()).unwrap();
    assert_eq!(json["users"]["translations"][0]["internal"], "mongo get");
    assert_eq!(json["web"]["sends"][0], "todo.add");
}

#[test]
fn application_errors_are_all_reported() {
    let d = app_dir(
        "services:\n  todo: { location: ./todo-service }\n  web: { location: ./missing }\n  Bad Role: { location: ./x }\n  users:\n    location: ./users-service\n    message-translation: users.get\n  nowhere: {}\n",
    );
    let errors = AppConfig::load_with(d.path(), &Env::empty()).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", d.path().display()), "")
        })
        .collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text[0].starts_with("./missing: no such directory"),
        "{text:#?}"
    );
    assert!(
        text[1].starts_with("application.yml:4:3: \"Bad Role\" is not a role name"),
        "{text:#?}"
    );
    assert!(
        text[2]
            .starts_with("application.yml:7:26: services.users.message-translation must be a list"),
        "{text:#?}"
    );
    assert!(
        text[3].starts_with("application.yml:8:12: services.nowhere needs `location:`"),
        "{text:#?}"
    );
}

#[test]
fn warnings_point_at_messages_nobody_handles() {
    let d = app_dir(
        "services:\n  todo: { location: ./todo-service }\n  web: { location: ./web-server }\n  ext: { docker-image: mongo }\n",
    );
    let app = AppConfig::load_with(d.path(), &Env::empty()).unwrap();
    let w = app.warnings();
    assert!(
        w.contains(&"todo sends \"users.get\", which no service receives".to_owned()),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|l| l.starts_with("web receives \"users.details\", which no service sends")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|l| l.starts_with("service \"ext\" has no `location:`")),
        "{w:#?}"
    );
}

#[test]
fn the_examples_in_this_repository_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for entry in fs::read_dir(root.join("examples")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("application.yml").is_file() {
            let app = AppConfig::load_with(&dir, &Env::empty())
                .unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
            assert!(!app.services.is_empty());
        } else if dir.join("service.yml").is_file() {
            ServiceConfig::load_with(&dir, &Env::empty(), None).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

// ---- the nats transport: environment, delivery, application.yml ----

use exoservice::config::{DeliveryMode, NatsSettings, Transport, env};
use exoservice::routes::{RoleRoutes, Routes};

const PING_SERVICE: &str =
    "type: ping\nmessages:\n  receives: [ping, ping twice]\n  sends: [pong]\n";
const PING_ROUTES: &str = r#"{"ping": {"receives": ["ping", "ping twice"], "sends": ["pong"], "atLeastOnce": ["ping twice"]}, "web": {"sends": ["ping", "ping twice"], "receives": ["pong"]}}"#;

fn nats_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("EXOSERVICE_TRANSPORT", "nats"),
        ("EXOSERVICE_ROUTES", PING_ROUTES),
    ];
    env.extend_from_slice(extra);
    env
}

#[test]
fn the_transport_is_exocom_unless_asked() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!(c.transport(), Transport::Exocom);
    assert!(c.nats.is_none());
    // The NATS variables are not read on ExoCom.
    let c = load(
        d.path(),
        &[
            ("EXOSERVICE_TRANSPORT", "ExoCom"),
            ("EXOSERVICE_ROUTES", "not json"),
            ("NATS_URL", "http://x"),
        ],
    )
    .unwrap();
    assert_eq!(c.transport(), Transport::Exocom);
    assert_eq!(
        err(d.path(), &[("EXOSERVICE_TRANSPORT", "zeromq")]),
        "$EXOSERVICE_TRANSPORT: must be exocom or nats, found \"zeromq\""
    );
}

#[test]
fn nats_from_the_environment_with_defaults() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    let c = load(d.path(), &nats_env(&[])).unwrap();
    assert_eq!(c.transport(), Transport::Nats);
    let n = c.nats.as_ref().unwrap();
    assert_eq!(n.url, "nats://127.0.0.1:4222");
    assert_eq!(n.app, "exo");
    assert_eq!(n.max_attempts, 5);
    assert_eq!(n.ack_wait, Duration::from_secs(30));
    assert_eq!(n.redelivery_delay, Duration::from_secs(1));
    assert_eq!(n.replicas, 1);
    assert_eq!(n.routes.role("web").unwrap().sends, ["ping", "ping twice"]);
    // The routes say how this role takes each name.
    assert_eq!(c.delivery_of("ping twice"), DeliveryMode::AtLeastOnce);
    assert_eq!(c.delivery_of("ping"), DeliveryMode::AtMostOnce);
}

#[test]
fn nats_variables_override_the_defaults() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    let c = load(
        d.path(),
        &nats_env(&[
            ("NATS_URL", " nats://a.example:1, TLS://b:2 ,c:3,d,[::1]:7"),
            ("EXOSERVICE_APP", "my_app-1"),
            ("EXOSERVICE_MAX_ATTEMPTS", "3"),
            ("EXOSERVICE_ACK_WAIT_MS", "100"),
            ("EXOSERVICE_REDELIVERY_DELAY_MS", "20"),
            ("EXOSERVICE_NATS_REPLICAS", "5"),
        ]),
    )
    .unwrap();
    let n = c.nats.unwrap();
    assert_eq!(
        n.url,
        "nats://a.example:1,tls://b:2,nats://c:3,nats://d:4222,nats://[::1]:7"
    );
    assert_eq!(n.app, "my_app-1");
    assert_eq!(n.max_attempts, 3);
    assert_eq!(n.ack_wait, Duration::from_millis(100));
    assert_eq!(n.redelivery_delay, Duration::from_millis(20));
    assert_eq!(n.replicas, 5);
}

#[test]
fn bad_nats_variables_are_named() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    let e = |extra: &[(&str, &str)]| err(d.path(), &nats_env(extra));
    for (var, value, expected) in [
        (
            "NATS_URL",
            "http://x:4222",
            "$NATS_URL: must be nats://HOST:PORT, tls://HOST:PORT or HOST:PORT, found \"http://x:4222\"",
        ),
        (
            "NATS_URL",
            "nats://x:0",
            "$NATS_URL: has a bad port \"0\" in \"nats://x:0\" (1 to 65535)",
        ),
        (
            "NATS_URL",
            "a:1,,b:2",
            "$NATS_URL: has an empty entry in \"a:1,,b:2\"",
        ),
        (
            "NATS_URL",
            "nats://x:4222/path",
            "$NATS_URL: must be nats://HOST:PORT, tls://HOST:PORT or HOST:PORT without a path",
        ),
        ("NATS_URL", "a:b:4222", "$NATS_URL: has no usable host"),
        ("NATS_URL", "nats://:4222", "$NATS_URL: has no usable host"),
        (
            "EXOSERVICE_APP",
            "todo.app",
            "$EXOSERVICE_APP: must be letters, digits, '_' and '-' only",
        ),
        (
            "EXOSERVICE_ROUTES",
            "{\"ping\": {\"receives\": \"ping\"}}",
            "$EXOSERVICE_ROUTES: is not valid routes JSON (",
        ),
        (
            "EXOSERVICE_ROUTES",
            r#"{"ping": {"receives": ["ping"], "atLeastOnce": ["pong"]}}"#,
            "$EXOSERVICE_ROUTES: role 'ping' lists \"pong\" under atLeastOnce but not under receives",
        ),
        (
            "EXOSERVICE_ROUTES",
            r#"{"bad--role": {}}"#,
            "$EXOSERVICE_ROUTES: 'bad--role' is not a valid role name",
        ),
        (
            "EXOSERVICE_MAX_ATTEMPTS",
            "0",
            "$EXOSERVICE_MAX_ATTEMPTS: must be a whole number from 1 to 1000, found \"0\"",
        ),
        (
            "EXOSERVICE_MAX_ATTEMPTS",
            "1001",
            "$EXOSERVICE_MAX_ATTEMPTS: must be a whole number from 1 to 1000, found \"1001\"",
        ),
        (
            "EXOSERVICE_ACK_WAIT_MS",
            "99",
            "$EXOSERVICE_ACK_WAIT_MS: must be a whole number of milliseconds 100 or more, found \"99\"",
        ),
        (
            "EXOSERVICE_REDELIVERY_DELAY_MS",
            "soon",
            "$EXOSERVICE_REDELIVERY_DELAY_MS: must be a whole number of milliseconds 1 or more, found \"soon\"",
        ),
        (
            "EXOSERVICE_NATS_REPLICAS",
            "6",
            "$EXOSERVICE_NATS_REPLICAS: must be a whole number from 1 to 5, found \"6\"",
        ),
        (
            "EXOSERVICE_NATS_REPLICAS",
            "0",
            "$EXOSERVICE_NATS_REPLICAS: must be a whole number from 1 to 5, found \"0\"",
        ),
        (
            "EXOSERVICE_APPLICATION",
            "/no/such/app",
            "$EXOSERVICE_APPLICATION: no such file or directory: /no/such/app",
        ),
        (
            "NATS_CA_FILE",
            "/no/such/ca.pem",
            "$NATS_CA_FILE: no such file: /no/such/ca.pem",
        ),
        (
            "NATS_CERT_FILE",
            "/no/such/cert.pem",
            "$NATS_CERT_FILE: no such file: /no/such/cert.pem",
        ),
        (
            "NATS_KEY_FILE",
            "/no/such/key.pem",
            "$NATS_KEY_FILE: no such file: /no/such/key.pem",
        ),
        (
            "NATS_NKEY_FILE",
            "/no/such/user.nk",
            "$NATS_NKEY_FILE: no such file: /no/such/user.nk",
        ),
        (
            "NATS_CREDS_FILE",
            "/no/such/user.creds",
            "$NATS_CREDS_FILE: no such file: /no/such/user.creds",
        ),
    ] {
        let text = e(&[(var, value)]);
        assert!(
            text.starts_with(expected),
            "{var}={value}: expected {expected:?}, got {text:?}"
        );
    }
}

#[test]
fn nats_needs_routes_that_hold_the_role() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    assert_eq!(
        err(d.path(), &[("EXOSERVICE_TRANSPORT", "nats")]),
        "$EXOSERVICE_TRANSPORT: the nats transport needs the application's routes: set EXOSERVICE_ROUTES (routes JSON) or EXOSERVICE_APPLICATION (its application.yml)"
    );
    let e = err(d.path(), &nats_env(&[("ROLE", "pinger")]));
    assert!(
        e.starts_with("$EXOSERVICE_ROUTES: role 'pinger' is not in the application's routes (they have: ping, web)"),
        "{e}"
    );
}

#[test]
fn nats_urls_keep_credentials_out_of_sight() {
    let url = env::nats_url("nats://user:pw@h:4223,user:pw@[::1]").unwrap();
    assert_eq!(url, "nats://user:pw@h:4223,nats://user:pw@[::1]:4222");
    assert_eq!(
        env::nats_display_url(&url),
        "nats://user:***@h:4223,nats://user:***@[::1]:4222"
    );
    let url = env::nats_url("tok@[::1]").unwrap();
    assert_eq!(url, "nats://tok@[::1]:4222");
    assert_eq!(env::nats_display_url(&url), "nats://***@[::1]:4222");
    let servers = env::nats_servers("tls://h").unwrap();
    assert!(servers[0].tls);
    assert_eq!(servers[0].port, 4222);
    assert!(!format!("{:?}", env::nats_servers("nats://u:secret@h").unwrap()).contains("secret"));
    assert!(env::nats_url("nats://@h").is_err());
}

#[test]
fn app_names_for_nats() {
    assert!(env::valid_app_name("todo_app-2"));
    for bad in ["", "todo app", "todo.app", "a>b", "a*", "ü"] {
        assert!(!env::valid_app_name(bad), "{bad}");
    }
    assert_eq!(
        env::sanitize_app_name("Todo App.v2").as_deref(),
        Some("Todo-App-v2")
    );
    assert_eq!(env::sanitize_app_name("  "), None);
}

#[test]
fn delivery_is_read_in_every_shape() {
    let d = dir_with(&[(
        "service.yml",
        "type: ping\nmessages:\n  receives: [ping, users create]\ndelivery:\n  users create: at-least-once\n  ping: at-most-once\n",
    )]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!(c.delivery_of("users create"), DeliveryMode::AtLeastOnce);
    assert_eq!(c.delivery_of("ping"), DeliveryMode::AtMostOnce);
    assert_eq!(c.delivery.len(), 2);

    let d = dir_with(&[(
        "config.yml",
        "name: users\nmessages:\n  receives:\n    - users.list\ndelivery: {users.list: at-least-once}\n",
    )]);
    let c = load(d.path(), &[]).unwrap();
    assert_eq!(c.delivery_of("users.list"), DeliveryMode::AtLeastOnce);

    let d = dir_with(&[(
        "service.yml",
        "type: private\ndependency-data:\n  exocom:\n    receives: [users.create]\ndelivery:\n  users.create: at-least-once\n",
    )]);
    let c = load(d.path(), &[("ROLE", "users")]).unwrap();
    assert_eq!(c.delivery_of("users.create"), DeliveryMode::AtLeastOnce);

    let d = dir_with(&[("service.yml", "type: ping\ndelivery: ~\n")]);
    assert!(load(d.path(), &[]).unwrap().delivery.is_empty());
}

#[test]
fn delivery_errors_name_file_line_and_column() {
    assert_eq!(
        service_error(
            "type: ping\nmessages:\n  receives: [ping]\ndelivery:\n  ping: at-least-twice\n"
        ),
        "service.yml:5:9: delivery of \"ping\" must be at-least-once or at-most-once, found \"at-least-twice\""
    );
    assert_eq!(
        service_error(
            "type: ping\nmessages:\n  receives: [ping]\ndelivery:\n  ping: [at-least-once]\n"
        ),
        "service.yml:5:9: delivery of \"ping\" must be at-least-once or at-most-once, found a list"
    );
    assert_eq!(
        service_error(
            "type: ping\nmessages:\n  receives: [ping]\n  sends: [pong]\ndelivery:\n  ping: at-least-once\n  pong: at-least-once\n"
        ),
        "service.yml:7:3: delivery: \"pong\" is not a message this service receives (it receives: ping); the receiving service declares how it takes a message"
    );
    assert_eq!(
        service_error("type: ping\ndelivery: at-least-once\n"),
        "service.yml:2:11: delivery must be a mapping (key: value lines), found a string"
    );
}

#[test]
fn delivery_in_the_file_must_agree_with_the_routes() {
    // The file says at-least-once, the routes do not list it.
    let d = dir_with(&[(
        "service.yml",
        &format!("{PING_SERVICE}delivery:\n  ping: at-least-once\n"),
    )]);
    let e = err(d.path(), &nats_env(&[]));
    assert_eq!(
        e,
        "service.yml: delivery: \"ping\" is at-least-once here, but the routes from $EXOSERVICE_ROUTES do not list it under atLeastOnce; the senders route by the routes, so both must agree"
    );
    // Agreeing declarations load.
    let d = dir_with(&[(
        "service.yml",
        &format!("{PING_SERVICE}delivery:\n  ping twice: at-least-once\n  ping: at-most-once\n"),
    )]);
    let c = load(d.path(), &nats_env(&[])).unwrap();
    assert_eq!(c.delivery_of("ping twice"), DeliveryMode::AtLeastOnce);
}

#[test]
fn role_routes_json_carries_at_least_once_only_when_set() {
    let mut routes = Routes::default();
    routes.roles.insert(
        "users".into(),
        RoleRoutes {
            receives: vec!["users.create".into(), "users.list".into()],
            sends: vec!["users.created".into()],
            translations: Vec::new(),
            at_least_once: vec!["users.create".into()],
        },
    );
    routes.roles.insert(
        "web".into(),
        RoleRoutes {
            sends: vec!["users.create".into()],
            ..RoleRoutes::default()
        },
    );
    let json = routes.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["users"]["atLeastOnce"][0], "users.create");
    assert!(
        value["web"].get("atLeastOnce").is_none(),
        "left out when empty: {json}"
    );
    assert_eq!(Routes::from_json(&json).unwrap(), routes);
}

const NATS_APP: &str = "\
name: Todo App!
transport: nats
nats-url: nats-1:4223, nats-2:4223
services:
  todo: { location: ./todo-service }
  web: { location: ./web-server }
";

fn nats_app_dir(app: &str) -> tempfile::TempDir {
    dir_with(&[
        ("application.yml", app),
        (
            "todo-service/service.yml",
            "type: todo\nmessages:\n  receives: [todo.add, todo.list]\n  sends: [todo.added]\ndelivery:\n  todo.add: at-least-once\n",
        ),
        (
            "web-server/service.yml",
            "type: web\nmessages:\n  receives: [todo.added]\n  sends: [todo.add, todo.list]\n",
        ),
    ])
}

#[test]
fn application_yml_names_the_transport_and_the_nats_url() {
    let d = nats_app_dir(NATS_APP);
    let app = AppConfig::load_with(d.path(), &Env::empty()).unwrap();
    assert_eq!(app.transport, Some(Transport::Nats));
    assert_eq!(
        app.nats_url.as_deref(),
        Some("nats://nats-1:4223,nats://nats-2:4223")
    );
    assert_eq!(app.nats_app(), "Todo-App-");
    let routes = app.routes();
    assert_eq!(routes.role("todo").unwrap().at_least_once, ["todo.add"]);
    assert!(routes.role("web").unwrap().at_least_once.is_empty());
    assert!(app.warnings().is_empty(), "{:?}", app.warnings());

    // Without `transport:` it is ExoCom, and at-least-once is only a note.
    let d = nats_app_dir(
        "services:\n  todo: { location: ./todo-service }\n  web: { location: ./web-server }\n",
    );
    let app = AppConfig::load_with(d.path(), &Env::empty()).unwrap();
    assert_eq!(app.transport, None);
    assert_eq!(app.transport_or_default(), Transport::Exocom);
    assert_eq!(app.nats_app(), "exo");
    assert!(
        app.warnings().iter().any(|w| w.starts_with(
            "todo takes \"todo.add\" at-least-once, but the application's transport is exocom"
        )),
        "{:?}",
        app.warnings()
    );
}

#[test]
fn application_yml_transport_errors_have_a_place() {
    let d = nats_app_dir(
        "transport: kafka\nnats-url: http://x\nservices:\n  todo: { location: ./todo-service }\n",
    );
    let errors = AppConfig::load_with(d.path(), &Env::empty()).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", d.path().display()), "")
        })
        .collect();
    assert_eq!(
        text,
        [
            "application.yml:1:12: transport must be exocom or nats, found \"kafka\"",
            "application.yml:2:11: nats-url must be nats://HOST:PORT, tls://HOST:PORT or HOST:PORT, found \"http://x\"",
        ],
        "{text:#?}"
    );
    let d = nats_app_dir("transport: [nats]\nservices:\n  todo: { location: ./todo-service }\n");
    let e = AppConfig::load_with(d.path(), &Env::empty()).unwrap_err();
    assert!(
        e[0].to_string()
            .ends_with("application.yml:1:12: transport must be exocom or nats, found a list"),
        "{e:?}"
    );
}

#[test]
fn exoservice_application_gives_routes_and_defaults() {
    let d = nats_app_dir(NATS_APP);
    let app_yml = d.path().join("application.yml");
    let todo = d.path().join("todo-service");
    let c = ServiceConfig::load_with(
        &todo,
        &Env::from_pairs([("EXOSERVICE_APPLICATION", app_yml.to_str().unwrap())]),
        None,
    )
    .unwrap();
    assert_eq!(c.transport(), Transport::Nats, "application.yml says nats");
    let n = c.nats.as_ref().unwrap();
    assert_eq!(n.url, "nats://nats-1:4223,nats://nats-2:4223");
    assert_eq!(n.app, "Todo-App-");
    assert_eq!(n.routes.role("todo").unwrap().at_least_once, ["todo.add"]);
    assert_eq!(
        n.routes.role("web").unwrap().sends,
        ["todo.add", "todo.list"]
    );
    assert_eq!(c.delivery_of("todo.add"), DeliveryMode::AtLeastOnce);

    // The directory works too; the variables win over the file.
    let c = ServiceConfig::load_with(
        &todo,
        &Env::from_pairs([
            ("EXOSERVICE_APPLICATION", d.path().to_str().unwrap()),
            ("NATS_URL", "tls://secure:4443"),
            ("EXOSERVICE_APP", "todo"),
        ]),
        None,
    )
    .unwrap();
    let n = c.nats.unwrap();
    assert_eq!(
        (n.url.as_str(), n.app.as_str()),
        ("tls://secure:4443", "todo")
    );

    // EXOSERVICE_TRANSPORT=exocom wins over the application.
    let c = ServiceConfig::load_with(
        &todo,
        &Env::from_pairs([
            ("EXOSERVICE_APPLICATION", d.path().to_str().unwrap()),
            ("EXOSERVICE_TRANSPORT", "exocom"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(c.transport(), Transport::Exocom);

    // NatsSettings::from_env is what ServiceConfig uses.
    let s = NatsSettings::from_env(&Env::from_pairs([(
        "EXOSERVICE_APPLICATION",
        d.path().to_str().unwrap(),
    )]))
    .unwrap()
    .unwrap();
    assert_eq!(s.app, "Todo-App-");
}

#[test]
fn an_application_without_transport_needs_the_variable() {
    let d = nats_app_dir(
        "name: todo\nservices:\n  todo: { location: ./todo-service }\n  web: { location: ./web-server }\n",
    );
    let todo = d.path().join("todo-service");
    let app = d.path().to_str().unwrap();
    let c = ServiceConfig::load_with(
        &todo,
        &Env::from_pairs([("EXOSERVICE_APPLICATION", app)]),
        None,
    )
    .unwrap();
    assert_eq!(c.transport(), Transport::Exocom);
    let c = ServiceConfig::load_with(
        &todo,
        &Env::from_pairs([
            ("EXOSERVICE_APPLICATION", app),
            ("EXOSERVICE_TRANSPORT", "nats"),
        ]),
        None,
    )
    .unwrap();
    let n = c.nats.unwrap();
    assert_eq!(
        (n.url.as_str(), n.app.as_str()),
        ("nats://127.0.0.1:4222", "todo")
    );
}

#[test]
fn a_broken_application_is_reported_through_the_variable() {
    let d = nats_app_dir("transport: nats\nservices:\n  todo: { location: ./missing }\n");
    let e = ServiceConfig::load_with(
        &d.path().join("todo-service"),
        &Env::from_pairs([("EXOSERVICE_APPLICATION", d.path().to_str().unwrap())]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("$EXOSERVICE_APPLICATION: cannot read the application: ")
            && e.contains("missing: no such directory"),
        "{e}"
    );
}

#[test]
fn nats_tls_and_key_files_are_checked_and_kept_out_of_sight() {
    let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
    let d = dir_with(&[
        ("service.yml", PING_SERVICE),
        ("tls/cert.pem", "certificate"),
        ("tls/key.pem", "pr1vate-k3y-b0dy\n"),
        ("user.nk", &format!("{seed}\n")),
        (
            "user.pub",
            "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\n",
        ),
        (
            "user.creds",
            &format!(
                "-----BEGIN NATS USER JWT-----\neyJhIjoxfQ.eyJiIjoyfQ.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        ),
        (
            "no-seed.creds",
            "-----BEGIN NATS USER JWT-----\neyJhIjoxfQ.eyJiIjoyfQ.c2ln\n------END NATS USER JWT------\n",
        ),
    ]);
    let path = |name: &str| d.path().join(name).display().to_string();
    let (cert, key, nkey) = (path("tls/cert.pem"), path("tls/key.pem"), path("user.nk"));
    let creds = path("user.creds");
    // A client certificate goes with each way to log in: a password in
    // the URL, an NKey seed, a .creds file.
    let with_cert = |login: (&'static str, &str)| {
        load(
            d.path(),
            &nats_env(&[login, ("NATS_CERT_FILE", &cert), ("NATS_KEY_FILE", &key)]),
        )
        .unwrap()
    };
    let c = with_cert(("NATS_URL", "nats://ann:pa55word@h:4222"));
    let n = c.nats.as_ref().unwrap();
    let pair = n.client_cert.as_ref().unwrap();
    assert_eq!(pair.cert_file, d.path().join("tls/cert.pem"));
    assert_eq!(pair.key_file, d.path().join("tls/key.pem"));
    assert_eq!(n.display_url(), "nats://ann:***@h:4222");
    assert!(n.nkey.is_none() && n.creds.is_none());
    let shown = format!("{c:?}");
    assert!(!shown.contains("pa55word"), "Debug shows a secret: {shown}");
    let c = with_cert(("NATS_NKEY_FILE", &nkey));
    let n = c.nats.as_ref().unwrap();
    assert!(n.client_cert.is_some());
    assert_eq!(n.nkey.as_ref().unwrap().expose(), seed);
    let shown = format!("{c:?}");
    assert!(!shown.contains(seed), "Debug shows a secret: {shown}");
    let c = with_cert(("NATS_CREDS_FILE", &creds));
    let n = c.nats.as_ref().unwrap();
    assert!(n.client_cert.is_some());
    assert!(n.creds.as_ref().unwrap().expose().contains(seed));
    let shown = format!("{c:?}");
    assert!(!shown.contains(seed), "Debug shows a secret: {shown}");

    // A certificate needs its key and the other way round.
    let e = err(d.path(), &nats_env(&[("NATS_CERT_FILE", &cert)]));
    assert!(
        e.starts_with("$NATS_KEY_FILE: is not set, but NATS_CERT_FILE is"),
        "{e}"
    );
    let e = err(d.path(), &nats_env(&[("NATS_KEY_FILE", &key)]));
    assert!(
        e.starts_with("$NATS_CERT_FILE: is not set, but NATS_KEY_FILE is"),
        "{e}"
    );
    // The NKey file must hold a user seed, and the error does not quote it.
    let e = err(
        d.path(),
        &nats_env(&[("NATS_NKEY_FILE", &path("user.pub"))]),
    );
    assert!(
        e.starts_with("$NATS_NKEY_FILE: ") && e.contains("a public key (U…), not a seed"),
        "{e}"
    );
    let e = err(
        d.path(),
        &nats_env(&[("NATS_NKEY_FILE", &path("tls/key.pem"))]),
    );
    assert!(
        e.contains("no user NKey seed") && !e.contains("pr1vate-k3y-b0dy"),
        "{e}"
    );
    // A .creds file needs a JWT and a seed.
    let e = err(
        d.path(),
        &nats_env(&[("NATS_CREDS_FILE", &path("no-seed.creds"))]),
    );
    assert!(
        e.starts_with("$NATS_CREDS_FILE: ") && e.contains("holds no user NKey seed"),
        "{e}"
    );
    let e = err(
        d.path(),
        &nats_env(&[("NATS_CREDS_FILE", &path("user.nk"))]),
    );
    assert!(e.contains("holds no user JWT") && !e.contains(seed), "{e}");
    // A bad NATS_URL is named without its password.
    for bad in ["nats://ann:pa55word@h:0", "nats://ann:pa55word@h,,x"] {
        let e = err(d.path(), &nats_env(&[("NATS_URL", bad)]));
        assert!(
            e.starts_with("$NATS_URL: ") && !e.contains("pa55word"),
            "{e}"
        );
        assert!(e.contains("ann:***@"), "{e}");
    }
    let e = err(
        d.path(),
        &nats_env(&[("NATS_URL", "nats://ann:one@h1,nats://ann:two@h2")]),
    );
    assert!(
        e.contains("different credentials") && !e.contains("one") && !e.contains("two"),
        "{e}"
    );
}

#[test]
fn a_nats_user_logs_in_one_way() {
    let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
    let d = dir_with(&[
        ("service.yml", PING_SERVICE),
        ("user.nk", &format!("{seed}\n")),
        (
            "user.creds",
            &format!(
                "-----BEGIN NATS USER JWT-----\neyJhIjoxfQ.eyJiIjoyfQ.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        ),
    ]);
    let nkey = d.path().join("user.nk").display().to_string();
    let creds = d.path().join("user.creds").display().to_string();
    let rule = "a NATS user logs in one way only";
    for (vars, expected) in [
        (
            vec![
                ("NATS_URL", "nats://ann:pa55word@h:4222"),
                ("NATS_NKEY_FILE", &nkey),
            ],
            "$NATS_NKEY_FILE: cannot be used together with the user and password in NATS_URL: ",
        ),
        (
            vec![("NATS_URL", "nats://t0ken@h"), ("NATS_CREDS_FILE", &creds)],
            "$NATS_CREDS_FILE: cannot be used together with the token in NATS_URL: ",
        ),
        (
            vec![("NATS_NKEY_FILE", &nkey), ("NATS_CREDS_FILE", &creds)],
            "$NATS_CREDS_FILE: cannot be used together with NATS_NKEY_FILE: ",
        ),
        (
            vec![
                ("NATS_URL", "h1,nats://ann:pa55word@h2"),
                ("NATS_NKEY_FILE", &nkey),
                ("NATS_CREDS_FILE", &creds),
            ],
            "$NATS_NKEY_FILE: cannot be used together with the user and password in NATS_URL: ",
        ),
    ] {
        let e = err(d.path(), &nats_env(&vars));
        assert!(e.starts_with(expected) && e.contains(rule), "{e}");
        assert!(
            !e.contains("pa55word") && !e.contains("t0ken") && !e.contains(seed),
            "{e}"
        );
    }

    // Credentials in the application's nats-url: count too.
    let app = nats_app_dir(&NATS_APP.replace(
        "nats-url: nats-1:4223, nats-2:4223",
        "nats-url: nats://ann:pa55word@nats-1:4223",
    ));
    let e = ServiceConfig::load_with(
        &app.path().join("todo-service"),
        &Env::from_pairs([
            ("EXOSERVICE_APPLICATION", app.path().display().to_string()),
            ("NATS_CREDS_FILE", creds.clone()),
        ]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("$NATS_CREDS_FILE: cannot be used together with the user and password in the nats-url: of the application (EXOSERVICE_APPLICATION): "),
        "{e}"
    );

    // Settings made in code are refused when they connect.
    let mut settings = NatsSettings::new("nats://ann:pa55word@h", "app", Routes::default());
    settings.creds = Some(env::Secret::new("creds"));
    let e = settings.check_login().unwrap_err();
    assert!(
        e.starts_with(
            "NATS_CREDS_FILE: cannot be used together with the user and password in NATS_URL: "
        ),
        "{e}"
    );
    let e = settings.connect_options().map(|_| ()).unwrap_err();
    assert!(e.contains(rule), "{e}");
}

#[test]
fn a_comma_in_a_nats_password_is_never_shown() {
    let d = dir_with(&[("service.yml", PING_SERVICE)]);
    for url in [
        "nats://ann:pa,ss@127.0.0.1:14567",
        "nats://ann:40,22@127.0.0.1:14567",
    ] {
        let e = err(d.path(), &nats_env(&[("NATS_URL", url)]));
        assert!(e.starts_with("$NATS_URL: "), "{e}");
        assert!(
            e.contains("nats://ann:***,***@127.0.0.1:14567")
                && e.contains("a ',' in a password or token must be written %2C"),
            "{e}"
        );
        let fragments = url["nats://ann:".len()..url.find('@').unwrap()].split(',');
        for fragment in fragments {
            assert!(!e.contains(&format!("\"{fragment}\"")), "{e}");
            assert!(!e.contains(&format!(":{fragment}")), "{e}");
            assert!(!e.contains(&format!("{fragment}@")), "{e}");
        }
    }
    // Written %2C, the ',' is part of the password.
    let c = load(
        d.path(),
        &nats_env(&[("NATS_URL", "nats://ann:pa%2Css@127.0.0.1:14567")]),
    )
    .unwrap();
    assert_eq!(
        c.nats.unwrap().display_url(),
        "nats://ann:***@127.0.0.1:14567"
    );
}

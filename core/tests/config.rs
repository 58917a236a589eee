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
    let d = dir_with(&[(
        "service.yml",
        "type: todo\nmessages:\n  receives:\n    - todo.add\n\n\n  sends: todo.added\n",
    )]);
    assert_eq!(
        err(d.path(), &[]),
        "service.yml:7:10: messages.sends must be a list of message names, found a string"
    );
    let d = dir_with(&[(
        "service.yml",
        "type: todo\nmessages:\n  receives: [a, {b: 1}]\n",
    )]);
    assert_eq!(
        err(d.path(), &[]),
        "service.yml:3:17: messages.receives must be a list of message names, found a mapping in it"
    );
    let d = dir_with(&[("service.yml", "type: todo\nmessages: [a]\n")]);
    assert_eq!(
        err(d.path(), &[]),
        "service.yml:2:11: messages must be a mapping (key: value lines), found a list"
    );
    let d = dir_with(&[(
        "service.yml",
        "type: todo\nexoservice:\n  concurrency: many\n",
    )]);
    assert_eq!(
        err(d.path(), &[]),
        "service.yml:3:16: exoservice.concurrency must be a whole number above 0, found a string"
    );
    let d = dir_with(&[("service.yml", "type: Todo Service\n")]);
    assert!(err(d.path(), &[]).starts_with("service.yml:1:7: type must be the service's role"));
    let d = dir_with(&[("service.yml", "type: todo\nstartup:\n  online-text: up\n")]);
    assert_eq!(
        err(d.path(), &[]),
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

//! The todo app of the tutorial, as a user runs it: `exo run
//! examples/todo-app` (web in Rust, todo in Python, users in Node with its
//! own name "find user" for users.get, stats in C on the broadcasts),
//! driven through its HTTP front. The same scripted run goes once over the
//! embedded bus (ExoCom) and once over a NATS server, the services' code
//! unchanged.

use std::process::Command;
use std::time::{Duration, Instant};

use exo_harness::*;
use serde_json::json;

#[test]
fn the_scripted_run_works_and_a_restarted_todo_service_keeps_the_lists() {
    let mut app = TodoApp::start();
    scripted_run(&mut app, |app| {
        // The bus log shows the traffic, with the users translation.
        app.proc.wait_for(
            "web  --[ users.get ]-[ find user ]->  users",
            Duration::from_secs(5),
        );
        app.proc
            .wait_for("todo  --[ todo.added ]->  stats", Duration::from_secs(5));

        // /config.json lists the four roles, each connected once.
        let bus = app.bus.expect("the app runs on the embedded bus");
        let config = request(bus, "GET", "/config.json", None).unwrap().json();
        for role in ["web", "todo", "users", "stats"] {
            assert!(config["routes"].get(role).is_some(), "{config}");
            let clients = config["clients"].as_array().unwrap();
            assert!(
                clients
                    .iter()
                    .any(|c| c["role"] == role && c["instances"] == 1),
                "{role} not connected: {config}"
            );
        }
    });
}

#[test]
fn over_nats_the_scripted_run_works_and_a_restarted_todo_service_keeps_the_lists() {
    let mut app = TodoApp::start_over_nats();
    scripted_run(&mut app, |app| {
        // No bus ran: each service (one per language) went online on the
        // NATS server. The translation and the broadcasts were checked by
        // the run itself (users answered, stats counted).
        let port = app.nats.as_ref().expect("the app runs over NATS").port();
        for role in ["web", "todo", "users", "stats"] {
            app.proc.wait_for(
                &format!("{role} | online at port {port}"),
                Duration::from_secs(1),
            );
        }
        assert!(
            !app.proc.seen.iter().any(|l| l.contains("ExoCom online")),
            "a bus was started:\n{}",
            app.proc.output()
        );
    });
}

/// The scripted run through the HTTP front: the page; adding for two
/// people (users are created on first use, through the users service);
/// listing; the stats counted from the broadcasts; deleting, and deleting
/// what is gone; a bad request. Then `transport_checks`, what only the
/// transport shows. Then the todo service is killed, `exo run --restart`
/// starts it again and the lists are still there (SQLite); then `exo run`
/// stops cleanly on SIGTERM.
fn scripted_run(app: &mut TodoApp, transport_checks: impl FnOnce(&mut TodoApp)) {
    // The page.
    let page = app.call("GET", "/", None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>todos</title>"), "{}", page.body);

    // Add for two people (users are created on first use, through Node).
    let added = app.call("POST", "/todos/alice", Some(json!({"text": "buy milk"})));
    assert_eq!(added.status, 201, "{}", added.body);
    let milk = added.json();
    assert_eq!(milk["owner"], "alice");
    assert_eq!(milk["text"], "buy milk");
    let milk_id = milk["id"].as_u64().expect("a numeric id");
    let added = app.call(
        "POST",
        "/todos/bob",
        Some(json!({"text": "fix the bike — ünïcode"})),
    );
    assert_eq!(added.status, 201, "{}", added.body);
    let added = app.call(
        "POST",
        "/todos/alice",
        Some(json!({"text": "water plants"})),
    );
    assert_eq!(added.status, 201, "{}", added.body);

    // List.
    let list = app.call("GET", "/todos/alice", None);
    assert_eq!(list.status, 200);
    let texts: Vec<String> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["buy milk", "water plants"]);
    assert_eq!(
        app.call("GET", "/todos/bob", None).json()["items"][0]["text"],
        "fix the bike — ünïcode"
    );

    // Stats (C) counted the todo.added broadcasts.
    let stats = app.call("GET", "/stats", None);
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["counts"], json!({"alice": 2, "bob": 1}));

    // Delete, and delete what is gone.
    let deleted = app.call("DELETE", &format!("/todos/alice/{milk_id}"), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = app.call("DELETE", &format!("/todos/alice/{milk_id}"), None);
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(app.call("GET", "/stats", None).json()["counts"]["alice"], 1);

    // A bad request is the front's 400, not a hang.
    assert_eq!(
        app.call("POST", "/todos/alice", Some(json!({"nope": 1})))
            .status,
        400
    );

    transport_checks(app);

    // Kill the todo service; `exo run --restart` starts it again, and the
    // list is still there (SQLite).
    let pid = pid_in(
        &app.proc
            .wait_for("todo | started (pid ", Duration::from_secs(1)),
    );
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    app.proc
        .wait_for_next("todo exited", Duration::from_secs(10));
    app.proc
        .wait_for_next("todo | online at port", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(15);
    let items = loop {
        let list = app.call("GET", "/todos/alice", None);
        if list.status == 200 {
            break list.json()["items"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no listing after the restart: {}",
            list.body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    assert_eq!(items[0]["text"], "water plants");

    app.proc.signal("TERM");
    assert_eq!(
        app.proc.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        app.proc.output()
    );
}

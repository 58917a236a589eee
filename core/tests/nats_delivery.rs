//! Delivery on the `nats` transport from the outside: real `nats-server`
//! processes (one node or a cluster of three) on loopback, services as
//! engines in this process, and one service as a real child process that is
//! killed with SIGKILL.
//!
//! Each test uses its own application name, so its subjects (`exo.<app>.…`)
//! and its JetStream stream (`EXO_<app>`) are its own.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exoservice::config::{DeliveryMode, NatsSettings, ServiceConfig};
use exoservice::routes::Routes;
use exoservice::testing::nats::{NatsCluster, NatsServer};
use exoservice::{Delivery, Engine, Message};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

#[path = "support/http.rs"]
mod http;

/// The bound of every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(15);
/// How long a test watches for something that must not happen (a
/// duplicate, a further attempt) after everything expected arrived.
const QUIET: Duration = Duration::from_millis(600);

/// A fresh application name: `t` and 8 hex digits.
fn app_name() -> String {
    format!("t{:08x}", fastrand::u32(..))
}

/// One delivery a handler saw.
#[derive(Debug, Clone)]
struct Seen {
    /// Which engine (the number given to [`serve`]).
    instance: usize,
    /// The message's name.
    name: String,
    /// The message's id.
    id: String,
    /// Its payload.
    payload: Value,
    /// [`Delivery::attempt`].
    attempt: u32,
}

/// What the handlers of a test saw, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn push(&self, seen: Seen) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
    }

    /// The distinct message ids seen.
    fn ids(&self) -> BTreeSet<String> {
        self.all().into_iter().map(|s| s.id).collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Polls `done` every 20 ms until it is true or `timeout` passed; returns
/// whether it became true.
async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine of `role` on the `nats` transport, its receives and sends
/// taken from `routes` (and its at-least-once names from the role's
/// `atLeastOnce`), handling everything it receives; connected and online.
async fn engine(
    url: &str,
    app: &str,
    routes: &Routes,
    role: &str,
    tweak: impl FnOnce(&mut NatsSettings),
) -> Arc<Engine> {
    start_engine(config_of(url, app, routes, role, tweak)).await
}

/// The configuration of `role` on the `nats` transport, its receives and
/// sends taken from `routes` (and its at-least-once names from the role's
/// `atLeastOnce`).
fn config_of(
    url: &str,
    app: &str,
    routes: &Routes,
    role: &str,
    tweak: impl FnOnce(&mut NatsSettings),
) -> ServiceConfig {
    let own = routes.roles.get(role).cloned().unwrap_or_default();
    let mut settings = NatsSettings::new(url, app, routes.clone());
    tweak(&mut settings);
    let mut config = ServiceConfig::from_parts(role, own.receives.clone(), own.sends.clone())
        .with_nats(settings);
    for name in &own.at_least_once {
        config = config.with_delivery(name.clone(), DeliveryMode::AtLeastOnce);
    }
    config
}

/// An engine of `config`, handling everything its role receives;
/// connected and online.
async fn start_engine(config: ServiceConfig) -> Arc<Engine> {
    let role = config.role.clone();
    let engine = Engine::new(config);
    engine.announce_online(false);
    for name in engine.config().receives.clone() {
        engine.handle(&name).expect("the role receives it");
    }
    engine.connect().expect("connect");
    assert!(
        engine.wait_online(WAIT).await,
        "the {role} engine did not come online within {WAIT:?}"
    );
    Arc::new(engine)
}

/// Runs `engine`'s deliveries until it stops: each is logged (as
/// `instance`) and given to `handler`, then dropped (settled).
fn serve(
    engine: Arc<Engine>,
    instance: usize,
    log: Log,
    handler: impl Fn(&Delivery) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(delivery) = engine.next().await {
            let msg = delivery.message();
            log.push(Seen {
                instance,
                name: msg.name.clone(),
                id: msg.id.clone().unwrap_or_default(),
                payload: msg.payload_value(),
                attempt: delivery.attempt(),
            });
            handler(&delivery);
        }
    })
}

/// Drains the engines, then waits for their serving tasks.
async fn stop(engines: &[&Arc<Engine>], tasks: Vec<JoinHandle<()>>) {
    for engine in engines {
        engine.drain().await;
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the serving task ends after the drain")
            .expect("the serving task did not panic");
    }
}

/// A message `name` with payload `{"n": n}` and a fresh id.
fn numbered(name: &str, n: usize) -> Message {
    Message::new(name)
        .with_payload(&json!({ "n": n }))
        .expect("payload")
}

fn routes(json: &str) -> Routes {
    Routes::from_json(json).expect("routes")
}

#[tokio::test]
async fn at_most_once_messages_are_shared_between_two_instances_of_a_role() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(r#"{"sender": {"sends": ["hello"]}, "users": {"receives": ["hello"]}}"#);
    let log = Log::default();
    let a = engine(&server.url(), &app, &routes, "users", |_| {}).await;
    let b = engine(&server.url(), &app, &routes, "users", |_| {}).await;
    let tasks = vec![
        serve(a.clone(), 0, log.clone(), |_| {}),
        serve(b.clone(), 1, log.clone(), |_| {}),
    ];
    let sender = engine(&server.url(), &app, &routes, "sender", |_| {}).await;

    for n in 0..200 {
        sender
            .client()
            .send_message(numbered("hello", n))
            .expect("send");
    }
    let all_there = eventually(WAIT, || log.len() >= 200).await;
    tokio::time::sleep(QUIET).await; // a duplicate would arrive now
    let seen = log.all();
    assert!(all_there, "only {} of 200 messages handled", seen.len());
    assert_eq!(seen.len(), 200, "each message handled exactly once");
    let numbers: BTreeSet<u64> = seen
        .iter()
        .map(|s| s.payload["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(numbers, (0..200).collect(), "every message handled once");
    assert!(seen.iter().all(|s| s.name == "hello" && s.attempt == 1));
    let by_a = seen.iter().filter(|s| s.instance == 0).count();
    let by_b = seen.len() - by_a;
    assert!(
        by_a >= 40 && by_b >= 40,
        "both instances share the work: {by_a} and {by_b} of 200"
    );
    stop(&[&a, &b, &sender], tasks).await;
}

/// The environment variable that makes
/// [`child_service_holding_its_messages`] run as the held-messages service;
/// it names the directory of its `service.yml`.
const HOLDER_DIR: &str = "EXO_TEST_NATS_HOLDER_DIR";

/// The child side of the kill test: a `users` service configured from its
/// `service.yml` and the environment (`EXOSERVICE_TRANSPORT=nats`, …) whose
/// handler never finishes: it prints `holding <id>` for every message and
/// keeps it. Runs only when the parent test starts this binary with
/// [`HOLDER_DIR`] set; the parent kills it.
#[tokio::test]
#[ignore = "the child process of the tests that kill an instance (messages_held_by_…, messages_of_an_instance_that_dies_…), which run it"]
async fn child_service_holding_its_messages() {
    let Ok(dir) = std::env::var(HOLDER_DIR) else {
        return;
    };
    let config = ServiceConfig::load(&dir).expect("config from service.yml and the environment");
    let engine = Engine::new(config);
    engine.handle("job").expect("handle job");
    engine.connect().expect("connect");
    let mut held = Vec::new();
    while let Some(delivery) = engine.next().await {
        println!(
            "holding {} attempt {}",
            delivery.message().id.as_deref().unwrap_or(""),
            delivery.attempt()
        );
        held.push(delivery);
    }
}

/// A child process that runs [`child_service_holding_its_messages`] as
/// role `users` of an application; its output lines are collected.
struct Holder {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Holder {
    /// Starts the child with `EXOSERVICE_TRANSPORT=nats`, the server's URL,
    /// `app`, the routes and the `extra` variables; waits until it is
    /// online.
    async fn start(
        server: &NatsServer,
        app: &str,
        routes_json: &str,
        extra: &[(&str, String)],
    ) -> Holder {
        let dir = tempfile::tempdir().expect("temp dir");
        write_holder_service(dir.path());
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = tokio::process::Command::new(exe)
            // `--quiet`: libtest's default output writes `test NAME ... `
            // without a line end before a test runs, which would prefix the
            // service's first line.
            .args([
                "--ignored",
                "--exact",
                "child_service_holding_its_messages",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env(HOLDER_DIR, dir.path())
            .env("EXOSERVICE_TRANSPORT", "nats")
            .env("NATS_URL", server.url())
            .env("EXOSERVICE_APP", app)
            .env("EXOSERVICE_ROUTES", routes_json)
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .env("ROLE", "users")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the child service starts");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let out = child.stdout.take().expect("child stdout");
            tokio::spawn(async move {
                let mut out = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = out.next_line().await {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            })
        };
        let holder = Holder {
            child,
            lines,
            reader,
            _dir: dir,
        };
        let online = format!("online at port {}", server.port());
        let is_online =
            eventually(WAIT, || holder.lines().iter().any(|l| l.contains(&online))).await;
        assert!(
            is_online,
            "the child service did not print `{online}` within {WAIT:?}; its output: {:?}",
            holder.lines()
        );
        holder
    }

    /// What the child printed so far.
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The ids of the messages the child holds.
    fn held_ids(&self) -> BTreeSet<String> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("holding "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the child holds exactly `ids`.
    async fn wait_holding(&self, ids: &BTreeSet<String>) {
        let holds_all = eventually(WAIT, || self.held_ids() == *ids).await;
        assert!(
            holds_all,
            "the child should hold all {} messages; it holds {} ({:?})",
            ids.len(),
            self.held_ids().len(),
            self.lines()
        );
    }

    /// SIGKILL: the messages it holds are neither acknowledged nor given
    /// back.
    async fn kill(mut self) {
        self.child.kill().await.expect("kill the child service");
        self.reader
            .await
            .expect("the reader ends with the child's stdout");
    }
}

/// Sends `n` numbered `job` messages from `sender`; their ids.
fn send_jobs(sender: &Engine, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let msg = numbered("job", i);
            let id = msg.id.clone().expect("id");
            sender.client().send_message(msg).expect("send");
            id
        })
        .collect()
}

const USERS_ROUTES: &str =
    r#"{"sender": {"sends": ["job"]}, "users": {"receives": ["job"], "atLeastOnce": ["job"]}}"#;

#[tokio::test]
async fn messages_held_by_a_killed_instance_go_to_another_instance() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(USERS_ROUTES);
    let ack_wait = Duration::from_secs(1);

    // Instance A: a real process.
    let ack_wait_var = ("EXOSERVICE_ACK_WAIT_MS", ack_wait.as_millis().to_string());
    let holder = Holder::start(&server, &app, USERS_ROUTES, &[ack_wait_var]).await;
    let sender = engine(&server.url(), &app, &routes, "sender", |_| {}).await;
    let sent = send_jobs(&sender, 20);
    holder.wait_holding(&sent).await;
    holder.kill().await;

    // Instance B, started after A died, gets them after the ack wait.
    let log = Log::default();
    let b = engine(&server.url(), &app, &routes, "users", |s| {
        s.ack_wait = ack_wait;
    })
    .await;
    let task = serve(b.clone(), 1, log.clone(), |_| {});
    let all_there = eventually(WAIT, || log.ids() == sent).await;
    let seen = log.all();
    assert!(
        all_there,
        "B handled {} of the 20 messages A held: {seen:?}",
        log.ids().len()
    );
    let first_tries: Vec<&Seen> = seen.iter().filter(|s| s.attempt < 2).collect();
    assert!(
        first_tries.is_empty(),
        "every message B got had been delivered to A before (attempt ≥ 2): {first_tries:?}"
    );
    stop(&[&b, &sender], vec![task]).await;
}

/// Messages whose only instance dies on their last attempt: the server's
/// last-attempt advisories are kept, and the role's next instance
/// dead-letters the messages and counts them in its `/metrics`.
#[tokio::test]
async fn messages_of_an_instance_that_dies_on_their_last_attempt_are_dead_lettered_by_the_next() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(USERS_ROUTES);
    let ack_wait = Duration::from_secs(1);
    let one_attempt = |s: &mut NatsSettings| {
        s.max_attempts = 1;
        s.ack_wait = ack_wait;
    };

    // Instance A: a real process, one attempt per message.
    let vars = [
        ("EXOSERVICE_ACK_WAIT_MS", ack_wait.as_millis().to_string()),
        ("EXOSERVICE_MAX_ATTEMPTS", "1".to_owned()),
    ];
    let holder = Holder::start(&server, &app, USERS_ROUTES, &vars).await;
    let sender = engine(&server.url(), &app, &routes, "sender", |_| {}).await;
    let sent = send_jobs(&sender, 5);
    holder.wait_holding(&sent).await;

    holder.kill().await;

    // No instance of `users` runs when the ack wait ends: the server's 5
    // last-attempt advisories wait in their stream.
    let js = jetstream(&server.url()).await;
    let advisories = count_reaches(5, "advisories in EXOLAST", || advisories_waiting(&js, &app));
    assert_eq!(advisories.await, Ok(()));

    // Instance B, started then, dead-letters them; it never gets them.
    let b = start_engine(
        config_of(&server.url(), &app, &routes, "users", one_attempt).with_metrics_port(0),
    )
    .await;
    let log = Log::default();
    let task = serve(b.clone(), 1, log.clone(), |_| {});

    let counted = "exoservice_dead_letters_total{message=\"job\"} 5";
    let metrics = http::metrics_with(b.metrics_addr().expect("metrics"), &[counted], WAIT).await;
    assert!(
        http::has_line(&metrics, counted),
        "{counted} in B's metrics:\n{metrics}"
    );

    let dlq_subject = format!("exo.{app}.js.dlq.users");
    // Only the 5 dead letters are left in the stream.
    let only_dead_letters = count_reaches(5, "messages in EXO", || stored(&js, &app));
    assert_eq!(only_dead_letters.await, Ok(()));
    // …and each advisory was acknowledged (taken out of its stream).
    let taken = count_reaches(0, "advisories in EXOLAST", || advisories_waiting(&js, &app));
    assert_eq!(taken.await, Ok(()));
    // Counted once each, also after everything settled.
    let metrics = http::get(b.metrics_addr().expect("metrics"), "/metrics")
        .await
        .body;
    assert!(
        http::has_line(&metrics, counted),
        "{counted} in B's metrics:\n{metrics}"
    );
    let last = stream_now(&js, &app)
        .await
        .expect("the stream")
        .get_last_raw_message_by_subject(&dlq_subject)
        .await
        .expect("a dead letter");
    let attempts = last
        .headers
        .get("Exo-Attempts")
        .map(|v| v.as_str().to_owned());
    assert_eq!(attempts.as_deref(), Some("1"), "{:?}", last.headers);
    let error = last
        .headers
        .get("Exo-Error")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(
        error.contains("stopped or did not finish"),
        "Exo-Error: {error}"
    );
    assert!(
        log.all().is_empty(),
        "B must not get a message that had its last attempt: {:?}",
        log.all()
    );
    stop(&[&b, &sender], vec![task]).await;
}

/// The service directory of the child service: `service.yml` for role
/// `users` receiving `job` at-least-once.
fn write_holder_service(dir: &Path) {
    std::fs::write(
        dir.join("service.yml"),
        "type: users\n\
         description: holds every job it gets\n\
         messages:\n  receives: [job]\n  sends: []\n\
         delivery:\n  job: at-least-once\n",
    )
    .expect("write service.yml");
}

const WORKER_ROUTES: &str =
    r#"{"sender": {"sends": ["job"]}, "worker": {"receives": ["job"], "atLeastOnce": ["job"]}}"#;

/// Three attempts, 100 ms apart at first: the retry tests stay short.
fn three_quick_attempts(s: &mut NatsSettings) {
    s.max_attempts = 3;
    s.redelivery_delay = Duration::from_millis(100);
}

#[tokio::test]
async fn a_message_that_always_fails_is_dead_lettered_after_max_attempts() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(WORKER_ROUTES);
    let log = Log::default();
    let worker = engine(&server.url(), &app, &routes, "worker", three_quick_attempts).await;
    let task = serve(worker.clone(), 0, log.clone(), Delivery::fail);
    let sender = engine(&server.url(), &app, &routes, "sender", three_quick_attempts).await;
    let msg = numbered("job", 7);
    let id = msg.id.clone().expect("id");
    sender.client().send_message(msg).expect("send");

    let attempts = || log.all().iter().map(|s| s.attempt).collect::<Vec<_>>();
    let three = eventually(WAIT, || log.len() >= 3).await;
    assert!(three, "3 attempts expected; saw {:?}", log.all());

    let dlq_subject = format!("exo.{app}.js.dlq.worker");
    let js = jetstream(&server.url()).await;
    let dead = poll_until(WAIT, || async {
        stream_now(&js, &app)
            .await?
            .get_last_raw_message_by_subject(&dlq_subject)
            .await
            .map_err(|e| format!("no message on {dlq_subject} in stream EXO_{app}: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("the dead letter: {e}"));
    tokio::time::sleep(QUIET).await; // a 4th attempt would come by now
    assert_eq!(attempts(), vec![1, 2, 3], "attempts 1, 2, 3 and no more");
    assert!(log.all().iter().all(|s| s.id == id));
    let headers = dead.headers.clone();
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        header("Exo-Attempts"),
        "3",
        "Exo-Attempts header on the dead letter ({headers:?})"
    );
    assert_eq!(header("Exo-Role"), "worker", "{headers:?}");
    assert!(
        header("Exo-Error").contains("failed on each of 3 attempts"),
        "Exo-Error says why ({headers:?})"
    );
    let body = Message::parse(&dead.payload).expect("the dead letter is the original frame");
    assert_eq!(body.id.as_deref(), Some(id.as_str()));
    assert_eq!(body.name, "job");
    assert_eq!(body.payload_value(), json!({"n": 7}));
    stop(&[&worker, &sender], vec![task]).await;
}

#[tokio::test]
async fn a_message_that_fails_once_is_handled_on_the_second_attempt() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(WORKER_ROUTES);
    let log = Log::default();
    let worker = engine(&server.url(), &app, &routes, "worker", three_quick_attempts).await;
    let task = serve(worker.clone(), 0, log.clone(), |d| {
        if d.attempt() == 1 {
            d.fail();
        }
    });
    let sender = engine(&server.url(), &app, &routes, "sender", three_quick_attempts).await;
    sender
        .client()
        .send_message(numbered("job", 1))
        .expect("send");

    let twice = eventually(WAIT, || log.len() >= 2).await;
    assert!(twice, "2 attempts expected; saw {:?}", log.all());
    // Acknowledged on attempt 2: the work queue stream empties, and nothing
    // is dead-lettered.
    let js = jetstream(&server.url()).await;
    poll_until(WAIT, || async {
        match stored(&js, &app).await? {
            0 => Ok(()),
            n => Err(format!("stream EXO_{app} holds {n} messages")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the handled message leaves the work queue: {e}"));
    tokio::time::sleep(QUIET).await; // a 3rd attempt would come by now
    let attempts: Vec<u32> = log.all().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
    let dlq = stream_now(&js, &app)
        .await
        .expect("the stream")
        .get_last_raw_message_by_subject(&format!("exo.{app}.js.dlq.worker"))
        .await;
    assert!(dlq.is_err(), "nothing dead-lettered, found {dlq:?}");
    stop(&[&worker, &sender], vec![task]).await;
}

#[tokio::test]
async fn at_least_once_messages_wait_for_a_role_with_no_running_instance() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(WORKER_ROUTES);
    let sender = engine(&server.url(), &app, &routes, "sender", |_| {}).await;
    let mut sent = BTreeSet::new();
    for n in 0..10 {
        let msg = numbered("job", n);
        sent.insert(msg.id.clone().expect("id"));
        sender.client().send_message(msg).expect("send");
    }
    // Stored before any worker exists.
    let js = jetstream(&server.url()).await;
    poll_until(WAIT, || async {
        match stored(&js, &app).await? {
            10 => Ok(()),
            n => Err(format!("stream EXO_{app} holds {n} messages, expected 10")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the 10 messages are stored: {e}"));

    let log = Log::default();
    let worker = engine(&server.url(), &app, &routes, "worker", |_| {}).await;
    let task = serve(worker.clone(), 0, log.clone(), |_| {});
    let all_there = eventually(WAIT, || log.ids() == sent).await;
    assert!(
        all_there,
        "the worker handled {} of the 10 stored messages: {:?}",
        log.ids().len(),
        log.all()
    );
    assert!(log.all().iter().all(|s| s.attempt == 1));
    stop(&[&worker, &sender], vec![task]).await;
}

#[tokio::test]
async fn a_cluster_of_three_carries_requests_and_replicated_messages_between_nodes() {
    let cluster = NatsCluster::start(3).await.expect("a NATS cluster of 3");
    let urls = cluster.urls();
    let app = app_name();
    let routes = routes(
        r#"{
          "web": {"sends": ["ping", "job"], "receives": ["pong"]},
          "ping": {"receives": ["ping"], "sends": ["pong"]},
          "worker": {"receives": ["job"], "atLeastOnce": ["job"]}
        }"#,
    );
    let replicated = |s: &mut NatsSettings| s.replicas = 3;
    let log = Log::default();
    let ping = engine(&urls[2], &app, &routes, "ping", replicated).await;
    let ping_task = serve(ping.clone(), 3, log.clone(), |d| {
        d.ctx()
            .reply("pong", &d.message().payload_value())
            .expect("reply");
    });
    let worker = engine(&urls[1], &app, &routes, "worker", replicated).await;
    let worker_task = serve(worker.clone(), 2, log.clone(), |_| {});
    let web = engine(&urls[0], &app, &routes, "web", replicated).await;

    let answer = web
        .client()
        .request("ping", &json!({"hello": "node 3"}), WAIT)
        .await
        .expect("web on node 1 gets ping's answer from node 3");
    assert_eq!(answer.name, "pong");
    assert_eq!(answer.payload_value(), json!({"hello": "node 3"}));

    let job = numbered("job", 42);
    let id = job.id.clone().expect("id");
    web.client().send_message(job).expect("send job");
    let handled = eventually(WAIT, || log.all().iter().any(|s| s.id == id)).await;
    assert!(
        handled,
        "the worker on node 2 did not get the job sent on node 1: {:?}",
        log.all()
    );
    let stream = stream_now(&jetstream(&urls[0]).await, &app)
        .await
        .expect("the stream");
    assert_eq!(
        stream.cached_info().config.num_replicas,
        3,
        "stream EXO_{app} has 3 replicas"
    );
    let by_instance: BTreeMap<usize, Vec<String>> =
        log.all().into_iter().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s.instance).or_default().push(s.name);
            m
        });
    assert_eq!(
        by_instance,
        BTreeMap::from([(2, vec!["job".to_owned()]), (3, vec!["ping".to_owned()])])
    );
    stop(&[&ping, &worker, &web], vec![ping_task, worker_task]).await;
}

#[tokio::test]
async fn services_carry_on_when_their_nats_server_comes_back() {
    let mut server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let routes = routes(
        r#"{
          "web": {"sends": ["ping", "job"], "receives": ["pong"]},
          "ping": {"receives": ["ping"], "sends": ["pong"]},
          "worker": {"receives": ["job"], "atLeastOnce": ["job"]}
        }"#,
    );
    let log = Log::default();
    let ping = engine(&server.url(), &app, &routes, "ping", |_| {}).await;
    let ping_task = serve(ping.clone(), 0, log.clone(), |d| {
        d.ctx()
            .reply("pong", &d.message().payload_value())
            .expect("reply");
    });
    let worker = engine(&server.url(), &app, &routes, "worker", |_| {}).await;
    let worker_task = serve(worker.clone(), 1, log.clone(), |_| {});
    let web = engine(&server.url(), &app, &routes, "web", |_| {}).await;
    let answer = web
        .client()
        .request("ping", &json!(1), WAIT)
        .await
        .expect("an answer before the restart");
    assert_eq!(answer.payload_value(), json!(1));

    server.kill().await.expect("kill nats-server");
    server
        .restart()
        .await
        .expect("nats-server back on its port");

    // At-most-once requests sent while the services reconnect may be lost:
    // ask again until one is answered.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        match web
            .client()
            .request("ping", &json!(2), Duration::from_millis(500))
            .await
        {
            Ok(answer) => break answer,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no answer within {WAIT:?} after the server came back: {e}"
            ),
        }
    };
    assert_eq!(answer.name, "pong");
    assert_eq!(answer.payload_value(), json!(2));

    let job = numbered("job", 3);
    let id = job.id.clone().expect("id");
    web.client().send_message(job).expect("send job");
    let handled = eventually(WAIT, || log.all().iter().any(|s| s.id == id)).await;
    assert!(
        handled,
        "the worker did not get the at-least-once job sent after the server came back: {:?}",
        log.all()
    );
    stop(&[&ping, &worker, &web], vec![ping_task, worker_task]).await;
}

/// Calls `check` every 50 ms until it gives a value or `timeout` passed;
/// the error is the last one `check` gave.
async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("still not so after {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls `count` until it is `expected` (at most [`WAIT`]); the error says
/// how many `what` there were last.
async fn count_reaches<F, Fut>(expected: u64, what: &str, mut count: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    poll_until(WAIT, || {
        let now = count();
        async move {
            match now.await? {
                n if n == expected => Ok(()),
                n => Err(format!("{n} {what}, expected {expected}")),
            }
        }
    })
    .await
}

/// The application's JetStream stream as it is now (a fresh look each
/// call, through a plain NATS client).
async fn stream_now(
    js: &async_nats::jetstream::Context,
    app: &str,
) -> Result<async_nats::jetstream::stream::Stream, String> {
    js.get_stream(format!("EXO_{app}"))
        .await
        .map_err(|e| format!("stream EXO_{app}: {e}"))
}

/// A JetStream context of a plain NATS client of `url`.
async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connect a NATS client");
    async_nats::jetstream::new(client)
}

/// How many messages the application's stream holds now.
async fn stored(js: &async_nats::jetstream::Context, app: &str) -> Result<u64, String> {
    Ok(stream_now(js, app).await?.cached_info().state.messages)
}

/// The last-attempt advisories that wait in the application's advisory
/// stream (`EXOLAST_<app>`).
async fn advisories_waiting(js: &async_nats::jetstream::Context, app: &str) -> Result<u64, String> {
    let stream = js
        .get_stream(format!("EXOLAST_{app}"))
        .await
        .map_err(|e| format!("stream EXOLAST_{app}: {e}"))?;
    Ok(stream.cached_info().state.messages)
}

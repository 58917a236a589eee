//! The nats transport end to end through the `Engine`: request and reply
//! with translations, an at-least-once copy next to an at-most-once one,
//! and an undeclared name refused at the call site.

#![cfg(feature = "nats")]

use std::time::Duration;

use exoservice::config::{NatsSettings, ServiceConfig};
use exoservice::routes::{DeliveryMode, Routes};
use exoservice::testing::nats::NatsServer;
use exoservice::{Engine, ExoError};
use serde_json::json;

#[path = "support/http.rs"]
mod http;

const WAIT: Duration = Duration::from_secs(10);

fn routes() -> Routes {
    serde_json::from_value(json!({
        "web": {"sends": ["users.get", "users.create"], "receives": ["users.found", "users.created"]},
        "users": {
            "receives": ["get", "create"], "sends": ["found", "created"],
            "translations": [
                {"public": "users.get", "internal": "get"},
                {"public": "users.found", "internal": "found"},
                {"public": "users.create", "internal": "create"},
                {"public": "users.created", "internal": "created"}
            ],
            "atLeastOnce": ["create"]
        }
    }))
    .unwrap()
}

fn engine(url: &str, app: &str, role: &str) -> Engine {
    engine_with(url, app, role, &routes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_and_both_delivery_modes() {
    let server = NatsServer::start().await.expect("nats-server");
    let server_url = server.url();
    let app = format!("link{}", fastrand::u32(..));
    let users = std::sync::Arc::new(engine(&server_url, &app, "users"));
    let web = engine(&server_url, &app, "web");
    users.connect().unwrap();
    web.connect().unwrap();
    assert!(users.wait_online(WAIT).await, "users online");
    assert!(web.wait_online(WAIT).await, "web online");

    let serving = users.clone();
    let server_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(d) = serving.next().await {
            let m = d.message();
            seen.push((m.name.clone(), d.attempt(), m.sender.clone()));
            match m.name.as_str() {
                "get" => d.ctx().reply("found", &json!({"name": "ann"})).unwrap(),
                "create" => d.ctx().reply("created", &json!({"id": 1})).unwrap(),
                other => panic!("unexpected {other}"),
            }
            if seen.len() == 2 {
                return seen;
            }
        }
        seen
    });

    let client = web.client();
    let answer = client
        .request("users.get", &json!({"id": 1}), WAIT)
        .await
        .expect("an answer to users.get");
    assert_eq!(answer.name, "users.found");
    assert_eq!(answer.payload_value(), json!({"name": "ann"}));
    assert_eq!(answer.sender.as_deref(), Some("users"));
    assert!(answer.timestamp.is_some());
    assert!(
        answer.response_time.is_some(),
        "the reply says how long it took"
    );

    let answer = client
        .request("users.create", &json!({"name": "bo"}), WAIT)
        .await
        .expect("an answer to users.create (at-least-once)");
    assert_eq!(answer.name, "users.created");

    let seen = tokio::time::timeout(WAIT, server_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        [
            ("get".to_owned(), 1, Some("web".to_owned())),
            ("create".to_owned(), 1, Some("web".to_owned()))
        ]
    );

    // Larger than the server's max_payload (1 MiB by default): refused here,
    // not lost on the way.
    let big = "x".repeat(1_100_000);
    match client.send("users.get", &json!({ "big": big })) {
        Err(ExoError::Payload { name, reason }) => {
            assert_eq!(name, "users.get");
            assert!(reason.contains("max_payload"), "{reason}");
        }
        other => panic!("expected a payload error, got {other:?}"),
    }

    match client.send("users.delete", &json!({})) {
        Err(ExoError::Undeclared { name, .. }) => assert_eq!(name, "users.delete"),
        other => panic!("expected Undeclared, got {other:?}"),
    }
    let report = web.drain().await;
    assert_eq!(report.unsent_messages, 0);
    users.drain().await;
}

/// Routes where the caller takes its answers at-least-once.
fn durable_answer_routes() -> Routes {
    serde_json::from_value(json!({
        "web": {"sends": ["users.create"], "receives": ["users.created"], "atLeastOnce": ["users.created"]},
        "users": {"receives": ["users.create"], "sends": ["users.created"]}
    }))
    .unwrap()
}

fn engine_with(url: &str, app: &str, role: &str, routes: &Routes) -> Engine {
    let own = routes.roles[role].clone();
    let mut config = ServiceConfig::from_parts(role, own.receives.clone(), own.sends.clone())
        .with_nats(NatsSettings::new(url, app, routes.clone()));
    for name in &own.at_least_once {
        config = config.with_delivery(name.clone(), DeliveryMode::AtLeastOnce);
    }
    let engine = Engine::new(config);
    engine.announce_online(false);
    for name in &own.receives {
        engine.handle(name).unwrap();
    }
    engine
}

/// An answer declared at-least-once goes to whichever instance of the
/// caller's role pulls it; that instance forwards it to the one whose
/// request waits (the activity's member), so every request gets its answer
/// although two instances share the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_answers_reach_the_waiting_instance() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("fwd{}", fastrand::u32(..));
    let routes = durable_answer_routes();
    let users = std::sync::Arc::new(engine_with(&server.url(), &app, "users", &routes));
    let asker = engine_with(&server.url(), &app, "web", &routes);
    let other = std::sync::Arc::new(engine_with(&server.url(), &app, "web", &routes));
    for e in [&*users, &asker, &*other] {
        e.connect().unwrap();
        assert!(e.wait_online(WAIT).await);
    }
    let serving = users.clone();
    tokio::spawn(async move {
        while let Some(d) = serving.next().await {
            d.ctx()
                .reply("users.created", &d.message().payload_value())
                .unwrap();
        }
    });
    // The other web instance must never run a handler for the answers: they
    // all belong to the asker's waiting requests.
    let bystander = other.clone();
    let stray = tokio::spawn(async move {
        let mut n = 0;
        while tokio::time::timeout(Duration::from_secs(3), bystander.next())
            .await
            .is_ok_and(|d| d.is_some())
        {
            n += 1;
        }
        n
    });
    let client = asker.client();
    for i in 0..20 {
        let answer = client
            .request("users.create", &json!({"n": i}), WAIT)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.name, "users.created");
        assert_eq!(answer.payload_value(), json!({"n": i}));
    }
    assert_eq!(
        stray.await.unwrap(),
        0,
        "answers reached the other instance's handlers"
    );
    asker.drain().await;
    other.drain().await;
    users.drain().await;
}

/// A draining instance leaves its role's queue group and stops pulling
/// from the role's consumer: what is sent meanwhile goes to the other
/// instance at once, on its first attempt, and nothing is dropped; the
/// handler it was running finishes and is not handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_hands_new_copies_to_the_others() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("drain{}", fastrand::u32(..));
    let routes: Routes = serde_json::from_value(json!({
        "web": {"sends": ["job", "note"]},
        "worker": {"receives": ["job", "note"], "atLeastOnce": ["job"]}
    }))
    .unwrap();
    let web = engine_with(&server.url(), &app, "web", &routes);
    let leaving = std::sync::Arc::new(engine_with(&server.url(), &app, "worker", &routes));
    let staying = std::sync::Arc::new(engine_with(&server.url(), &app, "worker", &routes));
    for e in [&web, &*leaving, &*staying] {
        e.connect().unwrap();
        assert!(e.wait_online(WAIT).await);
    }
    // The leaving instance takes the first job and works on it for a while.
    web.client().send("job", &json!({"n": 0})).unwrap();
    let first = tokio::time::timeout(WAIT, async {
        tokio::select! {
            d = leaving.next() => (d.unwrap(), true),
            d = staying.next() => (d.unwrap(), false),
        }
    })
    .await
    .expect("the first job");
    let (first, on_leaving) = first;
    let (leaving, staying) = if on_leaving {
        (leaving, staying)
    } else {
        (staying, leaving)
    };
    let draining = {
        let leaving = leaving.clone();
        tokio::spawn(async move { leaving.drain().await })
    };
    let finished = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(first);
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 1..=10 {
        web.client().send("job", &json!({ "n": n })).unwrap();
        web.client().send("note", &json!({ "n": n })).unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let d = tokio::time::timeout(WAIT, staying.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of 20 reached the other instance: {seen:?}",
                    seen.len()
                )
            })
            .unwrap();
        seen.push((
            d.message().name.clone(),
            d.message().payload_value()["n"].as_u64().unwrap(),
            d.attempt(),
        ));
    }
    finished.await.unwrap();
    let report = draining.await.unwrap();
    assert_eq!(report.unfinished_handlers, 0);
    assert!(
        seen.iter().all(|(_, _, attempt)| *attempt == 1),
        "copies went round while the instance drained: {seen:?}"
    );
    let mut jobs: Vec<u64> = seen.iter().filter(|s| s.0 == "job").map(|s| s.1).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, (1..=10).collect::<Vec<_>>());
    // The job that was running when the drain began was finished there.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), staying.next())
            .await
            .is_err(),
        "a finished job came again"
    );
    web.drain().await;
    staying.drain().await;
}

/// The role's consumer takes the settings of the instance that starts last:
/// a lower attempt count applies after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_role_applies_its_new_attempt_count() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("upd{}", fastrand::u32(..));
    let routes: Routes = serde_json::from_value(json!({
        "web": {"sends": ["job"]},
        "worker": {"receives": ["job"], "atLeastOnce": ["job"]}
    }))
    .unwrap();
    let worker = |attempts: u32| {
        let mut settings = NatsSettings::new(server.url(), &app, routes.clone());
        settings.max_attempts = attempts;
        settings.redelivery_delay = Duration::from_millis(50);
        let engine = Engine::new(
            ServiceConfig::from_parts("worker", ["job"], Vec::<&str>::new())
                .with_nats(settings)
                .with_delivery("job", DeliveryMode::AtLeastOnce),
        );
        engine.announce_online(false);
        engine.handle("job").unwrap();
        engine
    };
    let first = worker(5);
    first.connect().unwrap();
    assert!(first.wait_online(WAIT).await);
    first.drain().await;

    let second = worker(2);
    second.connect().unwrap();
    assert!(second.wait_online(WAIT).await);
    let web = engine_with(&server.url(), &app, "web", &routes);
    web.connect().unwrap();
    assert!(web.wait_online(WAIT).await);
    web.client().send("job", &json!({})).unwrap();
    let mut attempts = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), second.next()).await {
        attempts.push(d.attempt());
        d.fail();
    }
    assert_eq!(attempts, [1, 2], "two attempts, as the restarted role says");
    // The server's side agrees (it counts the attempts of instances that die).
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(format!("EXO_{app}"))
        .await
        .unwrap()
        .get_consumer("worker")
        .await
        .unwrap();
    assert_eq!(consumer.info().await.unwrap().config.max_deliver, 2);
    web.drain().await;
    second.drain().await;
}

/// A service's `/metrics` counts the attempts that came again and the
/// messages it gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_redeliveries_and_dead_letters() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("met{}", fastrand::u32(..));
    let routes: Routes = serde_json::from_value(json!({
        "web": {"sends": ["job"]},
        "worker": {"receives": ["job"], "atLeastOnce": ["job"]}
    }))
    .unwrap();
    let mut settings = NatsSettings::new(server.url(), &app, routes.clone());
    settings.max_attempts = 3;
    settings.redelivery_delay = Duration::from_millis(50);
    let worker = Engine::new(
        ServiceConfig::from_parts("worker", ["job"], Vec::<&str>::new())
            .with_nats(settings)
            .with_delivery("job", DeliveryMode::AtLeastOnce)
            .with_metrics_port(0),
    );
    worker.announce_online(false);
    worker.handle("job").unwrap();
    worker.connect().unwrap();
    assert!(worker.wait_online(WAIT).await);
    let web = engine_with(&server.url(), &app, "web", &routes);
    web.connect().unwrap();
    assert!(web.wait_online(WAIT).await);
    web.client().send("job", &json!({})).unwrap();
    for attempt in 1..=3 {
        let d = tokio::time::timeout(WAIT, worker.next())
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt}"))
            .unwrap();
        assert_eq!(d.attempt(), attempt);
        d.fail();
    }
    // The dead letter is counted once the server stored it.
    let lines = [
        "exoservice_handler_errors_total{message=\"job\"} 3",
        "exoservice_redeliveries_total{message=\"job\"} 2",
        "exoservice_dead_letters_total{message=\"job\"} 1",
    ];
    let metrics = http::metrics_with(worker.metrics_addr().unwrap(), &lines, WAIT).await;
    for line in lines {
        assert!(http::has_line(&metrics, line), "{line} in:\n{metrics}");
    }
    web.drain().await;
    worker.drain().await;
}

/// Every running instance answers the presence probe with its role and
/// instance id; one that has stopped no longer answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_running_instance_answers_the_presence_probe() {
    use exoservice::transport::nats::presence::probe;
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("who{}", fastrand::u32(..));
    let routes = routes();
    let engines: Vec<Engine> = ["web", "users", "users"]
        .into_iter()
        .map(|role| engine_with(&server.url(), &app, role, &routes))
        .collect();
    for e in &engines {
        e.connect().unwrap();
        assert!(e.wait_online(WAIT).await);
    }
    let client = async_nats::connect(server.url()).await.expect("a client");
    // Probes until the answers have these roles (a loaded machine may
    // answer late), at most WAIT; the last answers either way.
    let probe_until = |roles: &'static [&'static str]| {
        let (client, app) = (&client, &app);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let found = probe(client, app, Duration::from_millis(300))
                    .await
                    .expect("probe");
                let now: Vec<&str> = found.iter().map(|p| p.role.as_str()).collect();
                if now == roles || tokio::time::Instant::now() >= deadline {
                    return found;
                }
            }
        }
    };
    let found = probe_until(&["users", "users", "web"]).await;
    let roles: Vec<&str> = found.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, ["users", "users", "web"], "{found:?}");
    for p in &found {
        assert!(p.instance.starts_with(&format!("{}-", p.role)), "{p:?}");
        assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
        assert!(!p.draining, "{p:?}");
    }
    assert_ne!(found[0].instance, found[1].instance, "{found:?}");
    // Another application's probe finds none of them.
    let other = probe(&client, &format!("{app}x"), Duration::from_millis(200))
        .await
        .expect("probe");
    assert!(other.is_empty(), "{other:?}");

    engines[2].drain().await;
    let after = probe_until(&["users", "web"]).await;
    let roles: Vec<&str> = after.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(
        roles,
        ["users", "web"],
        "the stopped instance no longer answers: {after:?}"
    );
    assert!(
        after.iter().all(|p| found.contains(p)),
        "{after:?} ⊂ {found:?}"
    );
    for e in &engines[..2] {
        e.drain().await;
    }
}

/// A TCP proxy on a free loopback port in front of `upstream`: what a
/// client sends reaches the server `delay` later (in order); what the
/// server sends comes back at once. Stops with the test's runtime.
async fn delaying_proxy(upstream: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let (tx, mut rx) =
                tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if tx
                        .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(at + delay).await;
                    if server_write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A service is online only once the server has its subscriptions: a
/// message sent to its role the moment it is online reaches it, even when
/// what it sends takes a while to reach the server, and although a client
/// that listens to every subject (a debugging `nats sub '>'`) is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_online_only_once_the_server_has_its_subscriptions() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = format!("sync{}", fastrand::u32(..));
    let routes: Routes = serde_json::from_value(json!({
        "web": {"sends": ["ping"]},
        "ping": {"receives": ["ping"]}
    }))
    .unwrap();
    let web = engine_with(&server.url(), &app, "web", &routes);
    web.connect().unwrap();
    assert!(web.wait_online(WAIT).await);

    let tap = async_nats::connect(server.url()).await.expect("a client");
    let _everything = tap.subscribe(">").await.expect("subscribe to >");
    tap.flush().await.unwrap();

    let slow = delaying_proxy(server.port(), Duration::from_millis(300)).await;
    let ping = engine_with(&format!("nats://127.0.0.1:{slow}"), &app, "ping", &routes);
    let start = std::time::Instant::now();
    ping.connect().unwrap();
    assert!(
        ping.wait_online(WAIT).await,
        "ping online through the proxy"
    );
    // A few round trips of 300 ms each, not the 5 s a missing answer costs.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "online after {:?}",
        start.elapsed()
    );
    web.client().send("ping", &json!({"n": 1})).unwrap();
    let got = tokio::time::timeout(WAIT, ping.next())
        .await
        .expect("the message sent the moment ping was online reaches it")
        .expect("a delivery");
    assert_eq!(got.message().payload_value(), json!({"n": 1}));
    drop(got);
    web.drain().await;
    ping.drain().await;
}

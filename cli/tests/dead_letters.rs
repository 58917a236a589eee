//! `exo dead-letters` as a user runs it: a real `nats-server` on a free
//! loopback port, a worker service (an engine in this process) whose
//! at-least-once handler fails on both of its 2 attempts, and the real `exo`
//! binary listing, replaying and purging what was dead-lettered.
//!
//! Each test uses its own application name, so its subjects and its stream
//! `EXO_<app>` are its own.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exo_harness::bin;
use exoservice::config::env::NATS_VARS;
use exoservice::config::{DeliveryMode, NatsSettings, ServiceConfig};
use exoservice::routes::Routes;
use exoservice::testing::nats::NatsServer;
use exoservice::{Engine, Message};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The bound of every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(15);
/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(500);

const ROUTES: &str =
    r#"{"sender": {"sends": ["job"]}, "worker": {"receives": ["job"], "atLeastOnce": ["job"]}}"#;

/// A fresh application name: `dl` and 8 hex digits.
fn app_name() -> String {
    format!("dl{:08x}", fastrand::u32(..))
}

/// What `exo` printed and how it ended.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `exo dead-letters ARGS` with no NATS settings inherited from the
/// environment but `vars`; fails the test when it runs longer than `WAIT`.
async fn exo(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(bin("exo"));
    cmd.arg("dead-letters").args(args).kill_on_drop(true);
    for var in NATS_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("exo dead-letters {args:?} ran longer than {WAIT:?}"))
        .expect("run exo");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// [`exo`] against `url` and the application `app` (`--nats`,
/// `EXOSERVICE_APP`), expected to succeed.
async fn exo_ok(url: &str, app: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--nats", url]);
    let out = exo(&all, &[("EXOSERVICE_APP", app)]).await;
    assert_eq!(out.code, Some(0), "exo dead-letters {args:?}: {out:?}");
    out.stdout
}

/// `list --json`, read.
async fn list_json(url: &str, app: &str) -> Vec<Value> {
    exo_ok(url, app, &["list", "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

/// One delivery the worker's handler saw: the message id and the attempt.
type Seen = (String, u32);

/// A worker on the `nats` transport with 2 attempts 100 ms apart; its
/// handler fails while `failing` is set. Returns the engine and the task
/// serving it.
async fn worker(
    url: &str,
    app: &str,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> (Arc<Engine>, JoinHandle<()>) {
    let engine = Arc::new(engine(url, app, "worker", &["job"], &[]).await);
    let serving = engine.clone();
    let task = tokio::spawn(async move {
        while let Some(delivery) = serving.next().await {
            let id = delivery.message().id.clone().unwrap_or_default();
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, delivery.attempt()));
            if failing.load(Ordering::SeqCst) {
                delivery.fail();
            }
        }
    });
    (engine, task)
}

/// An engine of `role`, connected and online.
async fn engine(url: &str, app: &str, role: &str, receives: &[&str], sends: &[&str]) -> Engine {
    let routes = Routes::from_json(ROUTES).expect("routes");
    let mut settings = NatsSettings::new(url, app, routes);
    settings.max_attempts = 2;
    settings.redelivery_delay = Duration::from_millis(100);
    let mut config =
        ServiceConfig::from_parts(role, receives.to_vec(), sends.to_vec()).with_nats(settings);
    for name in receives {
        config = config.with_delivery(*name, DeliveryMode::AtLeastOnce);
    }
    let engine = Engine::new(config);
    engine.announce_online(false);
    for name in receives {
        engine.handle(name).expect("handle");
    }
    engine.connect().expect("connect");
    assert!(
        engine.wait_online(WAIT).await,
        "the {role} engine did not come online at {url}"
    );
    engine
}

/// Polls `check` every 50 ms until it gives a value or [`WAIT`] passed.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: still not so: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A running application whose jobs `n` = 1, 2, … were dead-lettered.
struct Fixture {
    server: NatsServer,
    app: String,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    worker: Arc<Engine>,
    task: JoinHandle<()>,
    sender: Engine,
    /// The ids of the jobs, in sending order.
    ids: Vec<String>,
}

impl Fixture {
    /// Sends `jobs` jobs one after the other, each failing twice, and waits
    /// until `list --json` shows all of them.
    async fn start(jobs: usize) -> Fixture {
        let server = NatsServer::start().await.expect("nats-server");
        let app = app_name();
        let failing = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (worker, task) = worker(&server.url(), &app, failing.clone(), seen.clone()).await;
        let sender = engine(&server.url(), &app, "sender", &[], &["job"]).await;
        let mut ids = Vec::new();
        for n in 1..=jobs {
            let msg = Message::new("job")
                .with_payload(&json!({ "n": n }))
                .expect("payload");
            ids.push(msg.id.clone().expect("id"));
            sender.client().send_message(msg).expect("send");
            // One at a time, so the dead letters are stored in this order.
            let want = ids.len();
            poll("the job is dead-lettered", || async {
                let got = list_json(&server.url(), &app).await.len();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got} dead letters, want {want}"))
                }
            })
            .await;
        }
        Fixture {
            server,
            app,
            failing,
            seen,
            worker,
            task,
            sender,
            ids,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The worker's deliveries of job `i` (0-based).
    fn attempts_of(&self, i: usize) -> Vec<u32> {
        self.seen()
            .into_iter()
            .filter(|(id, _)| *id == self.ids[i])
            .map(|(_, a)| a)
            .collect()
    }

    async fn stop(self) {
        self.sender.drain().await;
        self.worker.drain().await;
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the worker stops after its drain")
            .expect("the worker did not panic");
    }
}

/// The stream sequence numbers `list --json` shows.
fn seqs(letters: &[Value]) -> Vec<u64> {
    letters
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect()
}

/// An application directory named `name` with a worker service.
fn app_dir(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("application.yml"),
        format!("name: {name}\nservices:\n  worker:\n    location: ./worker\n"),
    )
    .expect("write application.yml");
    std::fs::create_dir(dir.join("worker")).expect("mkdir");
    std::fs::write(
        dir.join("worker/service.yml"),
        "type: worker\nmessages:\n  receives: [job]\ndelivery:\n  job: at-least-once\n",
    )
    .expect("write service.yml");
}

#[tokio::test]
async fn list_shows_each_dead_letter_with_why_it_failed_and_takes_nothing() {
    let fx = Fixture::start(2).await;
    assert_eq!(fx.attempts_of(0), vec![1, 2]);
    assert_eq!(fx.attempts_of(1), vec![1, 2]);

    // Text lines, oldest first, through the application's directory.
    let dir = tempfile::tempdir().expect("tempdir");
    app_dir(dir.path(), &fx.app);
    let app = dir.path().display().to_string();
    let out = exo(&["list", "--nats", &fx.url(), "--app", &app], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per dead letter: {out:?}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.contains("\"job\""), "the message name: {line}");
        assert!(
            line.contains(&format!("id={}", fx.ids[i])),
            "the id: {line}"
        );
        assert!(line.contains("  worker  "), "the role: {line}");
        assert!(line.contains("attempts=2"), "the attempts: {line}");
        assert!(
            line.contains("the handler failed on each of 2 attempts"),
            "the error: {line}"
        );
        assert!(
            line.contains(&format!("payload={{\"n\":{}}}", i + 1)),
            "the payload: {line}"
        );
    }

    // One JSON object per line with the whole frame, oldest first.
    let letters = list_json(&fx.url(), &fx.app).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let s = seqs(&letters);
    assert!(s[0] < s[1], "oldest first: {s:?}");
    for (i, letter) in letters.iter().enumerate() {
        assert_eq!(letter["role"], "worker", "{letter}");
        assert_eq!(letter["attempts"], 2, "{letter}");
        assert_eq!(letter["subject"], format!("exo.{}.js.dlq.worker", fx.app));
        assert!(
            letter["error"]
                .as_str()
                .is_some_and(|e| e.contains("failed on each of 2 attempts")),
            "{letter}"
        );
        assert!(letter["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let frame = &letter["frame"];
        assert_eq!(frame["name"], "job", "{letter}");
        assert_eq!(frame["id"], fx.ids[i].as_str(), "{letter}");
        assert_eq!(frame["sender"], "sender", "{letter}");
        assert_eq!(frame["payload"], json!({ "n": i + 1 }), "{letter}");
    }

    // A role without dead letters: a clear line, exit 0.
    let out = exo_ok(&fx.url(), &fx.app, &["list", "--role", "billing"]).await;
    assert_eq!(
        out.trim(),
        format!("no dead letters of role 'billing' in stream EXO_{}", fx.app)
    );
    let out = exo_ok(&fx.url(), &fx.app, &["list", "--role", "worker"]).await;
    assert_eq!(out.lines().count(), 2, "{out}");

    // Reading took nothing: the same dead letters, no further delivery.
    tokio::time::sleep(QUIET).await;
    assert_eq!(seqs(&list_json(&fx.url(), &fx.app).await), s);
    assert_eq!(fx.seen().len(), 4, "{:?}", fx.seen());
    fx.stop().await;
}

#[tokio::test]
async fn replay_hands_a_dead_letter_to_the_fixed_handler_and_deletes_it() {
    let fx = Fixture::start(2).await;
    let before = seqs(&list_json(&fx.url(), &fx.app).await);
    fx.failing.store(false, Ordering::SeqCst); // the handler is fixed

    let first = before[0].to_string();
    let out = exo_ok(&fx.url(), &fx.app, &["replay", "--seq", &first]).await;
    assert!(
        out.contains(&format!("replayed {first}: \"job\" id={}", fx.ids[0])),
        "says what it replayed: {out}"
    );
    // Handled once more, as a new delivery (attempt 1), and finished.
    poll("the replayed job reaches the handler", || async {
        match fx.attempts_of(0).as_slice() {
            [1, 2, 1] => Ok(()),
            other => Err(format!("attempts of the first job: {other:?}")),
        }
    })
    .await;
    let after = seqs(&list_json(&fx.url(), &fx.app).await);
    assert_eq!(after, vec![before[1]], "only the other dead letter is left");
    // The copy was acknowledged: the stream holds that dead letter only.
    let client = async_nats::connect(fx.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    poll("the replayed copy leaves the work queue", || async {
        let mut stream = js
            .get_stream(format!("EXO_{}", fx.app))
            .await
            .map_err(|e| e.to_string())?;
        match stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .messages
        {
            1 => Ok(()),
            n => Err(format!("the stream holds {n} messages")),
        }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        fx.attempts_of(0),
        vec![1, 2, 1],
        "handled once more, no more"
    );
    assert_eq!(
        fx.attempts_of(1),
        vec![1, 2],
        "the other job was left alone"
    );

    // Purge --all empties it.
    let out = exo_ok(&fx.url(), &fx.app, &["purge", "--all"]).await;
    assert_eq!(
        out.trim(),
        format!("purged 1 dead letter from stream EXO_{}", fx.app)
    );
    let out = exo_ok(&fx.url(), &fx.app, &["list"]).await;
    assert_eq!(
        out.trim(),
        format!("no dead letters in stream EXO_{}", fx.app)
    );
    assert!(list_json(&fx.url(), &fx.app).await.is_empty());
    fx.stop().await;
}

#[tokio::test]
async fn replay_all_and_purge_by_seq() {
    let fx = Fixture::start(3).await;
    let s = seqs(&list_json(&fx.url(), &fx.app).await);
    let out = exo_ok(&fx.url(), &fx.app, &["purge", "--seq", &s[1].to_string()]).await;
    assert_eq!(
        out.trim(),
        format!("purged 1 dead letter from stream EXO_{}", fx.app)
    );
    assert_eq!(seqs(&list_json(&fx.url(), &fx.app).await), vec![s[0], s[2]]);

    fx.failing.store(false, Ordering::SeqCst);
    let out = exo_ok(&fx.url(), &fx.app, &["replay", "--all", "--role", "worker"]).await;
    assert!(out.contains("replayed 2 dead letters"), "{out}");
    poll("both replayed jobs reach the handler", || async {
        if fx.attempts_of(0) == [1, 2, 1] && fx.attempts_of(2) == [1, 2, 1] {
            Ok(())
        } else {
            Err(format!("{:?}", fx.seen()))
        }
    })
    .await;
    assert_eq!(fx.attempts_of(1), vec![1, 2], "the purged job is gone");
    assert!(list_json(&fx.url(), &fx.app).await.is_empty());
    fx.stop().await;
}

#[tokio::test]
async fn a_seq_that_is_not_a_dead_letter_is_an_error_and_nothing_is_lost() {
    let fx = Fixture::start(1).await;
    let s = seqs(&list_json(&fx.url(), &fx.app).await);
    fx.failing.store(false, Ordering::SeqCst);

    // Something in the stream that is no dead letter: a copy for a role
    // that has no consumer.
    let client = async_nats::connect(fx.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let other = js
        .publish(format!("exo.{}.js.to.nobody", fx.app), "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;

    for (args, expected) in [
        (vec!["replay", "--seq", "9999"], "--seq 9999"),
        (vec!["purge", "--seq", "9999"], "--seq 9999"),
        (
            vec!["replay", "--seq", &s[0].to_string(), &other.to_string()],
            "is not a dead letter",
        ),
        (
            vec!["purge", "--seq", &other.to_string()],
            "is not a dead letter",
        ),
        (
            vec!["replay", "--role", "billing", "--seq", &s[0].to_string()],
            "of role 'worker', not of --role 'billing'",
        ),
    ] {
        let mut all = args.clone();
        let url = fx.url();
        all.extend(["--nats", &url]);
        let out = exo(&all, &[("EXOSERVICE_APP", &fx.app)]).await;
        assert_eq!(out.code, Some(1), "{args:?} fails: {out:?}");
        assert!(out.stderr.contains(expected), "{args:?}: {out:?}");
        assert!(!out.stdout.contains("replayed"), "{args:?}: {out:?}");
    }
    // Nothing was replayed or deleted.
    tokio::time::sleep(QUIET).await;
    assert_eq!(seqs(&list_json(&fx.url(), &fx.app).await), s);
    assert_eq!(fx.attempts_of(0), vec![1, 2]);
    let stream = js
        .get_stream(format!("EXO_{}", fx.app))
        .await
        .expect("stream");
    stream
        .get_raw_message(other)
        .await
        .expect("the other message is still stored");
    fx.stop().await;
}

#[tokio::test]
async fn an_application_without_a_stream_is_an_error() {
    let server = NatsServer::start().await.expect("nats-server");
    let app = app_name();
    let out = exo(
        &["list", "--nats", &server.url()],
        &[("EXOSERVICE_APP", &app)],
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("application '{app}' has no stream EXO_{app}")),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_within_the_timeout() {
    // Nobody listens on this port.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("nats://127.0.0.1:{closed}");
    let out = exo(&["list", "--nats", &url], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("cannot reach NATS at {url}")),
        "{out:?}"
    );
    assert!(out.took < Duration::from_secs(5), "{out:?}");

    // Something listens and never answers: the timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("nats://{}", silent.local_addr().expect("addr"));
    let out = exo(&["replay", "--all", "--nats", &url, "--timeout", "1"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("cannot reach NATS at {url}")),
        "{out:?}"
    );
    assert!(out.took < Duration::from_secs(4), "{out:?}");
    drop(silent);
}

#[tokio::test]
async fn role_picks_the_dead_letters_and_a_body_that_is_no_frame_is_not_replayed() {
    let fx = Fixture::start(1).await;
    let worker_seq = seqs(&list_json(&fx.url(), &fx.app).await)[0];
    // A dead letter of another role whose body is not an ExoCom frame.
    let client = async_nats::connect(fx.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Exo-Attempts", "5");
    headers.insert("Exo-Error", "broken");
    headers.insert("Exo-Role", "audit");
    let audit_seq = js
        .publish_with_headers(
            format!("exo.{}.js.dlq.audit", fx.app),
            headers,
            "not json".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;

    let all = list_json(&fx.url(), &fx.app).await;
    assert_eq!(seqs(&all), vec![worker_seq, audit_seq]);
    assert_eq!(all[1]["role"], "audit");
    assert_eq!(all[1]["frame"], Value::Null);
    assert_eq!(all[1]["body"], "not json");
    let text = exo_ok(&fx.url(), &fx.app, &["list", "--role", "audit"]).await;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("(not an ExoCom frame)") && text.contains("attempts=5"),
        "{text}"
    );

    let audit = audit_seq.to_string();
    let url = fx.url();
    let out = exo(
        &["replay", "--seq", &audit, "--nats", &url],
        &[("EXOSERVICE_APP", &fx.app)],
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("its body is not an ExoCom frame"),
        "{out:?}"
    );

    let out = exo_ok(&fx.url(), &fx.app, &["purge", "--all", "--role", "worker"]).await;
    assert_eq!(
        out.trim(),
        format!(
            "purged 1 dead letter of role 'worker' from stream EXO_{}",
            fx.app
        )
    );
    assert_eq!(seqs(&list_json(&fx.url(), &fx.app).await), vec![audit_seq]);
    fx.stop().await;
}

//! `/metrics` and `/healthz` of the bus and of a service, from the outside:
//! real WebSockets on 127.0.0.1, free ports, a strict parser of the
//! Prometheus text format (0.0.4), exact counts of the traffic sent; and
//! the outgoing queue policy with receivers that never read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exoservice::bus::{Bus, BusConfig, BusHandle, LogSink, QueuePolicy};
use exoservice::config::ServiceConfig;
use exoservice::routes::Routes;
use exoservice::{Ctx, Service};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

mod support;

use support::{Client, WAIT};

// ---------------------------------------------------------------------
// A strict parser of the text exposition format 0.0.4.

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: `# HELP`, `# TYPE`, its samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Default)]
struct Scrape {
    families: HashMap<String, Family>,
    text: String,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses `{a="b",c="d"}` starting at `rest` (after the name); returns the
/// labels and what follows the closing brace.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut s = rest.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let name = &s[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &s[end + 1..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(name: &'a str, families: &HashMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|f| f.kind == "histogram")
        {
            return Some(base);
        }
    }
    None
}

/// Parses strictly: HELP and TYPE once per family and before its samples,
/// samples of a family together, valid names, labels and escapes, no
/// duplicate series, histograms complete and cumulative, counters named
/// `_total` and never negative, a final newline.
fn parse(text: &str) -> Result<Scrape, String> {
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    let mut scrape = Scrape {
        text: text.to_owned(),
        ..Scrape::default()
    };
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, tail) = (parts.next(), parts.next(), parts.next());
            let (Some(keyword), Some(name)) = (keyword, name) else {
                continue; // a plain comment
            };
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            if !is_metric_name(name) {
                return Err(err("bad metric name".into()));
            }
            if current.as_deref() != Some(name) {
                if let Some(done) = current.take() {
                    finished.insert(done);
                }
                if finished.contains(name) {
                    return Err(err("family declared again".into()));
                }
                current = Some(name.to_owned());
            }
            let family = scrape.families.entry(name.to_owned()).or_default();
            if !family.samples.is_empty() {
                return Err(err(format!("{keyword} after samples")));
            }
            match keyword {
                "HELP" => {
                    if !family.help.is_empty() {
                        return Err(err("HELP twice".into()));
                    }
                    let help = tail.unwrap_or("");
                    if help.contains('\\') {
                        let mut it = help.chars();
                        while let Some(c) = it.next() {
                            if c == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
                                return Err(err("bad escape in HELP".into()));
                            }
                        }
                    }
                    family.help = help.to_owned();
                }
                _ => {
                    if !family.kind.is_empty() {
                        return Err(err("TYPE twice".into()));
                    }
                    let kind = tail.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("unknown type {kind:?}")));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(err("a counter's name must end in _total".into()));
                    }
                    family.kind = kind.to_owned();
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("expected a space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(err("trailing text".into()));
        }
        let family_name = family_of(name, &scrape.families)
            .ok_or_else(|| err("sample without HELP/TYPE".into()))?
            .to_owned();
        if current.as_deref() != Some(family_name.as_str()) {
            return Err(err("samples of a family are not together".into()));
        }
        if !series.insert((name.to_owned(), labels.clone())) {
            return Err(err("duplicate series".into()));
        }
        let family = scrape.families.get_mut(&family_name).expect("declared");
        if family.kind.is_empty() || family.help.is_empty() {
            return Err(err("family without HELP or TYPE".into()));
        }
        if family.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if family.kind == "histogram" && name.ends_with("_bucket") != labels.contains_key("le") {
            return Err(err("le belongs on _bucket samples only".into()));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, family) in &scrape.families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(scrape)
}

/// Buckets ascending and cumulative, +Inf present and equal to _count,
/// _sum present, per label set.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<&Sample>> = BTreeMap::new();
    for s in &family.samples {
        let mut key = s.labels.clone();
        key.remove("le");
        groups.entry(key).or_default().push(s);
    }
    for (labels, samples) in groups {
        let mut last_le = f64::NEG_INFINITY;
        let mut last_count = 0.0;
        let mut inf = None;
        for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
            let le = parse_value(&s.labels["le"])?;
            if le <= last_le || s.value < last_count {
                return Err(format!(
                    "{name} {labels:?}: buckets not ascending/cumulative"
                ));
            }
            (last_le, last_count) = (le, s.value);
            if le.is_infinite() {
                inf = Some(s.value);
            }
        }
        let count = samples
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .map(|s| s.value);
        let sum = samples.iter().find(|s| s.name.ends_with("_sum"));
        if inf.is_none() || inf != count || sum.is_none() {
            return Err(format!(
                "{name} {labels:?}: +Inf, _count or _sum missing or unequal"
            ));
        }
    }
    Ok(())
}

impl Scrape {
    /// The value of one series; panics when it is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let family = family_of(name, &self.families)?;
        self.families[family]
            .samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every series of a family: labels → value.
    fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.families
            .get(name)
            .map(|f| {
                f.samples
                    .iter()
                    .filter(|s| s.name == name)
                    .map(|s| (s.labels.clone(), s.value))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\\\\\\n\"} 3\n";
    let s = parse(ok).expect("valid");
    assert_eq!(s.get("a_total", &[("x", "1\"\\\n")]), 3.0);
    for bad in [
        "a_total 1\n",                                                       // no HELP/TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1",              // no final newline
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1} 1\n",     // unterminated
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"\\t\"} 1\n", // bad escape
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# HELP a A.\n# TYPE a counter\na 1\n", // counter without _total
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n", // negative counter
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n", // not a number
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\n# HELP b B.\n# TYPE b gauge\nb 1\na_total 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------------
// Clients.

/// `GET path` on 127.0.0.1:port: (status code, body); `/metrics` must
/// have the text format's content type.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let answer = support::http::get(([127, 0, 0, 1], port).into(), path).await;
    if path == "/metrics" && answer.code == 200 {
        assert!(
            answer
                .head
                .contains("Content-Type: text/plain; version=0.0.4"),
            "content type: {}",
            answer.head
        );
    }
    (answer.code, answer.body)
}

async fn scrape(port: u16) -> Scrape {
    let (code, body) = http_get(port, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    parse(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
}

/// Scrapes until `done` holds (at most WAIT).
async fn scrape_until(port: u16, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = scrape(port).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not get there:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn routes(json: &str) -> Routes {
    Routes::from_json(json).expect("routes")
}

async fn start(config: BusConfig) -> BusHandle {
    Bus::start(
        config
            .with_log(LogSink::Discard)
            .with_startup_grace(Duration::ZERO),
    )
    .await
    .expect("the bus starts")
}

fn collect_logs(bus: &BusHandle) -> Arc<Mutex<Vec<String>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut rx = bus.subscribe_logs();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(line) = rx.recv().await {
            sink.lock().unwrap().push(line);
        }
    });
    logs
}

// ---------------------------------------------------------------------
// The bus.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_counters_match_the_traffic_sent() {
    const N: usize = 25;
    let bus = start(BusConfig::new(routes(
        r#"{"tester":{"sends":["ping","nobody hears"],"receives":["pong"]},
            "ping":{"receives":["ping"],"sends":["pong"]},
            "log":{"receives":["ping"]},
            "idle":{"receives":["ping \"quoted\" \\ name"]}}"#,
    )))
    .await;
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await;
    let mut log = Client::register(port, "log").await;
    let mut stranger = Client::connect(port).await;
    let mut frames_in = 3;

    // Refused: 3 not allowed, 2 without receivers, 1 naming another
    // sender, 4 unreadable, 2 from a connection that never registered.
    for i in 0..3 {
        tester.send("pong", &format!("n{i}"), json!(null)).await;
    }
    for i in 0..2 {
        tester
            .send("nobody hears", &format!("h{i}"), json!(null))
            .await;
    }
    tester
        .send_raw(
            json!({"name": "ping", "sender": "log", "id": "x", "activityId": "x"}).to_string(),
        )
        .await;
    for garbage in ["not json", "[1,2]", "{\"id\":\"no name\"}", "{"] {
        tester.send_raw(garbage.to_owned()).await;
    }
    for i in 0..2 {
        stranger.send("ping", &format!("s{i}"), json!(1)).await;
    }
    frames_in += 3 + 2 + 1 + 4 + 2;

    // Routed: N pings to 'ping' and 'log', N pongs back to 'tester'.
    for i in 0..N {
        tester.send("ping", &format!("a{i}"), json!({"n": i})).await;
        let got = ping.recv().await;
        assert_eq!(got["name"], "ping");
        ping.send("pong", got["activityId"].as_str().unwrap(), json!({"n": i}))
            .await;
        assert_eq!(tester.recv().await["name"], "pong");
        assert_eq!(log.recv().await["name"], "ping");
    }
    frames_in += 2 * N;

    let refused =
        |s: &Scrape, reason: &str| s.get("exocom_messages_refused_total", &[("reason", reason)]);
    let m = scrape_until(port, |s| {
        refused(s, "unregistered") >= 2.0 && refused(s, "bad_frame") >= 4.0
    })
    .await;
    let routed = |message: &str, role: &str| {
        m.get(
            "exocom_messages_routed_total",
            &[("message", message), ("role", role)],
        )
    };
    assert_eq!(routed("ping", "ping"), N as f64);
    assert_eq!(routed("ping", "log"), N as f64);
    assert_eq!(routed("pong", "tester"), N as f64);
    assert_eq!(routed("ping \"quoted\" \\ name", "idle"), 0.0);
    assert_eq!(routed("(other)", "(other)"), 0.0);
    let expected_refusals = [
        ("not_allowed", 3.0),
        ("no_receivers", 2.0),
        ("wrong_sender", 1.0),
        ("bad_frame", 4.0),
        ("unregistered", 2.0),
    ];
    for (labels, value) in m.all("exocom_messages_refused_total") {
        let reason = &labels["reason"];
        let want = expected_refusals
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0.0, |(_, v)| *v);
        assert_eq!(value, want, "refused for {reason}");
    }
    for (role, n) in [("tester", 1.0), ("ping", 1.0), ("log", 1.0), ("idle", 0.0)] {
        assert_eq!(m.get("exocom_connections", &[("role", role)]), n, "{role}");
        assert_eq!(m.get("exocom_queue_depth", &[("role", role)]), 0.0);
        assert_eq!(m.get("exocom_queue_depth_max", &[("role", role)]), 0.0);
    }
    assert_eq!(m.get("exocom_unregistered_connections", &[]), 1.0);
    assert_eq!(m.get("exocom_frames_received_total", &[]), frames_in as f64);
    assert_eq!(m.get("exocom_frames_sent_total", &[]), (3 * N) as f64);
    assert_eq!(m.get("exocom_connections_opened_total", &[]), 4.0);
    assert_eq!(m.get("exocom_connections_closed_total", &[]), 0.0);
    // Every message of a registered connection that got past its checks
    // (N pings, N pongs, 3 not allowed, 2 without receivers).
    assert_eq!(
        m.get("exocom_routing_seconds_count", &[]),
        (2 * N + 5) as f64
    );
    assert!(m.get("exocom_routing_seconds_sum", &[]) > 0.0);
    assert_eq!(m.families["exocom_routing_seconds"].kind, "histogram");
    assert_eq!(m.families["exocom_connections"].kind, "gauge");

    drop(stranger);
    let m = scrape_until(port, |s| {
        s.get("exocom_connections_closed_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(m.get("exocom_connections_closed_total", &[]), 1.0);
    assert_eq!(m.get("exocom_unregistered_connections", &[]), 0.0);
    assert_eq!(bus.metrics_text().lines().count(), {
        let (_, body) = http_get(port, "/metrics").await;
        body.lines().count()
    });
    bus.shutdown().await;
}

#[tokio::test]
async fn healthz_is_ok_until_the_bus_stops() {
    let bus = start(BusConfig::new(Routes::default())).await;
    let port = bus.port();
    assert_eq!(http_get(port, "/healthz").await, (200, "ok\n".to_owned()));
    bus.mark_stopping();
    let (code, body) = http_get(port, "/healthz").await;
    assert_eq!((code, body.as_str()), (503, "stopping\n"));
    // The rest still works meanwhile.
    assert_eq!(http_get(port, "/config.json").await.0, 200);
    assert_eq!(http_get(port, "/metrics").await.0, 200);
    bus.shutdown().await;
}

const FLOOD_ROUTES: &str =
    r#"{"tester":{"sends":["ping"]},"ping":{"receives":["ping"]},"log":{"receives":["ping"]}}"#;

/// Floods 'ping' (which never reads) and 'log' (which reads) with `n`
/// messages of 64 KiB; returns what 'log' got.
async fn flood(port: u16, tester: &mut Client, log: Client, n: usize) -> usize {
    let mut log = log;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match log.recv_within(WAIT).await {
                Some(_) => got += 1,
                None => break,
            }
        }
        got
    });
    let payload = json!("x".repeat(64 * 1024));
    for i in 0..n {
        tester.send("ping", &format!("f{i}"), payload.clone()).await;
    }
    let _ = port;
    timeout(WAIT * 3, reader)
        .await
        .expect("'log' reads in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_counted_copies_and_warns_once() {
    const N: usize = 600;
    const CAP: usize = 16;
    let bus = start(BusConfig::new(routes(FLOOD_ROUTES)).with_queue_capacity(CAP)).await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let _ping = Client::register(port, "ping").await; // never reads
    let log = Client::register(port, "log").await;
    scrape_until(port, |s| {
        s.get("exocom_connections", &[("role", "log")]) == 1.0
    })
    .await;
    assert_eq!(
        flood(port, &mut tester, log, N).await,
        N,
        "'log' gets every copy"
    );
    let m = scrape_until(port, |s| {
        s.get(
            "exocom_messages_routed_total",
            &[("message", "ping"), ("role", "ping")],
        ) + s.get("exocom_messages_refused_total", &[("reason", "queue_full")])
            >= N as f64
    })
    .await;
    let queued = m.get(
        "exocom_messages_routed_total",
        &[("message", "ping"), ("role", "ping")],
    );
    let dropped = m.get("exocom_messages_refused_total", &[("reason", "queue_full")]);
    assert_eq!(queued + dropped, N as f64);
    assert!(dropped > 0.0, "the flood must overflow the queue");
    assert_eq!(
        m.get("exocom_queue_depth_max", &[("role", "ping")]),
        CAP as f64,
        "the slow instance's queue is full, never fuller"
    );
    assert_eq!(m.get("exocom_connections", &[("role", "ping")]), 1.0);
    assert_eq!(m.get("exocom_slow_connections_closed_total", &[]), 0.0);
    let warnings = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.starts_with("Warning: Dropped 'ping' for 'ping': the instance's queue is full")
        })
        .count();
    assert_eq!(warnings, 1, "one warning per connection");
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disconnect_policy_closes_only_the_slow_receiver() {
    const N: usize = 600;
    let bus = start(
        BusConfig::new(routes(FLOOD_ROUTES))
            .with_queue_capacity(16)
            .with_queue_policy(QueuePolicy::Disconnect),
    )
    .await;
    let logs = collect_logs(&bus);
    let port = bus.port();
    let mut tester = Client::register(port, "tester").await;
    let mut ping = Client::register(port, "ping").await; // does not read yet
    let log = Client::register(port, "log").await;
    scrape_until(port, |s| {
        s.get("exocom_connections", &[("role", "log")]) == 1.0
    })
    .await;
    assert_eq!(
        flood(port, &mut tester, log, N).await,
        N,
        "'log' gets every copy"
    );
    let copies = |m: &Scrape| {
        ["queue_full", "closed", "no_instance"]
            .iter()
            .map(|r| m.get("exocom_messages_refused_total", &[("reason", r)]))
            .sum::<f64>()
            + m.get(
                "exocom_messages_routed_total",
                &[("message", "ping"), ("role", "ping")],
            )
    };
    let m = scrape_until(port, |s| {
        s.get("exocom_slow_connections_closed_total", &[]) >= 1.0
            && s.get("exocom_connections", &[("role", "ping")]) == 0.0
            && copies(s) >= N as f64
    })
    .await;
    assert_eq!(m.get("exocom_slow_connections_closed_total", &[]), 1.0);
    assert_eq!(m.get("exocom_connections", &[("role", "tester")]), 1.0);
    assert!(
        m.get(
            "exocom_messages_refused_total",
            &[("reason", "no_instance")]
        ) > 0.0
    );
    let copies = copies(&m);
    assert_eq!(copies, N as f64, "every copy for 'ping' is accounted for");
    assert!(
        logs.lock().unwrap().iter().any(
            |l| l.starts_with("Warning: Disconnected an instance of 'ping': its queue is full")
        ),
        "the disconnect is logged"
    );
    // The slow receiver's stream ends after what was written before.
    let deadline = Instant::now() + WAIT;
    while ping.recv_within(WAIT).await.is_some() {
        assert!(Instant::now() < deadline, "'ping' was not disconnected");
    }
    bus.shutdown().await;
}

// ---------------------------------------------------------------------
// A service's own endpoint.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_counts_handled_messages_and_errors() {
    let bus = start(BusConfig::new(routes(
        r#"{"tester":{"sends":["ping","fail","ignored"],"receives":["pong"]},
            "ping":{"receives":["ping","fail","ignored"],"sends":["pong"]}}"#,
    )))
    .await;
    let port = bus.port();
    let config = ServiceConfig::from_parts("ping", ["ping", "fail", "ignored"], ["pong"])
        .with_exocom("127.0.0.1", port)
        .with_metrics_port(0);
    let service = Service::new(config)
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .on("fail", |_: Value, _: Ctx| async move {
            Err::<(), _>(std::io::Error::other("refused on purpose"))
        })
        .start()
        .await
        .expect("the service starts");
    assert!(service.wait_online(WAIT).await);
    let addr = service.metrics_addr().expect("a metrics endpoint");
    assert!(addr.ip().is_loopback());
    let mport = addr.port();
    assert_eq!(http_get(mport, "/healthz").await, (200, "ok\n".to_owned()));

    let mut tester = Client::register(port, "tester").await;
    for i in 0..5 {
        tester.send("ping", &format!("p{i}"), json!(i)).await;
        assert_eq!(tester.recv().await["name"], "pong");
    }
    for i in 0..2 {
        tester.send("fail", &format!("f{i}"), json!(i)).await;
    }
    tester.send("ignored", "i0", json!(0)).await;
    let handled =
        |s: &Scrape, name: &str| s.get("exoservice_messages_handled_total", &[("message", name)]);
    let m = scrape_until(mport, |s| {
        handled(s, "fail") >= 2.0 && s.get("exoservice_messages_unhandled_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(handled(&m, "ping"), 5.0);
    assert_eq!(handled(&m, "fail"), 2.0);
    assert_eq!(handled(&m, "ignored"), 0.0);
    let errors = |name: &str| m.get("exoservice_handler_errors_total", &[("message", name)]);
    assert_eq!((errors("ping"), errors("fail")), (0.0, 2.0));
    assert_eq!(m.get("exoservice_messages_unhandled_total", &[]), 1.0);
    assert_eq!(m.get("exoservice_in_flight", &[]), 0.0);
    assert_eq!(m.get("exoservice_connected", &[]), 1.0);
    assert_eq!(m.get("exoservice_outgoing_buffer", &[]), 0.0);
    assert_eq!(
        m.get("exoservice_handler_seconds_count", &[("message", "ping")]),
        5.0
    );
    assert_eq!(m.families["exoservice_handler_seconds"].kind, "histogram");
    assert_eq!(http_get(mport, "/nothing").await.0, 404);

    // The bus goes away: the service is no longer registered.
    bus.shutdown().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = http_get(mport, "/healthz").await;
        if code == 503 {
            assert_eq!(body, "not registered with the bus\n");
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {code}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scrape(mport).await.get("exoservice_connected", &[]), 0.0);
    timeout(WAIT, service.shutdown())
        .await
        .expect("drains in time");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the endpoint closes with the service"
    );
}

#[tokio::test]
async fn a_taken_metrics_port_is_an_error_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ServiceConfig::from_parts("ping", ["ping"], ["pong"])
        .with_exocom("127.0.0.1", 1)
        .with_metrics_port(port);
    let err = Service::new(config)
        .on(
            "ping",
            |p: Value, ctx: Ctx| async move { ctx.reply("pong", &p) },
        )
        .start()
        .await
        .err()
        .expect("an error");
    let text = err.to_string();
    assert!(
        text.contains("cannot serve metrics on 127.0.0.1:")
            && text.contains("EXOSERVICE_METRICS_PORT"),
        "{text}"
    );
}

//! The cross-language matrix: the ping service of each language (Rust,
//! Python, Node, C) asked with `request` by a caller in each language, over
//! the project's bus (`exocom`) and again over a NATS server (the same
//! services and callers, only their environment differs). Every pair
//! checks that
//! - the payload comes back whole: nested objects, unicode (astral-plane
//!   characters, escapes, NUL), integers up to 2^53, floats, and a large
//!   array: about 1 MB on ExoCom; over NATS 768 KiB, because a NATS server
//!   takes messages of at most 1 MiB by default (`max_payload`) and a frame
//!   with a 1 MB payload is larger (its sender logs "max payload size
//!   exceeded" and the request times out);
//! - the reply carries the request's `auth` back;
//! - once the ping service is stopped (SIGTERM, exited), the request fails
//!   with the caller language's own timeout error, reported as such (over
//!   NATS, `ping` is at-most-once: with no instance of the role running,
//!   the copy is lost and the request times out).
//!
//! Everything above runs on both transports; only the size of the large
//! array differs. One test per ping service and transport, each on its own
//! bus or NATS server (so they may run in parallel). The routes, for the
//! bus and for the services on NATS alike, are read from the service.yml
//! files of the ping service and of the callers. Within one test, the
//! callers take turns: every caller role receives `pong`, so callers
//! running at once would get each other's replies too. After the ping
//! service stopped, the callers run at once (there are no replies then). The callers are `tests/matrix/caller.*`
//! (the Rust one runs in this process); each prints one `RESULT {json}`
//! line per request, which this file compares.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exo_harness::paths::bin_dir;
use exo_harness::{LocalNats, Proc, bin, ensure_setup, port_in, repo_root};
use exoservice::ExoError;
use exoservice::config::env::{EXOCOM_HOST, EXOCOM_PORT, EXOCOM_TOKEN, EXOCOM_URL, NATS_VARS};
use exoservice::config::{Env, ServiceConfig};
use exoservice::dispatch::Engine;
use exoservice::routes::{DeliveryMode, RoleRoutes, Routes};
use serde_json::{Value, json};

/// Deadline of the requests that get an answer (debug builds, 1 MB).
const REPLY_TIMEOUT_MS: u64 = 15_000;
/// Deadline of the requests to the stopped service.
const STOPPED_TIMEOUT_MS: u64 = 500;
/// How long one caller process may take at most.
const CALLER_LIMIT: Duration = Duration::from_secs(30);

/// The payload of nested values, unicode and numbers, as JSON text (the
/// escapes are part of the test: every caller reads this text).
const RICH: &str = r#"{
  "nested": {"a": {"b": {"c": [1, [2, [3, {"d": null}]], {"e": true, "f": false}]}},
             "empty": {}, "list": [], "deep": [[[[[[[[[[{"bottom": "here"}]]]]]]]]]]},
  "unicode": {
    "latin": "héllo wörld ñ ç ß",
    "cjk": "日本語のテキスト 中文 한국어",
    "rtl": "שלום مرحبا",
    "astral": "😀 🎉 𝄞 𐍈 🏳️‍🌈 👩‍👩‍👧",
    "escaped_astral": "\ud83d\ude00 \ud834\udd1e \uD83C\uDF89",
    "escapes": "quote \" backslash \\ slash \/ nl \n tab \t cr \r bs \b ff \f nul \u0000 us \u001f del \u007f",
    "separators": "a\u2028b\u2029c",
    "bom": "\ufeffbom",
    "combining": "e\u0301 n\u0303",
    "ключ 🔑": "a key in unicode",
    "": "the empty key"
  },
  "numbers": {
    "zero": 0, "one": 1, "minus_one": -1,
    "max_safe": 9007199254740991, "two_53": 9007199254740992,
    "min_safe": -9007199254740991, "minus_two_53": -9007199254740992,
    "i32_max": 2147483647, "u32_max": 4294967295,
    "half": 0.5, "tenth": 0.1, "pi": 3.141592653589793, "neg": -2.5e-3,
    "tiny": 5e-324, "small": 1e-300, "huge": 1.7976931348623157e308,
    "avogadro": 6.02214076e23, "float_int": 1.5e9
  },
  "mixed": [null, true, false, 0, -0.25, "", "x", [], {}, [[[]]]]
}"#;

/// The auth every caller sends (and must get back).
const AUTH: &str = r#"{"token":"tök-🔑\u0001","user":{"id":9007199254740991,"roles":["admin","dev"]},"exp":1.5e9,"scopes":[]}"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lang {
    Rust,
    Python,
    Node,
    C,
}

const LANGS: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Node, Lang::C];

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Node => "node",
            Lang::C => "c",
        }
    }

    /// What the caller reports as the type of its language's timeout error.
    fn timeout_type(self) -> &'static str {
        match self {
            Lang::Rust => "ExoError::Timeout",
            Lang::Python => "RequestTimeout",
            Lang::Node => "TimeoutError",
            Lang::C => "EXO_ERR_TIMEOUT",
        }
    }

    fn role(self) -> String {
        format!("caller-{}", self.name())
    }
}

/// The size of the large array on ExoCom.
const BIG_BYTES: usize = 1 << 20;
/// The size of the large array over NATS: a frame must fit into the
/// server's default `max_payload` of 1 MiB, with room for the frame's other
/// fields and for callers that write the payload out longer than they read
/// it.
const NATS_BIG_BYTES: usize = 768 << 10;

/// A payload file and the value it holds.
struct Payload {
    file: PathBuf,
    value: Value,
    bytes: usize,
}

impl Payload {
    /// Writes `text` to `file` (atomically) and reads it.
    fn write(file: PathBuf, text: &str) -> Result<Payload, String> {
        let value = serde_json::from_str(text).map_err(|e| format!("{}: {e}", file.display()))?;
        write_atomically(&file, text.as_bytes())?;
        Ok(Payload {
            file,
            value,
            bytes: text.len(),
        })
    }
}

/// The payload files, the expected values and the compiled C programs,
/// made once per test binary.
struct Fixtures {
    rich: Payload,
    /// The large array on ExoCom.
    big: Payload,
    /// The large array over NATS.
    nats_big: Payload,
    auth: Value,
    c_caller: PathBuf,
    c_ping: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    match FIXTURES.get_or_init(make_fixtures) {
        Ok(f) => f,
        Err(e) => panic!("cannot prepare the matrix: {e}"),
    }
}

fn make_fixtures() -> Result<Fixtures, String> {
    ensure_setup();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("matrix");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let rich = Payload::write(dir.join("rich.json"), RICH)?;
    let big = Payload::write(dir.join("big.json"), &big_array_text(BIG_BYTES))?;
    let nats_big = Payload::write(dir.join("nats-big.json"), &big_array_text(NATS_BIG_BYTES))?;
    let auth: Value = serde_json::from_str(AUTH).map_err(|e| format!("AUTH: {e}"))?;

    let root = repo_root();
    let lib_dir = dir.join("lib");
    std::fs::create_dir_all(&lib_dir).map_err(|e| format!("{}: {e}", lib_dir.display()))?;
    let link = lib_dir.join(format!("link{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin_dir().join("libexoservice_c.so"), &link)
        .and_then(|()| std::fs::rename(&link, lib_dir.join("libexoservice.so.0")))
        .map_err(|e| format!("{}: {e}", lib_dir.display()))?;
    let c_caller = dir.join("caller");
    let c_ping = dir.join("c-ping");
    compile_c(&root.join("tests/matrix/caller.c"), &c_caller, &lib_dir)?;
    compile_c(&root.join("examples/c-ping/main.c"), &c_ping, &lib_dir)?;
    Ok(Fixtures {
        rich,
        big,
        nats_big,
        auth,
        c_caller,
        c_ping,
    })
}

/// An array of objects, at least `bytes` long as JSON text.
fn big_array_text(bytes: usize) -> String {
    let mut items = Vec::new();
    let mut len = 2;
    let mut i: u64 = 0;
    while len < bytes {
        let item = json!({
            "i": i,
            "id": format!("item-{i:06}"),
            "x": i as f64 / 8.0 - 1000.0,
            "text": "ünïcödé 😀 \"quoted\"\n",
            "even": i.is_multiple_of(2),
        });
        len += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    Value::Array(items).to_string()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Compiles a C program against the C binding's shared library as cargo
/// built it (target/debug/libexoservice_c.so, whose soname is
/// `libexoservice.so.0`: `lib_dir` gets that link, and the program an
/// rpath to it), with `cc -std=c11 -Wall -Wextra -Werror`.
fn compile_c(source: &Path, out: &Path, lib_dir: &Path) -> Result<(), String> {
    let root = repo_root();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg("-I")
        .arg(root.join("bindings-c/include"))
        .arg(source)
        .arg(bin_dir().join("libexoservice_c.so"))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cc {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The `startup.command` of an example's service.yml.
fn startup_command(example: &Path) -> String {
    let yml = std::fs::read_to_string(example.join("service.yml")).unwrap();
    yml.lines()
        .find_map(|l| l.trim().strip_prefix("command:"))
        .unwrap_or_else(|| panic!("no startup command in {}", example.display()))
        .trim()
        .to_owned()
}

/// The directory of the ping service of `lang`.
fn ping_dir(lang: Lang) -> PathBuf {
    repo_root()
        .join("examples")
        .join(format!("{}-ping", lang.name()))
}

/// The directory of the callers (their service.yml).
fn callers_dir() -> PathBuf {
    repo_root().join("tests/matrix")
}

/// Starts the ping service of `lang` as role `ping` and waits until it
/// is online. Rust, Python and Node run with their example's startup
/// command; C runs examples/c-ping/main.c built against target/debug (its
/// startup command builds against the release library).
fn start_ping(lang: Lang, carrier: &Carrier) -> Proc {
    let example = ping_dir(lang);
    let mut cmd = if lang == Lang::C {
        Command::new(&fixtures().c_ping)
    } else {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(startup_command(&example));
        cmd
    };
    cmd.current_dir(&example)
        .env("EXO_BIN_DIR", bin_dir())
        .env("ROLE", "ping");
    carrier.apply(&mut cmd);
    let mut proc = Proc::spawn(&mut cmd);
    let line = proc.wait_for("online at port", Duration::from_secs(30));
    assert_eq!(
        port_in(&line),
        carrier.port(),
        "the {} ping service is online elsewhere: {line}",
        lang.name()
    );
    proc
}

/// Where the messages of a round go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    /// The project's bus, `exocom`, as its own process.
    Exocom,
    /// A NATS server; no bus.
    Nats,
}

/// The routes of a round: role `ping` as the callee's service.yml says,
/// and a role `caller-<language>` per language as tests/matrix/service.yml
/// says.
fn matrix_routes(callee: Lang) -> Routes {
    let mut routes = Routes::default();
    routes
        .roles
        .insert("ping".to_owned(), role_routes(&ping_dir(callee), "ping"));
    for lang in LANGS {
        routes
            .roles
            .insert(lang.role(), role_routes(&callers_dir(), &lang.role()));
    }
    routes
}

/// The routes of the service in `dir` running as `role`, from its
/// service.yml (its `delivery:` included).
fn role_routes(dir: &Path, role: &str) -> RoleRoutes {
    let config = ServiceConfig::load_with(dir, &Env::from_pairs([("ROLE", role)]), None)
        .unwrap_or_else(|e| panic!("cannot read the service in {}: {e}", dir.display()));
    let at_least_once = config
        .delivery
        .iter()
        .filter(|(_, mode)| **mode == DeliveryMode::AtLeastOnce)
        .map(|(name, _)| name.clone())
        .collect();
    RoleRoutes {
        receives: config.receives,
        sends: config.sends,
        translations: Vec::new(),
        at_least_once,
    }
}

/// What carries the messages of a round: the bus process, or a NATS
/// server. Dropping it stops the bus or the server.
enum Carrier {
    Exocom {
        _bus: Proc,
        port: u16,
    },
    Nats {
        server: Box<LocalNats>,
        app: String,
        routes: String,
    },
}

/// The variables that choose the ExoCom bus: with [`NATS_VARS`], a service
/// of the matrix gets those of its round and none other from the test's
/// environment.
const EXOCOM_VARS: [&str; 4] = [EXOCOM_HOST, EXOCOM_PORT, EXOCOM_URL, EXOCOM_TOKEN];

impl Carrier {
    /// Starts the bus with the routes of the round of `callee`, or a NATS
    /// server for them (the application named after the round).
    fn start(transport: Transport, callee: Lang) -> Carrier {
        let routes = matrix_routes(callee).to_json();
        match transport {
            Transport::Exocom => {
                let mut bus = Proc::spawn(
                    Command::new(bin("exocom"))
                        .env("PORT", "0")
                        .env("EXOCOM_BIND", "127.0.0.1")
                        .env("SERVICE_DATA", routes),
                );
                let port = port_in(&bus.wait_for("ExoCom online at port", Duration::from_secs(15)));
                Carrier::Exocom { _bus: bus, port }
            }
            Transport::Nats => Carrier::Nats {
                server: Box::new(LocalNats::start()),
                app: format!("matrix-{}", callee.name()),
                routes,
            },
        }
    }

    /// The port a service prints when online: the bus's or the server's.
    fn port(&self) -> u16 {
        match self {
            Carrier::Exocom { port, .. } => *port,
            Carrier::Nats { server, .. } => server.port(),
        }
    }

    /// The variables that put a service on this carrier.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Carrier::Exocom { port, .. } => vec![
                ("EXOSERVICE_TRANSPORT", "exocom".to_owned()),
                ("EXOCOM_HOST", "127.0.0.1".to_owned()),
                ("EXOCOM_PORT", port.to_string()),
            ],
            Carrier::Nats {
                server,
                app,
                routes,
            } => vec![
                ("EXOSERVICE_TRANSPORT", "nats".to_owned()),
                ("NATS_URL", server.url()),
                ("EXOSERVICE_APP", app.clone()),
                ("EXOSERVICE_ROUTES", routes.clone()),
            ],
        }
    }

    /// Sets this carrier's variables on a command, and only those.
    fn apply(&self, cmd: &mut Command) {
        for var in EXOCOM_VARS.into_iter().chain(NATS_VARS) {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
    }
}

/// A caller process on its way.
struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

/// What a caller did: one value per `RESULT` line, or why it failed.
type Outcome = Result<Vec<Value>, String>;

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Starts the caller of `lang` (not Rust: that one runs in this process).
fn start_caller(lang: Lang, carrier: &Carrier, timeout_ms: u64, files: &[&Path]) -> Running {
    let root = repo_root();
    let mut cmd = match lang {
        Lang::Python => {
            let mut c = Command::new(root.join(".venv/bin/python"));
            c.arg(root.join("tests/matrix/caller.py"));
            c
        }
        Lang::Node => {
            let mut c = Command::new("node");
            c.arg(root.join("tests/matrix/caller.js"));
            c
        }
        Lang::C => Command::new(&fixtures().c_caller),
        Lang::Rust => unreachable!("the Rust caller runs in the test"),
    };
    cmd.arg(timeout_ms.to_string())
        .arg(AUTH)
        .args(files)
        .current_dir(callers_dir())
        .env("ROLE", lang.role())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    carrier.apply(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {} caller: {e}", lang.name()));
    let stdout = reader(child.stdout.take().unwrap());
    let stderr = reader(child.stderr.take().unwrap());
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Waits for the caller (killing it after `limit`) and reads its
    /// results; anything but a clean exit with one result per file fails.
    fn finish(mut self, limit: Duration, expected: usize) -> Outcome {
        let deadline = Instant::now() + limit;
        let status: Option<ExitStatus> = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = String::from_utf8_lossy(&self.stdout.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.join().unwrap()).into_owned();
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n    ")
        };
        let results: Vec<Value> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| json!({"unreadable": e.to_string()}))
            })
            .collect();
        match status {
            None => Err(format!(
                "the caller did not finish within {limit:?}; stderr:\n    {}",
                tail(&stderr)
            )),
            Some(s) if !s.success() => Err(format!(
                "the caller crashed ({s}); stderr:\n    {}",
                tail(&stderr)
            )),
            Some(_) if results.len() != expected => Err(format!(
                "the caller printed {} results, not {expected}; stderr:\n    {}",
                results.len(),
                tail(&stderr)
            )),
            Some(_) => Ok(results),
        }
    }
}

/// The Rust caller, in this process: the same steps as the other callers
/// (service.yml of tests/matrix, ROLE and the carrier's variables, one
/// `request` with auth per file).
fn rust_caller(carrier: &Carrier, timeout_ms: u64, files: &[&Path]) -> Outcome {
    let env = Env::from_pairs(
        [("ROLE", Lang::Rust.role())]
            .into_iter()
            .chain(carrier.env()),
    );
    let config = ServiceConfig::load_with(&callers_dir(), &env, None).map_err(|e| e.to_string())?;
    let runtime = exoservice::runtime::shared().map_err(|e| e.to_string())?;
    let engine = Engine::with_runtime(config, runtime.handle().clone());
    engine.announce_online(false);
    engine.connect().map_err(|e| e.to_string())?;
    if !runtime.block_on(engine.wait_online(Duration::from_secs(10))) {
        return Err("the Rust caller did not register within 10 s".into());
    }
    let auth = exoservice::message::raw_from_text(AUTH).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        let payload = exoservice::message::raw_from_text(&text).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let answer = engine
            .client()
            .start_request(
                "ping",
                payload,
                auth.clone(),
                Duration::from_millis(timeout_ms),
            )
            .and_then(|pending| pending.wait_blocking());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        results.push(match answer {
            Ok(reply) => json!({
                "ok": true,
                "name": reply.name,
                "payload": parse(reply.payload_json()),
                "auth": reply.auth.as_deref().map_or(Value::Null, |a| parse(a.get())),
                "elapsed_ms": elapsed_ms,
            }),
            Err(e @ ExoError::Timeout { .. }) => json!({
                "ok": false, "error": "timeout", "type": "ExoError::Timeout",
                "message": e.to_string(), "elapsed_ms": elapsed_ms,
            }),
            Err(e) => json!({
                "ok": false, "error": "other", "type": format!("{e:?}"),
                "message": e.to_string(), "elapsed_ms": elapsed_ms,
            }),
        });
    }
    engine.stop();
    runtime.block_on(engine.drain());
    Ok(results)
}

fn call(lang: Lang, carrier: &Carrier, timeout_ms: u64, files: &[&Path]) -> Outcome {
    if lang == Lang::Rust {
        rust_caller(carrier, timeout_ms, files)
    } else {
        start_caller(lang, carrier, timeout_ms, files).finish(CALLER_LIMIT, files.len())
    }
}

/// The first place where `actual` differs from `expected`, described.
/// Numbers compare by value (`1.5e9` and `1500000000` are one number: not
/// every language keeps the difference).
fn diff(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let here = format!("{path}[{k:?}]");
                match a.get(k) {
                    None => return Some(format!("{here} is missing")),
                    Some(av) => {
                        if let Some(d) = diff(ev, av, &here) {
                            return Some(d);
                        }
                    }
                }
            }
            a.keys()
                .find(|k| !e.contains_key(*k))
                .map(|k| format!("{path}[{k:?}] was not sent but came back"))
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!("{path} has {} items, not {}", a.len(), e.len()));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| diff(ev, av, &format!("{path}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64(), e.as_u64(), a.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => e.as_f64() == a.as_f64(),
            };
            (!same).then(|| format!("{path}: expected {e}, got {a}"))
        }
        _ if expected == actual => None,
        _ => Some(format!(
            "{path}: expected {}, got {}",
            short(expected),
            short(actual)
        )),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

/// Checks one answered request; the failure names what differs.
fn check_reply(what: &str, result: &Value, expected: &Value, auth: &Value) -> Result<u64, String> {
    if result["ok"] != true {
        return Err(format!("{what}: the request failed: {}", short(result)));
    }
    if result["name"] != "pong" {
        return Err(format!(
            "{what}: the reply is {}, not \"pong\"",
            result["name"]
        ));
    }
    if let Some(d) = diff(expected, &result["payload"], "$") {
        return Err(format!("{what}: payload differs at {d}"));
    }
    if let Some(d) = diff(auth, &result["auth"], "auth") {
        return Err(format!("{what}: the reply's auth differs: {d}"));
    }
    Ok(result["elapsed_ms"].as_u64().unwrap_or(0))
}

/// One round: the ping service of `callee`, asked by every caller while it
/// runs, then again once it has stopped, over `transport`.
fn round(callee: Lang, transport: Transport) {
    let fx = fixtures();
    let started = Instant::now();
    let carrier = Carrier::start(transport, callee);
    let big = match transport {
        Transport::Exocom => &fx.big,
        Transport::Nats => &fx.nats_big,
    };
    let mut ping = start_ping(callee, &carrier);
    let mut failures = Vec::new();
    let mut report = Vec::new();

    for caller in LANGS {
        let pair = format!("{} → {}", caller.name(), callee.name());
        let files = [fx.rich.file.as_path(), big.file.as_path()];
        match call(caller, &carrier, REPLY_TIMEOUT_MS, &files) {
            Err(e) => failures.push(format!("{pair}: {e}")),
            Ok(results) => {
                let rich = check_reply(&pair, &results[0], &fx.rich.value, &fx.auth);
                let big_reply = check_reply(
                    &format!("{pair} (array of {} bytes)", big.bytes),
                    &results[1],
                    &big.value,
                    &fx.auth,
                );
                match (rich, big_reply) {
                    (Ok(a), Ok(b)) => report.push(format!(
                        "{pair}: ok ({a} ms, {} KiB in {b} ms)",
                        big.bytes >> 10
                    )),
                    (a, b) => failures.extend(a.err().into_iter().chain(b.err())),
                }
            }
        }
    }

    ping.signal("TERM");
    let code = ping.wait_exit(Duration::from_secs(20));
    if code != Some(0) {
        failures.push(format!(
            "the {} ping service did not exit cleanly on SIGTERM ({code:?}):\n{}",
            callee.name(),
            ping.output()
        ));
    }

    // The callers at once; the Rust one in this thread meanwhile.
    let files = [fx.rich.file.as_path()];
    let running: Vec<(Lang, Running)> = LANGS
        .into_iter()
        .filter(|l| *l != Lang::Rust)
        .map(|l| (l, start_caller(l, &carrier, STOPPED_TIMEOUT_MS, &files)))
        .collect();
    let mut outcomes = vec![(
        Lang::Rust,
        call(Lang::Rust, &carrier, STOPPED_TIMEOUT_MS, &files),
    )];
    outcomes.extend(
        running
            .into_iter()
            .map(|(l, r)| (l, r.finish(CALLER_LIMIT, 1))),
    );
    for (caller, outcome) in outcomes {
        let pair = format!("{} → {} (stopped)", caller.name(), callee.name());
        let result = match outcome {
            Err(e) => {
                failures.push(format!("{pair}: {e}"));
                continue;
            }
            Ok(results) => results.into_iter().next().unwrap(),
        };
        let elapsed = result["elapsed_ms"].as_u64().unwrap_or(0);
        if result["ok"] != false || result["error"] != "timeout" {
            failures.push(format!(
                "{pair}: expected a timeout error, got {}",
                short(&result)
            ));
        } else if result["type"] != caller.timeout_type() {
            failures.push(format!(
                "{pair}: the timeout is reported as {}, not {}",
                result["type"],
                caller.timeout_type()
            ));
        } else if !(STOPPED_TIMEOUT_MS - 20..STOPPED_TIMEOUT_MS + 4_000).contains(&elapsed) {
            failures.push(format!(
                "{pair}: timed out after {elapsed} ms, with a deadline of {STOPPED_TIMEOUT_MS} ms"
            ));
        } else {
            report.push(format!(
                "{pair}: {} after {elapsed} ms",
                result["type"].as_str().unwrap_or("?")
            ));
        }
    }

    println!(
        "{} ping service over {transport:?}, {:.1} s:\n  {}",
        callee.name(),
        started.elapsed().as_secs_f64(),
        report.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} failure(s) with the {} ping service over {transport:?}:\n- {}",
        failures.len(),
        callee.name(),
        failures.join("\n- ")
    );
}

#[test]
fn every_language_asks_the_rust_ping_service() {
    round(Lang::Rust, Transport::Exocom);
}

#[test]
fn every_language_asks_the_python_ping_service() {
    round(Lang::Python, Transport::Exocom);
}

#[test]
fn every_language_asks_the_node_ping_service() {
    round(Lang::Node, Transport::Exocom);
}

#[test]
fn every_language_asks_the_c_ping_service() {
    round(Lang::C, Transport::Exocom);
}

#[test]
fn over_nats_every_language_asks_the_rust_ping_service() {
    round(Lang::Rust, Transport::Nats);
}

#[test]
fn over_nats_every_language_asks_the_python_ping_service() {
    round(Lang::Python, Transport::Nats);
}

#[test]
fn over_nats_every_language_asks_the_node_ping_service() {
    round(Lang::Node, Transport::Nats);
}

#[test]
fn over_nats_every_language_asks_the_c_ping_service() {
    round(Lang::C, Transport::Nats);
}

#[test]
fn the_routes_are_those_of_the_service_files() {
    let routes = matrix_routes(Lang::C);
    let ping = routes.role("ping").expect("role ping");
    assert_eq!(ping.receives, ["ping"]);
    assert_eq!(ping.sends, ["pong"]);
    for lang in LANGS {
        let caller = routes.role(&lang.role()).expect("a caller role");
        assert_eq!(caller.receives, ["pong"]);
        assert_eq!(caller.sends, ["ping"]);
    }
    assert_eq!(routes.roles.len(), 1 + LANGS.len());
}

#[test]
fn the_comparison_names_the_place_of_a_difference() {
    let expected = json!({"a": [1, {"b": "é"}], "n": 1.5e9, "big": 9007199254740992_u64});
    assert_eq!(diff(&expected, &expected.clone(), "$"), None);
    let same_number = json!({"a": [1, {"b": "é"}], "n": 1500000000, "big": 9007199254740992_u64});
    assert_eq!(diff(&expected, &same_number, "$"), None);
    let changed = json!({"a": [1, {"b": "e"}], "n": 1.5e9, "big": 9007199254740992_u64});
    assert_eq!(
        diff(&expected, &changed, "$").unwrap(),
        r#"$["a"][1]["b"]: expected "é", got "e""#
    );
    let off_by_one = json!({"a": [1, {"b": "é"}], "n": 1.5e9, "big": 9007199254740991_u64});
    assert!(
        diff(&expected, &off_by_one, "$")
            .unwrap()
            .starts_with(r#"$["big"]"#)
    );
    let shorter = json!({"a": [1], "n": 1.5e9, "big": 9007199254740992_u64});
    assert_eq!(
        diff(&expected, &shorter, "$").unwrap(),
        r#"$["a"] has 1 items, not 2"#
    );
    let extra = json!({"a": [1, {"b": "é"}], "n": 1.5e9, "big": 9007199254740992_u64, "x": 0});
    assert!(
        diff(&expected, &extra, "$")
            .unwrap()
            .contains("was not sent")
    );
}

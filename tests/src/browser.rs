//! A headless Chromium (Debian's `chromium`) driven over the Chrome
//! DevTools Protocol, for tests that use a page as a person does: click an
//! input, type, click a button, read what the page shows.
//!
//! [`Browser::launch`] starts `/usr/bin/chromium --headless
//! --remote-debugging-port=0` with a fresh profile in a temporary directory,
//! reads the DevTools WebSocket address it prints and connects to it.
//! [`Browser::open`] opens a tab as a [`Page`]. Every call and every wait is
//! bounded. Dropping the [`Browser`] kills its whole process group (the
//! browser and its renderers), also when a test panics, then removes the
//! profile.
//!
//! The browser reaches nothing but this machine: its background services
//! are switched off and every address other than the loopback one goes to a
//! proxy on 127.0.0.1 that does not exist.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::process::Proc;

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the browser gets to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How many unread protocol events are kept (the oldest go first).
const MAX_EVENTS: usize = 10_000;

/// A headless Chromium and the DevTools connection to it. Dropping it kills
/// the browser (its whole process group) and removes its profile.
pub struct Browser {
    cdp: Cdp,
    process: Group,
    _profile: tempfile::TempDir,
}

/// The browser's process; dropping it kills the browser's whole process
/// group (renderers, GPU and network processes too), then reaps it.
struct Group(Proc);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group the
        // browser leads (it was started with process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        // Proc's drop reaps the browser.
    }
}

impl Browser {
    /// Starts the browser and connects to it. Panics naming
    /// `tests/setup-browser` when Chromium is not installed, and with the
    /// browser's output when it does not start.
    pub fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: run tests/setup-browser first (it installs Debian's chromium)"
        );
        let profile = tempfile::tempdir().expect("a temporary directory");
        let mut cmd = Command::new(CHROMIUM);
        cmd.arg("--headless")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1024,768",
                // Nothing beyond this machine: no background traffic, and
                // a dead proxy for every address that is not the loopback
                // one (loopback bypasses proxies).
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-breakpad",
                "--metrics-recording-only",
                "--no-pings",
                "--safebrowsing-disable-auto-update",
                "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
                "--proxy-server=http://127.0.0.1:9",
            ]);
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium refuses to run as root with its sandbox on.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank");
        // Its own process group, so that the drop kills every process of it.
        cmd.process_group(0);
        let mut process = Group(Proc::spawn(&mut cmd));
        let line = process
            .0
            .wait_for("DevTools listening on ws://", LAUNCH_TIMEOUT);
        let url = line
            .split("DevTools listening on ")
            .nth(1)
            .expect("the address follows")
            .trim()
            .to_owned();
        let cdp = Cdp::connect(&url).unwrap_or_else(|e| {
            panic!(
                "cannot connect to the browser at {url}: {e}\n{}",
                process.0.output()
            )
        });
        Browser {
            cdp,
            process,
            _profile: profile,
        }
    }

    /// The browser's version, e.g. `Chrome/156.0.8078.108`.
    pub fn version(&mut self) -> String {
        let v = self
            .cdp
            .call(None, "Browser.getVersion", json!({}))
            .unwrap();
        v["product"].as_str().unwrap_or_default().to_owned()
    }

    /// Opens a new tab at `url` and waits until the page has loaded.
    pub fn open(&mut self, url: &str) -> Page<'_> {
        let target = self
            .cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .expect("a new tab");
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .expect("attached to the tab");
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let mut page = Page {
            cdp: &mut self.cdp,
            session,
        };
        page.call("Page.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page.goto(url);
        page
    }

    /// The browser's output so far (its stderr has its own complaints).
    pub fn output(&self) -> String {
        self.process.0.output()
    }
}

/// One tab of the [`Browser`], attached over a flat DevTools session.
pub struct Page<'b> {
    cdp: &'b mut Cdp,
    session: String,
}

/// The centre of an element in the page's viewport.
#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    y: f64,
}

impl Page<'_> {
    /// Calls a DevTools method on this tab; panics with the protocol's
    /// error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.cdp
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Navigates to `url` and waits for the page's load event.
    pub fn goto(&mut self, url: &str) {
        self.cdp
            .events
            .retain(|e| e["method"] != "Page.loadEventFired");
        let nav = self.call("Page.navigate", json!({"url": url}));
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            panic!("cannot load {url}: {err}");
        }
        self.cdp
            .wait_event(&self.session, "Page.loadEventFired", CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("{url} did not load: {e}"));
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise)
    /// and returns its value as JSON. A thrown exception is an `Err` with
    /// its description.
    pub fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("exception")
                .to_owned());
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Like [`Page::try_eval`]; panics on an exception.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Evaluates `expression` every 50 ms until it gives something other
    /// than `null`, `false`, `undefined`; returns that. Panics after
    /// `timeout` with the last value and `context` (an expression whose
    /// value helps to understand the failure, e.g. the page's HTML).
    pub fn wait_until(&mut self, expression: &str, timeout: Duration, context: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_eval(expression);
            match &last {
                Ok(Value::Null) | Ok(Value::Bool(false)) => {}
                Ok(v) => return v.clone(),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                let ctx = self.try_eval(context);
                panic!(
                    "not the case within {timeout:?}: {expression}\nlast value: {last:?}\n{context}: {ctx:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scrolls the element that `selector` finds into view and returns its
    /// centre; panics when there is none, or when another element covers it
    /// there (a person could not click it either).
    fn centre_of(&mut self, selector: &str) -> Point {
        let sel = serde_json::to_string(selector).unwrap();
        let v = self.eval(&format!(
            r#"(() => {{
                const el = document.querySelector({sel});
                if (!el) return {{error: "no element matches"}};
                el.scrollIntoView({{block: "center", inline: "center"}});
                const r = el.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return {{error: "the element is not shown"}};
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                const top = document.elementFromPoint(x, y);
                if (!top || !(el === top || el.contains(top)))
                    return {{error: "covered by " + (top ? top.outerHTML : "nothing")}};
                return {{x, y}};
            }})()"#
        ));
        if let Some(err) = v.get("error") {
            panic!("cannot click {selector}: {err}");
        }
        Point {
            x: v["x"].as_f64().unwrap(),
            y: v["y"].as_f64().unwrap(),
        }
    }

    /// Clicks the element that `selector` finds with the mouse: moves there,
    /// presses and releases the left button (real input events, dispatched
    /// by the browser as for a person).
    pub fn click(&mut self, selector: &str) {
        let Point { x, y } = self.centre_of(selector);
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            );
        }
    }

    /// Clicks into the input that `selector` finds, selects what it holds
    /// (Ctrl+A) and types `text` over it. Panics when the input does not
    /// hold exactly `text` afterwards.
    pub fn fill(&mut self, selector: &str, text: &str) {
        self.click(selector);
        let ctrl = 2;
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "rawKeyDown", "modifiers": ctrl, "key": "a", "code": "KeyA",
                   "windowsVirtualKeyCode": 65, "commands": ["selectAll"]}),
        );
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "modifiers": ctrl, "key": "a", "code": "KeyA",
                   "windowsVirtualKeyCode": 65}),
        );
        self.call("Input.insertText", json!({"text": text}));
        let sel = serde_json::to_string(selector).unwrap();
        let value = self.eval(&format!(
            "(() => {{ const el = document.querySelector({sel}); \
             return document.activeElement === el ? el.value : null; }})()"
        ));
        assert_eq!(
            value,
            Value::String(text.to_owned()),
            "{selector} (focused) after typing"
        );
    }

    /// The uncaught exceptions (unhandled promise rejections too) and
    /// `console.error` calls of the page since it was opened.
    pub fn errors(&mut self) -> Vec<String> {
        self.cdp.drain_ready();
        self.cdp
            .events
            .iter()
            .filter(|e| e["sessionId"] == self.session.as_str())
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    let d = &e["params"]["exceptionDetails"];
                    Some(
                        d["exception"]["description"]
                            .as_str()
                            .or(d["text"].as_str())
                            .unwrap_or("exception")
                            .to_owned(),
                    )
                }
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    Some(format!("console.error: {}", e["params"]["args"]))
                }
                _ => None,
            })
            .collect()
    }
}

/// A DevTools WebSocket connection: calls wait for their answer, events
/// that arrive meanwhile are kept for [`Cdp::wait_event`].
struct Cdp {
    rt: tokio::runtime::Runtime,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Result<Cdp, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (ws, _) = rt
            .block_on(async {
                tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(url)).await
            })
            .map_err(|_| format!("no connection within {CALL_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(Cdp {
            rt,
            ws,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Sends a call (to a tab's session, or to the browser) and waits for
    /// its answer; `Err` with the protocol's error message.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let Cdp { rt, ws, events, .. } = self;
        rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, async {
                ws.send(Message::text(msg.to_string()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                loop {
                    let v = read(ws).await?;
                    if v["id"] == id {
                        return match v.get("error") {
                            Some(err) => Err(format!("{err}")),
                            None => Ok(v["result"].clone()),
                        };
                    }
                    keep(events, v);
                }
            })
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
        })
    }

    /// Waits for an event of a tab (taking it from the kept ones first).
    fn wait_event(
        &mut self,
        session: &str,
        method: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let matches = |e: &Value| e["method"] == method && e["sessionId"] == session;
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(self.events.remove(i).unwrap());
        }
        let Cdp { rt, ws, events, .. } = self;
        rt.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    let v = read(ws).await?;
                    if matches(&v) {
                        return Ok(v);
                    }
                    keep(events, v);
                }
            })
            .await
            .map_err(|_| format!("no {method} within {timeout:?}"))?
        })
    }

    /// Keeps the events that have already arrived.
    fn drain_ready(&mut self) {
        let Cdp { rt, ws, events, .. } = self;
        rt.block_on(async {
            while let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(20), read(ws)).await {
                keep(events, v);
            }
        });
    }
}

/// Reads the next protocol message (text frames; others are skipped).
async fn read(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Result<Value, String> {
    loop {
        match ws.next().await {
            None => return Err("the browser closed the connection".into()),
            Some(Err(e)) => return Err(format!("receive: {e}")),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"));
            }
            Some(Ok(Message::Close(_))) => return Err("the browser closed the connection".into()),
            Some(Ok(_)) => {}
        }
    }
}

fn keep(events: &mut VecDeque<Value>, event: Value) {
    if event.get("method").is_some() {
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }
}

//! The bus's log lines: where they go, and a broadcast for observers.
//!
//! Lines are plain text as the Go ExoCom writes them (`Warning: ...`, route
//! lines, `'web' registered`). Writing to standard output happens on a
//! dedicated thread behind a bounded queue, so a slow or blocked standard
//! output never slows routing down (lines that do not fit are counted and
//! the count is logged once output catches up).
//!
//! On standard output ([`LogSink::Stdout`]) the lines follow the same two
//! variables as the rest of the logs (see [`crate::logging`]), read when the
//! bus starts: `RUST_LOG` filters them as target `exocom` (`Error: ...`
//! lines are at level ERROR, `Warning: ...` lines at WARN, all others at
//! INFO; unset, everything is written, exactly as before), and
//! `EXO_LOG_FORMAT=json` writes each as a JSON object
//! `{"timestamp":"…","level":"WARN","message":"Warning: …","target":"exocom"}`
//! whose `message` is the line's text. Observers and
//! [`LogSink::Callback`] always get every line as plain text.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tracing::Level;

use crate::logging::{Format, LineFilter};

/// The target the bus's lines have for `RUST_LOG` and in JSON lines.
pub const TARGET: &str = "exocom";

/// Lines queued for standard output at most.
const STDOUT_QUEUE: usize = 4096;
/// Lines a [`broadcast`] subscriber may fall behind.
const BROADCAST_CAPACITY: usize = 4096;

/// Where a bus writes its log lines.
#[derive(Clone, Default)]
pub enum LogSink {
    /// Standard output, one line each (the default, as the Go ExoCom).
    #[default]
    Stdout,
    /// Nowhere (observers of [`super::BusHandle::subscribe_logs`] still get
    /// every line).
    Discard,
    /// A function called with each line, on the task that logs it. It must
    /// return quickly and must not panic.
    Callback(Arc<dyn Fn(&str) + Send + Sync>),
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogSink::Stdout => "Stdout",
            LogSink::Discard => "Discard",
            LogSink::Callback(_) => "Callback",
        })
    }
}

/// The level of a bus line, from its text.
fn level_of(line: &str) -> Level {
    if line.starts_with("Error:") {
        Level::ERROR
    } else if line.starts_with("Warning:") {
        Level::WARN
    } else {
        Level::INFO
    }
}

/// How lines are written to standard output: which levels, which format.
#[derive(Debug, Clone, Copy)]
struct Style {
    json: bool,
    error: bool,
    warn: bool,
    info: bool,
}

impl Style {
    /// From `EXO_LOG_FORMAT` and `RUST_LOG`.
    fn from_env() -> Style {
        let filter = LineFilter::from_env();
        Style {
            json: Format::from_env() == Format::Json,
            error: filter.enabled(TARGET, Level::ERROR),
            warn: filter.enabled(TARGET, Level::WARN),
            info: filter.enabled(TARGET, Level::INFO),
        }
    }

    fn wants(&self, level: Level) -> bool {
        match level {
            Level::ERROR => self.error,
            Level::WARN => self.warn,
            _ => self.info,
        }
    }

    /// Appends one line as written (with its newline).
    fn render(&self, out: &mut String, line: &str, level: Level, at: Option<SystemTime>) {
        if self.json {
            out.push_str("{\"timestamp\":\"");
            out.push_str(&super::wire::rfc3339_nanos(
                at.unwrap_or_else(SystemTime::now),
            ));
            out.push_str("\",\"level\":\"");
            out.push_str(level.as_str());
            out.push_str("\",\"message\":");
            super::wire::push_json_str(out, line);
            out.push_str(",\"target\":\"");
            out.push_str(TARGET);
            out.push_str("\"}\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
}

enum Command {
    /// A line, its level and (in JSON) when it was logged.
    Line(String, Level, Option<SystemTime>),
    Flush(mpsc::SyncSender<()>),
}

/// The queue to the thread that writes standard output.
struct StdoutWriter {
    tx: mpsc::SyncSender<Command>,
    dropped: Arc<AtomicU64>,
    style: Style,
}

impl StdoutWriter {
    fn start(style: Style) -> Option<StdoutWriter> {
        let (tx, rx) = mpsc::sync_channel::<Command>(STDOUT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("exocom-log".into())
            .spawn(move || write_stdout(rx, counter, style))
            .ok()?;
        Some(StdoutWriter { tx, dropped, style })
    }

    fn write(&self, line: String) {
        let level = level_of(&line);
        if !self.style.wants(level) {
            return;
        }
        let at = self.style.json.then(SystemTime::now);
        if self.tx.try_send(Command::Line(line, level, at)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_stdout(rx: mpsc::Receiver<Command>, dropped: Arc<AtomicU64>, style: Style) {
    let mut text = String::new();
    while let Ok(first) = rx.recv() {
        // Gather what is queued, then write it in one go (standard output
        // is locked only for that write, so others may print too).
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Line(line, level, at) => {
                    let lost = dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 && style.warn {
                        let warning = format!(
                            "Warning: {lost} log lines were dropped (standard output is too slow)"
                        );
                        style.render(&mut text, &warning, Level::WARN, None);
                    }
                    style.render(&mut text, &line, level, at);
                }
                Command::Flush(ack) => acks.push(ack),
            }
            if text.len() > 64 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        text.clear();
        if text.capacity() > 256 * 1024 {
            text = String::new();
        }
        for ack in acks {
            let _ = ack.try_send(());
        }
    }
}

enum Output {
    Stdout(StdoutWriter),
    Discard,
    Callback(Arc<dyn Fn(&str) + Send + Sync>),
}

/// Writes the bus's log lines to its sink and to observers.
pub(crate) struct Logger {
    output: Output,
    routes: bool,
    observers: broadcast::Sender<String>,
}

impl Logger {
    pub(crate) fn new(sink: LogSink, routes: bool) -> Logger {
        let output = match sink {
            LogSink::Stdout => {
                let style = Style::from_env();
                match StdoutWriter::start(style) {
                    Some(w) => Output::Stdout(w),
                    // No thread: write on the caller's (still one write each).
                    None => Output::Callback(Arc::new(move |line: &str| {
                        let level = level_of(line);
                        if style.wants(level) {
                            let mut text = String::new();
                            style.render(&mut text, line, level, None);
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(text.as_bytes());
                            let _ = out.flush();
                        }
                    })),
                }
            }
            LogSink::Discard => Output::Discard,
            LogSink::Callback(f) => Output::Callback(f),
        };
        let (observers, _) = broadcast::channel(BROADCAST_CAPACITY);
        Logger {
            output,
            routes,
            observers,
        }
    }

    /// Whether per-copy route lines are wanted (check before formatting one).
    pub(crate) fn routes_enabled(&self) -> bool {
        self.routes
    }

    /// Logs one line.
    pub(crate) fn line(&self, line: String) {
        if self.observers.receiver_count() > 0 {
            let _ = self.observers.send(line.clone());
        }
        match &self.output {
            Output::Stdout(w) => w.write(line),
            Output::Discard => {}
            Output::Callback(f) => f(&line),
        }
    }

    /// A receiver of every line logged from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.observers.subscribe()
    }

    /// Waits (at most 2 s) until every line logged so far is written.
    pub(crate) async fn flush(&self) {
        if let Output::Stdout(w) = &self.output {
            let tx = w.tx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                if tx.send(Command::Flush(ack_tx)).is_ok() {
                    let _ = ack_rx.recv_timeout(Duration::from_secs(2));
                }
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(json: bool, filter: Option<&str>) -> Style {
        let filter = LineFilter::parse(filter);
        Style {
            json,
            error: filter.enabled(TARGET, Level::ERROR),
            warn: filter.enabled(TARGET, Level::WARN),
            info: filter.enabled(TARGET, Level::INFO),
        }
    }

    #[test]
    fn text_lines_stay_as_they_are() {
        let mut out = String::new();
        let line = "web  --[ users create ]-[ mongo create ]->  users";
        style(false, None).render(&mut out, line, level_of(line), None);
        assert_eq!(out, format!("{line}\n"));
    }

    #[test]
    fn json_lines_carry_the_text_as_message() {
        let mut out = String::new();
        let line = "Warning: Service 'we\"b' is not allowed to broadcast the message 'a\\b'";
        style(true, None).render(&mut out, line, level_of(line), None);
        assert!(
            out.ends_with('\n') && out.matches('\n').count() == 1,
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], line);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "exocom");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
    }

    #[test]
    fn levels_come_from_the_prefix_and_filter() {
        assert_eq!(level_of("Error: x"), Level::ERROR);
        assert_eq!(level_of("Warning: x"), Level::WARN);
        assert_eq!(level_of("'web' registered"), Level::INFO);
        let warn = style(false, Some("warn"));
        assert!(warn.wants(Level::WARN) && warn.wants(Level::ERROR));
        assert!(!warn.wants(Level::INFO));
        let all = style(false, None);
        assert!(all.wants(Level::INFO));
    }
}

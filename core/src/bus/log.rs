//! The bus's log lines: where they go, and a broadcast for observers.
//!
//! Lines are plain text as the Go ExoCom writes them (`Warning: ...`, route
//! lines, `'web' registered`). Writing to standard output happens on a
//! dedicated thread behind a bounded queue, so a slow or blocked standard
//! output never slows routing down (lines that do not fit are counted and
//! the count is logged once output catches up).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::broadcast;

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

enum Command {
    Line(String),
    Flush(mpsc::SyncSender<()>),
}

/// The queue to the thread that writes standard output.
struct StdoutWriter {
    tx: mpsc::SyncSender<Command>,
    dropped: Arc<AtomicU64>,
}

impl StdoutWriter {
    fn start() -> Option<StdoutWriter> {
        let (tx, rx) = mpsc::sync_channel::<Command>(STDOUT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("exocom-log".into())
            .spawn(move || write_stdout(rx, counter))
            .ok()?;
        Some(StdoutWriter { tx, dropped })
    }

    fn write(&self, line: String) {
        if self.tx.try_send(Command::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_stdout(rx: mpsc::Receiver<Command>, dropped: Arc<AtomicU64>) {
    let mut text = String::new();
    while let Ok(first) = rx.recv() {
        // Gather what is queued, then write it in one go (standard output
        // is locked only for that write, so others may print too).
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Line(line) => {
                    let lost = dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        text.push_str(&format!(
                            "Warning: {lost} log lines were dropped (standard output is too slow)\n"
                        ));
                    }
                    text.push_str(&line);
                    text.push('\n');
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
            LogSink::Stdout => match StdoutWriter::start() {
                Some(w) => Output::Stdout(w),
                None => Output::Callback(Arc::new(|line: &str| println!("{line}"))),
            },
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

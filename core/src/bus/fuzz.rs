//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpus (`core/tests/fuzz_corpus.rs`). Not a stable API.
//!
//! Each function takes arbitrary bytes, runs them through the real code
//! and panics only when it finds a bug: a panic inside the code under test,
//! or a broken invariant (the two frame readers disagree, the bus writes a
//! frame no reader accepts, a configuration error without a place).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use super::config::BusConfig;
use super::connection::{Frame, FrameHandler, Outbox};
use super::log::LogSink;
use super::server::App;
use super::shared::Shared;
use super::wire::{Incoming, View, encode};
use crate::message::Message;
use crate::routes::Routes;

/// The frame reader: `data` as a frame (text when it is UTF-8, else
/// binary), read by [`Message::parse`] and by the bus's own reader, which
/// must accept and refuse the same frames and read the same fields. An
/// accepted message must survive being written again, by
/// [`Message::to_json`] and by the bus's writer, and read back unchanged.
pub fn read_frame(data: &[u8]) {
    let ours = match std::str::from_utf8(data) {
        Ok(text) => Incoming::parse(text),
        Err(_) => Incoming::parse_bytes(data),
    };
    let theirs = Message::parse(data);
    let (ours, theirs) = match (ours, theirs) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return,
        (a, b) => panic!("the readers disagree: bus {a:?}, Message::parse {b:?}"),
    };
    let mut read = ours.view().to_message();
    read.id = read.id.filter(|_| theirs.id.is_some());
    read.activity_id = read.activity_id.filter(|_| theirs.activity_id.is_some());
    let plain = Message {
        timestamp: None,
        response_time: None,
        ..theirs.clone()
    };
    assert_eq!(read, plain, "the readers read different fields");

    // Written by the service side and read back: the same message.
    let mut sent = theirs.clone();
    sent.id.get_or_insert_with(|| "i".to_owned());
    sent.activity_id.get_or_insert_with(|| "a".to_owned());
    let again = Message::parse(sent.to_json().as_bytes())
        .unwrap_or_else(|e| panic!("Message::to_json wrote an unreadable frame: {e}"));
    assert_eq!(again, sent, "Message::to_json does not round-trip");

    // Written by the bus (as a copy under another name) and read back.
    let stamp = "2026-01-01T00:00:00.5Z";
    let copy = encode(&View::of(&sent), "copy name", stamp, Some(42));
    let back = Message::parse(copy.as_bytes())
        .unwrap_or_else(|e| panic!("the bus wrote an unreadable frame {copy:?}: {e}"));
    let expected = Message {
        name: "copy name".to_owned(),
        timestamp: Some(stamp.to_owned()),
        response_time: Some(42),
        ..sent
    };
    assert_eq!(back, expected, "the bus's writer changed the message");
}

/// Route tables the bus harness picks from (the first byte of its input):
/// translations and several receivers; request-reply; the security
/// adapter; no routes at all.
const ROUTES: [&str; 4] = [
    r#"{"web":{"receives":["users created"],"sends":["users create","users list","delete user"]},"users":{"receives":["mongo create","delete user"],"sends":["mongo created"],"translations":[{"public":"users create","internal":"mongo create"},{"public":"users created","internal":"mongo created"}]},"log":{"receives":["users create"]}}"#,
    r#"{"tester":{"sends":["ping"],"receives":["pong"]},"ping":{"receives":["ping"],"sends":["pong"]},"other":{"sends":[]}}"#,
    r#"{"web":{"receives":["user created","message unauthorized"],"sends":["create user"]},"users":{"receives":["create user"],"sends":["user created"]},"security":{}}"#,
    "{}",
];

/// Connections the bus harness keeps open at once.
const CONNECTIONS: usize = 4;

/// The bus's frame handling, without the network: an in-process bus with
/// four fake connections, fed a script.
///
/// `data[0]` picks the routes (bits 0-1, see `ROUTES`), whether the
/// startup grace period is on (bit 2), whether route lines are logged
/// (bit 3) and a small outgoing queue (bit 4). The rest are lines (split
/// at `\n`); the first byte `b` of a line says what happens: connection
/// `b % 4` sends the rest of the line as a text frame (`(b / 4) % 4 == 0`,
/// so `0`..`3` send text), as a binary frame (`== 1`: `4`..`7`), or drops
/// its TCP connection and is replaced by a new one (`== 2`: `8`, `9`, `:`,
/// `;`), or has its outgoing queue read (`== 3`: `<`, `=`, `>`, `?`).
///
/// Checks that nothing panics, that every frame the bus queues is one that
/// [`Message::parse`] reads (with a name, an id and an activity id), that
/// `/config.json` stays JSON, and that no connection that left is still
/// counted as an instance.
pub fn route_frames(data: &[u8]) {
    let Some((&setup, script)) = data.split_first() else {
        return;
    };
    let routes = Routes::from_json(ROUTES[usize::from(setup & 3)])
        .unwrap_or_else(|e| panic!("the harness's routes: {e}"));
    let mut config = BusConfig::new(routes)
        .with_log(LogSink::Discard)
        .with_route_logging(setup & 8 != 0);
    if setup & 4 == 0 {
        config.startup_grace = std::time::Duration::ZERO;
    }
    if setup & 16 != 0 {
        config.queue_capacity = 2;
    }
    let shared = Shared::new(config);
    let mut harness = Harness {
        shared,
        conns: Vec::new(),
        taken: VecDeque::new(),
    };
    for _ in 0..CONNECTIONS {
        let conn = harness.open();
        harness.conns.push(conn);
    }
    for line in script.split(|b| *b == b'\n') {
        let Some((&op, frame)) = line.split_first() else {
            continue;
        };
        let slot = usize::from(op) % CONNECTIONS;
        match (op / 4) % 4 {
            0 => match std::str::from_utf8(frame) {
                // The WebSocket layer only hands over valid UTF-8 as text.
                Ok(text) => harness.conns[slot].0.frame(Frame::Text(text)),
                Err(_) => harness.conns[slot].0.frame(Frame::Binary(frame)),
            },
            1 => harness.conns[slot].0.frame(Frame::Binary(frame)),
            2 => {
                let fresh = harness.open();
                let (_, old) = std::mem::replace(&mut harness.conns[slot], fresh);
                // As the connection loop does when a client leaves.
                old.close();
            }
            _ => harness.drain(slot),
        }
        harness.check_instances();
    }
    for slot in 0..CONNECTIONS {
        harness.drain(slot);
    }
    let config: serde_json::Value = serde_json::from_str(&harness.shared.config_json())
        .unwrap_or_else(|e| panic!("/config.json is not JSON: {e}"));
    assert!(config["clients"].is_array(), "{config}");
    // Everyone leaves: no instance may remain.
    let conns = std::mem::take(&mut harness.conns);
    for (conn, outbox) in conns {
        drop(conn);
        outbox.close();
    }
    let left = harness.shared.clients();
    assert!(left.is_empty(), "instances after everyone left: {left:?}");
}

struct Harness {
    shared: Arc<Shared>,
    conns: Vec<(<Shared as App>::Conn, Arc<Outbox>)>,
    taken: VecDeque<tokio_tungstenite::tungstenite::Utf8Bytes>,
}

impl Harness {
    fn open(&self) -> (<Shared as App>::Conn, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(self.shared.queue_capacity()));
        (self.shared.open(outbox.clone()), outbox)
    }

    /// Reads what waits in a connection's queue; every frame must read.
    fn drain(&mut self, slot: usize) {
        let outbox = self.conns[slot].1.clone();
        let _ = futures_util::FutureExt::now_or_never(outbox.take(&mut self.taken));
        for frame in self.taken.drain(..) {
            let msg = Message::parse(frame.as_bytes())
                .unwrap_or_else(|e| panic!("the bus queued an unreadable frame {frame:?}: {e}"));
            assert!(
                msg.id.is_some() && msg.activity_id.is_some() && msg.timestamp.is_some(),
                "the bus queued a frame without id, activityId or timestamp: {frame:?}"
            );
        }
    }

    /// No more instances than open connections.
    fn check_instances(&self) {
        let instances: usize = self.shared.clients().iter().map(|(_, n)| n).sum();
        assert!(
            instances <= self.conns.len(),
            "{instances} instances with {} connections",
            self.conns.len()
        );
    }
}

/// The configuration readers, from text alone: `data[0]` picks one
/// (`% 3`): a service file (`service.yml`, read with an empty
/// environment), the routes of `SERVICE_DATA` (JSON), or an
/// `application.yml` in a directory that does not exist (so its services'
/// files are not found, and only the application file itself is read). The rest is the text. Checks that
/// nothing panics and that every error names the file.
pub fn read_config(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => {
            let file = Path::new("service.yml");
            match crate::config::parse_service_text(file, text) {
                Ok(config) => assert!(
                    crate::routes::is_valid_role(&config.role),
                    "accepted the role {:?}",
                    config.role
                ),
                Err(e) => assert_eq!(e.file, file, "{e}"),
            }
        }
        1 => {
            if let Ok(routes) = Routes::from_json(text) {
                // What the bus does with them.
                let _ = Shared::new(BusConfig::new(routes).with_log(LogSink::Discard));
            }
        }
        _ => {
            let file = Path::new("/nonexistent-exoservice-fuzz/application.yml");
            let env = crate::config::Env::empty();
            match crate::config::AppConfig::parse_text(file, text, &env) {
                Ok(app) => {
                    let _ = app.routes().to_json();
                    let _ = app.warnings();
                }
                Err(errors) => assert!(!errors.is_empty(), "refused without an error"),
            }
        }
    }
}

//! `exo dead-letters list|replay|purge`: the dead letters of an
//! application on the NATS transport.
//!
//! An at-least-once message whose handler failed on its last attempt (or
//! whose instances died on it) is kept in the application's stream
//! `EXO_<app>` under `exo.<app>.js.dlq.<role>`, with the headers
//! `Exo-Attempts`, `Exo-Error` and `Exo-Role` and the original ExoCom frame
//! as its body. No consumer reads those subjects, so a dead letter stays
//! until it is replayed or purged.
//!
//! Reading takes messages from the stream by sequence number and subject
//! (the stream's message-get API): it creates no consumer and removes
//! nothing. Replaying publishes the frame again to the role's at-least-once
//! subject with a new `Nats-Msg-Id`, waits for the stream to confirm it, and
//! only then deletes the dead letter.
//!
//! Which application and server: the same settings as `exo send` over NATS
//! ([`NatsFlags`]: `--nats URL`, `--app DIR`), else `NATS_URL`,
//! `EXOSERVICE_APP`, `EXOSERVICE_APPLICATION` and `NATS_CA_FILE` (see
//! [`NatsSettings::from_env`]).

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use exoservice::config::{Env, NatsSettings};
use exoservice::message::Message;
use exoservice::routes::is_valid_role;
use exoservice::transport::nats::connect::connect_once;
use exoservice::transport::nats::subjects::{
    ATTEMPTS_HEADER, ERROR_HEADER, ROLE_HEADER, dead_letter_subject, durable_subject, stream_name,
};

use crate::send::NatsFlags;

/// Characters of the payload shown by `list`.
const PREVIEW_CHARS: usize = 60;

/// Which dead letters an action takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter (of the role, when one is given).
    All,
    /// These stream sequence numbers.
    Seqs(Vec<u64>),
}

/// What `exo dead-letters` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print the dead letters, oldest first (`--json`: one JSON object per
    /// line with the whole frame).
    List {
        /// One JSON object per line instead of the text lines.
        json: bool,
    },
    /// Publish dead letters again to their role's at-least-once subject,
    /// then delete them.
    Replay(Selection),
    /// Delete dead letters.
    Purge(Selection),
}

/// What `exo dead-letters` was asked.
#[derive(Debug, Clone)]
pub struct DeadLettersArgs {
    /// The server and the application (`--nats URL`, `--app DIR`).
    pub nats: NatsFlags,
    /// Only the dead letters of this role (`--role`).
    pub role: Option<String>,
    /// The bound of reaching the server and of each request to it.
    pub timeout: Duration,
    /// What to do.
    pub action: Action,
}

/// One dead letter as the stream holds it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence number in the stream.
    pub seq: u64,
    /// When the stream stored it.
    pub time: SystemTime,
    /// The role that could not handle it (from its subject).
    pub role: String,
    /// `Exo-Attempts`: how many attempts were made (`None` when missing).
    pub attempts: Option<u32>,
    /// `Exo-Error`: why it was given up (empty when missing).
    pub error: String,
    /// The body: the original ExoCom frame.
    pub body: bytes::Bytes,
}

impl DeadLetter {
    /// The body read as an ExoCom frame.
    pub fn frame(&self) -> Result<Message, String> {
        Message::parse(&self.body).map_err(|e| e.to_string())
    }

    /// The text line `list` prints: sequence, time, role, message name,
    /// id, attempts, error, and the start of the payload.
    pub fn line(&self) -> String {
        let attempts = self
            .attempts
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let time = exoservice::bus::rfc3339_nanos(self.time);
        let (name, id, payload) = match self.frame() {
            Ok(msg) => (
                msg.name.clone(),
                msg.id.clone().unwrap_or_else(|| "-".to_owned()),
                preview(msg.payload_json()),
            ),
            Err(e) => (
                "(not an ExoCom frame)".to_owned(),
                "-".to_owned(),
                preview(&format!("{e}: {}", String::from_utf8_lossy(&self.body))),
            ),
        };
        format!(
            "{}  {time}  {}  {name:?}  id={id}  attempts={attempts}  error={:?}  payload={payload}",
            self.seq, self.role, self.error
        )
    }

    /// The JSON object `list --json` prints: `seq`, `time`, `role`,
    /// `subject`, `attempts`, `error`, and `frame` (the original frame as
    /// JSON, or `null` with the body as text in `body` when it is not JSON).
    pub fn to_json(&self, app: &str) -> serde_json::Value {
        let frame = serde_json::from_slice::<serde_json::Value>(&self.body).ok();
        let mut object = serde_json::json!({
            "seq": self.seq,
            "time": exoservice::bus::rfc3339_nanos(self.time),
            "role": self.role,
            "subject": dead_letter_subject(app, &self.role),
            "attempts": self.attempts,
            "error": self.error,
            "frame": frame,
        });
        if frame.is_none() {
            object["body"] = String::from_utf8_lossy(&self.body).into_owned().into();
        }
        object
    }
}

/// The first [`PREVIEW_CHARS`] characters of `text`, `…` when cut.
fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Checks a `--role` value: a role name goes into a subject as one token.
pub fn check_role(role: &str) -> Result<(), String> {
    if is_valid_role(role) {
        Ok(())
    } else {
        Err(format!(
            "--role must be a role name (letters and digits, groups joined by '-'), found {role:?}"
        ))
    }
}

/// Whether the stream asked for does not exist (the application has none
/// yet), as opposed to a server that cannot answer.
pub fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// A connection to an application's stream, for its dead letters.
pub struct DeadLetterStore {
    app: String,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The server(s), credentials hidden, for messages.
    url: String,
}

impl DeadLetterStore {
    /// Connects to the server(s) of `settings` and finds the application's
    /// stream; fails within about `timeout` when the server cannot be
    /// reached or the stream does not exist.
    pub async fn open(settings: &NatsSettings, timeout: Duration) -> Result<Self, String> {
        let url = settings.display_url();
        let client = connect_once(settings, "exo-dead-letters", timeout).await?;
        let mut js = jetstream::new(client);
        js.set_timeout(timeout);
        let name = stream_name(&settings.app);
        let stream = js.get_stream(&name).await.map_err(|e| {
            if stream_missing(&e) {
                format!(
                    "application '{}' has no stream {name} on NATS at {url} (it is created when a service of the application with at-least-once messages starts; is EXOSERVICE_APP / --app the right application?)",
                    settings.app
                )
            } else {
                format!("cannot read stream {name} on NATS at {url}: {e}")
            }
        })?;
        Ok(DeadLetterStore {
            app: settings.app.clone(),
            js,
            stream,
            url,
        })
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The subject filter of the dead letters of `role`, or of every role.
    fn filter(&self, role: Option<&str>) -> String {
        dead_letter_subject(&self.app, role.unwrap_or("*"))
    }

    /// The role of a stored subject when it is a dead letter's.
    fn role_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let prefix = dead_letter_subject(&self.app, "");
        subject
            .strip_prefix(prefix.as_str())
            .filter(|role| !role.is_empty() && !role.contains('.'))
    }

    fn dead_letter(&self, msg: &jetstream::message::StreamMessage) -> Option<DeadLetter> {
        let role = self.role_of(msg.subject.as_str())?;
        let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
        Some(DeadLetter {
            seq: msg.sequence,
            time: SystemTime::from(msg.time),
            role: header(ROLE_HEADER)
                .filter(|r| r == role)
                .unwrap_or_else(|| role.to_owned()),
            attempts: header(ATTEMPTS_HEADER).and_then(|a| a.trim().parse().ok()),
            error: header(ERROR_HEADER).unwrap_or_default(),
            body: msg.payload.clone(),
        })
    }

    /// Every dead letter (of `role`, when given), oldest first. Reads by
    /// sequence number; takes nothing from the stream.
    pub async fn list(&self, role: Option<&str>) -> Result<Vec<DeadLetter>, String> {
        let filter = self.filter(role);
        let mut out = Vec::new();
        let mut seq = 1;
        loop {
            let msg = match self
                .stream
                .get_first_raw_message_by_subject(&filter, seq)
                .await
            {
                Ok(msg) => msg,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => {
                    return Err(format!(
                        "cannot read the dead letters from stream {} on NATS at {}: {e}",
                        stream_name(&self.app),
                        self.url
                    ));
                }
            };
            seq = msg.sequence + 1;
            if let Some(letter) = self.dead_letter(&msg) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// The dead letter with stream sequence number `seq` (of `role`, when
    /// given); an error naming it when there is no such message or it is
    /// not a dead letter (of that role).
    pub async fn get(&self, seq: u64, role: Option<&str>) -> Result<DeadLetter, String> {
        let stream = stream_name(&self.app);
        let msg = match self.stream.get_raw_message(seq).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return Err(format!(
                    "--seq {seq}: stream {stream} holds no message with that sequence number (see `exo dead-letters list`)"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--seq {seq}: cannot read it from stream {stream}: {e}"
                ));
            }
        };
        let letter = self.dead_letter(&msg).ok_or_else(|| {
            format!(
                "--seq {seq}: message {seq} of stream {stream} is not a dead letter (its subject is {}, not {})",
                msg.subject,
                self.filter(None)
            )
        })?;
        if let Some(role) = role
            && letter.role != role
        {
            return Err(format!(
                "--seq {seq}: dead letter {seq} is of role '{}', not of --role '{role}'",
                letter.role
            ));
        }
        Ok(letter)
    }

    /// The dead letters a selection names: all of them (of `role`), or
    /// each sequence number looked up and checked before anything is done.
    pub async fn select(
        &self,
        selection: &Selection,
        role: Option<&str>,
    ) -> Result<Vec<DeadLetter>, String> {
        match selection {
            Selection::All => self.list(role).await,
            Selection::Seqs(seqs) => {
                let mut out: Vec<DeadLetter> = Vec::with_capacity(seqs.len());
                for &seq in seqs {
                    if out.iter().any(|l| l.seq == seq) {
                        continue;
                    }
                    out.push(self.get(seq, role).await?);
                }
                Ok(out)
            }
        }
    }

    /// Publishes a dead letter's frame again to its role's at-least-once
    /// subject and waits for the stream to store it; then deletes the dead
    /// letter. Returns the new copy's stream sequence number. The copy is
    /// the frame unchanged (its sender and public name are what the
    /// receiver checks against the routes) with the `Nats-Msg-Id`
    /// `<id>:<role>:replay-<seq>`: new for each dead letter, so the stream
    /// does not drop it as a duplicate of the original, and the same when
    /// one dead letter is replayed twice (it is stored once).
    pub async fn replay(&self, letter: &DeadLetter) -> Result<u64, String> {
        let frame = letter.frame().map_err(|e| {
            format!(
                "dead letter {} is not replayed: its body is not an ExoCom frame ({e})",
                letter.seq
            )
        })?;
        if frame.sender.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "dead letter {} is not replayed: its frame names no sender, so the role '{}' would drop it",
                letter.seq, letter.role
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!(
                "{}:{}:replay-{}",
                frame.id.as_deref().unwrap_or_default(),
                letter.role,
                letter.seq
            ),
        );
        let subject = durable_subject(&self.app, &letter.role);
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, letter.body.clone())
            .await
            .map_err(|e| format!("dead letter {}: cannot publish to {subject}: {e}", letter.seq))?
            .await
            .map_err(|e| {
                format!(
                    "dead letter {}: stream {} did not confirm the copy on {subject}: {e}; the dead letter is kept",
                    letter.seq,
                    stream_name(&self.app)
                )
            })?;
        self.delete(letter.seq).await.map_err(|e| {
            format!(
                "dead letter {} was replayed (stream sequence {}) but not deleted: {e}; delete it with `exo dead-letters purge --seq {}`",
                letter.seq, ack.sequence, letter.seq
            )
        })?;
        Ok(ack.sequence)
    }

    /// Deletes the stream message `seq`.
    pub async fn delete(&self, seq: u64) -> Result<(), String> {
        match self.stream.delete_message(seq).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "stream {} did not delete message {seq}",
                stream_name(&self.app)
            )),
            Err(e) => Err(format!(
                "cannot delete message {seq} from stream {}: {e}",
                stream_name(&self.app)
            )),
        }
    }

    /// Deletes every dead letter (of `role`, when given) at once; returns
    /// how many there were.
    pub async fn purge_all(&self, role: Option<&str>) -> Result<u64, String> {
        let response = self
            .stream
            .purge()
            .filter(self.filter(role))
            .await
            .map_err(|e| {
                format!(
                    "cannot purge the dead letters from stream {}: {e}",
                    stream_name(&self.app)
                )
            })?;
        Ok(response.purged)
    }
}

/// Runs the command; returns the exit code (0 done, 1 failed, 2 bad
/// settings). Output goes to stdout, errors to stderr.
pub async fn dead_letters(args: DeadLettersArgs) -> i32 {
    if let Some(role) = &args.role
        && let Err(e) = check_role(role)
    {
        eprintln!("exo dead-letters: {e}");
        return 2;
    }
    let settings = match args.nats.tool_settings(&Env::process()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exo dead-letters: {e}");
            return 2;
        }
    };
    match run(&args, &settings).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("exo dead-letters: {e}");
            1
        }
    }
}

async fn run(args: &DeadLettersArgs, settings: &NatsSettings) -> Result<(), String> {
    let store = DeadLetterStore::open(settings, args.timeout).await?;
    let role = args.role.as_deref();
    let whose = match role {
        Some(role) => format!("of role '{role}' "),
        None => String::new(),
    };
    let stream = stream_name(store.app());
    match &args.action {
        Action::List { json } => {
            let letters = store.list(role).await?;
            if letters.is_empty() {
                let line = format!("no dead letters {whose}in stream {stream}");
                // Standard output stays JSON lines only.
                if *json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            for letter in &letters {
                if *json {
                    println!("{}", letter.to_json(store.app()));
                } else {
                    println!("{}", letter.line());
                }
            }
        }
        Action::Replay(selection) => {
            let letters = store.select(selection, role).await?;
            if letters.is_empty() {
                println!("no dead letters {whose}in stream {stream}: nothing replayed");
            }
            for letter in &letters {
                let new_seq = store.replay(letter).await?;
                let (name, id) = match letter.frame() {
                    Ok(msg) => (msg.name, msg.id.unwrap_or_else(|| "-".to_owned())),
                    Err(_) => (String::new(), "-".to_owned()),
                };
                println!(
                    "replayed {}: {name:?} id={id} to {} (stream sequence {new_seq}); dead letter deleted",
                    letter.seq,
                    durable_subject(store.app(), &letter.role)
                );
            }
            if letters.len() > 1 {
                println!("replayed {} dead letters", letters.len());
            }
        }
        Action::Purge(Selection::All) => {
            let n = store.purge_all(role).await?;
            println!(
                "purged {n} dead letter{} {whose}from stream {stream}",
                plural(n)
            );
        }
        Action::Purge(selection) => {
            let letters = store.select(selection, role).await?;
            for letter in &letters {
                store.delete(letter.seq).await?;
            }
            let n = letters.len() as u64;
            println!(
                "purged {n} dead letter{} {whose}from stream {stream}",
                plural(n)
            );
        }
    }
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_is_cut_with_an_ellipsis() {
        assert_eq!(preview("{\"n\":1}"), "{\"n\":1}");
        let long = "x".repeat(100);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn roles_must_be_one_subject_token() {
        assert!(check_role("worker").is_ok());
        assert!(check_role("billing-v2").is_ok());
        for bad in ["*", ">", "a.b", "", "a b"] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }
}

//! Settling at-least-once deliveries: acknowledge what a handler finished,
//! ask for a later redelivery of what failed, dead-letter what failed on
//! its last attempt, and keep the server from redelivering a message while
//! its handler still runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;

use super::Link;
use super::subjects::{
    ATTEMPTS_HEADER, ERROR_HEADER, ROLE_HEADER, dead_letter_subject, durable_subject,
};
use crate::dispatch::{Outcome, Settle};
use crate::message::Message;
use crate::relay::{Backoff, Inbound};

/// The longest delay before a redelivery.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// What every at-least-once delivery of a role shares.
pub(crate) struct Policy {
    pub(crate) js: jetstream::Context,
    pub(crate) app: String,
    pub(crate) role: String,
    pub(crate) max_attempts: u32,
    pub(crate) redelivery_delay: Duration,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Where a stored dead letter is counted (the service's metrics).
    pub(crate) inbound: Arc<dyn Inbound>,
}

impl Policy {
    /// The delay before the attempt after `attempt` failed: the base
    /// delay doubled for each attempt made, capped.
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.redelivery_delay
            .saturating_mul(1 << doublings)
            .min(MAX_DELAY)
    }

    /// Copies the stream message `seq` (`name`: the service's own name for
    /// it) to the role's dead-letter subject (in the stream) and counts it
    /// once the server stored it. The copy's message id names `seq`, so a
    /// message dead-lettered twice (a retried advisory, a lost
    /// acknowledgement, two instances) is stored and counted once: `false`
    /// when the server already had it.
    pub(crate) async fn dead_letter(
        &self,
        payload: bytes::Bytes,
        seq: Option<u64>,
        name: &str,
        attempts: u32,
        why: &str,
    ) -> Result<bool, String> {
        let mut headers = HeaderMap::new();
        headers.insert(ATTEMPTS_HEADER, attempts.to_string());
        headers.insert(ERROR_HEADER, why);
        headers.insert(ROLE_HEADER, self.role.as_str());
        if let Some(seq) = seq {
            headers.insert("Nats-Msg-Id", format!("dlq:{}:{seq}", self.role));
        }
        let subject = dead_letter_subject(&self.app, &self.role);
        let stored = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if stored.duplicate {
            return Ok(false);
        }
        self.inbound.dead_lettered(name);
        Ok(true)
    }
}

/// One at-least-once delivery on its way through the service.
pub(crate) struct JsSettle {
    pub(crate) msg: Arc<jetstream::Message>,
    pub(crate) attempt: u32,
    pub(crate) name: String,
    pub(crate) policy: Arc<Policy>,
    /// Tells the server "still working" until the delivery is settled.
    pub(crate) progress: tokio::task::JoinHandle<()>,
}

impl JsSettle {
    /// Starts the progress ticker for a message that may take a while
    /// (every half `ack_wait`).
    pub(crate) fn new(
        msg: jetstream::Message,
        attempt: u32,
        name: String,
        policy: Arc<Policy>,
        ack_wait: Duration,
    ) -> JsSettle {
        let msg = Arc::new(msg);
        let ticking = msg.clone();
        let every = (ack_wait / 2).max(Duration::from_millis(50));
        let progress = policy.runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if ticking.ack_with(AckKind::Progress).await.is_err() {
                    return;
                }
            }
        });
        JsSettle {
            msg,
            attempt,
            name,
            policy,
            progress,
        }
    }
}

impl JsSettle {
    /// The copy's body (the frame, public name).
    pub(crate) fn payload(&self) -> bytes::Bytes {
        self.msg.payload.clone()
    }

    /// Ends the copy without another attempt (no handler takes it).
    pub(crate) fn terminate(self) {
        self.progress.abort();
        let msg = self.msg;
        self.policy.runtime.spawn(async move {
            let _ = msg.ack_with(AckKind::Term).await;
        });
    }
}

impl Settle for JsSettle {
    fn settle(self: Box<Self>, outcome: Outcome) {
        self.progress.abort();
        let JsSettle {
            msg,
            attempt,
            name,
            policy,
            ..
        } = *self;
        let runtime = policy.runtime.clone();
        runtime.spawn(async move {
            let result = match outcome {
                Outcome::Done => msg.ack().await.map_err(|e| e.to_string()),
                Outcome::NotHandled => msg
                    .ack_with(AckKind::Nak(None))
                    .await
                    .map_err(|e| e.to_string()),
                Outcome::Failed if attempt < policy.max_attempts => {
                    let delay = policy.delay_after(attempt);
                    tracing::warn!(
                        "the handler of '{name}' failed (attempt {attempt} of {}); it comes again in {delay:?}",
                        policy.max_attempts
                    );
                    msg.ack_with(AckKind::Nak(Some(delay)))
                        .await
                        .map_err(|e| e.to_string())
                }
                Outcome::Failed => {
                    let why = format!("the handler failed on each of {attempt} attempts");
                    let seq = msg.info().ok().map(|i| i.stream_sequence);
                    match policy
                        .dead_letter(msg.payload.clone(), seq, &name, attempt, &why)
                        .await
                    {
                        Ok(stored) => {
                            if stored {
                                tracing::error!(
                                    "'{name}' dead-lettered to {}: {why}",
                                    dead_letter_subject(&policy.app, &policy.role)
                                );
                            }
                            msg.ack_with(AckKind::Term).await.map_err(|e| e.to_string())
                        }
                        // Left unacknowledged: the server's last-attempt
                        // advisory dead-letters it later.
                        Err(e) => Err(format!("cannot dead-letter it: {e}")),
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!("cannot settle '{name}' with NATS: {e}");
            }
        });
    }
}

/// Dead-letters messages that reached their last attempt without being
/// finished (their instances died or stopped while handling them): the
/// server's last-attempt advisory, kept in the application's advisory
/// stream until an instance of the role takes it, names the stream
/// message, which is copied to the dead-letter subject, counted and then
/// deleted. An advisory is acknowledged only then, so one that fails is
/// tried again.
pub(super) async fn dead_letter_stranded(
    link: Arc<Link>,
    advisories: PullConsumer,
    policy: Arc<Policy>,
    stream: stream::Stream,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut pulled = match advisories.messages().await {
            Ok(pulled) => pulled,
            Err(e) => {
                let delay = backoff.next_delay();
                if backoff.should_log() {
                    tracing::warn!("cannot pull the last-attempt advisories: {e}; retrying");
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        while let Some(next) = pulled.next().await {
            let advisory = match next {
                Ok(advisory) => advisory,
                Err(e) => {
                    tracing::debug!("pulling the last-attempt advisories: {e}");
                    continue;
                }
            };
            backoff.reset();
            let settled = match dead_letter_one(&link, &policy, &stream, &advisory.payload).await {
                Ok(()) => advisory.ack().await,
                Err(e) => {
                    // Tried again later and later (1 s, 2 s, 4 s … 60 s);
                    // said at the 1st, 2nd, 4th, 8th … try.
                    let tries = advisory
                        .info()
                        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
                        .unwrap_or(1)
                        .max(1);
                    let delay = Duration::from_secs(1)
                        .saturating_mul(1 << (tries - 1).min(6))
                        .min(MAX_DELAY);
                    if tries.is_power_of_two() {
                        tracing::warn!(
                            "cannot dead-letter a message after its last attempt (try {tries}): {e}; trying again in {delay:?}"
                        );
                    }
                    advisory.ack_with(AckKind::Nak(Some(delay))).await
                }
            };
            if let Err(e) = settled {
                tracing::debug!("settling a last-attempt advisory: {e}");
            }
        }
    }
}

/// Dead-letters the message a last-attempt advisory names. Done when the
/// message is already gone (dead-lettered before) or is not this role's.
async fn dead_letter_one(
    link: &Link,
    policy: &Policy,
    stream: &stream::Stream,
    advisory: &[u8],
) -> Result<(), String> {
    let v: serde_json::Value = match serde_json::from_slice(advisory) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("ignored a last-attempt advisory that is no JSON: {e}");
            return Ok(());
        }
    };
    let Some(seq) = v["stream_seq"].as_u64() else {
        tracing::warn!("ignored a last-attempt advisory without stream_seq: {v}");
        return Ok(());
    };
    let raw = match stream.get_raw_message(seq).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => return Err(format!("stream message {seq}: {e}")),
    };
    if raw.subject.as_str() != durable_subject(&policy.app, &policy.role) {
        return Ok(());
    }
    let attempts = v["deliveries"]
        .as_u64()
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(policy.max_attempts);
    let why = format!(
        "not finished after {attempts} attempts: the instances handling it stopped or did not finish within the ack wait"
    );
    let name = own_name(link, &raw.payload);
    let stored = policy
        .dead_letter(raw.payload.clone(), Some(seq), &name, attempts, &why)
        .await?;
    if stored {
        tracing::error!(
            "'{name}' was dead-lettered to {}: {why}",
            dead_letter_subject(&policy.app, &policy.role)
        );
    }
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("no message found") => Ok(()),
        Err(e) => Err(format!("deleting stream message {seq}: {e}")),
    }
}

/// This service's name for the message in a stored copy (the frame holds
/// the public name); the frame's own name when the routes do not admit it,
/// empty when it is no frame.
fn own_name(link: &Link, frame: &[u8]) -> String {
    let Ok(msg) = Message::parse(frame) else {
        return String::new();
    };
    match link.plan.admit(msg.sender.as_deref(), &msg.name) {
        Ok(internal) => internal.to_owned(),
        Err(_) => msg.name,
    }
}

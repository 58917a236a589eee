//! Settling at-least-once deliveries: acknowledge what a handler finished,
//! ask for a later redelivery of what failed, dead-letter what failed on
//! its last attempt, and keep the server from redelivering a message while
//! its handler still runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};

use super::subjects::{ATTEMPTS_HEADER, ERROR_HEADER, ROLE_HEADER, dead_letter_subject};
use crate::dispatch::{Outcome, Settle};

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

    /// Copies a message to the role's dead-letter subject (in the stream).
    pub(crate) async fn dead_letter(
        &self,
        payload: bytes::Bytes,
        attempts: u32,
        why: &str,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(ATTEMPTS_HEADER, attempts.to_string());
        headers.insert(ERROR_HEADER, why);
        headers.insert(ROLE_HEADER, self.role.as_str());
        let subject = dead_letter_subject(&self.app, &self.role);
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
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
                    match policy
                        .dead_letter(msg.payload.clone(), attempt, &why)
                        .await
                    {
                        Ok(()) => {
                            tracing::error!(
                                "'{name}' dead-lettered to {}: {why}",
                                dead_letter_subject(&policy.app, &policy.role)
                            );
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

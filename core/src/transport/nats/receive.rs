//! The receiving side: checks each copy against the routes, learns the
//! activity's members, and hands it to the service; at-least-once copies
//! carry what settles them, and a copy whose activity sticks to another
//! instance of this role is forwarded to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{Client, HeaderMap};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::Link;
use super::activity::member_in_header;
use super::settle::{JsSettle, Policy};
use super::subjects::*;
use crate::dispatch::{Outcome, Queued, Settle};
use crate::message::Message;
use crate::relay::{Backoff, Take};

/// How a forwarded copy's handling ended, as its instance answers it.
const DONE: &[u8] = b"done";
const FAILED: &[u8] = b"failed";
const NOT_HANDLED: &[u8] = b"not-handled";

/// Reads a received frame and checks it against the routes. `None`
/// (logged) when it must not be handled.
fn check(link: &Link, payload: &[u8]) -> Option<Message> {
    let mut msg = match Message::parse(payload) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!("dropped a frame from NATS: {e}");
            return None;
        }
    };
    match link.plan.admit(msg.sender.as_deref(), &msg.name) {
        Ok(internal) => msg.name = internal.to_owned(),
        Err(why) => {
            tracing::warn!(
                "dropped '{}' (activity {}) from NATS: {why}",
                msg.name,
                msg.activity()
            );
            return None;
        }
    }
    Some(msg)
}

/// The copy's `Exo-Members` header.
fn members_of(headers: Option<&HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(MEMBERS_HEADER))
        .map(|v| v.as_str())
}

/// Remembers the activity's members, with this instance as its role's.
fn learn(link: &Link, activity: &str, members: Option<&str>) {
    let mut activities = link.activities.lock().unwrap_or_else(|p| p.into_inner());
    let key = activities.key(activity);
    activities.touch(key, members, (&link.role, &link.instance), Instant::now());
}

/// Answers a forwarded copy when its delivery is settled.
struct ForwardSettle {
    client: Client,
    reply: async_nats::Subject,
    runtime: tokio::runtime::Handle,
}

impl Settle for ForwardSettle {
    fn settle(self: Box<Self>, outcome: Outcome) {
        let answer = match outcome {
            Outcome::Done => DONE,
            Outcome::Failed => FAILED,
            Outcome::NotHandled => NOT_HANDLED,
        };
        let ForwardSettle {
            client,
            reply,
            runtime,
        } = *self;
        runtime.spawn(async move { answer_forward(&client, reply, answer).await });
    }
}

async fn answer_forward(client: &Client, reply: async_nats::Subject, answer: &'static [u8]) {
    if let Err(e) = client
        .publish(reply, bytes::Bytes::from_static(answer))
        .await
    {
        tracing::warn!("cannot answer a forwarded message: {e}");
    }
}

/// The next copy of a subscription that may have been left.
async fn next_of(subscription: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match subscription {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Hands at-most-once copies (role subject and inbox) to the service, and
/// at-least-once copies forwarded by another instance of this role. When
/// the service stops, it leaves the role's queue group at once (new copies
/// go to the other instances) and keeps its inbox (answers to its own
/// requests still arrive while it drains).
pub(super) async fn read_plain(
    link: Arc<Link>,
    client: Client,
    mut role_copies: Option<async_nats::Subscriber>,
    mut inbox: async_nats::Subscriber,
    deliveries: mpsc::Sender<Queued>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        // Room for a delivery first, so the subscription's buffer holds
        // what the handlers cannot take yet.
        let permit = deliveries.reserve().await.ok();
        let copy = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s), if role_copies.is_some() => {
                role_copies = None;
                continue;
            }
            copy = next_of(&mut role_copies) => copy,
            copy = inbox.next() => copy,
        };
        let Some(copy) = copy else {
            return;
        };
        let forwarded = copy
            .headers
            .as_ref()
            .is_some_and(|h| h.get(FORWARD_HEADER).is_some());
        let reply = copy.reply.clone().filter(|_| forwarded);
        let Some(msg) = check(&link, &copy.payload) else {
            if let Some(reply) = reply {
                answer_forward(&client, reply, DONE).await;
            }
            continue;
        };
        learn(&link, msg.activity(), members_of(copy.headers.as_ref()));
        let attempt = copy
            .headers
            .as_ref()
            .and_then(|h| h.get(ATTEMPT_HEADER))
            .and_then(|v| v.as_str().parse::<u32>().ok())
            .filter(|_| forwarded)
            .unwrap_or(1)
            .max(1);
        match link.inbound.take(msg) {
            Take::Handle(msg) => match permit {
                Some(permit) => permit.send(Queued {
                    msg,
                    settle: reply.map(|reply| {
                        Box::new(ForwardSettle {
                            client: client.clone(),
                            reply,
                            runtime: link.runtime.clone(),
                        }) as Box<dyn Settle>
                    }),
                    attempt,
                }),
                None => {
                    tracing::warn!(
                        "dropped '{}': the service no longer takes messages",
                        msg.name
                    );
                    if let Some(reply) = reply {
                        answer_forward(&client, reply, NOT_HANDLED).await;
                    }
                }
            },
            // A waiting request or a watcher took it, or no handler is
            // registered (logged): either way it is finished.
            Take::Settled | Take::Dropped => {
                if let Some(reply) = reply {
                    answer_forward(&client, reply, DONE).await;
                }
            }
            Take::Stopping => {
                if let Some(reply) = reply {
                    answer_forward(&client, reply, NOT_HANDLED).await;
                }
            }
        }
    }
}

/// Hands at-least-once copies from the role's consumer to the service;
/// forwards those whose activity sticks to another instance of this role.
pub(super) async fn read_durable(
    link: Arc<Link>,
    client: Client,
    consumer: PullConsumer,
    policy: Arc<Policy>,
    deliveries: mpsc::Sender<Queued>,
    mut stopping: watch::Receiver<bool>,
) {
    let batch = link.concurrency.clamp(1, 256);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                let delay = backoff.next_delay();
                if backoff.should_log() {
                    tracing::warn!("cannot pull from consumer '{}': {e}; retrying", link.role);
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        loop {
            let Ok(permit) = deliveries.reserve().await else {
                return;
            };
            let next = tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s).map(|_| ()) => {
                    // Stop pulling; what was pulled and not handed out goes
                    // back at once, for the other instances.
                    drop(permit);
                    while let Some(Some(Ok(copy))) = messages.next().now_or_never() {
                        let _ = copy.ack_with(AckKind::Nak(None)).await;
                    }
                    return;
                }
                next = messages.next() => next,
            };
            let copy = match next {
                Some(Ok(copy)) => copy,
                Some(Err(e)) => {
                    tracing::debug!("pulling from consumer '{}': {e}", link.role);
                    continue;
                }
                None => break,
            };
            backoff.reset();
            let attempt = copy
                .info()
                .map(|i| u32::try_from(i.delivered).unwrap_or(1))
                .unwrap_or(1)
                .max(1);
            let Some(msg) = check(&link, &copy.payload) else {
                let _ = copy.ack_with(AckKind::Term).await;
                continue;
            };
            let members = members_of(copy.headers.as_ref()).map(str::to_owned);
            let settle = JsSettle::new(
                copy,
                attempt,
                msg.name.clone(),
                policy.clone(),
                link.settings.ack_wait,
            );
            let sticky = members
                .as_deref()
                .and_then(|m| member_in_header(m, &link.role));
            match sticky {
                Some(other) if other != link.instance => {
                    drop(permit);
                    let other = other.to_owned();
                    tokio::spawn(forward(
                        link.clone(),
                        client.clone(),
                        deliveries.clone(),
                        settle,
                        msg,
                        members,
                        other,
                    ));
                }
                _ => {
                    learn(&link, msg.activity(), members.as_deref());
                    hand_over(&link, permit, msg, settle);
                }
            }
        }
    }
}

/// Gives an at-least-once copy to the service, or settles it at once.
fn hand_over(link: &Link, permit: mpsc::Permit<'_, Queued>, msg: Message, settle: JsSettle) {
    let attempt = settle.attempt;
    match link.inbound.take(msg) {
        Take::Handle(msg) => permit.send(Queued {
            msg,
            settle: Some(Box::new(settle)),
            attempt,
        }),
        Take::Settled => Box::new(settle).settle(Outcome::Done),
        Take::Dropped => settle.terminate(),
        Take::Stopping => Box::new(settle).settle(Outcome::NotHandled),
    }
}

/// Forwards an at-least-once copy to the instance of this role that its
/// activity sticks to (a waiting request may be there), and settles the
/// copy as that instance answers. When that instance is gone, this one
/// handles it; when it does not answer within the ack wait, the copy is
/// handed out again.
async fn forward(
    link: Arc<Link>,
    client: Client,
    deliveries: mpsc::Sender<Queued>,
    settle: JsSettle,
    msg: Message,
    members: Option<String>,
    instance: String,
) {
    let mut headers = HeaderMap::new();
    if let Some(members) = &members {
        headers.insert(MEMBERS_HEADER, members.as_str());
    }
    headers.insert(FORWARD_HEADER, "1");
    headers.insert(ATTEMPT_HEADER, settle.attempt.to_string());
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(settle.payload())
        .timeout(Some(link.settings.ack_wait));
    let subject = instance_subject(&link.settings.app, &instance);
    let settle = Box::new(settle);
    match client.send_request(subject, request).await {
        Ok(answer) => settle.settle(match answer.payload.as_ref() {
            DONE => Outcome::Done,
            FAILED => Outcome::Failed,
            _ => Outcome::NotHandled,
        }),
        Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
            // This instance becomes the role's member of the activity.
            learn(&link, msg.activity(), members.as_deref());
            match deliveries.reserve().await {
                Ok(permit) => hand_over(&link, permit, msg, *settle),
                Err(_) => settle.settle(Outcome::NotHandled),
            }
        }
        Err(e) => {
            tracing::warn!(
                "instance {instance} did not finish a forwarded '{}' (activity {}): {e}; it is handed out again",
                msg.name,
                msg.activity()
            );
            settle.settle(Outcome::NotHandled);
        }
    }
}

//! The sending side: takes this service's frames from the outbox and
//! publishes one copy per receiving role (role subject, an instance's
//! inbox, or the stream), and re-routes sticky copies whose instance is gone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use async_nats::{Client, HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;

use super::subjects::*;
use super::{BATCH, Fallback, Link};
use crate::message::Message;
use crate::relay::Backoff;

/// A JetStream copy published and not yet confirmed.
struct Unconfirmed {
    subject: String,
    headers: HeaderMap,
    body: Bytes,
    ack: Option<jetstream::context::PublishAckFuture>,
}

/// Takes frames from the outbox and publishes one copy per receiving role.
pub(super) async fn write(link: Arc<Link>, client: Client, js: jetstream::Context) {
    let mut frames = Vec::with_capacity(BATCH);
    let mut unconfirmed = Vec::new();
    loop {
        link.outbox.take_batch(BATCH, &mut frames).await;
        for frame in &frames {
            route(&link, &client, &js, frame, &mut unconfirmed).await;
        }
        for copy in unconfirmed.drain(..) {
            confirm(&js, copy).await;
        }
        let n = frames.len();
        frames.clear();
        link.outbox.written(n);
    }
}

/// Waits for the stream to confirm a copy; publishes it again (the same
/// message id, so it is stored once) until it does.
async fn confirm(js: &jetstream::Context, mut copy: Unconfirmed) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let result = match copy.ack.take() {
            Some(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            None => match js
                .publish_with_headers(
                    copy.subject.clone(),
                    copy.headers.clone(),
                    copy.body.clone(),
                )
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                if backoff.should_log() {
                    tracing::warn!(
                        "the stream did not confirm a message on {}: {e}; publishing it again",
                        copy.subject
                    );
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Routes one frame of this service.
async fn route(
    link: &Link,
    client: &Client,
    js: &jetstream::Context,
    frame: &str,
    unconfirmed: &mut Vec<Unconfirmed>,
) {
    let mut msg = match Message::parse(frame.as_bytes()) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!("dropped an outgoing frame: {e}");
            return;
        }
    };
    let public = link.plan.to_public(&msg.name).to_owned();
    let receivers = link.plan.receivers(&public);
    if receivers.is_empty() {
        tracing::warn!("No receivers for message '{public}' registered");
        return;
    }
    let app = &link.settings.app;
    let (key, members, since) = {
        let mut activities = link.activities.lock().unwrap_or_else(|p| p.into_inner());
        let key = activities.key(msg.activity());
        let (members, since) =
            activities.touch(key, None, (&link.role, &link.instance), Instant::now());
        (key, members, since)
    };
    msg.name = public;
    msg.timestamp = Some(crate::bus::rfc3339_nanos(SystemTime::now()));
    msg.response_time = since.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let body = Bytes::from(msg.to_json());
    let members_text: Arc<str> = Arc::from(members.header());
    let mut headers = HeaderMap::new();
    headers.insert(MEMBERS_HEADER, &*members_text);
    let id = msg.id.as_deref().unwrap_or_default();
    for receiver in receivers {
        let result = if receiver.durable {
            let subject = durable_subject(app, &receiver.role);
            let mut h = headers.clone();
            h.insert("Nats-Msg-Id", format!("{id}:{}", receiver.role));
            let ack = js
                .publish_with_headers(subject.clone(), h.clone(), body.clone())
                .await
                .ok();
            unconfirmed.push(Unconfirmed {
                subject,
                headers: h,
                body: body.clone(),
                ack,
            });
            Ok(())
        } else if let Some(instance) = members.of(&receiver.role) {
            let seq = link.seq.fetch_add(1, Ordering::Relaxed);
            link.fallbacks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    seq,
                    Fallback {
                        role: receiver.role.clone(),
                        members: members_text.clone(),
                        body: body.clone(),
                        activity: key,
                        instance: instance.clone(),
                    },
                    Instant::now(),
                );
            client
                .publish_with_reply_and_headers(
                    instance_subject(app, instance),
                    no_responders_subject(app, &link.instance, seq),
                    headers.clone(),
                    body.clone(),
                )
                .await
        } else {
            client
                .publish_with_headers(
                    role_subject(app, &receiver.role),
                    headers.clone(),
                    body.clone(),
                )
                .await
        };
        if let Err(e) = result {
            tracing::warn!("cannot publish '{}' to '{}': {e}", msg.name, receiver.role);
        }
    }
}

/// Sends a sticky copy whose instance is gone to its role instead.
pub(super) async fn reroute(link: Arc<Link>, client: Client, mut replies: async_nats::Subscriber) {
    while let Some(reply) = replies.next().await {
        if reply.status != Some(StatusCode::NO_RESPONDERS) {
            continue;
        }
        let Some(seq) = reply
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let fallback = link
            .fallbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .remove(&seq);
        let Some(fallback) = fallback else { continue };
        link.activities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(fallback.activity, &fallback.instance);
        tracing::debug!(
            "instance {} left; its copy goes to role '{}'",
            fallback.instance,
            fallback.role
        );
        let mut headers = HeaderMap::new();
        headers.insert(MEMBERS_HEADER, &*fallback.members);
        let subject = role_subject(&link.settings.app, &fallback.role);
        if let Err(e) = client
            .publish_with_headers(subject, headers, fallback.body)
            .await
        {
            tracing::warn!("cannot re-route a copy for role '{}': {e}", fallback.role);
        }
    }
}

//! Who is online: every instance of an application on NATS answers a probe
//! on `exo.<app>.presence` with its [`Presence`]; [`probe`] asks and
//! collects the answers (what `exo status --nats` shows).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::Client;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Link;
use super::subjects::presence_subject;

/// One instance's answer to a presence probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The service's role.
    pub role: String,
    /// The instance's id (`<role>-<8 hex digits>`, new at each start); its
    /// inbox is `exo.<app>.inst.<instance>`.
    pub instance: String,
    /// The exoservice version the instance runs.
    pub version: String,
    /// When the instance came online (RFC 3339, UTC).
    pub since: String,
    /// Whether the instance is stopping (it takes no new messages of its
    /// role and finishes what it runs).
    pub draining: bool,
}

/// Answers every presence probe until the link stops.
pub(super) async fn answer(
    link: Arc<Link>,
    client: Client,
    mut probes: async_nats::Subscriber,
    stopping: watch::Receiver<bool>,
) {
    let since = crate::bus::rfc3339_nanos(SystemTime::now());
    while let Some(probe) = probes.next().await {
        let Some(reply) = probe.reply else {
            continue;
        };
        let presence = Presence {
            role: link.role.clone(),
            instance: link.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            since: since.clone(),
            draining: *stopping.borrow(),
        };
        let body = match serde_json::to_vec(&presence) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!("cannot write the presence answer: {e}");
                continue;
            }
        };
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!("cannot answer a presence probe: {e}");
        }
    }
}

/// Asks every instance of application `app` who it is and collects the
/// answers that arrive within `wait`, sorted by role and instance.
/// Answers that cannot be read are skipped.
pub async fn probe(client: &Client, app: &str, wait: Duration) -> Result<Vec<Presence>, String> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("cannot subscribe to the presence answers: {e}"))?;
    client
        .publish_with_reply(presence_subject(app), inbox, bytes::Bytes::new())
        .await
        .map_err(|e| format!("cannot send the presence probe: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("cannot send the presence probe: {e}"))?;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(presence) = serde_json::from_slice::<Presence>(&answer.payload) {
            found.push(presence);
        }
    }
    found.sort_by(|a, b| (&a.role, &a.instance).cmp(&(&b.role, &b.instance)));
    found.dedup();
    Ok(found)
}

//! The powers a service has: `send` and `request` (a [`Client`]), and inside
//! a handler also `reply` (a [`Ctx`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::config::ServiceConfig;
use crate::error::{ExoError, Result};
use crate::message::{self, Message};
use crate::relay::{Outbox, PushError};

/// What a [`Client`] and the incoming side share.
pub(crate) struct Shared {
    pub(crate) config: Arc<ServiceConfig>,
    pub(crate) outbox: Arc<Outbox>,
    /// Requests waiting for the first message of their activity.
    pub(crate) waiters: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    /// Activities watched by [`Client::send_watched`]: every message of
    /// the activity goes to the watcher (after a waiting request).
    pub(crate) watchers: Mutex<HashMap<String, mpsc::Sender<Message>>>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Shared {
    pub(crate) fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Message>>> {
        // Each operation on the map is a single insert/remove: usable after a panic.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `msg` to the watcher of its activity, if there is one. Returns
    /// the message back when no watcher takes it. A watcher whose queue is
    /// full loses the message (logged): it is not dispatched to a handler.
    pub(crate) fn offer_to_watcher(&self, msg: Message) -> Option<Message> {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if watchers.is_empty() {
            return Some(msg);
        }
        let Some(activity) = msg.activity_id.clone() else {
            return Some(msg);
        };
        let Some(tx) = watchers.get(&activity) else {
            return Some(msg);
        };
        match tx.try_send(msg) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(msg)) => {
                tracing::warn!(
                    "the reply handler of activity {} is {} messages behind; dropped '{}'",
                    msg.activity(),
                    tx.max_capacity(),
                    msg.name
                );
                None
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                watchers.remove(&activity);
                Some(msg)
            }
        }
    }

    /// Serializes and queues a message, with no check of its name.
    pub(crate) fn push(&self, mut msg: Message) -> Result<()> {
        msg.sender = Some(self.config.role.clone());
        if msg.id.is_none() {
            msg.id = Some(message::new_id());
        }
        if msg.activity_id.is_none() {
            msg.activity_id = Some(message::new_id());
        }
        self.outbox.push(msg.to_json()).map_err(|e| match e {
            PushError::Full(capacity) => ExoError::BufferFull {
                name: msg.name,
                capacity,
            },
            PushError::Closed => ExoError::Stopped,
            PushError::TooLarge { size, max } => ExoError::Payload {
                reason: format!(
                    "the message is {size} bytes; the connection carries at most {max} (on NATS: the server's max_payload)"
                ),
                name: msg.name,
            },
        })
    }

    fn check_declared(&self, name: &str) -> Result<()> {
        if self.config.sends.iter().any(|s| s == name) {
            Ok(())
        } else {
            Err(ExoError::Undeclared {
                name: name.to_owned(),
                role: self.config.role.clone(),
                file: self.config.file.display().to_string(),
            })
        }
    }
}

fn payload_raw<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<Option<Box<RawValue>>> {
    message::to_raw(payload).map_err(|e| ExoError::Payload {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// Sends messages as this service: from a handler, a hook, or any task.
/// Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

impl Client {
    /// The service's role.
    pub fn role(&self) -> &str {
        &self.shared.config.role
    }

    /// The service's configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.shared.config
    }

    /// Sends a message (a new activity). The name must be declared under
    /// `sends`; while the bus is away the message waits in the outgoing
    /// buffer, and a full buffer is an error here.
    pub fn send<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<()> {
        let payload = payload_raw(name, payload)?;
        self.send_raw(name, payload, None)
    }

    /// Like [`Client::send`], with the payload as raw JSON and optional auth.
    pub fn send_raw(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        auth: Option<Box<RawValue>>,
    ) -> Result<()> {
        self.shared.push(self.outgoing(name, payload, auth)?)
    }

    /// Sends a fully built message (its name must be declared); a missing
    /// `id` or `activityId` is filled in, `sender` is this service's role.
    pub fn send_message(&self, msg: Message) -> Result<()> {
        self.shared.check_declared(&msg.name)?;
        self.shared.push(msg)
    }

    /// Sends a message and waits for the first message of its activity, for
    /// at most `timeout`. That answer does not go to the name handlers.
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<Message> {
        let payload = payload_raw(name, payload)?;
        self.start_request(name, payload, None, timeout)?
            .wait()
            .await
    }

    /// A new message (new id and activity) of a declared name; an
    /// undeclared name is an error here, at the call site.
    fn outgoing(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        auth: Option<Box<RawValue>>,
    ) -> Result<Message> {
        self.shared.check_declared(name)?;
        Ok(Message {
            payload,
            auth,
            ..Message::new(name)
        })
    }

    /// Sends a request and returns at once; the answer is awaited (or
    /// blocked on) through the returned [`PendingRequest`].
    pub fn start_request(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        auth: Option<Box<RawValue>>,
        timeout: Duration,
    ) -> Result<PendingRequest> {
        let msg = self.outgoing(name, payload, auth)?;
        let activity = msg.activity().to_owned();
        let (tx, rx) = oneshot::channel();
        self.shared.waiters().insert(activity.clone(), tx);
        let pending = PendingRequest {
            rx,
            activity,
            name: name.to_owned(),
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            shared: self.shared.clone(),
        };
        // On error, dropping `pending` removes the waiter again.
        self.shared.push(msg)?;
        Ok(pending)
    }

    /// Sends a message (a new activity) and watches its activity: every
    /// message that arrives in it goes to the returned [`ActivityWatch`]
    /// (at most `capacity` wait there; more are dropped with a warning)
    /// instead of the name handlers, until the watch is dropped. A request
    /// waiting on the same activity takes the first one.
    pub fn send_watched(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        auth: Option<Box<RawValue>>,
        capacity: usize,
    ) -> Result<ActivityWatch> {
        let msg = self.outgoing(name, payload, auth)?;
        let activity = msg.activity().to_owned();
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(activity.clone(), tx);
        let watch = ActivityWatch {
            rx,
            activity,
            shared: self.shared.clone(),
        };
        // On error, dropping `watch` removes the watcher again.
        self.shared.push(msg)?;
        Ok(watch)
    }
}

/// The messages of one activity, as they arrive, for a reply handler that
/// takes every answer to a message (not only the first, as
/// [`PendingRequest`] does). Made by [`Client::send_watched`]; dropping it
/// stops the watch.
pub struct ActivityWatch {
    rx: mpsc::Receiver<Message>,
    activity: String,
    shared: Arc<Shared>,
}

impl ActivityWatch {
    /// The watched activity id.
    pub fn activity_id(&self) -> &str {
        &self.activity
    }

    /// The next message of the activity. Never `None` while the watch
    /// lives (bound it with a timeout).
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}

impl Drop for ActivityWatch {
    fn drop(&mut self) {
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.activity);
    }
}

/// A request on its way: await [`PendingRequest::wait`], or block on
/// [`PendingRequest::wait_blocking`] from a thread outside the runtime.
/// Dropping it forgets the request.
pub struct PendingRequest {
    rx: oneshot::Receiver<Message>,
    activity: String,
    name: String,
    timeout: Duration,
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
}

impl PendingRequest {
    /// The request's activity id.
    pub fn activity_id(&self) -> &str {
        &self.activity
    }

    /// The first message of the activity, or [`ExoError::Timeout`].
    pub async fn wait(mut self) -> Result<Message> {
        match tokio::time::timeout_at(self.deadline, &mut self.rx).await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(_)) => Err(ExoError::Stopped),
            Err(_) => Err(ExoError::Timeout {
                name: std::mem::take(&mut self.name),
                timeout: self.timeout,
            }),
        }
    }

    /// Blocks the calling thread until the answer or the deadline. Must not
    /// be called from a thread of a tokio runtime (that is an error).
    pub fn wait_blocking(self) -> Result<Message> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ExoError::Usage(
                "wait_blocking was called on a tokio runtime thread; use `wait().await` there"
                    .into(),
            ));
        }
        let runtime = self.shared.runtime.clone();
        runtime.block_on(self.wait())
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.shared.waiters().remove(&self.activity);
    }
}

/// What a handler gets besides the payload: the incoming message, and the
/// powers to reply, send and request. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    client: Client,
    msg: Arc<Message>,
    attempt: u32,
}

impl Ctx {
    pub(crate) fn new(client: Client, msg: Message, attempt: u32) -> Ctx {
        Ctx {
            client,
            msg: Arc::new(msg),
            attempt,
        }
    }

    /// Which attempt at the message this is: 1 for the first delivery,
    /// more when an at-least-once message comes again after a failed
    /// handler or an instance that died (NATS). Always 1 on ExoCom.
    pub fn delivery_attempt(&self) -> u32 {
        self.attempt
    }

    /// The message being handled.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// The activity of the message being handled.
    pub fn activity_id(&self) -> &str {
        self.msg.activity()
    }

    /// The client this handler sends with (no auth attached).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replies to the message being handled: same `activityId`, `auth` and
    /// `isSecurity`. The reply's name must be declared under `sends`.
    pub fn reply<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<()> {
        let payload = payload_raw(name, payload)?;
        self.reply_raw(name, payload)
    }

    /// Like [`Ctx::reply`], with the payload as raw JSON.
    pub fn reply_raw(&self, name: &str, payload: Option<Box<RawValue>>) -> Result<()> {
        let reply = Message {
            is_security: self.msg.is_security,
            activity_id: self.msg.activity_id.clone(),
            ..self.client.outgoing(name, payload, self.msg.auth.clone())?
        };
        self.client.shared.push(reply)
    }

    /// Sends a message in a new activity, carrying this handler's `auth`.
    pub fn send<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<()> {
        let payload = payload_raw(name, payload)?;
        self.send_raw(name, payload)
    }

    /// Like [`Ctx::send`], with the payload as raw JSON.
    pub fn send_raw(&self, name: &str, payload: Option<Box<RawValue>>) -> Result<()> {
        self.client.send_raw(name, payload, self.msg.auth.clone())
    }

    /// Sends a request carrying this handler's `auth` and waits for its
    /// answer, for at most `timeout`.
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<Message> {
        let payload = payload_raw(name, payload)?;
        self.start_request(name, payload, timeout)?.wait().await
    }

    /// Like [`Ctx::request`], returning at once (see [`PendingRequest`]).
    pub fn start_request(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        timeout: Duration,
    ) -> Result<PendingRequest> {
        self.client
            .start_request(name, payload, self.msg.auth.clone(), timeout)
    }

    /// Like [`Client::send_watched`], carrying this handler's `auth`.
    pub fn send_watched(
        &self,
        name: &str,
        payload: Option<Box<RawValue>>,
        capacity: usize,
    ) -> Result<ActivityWatch> {
        self.client
            .send_watched(name, payload, self.msg.auth.clone(), capacity)
    }
}

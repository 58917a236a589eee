//! `NativeDelivery` (one incoming message and the powers to answer it) and
//! `NativeWatch` (the messages of a watched activity).

use std::sync::{Arc, Mutex};

use exoservice::dispatch::{Ctx, Delivery};
use exoservice::{ActivityWatch, ExoError, PendingRequest};
use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;
use tokio::sync::Notify;

use crate::engine::{Closed, send_new};
use crate::{js_error, millis, raw_part, settle};

/// Resolves with the answer to `pending` as JSON text; rejects with
/// `EXO_TIMEOUT`, or `EXO_STOPPED` once the service is closed.
pub(crate) fn request_message<'env>(
    env: &'env Env,
    pending: PendingRequest,
    closed: Closed,
) -> napi::Result<Object<'env>> {
    settle::promise(env, async move {
        tokio::select! {
            answer = pending.wait() => answer.map(|m| m.to_json()).map_err(js_error),
            () = closed.wait() => Err(js_error(ExoError::Stopped)),
        }
    })
}

/// One incoming message, with reply, send and request. It holds one of the
/// service's concurrency slots until `done()` (or until it is collected);
/// replying and sending still work after `done()`.
#[napi]
pub struct NativeDelivery {
    ctx: Ctx,
    slot: Option<Delivery>,
    closed: Closed,
}

impl NativeDelivery {
    pub(crate) fn new(delivery: Delivery, closed: Closed) -> Self {
        NativeDelivery {
            ctx: delivery.ctx().clone(),
            slot: Some(delivery),
            closed,
        }
    }
}

#[napi]
impl NativeDelivery {
    /// The message name.
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> String {
        self.ctx.message().name.clone()
    }

    /// The message id, when the sender gave one.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> Option<String> {
        self.ctx.message().id.clone()
    }

    /// The activity id.
    #[napi(getter, catch_unwind)]
    pub fn activity_id(&self) -> String {
        self.ctx.activity_id().to_owned()
    }

    /// Which attempt at the message this is: 1 for a first delivery, more
    /// when an at-least-once message comes again (NATS).
    #[napi(getter, catch_unwind)]
    pub fn delivery_attempt(&self) -> u32 {
        self.ctx.delivery_attempt()
    }

    /// The sending role, when the bus says.
    #[napi(getter, catch_unwind)]
    pub fn sender(&self) -> Option<String> {
        self.ctx.message().sender.clone()
    }

    /// The payload as JSON text (`null` when there is none).
    #[napi(getter, catch_unwind)]
    pub fn payload(&self) -> Option<String> {
        self.ctx
            .message()
            .payload
            .as_deref()
            .map(|r| r.get().to_owned())
    }

    /// The auth as JSON text (`null` when there is none).
    #[napi(getter, catch_unwind)]
    pub fn auth(&self) -> Option<String> {
        self.ctx
            .message()
            .auth
            .as_deref()
            .map(|r| r.get().to_owned())
    }

    /// Whether the message belongs to the security exchange.
    #[napi(getter, catch_unwind)]
    pub fn is_security(&self) -> bool {
        self.ctx.message().is_security
    }

    /// Replies: same activity, auth and isSecurity.
    #[napi(catch_unwind)]
    pub fn reply(&self, name: String, payload: Option<String>) -> napi::Result<()> {
        let payload = raw_part(&name, "payload", payload.as_deref())?;
        self.ctx.reply_raw(&name, payload).map_err(js_error)
    }

    /// Sends in a new activity, carrying this message's auth; returns the
    /// activity id.
    #[napi(catch_unwind)]
    pub fn send(&self, name: String, payload: Option<String>) -> napi::Result<String> {
        let auth = self.ctx.message().auth.clone();
        send_new(self.ctx.client(), &name, payload.as_deref(), auth)
    }

    /// Requests, carrying this message's auth (see `NativeEngine.request`).
    #[napi(catch_unwind)]
    pub fn request<'env>(
        &self,
        env: &'env Env,
        name: String,
        payload: Option<String>,
        timeout_ms: f64,
    ) -> napi::Result<Object<'env>> {
        let timeout = millis("timeout", timeout_ms)?;
        let payload = raw_part(&name, "payload", payload.as_deref())?;
        let pending = self
            .ctx
            .start_request(&name, payload, timeout)
            .map_err(js_error)?;
        request_message(env, pending, self.closed.clone())
    }

    /// Sends in a new activity carrying this message's auth, and watches it.
    #[napi(catch_unwind)]
    pub fn send_watched(
        &self,
        name: String,
        payload: Option<String>,
        capacity: u32,
    ) -> napi::Result<NativeWatch> {
        let payload = raw_part(&name, "payload", payload.as_deref())?;
        let watch = self
            .ctx
            .send_watched(&name, payload, capacity as usize)
            .map_err(js_error)?;
        Ok(NativeWatch::new(watch, self.closed.clone()))
    }

    /// The handler failed (threw or rejected): counted as a handler error
    /// in the service's metrics. Call before `done`.
    #[napi(catch_unwind)]
    pub fn fail(&self) {
        if let Some(d) = &self.slot {
            d.fail();
        }
    }

    /// The handler is finished: frees its concurrency slot.
    #[napi(catch_unwind)]
    pub fn done(&mut self) {
        self.slot = None;
    }
}

/// A watch and whether it was closed.
struct WatchState {
    slot: Mutex<(Option<ActivityWatch>, bool)>,
    wake: Notify,
}

/// The messages of one watched activity (a reply handler's feed).
#[napi]
pub struct NativeWatch {
    activity: String,
    state: Arc<WatchState>,
    closed: Closed,
}

impl NativeWatch {
    pub(crate) fn new(watch: ActivityWatch, closed: Closed) -> Self {
        NativeWatch {
            activity: watch.activity_id().to_owned(),
            state: Arc::new(WatchState {
                slot: Mutex::new((Some(watch), false)),
                wake: Notify::new(),
            }),
            closed,
        }
    }
}

#[napi]
impl NativeWatch {
    /// The watched activity id.
    #[napi(getter, catch_unwind)]
    pub fn activity_id(&self) -> String {
        self.activity.clone()
    }

    /// The next message of the activity as JSON text; `null` when none came
    /// for `idleMs` (the watch then ends), when the watch was closed, or
    /// the service closed.
    #[napi(catch_unwind)]
    pub fn next<'env>(&self, env: &'env Env, idle_ms: f64) -> napi::Result<Object<'env>> {
        let idle = millis("idle timeout", idle_ms)?;
        let state = self.state.clone();
        let closed = self.closed.clone();
        settle::promise(env, async move {
            // Taken out while waiting (one `next` at a time); put back after.
            let taken = {
                let mut slot = state.slot.lock().unwrap_or_else(|p| p.into_inner());
                if slot.1 { None } else { slot.0.take() }
            };
            let Some(mut watch) = taken else {
                return Ok(None);
            };
            let got = tokio::select! {
                m = tokio::time::timeout(idle, watch.next()) => m.ok().flatten(),
                () = closed.wait() => None,
                () = state.wake.notified() => None,
            };
            if got.is_some() {
                let mut slot = state.slot.lock().unwrap_or_else(|p| p.into_inner());
                if !slot.1 {
                    slot.0 = Some(watch);
                }
            }
            Ok(got.map(|m| m.to_json()))
        })
    }

    /// Stops the watch (later messages of the activity go to handlers).
    #[napi(catch_unwind)]
    pub fn close(&self) {
        let mut slot = self.state.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.1 = true;
        slot.0 = None;
        self.state.wake.notify_one();
    }
}

//! `NativeMockBus`: the core's mock bus for tests of Node services.

use std::sync::{Arc, Mutex};

use exoservice::message::Message;
use exoservice::testing::MockBus;
use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;

use crate::{coded, js_error, millis, settle, usage};

fn json_value(what: &str, text: Option<&str>) -> napi::Result<serde_json::Value> {
    match text {
        None => Ok(serde_json::Value::Null),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| coded("EXO_PAYLOAD", &format!("{what} is not valid JSON: {e}"))),
    }
}

/// A mock ExoCom on a free port of 127.0.0.1: records what services send
/// it and sends them what a test asks (see the core's `MockBus`).
#[napi]
pub struct NativeMockBus {
    /// `None` after `shutdown()`.
    bus: Mutex<Option<Arc<MockBus>>>,
    port: u16,
    url: String,
}

impl NativeMockBus {
    fn live(&self) -> napi::Result<Arc<MockBus>> {
        self.bus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| coded("EXO_STOPPED", "the mock bus was shut down"))
    }
}

#[napi]
impl NativeMockBus {
    /// Starts a mock bus on a free port (or on `port`).
    #[napi(catch_unwind)]
    pub fn start<'env>(env: &'env Env, port: Option<u32>) -> napi::Result<Object<'env>> {
        exoservice::logging::init();
        let port = match port {
            None => 0,
            Some(p) => {
                u16::try_from(p).map_err(|_| usage(format!("port must be 0-65535, got {p}")))?
            }
        };
        settle::promise(env, async move {
            let bus = MockBus::start_on(port).await.map_err(js_error)?;
            Ok(NativeMockBus {
                port: bus.port(),
                url: bus.url(),
                bus: Mutex::new(Some(Arc::new(bus))),
            })
        })
    }

    /// The port it listens on.
    #[napi(getter, catch_unwind)]
    pub fn port(&self) -> u32 {
        u32::from(self.port)
    }

    /// `ws://127.0.0.1:PORT/services`.
    #[napi(getter, catch_unwind)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The roles registered and connected.
    #[napi(catch_unwind)]
    pub fn roles(&self) -> napi::Result<Vec<String>> {
        Ok(self.live()?.roles())
    }

    /// How many connections are registered as `role`.
    #[napi(catch_unwind)]
    pub fn instances(&self, role: String) -> napi::Result<u32> {
        Ok(u32::try_from(self.live()?.instances(&role)).unwrap_or(u32::MAX))
    }

    /// Resolves once a service registered as `role`; rejects with
    /// `EXO_TIMEOUT` after `timeoutMs`.
    #[napi(catch_unwind)]
    pub fn wait_for_registration<'env>(
        &self,
        env: &'env Env,
        role: String,
        timeout_ms: f64,
    ) -> napi::Result<Object<'env>> {
        let timeout = millis("timeoutMs", timeout_ms)?;
        let bus = self.live()?;
        settle::promise(env, async move {
            bus.wait_for_registration(&role, timeout)
                .await
                .map_err(js_error)
        })
    }

    /// Sends a new message to the service registered as `role`; resolves
    /// with the message as sent (JSON text).
    #[napi(catch_unwind)]
    pub fn send_to_service<'env>(
        &self,
        env: &'env Env,
        role: String,
        name: String,
        payload: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let payload = json_value("the payload", payload.as_deref())?;
        let bus = self.live()?;
        settle::promise(env, async move {
            let msg = bus
                .send_to_service(&role, &name, payload)
                .await
                .map_err(js_error)?;
            Ok(msg.to_json())
        })
    }

    /// Sends a message given as JSON text (any field: auth, activityId,
    /// ...) to the service registered as `role`; resolves with it as sent.
    #[napi(catch_unwind)]
    pub fn send_message<'env>(
        &self,
        env: &'env Env,
        role: String,
        message: String,
    ) -> napi::Result<Object<'env>> {
        let msg = Message::parse(message.as_bytes())
            .map_err(|e| coded("EXO_PAYLOAD", &format!("not a message: {e}")))?;
        let bus = self.live()?;
        settle::promise(env, async move {
            let msg = bus.send_message(&role, msg).await.map_err(js_error)?;
            Ok(msg.to_json())
        })
    }

    /// Resolves with the first received message named `name` not returned
    /// before (JSON text); rejects with `EXO_TIMEOUT` after `timeoutMs`.
    #[napi(catch_unwind)]
    pub fn wait_for<'env>(
        &self,
        env: &'env Env,
        name: String,
        timeout_ms: f64,
    ) -> napi::Result<Object<'env>> {
        let timeout = millis("timeoutMs", timeout_ms)?;
        let bus = self.live()?;
        settle::promise(env, async move {
            let msg = bus.wait_for(&name, timeout).await.map_err(js_error)?;
            Ok(msg.to_json())
        })
    }

    /// Every message received since the start or the last `reset()`.
    #[napi(catch_unwind)]
    pub fn received(&self) -> napi::Result<Vec<String>> {
        Ok(self
            .live()?
            .received()
            .iter()
            .map(Message::to_json)
            .collect())
    }

    /// Forgets the received messages and the automatic replies.
    #[napi(catch_unwind)]
    pub fn reset(&self) -> napi::Result<()> {
        self.live()?.reset();
        Ok(())
    }

    /// Answers every `requestName` at once with `replyName` and this payload.
    #[napi(catch_unwind)]
    pub fn mock_reply(
        &self,
        request_name: String,
        reply_name: String,
        payload: Option<String>,
    ) -> napi::Result<()> {
        let payload = json_value("the payload", payload.as_deref())?;
        self.live()?.mock_reply(&request_name, &reply_name, payload);
        Ok(())
    }

    /// Stops the mock like a killed bus; resolves once the port is free.
    #[napi(catch_unwind)]
    pub fn shutdown<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let owned = self.bus.lock().unwrap_or_else(|p| p.into_inner()).take();
        settle::promise(env, async move {
            let Some(mut bus) = owned else {
                return Ok(());
            };
            // A call still in flight holds the bus for a moment.
            for _ in 0..100 {
                match Arc::try_unwrap(bus) {
                    Ok(bus) => {
                        bus.shutdown().await;
                        return Ok(());
                    }
                    Err(shared) => bus = shared,
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            // Dropping the last handle stops it without waiting.
            drop(bus);
            Ok(())
        })
    }
}

//! The `nats` transport: the same services, with no bus process, over a
//! NATS server or cluster.
//!
//! Each service routes what it sends itself, from the application's routes
//! ([`plan`]): one copy per receiving role, under the receiver's name for
//! it. An at-most-once copy goes to the role's subject, where the role's
//! instances form a queue group (one of them gets it), or, when the
//! activity already has an instance of that role, to that instance's inbox
//! (stickiness: replies reach the instance that asked); when that instance
//! is gone the server says so and the copy goes to the role's subject. An
//! at-least-once copy goes into the application's JetStream stream, where
//! the role's durable consumer hands it to one instance; it is
//! acknowledged when the handler returns, redelivered with growing delays
//! when the handler fails or its instance dies, and dead-lettered after
//! the last attempt ([`settle`]). The receiver checks every frame against
//! the routes again before a handler sees it.
//!
//! Message bodies are the ExoCom frames, unchanged (with the public name);
//! the activity's members travel in the `Exo-Members` header.

mod activity;
pub mod connect;
mod plan;
pub mod presence;
mod receive;
mod send;
mod settle;
pub mod subjects;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::bus::activity::IdMap;
use activity::Activities;
use plan::Plan;
use settle::Policy;
use subjects::*;

use crate::config::{ConfigError, NatsSettings, ServiceConfig};
use crate::dispatch::Queued;
use crate::relay::{Backoff, Inbound, Outbox};

/// Bytes kept free under the server's `max_payload` for the headers and
/// the stamps a frame gets when it is routed.
const ROUTING_OVERHEAD: usize = 1024;
/// How long a last-attempt advisory may be in the works before the server
/// hands it to another instance of the role.
const LAST_ATTEMPT_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long the round trip that confirms the subscriptions may take.
const ROUND_TRIP_WAIT: Duration = Duration::from_secs(5);
/// Frames taken from the outbox at once.
const BATCH: usize = 256;
/// How long an activity's members are remembered after its last message.
const ACTIVITY_TTL: Duration = Duration::from_secs(60);
/// How many activities are remembered at most.
const ACTIVITY_CAP: usize = 200_000;
/// How long a sticky copy is kept for re-routing in case its instance is
/// gone (the server answers within a round trip).
const FALLBACK_TTL: Duration = Duration::from_secs(5);
/// How many sticky copies are kept for re-routing at most.
const FALLBACK_CAP: usize = 100_000;
/// Messages kept by the stream's de-duplication (a re-sent copy within
/// this window is stored once).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Shared state between the link's tasks and its owner.
struct Status {
    connected: AtomicBool,
    registrations: AtomicU64,
    registered_tx: watch::Sender<u64>,
}

/// A sticky copy that may have to go to its role's subject after all.
struct Fallback {
    role: Arc<str>,
    members: Arc<str>,
    body: Bytes,
    activity: u64,
    instance: Arc<str>,
}

/// Sticky copies sent recently, by sequence number.
#[derive(Default)]
struct Fallbacks {
    map: IdMap<u64, Fallback>,
    order: VecDeque<(u64, Instant)>,
}

impl Fallbacks {
    fn insert(&mut self, seq: u64, fallback: Fallback, now: Instant) {
        while let Some((old, at)) = self.order.front().copied() {
            if now.duration_since(at) < FALLBACK_TTL && self.order.len() < FALLBACK_CAP {
                break;
            }
            self.order.pop_front();
            self.map.remove(&old);
        }
        self.map.insert(seq, fallback);
        self.order.push_back((seq, now));
    }
}

/// What the link's tasks share.
struct Link {
    settings: NatsSettings,
    role: String,
    instance: String,
    plan: Plan,
    concurrency: usize,
    activities: Mutex<Activities>,
    fallbacks: Mutex<Fallbacks>,
    seq: AtomicU64,
    inbound: Arc<dyn Inbound>,
    outbox: Arc<Outbox>,
    status: Arc<Status>,
    runtime: tokio::runtime::Handle,
}

/// A running connection of one service to NATS.
pub(crate) struct NatsLink {
    outbox: Arc<Outbox>,
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    client: Arc<Mutex<Option<Client>>>,
}

impl NatsLink {
    /// Checks the settings and starts connecting in the background (on
    /// the current tokio runtime).
    pub(crate) fn start(
        config: &ServiceConfig,
        settings: NatsSettings,
        outbox: Arc<Outbox>,
        inbound: Arc<dyn Inbound>,
        deliveries: mpsc::Sender<Queued>,
        stopping: watch::Receiver<bool>,
    ) -> Result<NatsLink, ConfigError> {
        let plan = Plan::new(&settings.routes, &config.role).ok_or_else(|| {
            ConfigError::new(
                &config.file,
                format!(
                    "role '{}' is not in the application's routes (roles: {})",
                    config.role,
                    settings
                        .routes
                        .roles
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if settings.routes.roles.contains_key("security") {
            return Err(ConfigError::new(
                &config.file,
                "the nats transport has no security adapter: the routes name a 'security' role; use ExoCom for it, or NATS users and permissions",
            ));
        }
        settings
            .connect_options()
            .map_err(|e| ConfigError::new(&config.file, e))?;
        for (name, mode) in &config.delivery {
            if *mode == crate::routes::DeliveryMode::AtLeastOnce
                && !plan_has_durable(&settings, &config.role, name)
            {
                tracing::warn!(
                    "'{name}' is declared at-least-once in {}, but the application's routes take it at-most-once; the routes win",
                    config.file.display()
                );
            }
        }
        let (registered_tx, _) = watch::channel(0);
        let status = Arc::new(Status {
            connected: AtomicBool::new(false),
            registrations: AtomicU64::new(0),
            registered_tx,
        });
        let instance = format!("{}-{:08x}", config.role, fastrand::u32(..));
        let link = Arc::new(Link {
            settings,
            role: config.role.clone(),
            instance,
            plan,
            concurrency: config.concurrency.max(1),
            activities: Mutex::new(Activities::new(ACTIVITY_TTL, ACTIVITY_CAP)),
            fallbacks: Mutex::default(),
            seq: AtomicU64::new(0),
            inbound,
            outbox: outbox.clone(),
            status: status.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let client = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(link, deliveries, stop_rx, stopping, client.clone()));
        Ok(NatsLink {
            outbox,
            status,
            stop,
            task: Some(task),
            client,
        })
    }

    /// Whether a connection to NATS is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// 1 once the subscriptions are set up, 0 before.
    pub(crate) fn registrations(&self) -> u64 {
        self.status.registrations.load(Ordering::Acquire)
    }

    /// A watch of [`NatsLink::registrations`].
    pub(crate) fn registered_rx(&self) -> watch::Receiver<u64> {
        self.status.registered_tx.subscribe()
    }

    /// Stops taking frames, publishes what waits (for at most `timeout`),
    /// then disconnects. Returns how many frames could not be published.
    pub(crate) async fn close(mut self, timeout: Duration) -> usize {
        self.outbox.close();
        let left = self.outbox.wait_empty(timeout).await;
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(client) = client {
            // Acknowledgements of the last deliveries go out before leaving.
            tokio::task::yield_now().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        }
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        left
    }
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn plan_has_durable(settings: &NatsSettings, role: &str, name: &str) -> bool {
    settings
        .routes
        .roles
        .get(role)
        .is_some_and(|r| r.at_least_once.iter().any(|n| n == name))
}

/// Connects (retrying), sets up, runs the link's tasks until it stops.
async fn run(
    link: Arc<Link>,
    deliveries: mpsc::Sender<Queued>,
    mut stop: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
    slot: Arc<Mutex<Option<Client>>>,
) {
    let url = link.settings.display_url();
    let Some(client) = connect(&link, &mut stop).await else {
        return;
    };
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    // Room for the headers and the stamps the frame gets when it is routed.
    let max_payload = client.server_info().max_payload;
    if max_payload > 0 {
        link.outbox
            .set_max_frame(max_payload.saturating_sub(ROUTING_OVERHEAD));
    }
    let js = jetstream::new(client.clone());
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = tokio::select! {
            r = setup(&link, &client, &js, &deliveries, &stopping, &mut tasks) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(()) => break,
            Err(e) => {
                tasks.abort_all();
                let delay = backoff.next_delay();
                if backoff.should_log() {
                    tracing::warn!(
                        "cannot set up the subscriptions of '{}' on NATS at {url}: {e} (attempt {}; retrying)",
                        link.role,
                        backoff.failures()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
    let n = link.status.registrations.fetch_add(1, Ordering::AcqRel) + 1;
    link.status.registered_tx.send_replace(n);
    link.inbound.registered(n == 1);
    let _ = stop.wait_for(|s| *s).await;
    // Leave cleanly: the subscriptions are dropped (each sends its
    // unsubscribe), and the round trip means the server has processed
    // them, so a sticky copy sent to this instance from now on gets "no
    // responders" and goes to another instance of the role.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    round_trip(&client, &link, Duration::from_secs(1)).await;
}

/// Waits (at most `timeout`) until the server has handled everything this
/// client sent before: its subscriptions, or its unsubscriptions. `flush`
/// only writes the socket; an echo makes the round trip: a message this
/// client publishes to a subject only it listens to comes back after the
/// server handled what the connection sent earlier. (In a cluster this
/// covers the server the client is connected to; the others learn of the
/// interest a moment later.) When the echo does not come back in time,
/// the socket is at least flushed, and the service goes on.
async fn round_trip(client: &Client, link: &Link, timeout: Duration) {
    let subject = sync_subject(&link.settings.app, &link.instance);
    let echo = async {
        let mut echoes = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish(subject.clone(), Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        echoes
            .next()
            .await
            .map(|_| ())
            .ok_or_else(|| "the connection closed".to_owned())
    };
    match tokio::time::timeout(timeout, echo).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("no round trip to NATS ({e}); going on without it");
            let _ = tokio::time::timeout(timeout, client.flush()).await;
        }
        Err(_) => {
            tracing::warn!("no round trip to NATS within {timeout:?}; going on without it");
            let _ = tokio::time::timeout(timeout, client.flush()).await;
        }
    }
}

/// Connects, retrying with backoff until it works or the link stops.
///
/// The credentials, keys and certificates come from
/// [`NatsSettings::connect_options`]; every log line shows the URL with
/// its password or token redacted.
async fn connect(link: &Arc<Link>, stop: &mut watch::Receiver<bool>) -> Option<Client> {
    let settings = &link.settings;
    let url = settings.display_url();
    let (addrs, base_options) = match settings.connect_options() {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::error!("cannot connect to NATS: {e}");
            return None;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let status = link.status.clone();
        let events_url = url.clone();
        let options = base_options
            .clone()
            .name(format!("{}/{}", link.settings.app, link.instance))
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let status = status.clone();
                let url = events_url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected
                            if !status.connected.swap(true, Ordering::AcqRel)
                                && status.registrations.load(Ordering::Acquire) > 0 =>
                        {
                            tracing::info!("reconnected to NATS at {url}");
                        }
                        async_nats::Event::Disconnected => {
                            status.connected.store(false, Ordering::Release);
                            tracing::warn!("lost the connection to NATS at {url}; reconnecting");
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::warn!(
                                "NATS dropped messages for this service: it reads too slowly"
                            );
                        }
                        async_nats::Event::ServerError(e) => {
                            tracing::warn!("NATS at {url} reports: {e}");
                        }
                        _ => {}
                    }
                }
            });
        let attempt = tokio::select! {
            r = options.connect(addrs.clone()) => r,
            _ = stop.changed() => return None,
        };
        match attempt {
            Ok(client) => {
                link.status.connected.store(true, Ordering::Release);
                if backoff.failures() > 0 {
                    tracing::info!(
                        "reached NATS at {url} after {} failed attempts",
                        backoff.failures()
                    );
                }
                return Some(client);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if backoff.should_log() {
                    let e = connect::explain(&e, settings);
                    tracing::warn!(
                        "cannot reach NATS at {url}: {e} (attempt {}; {} messages wait; retrying)",
                        backoff.failures(),
                        link.outbox.len()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

/// The role's consumer of the application's last-attempt advisories (the
/// stream that keeps them is created when missing).
async fn last_attempts_consumer(
    link: &Link,
    js: &jetstream::Context,
) -> Result<PullConsumer, String> {
    let app = &link.settings.app;
    let name = last_attempts_stream_name(app);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![last_attempts_stream_subjects(app)],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: link.settings.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let config = pull::Config {
        durable_name: Some(link.role.clone()),
        filter_subject: max_deliveries_subject(app, &link.role),
        ack_policy: AckPolicy::Explicit,
        ack_wait: LAST_ATTEMPT_ACK_WAIT,
        num_replicas: link.settings.replicas.max(1),
        ..Default::default()
    };
    match stream.create_consumer(config).await {
        Ok(consumer) => Ok(consumer),
        Err(create) => stream
            .get_consumer(&link.role)
            .await
            .map_err(|e| format!("consumer '{}' of stream {name}: {create}; {e}", link.role)),
    }
}

/// The stream, the subscriptions and the consumer of this instance; starts
/// the tasks that serve them.
async fn setup(
    link: &Arc<Link>,
    client: &Client,
    js: &jetstream::Context,
    deliveries: &mpsc::Sender<Queued>,
    stopping: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), String> {
    let app = &link.settings.app;
    let stream = if link.plan.any_durable() {
        let config = stream::Config {
            name: stream_name(app),
            subjects: vec![stream_subjects(app)],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: link.settings.replicas.max(1),
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("stream {}: {e}", stream_name(app)))?;
        Some(stream)
    } else {
        None
    };
    let mut role_copies = None;
    if link.plan.own_plain() {
        let subject = role_subject(app, &link.role);
        role_copies = Some(
            client
                .queue_subscribe(subject.clone(), link.role.clone())
                .await
                .map_err(|e| format!("subscribing to {subject}: {e}"))?,
        );
    }
    let inbox = instance_subject(app, &link.instance);
    let inbox = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("subscribing to {inbox}: {e}"))?;
    let no_responders = client
        .subscribe(format!("exo.{app}.nr.{}.*", link.instance))
        .await
        .map_err(|e| format!("subscribing to the no-responders subject: {e}"))?;
    let probes = client
        .subscribe(presence_subject(app))
        .await
        .map_err(|e| format!("subscribing to the presence probes: {e}"))?;
    let mut durable = None;
    if link.plan.own_durable()
        && let Some(stream) = &stream
    {
        let policy = Arc::new(Policy {
            js: js.clone(),
            app: app.clone(),
            role: link.role.clone(),
            max_attempts: link.settings.max_attempts.max(1),
            redelivery_delay: link.settings.redelivery_delay,
            runtime: link.runtime.clone(),
            inbound: link.inbound.clone(),
        });
        let config = pull::Config {
            durable_name: Some(link.role.clone()),
            filter_subject: durable_subject(app, &link.role),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: link.settings.ack_wait,
            max_deliver: i64::from(link.settings.max_attempts.max(1)),
            max_ack_pending: i64::try_from(link.concurrency * 4)
                .unwrap_or(i64::MAX)
                .max(64),
            num_replicas: link.settings.replicas.max(1),
            ..Default::default()
        };
        // Creates the role's consumer, or updates it to these settings (a
        // changed ack wait or attempt count applies at the next start).
        let consumer: PullConsumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            Err(update) => {
                let consumer = stream
                    .get_consumer(&link.role)
                    .await
                    .map_err(|e| format!("consumer '{}': {update}; {e}", link.role))?;
                tracing::warn!(
                    "the consumer '{}' of stream {} keeps its earlier settings: {update}",
                    link.role,
                    stream_name(app)
                );
                consumer
            }
        };
        let advisories = last_attempts_consumer(link, js).await?;
        durable = Some((consumer, policy, advisories, stream.clone()));
    }
    // The service goes online only once the server has its subscriptions:
    // a copy published to the role from then on reaches it.
    round_trip(client, link, ROUND_TRIP_WAIT).await;

    tasks.spawn(send::write(link.clone(), client.clone(), js.clone()));
    tasks.spawn(receive::read_plain(
        link.clone(),
        client.clone(),
        role_copies,
        inbox,
        deliveries.clone(),
        stopping.clone(),
    ));
    tasks.spawn(send::reroute(link.clone(), client.clone(), no_responders));
    tasks.spawn(presence::answer(
        link.clone(),
        client.clone(),
        probes,
        stopping.clone(),
    ));
    if let Some((consumer, policy, advisories, stream)) = durable {
        tasks.spawn(receive::read_durable(
            link.clone(),
            client.clone(),
            consumer,
            policy.clone(),
            deliveries.clone(),
            stopping.clone(),
        ));
        tasks.spawn(settle::dead_letter_stranded(
            link.clone(),
            advisories,
            policy,
            stream,
        ));
    }
    Ok(())
}

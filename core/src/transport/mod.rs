//! The transports a service's messages travel over: ExoCom (the
//! [`crate::relay`]) or NATS (with the `nats` feature). Both take outgoing
//! frames from the same [`Outbox`] and hand incoming messages to the same
//! [`Inbound`], so the dispatch above does not know which one runs.

#[cfg(feature = "nats")]
pub mod nats;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{ConfigError, ServiceConfig, Transport};
use crate::dispatch::Queued;
use crate::relay::{Inbound, Outbox, Relay, RelayConfig};

/// A running connection of one service, over its transport.
pub(crate) enum Link {
    /// To ExoCom.
    Exocom(Relay),
    /// To NATS.
    #[cfg(feature = "nats")]
    Nats(nats::NatsLink),
}

impl Link {
    /// Starts the service's transport in the background (on the current
    /// tokio runtime). `stopping` turns true when the service stops taking
    /// new messages (its drain starts).
    pub(crate) fn start(
        config: &ServiceConfig,
        outbox: Arc<Outbox>,
        inbound: Arc<dyn Inbound>,
        deliveries: mpsc::Sender<Queued>,
        stopping: watch::Receiver<bool>,
    ) -> Result<Link, ConfigError> {
        match &config.nats {
            // ExoCom goes on delivering to a draining service (the bus
            // has no way to take a registration back); the service drops
            // what arrives then, as the deployed frameworks do.
            None => {
                drop(stopping);
                Ok(Link::Exocom(Relay::start(
                    RelayConfig::for_service(config)?,
                    outbox,
                    inbound,
                    deliveries,
                )))
            }
            #[cfg(feature = "nats")]
            Some(settings) => Ok(Link::Nats(nats::NatsLink::start(
                config,
                settings.clone(),
                outbox,
                inbound,
                deliveries,
                stopping,
            )?)),
            #[cfg(not(feature = "nats"))]
            Some(_) => Err(ConfigError::new(
                &config.file,
                "this build of exoservice has no NATS support (cargo feature `nats`)",
            )),
        }
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Link::Exocom(r) => r.is_connected(),
            #[cfg(feature = "nats")]
            Link::Nats(n) => n.is_connected(),
        }
    }

    /// How many times the service has registered (ExoCom: once per
    /// connection; NATS: once its subscriptions were set up).
    pub(crate) fn registrations(&self) -> u64 {
        match self {
            Link::Exocom(r) => r.registrations(),
            #[cfg(feature = "nats")]
            Link::Nats(n) => n.registrations(),
        }
    }

    /// A watch of the registration count.
    pub(crate) fn registered_rx(&self) -> watch::Receiver<u64> {
        match self {
            Link::Exocom(r) => r.registered_rx(),
            #[cfg(feature = "nats")]
            Link::Nats(n) => n.registered_rx(),
        }
    }

    /// Stops taking frames, writes what waits (for at most `timeout`), then
    /// disconnects. Returns how many frames could not be written.
    pub(crate) async fn close(self, timeout: Duration) -> usize {
        match self {
            Link::Exocom(r) => r.close(timeout).await,
            #[cfg(feature = "nats")]
            Link::Nats(n) => n.close(timeout).await,
        }
    }
}

/// The name of the service's transport, for log lines.
pub(crate) fn name_of(config: &ServiceConfig) -> &'static str {
    match config.transport() {
        Transport::Exocom => "ExoCom",
        Transport::Nats => "NATS",
    }
}

/// The port printed in `online at port N`: the bus's, or the first NATS
/// server's.
pub(crate) fn port_of(config: &ServiceConfig) -> u16 {
    match &config.nats {
        Some(nats) => first_port(&nats.url).unwrap_or(4222),
        None => config.exocom_port,
    }
}

/// The port of the first URL in a comma-separated NATS server list.
fn first_port(urls: &str) -> Option<u16> {
    let first = urls.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = host_port.split('/').next()?;
    match host_port.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(4222),
    }
}

#[cfg(test)]
mod tests {
    use super::first_port;

    #[test]
    fn finds_the_first_servers_port() {
        assert_eq!(first_port("nats://127.0.0.1:4333"), Some(4333));
        assert_eq!(first_port("nats://u:p@h:5000,nats://h2:6000"), Some(5000));
        assert_eq!(first_port("tls://example.com"), Some(4222));
        assert_eq!(first_port("localhost:7000"), Some(7000));
    }
}

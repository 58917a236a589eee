//! Connecting to NATS with an application's settings: a failed attempt
//! explained in the words of the settings (which variable to check), and
//! the one-attempt connection of the tools (`exo status`, `exo
//! dead-letters`). Services connect with the same options and keep
//! retrying (see the link's `connect`).

use std::time::Duration;

use async_nats::Client;

use crate::config::NatsSettings;

/// A failed connection attempt told in the words of the settings.
pub(crate) fn explain(e: &async_nats::ConnectError, settings: &NatsSettings) -> String {
    let url_auth = settings.url_has_credentials();
    let has_cert = settings.client_cert.is_some();
    match e.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation => format!(
            "the server refused authentication (authorization violation): check the user and password or token in NATS_URL, the seed in NATS_NKEY_FILE, the .creds file of NATS_CREDS_FILE and the client certificate in NATS_CERT_FILE{}",
            if settings.nkey.is_none() && settings.creds.is_none() && !url_auth && !has_cert {
                " (none is set)"
            } else {
                ""
            }
        ),
        async_nats::ConnectErrorKind::Authentication => format!(
            "cannot sign the server's challenge with the NKey seed of NATS_NKEY_FILE or NATS_CREDS_FILE ({e})"
        ),
        _ => {
            // The server's TLS alert about this client's certificate.
            let alert = std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(|tls| match tls {
                    rustls::Error::AlertReceived(
                        a @ (rustls::AlertDescription::BadCertificate
                        | rustls::AlertDescription::CertificateRequired
                        | rustls::AlertDescription::UnknownCA
                        | rustls::AlertDescription::CertificateUnknown
                        | rustls::AlertDescription::CertificateExpired
                        | rustls::AlertDescription::UnsupportedCertificate),
                    ) => Some(*a),
                    _ => None,
                });
            match alert {
                Some(a) if has_cert => format!(
                    "the server refused the client certificate of NATS_CERT_FILE (TLS alert {a:?}): it must be signed by a CA the server trusts and be valid"
                ),
                Some(a) => format!(
                    "the server refused the TLS handshake (TLS alert {a:?}): it verifies its clients, so set NATS_CERT_FILE and NATS_KEY_FILE to this service's certificate and key"
                ),
                None => e.to_string(),
            }
        }
    }
}

/// A client of the settings' server(s) for a tool named `name`: one
/// attempt, bounded by `timeout` (requests too). The error names the
/// server (credentials hidden) and says what to check.
pub async fn connect_once(
    settings: &NatsSettings,
    name: &str,
    timeout: Duration,
) -> Result<Client, String> {
    let url = settings.display_url();
    let (addrs, options) = settings.connect_options()?;
    let options = options
        .name(format!("{}/{name}", settings.app))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout));
    match tokio::time::timeout(timeout, options.connect(addrs)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "cannot reach NATS at {url}: {}",
            explain(&e, settings)
        )),
        Err(_) => Err(format!(
            "cannot reach NATS at {url}: no answer within {timeout:?}"
        )),
    }
}

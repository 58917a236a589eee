//! Authentication and TLS on the nats transport, against real
//! `nats-server` processes: a user and password or a token in `NATS_URL`,
//! client certificates (`NATS_CERT_FILE`, `NATS_KEY_FILE`) and NKeys
//! (`NATS_NKEY_FILE`). A service with the right credentials comes online
//! and answers a request; one with wrong or no credentials never comes
//! online, logs that the server refused it, and never logs a secret.
//!
//! The settings are read from the variables
//! (`ServiceConfig::with_transport_from`), as a service started with them
//! would; `ping` is taken at-least-once, so JetStream is used too.

#![cfg(feature = "nats")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use exoservice::Engine;
use exoservice::config::ServiceConfig;
use exoservice::config::env::{self, Env};
use exoservice::testing::nats::NatsServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
/// How long a service that must not get in is given to (wrongly) come
/// online.
const REFUSED_WAIT: Duration = Duration::from_secs(2);

/// `ping` is taken at-least-once, so every test uses JetStream too.
const ROUTES: &str = r#"{"web": {"sends": ["ping"], "receives": ["pong"]},
                        "ping": {"receives": ["ping"], "sends": ["pong"], "atLeastOnce": ["ping"]}}"#;

/// Everything this test binary logs, as text.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init()
            .expect("the only subscriber of this test binary");
        log
    })
}

/// Writes log text into the shared buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log lines that mention `needle` (the server's port, so
/// that tests running side by side do not see each other's lines).
fn log_lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(ToOwned::to_owned)
        .collect()
}

/// Polls (bounded) until a log line mentioning `needle` contains `what`.
async fn wait_for_log(needle: &str, what: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = log_lines_with(needle);
        if lines.iter().any(|l| l.contains(what)) || tokio::time::Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A service of role `role` whose NATS settings come from these
/// variables (plus the transport, the app and the routes).
fn service(role: &str, app: &str, vars: &[(&str, String)]) -> Engine {
    let mut env = Env::from_pairs([
        (env::TRANSPORT, "nats".to_owned()),
        (env::APP, app.to_owned()),
        (env::ROUTES, ROUTES.to_owned()),
    ]);
    for (k, v) in vars {
        env = env.with(k, v.clone());
    }
    let (receives, sends) = match role {
        "ping" => (vec!["ping"], vec!["pong"]),
        _ => (vec!["pong"], vec!["ping"]),
    };
    let config = ServiceConfig::from_parts(role, receives, sends)
        .with_transport_from(&env)
        .expect("valid NATS settings");
    assert!(config.nats.is_some(), "the nats transport");
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine
}

/// Starts `ping` and `web` with these variables, checks that both come
/// online and that a request gets its answer, then drains both.
async fn request_reply_works(app: &str, vars: &[(&str, String)]) {
    let ping = Arc::new(service("ping", app, vars));
    ping.handle("ping").unwrap();
    let web = service("web", app, vars);
    for e in [&*ping, &web] {
        e.connect().unwrap();
        assert!(
            e.wait_online(WAIT).await,
            "online with the right credentials"
        );
    }
    let serving = ping.clone();
    tokio::spawn(async move {
        while let Some(d) = serving.next().await {
            d.ctx().reply("pong", &d.message().payload_value()).unwrap();
        }
    });
    let answer = web
        .client()
        .request("ping", &json!({"n": 7}), WAIT)
        .await
        .expect("an answer");
    assert_eq!(answer.payload_value(), json!({"n": 7}));
    web.drain().await;
    ping.drain().await;
}

/// Starts `web` with these variables and checks that it never comes
/// online, that its log says `reason` about the server at `port`, and
/// that none of `secrets` is in the log.
async fn refused(app: &str, vars: &[(&str, String)], port: u16, reason: &str, secrets: &[&str]) {
    let web = service("web", app, vars);
    web.connect().unwrap();
    assert!(
        !web.wait_online(REFUSED_WAIT).await,
        "a service the server refuses must not come online"
    );
    let needle = format!(":{port}");
    let lines = wait_for_log(&needle, reason).await;
    assert!(
        lines.iter().any(|l| l.contains(reason)),
        "a log line about 127.0.0.1{needle} says {reason:?}; lines: {lines:#?}"
    );
    let all = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    for secret in secrets {
        assert!(
            !all.contains(secret),
            "the log shows the secret {secret:?}:\n{all}"
        );
    }
    web.drain().await;
}

fn fresh_app(prefix: &str) -> String {
    format!("{prefix}{}", fastrand::u32(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_in_nats_url() {
    captured();
    let password = format!("pw-{}", fastrand::u64(..));
    let server = NatsServer::start_with(&["--user", "ann", "--pass", &password], None)
        .await
        .expect("nats-server with a user");
    let port = server.port();
    let app = fresh_app("up");
    // Each entry of a list works with the credentials: here the first
    // server is gone, the credentials stand on the second one only.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    request_reply_works(
        &app,
        &[(
            env::NATS_URL,
            format!("nats://127.0.0.1:{dead},nats://ann:{password}@127.0.0.1:{port}"),
        )],
    )
    .await;
    let wrong = format!("wrong-{}", fastrand::u64(..));
    refused(
        &app,
        &[(
            env::NATS_URL,
            format!("nats://ann:{wrong}@127.0.0.1:{port}"),
        )],
        port,
        "refused authentication",
        &[&wrong, &password],
    )
    .await;
    let lines = log_lines_with(&format!(":{port}"));
    assert!(
        lines.iter().any(|l| l.contains("nats://ann:***@127.0.0.1")),
        "the URL is shown with its password redacted: {lines:#?}"
    );
    refused(
        &app,
        &[(env::NATS_URL, format!("nats://127.0.0.1:{port}"))],
        port,
        "(none is set)",
        &[&password],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_nats_url() {
    captured();
    let token = format!("tok{}", fastrand::u64(..));
    let server = NatsServer::start_with(&["--auth", &token], None)
        .await
        .expect("nats-server with a token");
    let port = server.port();
    let app = fresh_app("tok");
    request_reply_works(
        &app,
        &[(env::NATS_URL, format!("nats://{token}@127.0.0.1:{port}"))],
    )
    .await;
    let wrong = format!("bad{}", fastrand::u64(..));
    refused(
        &app,
        &[(env::NATS_URL, format!("nats://{wrong}@127.0.0.1:{port}"))],
        port,
        "refused authentication",
        &[&wrong, &token],
    )
    .await;
    assert!(
        log_lines_with(&format!(":{port}"))
            .iter()
            .any(|l| l.contains("nats://***@127.0.0.1")),
        "the URL is shown with its token redacted"
    );
}

/// A private CA, a server certificate and a client certificate it
/// signed, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "exo test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &*ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "nats");
    let (client_pem, client_key) = leaf(vec!["web.exo.test".into()], "web");
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_pem),
        server_key: write("server-key.pem", server_key),
        client_cert: write("client.pem", client_pem),
        client_key: write("client-key.pem", client_key),
    }
}

/// A server with TLS and a certificate of a private CA: services that trust
/// it (`NATS_CA_FILE`) talk over `tls://`; one that does not never comes
/// online and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_certificate_a_private_ca_signed() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 2\n}}\n",
        pki.server_cert, pki.server_key
    );
    let server = NatsServer::start_with(&[], Some(&config))
        .await
        .expect("nats-server with TLS");
    let port = server.port();
    let app = fresh_app("tls");
    let url = format!("tls://127.0.0.1:{port}");
    request_reply_works(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_CA_FILE, pki.ca.display().to_string()),
        ],
    )
    .await;
    refused(&app, &[(env::NATS_URL, url)], port, "UnknownIssuer", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_a_server_that_verifies_clients() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let server = NatsServer::start_with(&[], Some(&config))
        .await
        .expect("nats-server verifying clients");
    let port = server.port();
    let app = fresh_app("mtls");
    let url = format!("tls://127.0.0.1:{port}");
    let ca = pki.ca.display().to_string();
    request_reply_works(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_CA_FILE, ca.clone()),
            (env::NATS_CERT_FILE, pki.client_cert.display().to_string()),
            (env::NATS_KEY_FILE, pki.client_key.display().to_string()),
        ],
    )
    .await;
    // Trusting the server is not enough: the server wants a certificate.
    let web = service(
        "web",
        &app,
        &[(env::NATS_URL, url.clone()), (env::NATS_CA_FILE, ca)],
    );
    web.connect().unwrap();
    assert!(
        !web.wait_online(REFUSED_WAIT).await,
        "a service without a client certificate must not come online"
    );
    let reason = "set NATS_CERT_FILE and NATS_KEY_FILE";
    let lines = wait_for_log(&format!(":{port}"), reason).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("refused the TLS handshake") && l.contains(reason)),
        "{lines:#?}"
    );
    web.drain().await;
    // A certificate of another CA is refused too.
    let stranger = rcgen::generate_simple_self_signed(vec!["web.exo.test".into()]).unwrap();
    let (cert, key) = (
        dir.path().join("stranger.pem"),
        dir.path().join("stranger-key.pem"),
    );
    std::fs::write(&cert, stranger.cert.pem()).unwrap();
    std::fs::write(&key, stranger.signing_key.serialize_pem()).unwrap();
    let web = service(
        "web",
        &app,
        &[
            (env::NATS_URL, url),
            (env::NATS_CA_FILE, pki.ca.display().to_string()),
            (env::NATS_CERT_FILE, cert.display().to_string()),
            (env::NATS_KEY_FILE, key.display().to_string()),
        ],
    );
    web.connect().unwrap();
    assert!(
        !web.wait_online(REFUSED_WAIT).await,
        "a service with a certificate of another CA must not come online"
    );
    let reason = "refused the client certificate of NATS_CERT_FILE";
    let lines = wait_for_log(&format!(":{port}"), reason).await;
    assert!(lines.iter().any(|l| l.contains(reason)), "{lines:#?}");
    web.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_from_a_file() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let config = format!(
        "authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}\n",
        user.public_key()
    );
    let server = NatsServer::start_with(&[], Some(&config))
        .await
        .expect("nats-server with an nkey user");
    let port = server.port();
    let app = fresh_app("nk");
    let url = format!("nats://127.0.0.1:{port}");
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    request_reply_works(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_NKEY_FILE, seed_file.display().to_string()),
        ],
    )
    .await;
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let other_file = dir.path().join("other.nk");
    std::fs::write(&other_file, &other).unwrap();
    refused(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_NKEY_FILE, other_file.display().to_string()),
        ],
        port,
        "refused authentication",
        &[&seed, &other],
    )
    .await;
    refused(
        &app,
        &[(env::NATS_URL, url)],
        port,
        "(none is set)",
        &[&seed],
    )
    .await;
}

/// Base64 without padding, URL alphabet (as JWTs use).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT about `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..)),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", base64url(&signature))
}

/// The text of a `.creds` file: a user JWT and the user's seed.
fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// An account (JetStream allowed, unless it is the system account) and a
/// user of it, under `operator`: the account's public key and JWT, and the
/// user's `.creds` text.
fn account_and_user(operator: &nkeys::KeyPair, jetstream: bool) -> (String, String, String) {
    let storage = if jetstream { -1 } else { 0 };
    let account = nkeys::KeyPair::new_account();
    let account_jwt = jwt(
        operator,
        &account.public_key(),
        "app",
        json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": storage, "disk_storage": storage,
                "streams": storage, "consumer": storage
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    );
    let user = nkeys::KeyPair::new_user();
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "web",
        json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    (
        account.public_key(),
        account_jwt,
        creds(&user_jwt, &user.seed().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_in_operator_mode() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "exo-test",
        json!({"type": "operator", "version": 2}),
    );
    let (account, account_jwt, user_creds) = account_and_user(&operator, true);
    // JetStream needs a system account (without JetStream of its own).
    let (system, system_jwt, _) = account_and_user(&operator, false);
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\nresolver_preload: {{\n  {account}: {account_jwt}\n  {system}: {system_jwt}\n}}\n"
    );
    let server = NatsServer::start_with(&[], Some(&config))
        .await
        .expect("nats-server in operator mode");
    let port = server.port();
    let app = fresh_app("creds");
    let url = format!("nats://127.0.0.1:{port}");
    let creds_file = dir.path().join("web.creds");
    std::fs::write(&creds_file, &user_creds).unwrap();
    request_reply_works(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_CREDS_FILE, creds_file.display().to_string()),
        ],
    )
    .await;
    // A user of an account the server does not know.
    let (_, _, stranger_creds) = account_and_user(&nkeys::KeyPair::new_operator(), true);
    let stranger_file = dir.path().join("stranger.creds");
    std::fs::write(&stranger_file, &stranger_creds).unwrap();
    let seed_of = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("SU"))
            .unwrap()
            .to_owned()
    };
    refused(
        &app,
        &[
            (env::NATS_URL, url.clone()),
            (env::NATS_CREDS_FILE, stranger_file.display().to_string()),
        ],
        port,
        "refused authentication",
        &[&seed_of(&user_creds), &seed_of(&stranger_creds)],
    )
    .await;
    refused(&app, &[(env::NATS_URL, url)], port, "(none is set)", &[]).await;
}

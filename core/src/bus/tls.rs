//! TLS with rustls (the `ring` provider): the bus's side (a certificate
//! chain and its private key, PEM files, so it serves `wss://` and
//! `https://.../config.json`) and a service's side (the roots it trusts: a
//! CA file for self-signed setups, else the system's roots, else the
//! Mozilla roots bundled with webpki-roots).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate and key a bus serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM (the server's certificate first).
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// These two files.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Why TLS cannot be set up; names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct TlsError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

fn error(file: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(file).map_err(|e| error(file, format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, format!("not a PEM file of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            file,
            "holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(file).map_err(|e| error(file, format!("cannot read it: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => error(
            file,
            "holds no private key (expected a PEM block `-----BEGIN PRIVATE KEY-----`, RSA or EC)",
        ),
        e => error(file, format!("not a PEM private key: {e}")),
    })
}

/// The bus's TLS acceptor for these files (HTTP/1.1 only).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            error(
                &files.key,
                format!(
                    "does not fit the certificate in {}: {e}",
                    files.cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The roots of the system (read once per process), else webpki-roots.
fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(roots)
        })
        .clone()
}

/// A service's TLS settings: it trusts only the certificates in `ca_file`
/// when given (a self-signed setup), else the system's roots (else the
/// bundled Mozilla roots).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(file)? {
                roots
                    .add(cert)
                    .map_err(|e| error(file, format!("not a usable CA certificate: {e}")))?;
            }
            Arc::new(roots)
        }
        None => default_roots(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(Path::new("(TLS)"), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = acceptor(&TlsFiles::new(&missing, &missing)).err().unwrap();
        assert_eq!(e.file, missing);
        assert!(e.message.starts_with("cannot read it"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.message.contains("no certificate"), "{e}");

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
        acceptor(&TlsFiles::new(&cert_file, &key_file)).unwrap();
        client_config(Some(&cert_file)).unwrap();
        let e = acceptor(&TlsFiles::new(&cert_file, &cert_file))
            .err()
            .unwrap();
        assert!(e.message.contains("no private key"), "{e}");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key_file, other.signing_key.serialize_pem()).unwrap();
        let e = acceptor(&TlsFiles::new(&cert_file, &key_file))
            .err()
            .unwrap();
        assert!(e.message.contains("does not fit"), "{e}");
    }
}

//! Connections, TLS side (before any request): rustls terminates TLS 1.2 and 1.3 with its safe defaults and ALPN
//! for h2 and http/1.1. The certificate and key are re-read when they change on disk (cert-manager and Kubernetes
//! Secrets rotate them); a bad new pair is refused and the old one kept, and connections in progress are untouched.
//! With a client CA, client certificates are verified (mTLS) and their identity (SPIFFE URI SAN, else subject CN)
//! is handed to authentication; a certificate naming more than one identity is refused at the handshake.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// TLS settings of the client listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates (enables mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is required (otherwise optional when a client CA is set).
    pub client_cert_required: bool,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &Path, message: impl ToString) -> TlsError {
    TlsError { path: path.display().to_string(), message: message.to_string() }
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err(cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_file, e))?;
    if chain.is_empty() {
        return Err(err(cert_file, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| err(key_file, e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| err(key_file, format!("does not fit the certificate: {e}")))
}

/// The server certificate, replaced in place when its files change.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    digest: Mutex<Vec<u8>>,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Refused reloads (bad new pair; the old one stays).
    pub failures: AtomicU64,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert_file", &self.cert_file).finish()
    }
}

impl ReloadingCert {
    /// Loads the pair once (failing start-up if it is bad).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let pair = load_pair(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            digest: Mutex::new(files_digest(cert_file, key_file)),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// Reloads if either file changed. A pair that fails to load is refused (logged, counted) and the old one kept;
    /// it is retried only after the files change again.
    pub fn check(&self) {
        let digest = files_digest(&self.cert_file, &self.key_file);
        let Ok(mut seen) = self.digest.lock() else { return };
        if *seen == digest {
            return;
        }
        *seen = digest;
        match load_pair(&self.cert_file, &self.key_file) {
            Ok(pair) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(pair);
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "new TLS certificate refused; keeping the current one");
            }
        }
    }

    /// Checks the files every `interval` until the returned task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.check()).await;
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// Content hash of both files (following symlinks, so Kubernetes `..data` swaps are seen).
fn files_digest(cert: &Path, key: &Path) -> Vec<u8> {
    let mut h = Sha256::new();
    for f in [cert, key] {
        h.update(std::fs::read(f).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().to_vec()
}

/// Builds the server configuration: TLS 1.2 and 1.3 (rustls' defaults; no older protocol exists in rustls), ALPN
/// h2 then http/1.1, and client-certificate verification when a client CA is configured.
pub fn server_config(settings: &TlsSettings, cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(&settings.cert_file, e))?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| err(ca, e))? {
                roots.add(c.map_err(|e| err(ca, e))?).map_err(|e| err(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.client_cert_required { verifier } else { verifier.allow_unauthenticated() };
            let inner = verifier.build().map_err(|e| err(ca, e))?;
            builder.with_client_cert_verifier(Arc::new(OneIdentityVerifier { inner }))
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity of a verified client certificate: its SPIFFE ID (a `spiffe://` URI SAN) if it has one, else its
/// subject common name. A certificate that names itself twice (two SPIFFE IDs, or a subject with several CNs, where
/// CAs and libraries disagree on which one counts) has no identity: see [`identity_problem`].
pub fn client_identity(cert: &CertificateDer<'_>) -> Option<String> {
    read_identity(cert).ok()
}

/// Why a client certificate cannot identify anyone, if it cannot.
pub fn identity_problem(cert: &CertificateDer<'_>) -> Option<String> {
    read_identity(cert).err()
}

fn read_identity(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| format!("it cannot be parsed ({e})"))?;
    let mut spiffe = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if uri.starts_with("spiffe://") {
                    spiffe.push((*uri).to_string());
                }
            }
        }
    }
    match spiffe.len() {
        0 => {}
        1 => return Ok(spiffe.remove(0)),
        n => return Err(format!("it holds {n} SPIFFE IDs")),
    }
    let names: Vec<_> = parsed.subject().iter_common_name().collect();
    match names.as_slice() {
        [] => Err("its subject has no common name".into()),
        [cn] => cn.as_str().map(str::to_owned).map_err(|_| "its common name is not a string".into()),
        more => Err(format!("its subject holds {} common names", more.len())),
    }
}

/// The client-certificate verifier: the CA checks of rustls' WebPKI verifier, then a refusal (at the handshake, TLS
/// alert `access_denied`, logged with the reason) of any certificate that does not name exactly one identity.
#[derive(Debug)]
struct OneIdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for OneIdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match identity_problem(end_entity) {
            // A certificate without a CN or SPIFFE ID still proves possession; it maps to no principal.
            Some(problem) if problem.contains("holds") => {
                tracing::warn!(%problem, "client certificate refused: it does not name exactly one identity");
                Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
            _ => Ok(verified),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;

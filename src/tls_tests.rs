#![allow(clippy::unwrap_used)]
//! Client-certificate identities, with certificates made by rcgen: only a certificate naming exactly one identity
//! (one SPIFFE ID, else one subject CN) identifies anyone, and the handshake refuses one that names several.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test client CA");
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca { der, issuer: Issuer::new(params, key) }
}

/// A client certificate with these subject CNs (the second and later ones under the CN OID as a custom type,
/// since rcgen keeps one value per type) and these URI SANs.
fn client(ca: &Ca, cns: &[&str], uris: &[&str]) -> CertificateDer<'static> {
    client_with_key(ca, cns, uris).0
}

fn client_with_key(ca: &Ca, cns: &[&str], uris: &[&str]) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.distinguished_name = DistinguishedName::new();
    for (i, cn) in cns.iter().enumerate() {
        let ty = if i == 0 { DnType::CommonName } else { DnType::CustomDnType(vec![2, 5, 4, 3]) };
        params.distinguished_name.push(ty, *cn);
    }
    params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
    (params.signed_by(&key, &ca.issuer).unwrap().der().clone(), key)
}

fn verifier(ca: &Ca) -> OneIdentityVerifier {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    OneIdentityVerifier { inner }
}

#[test]
fn a_certificate_with_several_common_names_identifies_nobody_and_is_refused_at_the_handshake() {
    let ca = ca();
    let two = client(&ca, &["ci-trainer", "mlflow-admin"], &[]);
    // Both CNs are really in the subject: the parser sees two.
    let (_, parsed) = x509_parser::parse_x509_certificate(two.as_ref()).unwrap();
    assert_eq!(parsed.subject().iter_common_name().count(), 2);
    assert_eq!(client_identity(&two), None);
    assert_eq!(identity_problem(&two).as_deref(), Some("its subject holds 2 common names"));
    let refused = verifier(&ca).verify_client_cert(&two, &[], UnixTime::now());
    assert!(
        matches!(refused, Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))),
        "{refused:?}"
    );
}

#[test]
fn a_certificate_with_two_spiffe_ids_is_refused() {
    let ca = ca();
    let cert = client(&ca, &["x"], &["spiffe://a.test/ns/ci", "spiffe://a.test/ns/admin"]);
    assert_eq!(client_identity(&cert), None);
    assert!(verifier(&ca).verify_client_cert(&cert, &[], UnixTime::now()).is_err());
}

#[test]
fn a_certificate_naming_one_identity_is_accepted() {
    let ca = ca();
    let v = verifier(&ca);
    let cn = client(&ca, &["ci-trainer"], &[]);
    assert_eq!(client_identity(&cn).as_deref(), Some("ci-trainer"));
    assert!(v.verify_client_cert(&cn, &[], UnixTime::now()).is_ok());
    // The SPIFFE ID wins over the CN; other URI SANs do not count.
    let spiffe = client(&ca, &["x"], &["spiffe://a.test/ns/ci", "https://example.test/"]);
    assert_eq!(client_identity(&spiffe).as_deref(), Some("spiffe://a.test/ns/ci"));
    assert!(v.verify_client_cert(&spiffe, &[], UnixTime::now()).is_ok());
    // No CN and no SPIFFE ID: verified, but no identity (authentication then asks for a token).
    let anonymous = client(&ca, &[], &[]);
    assert_eq!(client_identity(&anonymous), None);
    assert!(v.verify_client_cert(&anonymous, &[], UnixTime::now()).is_ok());
}

/// The server configuration refuses the certificate at the handshake itself (not only the verifier on its own).
#[tokio::test]
async fn the_listener_refuses_a_certificate_with_several_common_names_at_the_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &ca.issuer);
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("server.pem"), server.unwrap().pem()).unwrap();
    std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(path("ca.pem"), pem_of(&ca.der)).unwrap();
    let settings = TlsSettings {
        cert_file: path("server.pem"),
        key_file: path("server.key"),
        client_ca_file: Some(path("ca.pem")),
        client_cert_required: true,
        reload_interval: Duration::from_secs(60),
    };
    let config = server_config(&settings, ReloadingCert::load(&settings.cert_file, &settings.key_file).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(config.unwrap());

    for (cns, accepted) in [(&["ci-trainer", "mlflow-admin"][..], false), (&["ci-trainer"][..], true)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            acceptor
                .accept(stream)
                .await
                .map(|tls| tls.get_ref().1.peer_certificates().and_then(|c| c.first().and_then(client_identity)))
        });
        let (cert, key) = client_with_key(&ca, cns, &[]);
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // TLS 1.3 clients learn of a refused certificate only on their next read; the server's result is the test.
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            let _ = tls.read(&mut [0u8; 16]).await;
        }
        let outcome = server.await.unwrap();
        assert_eq!(outcome.is_ok(), accepted, "{cns:?}: {outcome:?}");
        if accepted {
            assert_eq!(outcome.ok().flatten().as_deref(), Some("ci-trainer"));
        }
    }
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

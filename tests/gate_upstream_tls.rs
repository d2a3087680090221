//! TLS to the upstream: when MLflow is not on loopback it is reached over https, and a private CA is trusted only
//! when configured (`upstream.ca_file`).

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;

/// An https upstream with a self-signed certificate for 127.0.0.1; returns its address and the certificate PEM.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
async fn tls_upstream() -> (std::net::SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (addr, cert_pem)
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_needs_the_ca_file() {
    let (addr, cert_pem) = tls_upstream().await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let base = config_toml(addr, &keys.jwks_path(), &policies_dir(), "")
        .replace(&format!("http://{addr}"), &format!("https://{addr}"));
    let path = "/api/2.0/mlflow/experiments/search";

    let trusting = base.replace("[auth]", &format!("ca_file = \"{}\"\n\n[auth]", ca.display()));
    let gate = GateHandle::start_toml(&trusting).await;
    let a = Req::get(gate.url(path)).token(&keys.token("alice", &[])).send().await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    gate.stop().await;

    let gate = GateHandle::start_toml(&base).await;
    let a = Req::get(gate.url(path)).token(&keys.token("alice", &[])).send().await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "an untrusted upstream certificate must not be accepted");
    gate.stop().await;
}

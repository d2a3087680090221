//! Key loading from an IdP: JWKS over HTTP and OpenID Connect discovery, key rotation, the refetch rate limit for
//! unknown `kid`s, and stale keys kept while the IdP is down.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlflow_gate::devkeys;

/// A fake IdP: `/jwks` serves the current JWKS, `/.well-known/openid-configuration` a discovery document.
struct Idp {
    addr: SocketAddr,
    jwks: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Idp {
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    async fn start(jwks: String) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idp = Idp { addr, jwks: Arc::new(Mutex::new(jwks)), hits: Arc::default(), down: Arc::default() };
        let (jwks, hits, down) = (idp.jwks.clone(), idp.hits.clone(), idp.down.clone());
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let (jwks, hits, down) = (jwks.clone(), hits.clone(), down.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (jwks, hits, down) = (jwks.clone(), hits.clone(), down.clone());
                        async move {
                            let body = match req.uri().path() {
                                "/.well-known/openid-configuration" => {
                                    format!(r#"{{"issuer":"{ISSUER}","jwks_uri":"http://{addr}/jwks"}}"#)
                                }
                                _ => {
                                    hits.fetch_add(1, Ordering::SeqCst);
                                    if down.load(Ordering::SeqCst) {
                                        return Ok::<_, Infallible>(
                                            Response::builder().status(503).body(Full::new(Bytes::new())).unwrap(),
                                        );
                                    }
                                    jwks.lock().unwrap().clone()
                                }
                            };
                            Ok(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        idp
    }
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn key(kid: &str) -> devkeys::DevKey {
    devkeys::generate(jsonwebtoken::Algorithm::RS256, kid).unwrap()
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn token(k: &devkeys::DevKey, kid: &str) -> String {
    devkeys::mint(&k.private_pem, jsonwebtoken::Algorithm::RS256, Some(kid), &Keys::claims("alice", &[])).unwrap()
}

fn gate_toml(upstream: SocketAddr, source: &str, cache_secs: u64, min_refresh: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{upstream}"
[auth]
jwks_cache_secs = {cache_secs}
jwks_min_refresh_secs = {min_refresh}
[[auth.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
{source}
[policy]
dir = "{}"
"#,
        policies_dir().display()
    )
}

async fn status(gate: &GateHandle, token: &str) -> StatusCode {
    Req::get(gate.url("/api/2.0/mlflow/experiments/search")).token(token).send().await.status
}

#[tokio::test]
async fn discovery_document_leads_to_the_jwks() {
    let k1 = key("k1");
    let idp = Idp::start(serde_json::to_string(&k1.jwks).unwrap()).await;
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!(r#"discovery_url = "http://{}/.well-known/openid-configuration""#, idp.addr);
    let gate = GateHandle::start_toml(&gate_toml(upstream.addr, &source, 300, 30)).await;
    assert_eq!(status(&gate, &token(&k1, "k1")).await, StatusCode::OK);
    gate.stop().await;
}

#[tokio::test]
async fn rotated_key_is_fetched_once_and_random_kids_cannot_hammer_the_idp() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Idp::start(serde_json::to_string(&k1.jwks).unwrap()).await;
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!(r#"jwks_url = "http://{}/jwks""#, idp.addr);
    let gate = GateHandle::start_toml(&gate_toml(upstream.addr, &source, 300, 2)).await;
    assert_eq!(status(&gate, &token(&k1, "k1")).await, StatusCode::OK);
    let after_start = idp.hits.load(Ordering::SeqCst);
    assert_eq!(after_start, 1, "keys are fetched once at start and then cached");

    // 50 tokens with unknown kids: at most one refetch within the minimum interval.
    let stranger = key("x");
    for i in 0..50 {
        assert_eq!(status(&gate, &token(&stranger, &format!("random-{i}"))).await, StatusCode::UNAUTHORIZED);
    }
    assert!(
        idp.hits.load(Ordering::SeqCst) <= after_start + 1,
        "unknown kids refetched {} times",
        idp.hits.load(Ordering::SeqCst)
    );

    // The IdP rotates to k2: once the minimum interval has passed, a k2 token triggers one refetch and verifies.
    let mut both = k1.jwks.clone();
    both.keys.extend(k2.jwks.keys.clone());
    *idp.jwks.lock().unwrap() = serde_json::to_string(&both).unwrap();
    eventually(10, "the rotated key to be picked up", || async {
        (status(&gate, &token(&k2, "k2")).await == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(status(&gate, &token(&k1, "k1")).await, StatusCode::OK);
    gate.stop().await;
}

#[tokio::test]
async fn stale_keys_are_kept_while_the_idp_is_down() {
    let k1 = key("k1");
    let idp = Idp::start(serde_json::to_string(&k1.jwks).unwrap()).await;
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!(r#"jwks_url = "http://{}/jwks""#, idp.addr);
    let gate = GateHandle::start_toml(&gate_toml(upstream.addr, &source, 1, 1)).await;
    assert_eq!(status(&gate, &token(&k1, "k1")).await, StatusCode::OK);
    idp.down.store(true, Ordering::SeqCst);
    let hits_before = idp.hits.load(Ordering::SeqCst);
    let down_since = std::time::Instant::now();
    // Requests keep coming while the cache (1 s) expires and the gate tries the IdP again: every one is served with
    // the cached key, until the gate has tried (and failed) to refetch twice.
    eventually(30, "two refetch attempts while the IdP is down", || async {
        assert_eq!(
            status(&gate, &token(&k1, "k1")).await,
            StatusCode::OK,
            "a cached key stopped working while the IdP was down"
        );
        (idp.hits.load(Ordering::SeqCst) - hits_before >= 2).then_some(())
    })
    .await;
    // Rate-limited: requests arrived every few ms, refetches at most once per jwks_min_refresh_secs (1 s).
    let refetches = idp.hits.load(Ordering::SeqCst) - hits_before;
    let allowed = usize::try_from(down_since.elapsed().as_secs()).unwrap_or(usize::MAX).saturating_add(2);
    assert!((2..=allowed).contains(&refetches), "expected a few rate-limited refetch attempts, saw {refetches}");
    gate.stop().await;
}

#[tokio::test]
async fn no_keys_at_all_denies_with_503() {
    let idp = Idp::start(String::new()).await;
    idp.down.store(true, Ordering::SeqCst);
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!(r#"jwks_url = "http://{}/jwks""#, idp.addr);
    let gate = GateHandle::start_toml(&gate_toml(upstream.addr, &source, 300, 1)).await;
    assert_eq!(status(&gate, &token(&key("k1"), "k1")).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn a_remembered_token_signed_by_a_rotated_out_key_is_refused_once_the_keys_change() {
    let (k1, k2) = (key("k1"), key("k2"));
    let idp = Idp::start(serde_json::to_string(&k1.jwks).unwrap()).await;
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!(r#"jwks_url = "http://{}/jwks""#, idp.addr);
    let gate = GateHandle::start_toml(&gate_toml(upstream.addr, &source, 1, 1)).await;
    let old = token(&k1, "k1");
    // Verified, then served from the verified-token cache.
    assert_eq!(status(&gate, &old).await, StatusCode::OK);
    assert_eq!(status(&gate, &old).await, StatusCode::OK);
    // The IdP retires k1: once the gate's key cache (1 s) refreshes, the remembered token is verified again, and fails.
    *idp.jwks.lock().unwrap() = serde_json::to_string(&k2.jwks).unwrap();
    eventually(30, "the token of the retired key to be refused", || async {
        (status(&gate, &old).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(status(&gate, &token(&k2, "k2")).await, StatusCode::OK);
    gate.stop().await;
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let k1 = key("k1");
    let idp = Idp::start(serde_json::to_string(&k1.jwks).unwrap()).await;
    let upstream = Recorder::start(Behaviour::default()).await;
    let source = format!("jwks_url = \"http://{}/jwks\"", idp.addr);
    let toml = gate_toml(upstream.addr, &source, 300, 30).replace("[auth]\n", "[auth]\nleeway_secs = 0\n");
    let gate = GateHandle::start_toml(&toml).await;
    let mut claims = Keys::claims("alice", &[]);
    claims["exp"] = serde_json::json!(devkeys::now_secs() + 2);
    let short = devkeys::mint(&k1.private_pem, jsonwebtoken::Algorithm::RS256, Some("k1"), &claims).unwrap();
    assert_eq!(status(&gate, &short).await, StatusCode::OK);
    // Sent again and again: served from the cache while it is valid, refused from its expiry on.
    eventually(30, "the expired token to be refused", || async {
        (status(&gate, &short).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1, "the keys did not change: the refusal is the expiry");
    gate.stop().await;
}

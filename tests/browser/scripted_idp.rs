//! A scripted OpenID Connect provider for the Rust browser tests: discovery, an authorization endpoint that answers
//! at once with a code (no login page), and a token endpoint that checks the client secret, the redirect URI and
//! the PKCE verifier, then mints an ID token with the test signing key. It can be told to put a wrong `nonce` or
//! `aud` in the token (what a real IdP never does, and what the gate must refuse). The real-IdP tests (node
//! oidc-provider) are in tests/e2e/test_browser_signin.py.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "mlflow-gate";
pub const CLIENT_SECRET: &str = "s3cret-of-the-gate";

/// What the scripted IdP puts into the next ID tokens.
#[derive(Clone, Default)]
pub struct Script {
    /// Replace the nonce of the authorization request.
    pub nonce: Option<String>,
    /// Replace the audience (the client id).
    pub aud: Option<String>,
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    sub: String,
}

#[derive(Default)]
struct State {
    grants: HashMap<String, Grant>,
    script: Script,
    token_requests: usize,
    next_sub: String,
}

/// The running IdP.
pub struct ScriptedIdp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl ScriptedIdp {
    /// Starts it; ID tokens are signed with `pem` (RS256, kid `k1`) for `issuer`.
    pub async fn start(issuer: &str, pem: String) -> ScriptedIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::new(Mutex::new(State { next_sub: "alice".into(), ..State::default() }));
        let (issuer, pem) = (issuer.to_string(), Arc::new(pem));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, issuer, pem) = (shared.clone(), issuer.clone(), pem.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (state, issuer, pem) = (state.clone(), issuer.clone(), pem.clone());
                        async move { Ok::<_, Infallible>(serve(req, addr, &issuer, &pem, &state).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        ScriptedIdp { addr, state }
    }

    pub fn discovery_url(&self) -> String {
        format!("http://{}/.well-known/openid-configuration", self.addr)
    }

    pub fn script(&self, script: Script) {
        self.state.lock().unwrap().script = script;
    }

    /// Who signs in next.
    pub fn sign_in_as(&self, sub: &str) {
        self.state.lock().unwrap().next_sub = sub.to_string();
    }

    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }
}

fn reply(status: StatusCode, body: String, location: Option<String>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status).header("content-type", "application/json");
    if let Some(l) = location {
        r = r.header("location", l);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

async fn serve(
    req: Request<Incoming>,
    addr: SocketAddr,
    issuer: &str,
    pem: &str,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    match path.as_str() {
        "/.well-known/openid-configuration" => {
            let doc = serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("http://{addr}/authorize"),
                "token_endpoint": format!("http://{addr}/token"),
                "end_session_endpoint": format!("http://{addr}/logout"),
            });
            reply(StatusCode::OK, doc.to_string(), None)
        }
        "/authorize" => {
            let code = format!("code-{}", rand::random::<u64>());
            let mut s = state.lock().unwrap();
            let sub = s.next_sub.clone();
            s.grants.insert(
                code.clone(),
                Grant {
                    nonce: query["nonce"].clone(),
                    challenge: query["code_challenge"].clone(),
                    redirect_uri: query["redirect_uri"].clone(),
                    sub,
                },
            );
            let location = format!("{}?code={code}&state={}", query["redirect_uri"], query["state"]);
            reply(StatusCode::FOUND, String::new(), Some(location))
        }
        "/token" => token(req, issuer, pem, state).await,
        _ => reply(StatusCode::NOT_FOUND, "{}".into(), None),
    }
}

async fn token(req: Request<Incoming>, issuer: &str, pem: &str, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let basic = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let authorized = req.headers().get("authorization").is_some_and(|v| v == basic.as_str());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    let error = |e: &str| reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": e}).to_string(), None);
    if !authorized {
        return error("invalid_client");
    }
    // A code is used once.
    let Some(grant) = form.get("code").and_then(|c| s.grants.remove(c)) else { return error("invalid_grant") };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) != grant.challenge
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return error("invalid_grant");
    }
    let now = mlflow_gate::devkeys::now_secs();
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": grant.sub,
        "aud": s.script.aud.clone().unwrap_or_else(|| CLIENT_ID.into()),
        "nonce": s.script.nonce.clone().unwrap_or(grant.nonce),
        "groups": ["engineers"],
        "email": format!("{}@example.com", grant.sub),
        "at_hash": "dropped-by-the-gate",
        "iat": now,
        "exp": now + 300,
    });
    let id_token = mlflow_gate::devkeys::mint(pem, jsonwebtoken::Algorithm::RS256, Some("k1"), &claims).unwrap();
    let answer = serde_json::json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token});
    reply(StatusCode::OK, answer.to_string(), None)
}

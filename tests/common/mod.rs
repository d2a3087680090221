//! Test harness: a recording fake upstream (proves what reached "MLflow" and what did not), an in-process gate on
//! port 0 with a generated signing key, and small clients (hyper for ordinary requests, raw TCP for odd ones).
// clippy.toml's allow-unwrap-in-tests covers #[test] functions only: these helpers, shared by the integration
// tests, are test code too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod binary;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlflow_gate::config::Config;
use mlflow_gate::devkeys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "mlflow";

/// One request as the fake upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_len: u64,
}

/// How the fake upstream answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Delay before answering.
    pub delay: Option<Duration>,
    /// Serve this many bytes on GET .../big.bin (streamed in 1 MiB chunks).
    pub big_bytes: u64,
    /// Count bodies instead of keeping them.
    pub count_only: bool,
    /// Answer every GET with 500 (the gate's look-ups fail).
    pub fail_gets: bool,
    /// JSON answers by path (any method); other paths get `{}`.
    pub answers: Vec<(&'static str, &'static str)>,
    /// Paths whose GET answers 404 `RESOURCE_DOES_NOT_EXIST`, as MLflow answers a look-up of a missing object.
    pub missing: Vec<&'static str>,
}

/// A recording upstream on 127.0.0.1:0.
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Recorder {
    pub async fn start(behaviour: Behaviour) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => a.unwrap(),
                    _ = &mut rx => break,
                };
                let seen = seen2.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let behaviour = behaviour.clone();
                        async move { Ok::<_, Infallible>(record(req, seen, behaviour).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Recorder { addr, seen, _stop: tx }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Requests to `path` (any method), e.g. the mutation a test expects to be blocked.
    pub fn hits(&self, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.uri.split('?').next() == Some(path)).count()
    }

    /// Requests other than the gate's own GET look-ups.
    pub fn mutations(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.method != Method::GET).count()
    }

    /// The last request to `path`.
    pub fn last_to(&self, path: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.uri.split('?').next() == Some(path))
            .cloned()
            .expect("no request to that path")
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("upstream saw no request")
    }
}

async fn record(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    b: Behaviour,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let mut len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if !b.count_only {
                kept.extend_from_slice(&data);
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: Bytes::from(kept),
        body_len: len,
    });
    if let Some(d) = b.delay {
        tokio::time::sleep(d).await;
    }
    if b.fail_gets && parts.method == Method::GET {
        return Response::builder().status(500).body(Full::new(Bytes::from_static(b"boom")).boxed()).unwrap();
    }
    if parts.method == Method::GET && b.missing.contains(&parts.uri.path()) {
        let body = Full::new(Bytes::from_static(br#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"not found"}"#));
        return Response::builder().status(404).header("content-type", "application/json").body(body.boxed()).unwrap();
    }
    if let Some((_, answer)) = b.answers.iter().find(|(path, _)| *path == parts.uri.path()) {
        let body = Full::new(Bytes::from_static(answer.as_bytes())).boxed();
        return Response::builder().header("content-type", "application/json").body(body).unwrap();
    }
    if parts.method == Method::GET && parts.uri.path().ends_with("/big.bin") && b.big_bytes > 0 {
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let n = b.big_bytes / (1 << 20);
        let stream = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, Infallible>(hyper::body::Frame::data(chunk.clone()))),
        );
        let body = http_body_util::StreamBody::new(stream);
        return Response::builder().header("content-length", (n << 20).to_string()).body(BodyExt::boxed(body)).unwrap();
    }
    Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-hop")
        .header("x-upstream-hop", "secret-hop")
        .body(Full::new(Bytes::from_static(b"{}")).boxed())
        .unwrap()
}

/// A signing key in a temporary directory, and tokens signed with it.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let key = devkeys::generate(jsonwebtoken::Algorithm::RS256, "k1").unwrap();
        devkeys::write_dir(dir.path(), &key).unwrap();
        Keys { dir }
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub fn pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("signing-key.pem")).unwrap()
    }

    /// Standard valid claims for `sub` with `groups`.
    pub fn claims(sub: &str, groups: &[&str]) -> serde_json::Value {
        let now = devkeys::now_secs();
        serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "groups": groups, "iat": now, "exp": now + 600})
    }

    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.sign(&Keys::claims(sub, groups))
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        devkeys::mint(&self.pem(), jsonwebtoken::Algorithm::RS256, Some("k1"), claims).unwrap()
    }
}

/// The repository's `policies/` directory.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A config TOML for a gate in front of `upstream`.
pub fn config_toml(upstream: SocketAddr, jwks: &Path, policies: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[upstream]
url = "http://{upstream}"
timeout_secs = 2
connect_timeout_secs = 1

[auth]
jwks_min_refresh_secs = 1

[[auth.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_file = "{jwks}"

[policy]
dir = "{policies}"
"#,
        jwks = jwks.display(),
        policies = policies.display()
    )
}

/// A gate running in this process.
pub struct GateHandle {
    pub addr: SocketAddr,
    /// The admin listener's bound address, when the config has `[admin]` (listen on port 0).
    pub admin: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GateHandle {
    pub async fn start_toml(toml: &str) -> GateHandle {
        let config = Config::parse(toml, Path::new("test-gate.toml")).unwrap();
        GateHandle::start(config).await
    }

    pub async fn start(config: Config) -> GateHandle {
        let listener = TcpListener::bind(config.server.listen).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<mlflow_gate::Ready>();
        let on_ready = move |ready| {
            let _ = ready_tx.send(ready);
        };
        let task = tokio::spawn(async move {
            mlflow_gate::run(listener, config, on_ready, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let ready = ready_rx.await.expect("the gate failed to start");
        GateHandle { addr: ready.addr, admin: ready.admin, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The standard set-up: a recording upstream and a gate in front of it with the repository's policies.
pub async fn gate_with_recorder(behaviour: Behaviour) -> (GateHandle, Recorder, Keys) {
    let upstream = Recorder::start(behaviour).await;
    let keys = Keys::new();
    let gate = GateHandle::start_toml(&config_toml(upstream.addr, &keys.jwks_path(), &policies_dir(), "")).await;
    (gate, upstream, keys)
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }
}

/// A request for hyper's client, built by what it has:
/// `Req::post(gate.url(path)).token(&token).json(body).send().await`.
#[must_use]
pub struct Req {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    pub fn new(method: Method, url: impl Into<String>) -> Req {
        Req { method, url: url.into(), headers: Vec::new(), body: String::new() }
    }
    pub fn get(url: impl Into<String>) -> Req {
        Req::new(Method::GET, url)
    }
    pub fn post(url: impl Into<String>) -> Req {
        Req::new(Method::POST, url)
    }
    pub fn put(url: impl Into<String>) -> Req {
        Req::new(Method::PUT, url)
    }
    pub fn patch(url: impl Into<String>) -> Req {
        Req::new(Method::PATCH, url)
    }
    pub fn delete(url: impl Into<String>) -> Req {
        Req::new(Method::DELETE, url)
    }
    /// `Authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn maybe_token(self, token: Option<&str>) -> Req {
        match token {
            Some(t) => self.token(t),
            None => self,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn headers(self, headers: &[(&str, &str)]) -> Req {
        headers.iter().fold(self, |req, (k, v)| req.header(k, v))
    }
    pub fn body(mut self, body: impl Into<String>) -> Req {
        self.body = body.into();
        self
    }
    pub fn maybe_body(self, body: Option<&str>) -> Req {
        match body {
            Some(b) => self.body(b),
            None => self,
        }
    }
    /// The body, with `Content-Type: application/json`.
    pub fn json(self, body: impl Into<String>) -> Req {
        self.header("content-type", "application/json").body(body)
    }

    pub async fn send(self) -> Answer {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = Request::builder().method(self.method).uri(self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(self.body))).unwrap();
        let resp = client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }
}

/// Sends a request with hyper's client (the positional form of `Req`).
pub async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    Req::new(method, url).maybe_token(token).headers(headers).maybe_body(body).send().await
}

/// A port held for later: bound and not listening, so connections to it are refused and nothing else can take it
/// until `listen` makes it a listener (a peer that is down now and comes up later on the same address). Instead of
/// binding port 0, noting the port and releasing it, which another process may take in between.
pub struct ReservedPort(tokio::net::TcpSocket);

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        ReservedPort(socket)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    pub fn listen(self) -> TcpListener {
        self.0.listen(1024).unwrap()
    }
}

/// Polls `check` (every 10 ms) until it returns `Some`, and returns that; fails the test after `secs` seconds
/// naming `what`. The one way tests wait for something to happen.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends raw bytes and returns the raw response text (up to the connection's close or 5 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

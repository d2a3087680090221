//! Webhook delivery against a real HTTP receiver on 127.0.0.1:0: signatures, filters, retries, give-up, and
//! deliveries that survive a restart through the spool.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::ReservedPort;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlflow_gate::config::Config;
use mlflow_gate::webhooks::{Event, WebhookStats, Webhooks};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

const SECRET_ENV: &str = "MLFLOW_GATE_TEST_HOOK_SECRET";
const SECRET: &str = "s3cret-for-tests";
const AUTH_ENV: &str = "MLFLOW_GATE_TEST_HOOK_AUTH";
const AUTH: &str = "Bearer hook-token";

/// Sets the test's environment variables once, before any test reads them.
fn env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(SECRET_ENV, SECRET);
        std::env::set_var(AUTH_ENV, AUTH);
    });
}

/// One request as the receiver saw it, with the status it answered.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    status: u16,
}

impl Got {
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

type Answer = Arc<dyn Fn(usize) -> u16 + Send + Sync>;

/// A webhook receiver answering the n-th request (0-based) with `answer(n)`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(answer: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        Receiver::start_on(ReservedPort::new(), answer).await
    }

    async fn start_on(port: ReservedPort, answer: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        Receiver::serve(port, None, answer).await
    }

    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    async fn serve(
        port: ReservedPort,
        tls: Option<TlsAcceptor>,
        answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
    ) -> Receiver {
        let addr = port.addr();
        let listener = port.listen();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let (answer, count, seen): (Answer, _, _) = (Arc::new(answer), Arc::new(AtomicUsize::new(0)), got.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, count, seen, tls) = (answer.clone(), count.clone(), seen.clone(), tls.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (answer, count, seen) = (answer.clone(), count.clone(), seen.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let status = answer(count.fetch_add(1, Ordering::SeqCst));
                        let path = parts.uri.path().to_string();
                        seen.lock().unwrap().push(Got { path, headers: parts.headers, body, status });
                        let resp = Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok")));
                        Ok::<_, Infallible>(resp.unwrap())
                    }
                });
                conns.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Receiver { addr, got, task }
    }

    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// A gate config in `dir` with the given `[webhook_delivery]` extras and `[[webhooks]]` tables; short backoffs.
fn config(dir: &Path, delivery: &str, hooks: &str) -> Result<Config, String> {
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:5000\"\n\
         [[auth.issuers]]\nissuer = \"https://idp.test\"\naudiences = [\"mlflow\"]\nalgorithms = [\"RS256\"]\n\
         jwks_file = \"jwks.json\"\n[policy]\ndir = \"policies\"\n\
         [webhook_delivery]\nspool_dir = \"spool\"\ninitial_backoff_ms = 5\nmax_backoff_ms = 40\ntimeout_secs = 5\n\
         {delivery}\n{hooks}"
    );
    Config::parse(&text, &dir.join("gate.toml")).map_err(|e| e.to_string())
}

fn hook(url: &str, events: &[&str], extra: &str) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!("[[webhooks]]\nurl = \"{url}\"\nevents = [{}]\n{extra}\n", events.join(", "))
}

fn event(name: &str, model: Option<&str>, n: usize) -> Event {
    let mut fields = Map::new();
    fields.insert("version".into(), json!(n.to_string()));
    fields.insert("to_stage".into(), json!("Production"));
    Event {
        event: name.into(),
        model_name: model.map(Into::into),
        fields,
        principal: Some("alice".into()),
        decision_id: format!("d-{n}"),
    }
}

/// Polls `cond` until it holds; fails the test after a generous deadline.
async fn until(what: &str, webhooks: &Webhooks, cond: impl Fn(WebhookStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(webhooks.stats()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; stats {:?}", webhooks.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

/// HMAC-SHA256 written out from SHA-256 (RFC 2104), independent of the gate's implementation.
fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |x: u8| block.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn decision_ids(got: &[Got]) -> Vec<String> {
    got.iter().map(|g| g.json()["decision_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn each_event_arrives_once_per_matching_hook_signed_and_filtered() {
    env();
    let rx = Receiver::start(|_| 200).await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = [
        hook(
            &format!("http://{}/a", rx.addr),
            &["MODEL_VERSION_CREATED", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"],
            &format!("model_name = \"fraud\"\nsecret_env = \"{SECRET_ENV}\"\nauthorization_env = \"{AUTH_ENV}\""),
        ),
        hook(&format!("http://{}/b", rx.addr), &["MODEL_VERSION_CREATED", "POLICY_DENIED"], ""),
    ];
    let cfg = config(dir.path(), "", &hooks.concat()).unwrap();
    let webhooks = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    webhooks.emit(event("MODEL_VERSION_CREATED", Some("fraud"), 1)); // a, b
    webhooks.emit(event("MODEL_VERSION_CREATED", Some("other"), 2)); // b
    webhooks.emit(event("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", Some("fraud"), 3)); // a
    webhooks.emit(event("POLICY_DENIED", None, 4)); // b
    webhooks.emit(event("COMMENT_CREATED", Some("fraud"), 5)); // nobody
    until("five deliveries", &webhooks, |s| s.delivered == 5 && s.pending == 0).await;
    webhooks.shutdown().await;

    let got = rx.got();
    assert_eq!(webhooks.stats(), WebhookStats { delivered: 5, failed_attempts: 0, dropped: 0, pending: 0 });
    assert_eq!(got.len(), 5, "exactly once each: {got:?}");
    let (a, b): (Vec<Got>, Vec<Got>) = got.into_iter().partition(|g| g.path == "/a");
    let sorted = |g: &[Got]| decision_ids(g).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(sorted(&a), BTreeSet::from(["d-1".to_string(), "d-3".to_string()]));
    assert_eq!(sorted(&b), BTreeSet::from(["d-1".to_string(), "d-2".to_string(), "d-4".to_string()]));
    let hook_a = cfg.webhooks.first().unwrap();
    for g in &a {
        let ts = g.header("x-mlflow-gate-timestamp").unwrap();
        assert!(ts.parse::<u64>().unwrap() + 1 >= started.as_secs(), "timestamp {ts}");
        let id = g.header("x-mlflow-gate-delivery-id").unwrap();
        assert_eq!(g.header("x-databricks-signature"), Some(hmac_hex(SECRET.as_bytes(), &g.body).as_str()));
        let covered = [format!("{id}.{ts}.").as_bytes(), &g.body].concat();
        let v1 = format!("v1,{}", hmac_hex(SECRET.as_bytes(), &covered));
        assert_eq!(g.header("x-mlflow-gate-signature"), Some(v1.as_str()));
        assert_eq!(g.header("authorization"), Some(AUTH));
        assert_eq!(g.header("content-type"), Some("application/json"));
        let body = g.json();
        assert_eq!(body["webhook_id"], json!(hook_a.id));
        assert_eq!(body["model_name"], json!("fraud"));
        assert_eq!(body["principal"], json!("alice"));
        assert!(body["event_timestamp"].as_u64().unwrap() >= started.as_millis() as u64);
        let n = body["decision_id"].as_str().unwrap().trim_start_matches("d-").to_string();
        assert_eq!(body["version"], json!(n));
    }
    let first_a = a.iter().find(|g| g.json()["decision_id"] == "d-3").unwrap().json();
    assert_eq!(first_a["event"], json!("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"));
    assert_eq!(first_a["to_stage"], json!("Production"));
    for g in &b {
        assert!(g.header("x-databricks-signature").is_none() && g.header("x-mlflow-gate-signature").is_none());
        assert!(g.header("authorization").is_none() && g.header("x-mlflow-gate-delivery-id").is_some());
    }
    let denied = b.iter().find(|g| g.json()["event"] == "POLICY_DENIED").unwrap().json();
    assert!(denied.get("model_name").is_none(), "{denied}");
    assert_eq!(spooled(dir.path()), 0, "delivered files leave the spool");
}

#[tokio::test]
async fn a_receiver_failing_three_times_still_gets_every_event_exactly_once() {
    let rx = Receiver::start(|n| if n < 3 { 500 } else { 200 }).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &hook(&format!("http://{}/r", rx.addr), &["MODEL_VERSION_CREATED"], "")).unwrap();
    let webhooks = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    for n in 0..5 {
        webhooks.emit(event("MODEL_VERSION_CREATED", Some("m"), n));
    }
    until("five deliveries", &webhooks, |s| s.delivered == 5 && s.pending == 0).await;
    webhooks.shutdown().await;

    assert_eq!(webhooks.stats(), WebhookStats { delivered: 5, failed_attempts: 3, dropped: 0, pending: 0 });
    let got = rx.got();
    let mut acked: BTreeMap<String, Vec<&Got>> = BTreeMap::new();
    for g in got.iter().filter(|g| g.status == 200) {
        acked.entry(g.header("x-mlflow-gate-delivery-id").unwrap().to_string()).or_default().push(g);
    }
    assert_eq!(acked.len(), 5);
    let once: Vec<Got> = acked.values().map(|v| (*v.first().unwrap()).clone()).collect();
    let ids: BTreeSet<String> = decision_ids(&once).into_iter().collect();
    assert_eq!(ids, (0..5).map(|n| format!("d-{n}")).collect());
    for g in got.iter().filter(|g| g.status == 500) {
        let id = g.header("x-mlflow-gate-delivery-id").unwrap();
        let ok = acked.get(id).and_then(|v| v.first()).expect("a failed delivery was retried to success");
        assert_eq!(ok.body, g.body, "a retry sends the same bytes");
    }
    assert_eq!(spooled(dir.path()), 0);
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart_in_order() {
    let dead = ReservedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let hooks = hook(&format!("http://{}/r", dead.addr()), &["MODEL_VERSION_TAG_SET"], "");
    let cfg = config(dir.path(), "max_attempts = 100000\nconcurrency = 1", &hooks).unwrap();
    let first = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    for n in 0..3 {
        first.emit(event("MODEL_VERSION_TAG_SET", Some("m"), n));
    }
    until("failed attempts on a dead port", &first, |s| s.failed_attempts >= 3).await;
    first.shutdown().await;
    first.emit(event("MODEL_VERSION_TAG_SET", Some("m"), 3)); // after shutdown: spooled only
    let s = first.stats();
    assert_eq!((s.delivered, s.dropped, s.pending), (0, 0, 4));
    assert_eq!(spooled(dir.path()), 4);

    let rx = Receiver::start_on(dead, |_| 200).await;
    let second = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    until("the spooled deliveries", &second, |s| s.delivered == 4 && s.pending == 0).await;
    second.shutdown().await;
    assert_eq!(decision_ids(&rx.got()), ["d-0", "d-1", "d-2", "d-3"], "once each, in emit order");
    assert_eq!(spooled(dir.path()), 0);
}

#[tokio::test]
async fn a_client_error_gives_up_without_retrying() {
    let rx = Receiver::start(|_| 400).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &hook(&format!("http://{}/r", rx.addr), &["COMMENT_CREATED"], "")).unwrap();
    let webhooks = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    webhooks.emit(event("COMMENT_CREATED", Some("m"), 0));
    until("the delivery to be dropped", &webhooks, |s| s.dropped == 1).await;
    webhooks.shutdown().await;
    assert_eq!(webhooks.stats(), WebhookStats { delivered: 0, failed_attempts: 1, dropped: 1, pending: 0 });
    assert_eq!(rx.got().len(), 1, "no retry after a 4xx");
    assert_eq!(spooled(dir.path()), 0, "a dropped delivery leaves the spool");
}

#[tokio::test]
async fn start_fails_naming_the_key_when_the_secret_variable_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "secret_env = \"MLFLOW_GATE_TEST_SURELY_UNSET_7F3A\"";
    let cfg = config(dir.path(), "", &hook("https://hooks.example/x", &["POLICY_DENIED"], extra)).unwrap();
    let err = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.err().map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(err.contains("webhooks[0].secret_env") && err.contains("MLFLOW_GATE_TEST_SURELY_UNSET_7F3A"), "{err}");
    assert!(!dir.path().join("spool").exists(), "nothing is created when start fails");
}

#[tokio::test]
async fn an_unknown_event_name_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = [hook("http://127.0.0.1:9/x", &["POLICY_DENIED"], ""), hook("http://127.0.0.1:9/y", &["DELETED"], "")];
    let err = config(dir.path(), "", &hooks.concat()).err().unwrap_or_default();
    assert!(err.contains("gate.toml: webhooks[1].events:") && err.contains("\"DELETED\""), "{err}");
}

#[tokio::test]
async fn without_webhooks_emit_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", "").unwrap();
    let webhooks = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    webhooks.emit(event("POLICY_DENIED", None, 0));
    webhooks.shutdown().await;
    assert_eq!(webhooks.stats(), WebhookStats::default());
    assert!(!dir.path().join("spool").exists());
}

/// A self-signed certificate for 127.0.0.1: its PEM and a TLS acceptor serving it.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn self_signed() -> (String, TlsAcceptor) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (ck.cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn https_hooks_trust_their_ca_file_or_skip_verification_and_refuse_an_unknown_certificate() {
    let (pem, acceptor) = self_signed();
    let rx = Receiver::serve(ReservedPort::new(), Some(acceptor), |_| 200).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    let url = |p: &str| format!("https://{}/{p}", rx.addr);
    let hooks = [
        hook(&url("ca"), &["MODEL_VERSION_CREATED"], "ca_file = \"ca.pem\""),
        hook(&url("noverify"), &["MODEL_VERSION_CREATED"], "verify_tls = false"),
        hook(&url("untrusted"), &["MODEL_VERSION_CREATED"], ""),
    ];
    let cfg = config(dir.path(), "max_attempts = 2", &hooks.concat()).unwrap();
    let webhooks = Webhooks::start(&cfg.webhook_delivery, &cfg.webhooks).await.unwrap();
    webhooks.emit(event("MODEL_VERSION_CREATED", Some("m"), 0));
    until("two deliveries and one give-up", &webhooks, |s| s.delivered == 2 && s.dropped == 1).await;
    webhooks.shutdown().await;
    assert_eq!(webhooks.stats(), WebhookStats { delivered: 2, failed_attempts: 2, dropped: 1, pending: 0 });
    let paths: BTreeSet<String> = rx.got().into_iter().map(|g| g.path).collect();
    assert_eq!(paths, BTreeSet::from(["/ca".to_string(), "/noverify".to_string()]));
}

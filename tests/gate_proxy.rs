//! Forwarding at the gate: what the upstream receives for permitted requests, what it never receives for denied or
//! ambiguous ones, and the errors a client sees when the upstream fails.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;

const TRANSITION: &str = "/api/2.0/mlflow/model-versions/transition-stage";

#[tokio::test]
async fn policy_denial_is_403_with_reasons_and_nothing_reaches_mlflow() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let body = r#"{"name":"fraud","version":"1","stage":"production","archive_existing_versions":true}"#;
    let a = Req::post(gate.url(TRANSITION)).token(&keys.token("alice", &["ml-senior"])).json(body).send().await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error_code"], "PERMISSION_DENIED");
    assert!(a.message().contains("only the CI service account may transition to Production"), "{}", a.message());
    assert_eq!(upstream.hits(TRANSITION), 0);
    assert_eq!(upstream.mutations(), 0, "only the gate's own look-ups may reach MLflow before a decision");
    // The same principal's permitted mutation does reach MLflow.
    let create = "/api/2.0/mlflow/registered-models/create";
    let ok = Req::post(gate.url(create))
        .token(&keys.token("alice", &["ml-senior"]))
        .json(r#"{"name":"fraud"}"#)
        .send()
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(upstream.hits(create), 1);
    gate.stop().await;
}

#[tokio::test]
async fn unknown_mutating_route_is_denied_without_reaching_mlflow() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let a = Req::post(gate.url("/api/2.0/mlflow/registered-models/obliterate"))
        .token(&keys.token("alice", &[]))
        .json("{}")
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.message().contains("not a route mlflow-gate knows"), "{}", a.message());
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn forwarded_request_carries_no_credentials_and_gate_forwarding_headers() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let headers = [
        ("content-type", "application/json"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-mlflow-assistant-delegation", "forged"),
        ("x-mlflow-authorization", "Basic Zm9vOmJhcg=="),
        ("host", "gate.example.com"),
    ];
    let a = Req::post(gate.url("/api/2.0/mlflow/registered-models/create"))
        .token(&keys.token("alice", &[]))
        .headers(&headers)
        .body(r#"{"name": "m1"}"#)
        .send()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = upstream.last_to("/api/2.0/mlflow/registered-models/create");
    for gone in ["authorization", "x-mlflow-assistant-delegation", "x-mlflow-authorization"] {
        assert!(!seen.headers.contains_key(gone), "{gone} reached MLflow");
    }
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "the gate's own peer address, not the client's claim");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "gate.example.com");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
    let forwarded: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        forwarded,
        serde_json::json!({"name": "m1", "tags": [{"key": "mlflow_gate.created_by", "value": "alice"}]}),
        "the evaluated body, re-serialised, plus the gate's creator stamp"
    );
    // Hop-by-hop headers of the upstream response do not reach the client.
    assert!(!a.headers.contains_key("x-upstream-hop"));
    assert!(a.headers.contains_key("x-mlflow-gate-request-id"));
    gate.stop().await;
}

#[tokio::test]
async fn chunked_json_body_is_forwarded_with_content_length() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let body = r#"{"name":"m2"}"#;
    let req = format!(
        "POST /api/2.0/mlflow/registered-models/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        keys.token("alice", &[]),
        body.len()
    );
    let resp = raw(gate.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = upstream.last_to("/api/2.0/mlflow/registered-models/create");
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string().as_str());
    assert!(!seen.headers.contains_key("transfer-encoding"));
    let forwarded: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(forwarded["name"], "m2");
    gate.stop().await;
}

#[tokio::test]
async fn ambiguous_requests_are_400_and_never_forwarded() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let t = keys.token("ci", &["mlflow-ci"]);
    let json = [("content-type", "application/json")];
    let dup = Req::post(gate.url(TRANSITION))
        .token(&t)
        .headers(&json)
        .body(r#"{"name":"m","version":"1","stage":"Staging","stage":"Production"}"#)
        .send()
        .await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert!(dup.message().contains("duplicate key"), "{}", dup.message());
    let double = Req::post(gate.url(TRANSITION)).token(&t).headers(&json).body(r#""{\"name\":\"m\"}""#).send().await;
    assert_eq!(double.status, StatusCode::BAD_REQUEST);
    let get_body =
        Req::get(gate.url("/api/2.0/mlflow/registered-models/get")).token(&t).body(r#"{"name":"m"}"#).send().await;
    assert_eq!(get_body.status, StatusCode::BAD_REQUEST);
    for path in [
        "//api/2.0/mlflow/registered-models/create",
        "/api/2.0/mlflow/x/../registered-models/create",
        "/api/2.0/mlflow/registered-models/create;x",
        "/api/2.0/mlflow/registered-models%252Fcreate",
    ] {
        let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let resp = raw(gate.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
    }
    let abs = format!("POST http://evil/api/2.0/mlflow/registered-models/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    assert!(raw(gate.addr, abs.as_bytes()).await.starts_with("HTTP/1.1 400"));
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn percent_encoded_path_reaches_mlflow_as_the_path_the_policy_saw() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let body = r#"{"name":"m","version":"1","stage":"Production"}"#;
    let req = format!(
        "POST /api/2.0/mlflow/model-versions%2Ftransition-stage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        keys.token("alice", &[]),
        body.len()
    );
    let resp = raw(gate.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "the encoded spelling must be denied like the plain one: {resp}");
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let upstream = Recorder::start(Behaviour::default()).await;
    let keys = Keys::new();
    let gate = GateHandle::start_toml(&config_toml(
        upstream.addr,
        &keys.jwks_path(),
        &policies_dir(),
        "max_body_bytes = 1024",
    ))
    .await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2000));
    let a = Req::post(gate.url("/api/2.0/mlflow/registered-models/create"))
        .token(&keys.token("a", &[]))
        .json(&big)
        .send()
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error_code"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let keys = Keys::new();
    let closed = ReservedPort::new();
    let gate = GateHandle::start_toml(&config_toml(closed.addr(), &keys.jwks_path(), &policies_dir(), "")).await;
    let a = Req::get(gate.url("/api/2.0/mlflow/experiments/search")).token(&keys.token("a", &[])).send().await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.json()["error_code"], "TEMPORARILY_UNAVAILABLE");
    gate.stop().await;

    let slow = Recorder::start(Behaviour { delay: Some(Duration::from_secs(4)), ..Behaviour::default() }).await;
    let gate = GateHandle::start_toml(&config_toml(slow.addr, &keys.jwks_path(), &policies_dir(), "")).await;
    let a = Req::get(gate.url("/api/2.0/mlflow/experiments/search")).token(&keys.token("a", &[])).send().await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.json()["error_code"], "DEADLINE_EXCEEDED");
    gate.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let req = http::Request::get(gate.url("/api/2.0/mlflow/experiments/search?max_results=1"))
        .header("authorization", format!("Bearer {}", keys.token("a", &[])))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.last().uri, "/api/2.0/mlflow/experiments/search?max_results=1");
    gate.stop().await;
}

#[tokio::test]
async fn expect_100_continue_with_a_denial_never_reads_or_forwards_the_body() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let req = format!(
        "POST {TRANSITION} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}x\r\nContent-Type: application/json\r\nContent-Length: 50\r\nExpect: 100-continue\r\n\r\n",
        keys.token("a", &[])
    );
    let resp = raw(gate.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn failed_registry_lookup_denies_with_503_and_mutates_nothing() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour { fail_gets: true, ..Behaviour::default() }).await;
    let body = r#"{"name":"fraud","version":"1","stage":"Staging"}"#;
    let a = Req::post(gate.url(TRANSITION)).token(&keys.token("ci", &["mlflow-ci"])).json(body).send().await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error_code"], "TEMPORARILY_UNAVAILABLE");
    assert!(a.message().contains("looking up"), "{}", a.message());
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}

/// What MLflow answers when a request names an object that does not exist, the gate answers too: 404
/// `RESOURCE_DOES_NOT_EXIST` with MLflow's message, not a policy denial, and nothing is forwarded. (A write whose
/// rules read no registry fact, such as a version tag under the default bundle, is not looked up: MLflow itself
/// answers its 404.)
#[tokio::test]
async fn a_missing_version_model_or_run_is_404_as_mlflow_answers_and_nothing_is_forwarded() {
    let versions = Behaviour { missing: vec!["/api/2.0/mlflow/model-versions/get"], ..Behaviour::default() };
    let models = Behaviour { missing: vec!["/api/2.0/mlflow/registered-models/get"], ..Behaviour::default() };
    let runs = Behaviour { missing: vec!["/api/2.0/mlflow/runs/get"], ..Behaviour::default() };
    let upload = "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=r1&path=model%2FMLmodel";
    let cases = [
        (
            versions.clone(),
            "POST",
            TRANSITION,
            r#"{"name":"fraud","version":"9","stage":"Staging"}"#,
            "Model Version (name=fraud, version=9) not found",
        ),
        (
            versions.clone(),
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            r#"{"name":"fraud","alias":"champion","version":"9"}"#,
            "Model Version (name=fraud, version=9) not found",
        ),
        (
            versions,
            "POST",
            "/api/2.0/mlflow/transition-requests/create",
            r#"{"name":"fraud","version":"9","stage":"Staging"}"#,
            "Model Version (name=fraud, version=9) not found",
        ),
        (
            models.clone(),
            "POST",
            TRANSITION,
            r#"{"name":"fraud","version":"1","stage":"Staging"}"#,
            "Registered Model with name=fraud not found",
        ),
        (
            models,
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            r#"{"name":"fraud","source":"runs:/r1/model"}"#,
            "Registered Model with name=fraud not found",
        ),
        (runs.clone(), "POST", upload, "file contents", "Run with id=r1 not found"),
        (
            runs,
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            r#"{"run_id":"r1","path":"MLmodel"}"#,
            "Run with id=r1 not found",
        ),
        (
            Behaviour { missing: vec!["/api/2.0/mlflow/logged-models/m1"], ..Behaviour::default() },
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            r#"{"model_id":"m1","path":"MLmodel"}"#,
            "Logged model with ID 'm1' not found.",
        ),
    ];
    let keys = Keys::new();
    for (behaviour, method, path, body, says) in cases {
        let upstream = Recorder::start(behaviour).await;
        let config = config_toml(upstream.addr, &keys.jwks_path(), &policies_dir(), "");
        let gate = GateHandle::start_toml(&config).await;
        let a = Req::new(method.parse().unwrap(), gate.url(path))
            .token(&keys.token("ci", &["mlflow-ci"]))
            .json(body)
            .send()
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}: {}", a.message());
        assert_eq!(a.json()["error_code"], "RESOURCE_DOES_NOT_EXIST", "{method} {path}");
        assert!(a.message().contains(says), "{method} {path}: {}", a.message());
        assert_eq!(upstream.mutations(), 0, "{method} {path}");
        gate.stop().await;
    }
}

/// Creating what does not exist yet is not "missing": a new registered model and a new version are decided and
/// forwarded as before.
#[tokio::test]
async fn creating_a_model_or_version_is_not_a_missing_object() {
    let behaviour = Behaviour { missing: vec!["/api/2.0/mlflow/model-versions/get"], ..Behaviour::default() };
    let (gate, upstream, keys) = gate_with_recorder(behaviour).await;
    let alice = keys.token("alice", &[]);
    let create = "/api/2.0/mlflow/model-versions/create";
    let a =
        Req::post(gate.url(create)).token(&alice).json(r#"{"name":"fraud","source":"runs:/r1/model"}"#).send().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.message());
    assert_eq!(upstream.hits(create), 1);
    gate.stop().await;

    let behaviour = Behaviour { missing: vec!["/api/2.0/mlflow/registered-models/get"], ..Behaviour::default() };
    let (gate, upstream, keys) = gate_with_recorder(behaviour).await;
    let create = "/api/2.0/mlflow/registered-models/create";
    let a = Req::post(gate.url(create)).token(&keys.token("alice", &[])).json(r#"{"name":"fraud"}"#).send().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.message());
    assert_eq!(upstream.hits(create), 1);
    gate.stop().await;
}

/// An upstream that answers the first request of every connection (keep-alive) and closes the connection when a
/// second request arrives on it, unanswered: a pooled connection that fails after the request was written.
async fn one_request_per_connection_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = Vec::new();
                let mut requests = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        requests += 1;
                        if requests > 1 {
                            return; // dropped: the connection closes with the request unanswered
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = "{}";
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn a_read_on_a_pooled_connection_that_fails_is_sent_again_on_a_fresh_one() {
    let (addr, answered) = one_request_per_connection_upstream().await;
    let keys = Keys::new();
    let gate = GateHandle::start_toml(&config_toml(addr, &keys.jwks_path(), &policies_dir(), "")).await;
    for i in 0..4 {
        let a = Req::get(gate.url("/health")).send().await;
        assert_eq!(a.status, StatusCode::OK, "read {i}: {}", a.message());
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 4);
    // A write is never sent twice: MLflow may have applied it before the connection failed.
    let post = Req::post(gate.url("/api/2.0/mlflow/experiments/create"))
        .token(&keys.token("alice", &[]))
        .json(r#"{"name":"x"}"#)
        .send()
        .await;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY, "{}", post.message());
    gate.stop().await;
}

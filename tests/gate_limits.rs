//! Body classes and capacity limits, in process against a recording upstream: public routes take no body, reads
//! take small bodies, GraphQL is checked before MLflow parses it, and the gate sheds load with 503 (MLflow's error
//! JSON, Retry-After) when its request, buffer or connection caps are reached. Each deny asserts that nothing
//! reached the upstream.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gate_with(extra_server: &str, behaviour: Behaviour) -> (GateHandle, Recorder, Keys) {
    let upstream = Recorder::start(behaviour).await;
    let keys = Keys::new();
    let toml = config_toml(upstream.addr, &keys.jwks_path(), &policies_dir(), extra_server);
    (GateHandle::start_toml(&toml).await, upstream, keys)
}

/// Reads what the gate answers on `stream` until it closes the connection (at most 5 s).
async fn answer_on(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn public_routes_with_a_body_are_refused_unread_and_never_forwarded() {
    let (gate, upstream, _keys) = gate_with("", Behaviour::default()).await;
    // The attack of the issue: a 400 MiB body announced on `GET /`. Only the first KiB is ever sent; the gate
    // answers without waiting for the rest.
    for head in [
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 419430400\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
        "OPTIONS /api/2.0/mlflow/runs/search HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\nContent-Length: 419430400\r\n\r\n",
        "GET /static-files/app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 419430400\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(gate.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'x'; 1024]).await.unwrap();
        let answer = answer_on(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains("takes no request body"), "{answer}");
    }
    assert_eq!(upstream.count(), 0, "nothing reached MLflow");
    // Without a body, the public routes are forwarded as before.
    assert_eq!(Req::get(gate.url("/health")).send().await.status, StatusCode::OK);
    assert_eq!(upstream.hits("/health"), 1);
    gate.stop().await;
}

#[tokio::test]
async fn graphql_get_with_a_body_is_refused_and_deep_or_large_queries_never_reach_mlflow() {
    let (gate, upstream, keys) = gate_with("", Behaviour::default()).await;
    let token = keys.token("alice", &[]);
    let url = gate.url("/graphql");
    let query = |q: &str| serde_json::json!({"query": q}).to_string();
    let get = Req::get(&url).token(&token).body(query("{ test(inputString: \"x\") { output } }")).send().await;
    assert_eq!(get.status, StatusCode::BAD_REQUEST, "{}", get.message());
    assert!(get.message().contains("GET requests with a body are refused"), "{}", get.message());

    let mut deep = String::from("query Q ");
    for i in 0..11 {
        deep.push_str(&format!("{{ f{i} "));
    }
    deep.push_str(&"}".repeat(11));
    let refused = Req::post(&url).token(&token).body(query(&deep)).send().await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error_code"], "INVALID_PARAMETER_VALUE");
    assert!(refused.message().contains("levels deep"), "{}", refused.message());

    let aliases: Vec<String> = (0..11).map(|i| format!("a{i}: test(inputString: \"x\") {{ output }}")).collect();
    let refused = Req::post(&url).token(&token).body(query(&format!("{{ {} }}", aliases.join(" ")))).send().await;
    assert_eq!(refused.json()["error_code"], "INVALID_PARAMETER_VALUE", "{}", refused.message());

    // The 2.7 MB query of the issue is refused by the body limit before it is even parsed.
    let huge = query(&format!("{{ test(inputString: \"{}\") {{ output }} }}", "x".repeat(2_700_000)));
    let refused = Req::post(&url).token(&token).body(&huge).send().await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(upstream.hits("/graphql"), 0, "no GraphQL request reached MLflow");

    let ok = Req::post(&url).token(&token).body(query("{ test(inputString: \"x\") { output } }")).send().await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.message());
    assert_eq!(upstream.hits("/graphql"), 1);
    gate.stop().await;
}

#[tokio::test]
async fn search_bodies_get_the_small_limit_and_writes_the_large_one() {
    let (gate, upstream, keys) = gate_with("", Behaviour::default()).await;
    let token = keys.token("alice", &[]);
    let filler = "x".repeat(70 * 1024);
    let body = serde_json::json!({"experiment_ids": ["1"], "filter": filler}).to_string();
    let search = Req::post(gate.url("/api/2.0/mlflow/runs/search")).token(&token).body(&body).send().await;
    assert_eq!(search.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", search.message());
    assert_eq!(search.json()["error_code"], "REQUEST_LIMIT_EXCEEDED");
    assert!(search.message().contains("65536"), "{}", search.message());
    assert_eq!(upstream.hits("/api/2.0/mlflow/runs/search"), 0);
    // The same size is within a write's limit (whatever the policy then decides).
    let body = serde_json::json!({"name": "exp", "tags": [{"key": "note", "value": filler}]}).to_string();
    let create = Req::post(gate.url("/api/2.0/mlflow/experiments/create")).token(&token).body(&body).send().await;
    assert_ne!(create.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", create.message());
    gate.stop().await;
}

#[tokio::test]
async fn requests_over_the_concurrency_cap_get_503_with_retry_after() {
    let slow = Behaviour { delay: Some(Duration::from_secs(1)), ..Behaviour::default() };
    let (gate, upstream, _keys) = gate_with("max_concurrent_requests = 1", slow).await;
    let url = gate.url("/health");
    let first = tokio::spawn(async move { Req::get(&url).send().await });
    eventually(10, "the first request to reach the upstream", || async { (upstream.count() == 1).then_some(()) }).await;
    let shed = Req::get(gate.url("/version")).send().await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.json()["error_code"], "TEMPORARILY_UNAVAILABLE");
    assert!(shed.message().contains("server.max_concurrent_requests"), "{}", shed.message());
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(upstream.hits("/version"), 0);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // The slot is back once the first response has been sent.
    assert_eq!(Req::get(gate.url("/version")).send().await.status, StatusCode::OK);
    gate.stop().await;
}

#[tokio::test]
async fn bodies_over_the_buffer_budget_get_503_and_stalled_bodies_408() {
    let (gate, upstream, keys) =
        gate_with("max_buffered_body_bytes = 100000\nbody_idle_timeout_secs = 1", Behaviour::default()).await;
    let token = keys.token("alice", &[]);
    let head = |len: usize| {
        format!(
            "POST /api/2.0/mlflow/runs/log-batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Two clients send 60 kB each of a 1 MB body and stall: together they exceed the 100 kB budget, so one is shed
    // at once (whichever the gate reads second), and the other holds its bytes until the idle timeout ends it.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        s.write_all(head(1_000_000).as_bytes()).await.unwrap();
        s.write_all(&[b' '; 60_000]).await.unwrap();
        stalled.push(s);
    }
    let mut answers = Vec::new();
    for s in &mut stalled {
        answers.push(answer_on(s).await);
    }
    answers.sort();
    let [timed_out, shed] = &answers[..] else { panic!("{answers:?}") };
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");
    assert!(shed.contains("TEMPORARILY_UNAVAILABLE") && shed.contains("server.max_buffered_body_bytes"), "{shed}");
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(timed_out.contains("server.body_idle_timeout_secs"), "{timed_out}");
    // Both sets of bytes are released: a body of the same size is read in full now.
    let mut third = TcpStream::connect(gate.addr).await.unwrap();
    third.write_all(head(50_000).as_bytes()).await.unwrap();
    third.write_all(&[b' '; 50_000]).await.unwrap();
    let answer = answer_on(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "spaces are not JSON, but the body was read: {answer}");
    assert_eq!(upstream.hits("/api/2.0/mlflow/runs/log-batch"), 0);
    gate.stop().await;
}

#[tokio::test]
async fn a_stalled_otlp_upload_ends_with_408() {
    let (gate, _upstream, keys) = gate_with("body_idle_timeout_secs = 1", Behaviour::default()).await;
    let token = keys.token("alice", &[]);
    let mut s = TcpStream::connect(gate.addr).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[0u8; 10_000]).await.unwrap();
    let answer = answer_on(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_idle_timeout_secs"), "{answer}");
    gate.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_idle_ones_are_closed() {
    let (gate, _upstream, _keys) = gate_with("max_connections = 2\nidle_timeout_secs = 1", Behaviour::default()).await;
    let first = TcpStream::connect(gate.addr).await.unwrap();
    let mut second = TcpStream::connect(gate.addr).await.unwrap();
    second.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut third = TcpStream::connect(gate.addr).await.unwrap();
    let answer = answer_on(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("server.max_connections") && answer.contains("retry-after"), "{answer}");
    // The idle connections are closed by the idle timeout, which frees their places.
    let answer = answer_on(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(first);
    eventually(10, "a place freed by the idle timeout", || async {
        let mut s = TcpStream::connect(gate.addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        answer_on(&mut s).await.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    gate.stop().await;
}

//! Benchmark: what the gate adds to a request, as ratios against a baseline measured in the same run.
//!
//! `cargo run --release --example proxy_overhead [-- ROUNDS]`
//!
//! An in-process upstream answers `{}` instantly. The same requests are sent, sequentially over one keep-alive
//! connection, (a) straight to the upstream, (b) through the gate as an authenticated read, (c) through the gate as
//! a registry mutation (look-ups, policy evaluation, stamping). Medians and p99 are printed with the ratio to (a).
//! The machines are shared and noisy: compare the ratios, not the absolute figures, and only within one run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlflow_gate::devkeys;

async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

struct Stats {
    median: Duration,
    p99: Duration,
}

async fn measure(rounds: usize, mut send: impl AsyncFnMut() -> u16) -> Stats {
    for _ in 0..rounds / 10 {
        assert_eq!(send().await, 200);
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(send().await, 200);
        times.push(t.elapsed());
    }
    times.sort();
    Stats { median: times[times.len() / 2], p99: times[times.len() * 99 / 100] }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = devkeys::generate(jsonwebtoken::Algorithm::RS256, "k1").unwrap();
    devkeys::write_dir(dir.path(), &key).unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n[[auth.issuers]]\nissuer = \"https://idp.bench\"\naudiences = [\"mlflow\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n[policy]\ndir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n",
        dir.path().join("jwks.json").display(),
        policies.display()
    );
    let config = mlflow_gate::config::Config::parse(&toml, Path::new("bench.toml")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate = listener.local_addr().unwrap();
    tokio::spawn(mlflow_gate::serve(listener, config, std::future::pending()));
    let now = devkeys::now_secs();
    let claims = serde_json::json!({"iss": "https://idp.bench", "aud": "mlflow", "sub": "bench", "exp": now + 3600});
    let token = devkeys::mint(&key.private_pem, jsonwebtoken::Algorithm::RS256, Some("k1"), &claims).unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let get = |addr: std::net::SocketAddr, auth: bool| {
        let client = client.clone();
        let token = token.clone();
        async move || {
            let mut req = http::Request::get(format!("http://{addr}/api/2.0/mlflow/experiments/get?experiment_id=1"));
            if auth {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let resp = client.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
    };
    let create = {
        let client = client.clone();
        let token = token.clone();
        async move || {
            let req = http::Request::post(format!("http://{gate}/api/2.0/mlflow/registered-models/set-tag"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(br#"{"name":"fraud-detector","key":"team","value":"risk"}"#)))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
    };
    let direct = measure(rounds, get(up, false)).await;
    let read = measure(rounds, get(gate, true)).await;
    let mutation = measure(rounds, create).await;
    let ratio = |s: &Stats| s.median.as_secs_f64() / direct.median.as_secs_f64();
    println!("rounds per case: {rounds} (sequential, one keep-alive connection)");
    println!("{:<44} {:>10} {:>10} {:>8}", "case", "median", "p99", "ratio");
    for (name, s) in [
        ("direct to the upstream (baseline)", &direct),
        ("through the gate: authenticated read", &read),
        ("through the gate: registry mutation", &mutation),
    ] {
        println!(
            "{name:<44} {:>8.1}us {:>8.1}us {:>7.2}x",
            s.median.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            ratio(s)
        );
    }
    let metrics = client
        .request(http::Request::get(format!("http://{admin}/metrics")).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&metrics);
    let value = |name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    };
    for phase in ["request", "auth", "policy", "upstream"] {
        let sum = value(&format!("mlflow_gate_{phase}_duration_seconds_sum "));
        let count = value(&format!("mlflow_gate_{phase}_duration_seconds_count "));
        println!("gate phase {phase:<9} mean {:>8.1}us over {count} requests", sum / count.max(1.0) * 1e6);
    }
    println!(
        "added by the gate (median): read {:.1}us, mutation {:.1}us",
        (read.median.as_secs_f64() - direct.median.as_secs_f64()) * 1e6,
        (mutation.median.as_secs_f64() - direct.median.as_secs_f64()) * 1e6
    );
}

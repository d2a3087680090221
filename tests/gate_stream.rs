//! Streaming: a 1 GiB artifact passes through the gate in both directions without being held in memory. Memory is
//! read from the process's peak resident set (VmHWM), which would grow by the body size if anything buffered it.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_artifact_streams_both_ways_without_buffering() {
    let (gate, upstream, keys) =
        gate_with_recorder(Behaviour { big_bytes: GIB, count_only: true, ..Behaviour::default() }).await;
    // An admin: the fake upstream knows no run `run1`, and only admins write to locations nobody owns.
    let token = keys.token("root", &["mlflow-admin"]);
    let before = peak_rss_bytes();
    let started = std::time::Instant::now();

    // Upload: PUT to the proxied-artifact route, streamed from a generator.
    let chunk = Bytes::from(vec![b'a'; MIB as usize]);
    let frames = futures_util::stream::iter(
        (0..GIB / MIB).map(move |_| Ok::<_, Infallible>(hyper::body::Frame::data(chunk.clone()))),
    );
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::put(gate.url("/api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts/big.bin"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", GIB.to_string())
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().body_len, GIB, "the upstream did not receive the whole upload");

    // Download: GET of a 1 GiB body, counted as it arrives.
    let get: Client<_, http_body_util::Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(gate.url("/api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts/big.bin"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut body = get.request(req).await.unwrap().into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, GIB);

    let growth = peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "streamed 1 GiB up and 1 GiB down through the gate in {:?}; peak RSS grew {} MiB",
        started.elapsed(),
        growth / MIB
    );
    assert!(growth < 256 * MIB, "peak memory grew by {} MiB while streaming 2 GiB", growth / MIB);
    gate.stop().await;
}

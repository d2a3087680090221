//! A static stand-in for MLflow, for `scripts/bench-proxy.sh`: answers every request at once with a fixed JSON
//! document (HTTP/1.1 keep-alive or h2c, one Tokio runtime on `--threads` threads), so that what a benchmark
//! measures in front of it is the proxy, not the server.
//!
//! `cargo run --release --example static_upstream -- ADDR_FILE [--threads N]`
//!
//! It binds 127.0.0.1:0 and writes its address to ADDR_FILE (written whole, then renamed). The answers are the
//! registry look-ups the gate makes before a mutation (`registered-models/get`, `model-versions/get`, `runs/get`)
//! shaped as MLflow's, and `{}` for everything else; request bodies are read and dropped (so uploads of any size
//! work). `GET .../artifacts/bench-1g` streams 1 GiB of zeros (the download side of the artifact benchmark).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const REGISTERED_MODEL: &str = r#"{"registered_model":{"name":"m1","creation_timestamp":1,"last_updated_timestamp":1,"tags":[{"key":"mlflow_gate.created_by","value":"bench"}],"aliases":[],"latest_versions":[{"name":"m1","version":"1","current_stage":"None"}]}}"#;
const MODEL_VERSION: &str = r#"{"model_version":{"name":"m1","version":"1","current_stage":"None","source":"runs:/r1/model","run_id":"r1","status":"READY","tags":[],"aliases":[]}}"#;
const RUN: &str = r#"{"run":{"info":{"run_id":"r1","experiment_id":"1","artifact_uri":"mlflow-artifacts:/1/r1/artifacts","status":"FINISHED","lifecycle_stage":"active"},"data":{"metrics":[],"params":[],"tags":[{"key":"mlflow.user","value":"bench"}]}}}"#;
const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;

/// 1 GiB of zeros in 256 KiB frames, with its length known (as a file download has).
struct Zeros {
    left: u64,
    chunk: Bytes,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type Out = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    let path = req.uri().path().to_owned();
    // Read the body to the end (an upload is consumed, nothing kept).
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if path.ends_with("/artifacts/bench-1g") {
        let zeros = Zeros { left: GIB, chunk: Bytes::from(vec![0u8; CHUNK]) };
        return Ok(Response::new(zeros.boxed_unsync()));
    }
    let json: &'static str = if path.ends_with("/registered-models/get") {
        REGISTERED_MODEL
    } else if path.ends_with("/model-versions/get") {
        MODEL_VERSION
    } else if path.ends_with("/runs/get") {
        RUN
    } else {
        "{}"
    };
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(json.as_bytes())).boxed_unsync());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr_file = args.next().expect("usage: static_upstream ADDR_FILE [--threads N]");
    let mut threads = 1;
    while let Some(a) = args.next() {
        if a == "--threads" {
            threads = args.next().and_then(|n| n.parse().ok()).expect("--threads N");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = support::bind_and_announce(&addr_file).await;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service_fn(answer)).await;
            });
        }
    });
}

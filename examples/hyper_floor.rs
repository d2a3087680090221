//! The floor of the gate's design, for `scripts/bench-proxy.sh`: the smallest reverse proxy built from the same
//! parts as the gate (Tokio's multi-threaded runtime, hyper-util's HTTP/1.1+h2 server and its pooled legacy client,
//! `TCP_NODELAY` both ways), and nothing else: no authentication, no policy, no classification, no log line, no
//! metrics, no header rewriting beyond the request's URI. What it costs per request is what any proxy built this
//! way costs on the machine, so the benchmark can show how much of the gap to nginx is the gate's own work and how
//! much is the stack's.
//!
//! `cargo run --release --example hyper_floor -- UPSTREAM_ADDR ADDR_FILE [--threads N]`
//!
//! It binds 127.0.0.1:0 and writes its address to ADDR_FILE (written whole, then renamed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Out = BoxBody<Bytes, hyper::Error>;

fn main() {
    let mut args = std::env::args().skip(1);
    let upstream = args.next().expect("usage: hyper_floor UPSTREAM_ADDR ADDR_FILE [--threads N]");
    let addr_file = args.next().expect("usage: hyper_floor UPSTREAM_ADDR ADDR_FILE [--threads N]");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    while let Some(a) = args.next() {
        if a == "--threads" {
            builder.worker_threads(args.next().and_then(|n| n.parse().ok()).expect("--threads N"));
        }
    }
    let rt = builder.enable_all().build().unwrap();
    rt.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build(http);
        let listener = support::bind_and_announce(&addr_file).await;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    let pq = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
                    *req.uri_mut() =
                        Uri::builder().scheme("http").authority(upstream.as_str()).path_and_query(pq).build().unwrap();
                    async move {
                        let resp: Response<Out> = match client.request(req).await {
                            Ok(resp) => resp.map(|b| b.boxed()),
                            Err(_) => {
                                let mut r = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
                                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                r
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

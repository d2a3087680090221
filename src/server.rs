//! Connections, before any request: the accept loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one listener via
//! hyper-util's auto builder, header read timeout, and graceful drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::stack::Gate;

/// Serves until `shutdown` completes, then stops accepting and waits up to `grace` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    header_read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        let service = service_fn(move |req| {
            let gate = gate.clone();
            async move { Ok::<_, std::convert::Infallible>(gate.handle(req, peer, false).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

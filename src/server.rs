//! Connections, before any request: the accept loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one listener via
//! hyper-util's auto builder, header read timeout, and graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::stack::Gate;

/// What the request path learns about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity of a verified client certificate (mTLS), if one was presented.
    pub client_cert: Option<String>,
}

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes, then stops accepting and waits up to `grace` for requests in flight. With
/// `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    header_read_timeout: Duration,
    grace: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
        let (gate, builder, watcher, acceptor) = (gate.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let info = ConnInfo { peer, tls: false, client_cert: None };
                return serve_one(&builder, watcher, TokioIo::new(stream), gate, info).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let client_cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(crate::tls::client_identity);
                    let info = ConnInfo { peer, tls: true, client_cert };
                    serve_one(&builder, watcher, TokioIo::new(tls_stream), gate, info).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

async fn serve_one<I>(builder: &auto::Builder<TokioExecutor>, watcher: Watcher, io: I, gate: Arc<Gate>, info: ConnInfo)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |req| {
        let (gate, info) = (gate.clone(), info.clone());
        async move { Ok::<_, std::convert::Infallible>(gate.handle(req, info).await) }
    });
    if let Err(e) = watcher.watch(builder.serve_connection(io, service).into_owned()).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

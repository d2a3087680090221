//! Connections, before any request: the accept loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one listener via
//! hyper-util's auto builder, header read timeout, the connection cap (503 beyond it), the idle timeout of
//! keep-alive connections, HTTP/2 stream and window limits, the idle timeout of request bodies, and graceful drain
//! on shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::body::{Guarded, IdleTimeoutBody};
use crate::config::{LoadLimits, ServerConfig};
use crate::error::GateError;
use crate::proxy::ClientConn;
use crate::stack::Gate;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refusals (503 on a connection over the cap) being written at once; beyond this, extra connections are closed
/// without an answer.
const MAX_REFUSALS: usize = 64;

/// The HTTP/1.1 read buffer's largest size (hyper grows it from 8 KiB only while reads fill it, so idle and
/// small-request connections keep 8 KiB), which is also the largest request head. A streamed upload is read in
/// pieces of up to this size: at 64 KiB a 1 GiB upload took 16,700 reads, 14,700 `writev`s to MLflow and 9,000
/// context switches (430 us of gate CPU per MiB); at 256 KiB 10,000 reads (the socket seldom holds more), 9,500
/// `writev`s and 7,000 switches (361 us per MiB). Hyper's client reads downloads in pieces of up to ~400 KiB (its
/// default), so a streamed upload holds no more in flight than a download.
const HTTP1_BUFFER_BYTES: usize = 256 * 1024;

/// What HTTP/2 buffers per stream for a response the client reads slowly.
const HTTP2_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Serves until `shutdown` completes, then stops accepting and waits up to `server.shutdown_grace` for requests in
/// flight. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    server: &ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let load = server.load.clone();
    let builder = Arc::new(builder(server.header_read_timeout, &load));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(load.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    // Connections refused since the gate was last below its cap (logged when the streak starts and ends).
    let mut refused = 0u64;
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
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    max_connections = load.max_connections,
                    "at server.max_connections: refusing connections"
                );
            }
            refused += 1;
            refuse(stream, acceptor.is_some(), &refusals, load.max_connections);
            continue;
        };
        if refused > 0 {
            tracing::warn!(refused, "accepting connections again");
            refused = 0;
        }
        let _ = stream.set_nodelay(true);
        let (gate, builder, acceptor, stop) = (gate.clone(), builder.clone(), acceptor.clone(), stop_rx.clone());
        let conn = Conn { builder, gate, stop, idle: load.idle_timeout, body_idle: load.body_idle_timeout, slot };
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let info = ClientConn { peer, tls: false, client_cert: None };
                return conn.serve(TokioIo::new(stream), info).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let client_cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(crate::tls::client_identity);
                    let info = ClientConn { peer, tls: true, client_cert };
                    conn.serve(TokioIo::new(tls_stream), info).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    let grace = server.shutdown_grace;
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining requests in flight");
    let _ = stop_tx.send(true);
    // Every connection task holds one slot: having them all back means every connection has closed.
    let all = u32::try_from(load.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, connections.acquire_many(all)).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// The connection builder: header read timeout and buffer size for HTTP/1.1; stream count, flow-control windows
/// and send buffer for HTTP/2 (each stream's unread request data and unsent response data is bounded by them).
fn builder(header_read_timeout: Duration, load: &LoadLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(HTTP1_BUFFER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(load.http2_max_concurrent_streams)
        .initial_stream_window_size(load.http2_stream_window_bytes)
        .initial_connection_window_size(load.http2_connection_window_bytes)
        .max_send_buf_size(HTTP2_SEND_BUFFER_BYTES);
    builder
}

/// Answers a connection over the cap with a 503 in MLflow's error JSON (plain HTTP/1.1 only: a TLS or HTTP/2
/// client cannot be answered before a handshake the gate will not spend on it) and closes it.
fn refuse(mut stream: TcpStream, tls: bool, refusals: &Arc<Semaphore>, max: usize) {
    let Ok(refusal) = refusals.clone().try_acquire_owned() else { return };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let error = GateError::Overloaded(format!(
            "the gate has its maximum of {max} connections open (server.max_connections); retry shortly"
        ));
        let bytes = raw_response(error.into_response("-")).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        })
        .await;
        drop(refusal);
    });
}

/// An error response as HTTP/1.1 bytes, with `Connection: close`.
async fn raw_response(resp: http::Response<crate::body::GateBody>) -> Vec<u8> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut out = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// One accepted connection and what it needs to serve it.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    gate: Arc<Gate>,
    stop: watch::Receiver<bool>,
    idle: Duration,
    body_idle: Duration,
    /// Its place under `server.max_connections`, returned when the connection closes.
    slot: OwnedSemaphorePermit,
}

/// What a connection's idle timer reads: requests in flight, and when the last one ended. Plain atomics, written
/// as a request starts and as its response ends, read only when the timer fires: the earlier `watch` channel woke
/// the connection task twice per request and armed a fresh timer after each one.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in nanoseconds since `opened`.
    last_end: AtomicU64,
    opened: std::time::Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity { in_flight: AtomicUsize::new(0), last_end: AtomicU64::new(0), opened: std::time::Instant::now() }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.now().saturating_sub(self.last_end.load(Ordering::Acquire)))
    }
}

/// Marks a request in flight on its connection until its response has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end is stamped before the count drops: a timer that sees no request in flight sees this end.
        self.0.last_end.fetch_max(self.0.now(), Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// Serves the connection until it ends, closing it gracefully on shutdown or after `idle` with no request in
    /// flight.
    async fn serve<I>(self, io: I, info: ClientConn)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Conn { builder, gate, mut stop, idle, body_idle, slot } = self;
        let peer = info.peer;
        let activity = Arc::new(Activity::new());
        let timer = activity.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (gate, info, in_flight) = (gate.clone(), info.clone(), InFlight::start(&activity));
            // Boxed: hyper keeps a box the size of this future for every connection from its first byte to its
            // close, idle or not (10 KiB, 2.6 MiB at 256 idle keep-alive connections); boxed here, the 10 KiB
            // are allocated only while a request is in flight.
            Box::pin(async move {
                let req = req.map(|b| IdleTimeoutBody::new(b, body_idle));
                let resp = gate.handle(req, info).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| crate::body::stream(Guarded::new(b, in_flight))))
            })
        });
        let conn = builder.serve_connection(io, service).into_owned();
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        let mut idle_timer = std::pin::pin!(idle_for(&timer, idle));
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = idle_timer.as_mut(), if !closing => {
                    tracing::debug!(%peer, "closing a connection idle for server.idle_timeout_secs");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
        drop(slot);
    }
}

/// Completes once no request has been in flight for `idle`. It sleeps until the earliest moment that could be the
/// case and looks then, so a busy connection costs one timer per `idle`, not one per request.
async fn idle_for(activity: &Activity, idle: Duration) {
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let quiet = activity.idle();
        if quiet >= idle {
            return;
        }
        wait = idle - quiet;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn the_idle_timer_waits_for_the_request_in_flight_then_counts_from_its_end() {
        let idle = Duration::from_millis(150);
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        let request = InFlight::start(&activity);
        let ended = tokio::spawn(async move {
            // A request that takes three idle periods.
            tokio::time::sleep(Duration::from_millis(450)).await;
            drop(request);
            Instant::now()
        });
        idle_for(&activity, idle).await;
        let closed = Instant::now();
        let ended = ended.await.unwrap();
        // (`ended` is read just after the end was stamped: a few microseconds of slack.)
        assert!(
            closed + Duration::from_millis(2) >= ended + idle,
            "closed {:?} after the request ended",
            closed.saturating_duration_since(ended)
        );
        assert!(closed - started < Duration::from_secs(2), "the timer did not fire: {:?}", closed - started);
        // A connection that never had a request is idle from when it opened.
        let fresh = Activity::new();
        let started = Instant::now();
        idle_for(&fresh, idle).await;
        assert!(started.elapsed() >= idle);
    }
}

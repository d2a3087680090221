//! The admin listener, beside the request path on its own address: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive), `/readyz` (policy loaded, signing keys available, MLflow reachable) and
//! `/audit/checkpoint` (the latest signed audit checkpoint, as JSON), for Kubernetes probes, scrapers and auditors.
//! It never proxies anything.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::metrics::External;
use crate::stack::Gate;

/// Extra counters owned outside the gate (e.g. webhook delivery), read at scrape time.
pub type ExtraCounters = Arc<dyn Fn() -> External + Send + Sync>;

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve(listener: TcpListener, gate: Arc<Gate>, extra: ExtraCounters, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends persist until something closes: back off instead of spinning.
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (gate, extra) = (gate.clone(), extra.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (gate, extra) = (gate.clone(), extra.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &gate, &extra).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer<B>(req: &Request<B>, gate: &Gate, extra: &ExtraCounters) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut ext = extra();
            let (ok, failed) = gate.auth().key_fetch_counts();
            ext.counters.push(("mlflow_gate_jwks_refreshes_total", "Successful fetches of issuer keys.", ok));
            ext.counters.push(("mlflow_gate_jwks_refresh_failures_total", "Failed fetches of issuer keys.", failed));
            let policy = gate.policy().stats();
            ext.counters.push((
                "mlflow_gate_policy_reloads_total",
                "Policy bundles swapped in since start.",
                policy.reloads,
            ));
            ext.counters.push((
                "mlflow_gate_policy_reload_failures_total",
                "Policy reloads refused (unreadable files, compile error, failed self-test); the last good bundle stayed.",
                policy.reload_failures,
            ));
            let decisions = gate.policy().decision_stats();
            ext.counters.push((
                "mlflow_gate_decision_cache_hits_total",
                "Decisions answered from the decision cache (the same input under the same bundle).",
                decisions.hits,
            ));
            ext.counters.push((
                "mlflow_gate_decision_cache_misses_total",
                "Decisions evaluated and cached (no cached decision for the input).",
                decisions.misses,
            ));
            ext.counters.push((
                "mlflow_gate_decision_cache_bypassed_total",
                "Decisions evaluated without the cache (it is off, or the bundle calls an impure builtin).",
                decisions.uncacheable,
            ));
            ext.info.push((
                "mlflow_gate_policy_bundle_info",
                "The policy bundle in force (revision: hash of its files).",
                "revision",
                policy.revision,
            ));
            ext.info.push((
                "mlflow_gate_replica_info",
                "This replica of a fleet ([fleet] replica_id): its audit chain, outbox claims and these metrics.",
                "replica",
                gate.replica_id().to_string(),
            ));
            ext.counters.push((
                "mlflow_gate_log_lines_dropped_total",
                "Log lines dropped because the log buffer was full (stderr slower than the gate).",
                crate::logline::dropped(),
            ));
            let mut body = gate.metrics().render(&ext);
            if let Some(c) = gate.audit().and_then(crate::audit::AuditLog::latest_checkpoint) {
                let seq = c.seq.to_string();
                let labels = [
                    ("seq", seq.as_str()),
                    ("mac", &c.mac),
                    ("time", &c.time),
                    ("key_id", &c.key_id),
                    ("checkpoint_mac", &c.checkpoint_mac),
                ];
                crate::metrics::render_info(
                    &mut body,
                    "mlflow_gate_audit_checkpoint_info",
                    "The latest signed audit checkpoint (mlflow-gate audit verify --checkpoint).",
                    &labels,
                );
            }
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readiness(gate).await,
        "/audit/checkpoint" => checkpoint(gate),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Ready when the policy is loaded (it always is once the gate runs), every issuer has usable keys, and MLflow
/// answers its health check.
async fn readiness(gate: &Gate) -> Response<Full<Bytes>> {
    let keys = gate.auth().keys_ready();
    let own = crate::proxy::RequestContext::new("readiness", None);
    let probe = gate.upstream().call_json(&own, Method::GET, "/health", None);
    let upstream =
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok((s, _))) if s.is_success());
    let body = format!(
        "policy: loaded (revision {})\nkeys: {}\nupstream: {}\n",
        gate.policy().bundle().revision(),
        if keys { "available" } else { "unavailable" },
        if upstream { "reachable" } else { "unreachable" }
    );
    let status = if keys && upstream { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    text(status, body)
}

/// The latest audit checkpoint as JSON; 404 when the gate keeps no audit log.
fn checkpoint(gate: &Gate) -> Response<Full<Bytes>> {
    let (status, body) = match gate.audit().map(crate::audit::AuditLog::latest_checkpoint) {
        Some(Some(c)) => (StatusCode::OK, c.to_json()),
        Some(None) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "no checkpoint published yet"})),
        None => (StatusCode::NOT_FOUND, serde_json::json!({"error": "this gate keeps no audit log ([audit])"})),
    };
    let mut resp = text(status, format!("{body}\n"));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

//! Outside the gate: a small HTTP client for the `mlflow-gate request-transition | approve | reject | requests`
//! commands, which talk to a running gate as any MLflow client would (bearer token, MLflow error JSON).

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A call failed; the message is what the gate (or the network) said.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// Sends one JSON request to the gate at `base_url` (e.g. `http://127.0.0.1:8080`) with a bearer token.
pub async fn call(
    base_url: &str,
    token: &str,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    call_in(base_url, token, None, method, path_and_query, body).await
}

/// [`call`] in an MLflow workspace (sent as `X-MLFLOW-WORKSPACE`; `None`: the default workspace, no header).
pub async fn call_in(
    base_url: &str,
    token: &str,
    workspace: Option<&str>,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| ClientError(format!("cannot load root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let url = format!("{}{path_and_query}", base_url.trim_end_matches('/'));
    let mut req = Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(ws) = workspace {
        req = req.header("X-MLFLOW-WORKSPACE", ws);
    }
    let req = req
        .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))
        .map_err(|e| ClientError(format!("{url}: {e}")))?;
    let resp = client.request(req).await.map_err(|e| ClientError(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| ClientError(format!("{url}: {e}")))?.to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(json);
    }
    let code = json.get("error_code").and_then(Value::as_str).unwrap_or("HTTP error");
    let message = json.get("message").and_then(Value::as_str).map(str::to_owned);
    Err(ClientError(format!(
        "{status} {code}: {}",
        message.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
    )))
}

/// The query string for `name` and `version` (and extra pairs).
pub fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}
